import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
from emer_builder.transforms.clip import Clip
from emer_builder.transforms.stages.transcript import Transcriber, TranscriptStage, count_words, window_seconds

from bench.demo_corpus import reference_transcripts
from tests.wer import wer


@pytest.fixture(scope="module")
def whisper_base() -> Transcriber:
    return Transcriber("base", cpu_threads=2)


def _librivox(demo_videos: Path, librivox_dir: Path) -> dict[str, tuple[np.ndarray, str]]:
    refs = reference_transcripts(demo_videos.parent / "root")
    out = {}
    for wav in sorted(librivox_dir.glob("*.wav")):
        audio, rate = soundfile.read(wav, dtype="float32")
        assert rate == 16_000
        out[wav.stem] = (audio, refs[wav.stem])
    return out


@pytest.fixture(scope="module")
def whisper_base_full() -> Transcriber:
    """The path before issue 11: 30 s encoder windows, the language detected in a pass of its own."""
    return Transcriber("base", cpu_threads=2, encoder_window="full")


def _corpus_wer(transcriber: Transcriber, clips: dict[str, tuple[np.ndarray, str]]) -> float:
    errors = words = 0.0
    for audio, reference in clips.values():
        errors += wer(reference, transcriber.transcribe(audio)["text"]) * len(reference.split())
        words += len(reference.split())
    return errors / words


@pytest.mark.slow
def test_librivox_transcripts_match_references(whisper_base: Transcriber, demo_videos: Path, librivox_dir: Path):
    total_errors = total_words = 0
    for utt, (audio, reference) in _librivox(demo_videos, librivox_dir).items():
        result = whisper_base.transcribe(audio)
        assert result["language"] == "en" and result["language_probability"] > 0.9, utt
        rate = wer(reference, result["text"])
        assert rate <= 0.15, f"{utt}: {result['text']!r} vs {reference!r}"
        total_errors += rate * len(reference.split())
        total_words += len(reference.split())
        duration = len(audio) / 16_000
        assert all(0 <= s["start_s"] < s["end_s"] <= duration + 0.5 for s in result["segments"])
        assert all(s["avg_logprob"] < 0 and 0 <= s["no_speech_prob"] <= 1 for s in result["segments"])
    assert total_errors / total_words < 0.08


@pytest.mark.slow
def test_fitted_window_keeps_the_word_error_rate(whisper_base: Transcriber, whisper_base_full: Transcriber, demo_videos: Path, librivox_dir: Path):
    """Issue 11: the fitted encoder window may not cost more than 1 point of WER on the LibriVox references."""
    clips = _librivox(demo_videos, librivox_dir)
    fitted, full = _corpus_wer(whisper_base, clips), _corpus_wer(whisper_base_full, clips)
    assert fitted <= full + 0.01, (fitted, full)


@pytest.mark.slow
def test_one_encoder_pass_per_window(whisper_base: Transcriber, whisper_base_full: Transcriber, demo_videos: Path, librivox_dir: Path, monkeypatch: pytest.MonkeyPatch):
    """A short clip with the language detected: the fitted path encodes once, a clip-sized window;
    faster-whisper's own path encodes the full 30 s window twice (language, then transcript)."""
    from faster_whisper import WhisperModel

    shapes: list[tuple[int, ...]] = []
    original = WhisperModel.encode

    def counting(self, features):  # noqa: ANN001, ANN202 - faster-whisper's own signature
        shapes.append(tuple(features.shape))
        return original(self, features)

    monkeypatch.setattr(WhisperModel, "encode", counting)
    audio, _ = _librivox(demo_videos, librivox_dir)["sense_and_sensibility_01_austen_64kb-0870"]  # 7.1 s
    fitted = whisper_base.transcribe(audio)
    assert shapes == [(1, 80, 1000)]  # 7.1 s + 1 s margin -> a 10 s window
    shapes.clear()
    full = whisper_base_full.transcribe(audio)
    assert [s[-1] for s in shapes] == [3000, 3000]
    assert fitted["language"] == full["language"] == "en" and fitted["language_probability"] > 0.9


def test_window_fits_the_clip():
    assert window_seconds(16_000 * 2) == 10  # at least 10 s
    assert window_seconds(16_000 * 9) == 10
    assert window_seconds(int(16_000 * 9.5)) == 15  # 9.5 s + 1 s margin
    assert window_seconds(16_000 * 20) == 25
    assert window_seconds(16_000 * 29) == 30 and window_seconds(16_000 * 600) == 30  # long clips: 30 s windows in turn


@pytest.mark.slow
def test_long_clip_goes_through_full_windows(whisper_base: Transcriber, whisper_base_full: Transcriber, demo_videos: Path, librivox_dir: Path):
    """Past 30 s the fitted path is faster-whisper's own: 30 s windows one after another, same result."""
    parts = [a for a, _ in _librivox(demo_videos, librivox_dir).values()]
    gap = np.zeros(16_000 * 3, np.float32)
    audio = np.concatenate([p for a in parts + parts for p in (a, gap)])  # about 80 s
    fitted, full = whisper_base.transcribe(audio), whisper_base_full.transcribe(audio)
    assert fitted["segments"][-1]["end_s"] > 60
    assert fitted["text"] == full["text"] and fitted["segments"] == full["segments"]


def test_film_transcript_and_forced_language(demo_videos: Path, kphotoalbum_movie: Path):
    from emer_builder.transforms.stages.decode import DecodeStage

    clip = Clip("movie", str(kphotoalbum_movie), "movie.avi")
    DecodeStage().process(clip)
    forced = Transcriber("tiny.en", language="en", cpu_threads=2).transcribe(clip.audio)
    assert forced["language"] == "en" and forced["language_probability"] == 1.0
    assert forced["text"].lower().startswith("hi, my name is")
    assert forced["word_count"] >= 6


def test_silence_gives_an_empty_transcript_not_a_failure(whisper_base: Transcriber):
    result = whisper_base.transcribe(np.zeros(16_000 * 3, dtype=np.float32))
    assert result["text"] == "" and result["segments"] == [] and result["word_count"] == 0
    assert result["reason"] == "no speech detected"


def test_no_audio_track_is_a_null_group_with_reason():
    stage = TranscriptStage(model="base")
    clip = Clip("k", "/nonexistent", "k.mp4")
    stage.process(clip)  # no setup needed: nothing to transcribe
    assert clip.fields["transcript"]["reason"] == "no audio track"
    assert clip.fields["transcript"]["text"] is None


def test_count_words_handles_cjk_and_contractions():
    assert count_words("He wasn't an ill-disposed young man.") == 7
    assert count_words("我今天很开心") == 6
    assert count_words("OK 我很好") == 4
    assert count_words("") == 0


@pytest.mark.slow
def test_transcript_and_acoustics_do_not_depend_on_blas_threads(demo_videos: Path, tmp_path: Path):
    """NumPy's BLAS thread count (the machine's cores, or the OMP_NUM_THREADS a Dask worker sets) changes
    float sums: the stages pin it, so the same clip gives the same fields everywhere."""
    script = tmp_path / "fields.py"
    script.write_text(
        "import json, sys\n"
        "from emer_builder.core.config import config_from_dict\n"
        "from emer_builder.pipelines.stages import build_stages\n"
        "from emer_builder.transforms.clip import Clip\n"
        "stages = build_stages(config_from_dict({'transcript': {'model': 'tiny.en'}}))\n"
        "clip = Clip('j', sys.argv[1], 'j.avi')\n"
        "for stage in stages:\n"
        "    stage.setup()\n"
        "    stage.process(clip)\n"
        "print(json.dumps({k: clip.fields[k] for k in ('transcript', 'acoustics')}, sort_keys=True))\n"
    )
    seen = set()
    for threads in ("1", "4"):
        env = {**os.environ, "OMP_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads}
        run = subprocess.run([sys.executable, str(script), str(demo_videos / "jesper_intro.avi")], capture_output=True, text=True, env=env, timeout=300)
        assert run.returncode == 0, run.stderr[-2000:]
        seen.add(run.stdout.strip().splitlines()[-1])
    assert len(seen) == 1 and "Jesper" in next(iter(seen))
