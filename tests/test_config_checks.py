"""Config values are checked up front (types, ranges, enums, duplicate keys), and plug-in stages are
checked when loaded (name = group, a new group, their own config section, entry points)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from emer_builder.core.config import config_from_dict, load_config
from emer_builder.core.errors import UserError
from emer_builder.transforms.plugins import load_stage_class, plugin_stages, record_schema


@pytest.mark.parametrize(
    "data, message",
    [
        ({"decode": {"frame_max_side": 0}}, "decode.frame_max_side must be between 32 and 8192, got 0"),
        ({"decode": {"sample_fps": 0}}, "decode.sample_fps must be above 0"),
        ({"decode": {"sample_fps": -2}}, "decode.sample_fps must be above 0"),
        ({"transcript": {"beam_size": 0}}, "transcript.beam_size must be between 1 and 20"),
        ({"transcript": {"device": "tpu"}}, "transcript.device must be one of auto, cpu, cuda"),
        ({"faces": {"max_crops": -1}}, "faces.max_crops must be between 0 and 1000"),
        ({"faces": {"expression_model": "magic"}}, "faces.expression_model must be one of"),
        ({"decode": {"min_duration_s": 10, "max_duration_s": 5}}, "decode.min_duration_s (10.0) must not exceed decode.max_duration_s (5.0)"),
        ({"split": {"ratios": {"train": 0.8, "test": 0.1}}}, "split.ratios must sum to 1, got 0.9"),
        ({"split": {"ratios": {"train": 1.5, "test": -0.5}}}, "split.ratios must map split names to numbers of at least 0"),
        ({"shards": {"max_records": 0}}, "shards.max_records must be between 1 and 10^9"),
        ({"decode": {"sample_fps": "fast"}}, "decode.sample_fps must be of type float"),
    ],
)
def test_out_of_range_values_are_one_clear_error(data: dict, message: str):
    with pytest.raises(UserError, match="config key"):
        config_from_dict(data)
    try:
        config_from_dict(data)
    except UserError as e:
        assert message in str(e) and "\n" not in str(e)


def test_duplicate_yaml_keys_are_an_error(tmp_path: Path):
    path = tmp_path / "build.yaml"
    path.write_text("decode:\n  sample_fps: 2\n  sample_fps: 4\n")
    with pytest.raises(UserError, match="duplicate key 'sample_fps'"):
        load_config(path)
    path.write_text("decode:\n  sample_fps: 4\nfaces:\n  max_crops: 4\n")
    config = load_config(path)
    assert config.decode.sample_fps == 4.0 and config.faces.max_crops == 4


def test_plugin_config_section_is_read_and_checked():
    config = config_from_dict({"extra_stages": ["tests.plugin_brightness:BrightnessStage"], "stage_config": {"brightness": {"dark_below": 80}}})
    (stage,) = plugin_stages(config)
    assert stage.config.dark_below == 80.0 and "brightness" in record_schema(config).column_names()
    with pytest.raises(UserError, match=r"unknown config key\(s\) stage_config.brightness.dark"):
        plugin_stages(config_from_dict({"extra_stages": ["tests.plugin_brightness:BrightnessStage"], "stage_config": {"brightness": {"dark": 1}}}))
    with pytest.raises(UserError, match="stage_config has section"):
        plugin_stages(config_from_dict({"stage_config": {"brightness": {}}}))


def _write_plugin(root: Path, body: str) -> None:
    (root / "emer_test_plugin.py").write_text(body)


BAD_PLUGIN = '''
import pyarrow as pa
from emer_builder.schemas import Field, FieldGroup
from emer_builder.transforms.clip import Stage

class Mismatch(Stage):
    name = "sharpness"
    group = FieldGroup("blur", "d", (Field("v", pa.float32(), "d"),))

class Clash(Stage):
    name = "media"
    group = FieldGroup("media", "d", (Field("v", pa.float32(), "d"),))

class Good(Stage):
    name = "sharpness"
    group = FieldGroup("sharpness", "Laplacian variance.", (Field("v", pa.float32(), "d"),))
'''


def test_stage_name_and_group_are_checked_at_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    _write_plugin(tmp_path, BAD_PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(UserError, match=r"`name` \('sharpness'\) must equal its field group's name \('blur'\)"):
        load_stage_class("emer_test_plugin:Mismatch")
    with pytest.raises(UserError, match="field group 'media' already exists"):
        load_stage_class("emer_test_plugin:Clash")
    with pytest.raises(UserError, match="cannot be loaded"):
        load_stage_class("emer_test_plugin:Missing")
    assert load_stage_class("emer_test_plugin:Good").name == "sharpness"


def test_stages_are_found_through_entry_points(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A plug-in distribution declares `[project.entry-points."emer_builder.stages"]`; an installed
    one has that in its dist-info, which importlib.metadata reads from sys.path."""
    _write_plugin(tmp_path, BAD_PLUGIN)
    dist = tmp_path / "emer_test_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: emer-test-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[emer_builder.stages]\nsharpness = emer_test_plugin:Good\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert load_stage_class("sharpness").group.name == "sharpness"
    with pytest.raises(UserError, match="no `emer_builder.stages` entry point named 'nope'.*sharpness"):
        load_stage_class("nope")
    assert sys.modules["emer_test_plugin"].Good.name == "sharpness"
