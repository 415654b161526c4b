from pathlib import Path

import numpy as np
import pytest
import soundfile
from emer_builder.transforms.clip import Clip
from emer_builder.transforms.transcript import Transcriber, TranscriptStage, count_words

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


def test_film_transcript_and_forced_language(demo_videos: Path, kphotoalbum_movie: Path):
    from emer_builder.transforms.decode import DecodeStage

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
