"""Transcript stage: faster-whisper (CTranslate2) on the decoded 16 kHz track, model loaded once per worker."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
from emer_builder.schemas.v1 import TRANSCRIPT
from emer_builder.transforms.clip import Clip, Stage
from emer_builder.transforms.models import resolve_whisper

_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af]")
_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")


def count_words(text: str) -> int:
    """Words in a transcript; each CJK character counts as one word (those scripts have no spaces)."""
    cjk = len(_CJK.findall(text))
    return cjk + len(_WORD.findall(_CJK.sub(" ", text)))


def empty_transcript(model: str, reason: str) -> dict[str, Any]:
    return {"reason": reason, "model": model, "language": None, "language_probability": None, "text": None, "word_count": None, "segments": None}


class Transcriber:
    """A Whisper model plus the decoding options; `transcribe` is the plain-Python core."""

    def __init__(self, model: str = "base", language: str | None = None, vad_filter: bool = True, beam_size: int = 5, device: str = "auto", cpu_threads: int = 2):
        import ctranslate2
        from faster_whisper import WhisperModel
        from faster_whisper.tokenizer import _LANGUAGE_CODES

        if language is not None and language not in _LANGUAGE_CODES:
            raise ValueError(f"transcript.language {language!r} is not a Whisper language code (en, zh, ...)")
        self.model_name = model
        path = resolve_whisper(model)
        if device == "auto":
            device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
        compute_type = "float16" if device == "cuda" else "int8"
        self.model = WhisperModel(path, device=device, compute_type=compute_type, cpu_threads=cpu_threads)
        self.language, self.vad_filter, self.beam_size = language, vad_filter, beam_size

    def transcribe(self, audio: np.ndarray) -> dict[str, Any]:
        import ctranslate2

        ctranslate2.set_random_seed(0)  # temperature fallback samples: keep reruns identical
        segments, info = self.model.transcribe(audio, language=self.language, vad_filter=self.vad_filter, beam_size=self.beam_size)
        segs = [
            {
                "start_s": round(float(s.start), 3),
                "end_s": round(float(s.end), 3),
                "text": s.text.strip(),
                "avg_logprob": round(float(s.avg_logprob), 4),
                "no_speech_prob": round(float(s.no_speech_prob), 4),
            }
            for s in segments
        ]
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


class TranscriptStage(Stage):
    name = "transcript"
    group = TRANSCRIPT

    def __init__(self, **options: Any):
        self.options = options
        self.transcriber: Transcriber | None = None

    def setup(self) -> None:
        self.transcriber = Transcriber(**self.options)

    def model_id(self) -> str:
        return str(self.options.get("model", "base"))

    def process(self, clip: Clip) -> None:
        if clip.audio is None:
            clip.fields[self.name] = empty_transcript(self.model_id(), "no audio track")
            return
        assert self.transcriber is not None, "setup() not called"
        clip.fields[self.name] = self.transcriber.transcribe(clip.audio)
