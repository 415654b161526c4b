"""The build on a real dask.distributed cluster (a scheduler and two worker processes on 127.0.0.1,
the `dask_cluster` fixture in conftest.py) gives the same bytes as the local runner, and the driver's completeness check catches lost inputs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from emer_builder.core.config import config_from_dict
from emer_builder.core.errors import UserError
from emer_builder.pipelines.build import build
from emer_builder.pipelines.envelope import Envelope
from emer_builder.pipelines.graph import write_failures
from emer_builder.pipelines.run import check_complete
from emer_builder.transforms.clip import Clip


@pytest.mark.slow
def test_dask_runner_gives_the_local_runners_bytes(demo_videos: Path, tmp_path: Path, dask_cluster: str):
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("jesper_intro.avi", "sample_00000880.mkv", "no_face_dog.mp4"):
        shutil.copyfile(demo_videos / name, videos / name)
    (videos / "broken.mp4").write_bytes(b"not a video")  # a failure row must survive the cluster too
    config = config_from_dict({"transcript": {"model": "tiny.en"}, "cache": {"enabled": False}})
    local = build(videos, tmp_path / "local", config, workers=1, show_progress=False)
    dask = build(videos, tmp_path / "dask", config, beam_args=["--runner=DaskRunner", f"--dask_client_address={dask_cluster}", "--dask_partition_size=1"], show_progress=False)
    assert local.records == dask.records == 3 and local.failures == dask.failures == 1
    files = sorted(p.relative_to(tmp_path / "local").as_posix() for p in (tmp_path / "local").rglob("*") if p.is_file() and p.name not in ("build.json", ".emer-lock", "report.html"))
    assert "failures.parquet" in files and any(f.startswith("media/") for f in files)
    for rel in files:
        assert (tmp_path / "local" / rel).read_bytes() == (tmp_path / "dask" / rel).read_bytes(), rel


def test_completeness_check_names_lost_and_repeated_inputs(tmp_path: Path):
    (tmp_path / "data").mkdir()
    table = pa.table({"key": ["a", "b", "b"], "source_path": ["a.mp4", "b.mp4", "b.mp4"]})
    pq.write_table(table, tmp_path / "data" / "train-00000-of-00001.parquet")
    write_failures([], tmp_path / "failures.parquet")
    clips = [Envelope(Clip(k, f"/v/{k}.mp4", f"{k}.mp4")) for k in ("a", "b", "c")]
    with pytest.raises(UserError, match=r"missing 1 \(c.mp4 \[c\]\); repeated 1 \(b.mp4 \[b\]\)"):
        check_complete(tmp_path, clips)
    pq.write_table(table.slice(0, 2), tmp_path / "data" / "train-00000-of-00001.parquet")
    check_complete(tmp_path, clips[:2])  # exactly once each: no error
