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
    from pipelines.build import build

    out = tmp_path_factory.mktemp("demo") / "out"
    summary = build(demo_videos, out, workers=2, show_progress=False)
    return out, summary
