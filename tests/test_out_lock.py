"""OUT is protected: one build at a time, and a commit that a kill at any instant leaves as the old
build or the new one; Ctrl-C, a full disk and a read-only OUT are one clear line each."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from emer_builder.core.errors import UserError
from emer_builder.pipelines import local_out as build_module
from emer_builder.pipelines.local_out import JOURNAL, LOCK_FILE, STAGING_PREFIX, commit, out_lock, recover, verify_build
from emer_builder.pipelines.summary import BuildSummary
from emer_builder.release.manifest import BUILD_OUTPUTS, MANIFEST

from tests.small_disk import small_disk

EMER = str(Path(sys.executable).parent / "emer")


def _fake_build(root: Path, tag: str) -> None:
    """A build folder as the writers leave it: data, media, failures, card, manifest listing the files."""
    (root / "data").mkdir(parents=True)
    (root / "media").mkdir()
    (root / "data" / "train-00000-of-00001.parquet").write_text(f"parquet {tag}")
    (root / "media" / "train-00000-of-00001.tar").write_text(f"tar {tag} " * 10)
    (root / "failures.parquet").write_text(f"failures {tag}")
    (root / "README.md").write_text(f"card {tag}")
    files = {p.relative_to(root).as_posix(): {"bytes": p.stat().st_size} for p in sorted(root.rglob("*")) if p.is_file() and p.name != "README.md"}
    (root / MANIFEST).write_text(json.dumps({"tag": tag, "files": files}))


def _state(out: Path) -> str | None:
    """Which complete build OUT holds ('old'/'new'), or None when it holds no valid build."""
    if not (out / MANIFEST).is_file():
        return None
    manifest = json.loads((out / MANIFEST).read_text())
    assert verify_build(out, manifest) is None, verify_build(out, manifest)
    for rel in manifest["files"]:
        assert manifest["tag"] in (out / rel).read_text(), rel
    return manifest["tag"]


def test_a_second_build_fails_at_once_naming_the_holder(tmp_path: Path):
    out = tmp_path / "out"
    with out_lock(out):
        started = time.monotonic()
        with pytest.raises(UserError, match=rf"in use by another build \(pid {os.getpid()} on .* since "):
            with out_lock(out):
                pass
        assert time.monotonic() - started < 2
    with out_lock(out):  # released
        pass


def test_the_lock_of_a_killed_build_is_released(tmp_path: Path):
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", f"from emer_builder.pipelines.local_out import out_lock\nfrom pathlib import Path\nimport time\nwith out_lock(Path({str(out)!r})):\n    print('locked', flush=True); time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(UserError, match=f"pid {holder.pid}"):
        with out_lock(out):
            pass
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with out_lock(out):
        pass


def test_a_kill_at_any_instant_of_the_commit_leaves_the_old_or_the_new_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Simulate a kill -9 after each file-system step of the commit (the steps are renames, unlinks
    and removals), then run recovery as the next build does: always the old or the new build."""
    real = {"rename": Path.rename, "unlink": Path.unlink, "rmtree": shutil.rmtree, "replace": os.replace}
    instants = 0
    while True:
        case = tmp_path / f"case{instants}"
        out = case / "out"
        _fake_build(out, "old")
        staging = out / f"{STAGING_PREFIX}123"
        _fake_build(staging, "new")
        steps = {"n": 0}

        class Killed(BaseException):
            pass

        def step(name, steps=steps, instants=instants):
            def run(*args, **kwargs):
                if steps["n"] == instants:
                    raise Killed
                steps["n"] += 1
                return real[name](*args, **kwargs)

            return run

        monkeypatch.setattr(Path, "rename", step("rename"))
        monkeypatch.setattr(Path, "unlink", step("unlink"))
        monkeypatch.setattr(build_module.shutil, "rmtree", step("rmtree"))
        monkeypatch.setattr(build_module.os, "replace", step("replace"))
        killed = False
        try:
            commit(staging, out, overwrite=False)
        except Killed:
            killed = True
        monkeypatch.undo()
        seen_now = _state(out)
        assert seen_now in (None, "old", "new")
        recover(out)
        assert _state(out) in ("old", "new") if seen_now == "old" else _state(out) == "new"
        if not killed:
            assert _state(out) == "new" and not staging.exists() and not (out / JOURNAL).exists()
            break
        instants += 1
    assert instants >= 10  # the commit has many steps; each one was a kill point


def test_recover_says_whether_it_finished_a_commit(tmp_path: Path):
    out = tmp_path / "out"
    _fake_build(out, "old")
    assert recover(out) is False
    staging = out / f"{STAGING_PREFIX}7"
    _fake_build(staging, "new")
    (out / JOURNAL).write_text(json.dumps({"staging": staging.name, "outputs": ["data", "media", "failures.parquet", "README.md", MANIFEST], "overwrite": False}))
    assert recover(out) is True and _state(out) == "new"


def test_the_summary_names_a_finished_interrupted_commit():
    summary = BuildSummary("/o", 3, {"train": 3}, {}, [], 0, {}, 0.0, 2.0, up_to_date=True, finished_commit=True)
    first = summary.text().splitlines()[0]
    assert first == "finished the commit left by an interrupted build: 3 records from 3 inputs in /o (its inputs have not changed since)"
    summary.finished_commit = False
    assert summary.text().splitlines()[0] == "up to date: 3 records from 3 inputs in /o (nothing changed)"
    summary.up_to_date, summary.finished_commit = False, True
    assert summary.text().splitlines()[0] == "built 3 records from 3 inputs in 2.0 s -> /o (after finishing the commit left by an interrupted build)"


@pytest.mark.slow
def test_a_build_that_finishes_an_interrupted_commit_says_so(demo_videos: Path, tmp_path: Path):
    """A kill -9 right after the commit removed the old manifest leaves a journal naming a complete staging
    folder; the next build finishes that commit and says so, not "(nothing changed)"."""
    videos = _tiny_corpus(demo_videos, tmp_path, ("no_face_dog.mp4",))
    out = tmp_path / "out"
    args = [EMER, "build", str(videos), "--out", str(out), "--config", str(_config(tmp_path)), "--workers", "1", "--quiet"]
    first = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    staging = out / f"{STAGING_PREFIX}4242"
    staging.mkdir()
    outputs = [n for n in BUILD_OUTPUTS if (out / n).exists()]
    for name in outputs:
        (shutil.copytree if (out / name).is_dir() else shutil.copy2)(out / name, staging / name)
    (out / JOURNAL).write_text(json.dumps({"staging": staging.name, "outputs": outputs, "overwrite": False}))
    (out / MANIFEST).unlink()

    second = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-2000:]
    assert second.stdout.splitlines()[0] == f"finished the commit left by an interrupted build: 1 records from 1 inputs in {out} (its inputs have not changed since)"
    assert "nothing changed" not in second.stdout
    assert (out / MANIFEST).is_file() and not (out / JOURNAL).exists() and not staging.exists()
    assert verify_build(out, json.loads((out / MANIFEST).read_text())) is None
    third = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert third.stdout.splitlines()[0] == f"up to date: 1 records from 1 inputs in {out} (nothing changed)"


def test_a_damaged_build_is_not_taken_for_a_valid_one(tmp_path: Path, demo_videos: Path):
    out = tmp_path / "out"
    _fake_build(out, "old")
    (out / "media" / "train-00000-of-00001.tar").unlink()
    assert "missing" in verify_build(out, json.loads((out / MANIFEST).read_text()))


def _tiny_corpus(demo_videos: Path, root: Path, names: tuple[str, ...] = ("sample_00000870.mp4", "jesper_intro.avi")) -> Path:
    videos = root / "videos"
    videos.mkdir(parents=True)
    for name in names:
        shutil.copyfile(demo_videos / name, videos / name)
    return videos


def _config(root: Path) -> Path:
    path = root / "build.yaml"
    path.write_text("transcript: {model: tiny.en}\n")
    return path


@pytest.mark.slow
def test_concurrent_builds_into_one_out(demo_videos: Path, tmp_path: Path):
    videos = _tiny_corpus(demo_videos, tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    shutil.copyfile(demo_videos / "no_face_dog.mp4", other / "no_face_dog.mp4")
    out = tmp_path / "out"
    first = subprocess.Popen([EMER, "build", str(videos), "--out", str(out), "--config", str(_config(tmp_path)), "--workers", "1", "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (out / LOCK_FILE).is_file() or not (out / LOCK_FILE).read_text():
        assert time.monotonic() < deadline
        time.sleep(0.1)
    second = subprocess.run([EMER, "build", str(other), "--out", str(out), "--quiet"], capture_output=True, text=True, timeout=60)
    assert second.returncode == 2
    assert second.stderr.count("\n") == 1 and f"is in use by another build (pid {first.pid}" in second.stderr
    assert first.wait(timeout=300) == 0, first.stderr
    assert json.loads((out / MANIFEST).read_text())["counts"]["records"] == 2


@pytest.mark.slow
def test_ctrl_c_is_one_line_exit_130_and_no_staging(demo_videos: Path, tmp_path: Path):
    videos = _tiny_corpus(demo_videos, tmp_path, tuple(sorted(p.name for p in demo_videos.iterdir())))  # seconds of work left at the signal
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [EMER, "build", str(videos), "--out", str(out), "--config", str(_config(tmp_path)), "--workers", "2", "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # a terminal's Ctrl-C goes to the whole foreground process group
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # a runner started in the background ignores SIGINT, and its children would too
    )
    deadline = time.monotonic() + 120
    while not list(out.glob(f"{STAGING_PREFIX}*/.media/*/*.tar")):  # a first clip ran its stages
        assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read() if proc.poll() is not None else "no worker started"
        time.sleep(0.2)
    time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert stderr.strip().splitlines() == ["emer: interrupted; the output folder was left as it was"], stderr[-3000:]
    assert not list(out.glob(f"{STAGING_PREFIX}*")) and not (out / MANIFEST).exists()


def test_read_only_out_is_one_line(demo_videos: Path, tmp_path: Path):
    if os.geteuid() == 0:
        out = Path("/proc/emer-out")  # root may write anywhere else; /proc refuses everyone
    else:
        out = tmp_path / "ro"
        out.mkdir()
        out.chmod(0o500)
    videos = _tiny_corpus(demo_videos, tmp_path, ("no_face_dog.mp4",))
    run = subprocess.run([EMER, "build", str(videos), "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and run.stderr.startswith("emer: error: cannot write to") and run.stderr.count("\n") == 1


@pytest.mark.slow
def test_a_full_disk_is_one_line_and_commits_nothing(demo_videos: Path, tmp_path: Path):
    with small_disk(tmp_path / "small", "400k") as mount:
        videos = _tiny_corpus(demo_videos, tmp_path)
        out = mount / "out"
        run = subprocess.run([EMER, "build", str(videos), "--out", str(out), "--config", str(_config(tmp_path)), "--workers", "1", "--quiet"], capture_output=True, text=True, timeout=300)
        assert run.returncode == 2, run.stderr[-2000:]
        assert run.stderr.startswith(f"emer: error: no space left on the device of {out}") and run.stderr.count("\n") == 1, run.stderr[-2000:]
        assert not (out / MANIFEST).exists() and not list(out.glob(f"{STAGING_PREFIX}*"))
