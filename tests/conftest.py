"""Shared fixtures: the real demo corpus, real models loaded once, one real build of the demo corpus."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

from bench.demo_corpus import demo_corpus

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(scope="session")
def demo_videos() -> Path:
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
def release_builds(demo_videos: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two small real builds for release tests: v1 from 2 clips, v2 from the same 2 plus a third."""
    import shutil

    from emer_builder.core.config import config_from_dict
    from emer_builder.pipelines.build import build

    config = config_from_dict({"transcript": {"model": "tiny.en"}})
    outs = []
    root = tmp_path_factory.mktemp("releases")
    for name, clips in (("v1", ("sample_00000870.mp4", "jesper_intro.avi")), ("v2", ("sample_00000870.mp4", "jesper_intro.avi", "no_face_dog.mp4"))):
        videos = root / f"videos-{name}"
        videos.mkdir()
        for clip in clips:
            shutil.copyfile(demo_videos / clip, videos / clip)
        build(videos, root / name, config, workers=1, show_progress=False)
        outs.append(root / name)
    return outs[0], outs[1]
