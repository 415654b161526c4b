"""Plug-in stages: found by `package.module:Class` or by name in the `emer_builder.stages` entry-point
group, checked when loaded (name, field group, config section), and the record schema they extend.

The plug-in API is `emer_builder.transforms.clip` (Clip, ClipError, Stage) and `emer_builder.schemas`
(Field, FieldGroup, struct, list_of); see docs/guide/extending.md.
"""

from __future__ import annotations

import dataclasses
import importlib
import re
from importlib import metadata
from typing import Any

from emer_builder.core.config import BuildConfig, section_from_dict
from emer_builder.core.errors import UserError
from emer_builder.schemas import SCHEMA, FieldGroup, RecordSchema
from emer_builder.transforms.clip import Stage

ENTRY_POINT_GROUP = "emer_builder.stages"
NAME = re.compile(r"[a-z][a-z0-9_]*")


def _import(spec: str) -> Any:
    if ":" in spec:
        module_name, _, attr = spec.partition(":")
        return getattr(importlib.import_module(module_name), attr)
    found = [ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP) if ep.name == spec]
    if not found:
        names = sorted(ep.name for ep in metadata.entry_points(group=ENTRY_POINT_GROUP))
        raise ValueError(f"no `{ENTRY_POINT_GROUP}` entry point named {spec!r} (installed: {', '.join(names) or 'none'}); or give package.module:Class")
    return found[0].load()


def load_stage_class(spec: str) -> type[Stage]:
    """`package.module:Class` or an entry-point name -> the stage class, checked: a Stage subclass
    whose `name` equals its field group's name (else its column would stay null), a new group name,
    and a dataclass as `config_type` when it takes a config section."""
    try:
        cls = _import(spec)
    except (ImportError, AttributeError, ValueError) as e:
        raise UserError(f"extra stage {spec!r} cannot be loaded: {e}") from None
    if not (isinstance(cls, type) and issubclass(cls, Stage)):
        raise UserError(f"extra stage {spec!r} must be a subclass of emer_builder.transforms.clip.Stage")
    name, group = getattr(cls, "name", None), getattr(cls, "group", None)
    if not isinstance(group, FieldGroup):
        raise UserError(f"extra stage {spec!r} must declare `group`, the FieldGroup it fills")
    if not isinstance(name, str) or not NAME.fullmatch(name) or name != group.name:
        raise UserError(f"extra stage {spec!r}: `name` ({name!r}) must equal its field group's name ({group.name!r}), lower-case letters, digits and _")
    if group.name in SCHEMA.column_names():
        raise UserError(f"extra stage {spec!r}: field group {group.name!r} already exists in the record; choose another name")
    config_type = getattr(cls, "config_type", None)
    if config_type is not None and not dataclasses.is_dataclass(config_type):
        raise UserError(f"extra stage {spec!r}: `config_type` must be a dataclass")
    return cls


def plugin_classes(config: BuildConfig) -> list[type[Stage]]:
    """The configured plug-in stage classes, each loaded and checked once, in `extra_stages` order; a
    stage named twice or a `stage_config` section for no configured stage is an error."""
    classes = [load_stage_class(spec) for spec in config.extra_stages]
    names = [c.name for c in classes]
    if len(set(names)) != len(names):
        raise UserError(f"extra_stages lists stage {sorted(n for n in names if names.count(n) > 1)[0]!r} twice")
    unknown = sorted(set(config.stage_config) - set(names))
    if unknown:
        raise UserError(f"stage_config has section(s) {', '.join(unknown)} for no configured extra stage (stages: {', '.join(names) or 'none'})")
    return classes


def plugin_section(cls: type[Stage], config: BuildConfig) -> Any:
    """A plug-in's section, `stage_config.NAME`, read into its `config_type` and checked like the core
    sections (None when the stage takes no config)."""
    if cls.config_type is None:
        if cls.name in config.stage_config:
            raise UserError(f"stage_config.{cls.name}: stage {cls.name!r} takes no config")
        return None
    return section_from_dict(cls.config_type, config.stage_config.get(cls.name, {}), f"stage_config.{cls.name}.")


def plugin_stages(config: BuildConfig) -> list[Stage]:
    """The configured plug-in stages, each built from its checked config section."""
    return [cls.from_config(plugin_section(cls, config)) for cls in plugin_classes(config)]


def stages_schema(stages: list[Stage]) -> RecordSchema:
    """The record schema plus the field groups of the given stages that it does not hold (the plug-ins')."""
    schema = SCHEMA
    for stage in stages:
        if stage.group.name not in schema.column_names():
            schema = schema.with_group(stage.group)
    return schema


def record_schema(config: BuildConfig) -> RecordSchema:
    """The record schema plus the field groups of the configured plug-in stages."""
    schema = SCHEMA
    for cls in plugin_classes(config):
        schema = schema.with_group(cls.group)
    return schema
