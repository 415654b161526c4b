"""Acoustics stage: openSMILE eGeMAPSv02 functionals (88, named) and a prosody summary."""

from __future__ import annotations

import importlib.metadata
import math
from typing import Any

import numpy as np
from emer_builder.schemas.v1 import ACOUSTICS, EGEMAPS_V02_FUNCTIONALS
from emer_builder.transforms.clip import Clip, Stage
from emer_builder.transforms.stages.decode import SAMPLE_RATE
from emer_builder.transforms.stages.models import one_blas_thread

F0_LLD = "F0semitoneFrom27.5Hz_sma3nz"
LOUDNESS_LLD = "Loudness_sma3"


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

    def extract(self, audio: np.ndarray, transcript: dict[str, Any] | None) -> dict[str, Any]:
        func = self.functionals.process_signal(audio, SAMPLE_RATE).iloc[0]
        names = list(func.index)
        if tuple(names) != EGEMAPS_V02_FUNCTIONALS:
            raise RuntimeError("openSMILE's eGeMAPSv02 functional names differ from schema v1")
        lld = self.lld.process_signal(audio, SAMPLE_RATE)
        f0 = lld[F0_LLD].to_numpy()
        voiced = f0[f0 > 0]
        loudness = lld[LOUDNESS_LLD].to_numpy()
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
            "egemaps": {n: _finite(float(func[n])) for n in names},
            "prosody": prosody,
        }


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
