"""Stage CPU seconds that add up to the process's (issue 22): a stage's clock counts its own thread,
the ffmpeg it ran and its model's threads, never what another worker thread did meanwhile."""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import soundfile
from emer_builder.core import cpu
from emer_builder.core.cpu import LibraryThreads, process_cpu, run_child, thread_cpu
from emer_builder.pipelines import progress
from emer_builder.pipelines.progress import PROCESS_CPU, ProcessClock, cpu_seconds, split_stats, stage_time
from emer_builder.pipelines.summary import BuildSummary
from emer_builder.report.page import _timings_table

BURN = "import time\nt = time.process_time()\nwhile time.process_time() - t < {s}: pass\n"


def _burn(seconds: float) -> None:
    """Keep this thread busy for `seconds` of its own CPU time."""
    start = time.thread_time()
    while time.thread_time() - start < seconds:
        sum(range(1000))


def _on_threads(*work: Any) -> list[float]:
    """Run each callable on its own thread, all started together; each one's `cpu_seconds()` difference."""
    barrier, spent = threading.Barrier(len(work)), [0.0] * len(work)

    def one(i: int) -> None:
        barrier.wait()
        before = cpu_seconds()
        work[i]()
        spent[i] = cpu_seconds() - before

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(work))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return spent


def test_two_threads_busy_at_once_each_get_their_own_cpu():
    # the process-wide clock gave each thread about the sum of both (0.6 s): what two worker threads reported
    before = process_cpu()
    a, b = _on_threads(lambda: _burn(0.3), lambda: _burn(0.3))
    whole = process_cpu() - before
    assert 0.28 <= a <= 0.4 and 0.28 <= b <= 0.4, (a, b)
    assert a + b <= whole + 0.03, (a, b, whole)


def test_a_child_process_is_charged_to_the_thread_that_ran_it_not_to_another():
    done = threading.Event()

    def run() -> None:
        run_child([sys.executable, "-c", BURN.format(s=0.3)], 30)
        done.set()

    ran, waited = _on_threads(run, lambda: done.wait(30))
    assert ran >= 0.3, ran  # the child's own CPU (and its interpreter's start), collected by os.wait4
    assert waited < 0.05, waited  # the thread that only waited meanwhile: with os.times it counted the child too


def test_ffmpeg_on_a_real_clip_is_charged_exactly_to_its_thread(demo_videos: Path):
    from emer_builder.transforms.stages.decode import _run

    clip = str(demo_videos / "jesper_intro.avi")
    children, own, clock = resource.getrusage(resource.RUSAGE_CHILDREN), time.thread_time(), thread_cpu()
    proc = _run(["ffmpeg", "-nostdin", "-v", "error", "-threads", "1", "-i", f"file:{clip}", "-f", "null", "-"], 60, "decoding")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    ffmpeg = (after.ru_utime - children.ru_utime) + (after.ru_stime - children.ru_stime)  # what the kernel says the child used
    assert proc.returncode == 0 and ffmpeg > 0.02
    assert abs((thread_cpu() - clock) - (time.thread_time() - own) - ffmpeg) < 0.005


def test_run_child_keeps_subprocess_run_s_errors():
    started = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        run_child(["sleep", "5"], 0.2)
    assert time.monotonic() - started < 3  # killed and reaped, not waited for
    with pytest.raises(FileNotFoundError):
        run_child(["no-such-tool-emer"], 1)
    proc = run_child([sys.executable, "-c", "import sys; sys.stdout.write('out'); sys.stderr.write('err'); sys.exit(3)"], 30)
    assert (proc.returncode, proc.stdout, proc.stderr) == (3, b"out", b"err")


def test_a_new_thread_is_owned_by_one_model_only(monkeypatch: pytest.MonkeyPatch):
    # two models loading at once on two threads both see the same new threads: the first to claim them owns them
    seen = iter([{1, 2}, {1, 2}, {1, 2, 3, 4}, {1, 2, 3, 4}])
    monkeypatch.setattr(cpu, "_tids", lambda: next(seen))
    monkeypatch.setattr(cpu, "_claimed", set())
    first, second = LibraryThreads(), LibraryThreads()
    with first.started(), second.started():
        pass
    assert (second.tids, first.tids) == (frozenset({3, 4}), frozenset())


def test_models_loading_on_two_threads_each_own_their_threads(monkeypatch: pytest.MonkeyPatch):
    # two workers load their models at once: the second load waits, so neither claims the other's new thread
    # (before, the first to finish owned both, and the other's calls were charged nothing)
    tids = {1, 2}
    monkeypatch.setattr(cpu, "_tids", lambda: set(tids))
    monkeypatch.setattr(cpu, "_claimed", set())
    first, second = LibraryThreads(), LibraryThreads()
    inside, second_in = threading.Event(), threading.Event()

    def load_second() -> None:
        inside.wait()
        with second.started():
            second_in.set()
            tids.add(4)

    other = threading.Thread(target=load_second)
    other.start()
    with first.started():
        inside.set()
        assert not second_in.wait(0.2)  # still loading here: the other waits
        tids.add(3)
    other.join(5)
    assert (first.tids, second.tids) == (frozenset({3}), frozenset({4}))


@pytest.fixture(scope="module")
def two_transcribers() -> list[Any]:
    from emer_builder.transforms.stages.transcript import Transcriber

    return [Transcriber("base", language="en") for _ in range(2)]


@pytest.mark.slow
def test_whisper_s_own_threads_count_for_its_caller_once(two_transcribers: list[Any], librivox_dir: Path):
    """CTranslate2 runs the model in a thread of its own: the calling thread alone saw a tenth of the CPU.
    Two transcriptions at once on two threads: each gets its model's threads, and both fit in the process's CPU."""
    audio, _ = soundfile.read(librivox_dir / "sense_and_sensibility_01_austen_64kb-0870.wav", dtype="float32")
    one = two_transcribers[0]
    own, clock = time.thread_time(), thread_cpu()
    one.transcribe(audio)
    own, clock = time.thread_time() - own, thread_cpu() - clock
    assert one.threads.tids and clock > 2 * own, (clock, own)
    before = process_cpu()
    a, b = _on_threads(*(lambda t=t: t.transcribe(audio) for t in two_transcribers))
    assert min(a, b) > 0.5 * clock and a + b <= process_cpu() - before + 0.03, (a, b, clock)


def test_worker_processes_report_their_cpu_once_and_the_driver_none(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(progress, "_driver_pid", None)  # a worker process
    progress.worker_process_cpu()  # the mark starts here
    before = process_cpu()
    reported = 0.0
    for _ in range(3):
        _burn(0.05)
        reported += stage_time("faces", 0.05, 0.05).get(PROCESS_CPU, 0.0)
    assert abs(reported - (process_cpu() - before)) < 0.02
    clock = ProcessClock()  # the driver: its own process is measured whole, its stages stamp nothing
    assert PROCESS_CPU not in stage_time("faces", 1.0, 1.0) and progress._driver_pid == os.getpid()
    times, _, counts = split_stats({PROCESS_CPU: 5.0, "cpu_s:faces": 1.0, "wall_s:faces": 2.0})
    assert times == {"faces": {"cpu_s": 1.0, "wall_s": 2.0}} and counts == {}
    account = clock.account({PROCESS_CPU: 5.0}, times)  # worker processes elsewhere: their reports count
    assert account["worker_processes_s"] == 5.0 and account["process_s"] >= 5.0
    assert account["outside_stages_s"] == pytest.approx(account["process_s"] - 1.0, abs=0.002)


def test_summary_and_report_show_the_cpu_outside_the_stages():
    seconds = {"decode": {"cpu_s": 2.0, "wall_s": 3.0}, "transcript": {"cpu_s": 6.0, "wall_s": 5.0}}
    cpu_block = {"process_s": 10.0, "stages_s": 8.0, "outside_stages_s": 2.0}
    summary = BuildSummary("out", 1, {"train": 1}, {}, [], 1, {"en": 1}, 0.001, 5.0, stage_seconds=seconds, process_cpu=cpu_block)
    text = summary.text()
    assert "stage CPU time 8.0 s: decode 25%, transcript 75%" in text
    assert "process CPU time 10.0 s = stages 8.0 s + outside any stage 2.0 s" in text
    html = _timings_table({"wall_s": 5.0, "stage_seconds": seconds, "cpu": cpu_block})
    assert 'data-cpu="outside">2.0<' in html and 'data-cpu="process">10.0<' in html
    assert "outside any stage" not in _timings_table({"wall_s": 5.0, "stage_seconds": seconds})  # an older build.json


def _cpu_account(out: Path) -> dict[str, Any]:
    log = json.loads((out / "build.json").read_text())
    stages = sum(t["cpu_s"] for t in log["stage_seconds"].values())
    account = log["cpu"]
    assert account["stages_s"] == pytest.approx(stages, abs=0.01)
    assert stages <= account["process_s"] + 0.05, account  # with os.times per stage, two worker threads reported about twice the process
    assert account["stages_s"] + account["outside_stages_s"] == pytest.approx(account["process_s"], abs=0.01)
    return account


@pytest.mark.slow
def test_a_two_thread_build_s_stages_add_up_to_its_process(demo_build):
    out, summary = demo_build
    account = _cpu_account(out)
    assert account["stages_s"] > 0.5 * account["process_s"]  # ffmpeg and Whisper's threads are the stages', not the rest's
    assert "outside any stage" in summary.text()


@pytest.mark.slow
def test_worker_processes_report_their_cpu(demo_videos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from emer_builder.pipelines.build import build

    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("sample_00000870.mp4", "no_face_dog.mp4"):
        shutil.copyfile(demo_videos / name, videos / name)  # links leading outside VIDEOS_DIR are not followed
    monkeypatch.setenv("EMER_LOCAL_MODE", "multi_processing")
    build(videos, tmp_path / "out", workers=2, show_progress=False)
    account = _cpu_account(tmp_path / "out")
    assert account["worker_processes_s"] > 0
