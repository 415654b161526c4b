"""Build configuration: a YAML file mapped onto frozen dataclasses, hashed for provenance."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from emer_builder.core.errors import UserError

MAX_LENGTH_S = 7 * 86_400.0  # a clip's length limit may be large (hour-long interviews), not unbounded


def setting(default: Any = dataclasses.MISSING, ok: Callable[[Any], bool] | None = None, must: str = "", *, factory: Callable[[], Any] | None = None) -> Any:
    """A config key with its rule beside it, so a section (core or plug-in) is one declaration: `ok(value)`
    must hold, else one line `config key SECTION.KEY must be MUST, got VALUE` before any work. Keys that
    depend on each other are checked by the section's `check(where)` method."""
    metadata = {"rule": (ok, must)} if ok is not None else {}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class DecodeConfig:
    sample_fps: float = setting(2.0, lambda v: 0 < v <= 60, "above 0 and at most 60")  # frames per second sampled for face analysis
    frame_max_side: int = setting(640, lambda v: 32 <= v <= 8192, "between 32 and 8192")  # sampled frames are scaled down so their longer side fits
    # shorter clips become failures: too short for any feature
    min_duration_s: float = setting(0.3, lambda v: 0 <= v <= MAX_LENGTH_S, f"between 0 and {MAX_LENGTH_S:g}")
    # longer files become failures (4 h); past about 45 s a file is streamed, not held, so memory stays flat
    max_duration_s: float = setting(14400.0, lambda v: 0 < v <= MAX_LENGTH_S, f"above 0 and at most {MAX_LENGTH_S:g} (a week)")
    # index among the audio streams; None: the default-disposition one, else the first
    audio_stream: int | None = setting(None, lambda v: v is None or v >= 0, "at least 0 or null")
    # ISO 639 code of the audio stream to take (en also finds eng); wins over audio_stream
    audio_language: str | None = setting(None, lambda v: v is None or (v.isalpha() and 2 <= len(v) <= 3), "a 2- or 3-letter ISO 639 code or null")
    # a clip whose streams decode to less of its declared length is a failure (0: keep, flagged)
    min_decoded_fraction: float = setting(0.5, lambda v: 0.0 <= v <= 1.0, "between 0 and 1")

    def check(self, where: str) -> None:
        if self.min_duration_s > self.max_duration_s:
            raise UserError(f"config keys {where}min_duration_s ({self.min_duration_s}) must not exceed {where}max_duration_s ({self.max_duration_s})")


@dataclass(frozen=True)
class TranscriptConfig:
    model: str = "base"  # offline names: base (multilingual), tiny.en; or a CTranslate2 folder, or a hub id
    language: str | None = None  # None: detect; else an ISO 639-1 code to force
    vad_filter: bool = True
    beam_size: int = setting(5, lambda v: 1 <= v <= 20, "between 1 and 20")
    device: str = setting("auto", lambda v: v in ("auto", "cpu", "cuda"), "one of auto, cpu, cuda")  # auto: cuda with float16 when a GPU is present, else cpu with int8
    # 0: one thread per worker on CPU (the workers are the parallelism; more threads spin)
    cpu_threads: int = setting(0, lambda v: 0 <= v <= 256, "between 0 and 256")
    # fit: the encoder reads the clip's length (10-30 s), once; full: always 30 s (faster-whisper's own)
    encoder_window: str = setting("fit", lambda v: v in ("fit", "full"), "one of fit, full")


@dataclass(frozen=True)
class FacesConfig:
    detector: str = "yunet"  # yunet: libfacedetection's YuNet (in the yuface wheel); else a DeepFace backend (opencv: Haar, the old path)
    crop_size: int = setting(224, lambda v: 16 <= v <= 1024, "between 16 and 1024")
    max_crops: int = setting(16, lambda v: 0 <= v <= 1000, "between 0 and 1000")  # crops kept per clip, evenly spaced over the main face's track
    # auto: DeepFace Emotion when its weights exist, else fer-tflite
    expression_model: str = setting("auto", lambda v: v in ("auto", "deepface", "fer-tflite"), "one of auto, deepface, fer-tflite")
    # yunet: frames scaled so their longer side fits for detection; crops come from the full frame
    detect_max_side: int = setting(320, lambda v: 64 <= v <= 4096, "between 64 and 4096")
    min_confidence: float = setting(0.5, lambda v: 0 <= v <= 1, "between 0 and 1")  # yunet: detections below this score are dropped


@dataclass(frozen=True)
class VideoConfig:
    """The `video:` section: the record's own video in the tar (docs/guide/long-videos.md, "The utterance's own video")."""

    # clip: the record's window as H.264/AAC MP4; frames: `frames` JPEGs spread over it; none
    mode: str = setting("clip", lambda v: v in ("clip", "frames", "none"), "one of clip, frames, none")
    # clip: scaled down so the longer side fits (even pixels); never scaled up
    max_side: int = setting(480, lambda v: 64 <= v <= 4096, "between 64 and 4096")
    crf: int = setting(28, lambda v: 0 <= v <= 51, "between 0 and 51")  # clip: x264 constant rate factor (lower: larger, sharper)
    audio_kbps: int = setting(64, lambda v: 16 <= v <= 512, "between 16 and 512")  # clip: AAC bit rate (mono or stereo)
    frames: int = setting(8, lambda v: 1 <= v <= 256, "between 1 and 256")  # frames: how many, one at the middle of each equal slice
    frame_max_side: int = setting(224, lambda v: 16 <= v <= 4096, "between 16 and 4096")  # frames: longer side of each JPEG


@dataclass(frozen=True)
class SplitConfig:
    ratios: dict[str, float] = field(default_factory=lambda: {"train": 0.8, "validation": 0.1, "test": 0.1})
    group_by: str = "key"  # record field (dotted path) whose value keeps a group in one split
    group_pattern: str | None = None  # regex applied to that value; its first group is the group key
    split_table: str | None = None  # CSV with columns key,split: overrides the hash for listed keys
    seed: str = "emer"

    def check(self, where: str) -> None:
        ratios = self.ratios
        if not ratios or any(not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v < 0 for v in ratios.values()):
            raise UserError(f"config key {where}ratios must map split names to numbers of at least 0 (finite), got {ratios!r}")
        if abs(sum(ratios.values()) - 1.0) > 1e-6:
            raise UserError(f"config key {where}ratios must sum to 1, got {sum(ratios.values()):g} ({', '.join(f'{k} {v:g}' for k, v in ratios.items())})")


@dataclass(frozen=True)
class ShardConfig:
    max_records: int = setting(1000, lambda v: 1 <= v <= 10**9, "between 1 and 10^9")
    max_bytes: int = setting(512 * 1024 * 1024, lambda v: 1024 <= v <= 2**50, "between 1024 and 2^50")
    parquet_row_group_size: int = setting(100, lambda v: 1 <= v <= 10**9, "between 1 and 10^9")  # small row groups keep the Hub viewer fast


@dataclass(frozen=True)
class LlmConfig:
    """An OpenAI-compatible chat endpoint: vLLM (http://HOST:8000/v1), Ollama (http://HOST:11434/v1), OpenAI."""

    base_url: str | None = None
    model: str | None = None  # chat model for clues, merge and labels
    vision_model: str | None = None  # model that reads the frames; None: `model`
    audio_model: str | None = None  # model that hears the audio when send_audio is on; None: `model`
    api_key_env: str = "OPENAI_API_KEY"  # name of the environment variable holding the key (never the key)
    timeout_s: float = setting(60.0, lambda v: 0 < v <= 86_400, "above 0 and at most 86400")
    # per request, with exponential backoff; then the field is null with the reason
    max_retries: int = setting(3, lambda v: 0 <= v <= 20, "between 0 and 20")
    concurrency: int = 4  # requests in flight per worker process
    cache_dir: str | None = None  # None: $EMER_HOME/llm-cache
    send_audio: bool = False  # send the clip's audio to models that accept `input_audio`; else the measured features
    frames: int = setting(3, lambda v: 0 <= v <= 64, "between 0 and 64")  # frames sent to the vision model, spread over the clip
    temperature: float = setting(0.0, lambda v: 0 <= v <= 2, "between 0 and 2")
    prompt_version: str = "emer-v2"  # folder of prompt files under transforms/prompts/
    # answer length cap per field, in tokens (a field not named keeps its default); a cut answer ends at its last full sentence
    max_tokens: dict[str, int] = setting(
        factory=lambda: {"visual_clue": 256, "acoustic_clue": 256, "lexical_clue": 256, "multimodal_explanation": 384, "open_vocab_labels": 96},
        ok=lambda v: all(isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= 65536 for n in v.values()),
        must="a mapping of field names to whole numbers from 1 to 65536",
    )
    # auto: send frames, and describe measured face data as text once the model refuses images; on; off
    images: str = setting("auto", lambda v: v in ("auto", "on", "off"), "one of auto, on, off")
    # structured answers: auto (json_schema, else json_object, else plain text); json_schema; json_object; text
    response_format: str = setting("auto", lambda v: v in ("auto", "json_schema", "json_object", "text"), "one of auto, json_schema, json_object, text")
    # sent with every request (llama.cpp, vLLM, Ollama, OpenAI take it): one more thing kept fixed
    seed: int = setting(0, lambda v: 0 <= v < 2**31, "between 0 and 2^31 - 1")


@dataclass(frozen=True)
class ExplanationConfig:
    language: str = "en"  # preferred language of annotation values when a table has several
    default_sources: tuple[str, ...] = ("annotations", "rules")  # tried in order for every field
    sources: dict[str, list[str]] = field(default_factory=dict)  # per-field override, e.g. {open_vocab_labels: [annotations, llm]}
    annotations: tuple[str, ...] = ()  # annotation tables recognised by their header (also `--annotations`)
    mapped_annotations: list[dict[str, Any]] = field(default_factory=list)  # other tables: {path, format, columns, language}
    wheel_dir: str | None = None  # emotion-wheel tables: a folder, "fetch" (pinned download, cached), or None: labels not normalised
    llm: LlmConfig = field(default_factory=LlmConfig)


@dataclass(frozen=True)
class SegmentConfig:
    """The `segment:` section of build.yaml (also `--segment MODE`, `--segment-table PATH`)."""

    mode: str = "none"  # none | subtitles | table | speech (the segment package's registry checks the name)
    table: str | None = None  # the segment table of mode `table`
    min_s: float = setting(0.5, lambda v: v >= 0, "at least 0")  # subtitles, speech: shorter utterances are dropped (and listed in the notes)
    # subtitles: cues are not merged past this; speech: longer speech is cut at its longest pause
    max_s: float = setting(20.0, lambda v: v > 0, "above 0 and at least segment.min_s")
    # subtitles: a cue this close that continues an unfinished sentence joins it (same or unknown speaker)
    merge_gap_s: float = setting(0.25, lambda v: v >= 0, "at least 0")
    subtitle_language: str | None = None  # sidecar `{stem}.{lang}.srt` / embedded stream tagged with this language
    # embedded subtitle stream to use, counted from 0 among subtitle streams
    subtitle_stream: int | None = setting(None, lambda v: v is None or v >= 0, "at least 0 or null")
    subtitle_encoding: str = "utf-8"  # of sidecar files
    speech_pause_s: float = setting(0.5, lambda v: 0 < v <= 10, "above 0 and at most 10")  # speech: silences at least this long end an utterance
    # speech: Silero VAD probability above which a frame is speech
    speech_threshold: float = setting(0.5, lambda v: 0 < v < 1, "between 0 and 1")
    speech_pad_s: float = setting(0.2, lambda v: 0 <= v <= 2, "between 0 and 2")  # speech: padding kept around detected speech
    context_before: int = setting(3, lambda v: 0 <= v <= 50, "between 0 and 50")  # utterances of the same dialogue listed before each one
    context_after: int = setting(1, lambda v: 0 <= v <= 50, "between 0 and 50")  # and after it
    # a segment may end this much past the video's probed duration (container rounding)
    end_tolerance_s: float = setting(0.25, lambda v: v >= 0, "at least 0")
    group_column: str | None = None  # table column that keeps utterances in one split (default: dialogue, else source video)

    def check(self, where: str) -> None:
        if self.max_s < self.min_s:
            raise UserError(f"config key {where}max_s must be above 0 and at least {where}min_s, got {self.max_s!r}")


@dataclass(frozen=True)
class CacheConfig:
    """The per-clip stage cache (resume after a kill, incremental builds); it never changes the output."""

    enabled: bool = True
    dir: str | None = None  # a folder or fsspec URL; None: $EMER_CLIP_CACHE, else $EMER_HOME/clip-cache


@dataclass(frozen=True)
class BuildConfig:
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    transcript: TranscriptConfig = field(default_factory=TranscriptConfig)
    faces: FacesConfig = field(default_factory=FacesConfig)
    video: VideoConfig = field(default_factory=VideoConfig)  # the record's own video (docs/guide/long-videos.md, "The utterance's own video")
    split: SplitConfig = field(default_factory=SplitConfig)
    shards: ShardConfig = field(default_factory=ShardConfig)
    explanation: ExplanationConfig = field(default_factory=ExplanationConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    segment: SegmentConfig = field(default_factory=SegmentConfig)  # cut long videos into utterances (docs/guide/long-videos.md)
    corpus: str | None = None  # read VIDEOS_DIR as this corpus' own layout (docs/guide/long-videos.md, "Corpus adapters")
    follow_external_links: bool = False  # follow symlinks whose target lies outside VIDEOS_DIR (default: listed as skipped)
    # Extra stages, "module:Class" or an `emer_builder.stages` entry-point name, each adding its own
    # field group (see docs/guide/extending.md).
    extra_stages: tuple[str, ...] = ()
    # Config sections of plug-in stages, by stage name; each stage checks its own against its dataclass.
    stage_config: dict[str, dict[str, Any]] = field(default_factory=dict)

    def check(self, where: str) -> None:
        if not isinstance(self.stage_config, dict) or not all(isinstance(v, dict) for v in self.stage_config.values()):
            raise UserError("config key stage_config must map stage names to mappings")

    def to_dict(self) -> dict[str, Any]:
        """What shapes the build (the manifest records it); where stage results are cached does not."""
        data = dataclasses.asdict(self)
        data.pop("cache")
        return data

    def config_hash(self) -> str:
        """Hash of what shapes the records; how fast or where the LLM answers are fetched and cached does not."""
        data = self.to_dict()
        for name in ("timeout_s", "max_retries", "concurrency", "cache_dir"):
            data["explanation"]["llm"].pop(name)

        canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


def with_explanation_inputs(config: BuildConfig, annotations: list[str], wheel_dir: str | None) -> BuildConfig:
    """The config with the command line's annotation tables and wheel folder added (they count in the hash)."""
    e = config.explanation
    e = dataclasses.replace(e, annotations=(*e.annotations, *annotations), wheel_dir=wheel_dir or e.wheel_dir)
    return dataclasses.replace(config, explanation=e)


def with_segmentation(config: BuildConfig, mode: str | None, table: str | None, corpus: str | None) -> BuildConfig:
    """The config with the command line's --segment, --segment-table and --corpus (they count in the hash)."""
    s = config.segment
    s = dataclasses.replace(s, mode=mode or ("table" if table and s.mode == "none" else s.mode), table=table or s.table)
    return dataclasses.replace(config, segment=s, corpus=corpus or config.corpus)


def config_from_dict(data: dict[str, Any]) -> BuildConfig:
    """Build a config from plain data, rejecting unknown keys, wrong types and values out of range
    with the path that was wrong."""
    return _build(BuildConfig, data or {}, "")


def section_from_dict(cls: type, data: dict[str, Any], where: str) -> Any:
    """A plug-in stage's config section (a dataclass) from build.yaml, checked like ours (types, each
    key's `setting` rule, the section's `check`)."""
    return _build(cls, data or {}, where)


def check_section(section: Any, where: str) -> None:
    """Every value up front: one `emer: error:` line instead of every clip failing on a library's
    message. The rules are the keys' own (`setting`), then the section's `check(where)`."""
    for f in dataclasses.fields(section):
        ok, must = f.metadata.get("rule", (None, ""))
        value = getattr(section, f.name)
        if ok is not None and not ok(value):
            raise UserError(f"config key {where}{f.name} must be {must}, got {value!r}")
    check = getattr(section, "check", None)
    if callable(check):
        check(where)


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a mapping with the same key twice (YAML would keep the last silently)."""


def _mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def load_config(path: str | Path | None) -> BuildConfig:
    if path is None:
        return BuildConfig()
    p = Path(path)
    if not p.is_file():
        raise UserError(f"config file not found: {p}")
    try:
        data = yaml.load(p.read_bytes().decode("utf-8"), Loader=_UniqueKeyLoader) or {}  # noqa: S506 - a SafeLoader subclass
    except UnicodeDecodeError as e:
        raise UserError(f"config file {p} is not UTF-8 text (byte {e.start} cannot be read); save it as UTF-8") from None
    except OSError as e:
        raise UserError(f"cannot read config file {p}: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        raise UserError(f"config file {p} is not valid YAML: {' '.join(str(e).split())}") from None
    if not isinstance(data, dict):
        raise UserError(f"config file {p} must hold a mapping at the top level")
    return config_from_dict(data)


def _nullable_int(f: dataclasses.Field) -> bool:
    """A key declared `int | None` (annotations are strings here: `from __future__ import annotations`)."""
    return str(f.type).replace(" ", "") in ("int|None", "None|int", "Optional[int]")


def _nullable_ints(cls: type, where: str = "") -> tuple[str, ...]:
    """Dotted paths of the `int | None` keys, read from the sections' declarations."""
    found: list[str] = []
    for f in dataclasses.fields(cls):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            found += _nullable_ints(type(default), f"{where}{f.name}.")
        elif _nullable_int(f):
            found.append(f"{where}{f.name}")
    return tuple(found)


def _checked(path: str, default: Any, value: Any, nullable_int: bool = False) -> Any:
    """The value if it has the default's type (ints pass for floats; None only where the default is None)."""
    if default is None:
        if nullable_int:
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise UserError(f"config key {path} must be an integer or null, got {value!r}")
            return value
        if value is not None and not isinstance(value, str):
            raise UserError(f"config key {path} must be a string or null")
        return value
    expected = (int, float) if isinstance(default, float) else type(default)
    if isinstance(value, bool) and not isinstance(default, bool) or not isinstance(value, expected):
        raise UserError(f"config key {path} must be of type {type(default).__name__}, got {value!r}")
    if isinstance(default, float):
        if not math.isfinite(value):  # NaN passes every comparison check; infinity overflows where a count or time is made of it
            raise UserError(f"config key {path} must be a finite number, got {value!r}")
        return float(value)
    return value


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    if not isinstance(data, dict):
        raise UserError(f"config section {where.rstrip('.') or 'top level'} must be a mapping")
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise UserError(f"unknown config key(s) {', '.join(where + k for k in unknown)}; known: {', '.join(sorted(known))}")
    values = {}
    for name, value in data.items():
        f = known[name]
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            values[name] = _build(type(default), value, f"{where}{name}.")
        elif isinstance(default, tuple):
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise UserError(f"config key {where}{name} must be a list of strings")
            values[name] = tuple(value)
        else:
            values[name] = _checked(f"{where}{name}", default, value, _nullable_int(f))
    section = cls(**values)
    check_section(section, where)
    return section


NULLABLE_INTS = _nullable_ints(BuildConfig)
