"""The stage list of a build (core stages plus `extra_stages` plug-ins, built the same way) and the
records' provenance, which each stage adds its part to."""

from __future__ import annotations

import copy
from typing import Any

from emer_builder.core.config import BuildConfig
from emer_builder.core.errors import UserError, one_line
from emer_builder.core.version import __version__
from emer_builder.schemas import SCHEMA, RecordSchema
from emer_builder.schemas.v1 import PROVENANCE
from emer_builder.transforms.clip import Clip, Stage
from emer_builder.transforms.plugins import plugin_stages, record_schema, stages_schema
from emer_builder.transforms.stages.acoustics import AcousticsStage
from emer_builder.transforms.stages.decode import DecodeStage
from emer_builder.transforms.stages.faces import FacesStage
from emer_builder.transforms.stages.transcript import TranscriptStage
from emer_builder.transforms.stages.video import VideoStage

__all__ = ["CORE_STAGES", "build_stages", "check_stages", "finish_record", "provenance", "record_schema", "stages_schema"]

# The core stages in run order. Each declares its own section (`config_type`, read from `config.<name>`,
# its keys' checks beside them in core/config.py), its field group (schemas/v1.py) and its provenance.
# Video comes last: it reads only the file and `media`, so changing its settings reruns no other stage.
CORE_STAGES: tuple[type[Stage], ...] = (DecodeStage, TranscriptStage, FacesStage, AcousticsStage, VideoStage)


def core_section(cls: type[Stage], config: BuildConfig) -> Any:
    """A core stage's section of the config, `config.<name>` (None when it takes none)."""
    return getattr(config, cls.name) if cls.config_type is not None else None


def build_stages(config: BuildConfig) -> list[Stage]:
    """Stages in run order, core then plug-ins, each built from its checked section; each adds its
    field group to the clip. Plug-in classes are loaded once here."""
    return [cls.from_config(core_section(cls, config)) for cls in CORE_STAGES] + plugin_stages(config)


def check_stages(stages: list[Stage]) -> None:
    """Each stage's `check` once in the driver, so a model that cannot load (a typo, no network for
    a hub model, a bad language code) is one clear error before any worker starts. It runs on a copy:
    a check may load models, and the stages given travel to the workers as they were built."""
    for stage in stages:
        try:
            copy.deepcopy(stage).check()
        except Exception as e:  # noqa: BLE001
            raise UserError(f"stage {stage.name} cannot start: {type(e).__name__}: {one_line(e)}") from None


def provenance(stages: list[Stage], config_hash: str, explanation_sources: str, emotion_wheel: str | None) -> dict[str, Any]:
    """Every record's `provenance` group: the build's own keys plus what each stage declares, in the
    schema's field order; a stage key the group does not hold is an error (add it to the group)."""
    values: dict[str, Any] = {
        "tool": f"emer-builder {__version__}",
        "schema_version": SCHEMA.version,
        "config_hash": config_hash,
        "explanation_sources": explanation_sources,
        "emotion_wheel": emotion_wheel,
    }
    fields = [f.name for f in PROVENANCE.fields]
    for stage in stages:
        declared = stage.provenance()
        unknown = sorted(set(declared) - set(fields))
        if unknown:
            raise UserError(f"stage {stage.name} declares provenance key(s) {', '.join(unknown)} that the provenance field group lacks")
        values.update(declared)
    return {name: values.get(name) for name in fields}


def finish_record(clip: Clip, schema: RecordSchema, prov: dict[str, Any]) -> dict[str, Any]:
    """The record of a clip whose stages all ran: field groups in schema order, split filled later."""
    record: dict[str, Any] = {"key": clip.key, "split": "", "source_path": clip.source_path}
    for group in schema.groups:
        record[group.name] = prov if group.name == "provenance" else clip.fields.get(group.name)
    return record
