"""Acoustics stage: openSMILE eGeMAPSv02 functionals (88, named) and a prosody summary.

A track longer than `BLOCK_S` (a long clip's, read from disk) goes through openSMILE in equal blocks:
for its functionals openSMILE keeps every low-level frame of its input with its time stamps (measured:
about 1.2 GB for an hour, 0.5 MB per second of input), so the clip's functionals are the mean of its
blocks' functionals, weighted by their length (exact for a clip of one block; for percentiles, slopes
and segment lengths an average over blocks, not the clip's own), and the prosody summary is computed
from the blocks' frames together.
"""

from __future__ import annotations

import importlib.metadata
import math
from typing import Any

import numpy as np
from emer_builder.schemas.v1 import ACOUSTICS, EGEMAPS_V02_FUNCTIONALS
from emer_builder.transforms.clip import Audio, Clip, Stage
from emer_builder.transforms.stages.decode import SAMPLE_RATE
from emer_builder.transforms.stages.long_clip import trim_heap
from emer_builder.transforms.stages.models import one_blas_thread

F0_LLD = "F0semitoneFrom27.5Hz_sma3nz"
LOUDNESS_LLD = "Loudness_sma3"
BLOCK_S = 120  # a longer track goes through openSMILE in equal blocks of at most this (about 60 MB each)


def feature_set_id() -> str:
    """From the installed distribution's metadata: importing openSMILE (pandas, audformat) costs 0.3 s
    that a no-op rebuild, which only needs the stages' digests, should not pay."""
    return f"opensmile {importlib.metadata.version('opensmile')} eGeMAPSv02"


def _finite(value: float) -> float | None:
    return None if value is None or math.isnan(value) or math.isinf(value) else round(float(value), 6)


class AcousticFeatures:
    """Two openSMILE extractors (functionals and low-level descriptors), built once per worker."""

    def __init__(self) -> None:
        import opensmile

        self.functionals = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02, feature_level=opensmile.FeatureLevel.Functionals)
        self.lld = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02, feature_level=opensmile.FeatureLevel.LowLevelDescriptors)
        self.id = feature_set_id()

    def extract(self, audio: Audio, transcript: dict[str, Any] | None) -> dict[str, Any]:
        """The acoustics field group of a 16 kHz track (an array, or a long clip's AudioSource)."""
        total = len(audio)
        count = max(1, math.ceil(total / (BLOCK_S * SAMPLE_RATE)))
        bounds = [total * i // count for i in range(count + 1)]
        rows, f0s, loudnesses = [], [], []
        for start, stop in zip(bounds, bounds[1:], strict=False):
            samples = np.asarray(audio[start:stop])
            func = self.functionals.process_signal(samples, SAMPLE_RATE).iloc[0]
            if tuple(func.index) != EGEMAPS_V02_FUNCTIONALS:
                raise RuntimeError("openSMILE's eGeMAPSv02 functional names differ from schema v1")
            rows.append(func.to_numpy(dtype=np.float64))
            lld = self.lld.process_signal(samples, SAMPLE_RATE)
            f0s.append(lld[F0_LLD].to_numpy())
            loudnesses.append(lld[LOUDNESS_LLD].to_numpy())
            if count > 1:
                del func, lld
                trim_heap()
        names = EGEMAPS_V02_FUNCTIONALS
        values = rows[0] if count == 1 else weighted_mean(np.vstack(rows), np.diff(bounds))
        f0 = f0s[0] if count == 1 else np.concatenate(f0s)
        voiced = f0[f0 > 0]
        loudness = loudnesses[0] if count == 1 else np.concatenate(loudnesses)
        prosody = {
            "f0_mean_semitone": _finite(voiced.mean()) if voiced.size else None,
            "f0_std_semitone": _finite(voiced.std()) if voiced.size else None,
            "f0_range_semitone": _finite(np.percentile(voiced, 95) - np.percentile(voiced, 5)) if voiced.size else None,
            "loudness_mean": _finite(loudness.mean()) if loudness.size else None,
            "voiced_ratio": round(float(voiced.size / f0.size), 6) if f0.size else None,
            "speech_rate_wps": speech_rate(transcript),
        }
        return {
            "reason": None,
            "feature_set": self.id,
            "egemaps": {n: _finite(float(v)) for n, v in zip(names, values, strict=True)},
            "prosody": prosody,
        }


def weighted_mean(rows: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Per column, the mean of the finite values weighted by `weights` (the blocks' lengths); NaN where none is finite."""
    finite = np.isfinite(rows)
    w = np.where(finite, weights[:, None].astype(np.float64), 0.0)
    total = w.sum(axis=0)
    sums = (np.where(finite, rows, 0.0) * w).sum(axis=0)
    return np.divide(sums, total, out=np.full(rows.shape[1], np.nan), where=total > 0)


def speech_rate(transcript: dict[str, Any] | None) -> float | None:
    """Transcript words per second of transcribed speech (segment time), None without speech."""
    if not transcript or not transcript.get("segments"):
        return None
    seconds = sum(max(0.0, s["end_s"] - s["start_s"]) for s in transcript["segments"])
    return round(transcript["word_count"] / seconds, 4) if seconds > 0 else None


class AcousticsStage(Stage):
    name = "acoustics"
    group = ACOUSTICS

    def __init__(self) -> None:
        self.features: AcousticFeatures | None = None

    def setup(self) -> None:
        one_blas_thread()  # eGeMAPS' sums must not depend on the machine's cores
        self.features = AcousticFeatures()

    def model_id(self) -> str:
        return feature_set_id()

    def provenance(self) -> dict[str, Any]:
        return {"opensmile": self.model_id()}

    def process(self, clip: Clip) -> None:
        if clip.audio is None:
            clip.fields[self.name] = {"reason": "no audio track", "feature_set": self.model_id(), "egemaps": None, "prosody": None}
            return
        assert self.features is not None, "setup() not called"
        clip.fields[self.name] = self.features.extract(clip.audio, clip.fields.get("transcript"))
