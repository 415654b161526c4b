"""The per-clip stage cache: exact round trips, addresses that follow what changed, and builds that
resume after kill -9, grow incrementally and rerun only the stages whose config changed."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from emer_builder.core.config import config_from_dict
from emer_builder.pipelines.build import build
from emer_builder.pipelines.stages import build_stages
from emer_builder.transforms.clip_cache import ClipCache, chain_digests, decode_entry, encode_entry, stage_identity

EMER = str(Path(sys.executable).parent / "emer")


def test_entries_round_trip_exactly():
    group = {"f0": np.float32(0.1), "x": 1 / 3, "nan": float("nan"), "n": np.int64(7), "items": [{"t": 0.5, "s": "é"}], "none": None}
    media = {"flac": b"\x00\x01" * 100, "face_000.jpg": b"jpeg"}
    back, files = decode_entry(encode_entry(group, media))
    assert back["x"] == 1 / 3 and back["f0"] == float(np.float32(0.1)) and np.float32(back["f0"]) == np.float32(0.1)
    assert math.isnan(back["nan"]) and back["n"] == 7 and back["items"] == [{"t": 0.5, "s": "é"}] and back["none"] is None
    assert files == media and list(back) == list(group)  # key order kept (prompts built from a restored group read the same)
    assert encode_entry(group, media) == encode_entry(group, dict(reversed(list(media.items()))))  # order-free bytes


def test_damaged_and_hostile_entries_are_misses(tmp_path: Path):
    import io
    import tarfile

    cache = ClipCache(str(tmp_path / "c"))
    cache.put("ab" * 32, {"v": 1}, {})
    assert cache.get("ab" * 32) == ({"v": 1}, {})
    path = tmp_path / "c" / "entries" / "ab" / f"{'ab' * 32}.tar"
    path.write_bytes(b"garbage")
    assert cache.get("ab" * 32) is None
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("../../etc/evil")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    path.write_bytes(buf.getvalue())
    assert cache.get("ab" * 32) is None and not (tmp_path / "etc").exists()
    assert cache.get("cd" * 32) is None


def test_addresses_follow_what_changed():
    base = build_stages(config_from_dict({"transcript": {"model": "tiny.en"}}))
    threads = build_stages(config_from_dict({"transcript": {"model": "tiny.en", "cpu_threads": 1}}))
    crops = build_stages(config_from_dict({"transcript": {"model": "tiny.en"}, "faces": {"max_crops": 4}}))
    model = build_stages(config_from_dict({"transcript": {"model": "base"}}))
    d = chain_digests(base)
    assert chain_digests(threads) == d  # how fast is not what
    assert chain_digests(crops)[:2] == d[:2] and chain_digests(crops)[2] != d[2] and chain_digests(crops)[3] != d[3]
    assert chain_digests(model)[0] == d[0] and chain_digests(model)[1] != d[1]
    assert stage_identity(base[2])["settings"]["max_crops"] == 16


def _corpus(demo_videos: Path, root: Path, names: list[str]) -> Path:
    videos = root / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copyfile(demo_videos / name, videos / name)
    return videos


def _files(out: Path) -> dict[str, bytes]:
    """Everything a build writes but what records its cost (build.json, the report's timing section)."""
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file() and p.name not in ("build.json", ".emer-lock", "report.html")}


CLIPS = ["jesper_intro.avi", "sample_00000870.mp4", "sample_00000890.webm", "no_face_dog.mp4"]


@pytest.mark.slow
def test_incremental_builds_and_config_changes_rerun_only_what_changed(demo_videos: Path, tmp_path: Path):
    cache = str(tmp_path / "cache")
    config = config_from_dict({"transcript": {"model": "tiny.en"}, "cache": {"dir": cache}})
    videos = _corpus(demo_videos, tmp_path, CLIPS[:3])
    first = build(videos, tmp_path / "a", config, workers=1, show_progress=False)
    assert first.stage_runs == {"decode": 3, "transcript": 3, "faces": 3, "acoustics": 3, "video": 3}
    again = build(videos, tmp_path / "b", config, workers=1, show_progress=False)  # a new OUT: everything from the cache
    assert again.stage_runs == {"decode": 0, "transcript": 0, "faces": 0, "acoustics": 0, "video": 0} and again.cache_restored == {"video": 3}
    assert again.model_loads.get("transcript") is None  # no model loaded at all
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    _corpus(demo_videos, tmp_path, CLIPS[3:])  # one clip more
    grown = build(videos, tmp_path / "a", config, workers=1, show_progress=False)
    assert grown.stage_runs == {"decode": 1, "transcript": 1, "faces": 1, "acoustics": 1, "video": 1} and grown.records == 4
    noop = (  # a fresh interpreter: a no-op rebuild answers without importing Beam or `datasets`
        "import sys; from emer_builder.core.config import config_from_dict; from emer_builder.pipelines.build import build\n"
        f"s = build({str(videos)!r}, {str(tmp_path / 'a')!r}, config_from_dict({{'transcript': {{'model': 'tiny.en'}}, 'cache': {{'dir': {cache!r}}}}}), workers=1, show_progress=False)\n"
        "print(s.up_to_date, s.records, sorted(m for m in ('apache_beam', 'datasets', 'faster_whisper') if m in sys.modules))"
    )
    assert subprocess.run([sys.executable, "-c", noop], capture_output=True, text=True, check=True).stdout.split("\n")[0] == "True 4 []"
    fewer = config_from_dict({"transcript": {"model": "tiny.en"}, "faces": {"max_crops": 2}, "cache": {"dir": cache}})
    changed = build(videos, tmp_path / "c", fewer, workers=1, show_progress=False)
    assert changed.stage_runs == {"decode": 4, "transcript": 0, "faces": 4, "acoustics": 4, "video": 4}  # decode for the samples only
    plain = build(videos, tmp_path / "d", config_from_dict({"transcript": {"model": "tiny.en"}, "faces": {"max_crops": 2}, "cache": {"enabled": False}}), workers=1, show_progress=False)
    assert plain.stage_runs == {"decode": 4, "transcript": 4, "faces": 4, "acoustics": 4, "video": 4}
    assert _files(tmp_path / "c") == _files(tmp_path / "d")  # the cache never changes the output
    listed = subprocess.run([EMER, "cache", "--dir", cache], capture_output=True, text=True, check=True).stdout
    assert "32 entries" in listed and "4 builds recorded" in listed and "12 entries (" in listed
    pruned = subprocess.run([EMER, "cache", "--dir", cache, "--prune"], capture_output=True, text=True, check=True).stdout
    assert pruned.startswith("removed 12 entries")  # the max_crops=16 faces, acoustics and video entries of the 4 clips
    assert "20 entries" in pruned


@pytest.mark.slow
def test_kill_9_mid_build_resumes_with_only_unfinished_clips(demo_videos: Path, tmp_path: Path):
    names = ["jesper_intro.avi", "sample_00000870.mp4", "sample_00000880.mkv", "sample_00000890.webm", "sample_00000920.mov", "no_face_dog.mp4"]
    videos = _corpus(demo_videos, tmp_path, names)
    cache = tmp_path / "cache"
    cfg = tmp_path / "build.yaml"
    cfg.write_text(f"transcript: {{model: tiny.en}}\ncache: {{dir: {cache}}}\n")
    out = tmp_path / "out"
    proc = subprocess.Popen([EMER, "build", str(videos), "--out", str(out), "--config", str(cfg), "--workers", "1", "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 240
    while len(list((cache / "entries").rglob("*.tar"))) < 10:  # two clips fully done (5 stages)
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "manifest.json").exists()
    done_before = len(list((cache / "entries").rglob("*.tar")))
    resumed = build(videos, out, config_from_dict({"transcript": {"model": "tiny.en"}, "cache": {"dir": str(cache)}}), workers=1, show_progress=False)
    assert resumed.records == 6 and 0 < resumed.stage_runs["acoustics"] <= 6 - done_before // 5
    reference = build(videos, tmp_path / "ref", config_from_dict({"transcript": {"model": "tiny.en"}, "cache": {"enabled": False}}), workers=1, show_progress=False)
    assert reference.records == 6
    assert _files(out) == _files(tmp_path / "ref")
    assert json.loads((out / "build.json").read_text())["inputs_fingerprint"]
