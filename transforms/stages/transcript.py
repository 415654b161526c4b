"""Transcript stage: faster-whisper (CTranslate2) on the decoded 16 kHz track, model loaded once per worker.

Whisper's encoder always reads a 30-second window, so a 5-second clip paid for 30 s, twice (once to
detect the language, once to transcribe). With `encoder_window: fit` (the default) the window fits
the clip (its length plus 1 s, in 5 s steps, 10 s at least, 30 s at most) and the language is read
from the same encoder pass that the transcription uses. On the 24 bench clips (131 s) that took
Whisper base from 59 to 11 CPU-seconds with the same words on the LibriVox references (WER 2.8%
both ways); `encoder_window: full` keeps faster-whisper's own behaviour.

A long track (over `BLOCK_S`) reaches Whisper in blocks cut at pauses, their segments shifted to the
track's time: faster-whisper computes its features of the whole array at once (about 1 GB for an hour),
and a long clip's track is on disk, read block by block. The first block with speech names the language
of the blocks after it.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from emer_builder.core.config import TranscriptConfig
from emer_builder.core.cpu import LibraryThreads
from emer_builder.schemas.v1 import TRANSCRIPT
from emer_builder.transforms.clip import Audio, Clip, Stage
from emer_builder.transforms.stages.long_clip import trim_heap
from emer_builder.transforms.stages.models import one_blas_thread, resolve_whisper

_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af]")
_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")

SAMPLE_RATE = 16_000
FRAMES_PER_S = 100  # Whisper's mel frames per second
FULL_WINDOW_S = 30
MIN_WINDOW_S = 10  # shorter windows cost little less and start to change words (5 s: "ill-sposed")
WINDOW_STEP_S = 5  # few distinct shapes
WINDOW_MARGIN_S = 1.0
ENCODER_WINDOWS = ("fit", "full")
BLOCK_S = 120  # a longer track reaches Whisper in blocks of at most this
PAUSE_SEARCH_S = 20  # a block ends at the quietest tenth of a second of its last 20 s: a pause, so no word is cut


def count_words(text: str) -> int:
    """Words in a transcript; each CJK character counts as one word (those scripts have no spaces)."""
    cjk = len(_CJK.findall(text))
    return cjk + len(_WORD.findall(_CJK.sub(" ", text)))


def empty_transcript(model: str, reason: str) -> dict[str, Any]:
    return {"reason": reason, "model": model, "language": None, "language_probability": None, "text": None, "word_count": None, "segments": None}


def window_seconds(samples: int) -> int:
    """The encoder window for a clip of `samples` at 16 kHz: its length plus a margin, rounded up to
    5 s steps, between 10 and 30 s (longer clips go through 30 s windows one after another)."""
    seconds = samples / SAMPLE_RATE + WINDOW_MARGIN_S
    return int(min(FULL_WINDOW_S, max(MIN_WINDOW_S, math.ceil(seconds / WINDOW_STEP_S) * WINDOW_STEP_S)))


def quietest(samples: np.ndarray, window: int = SAMPLE_RATE // 10) -> int:
    """Where in `samples` the quietest `window` is centred (the least energy)."""
    count = max(1, len(samples) // window)
    energy = np.square(samples[: count * window].astype(np.float64)).reshape(count, -1).sum(axis=1)
    return int(np.argmin(energy)) * window + window // 2


def audio_blocks(audio: Audio, block_s: float = BLOCK_S, search_s: float = PAUSE_SEARCH_S) -> Iterator[tuple[int, np.ndarray]]:
    """(first sample, samples) of consecutive blocks covering the track, each at most `block_s` long and
    ended at a pause in its last `search_s`; a track no longer than `block_s` is one block."""
    total, block, search = len(audio), int(block_s * SAMPLE_RATE), int(search_s * SAMPLE_RATE)
    start = 0
    while True:  # an empty track is one empty block
        end = total if total - start <= block else start + block - search + quietest(np.asarray(audio[start + block - search : start + block]))
        yield start, np.asarray(audio[start:end])
        if end >= total:
            return
        start = end


def _fitted_model_class() -> type:
    from faster_whisper import WhisperModel

    class FittedWhisperModel(WhisperModel):
        """faster-whisper whose encoder reads `window_frames` of each (padded) 30 s window and encodes
        a window once: the language detection and the transcription share the pass."""

        window_frames = FULL_WINDOW_S * FRAMES_PER_S
        _last: tuple[np.ndarray, Any] | None = None

        def encode(self, features: np.ndarray) -> Any:
            if features.ndim == 2:
                features = features[np.newaxis]
            features = np.ascontiguousarray(features[..., : self.window_frames])
            last = self._last
            if last is not None and last[0].shape == features.shape and np.array_equal(last[0], features):
                return last[1]
            output = super().encode(features)
            self._last = (features, output)
            return output

        def detect_language(self, audio: np.ndarray | None = None, features: np.ndarray | None = None, **options: Any) -> Any:
            # transcribe() hands over the features with one frame more than the first window it then
            # encodes; without it both passes see the same window, so the second is the cached first
            if features is not None and features.shape[-1] > 1:
                features = features[..., :-1]
            return super().detect_language(audio=audio, features=features, **options)

        def forget(self) -> None:
            self._last = None

    return FittedWhisperModel


def check_transcriber(model: str, language: str | None, device: str, encoder_window: str) -> tuple[str, str]:
    """The model's local folder and the device, checked without loading the weights (about 1 s for
    base): a bad language code, window, device or model name fails here."""
    import ctranslate2
    from faster_whisper.tokenizer import _LANGUAGE_CODES
    from faster_whisper.utils import download_model

    if language is not None and language not in _LANGUAGE_CODES:
        raise ValueError(f"transcript.language {language!r} is not a Whisper language code (en, zh, ...)")
    if encoder_window not in ENCODER_WINDOWS:
        raise ValueError(f"transcript.encoder_window {encoder_window!r}: use fit or full")
    if device == "auto":
        device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
    elif device == "cuda" and ctranslate2.get_cuda_device_count() == 0:
        raise ValueError("transcript.device cuda: no CUDA device is visible")
    path = resolve_whisper(model)
    if not Path(path).is_dir():
        path = download_model(path)  # a hub name: fetched once into the cache (or an error naming it)
    if not (Path(path) / "model.bin").is_file():
        raise ValueError(f"transcript.model {model!r}: {path} holds no CTranslate2 model.bin")
    return path, device


class Transcriber:
    """A Whisper model plus the decoding options; `transcribe` is the plain-Python core."""

    def __init__(
        self,
        model: str = "base",
        language: str | None = None,
        vad_filter: bool = True,
        beam_size: int = 5,
        device: str = "auto",
        cpu_threads: int = 1,
        encoder_window: str = "fit",
    ):
        from faster_whisper import WhisperModel

        self.model_name = model
        path, device = check_transcriber(model, language, device, encoder_window)
        self.device = device
        self.compute_type = "float16" if device == "cuda" else "int8"
        cls = _fitted_model_class() if encoder_window == "fit" else WhisperModel
        self.threads = LibraryThreads()  # CTranslate2 runs the model in worker threads of its own, started here
        with self.threads.started():
            self.model = cls(path, device=device, compute_type=self.compute_type, cpu_threads=cpu_threads)
        self.language, self.vad_filter, self.beam_size, self.encoder_window = language, vad_filter, beam_size, encoder_window

    def transcribe(self, audio: Audio) -> dict[str, Any]:
        """The transcript field group of a 16 kHz track (an array, or a long clip's AudioSource)."""
        segs: list[dict[str, Any]] = []
        language, named = self.language, None
        long = len(audio) > BLOCK_S * SAMPLE_RATE
        for offset, block in audio_blocks(audio, BLOCK_S, PAUSE_SEARCH_S):
            found, info = self._segments(block, language, offset / SAMPLE_RATE)
            segs += found
            if long:
                trim_heap()
            if named is None or (language is None and found):  # the first block with speech names the language
                named = info
                language = info.language if found and language is None else language
        info = named
        text = " ".join(s["text"] for s in segs if s["text"]) if info.language not in ("zh", "ja", "ko") else "".join(s["text"] for s in segs)
        return {
            "reason": None if segs else "no speech detected",
            "model": self.model_name,
            "language": info.language,
            "language_probability": 1.0 if self.language else round(float(info.language_probability), 4),
            "text": text,
            "word_count": count_words(text),
            "segments": segs,
        }

    def _segments(self, audio: np.ndarray, language: str | None, shift_s: float) -> tuple[list[dict[str, Any]], Any]:
        """Whisper's segments of one block, times shifted by `shift_s` (where the block starts), and its info."""
        import ctranslate2

        ctranslate2.set_random_seed(0)  # temperature fallback samples: keep reruns identical
        fitted = self.encoder_window == "fit"
        if fitted:
            self.model.window_frames = window_seconds(len(audio)) * FRAMES_PER_S
        with self.threads.charged():  # the model's own threads work for this call: their CPU is this thread's stage's
            try:
                segments, info = self.model.transcribe(audio, language=language, vad_filter=self.vad_filter, beam_size=self.beam_size)
                segs = [
                    {
                        "start_s": round(float(s.start) + shift_s, 3),
                        "end_s": round(float(s.end) + shift_s, 3),
                        "text": s.text.strip(),
                        "avg_logprob": round(float(s.avg_logprob), 4),
                        "no_speech_prob": round(float(s.no_speech_prob), 4),
                    }
                    for s in segments
                ]
            finally:
                if fitted:
                    self.model.forget()
        return segs, info


class TranscriptStage(Stage):
    name = "transcript"
    group = TRANSCRIPT
    config_type = TranscriptConfig

    @classmethod
    def from_config(cls, section: TranscriptConfig | None = None) -> TranscriptStage:
        options = dataclasses.asdict(section or TranscriptConfig())
        options["cpu_threads"] = options["cpu_threads"] or 1  # one per worker: measured faster than 2 even for one worker on 2 cores (bench/RESULTS.md)
        return cls(**options)

    def __init__(self, **options: Any):
        self.options = options
        self.transcriber: Transcriber | None = None

    def setup(self) -> None:
        one_blas_thread()  # the log-mel features' sums must not depend on the machine's cores
        self.transcriber = Transcriber(**self.options)

    def check(self) -> None:
        o = self.options
        check_transcriber(str(o.get("model", "base")), o.get("language"), str(o.get("device", "auto")), str(o.get("encoder_window", "fit")))

    def model_id(self) -> str:
        return str(self.options.get("model", "base"))

    def provenance(self) -> dict[str, Any]:
        return {"whisper_model": self.model_id()}

    def process(self, clip: Clip) -> None:
        if clip.audio is None:
            clip.fields[self.name] = empty_transcript(self.model_id(), "no audio track")
            return
        assert self.transcriber is not None, "setup() not called"
        clip.fields[self.name] = self.transcriber.transcribe(clip.audio)
