"""The site: the reference pages are generated from the code and cannot drift from it; MkDocs builds the
site offline in strict mode, and a broken link fails that build."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_generated_reference_pages_match_the_code():
    proc = subprocess.run([sys.executable, "docs/generate.py", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    config = (ROOT / "docs/reference/config.md").read_text()
    assert "| `decode.max_duration_s` | float | `14400.0` | above 0 and at most 604800 (a week) |" in config
    assert "## `explanation.llm`" in config and "`segment.merge_gap_s`" in config
    cli = (ROOT / "docs/reference/cli.md").read_text()
    assert "## `emer build`" in cli and "--segment-table" in cli and "## `emer evaluate`" in cli


def test_a_stale_page_is_named(tmp_path: Path):
    copy = tmp_path / "docs"
    shutil.copytree(ROOT / "docs", copy)
    shutil.copy(ROOT / "README.md", tmp_path)
    (tmp_path / "bench").mkdir()
    shutil.copy(ROOT / "bench/RESULTS.md", tmp_path / "bench")
    (copy / "reference/cli.md").write_text("# old\n")
    proc = subprocess.run([sys.executable, str(copy / "generate.py"), "--check"], capture_output=True, text=True)
    assert proc.returncode == 1 and "reference/cli.md" in proc.stderr and "make docs" in proc.stderr


def _mkdocs(site_root: Path) -> subprocess.CompletedProcess:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site_root / ".docs-src"), str(ROOT)], check=True, capture_output=True)
    return subprocess.run(
        [str(Path(sys.executable).parent / "mkdocs"), "build", "--strict", "-f", str(site_root / "mkdocs.yml"), "-d", str(site_root / "site")],
        cwd=site_root, capture_output=True, text=True, env={**__import__("os").environ, "NO_MKDOCS_2_WARNING": "1"},
    )


@pytest.mark.slow
def test_site_builds_strictly_and_a_broken_link_fails(tmp_path: Path):
    site_root = tmp_path / "repo"
    site_root.mkdir()
    shutil.copy(ROOT / "mkdocs.yml", site_root)
    shutil.copytree(ROOT / "docs", site_root / "docs")
    ok = _mkdocs(site_root)
    assert ok.returncode == 0, ok.stderr[-3000:]
    api = (site_root / "site/reference/api/index.html").read_text()
    assert "load_split" in api and "Build a dataset from every video" in api  # docstrings read from the code
    page = site_root / "docs/reference/fields.md"
    page.write_text(page.read_text() + "\nSee [the guide](../guide/nowhere.md).\n")
    broken = _mkdocs(site_root)
    assert broken.returncode != 0 and "nowhere.md" in broken.stderr
