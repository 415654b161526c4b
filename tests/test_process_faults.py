"""A fault of the process is not a fault of the input: a decoder killed by a signal or a MemoryError
is retried, and when it persists the build fails (exit 1, one line, nothing committed) instead of
turning a good clip into a permanent failure row."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from emer_builder.core.errors import BuildFault, ClipError, exit_fault, fault_in
from emer_builder.core.failures import retry_faults
from emer_builder.pipelines.envelope import Envelope
from emer_builder.pipelines.graph import guarded
from emer_builder.transforms.clip import Clip
from emer_builder.transforms.stages.decode import DecodeStage

EMER = [sys.executable, "-m", "emer_builder.cli.main"]


def killing_ffmpeg(bin_dir: Path, kills: int) -> Path:
    """A folder whose `ffmpeg` is the real one, except that its first `kills` runs are killed with
    SIGKILL as they start (as the OOM killer or a drained node would); the count lives in a file."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    real = shutil.which("ffmpeg")
    count = bin_dir / "runs"
    script = bin_dir / "ffmpeg"
    script.write_text(
        "#!/bin/sh\n"
        f'n=$(cat "{count}" 2>/dev/null || echo 0); echo $((n + 1)) > "{count}"\n'
        f'if [ "$n" -lt {kills} ]; then kill -KILL $$; fi\n'
        f'exec "{real}" "$@"\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return bin_dir


def runs(bin_dir: Path) -> int:
    return int((bin_dir / "runs").read_text())


def test_exit_status_of_a_signal_is_a_fault_not_the_files():
    assert exit_fault(-9) == "killed by SIGKILL"
    assert exit_fault(-2) == "killed by SIGINT"
    assert exit_fault(255) == "stopped by a signal (exit status 255)"  # ffmpeg after it caught SIGINT/SIGTERM
    assert exit_fault(1) is None and exit_fault(0) is None


def test_memory_error_is_retried_then_fails_the_build():
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise MemoryError()
        return "done"

    assert retry_faults(flaky, "a.mp4", "faces", backoff_s=0) == "done" and len(calls) == 3
    with pytest.raises(BuildFault) as caught:
        retry_faults(lambda: (_ for _ in ()).throw(MemoryError("cannot allocate")), "clips/b.mp4", "faces", backoff_s=0)
    assert caught.value.line.startswith("clips/b.mp4: faces failed 3 times for a reason outside the file (MemoryError: cannot allocate)")
    assert "nothing was committed" in caught.value.line


def test_input_errors_are_not_retried():
    calls = []

    def bad() -> None:
        calls.append(1)
        raise ClipError("no video stream")

    with pytest.raises(ClipError):
        retry_faults(bad, "a.mp4", "decode", backoff_s=0)
    assert len(calls) == 1


@pytest.mark.slow
def test_guarded_step_keeps_input_errors_as_rows_and_raises_persistent_faults(monkeypatch):
    monkeypatch.setattr("emer_builder.core.failures.FAULT_BACKOFF_S", 0.0)
    clip = Envelope(Clip(key="k", path="/x/k.mp4", source_path="k.mp4"))

    def input_error(c: Clip) -> None:
        raise ClipError("file is empty (0 bytes)")

    row = guarded(clip, "decode", input_error).failure
    assert row["stage"] == "decode" and row["message"] == "file is empty (0 bytes)"

    tries = []

    def out_of_memory_once(c: Clip) -> None:
        tries.append(1)
        c.fields["faces"] = {"partial": len(tries)}
        if len(tries) == 1:
            raise MemoryError()

    done = guarded(clip, "faces", out_of_memory_once)
    assert done.failure is None and done.clip.fields["faces"] == {"partial": 2} and clip.clip.fields == {}

    def always(c: Clip) -> None:
        raise MemoryError()

    with pytest.raises(BuildFault) as caught:
        guarded(clip, "faces", always)
    # the runner re-raises a worker's error wrapped in its own: the driver still finds the line
    wrapped = RuntimeError(f"Error in bundle:\nTraceback ...\n{caught.value}\n")
    assert fault_in(wrapped) == caught.value.line


def test_killed_decoder_is_retried_and_the_clip_decodes(demo_videos: Path, tmp_path: Path, monkeypatch):
    monkeypatch.setattr("emer_builder.core.failures.FAULT_BACKOFF_S", 0.0)
    bin_dir = killing_ffmpeg(tmp_path / "bin", kills=1)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    path = demo_videos / "sample_00000870.mp4"
    clip = Envelope(Clip(key="sample_00000870", path=str(path), source_path=path.name))
    out = guarded(clip, "decode", DecodeStage().process)
    assert out.failure is None and out.clip.fields["media"]["decoded_duration_s"] > 1 and out.clip.frames
    assert runs(bin_dir) >= 2  # the first ffmpeg was killed, a later one decoded


@pytest.mark.slow
def test_decoder_killed_every_time_is_a_build_fault_not_a_failure_row(demo_videos: Path, tmp_path: Path, monkeypatch):
    monkeypatch.setattr("emer_builder.core.failures.FAULT_BACKOFF_S", 0.0)
    bin_dir = killing_ffmpeg(tmp_path / "bin", kills=1000)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    path = demo_videos / "sample_00000870.mp4"
    with pytest.raises(BuildFault) as caught:
        guarded(Envelope(Clip(key="s", path=str(path), source_path=path.name)), "decode", DecodeStage().process)
    assert caught.value.line.startswith("sample_00000870.mp4: decode failed 3 times for a reason outside the file (ffmpeg was killed by SIGKILL while decoding)")


@pytest.mark.slow
def test_build_with_a_killed_decoder_fails_commits_nothing_and_recovers(demo_videos: Path, tmp_path: Path):
    """End to end through `emer build`: a decoder killed on every try fails the build with one line and
    exit 1, and OUT stays without a build; killed once, the same build keeps the clip as a record."""
    videos = tmp_path / "videos"
    videos.mkdir()
    shutil.copy(demo_videos / "sample_00000870.mp4", videos)
    out = tmp_path / "out"
    env = {**os.environ, "PATH": f"{killing_ffmpeg(tmp_path / 'always', kills=1000)}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run([*EMER, "build", str(videos), "--out", str(out), "--workers", "1", "--quiet"], capture_output=True, text=True, env=env)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines == [lines[0]] and lines[0].startswith("emer: error: sample_00000870.mp4: decode failed 3 times"), proc.stderr
    assert "Traceback" not in proc.stderr and "killed by SIGKILL" in lines[0]
    assert not (out / "manifest.json").exists() and not list(out.glob(".emer-staging*"))  # nothing committed, no leftovers

    once = killing_ffmpeg(tmp_path / "once", kills=1)
    env["PATH"] = f"{once}{os.pathsep}{os.environ['PATH']}"
    proc = subprocess.run([*EMER, "build", str(videos), "--out", str(out), "--workers", "1", "--quiet"], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "built 1 records from 1 inputs" in proc.stdout and "failures" not in proc.stdout.split("built", 1)[1].splitlines()[0]
    import pyarrow.parquet as pq

    assert pq.read_table(out / "failures.parquet").num_rows == 0
    assert runs(once) >= 2
