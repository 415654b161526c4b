"""Every numeric config key, fed NaN, infinities, negative, zero and huge values, gives one clear line
naming the key or a config the build's own code works with: never a traceback, never a silently wrong
split (a config file that is not UTF-8 is one line too)."""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from emer_builder.core.config import NULLABLE_INTS, BuildConfig, config_from_dict
from emer_builder.core.errors import ClipError, UserError
from emer_builder.transforms.clip import Clip
from emer_builder.transforms.segment import check_options
from emer_builder.transforms.shards import plan_shards
from emer_builder.transforms.split import SplitAssigner
from emer_builder.transforms.stages.decode import LIMIT_MARGIN_S, DecodeStage, decode_timeout
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

EMER = [sys.executable, "-m", "emer_builder.cli.main"]


def numeric_keys(cls: type = BuildConfig, where: str = "") -> list[str]:
    """Dotted paths of every int or float setting (nullable ints too), read from the config classes."""
    keys = []
    for f in dataclasses.fields(cls):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        path = f"{where}{f.name}"
        if dataclasses.is_dataclass(default):
            keys += numeric_keys(type(default), path + ".")
        elif (isinstance(default, (int, float)) and not isinstance(default, bool)) or path in NULLABLE_INTS:
            keys.append(path)
    return keys


NUMERIC = numeric_keys()
EDGES = [math.nan, math.inf, -math.inf, -1, -1e-9, 0, 0.0, 1e-9, 1, 2.5, 1e12, 1e308, 2**63, 10**30]


def nested(path: str, value: Any) -> dict[str, Any]:
    data: dict[str, Any] = {}
    part = data
    *sections, key = path.split(".")
    for name in sections:
        part = part.setdefault(name, {})
    part[key] = value
    return data


def checked(data: dict[str, Any]) -> BuildConfig:
    """What the driver checks before any worker starts."""
    config = config_from_dict(data)
    check_options(config.segment)
    s = config.split
    SplitAssigner(s.ratios, s.group_by, s.group_pattern, s.split_table, s.seed)
    return config


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tiny") / "tiny.mp4"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc=size=96x64:rate=10:duration=1.5", "-f", "lavfi", "-i", "sine=frequency=300:duration=1.5",
         "-c:v", "libx264", "-c:a", "aac", "-shortest", str(path)],
        check=True,
    )
    return path


def test_every_numeric_key_is_covered():
    assert {"decode.max_duration_s", "decode.sample_fps", "segment.merge_gap_s", "shards.parquet_row_group_size", "explanation.llm.timeout_s"} <= set(NUMERIC)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(NUMERIC), value=st.one_of(st.sampled_from(EDGES), st.floats(allow_nan=True, allow_infinity=True), st.integers(-(10**20), 10**20)))
def test_numeric_values_give_one_clear_line_or_a_working_config(key: str, value: Any, tiny_clip: Path):
    try:
        config = checked(nested(key, value))
    except UserError as e:
        message = str(e)
        assert "\n" not in message and key.rsplit(".", 1)[-1] in message, message
        return
    d = config.decode
    assert all(math.isfinite(v) for v in (d.sample_fps, d.min_duration_s, d.max_duration_s, d.min_decoded_fraction))
    assert math.isfinite(decode_timeout(d.max_duration_s + LIMIT_MARGIN_S))
    sh = config.shards
    assert plan_shards([("a", 10), ("b", 10**6)], sh.max_records, sh.max_bytes)
    if key.startswith("decode."):  # the values reach ffmpeg: a real decode, a record or one ClipError line
        stage = DecodeStage.from_config(d)  # as the build makes it
        stage.setup()
        clip = Clip(key="tiny", path=str(tiny_clip), source_path="tiny.mp4")
        try:
            stage.process(clip)
        except ClipError as e:
            assert "\n" not in str(e)
        else:
            assert clip.fields["media"]["decoded_duration_s"] > 1 and clip.frames


@settings(max_examples=120, deadline=None)
@given(ratios=st.dictionaries(st.sampled_from(["train", "validation", "test"]), st.one_of(st.sampled_from(EDGES), st.floats(allow_nan=True, allow_infinity=True)), min_size=1, max_size=3))
def test_split_ratios_never_send_records_to_a_split_of_ratio_zero(ratios: dict[str, float]):
    try:
        config = checked({"split": {"ratios": ratios}})
    except UserError as e:
        assert "\n" not in str(e) and "split.ratios" in str(e)
        return
    s = config.split
    assign = SplitAssigner(s.ratios, s.group_by, s.group_pattern, s.split_table, s.seed)
    counts = Counter(assign({"key": f"clip_{i:04d}"}) for i in range(400))
    assert set(counts) <= {name for name, share in s.ratios.items() if share > 0}, (s.ratios, counts)
    for name, share in s.ratios.items():
        assert abs(counts[name] / 400 - share) < 0.12, (s.ratios, counts)


@pytest.mark.parametrize(
    "yaml_text, message",
    [
        ("decode:\n  max_duration_s: .inf\n", "config key decode.max_duration_s must be a finite number, got inf"),
        ("split:\n  ratios: {train: 1.0, validation: .nan, test: 0}\n", "config key split.ratios must map split names to numbers of at least 0"),
        ("decode:\n  sample_fps: .nan\n", "config key decode.sample_fps must be a finite number, got nan"),
        ("decode:\n  max_duration_s: 1.0e+300\n", "decode.max_duration_s must be above 0 and at most 604800"),
    ],
)
def test_the_red_team_values_are_refused_by_the_cli(tmp_path: Path, yaml_text: str, message: str):
    (tmp_path / "videos").mkdir()
    (tmp_path / "build.yaml").write_text(yaml_text)
    proc = subprocess.run([*EMER, "build", str(tmp_path / "videos"), "--out", str(tmp_path / "out"), "--config", str(tmp_path / "build.yaml")], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.strip() == f"emer: error: {proc.stderr.strip().removeprefix('emer: error: ')}"
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_config_file_that_is_not_utf8_is_one_line(tmp_path: Path):
    (tmp_path / "videos").mkdir()
    (tmp_path / "b.yaml").write_bytes(b"\xff\xfe\x00bad")
    proc = subprocess.run([*EMER, "build", str(tmp_path / "videos"), "--out", str(tmp_path / "out"), "--config", str(tmp_path / "b.yaml")], capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [f"emer: error: config file {tmp_path / 'b.yaml'} is not UTF-8 text (byte 0 cannot be read); save it as UTF-8"]
