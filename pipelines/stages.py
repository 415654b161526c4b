"""The stage list of a build (core stages plus `extra_stages` plug-ins) and the records' provenance."""

from __future__ import annotations

from typing import Any

from emer_builder.core.config import BuildConfig
from emer_builder.core.version import __version__
from emer_builder.schemas import SCHEMA, RecordSchema
from emer_builder.transforms.acoustics import AcousticsStage
from emer_builder.transforms.clip import Clip, Stage
from emer_builder.transforms.decode import DecodeStage
from emer_builder.transforms.faces import FacesStage
from emer_builder.transforms.plugins import plugin_stages, record_schema
from emer_builder.transforms.transcript import TranscriptStage

__all__ = ["build_stages", "finish_record", "provenance", "record_schema"]


def build_stages(config: BuildConfig) -> list[Stage]:
    """Stages in run order; each adds its field group to the clip."""
    t, d = config.transcript, config.decode
    threads = t.cpu_threads or 1  # one per worker: measured faster than 2 even for one worker on 2 cores (bench/RESULTS.md)
    f = config.faces
    stages: list[Stage] = [
        DecodeStage(
            d.sample_fps,
            d.frame_max_side,
            d.min_duration_s,
            d.max_duration_s,
            audio_stream=d.audio_stream,
            audio_language=d.audio_language,
            min_decoded_fraction=d.min_decoded_fraction,
        ),
        TranscriptStage(
            model=t.model, language=t.language, vad_filter=t.vad_filter, beam_size=t.beam_size, device=t.device, cpu_threads=threads, encoder_window=t.encoder_window
        ),
        FacesStage(f.detector, f.crop_size, f.max_crops, f.expression_model, detect_max_side=f.detect_max_side, min_confidence=f.min_confidence),
        AcousticsStage(),
    ]
    stages += plugin_stages(config)
    return stages


def names_runner(beam_args: list[str]) -> bool:
    """Whether the Beam options choose a runner (else the local one, in this process)."""
    return any(a.startswith("--runner") for a in beam_args)


def provenance(stages: list[Stage], config_hash: str, explanation_sources: str, emotion_wheel: str | None) -> dict[str, Any]:
    by_name = {s.name: s for s in stages}
    return {
        "tool": f"emer-builder {__version__}",
        "schema_version": SCHEMA.version,
        "config_hash": config_hash,
        "whisper_model": by_name["transcript"].model_id(),
        "face_detector": by_name["faces"].detector_id() if hasattr(by_name["faces"], "detector_id") else None,
        "expression_model": by_name["faces"].model_id(),
        "opensmile": by_name["acoustics"].model_id(),
        "explanation_sources": explanation_sources,
        "emotion_wheel": emotion_wheel,
    }


def finish_record(clip: Clip, schema: RecordSchema, prov: dict[str, Any]) -> dict[str, Any]:
    """The record of a clip whose stages all ran: field groups in schema order, split filled later."""
    record: dict[str, Any] = {"key": clip.key, "split": "", "source_path": clip.source_path}
    for group in schema.groups:
        record[group.name] = prov if group.name == "provenance" else clip.fields.get(group.name)
    return record
