"""Small real release builds in a second, without Beam or models: what the release tests publish and download.

Why: publishing and downloading care about a build's files, manifest and card, not about how the records were
measured, and a full Beam build of the demo clips took minutes. So this writes a build folder with the
project's own writers (`transforms.shards` write_parquet / write_tar / shard_name, `release.manifest`
write_manifest, `release.card` write_card) and records of the real schema (`schemas.SCHEMA`, validated and
conformed as the builder does), from real recordings of the demo corpus's Debian packages: LibriVox readings
and the ALSA voice prompt as 16 kHz FLAC, face crops cut from the kphotoalbum photos as JPEG, transcripts and
EMER explanations as the demo annotations give them. What is not measured here says so: the acoustics group
carries a `reason` and no eGeMAPS values; face boxes are the photo's centre square.

The keys and splits are those a full build of the same clips gives (`sample_00000870` in train, `jesper_intro`
and `no_face_dog` in validation), so tests can name them.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from emer_builder.core.config import BuildConfig, config_from_dict
from emer_builder.core.version import __version__
from emer_builder.release.card import write_card
from emer_builder.release.manifest import write_manifest
from emer_builder.schemas import SCHEMA
from emer_builder.schemas.v1 import EXPRESSION_CLASSES, FAILURE_SCHEMA
from emer_builder.transforms.shards import shard_name, write_parquet, write_tar

KPA = "usr/share/kphotoalbum/demo"
LIBRIVOX = "usr/share/pocketsphinx/test/data/librivox"
RATE = 16_000  # what the builder stores: 16 kHz mono FLAC
CONFIG = {"transcript": {"model": "tiny.en"}, "faces": {"crop_size": 96, "max_crops": 3}}


@dataclass(frozen=True)
class ReleaseClip:
    """One clip of a synthetic build: its real recordings, and what a human annotator said about it."""

    key: str
    split: str
    speech: str  # a wav of the demo corpus's packages
    photo: str  # a kphotoalbum photo: the frames (and the face crops when `face`)
    face: bool
    text: str  # the reference transcript of `speech`
    visual: str
    acoustic: str
    labels: tuple[str, ...]
    discrete: str
    valence: float


CLIPS = {
    c.key: c
    for c in (
        ReleaseClip(
            "sample_00000870",
            "train",
            f"{LIBRIVOX}/sense_and_sensibility_01_austen_64kb-0870.wav",
            "new_wave_2.jpg",
            True,
            "and mister john dashwood had then leisure to consider how much there might be prudently in his power to do for them",
            "A young man with spiky short hair faces the camera, smiling broadly with his teeth showing; the expression stays the same.",
            "The speaker reads at a steady pace with a natural pitch, without obvious emotional ups and downs.",
            ("happy", "relaxed"),
            "happy",
            2.5,
        ),
        ReleaseClip(
            "jesper_intro",
            "validation",
            f"{LIBRIVOX}/sense_and_sensibility_01_austen_64kb-0880.wav",
            "jesper.jpg",
            True,
            "he was not an ill disposed young man",
            "A man looks straight into the camera; his face stays relaxed and he smiles slightly at the end.",
            "A friendly, even voice at a moderate tempo.",
            ("friendly", "calm"),
            "neutral",
            1.0,
        ),
        ReleaseClip(
            "no_face_dog",
            "validation",
            "usr/share/sounds/alsa/Front_Center.wav",
            "donna.jpg",
            False,
            "front center",
            "No face is visible: a dog looks at the camera.",
            "A calm announcer's voice says two words.",
            ("neutral",),
            "neutral",
            0.0,
        ),
    )
}
V1 = ("sample_00000870", "jesper_intro")
V2 = (*V1, "no_face_dog")


def write_release_build(out: Path, keys: tuple[str, ...], media_root: Path) -> Path:
    """A finished build of the clips `keys` in `out` (data/, media/, failures.parquet, manifest.json, README.md)."""
    config = config_from_dict(CONFIG)
    prov = provenance(config)
    (out / "data").mkdir(parents=True)
    (out / "media").mkdir()
    by_split: dict[str, list[tuple[dict[str, Any], dict[str, bytes]]]] = {}
    for key in keys:
        clip = CLIPS[key]
        flac, duration = _flac(media_root / clip.speech)
        crops = _crops(media_root / KPA / clip.photo, config.faces.crop_size, config.faces.max_crops) if clip.face else []
        record = clip_record(clip, prov, config, flac, duration, len(crops))
        media = {"flac": flac, **{f"face_{i:03d}.jpg": jpeg for i, jpeg in enumerate(crops)}}
        by_split.setdefault(clip.split, []).append((record, media))
    for split, samples in by_split.items():
        name = shard_name(split, 0, 1)
        write_parquet(out / "data" / f"{name}.parquet", [r for r, _ in samples], SCHEMA.arrow_schema(), config.shards.parquet_row_group_size)
        write_tar(out / "media" / f"{name}.tar", samples)
    pq.write_table(pa.Table.from_pylist([], schema=FAILURE_SCHEMA), out / "failures.parquet", compression="zstd")
    manifest = write_manifest(out, media_root / KPA, config, SCHEMA, prov, inputs=len(keys), skipped=[])
    write_card(out, manifest, SCHEMA, config)
    return out


def provenance(config: BuildConfig) -> dict[str, Any]:
    """The provenance group of every record (and the manifest's `models`), naming what really made the values."""
    return {
        "tool": f"emer-builder {__version__}",
        "schema_version": SCHEMA.version,
        "config_hash": config.config_hash(),
        "whisper_model": None,
        "face_detector": None,
        "expression_model": None,
        "opensmile": None,
        "explanation_sources": "; ".join(f"{name}=annotations" for name in ("visual_clue", "acoustic_clue", "open_vocab_labels", "discrete_label", "valence")),
        "emotion_wheel": None,
    }


def clip_record(clip: ReleaseClip, prov: dict[str, Any], config: BuildConfig, flac: bytes, duration: float, crops: int) -> dict[str, Any]:
    """The record of one clip, fitted to the schema, validated and conformed as the builder stores it."""
    human = {"source": "human", "prompt_version": None, "time": None, "reason": None}
    absent = {"source": None, "prompt_version": None, "time": None, "reason": "annotations: no value for this clip"}
    frames = max(1, int(duration * config.decode.sample_fps))
    probabilities = dict.fromkeys(EXPRESSION_CLASSES, 0.02) | {"happy" if clip.valence > 1 else "neutral": 0.88}
    record = {
        "key": clip.key,
        "split": clip.split,
        "source_path": f"{clip.key}.mp4",
        "media": {
            "container": "mov,mp4,m4a,3gp,3g2,mj2",
            "size_bytes": len(flac),
            "sha256": hashlib.sha256(flac).hexdigest(),
            "duration_s": round(duration, 3),
            "video_codec": "h264",
            "width": 400,
            "height": 600,
            "fps": 25.0,
            "has_audio": True,
            "audio_codec": "aac",
            "audio_sample_rate": RATE,
            "sampled_fps": config.decode.sample_fps,
            "frames_sampled": frames,
            "audio_stream": 0,
            "audio_language": None,
            "other_audio_streams": [],
            "declared_duration_s": round(duration, 3),
            "decoded_duration_s": round(duration, 3),
            "decoded_fraction": 1.0,
            "truncated": False,
        },
        "transcript": {
            "reason": None,
            "model": config.transcript.model,
            "language": "en",
            "language_probability": 1.0,
            "text": clip.text,
            "word_count": len(clip.text.split()),
            "segments": [{"start_s": 0.0, "end_s": round(duration, 2), "text": clip.text, "avg_logprob": -0.2, "no_speech_prob": 0.01}],
        },
        "faces": {
            "reason": None if crops else f"no face in {frames} sampled frames",
            "detector": config.faces.detector,
            "expression_model": "not run (release fixture)",
            "frames_with_face": crops,
            "tracks": 1 if crops else 0,
            "crop_size": config.faces.crop_size,
            "crops": [
                {
                    "index": i,
                    "time_s": i / config.decode.sample_fps,
                    "box": {"x": 0, "y": 100 + 4 * i, "w": 400, "h": 400},
                    "confidence": 0.9,
                    "expression": probabilities,
                }
                for i in range(crops)
            ],
            "expression_mean": probabilities if crops else None,
        },
        "acoustics": {"reason": "openSMILE not run (release fixture)", "feature_set": None, "egemaps": None, "prosody": None},
        "explanation": {
            "subtitle": {"text": None, "language": None, **absent},
            "visual_clue": {"text": clip.visual, "language": "en", **human},
            "acoustic_clue": {"text": clip.acoustic, "language": "en", **human},
            "lexical_clue": {"text": None, "language": None, **absent},
            "multimodal_explanation": {"text": None, "language": None, **absent},
            "open_vocab_labels": {"labels": list(clip.labels), "language": "en", "normalised": None, "wheel": None, **human},
            "discrete_label": {"label": clip.discrete, "language": "en", **human},
            "valence": {"value": clip.valence, **human},
            "evidence": [],
        },
        "provenance": prov,
    }
    record = _fit(SCHEMA.all_fields(), record)
    SCHEMA.validate(record)
    return SCHEMA.conform(record)


def _fit(fields: Any, values: dict[str, Any]) -> dict[str, Any]:
    """`values` shaped like the schema as it is now: fields it lacks are null, fields the schema dropped are left out.

    The schema grows while releases do not care about most fields; this keeps the fixture a valid record."""
    out = {}
    for f in fields:
        value = values.get(f.name)
        if isinstance(value, dict) and pa.types.is_struct(f.type):
            value = _fit(f.children, value)
        elif isinstance(value, list) and value and isinstance(value[0], dict) and pa.types.is_list(f.type):
            value = [_fit(f.children, item) for item in value]
        out[f.name] = value
    return out


def _flac(wav: Path) -> tuple[bytes, float]:
    """The recording as the builder stores it: mono, 16 kHz, FLAC (48 kHz sources are decimated)."""
    import soundfile as sf

    samples, rate = sf.read(wav, dtype="float32", always_2d=True)
    mono = samples.mean(axis=1)
    if rate != RATE:
        mono = mono[:: rate // RATE]
    out = io.BytesIO()
    sf.write(out, mono, RATE, format="FLAC")
    return out.getvalue(), len(mono) / RATE


def _crops(photo: Path, size: int, count: int) -> list[bytes]:
    """`count` JPEG crops of the photo's centre square, slightly shifted from one to the next like a tracked face."""
    from PIL import Image

    image = Image.open(photo).convert("RGB")
    side = min(image.size)
    crops = []
    for i in range(count):
        left, top = (image.width - side) // 2, (image.height - side) // 2 + i * 4
        crop = image.crop((left, top, left + side, top + side)).resize((size, size))
        buffer = io.BytesIO()
        crop.save(buffer, format="JPEG", quality=85)
        crops.append(buffer.getvalue())
    return crops
