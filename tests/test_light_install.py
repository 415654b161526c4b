"""A user's light install (`pip install emer-builder`, no build extra) in a venv this test makes:
`emer download`, `load_split` and `emer evaluate` work without Beam or the media stack, and
`emer build` is one line saying what to install. Also: the installed import names are namespaced."""

from __future__ import annotations

import json
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from tests.release_fixtures import V1, write_release_build
from tests.shared_data import SHARED_DATA

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def light_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = tmp_path_factory.mktemp("light") / "venv"
    venv.EnvBuilder(with_pip=True).create(where)
    py = where / "bin" / "python"
    run = subprocess.run([str(py), "-m", "pip", "install", "-q", str(ROOT)], capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    return where


@pytest.mark.slow
def test_light_install_downloads_loads_and_evaluates(light_venv: Path, demo_videos: Path, tmp_path: Path):
    bin_ = light_venv / "bin"
    site = subprocess.run([str(bin_ / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], capture_output=True, text=True, check=True).stdout.strip()
    top = sorted(p.name for p in Path(site).iterdir() if p.name in ("pipelines", "transforms", "schemas", "tests", "emer_builder"))
    assert top == ["emer_builder"]  # nothing generic at the top level of site-packages
    missing = subprocess.run([str(bin_ / "python"), "-c", "import importlib.util as u; print([m for m in ('apache_beam', 'cv2', 'ffmpeg', 'soundfile', 'faster_whisper') if u.find_spec(m)])"], capture_output=True, text=True, check=True)
    assert missing.stdout.strip() == "[]"

    build = write_release_build(tmp_path / "build", V1, demo_videos.parent / "root")
    target = tmp_path / "releases"
    published = subprocess.run([sys.executable, "-m", "emer_builder.cli.main", "publish", str(build), "--repo", str(target), "--version", "1.0.0"], capture_output=True, text=True, timeout=300)
    assert published.returncode == 0, published.stderr

    got = subprocess.run([str(bin_ / "emer"), "download", str(target), "--to", str(tmp_path / "dl")], capture_output=True, text=True, timeout=300)
    assert got.returncode == 0, got.stderr
    code = (
        "import sys, json\n"
        "from emer_builder.release.download import load_split\n"
        f"ds = load_split({str(target)!r}, split='train', cache_dir={str(tmp_path / 'cache')!r})\n"
        "heavy = sorted(m for m in ('apache_beam', 'cv2', 'ffmpeg', 'soundfile') if m in sys.modules)\n"
        "print(json.dumps({'keys': sorted(ds['key']), 'heavy': heavy}))\n"
    )
    loaded = subprocess.run([str(bin_ / "python"), "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    result = json.loads(loaded.stdout.strip().splitlines()[-1])
    manifest = json.loads((build / "manifest.json").read_text())
    assert result == {"keys": manifest["keys"]["train"], "heavy": []}

    gt, pred = tmp_path / "gt.csv", tmp_path / "pred.csv"
    wheel = SHARED_DATA / "emotion-wheel"
    if (wheel / "format.csv").is_file():  # the discrete task normalises labels with the emotion-wheel tables
        task, extra = "discrete", ["--wheel-dir", str(wheel)]
        gt.write_text("name,discrete\nv1,happy\nv2,sad\n")
        pred.write_text("name,discrete\nv1,happy\nv2,angry\n")
    else:  # a public clone has no ../shared (and no network here to fetch the tables): the sentiment task needs none
        task, extra = "sentiment", []
        gt.write_text("name,sentiment\nv1,positive\nv2,negative\nv3,negative\n")
        pred.write_text("name,sentiment\nv1,positive\nv2,positive\nv3,negative\n")
    args = ["evaluate", "--gt", str(gt), "--pred", str(pred), *extra, "--json"]
    scored = subprocess.run([str(bin_ / "emer"), *args], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert scored.returncode == 0, scored.stderr
    full = subprocess.run([sys.executable, "-m", "emer_builder.cli.main", *args], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert json.loads(scored.stdout) == json.loads(full.stdout) and json.loads(scored.stdout)["task"] == task  # same numbers as the full install

    refused = subprocess.run([str(bin_ / "emer"), "build", str(demo_videos), "--out", str(tmp_path / "x")], capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1
    assert "needs the build extra" in refused.stderr and "pip install 'emer-builder[build]'" in refused.stderr
