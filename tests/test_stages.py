"""Stages are declared like plug-ins (their config section, checks, provenance and field group), and
the config's hash and dict (in every record's provenance and the manifest) stay what they were."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
from typing import Any

import pytest
from emer_builder.core.config import BuildConfig, VideoConfig, config_from_dict
from emer_builder.core.errors import UserError
from emer_builder.core.version import __version__
from emer_builder.pipelines.stages import CORE_STAGES, build_stages, check_stages, core_section, provenance
from emer_builder.schemas import SCHEMA
from emer_builder.schemas.v1 import PROVENANCE
from emer_builder.transforms.clip import Stage
from emer_builder.transforms.plugins import plugin_stages
from emer_builder.transforms.stages.video import ffmpeg_version

# The config hash (every record's provenance.config_hash) and the manifest's config, computed by the code
# before stages declared their own sections (issue 20), then with the `video` section added (issue 21, its
# defaults), then with decode.max_duration_s raised from 600 to 14400 (issue 22: a long file is streamed):
# a change here changes every record of every build.
CONFIG_HASHES: list[tuple[dict[str, Any], str, str]] = [
    ({}, "a3662c733a2c2941fd39a37fc29b3f8b62010c15a1373a1a51625977b17c1e73", "c892ca640cd4c2bf0e759c527415944922fe898106a86df7dd8340ffb2136142"),
    (
        {
            "decode": {"sample_fps": 4, "audio_language": "en", "min_decoded_fraction": 0},
            "transcript": {"model": "tiny.en", "cpu_threads": 2, "language": "fr"},
            "faces": {"max_crops": 4, "detector": "opencv"},
        },
        "e453c30e6a1f6bbd3c9cebb0c593fc3c1e8b7dbb67b025a9815b60e8452e2cb3",
        "01dd3bdce914b06bd3528ec32d1a750273f7566e93eddc0624f0da2c8c6b0403",
    ),
    (
        {
            "split": {"ratios": {"train": 0.5, "test": 0.5}, "group_pattern": "(\\w+)_"},
            "shards": {"max_records": 10},
            "explanation": {
                "default_sources": ["rules"],
                "annotations": ["a.csv"],
                "llm": {"base_url": "http://x/v1", "model": "m", "timeout_s": 5, "max_tokens": {"visual_clue": 100}},
            },
            "segment": {"mode": "subtitles", "min_s": 1},
            "extra_stages": ["tests.plugin_brightness:BrightnessStage"],
            "stage_config": {"brightness": {"dark_below": 80}},
            "corpus": "meld",
            "follow_external_links": True,
            "cache": {"enabled": False},
        },
        "42730d7d9fd34cb655ce22afdcb7be8c689102489c65134d1efc7d4794d11d7e",
        "261f04041793db4054424259387edc9e61c5f2e87dec3e97efcfccd07f430a2c",
    ),
]


@pytest.mark.parametrize("data, config_hash, dict_hash", CONFIG_HASHES)
def test_config_hash_and_dict_are_unchanged(data: dict[str, Any], config_hash: str, dict_hash: str):
    config = config_from_dict(data)
    assert config.config_hash() == config_hash
    assert hashlib.sha256(json.dumps(config.to_dict()).encode()).hexdigest() == dict_hash  # key order too


def test_core_stages_declare_their_section_group_and_provenance():
    """Adding a core stage is its module (with `config_type` and `provenance`), its field group and one
    entry in CORE_STAGES: nothing names a stage by string."""
    fields = {f.name: f for f in dataclasses.fields(BuildConfig)}
    for cls in CORE_STAGES:
        assert cls.group in SCHEMA.groups and cls.group.name == {"decode": "media"}.get(cls.name, cls.name)  # decode fills `media`
        if cls.config_type is not None:
            assert isinstance(fields[cls.name].default_factory(), cls.config_type), cls.name
    assert [type(s) for s in build_stages(BuildConfig())] == list(CORE_STAGES)
    provided = {key for cls in CORE_STAGES for key in cls.from_config(core_section(cls, BuildConfig())).provenance()}
    assert provided == {"whisper_model", "face_detector", "expression_model", "opensmile", "video_encoder"}


def test_stages_are_built_from_their_sections():
    config = config_from_dict(
        {
            "decode": {"sample_fps": 4, "audio_language": "en"},
            "transcript": {"model": "tiny.en", "language": "fr"},
            "faces": {"max_crops": 4, "detector": "opencv", "expression_model": "fer-tflite"},
        }
    )
    decode, transcript, faces, _, video = build_stages(config)
    assert (decode.sample_fps, decode.audio_language, decode.max_duration_s) == (4.0, "en", 14400.0)
    assert transcript.options == {"model": "tiny.en", "language": "fr", "vad_filter": True, "beam_size": 5, "device": "auto", "cpu_threads": 1, "encoder_window": "fit"}
    assert (faces.detector, faces.max_crops, faces.expression_name, faces.crop_size) == ("opencv", 4, "fer-tflite", 224)
    assert video.config == VideoConfig()


def test_provenance_is_what_each_stage_declares_in_schema_order():
    config = config_from_dict({"transcript": {"model": "tiny.en"}, "faces": {"detect_max_side": 480, "expression_model": "fer-tflite"}})
    prov = provenance(build_stages(config), "h", "visual_clue=rules", None)
    assert prov == {
        "tool": f"emer-builder {__version__}",
        "schema_version": SCHEMA.version,
        "config_hash": "h",
        "whisper_model": "tiny.en",
        "face_detector": "yunet@480px",
        "expression_model": "fer-tflite:emotion_model_quantized (FER2013, 64x64 gray)",
        "opensmile": f"opensmile {importlib.metadata.version('opensmile')} eGeMAPSv02",
        "explanation_sources": "visual_clue=rules",
        "emotion_wheel": None,
        "video_encoder": f"{ffmpeg_version()} libx264 preset=veryfast crf=28 max_side=480, aac 64k",
    }
    assert list(prov) == [f.name for f in PROVENANCE.fields]

    class Stray(Stage):
        name = "stray"

        def provenance(self) -> dict[str, Any]:
            return {"stray_model": "x"}

    with pytest.raises(UserError, match="stage stray declares provenance key\\(s\\) stray_model that the provenance field group lacks"):
        provenance([Stray()], "h", "", None)


def test_a_plugin_section_is_checked_like_a_core_one():
    """The plug-in's dataclass declares its rules with the same `setting` as core/config.py."""
    base = {"extra_stages": ["tests.plugin_brightness:BrightnessStage"]}
    (stage,) = plugin_stages(config_from_dict({**base, "stage_config": {"brightness": {"dark_below": 80}}}))
    assert stage.config.dark_below == 80.0 and build_stages(config_from_dict(base))[-1].config.dark_below == 50.0
    for value, message in ((300, "must be between 0 and 256, got 300.0"), (float("nan"), "must be a finite number, got nan"), ("dark", "must be of type float")):
        with pytest.raises(UserError) as caught:
            build_stages(config_from_dict({**base, "stage_config": {"brightness": {"dark_below": value}}}))
        assert str(caught.value).startswith("config key stage_config.brightness.dark_below ") and message in str(caught.value)


def test_stage_checks_run_once_each_as_one_line():
    calls: list[str] = []

    class Fine(Stage):
        name = "fine"

        def __init__(self) -> None:
            self.model: str | None = None

        def setup(self) -> None:
            self.model = "loaded"  # an unpicklable model in a real stage
            calls.append(self.name)

    class NoModel(Stage):
        name = "no_model"

        def check(self) -> None:
            raise FileNotFoundError("weights missing:\nlook in ~/.cache")

    fine = Fine()
    check_stages([fine])
    assert calls == ["fine"] and fine.model is None  # checked on a copy: the stage goes to the workers as built
    with pytest.raises(UserError) as caught:
        check_stages([Fine(), NoModel()])
    assert str(caught.value).startswith("stage no_model cannot start: FileNotFoundError: weights missing:") and "\n" not in str(caught.value)
    assert calls == ["fine", "fine"]
