"""Beam options pass through: the same build on the portable job API, and a plug-in field group."""

import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import datasets
import pyarrow.parquet as pq
import pytest
from emer_builder.core.config import config_from_dict
from emer_builder.core.errors import UserError
from emer_builder.pipelines.build import build
from emer_builder.release.publish import publish


@pytest.fixture(scope="module")
def two_clips(demo_videos: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    videos = tmp_path_factory.mktemp("two") / "videos"
    videos.mkdir()
    for name in ("jesper_intro.avi", "sample_00000880.mkv"):
        shutil.copyfile(demo_videos / name, videos / name)
    return videos


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def job_service():
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "apache_beam.runners.portability.local_job_service_main", "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.3)
    yield f"localhost:{port}"
    proc.terminate()
    proc.wait(timeout=30)


def test_portable_runner_gives_the_same_shards(two_clips: Path, tmp_path: Path, job_service: str):
    config = config_from_dict({"transcript": {"model": "tiny.en"}, "split": {"ratios": {"train": 1.0}}})
    local = build(two_clips, tmp_path / "local", config, workers=2, show_progress=False)
    portable = build(two_clips, tmp_path / "portable", config, beam_args=["--runner=PortableRunner", f"--job_endpoint={job_service}", "--environment_type=LOOPBACK"], show_progress=False)
    assert local.records_per_split == portable.records_per_split == {"train": 2}
    for rel in ("data/train-00000-of-00001.parquet", "media/train-00000-of-00001.tar", "manifest.json"):
        assert (tmp_path / "local" / rel).read_bytes() == (tmp_path / "portable" / rel).read_bytes(), rel


@pytest.mark.slow
def test_plugin_stage_adds_a_field_group_everywhere(two_clips: Path, tmp_path: Path):
    config = config_from_dict(
        {"transcript": {"model": "tiny.en"}, "extra_stages": ["tests.plugin_brightness:BrightnessStage"], "stage_config": {"brightness": {"dark_below": 256}}, "split": {"ratios": {"train": 1.0}}}
    )
    out = tmp_path / "out"
    summary = build(two_clips, out, config, workers=1, show_progress=False)
    assert summary.records == 2 and "brightness" in summary.stage_seconds
    rows = pq.read_table(out / "data" / "train-00000-of-00001.parquet").to_pylist()
    assert [r["key"] for r in rows] == ["jesper_intro", "sample_00000880"]
    for row in rows:
        assert 10 < row["brightness"]["mean"] < 245 and row["brightness"]["frames"] == row["media"]["frames_sampled"]
        assert row["brightness"]["dark_frames"] == row["brightness"]["frames"]  # every frame is below 256
    assert "| `brightness.mean` |" in (out / "README.md").read_text()
    loaded = datasets.load_dataset(str(out))["train"]
    assert loaded.features["brightness"]["mean"].dtype == "float32"
    # the README's promise: publishing the plug-in's build after one without it needs a minor bump
    plain = build(two_clips, tmp_path / "plain", config_from_dict({"transcript": {"model": "tiny.en"}, "split": {"ratios": {"train": 1.0}}}), workers=1, show_progress=False)
    assert plain.records == 2 and "brightness" not in pq.read_table(next((tmp_path / "plain" / "data").glob("*.parquet"))).column_names
    target = tmp_path / "releases"
    publish(tmp_path / "plain", str(target), "1.0.0")
    with pytest.raises(UserError, match=r"a minor bump is required, e\.g\. v1\.1\.0, not v1\.0\.1"):
        publish(out, str(target), "1.0.1")
    publish(out, str(target), "1.1.0")
    entry = json.loads((target / "releases.json").read_text())[0]  # newest first
    assert entry["version"] == "1.1.0" and entry["required_bump"] == "minor"
    assert entry["schema_changes"]["added"] == ["brightness", "brightness.dark_frames", "brightness.frames", "brightness.mean"]
