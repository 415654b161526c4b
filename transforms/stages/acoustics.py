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
import os
import threading
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


class SmilePass:
    """openSMILE's eGeMAPSv02 graph set up once per worker, one run per block giving both outputs.

    opensmile's `process_signal` sets the graph up again on every call and runs it once for the
    functionals and once more for the low-level descriptors (which the functionals are computed from),
    then builds pandas frames: 60 ms of CPU for a 1.5 s clip, 23 ms here (issue 22). The graph, its
    input and the int16 samples are the ones `process_signal` uses; only its two sinks are read in one
    run, so the numbers are the same (tests/test_acoustics.py holds them to `process_signal`'s)."""

    def __init__(self) -> None:
        import opensmile
        from opensmile.core.config import config
        from opensmile.core.lib import OpenSMILE

        # The graph and its options are those `opensmile.Smile` builds for eGeMAPSv02 (its config root,
        # config file, log level 2, no log file); a Smile itself is not built: its construction lists every
        # installed distribution (audobject's class key, 0.2-0.55 s of CPU per process, issue 22).
        level = opensmile.FeatureLevel
        root = os.path.join(os.path.dirname(os.path.realpath(opensmile.core.smile.__file__)), config.CONFIG_ROOT)
        options = {
            "source": os.path.join(root, config.EXTERNAL_INPUT_CONFIG),
            "sampleRate": SAMPLE_RATE,
            "nBits": 16,
            "sink": os.path.join(root, config.EXTERNAL_OUTPUT_MULTI_CONFIG),
            "sinkLevelFunc": level.Functionals.value,
            "sinkLevelLLD": level.LowLevelDescriptors.value,
            "bufferModeRbConf": os.path.join(root, "shared/BufferModeRb.conf.inc"),
            "frameModeFunctionalsConf": os.path.join(root, "shared/FrameModeFunctionals.conf.inc"),
        }
        self.smile = OpenSMILE()
        config_file = os.path.join(root, opensmile.FeatureSet.eGeMAPSv02.value + config.CONFIG_EXT)
        self.smile.initialize(config_file=config_file, options=options, loglevel=2, log_file=None, debug=False)
        self.names, self.lld_names = self._sink_names("extsinkfunc"), self._sink_names("extsinklld")
        if self.names != EGEMAPS_V02_FUNCTIONALS:
            raise RuntimeError("openSMILE's eGeMAPSv02 functional names differ from schema v1")
        self._source, self._lock = config.EXTERNAL_SOURCE_COMPONENT, threading.Lock()

    def __call__(self, samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(functionals, low-level descriptor rows) of 16 kHz samples; a row of NaN where openSMILE
        gives none (a block too short), as `process_signal` fills it."""
        func: list[np.ndarray] = []
        lld: list[np.ndarray] = []
        pcm = samples.copy()
        pcm *= 32768
        with self._lock:  # one run at a time on the one graph
            smile = self.smile
            smile._callbacks.clear()  # the last run's callbacks (their rows): the ones below replace them
            smile.external_sink_set_callback_ex("extsinkfunc", lambda data, _meta: func.append(data.copy()))
            smile.external_sink_set_callback_ex("extsinklld", lambda data, _meta: lld.append(data.copy()))
            smile.external_audio_source_write_data(self._source, bytes(pcm.astype(np.int16)))
            smile.external_audio_source_set_eoi(self._source)
            smile.run()
            smile.reset()
        return self._rows(func, self.names)[0], self._rows(lld, self.lld_names)

    def _sink_names(self, sink: str) -> tuple[str, ...]:
        return tuple(self.smile.external_sink_get_element_name(sink, i) for i in range(self.smile.external_sink_get_num_elements(sink)))

    @staticmethod
    def _rows(rows: list[np.ndarray], names: tuple[str, ...]) -> np.ndarray:
        return np.vstack(rows) if rows else np.full((1, len(names)), np.nan)


class AcousticFeatures:
    """openSMILE's functionals and low-level descriptors of a track, set up once per worker."""

    def __init__(self) -> None:
        self.smile = SmilePass()
        self.f0, self.loudness = self.smile.lld_names.index(F0_LLD), self.smile.lld_names.index(LOUDNESS_LLD)
        self.id = feature_set_id()

    def extract(self, audio: Audio, transcript: dict[str, Any] | None) -> dict[str, Any]:
        """The acoustics field group of a 16 kHz track (an array, or a long clip's AudioSource)."""
        total = len(audio)
        count = max(1, math.ceil(total / (BLOCK_S * SAMPLE_RATE)))
        bounds = [total * i // count for i in range(count + 1)]
        rows, f0s, loudnesses = [], [], []
        for start, stop in zip(bounds, bounds[1:], strict=False):
            func, lld = self.smile(np.asarray(audio[start:stop]))
            rows.append(func.astype(np.float64))
            f0s.append(np.ascontiguousarray(lld[:, self.f0]))
            loudnesses.append(np.ascontiguousarray(lld[:, self.loudness]))
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
