"""Run statistics and a live progress line that work on every runner, with workers on any machine.

Statistics (stage seconds, model loads, counts) travel with each clip (`Clip.stats`) to the shard
writer, which adds them up per shard into `.shards/<name>.json` beside the shard in the staging area:
the summary counts each clip once, even when a runner retries a bundle, and needs no folder shared with
the driver. The live line reads small counters that each record maker overwrites (at most once a
second) in the staging area's `.progress/`; the Beam counters `emer/records` and `emer/failures` show
the same in a runner's own interface (Dataflow, Flink).

CPU seconds: a stage's are those of the thread that ran it, of the child processes (ffmpeg) it
waited for and of the library threads its model calls used (core/cpu.py), so stages running on two
threads at once no longer count each other. What the whole run cost is measured beside them
(`ProcessClock`, started when the build starts): the driver's own process and its children, plus what worker processes elsewhere
report (`PROCESS_CPU`, stamped with each stage's time); the difference is the CPU outside every
stage (the runner, the driver, model loads, library threads no stage claims).
"""

from __future__ import annotations

import os
import sys
import threading
import time
import uuid
from collections.abc import Iterable
from typing import Any

from emer_builder.core.cpu import process_cpu, process_times, thread_cpu
from emer_builder.pipelines.staging import StagingArea

PROGRESS = ".progress"
PROCESS_CPU = "cpu_s_worker_processes"  # statistic: CPU of worker processes other than the driver's, whole


def cpu_seconds() -> float:
    """CPU seconds of the calling thread, of the children it waited for (ffmpeg) and of the library
    threads that worked for its calls: a difference of it is one stage's CPU, even while other
    stages run on other threads of the process."""
    return thread_cpu()


_driver_pid: int | None = None  # the process whose CPU the driver measures itself (ProcessClock)
_worker_lock = threading.Lock()
_worker_mark = (os.getpid(), process_cpu())  # (process, its CPU when last reported)


def worker_process_cpu() -> float:
    """This worker process's CPU since it last reported (0 in the driver's process, which measures
    its own): stamped on each stage's statistics, so that the shards add up every worker process's
    CPU once, on any runner. A process started by fork counts from its start."""
    global _worker_mark
    pid = os.getpid()
    if pid == _driver_pid:
        return 0.0
    with _worker_lock:
        now = process_cpu()
        since = _worker_mark[1] if _worker_mark[0] == pid else 0.0
        _worker_mark = (pid, now)
    return max(0.0, now - since)


def tally(stats: dict[str, float], more: dict[str, float]) -> dict[str, float]:
    """`stats` plus `more`, as a new dict (Beam elements are never mutated)."""
    out = dict(stats)
    for name, value in more.items():
        if value:
            out[name] = out.get(name, 0) + value
    return out


def stage_time(stage: str, cpu_s: float, wall_s: float) -> dict[str, float]:
    """One stage's CPU and wall seconds on one clip, with the CPU its worker process spent since the
    last such report when that process is not the driver's."""
    out = {f"cpu_s:{stage}": cpu_s, f"wall_s:{stage}": wall_s}
    worker = worker_process_cpu()
    if worker:
        out[PROCESS_CPU] = worker
    return out


def model_load(stage: str) -> dict[str, float]:
    return {f"load:{stage}": 1}


def add_up(parts: Iterable[dict[str, float]]) -> dict[str, float]:
    total: dict[str, float] = {}
    for part in parts:
        total = tally(total, part)
    return total


def split_stats(stats: dict[str, float]) -> tuple[dict[str, dict[str, float]], dict[str, int], dict[str, int]]:
    """Per stage CPU and wall seconds (summed over clips), model loads per stage, and the counters
    (`ran_<stage>`, `restored_<group>`, `llm_<what>`)."""
    times: dict[str, dict[str, float]] = {}
    loads: dict[str, int] = {}
    counts: dict[str, int] = {}
    for name, value in stats.items():
        kind, _, stage = name.partition(":")
        if name == PROCESS_CPU:
            continue  # the run's CPU, not a stage's: ProcessClock.account reads it
        if kind in ("cpu_s", "wall_s") and stage:
            times.setdefault(stage, {"cpu_s": 0.0, "wall_s": 0.0})[kind] += value
        elif kind == "load" and stage:
            loads[stage] = int(value)
        else:
            counts[name] = int(value)
    rounded = {k: {m: round(v, 3) for m, v in t.items()} for k, t in sorted(times.items())}
    return rounded, dict(sorted(loads.items())), dict(sorted(counts.items()))


class ProcessClock:
    """The driver's measure of what a build's run cost in CPU: its own process (every thread: the
    stages when workers are threads here, the runner, the driver) and the children it waited for,
    plus the worker processes that reported their own. Worker processes that are also its children
    (Beam's multi_processing mode) show in both: the larger of the two counts, once."""

    def __init__(self) -> None:
        global _driver_pid
        _driver_pid = os.getpid()  # stages on this process's threads are in its own figures: they report no worker CPU
        self.own, self.children = process_times()

    def account(self, stats: dict[str, float], stage_seconds: dict[str, dict[str, float]]) -> dict[str, Any]:
        """build.json's `cpu`: the run's process CPU, the stages' sum, and the rest (outside any stage)."""
        own, children = process_times()
        own, children = own - self.own, children - self.children
        workers = stats.get(PROCESS_CPU, 0.0)
        process = own + max(children, workers)
        stages = sum(t["cpu_s"] for t in stage_seconds.values())
        out: dict[str, Any] = {"process_s": round(process, 3), "stages_s": round(stages, 3), "outside_stages_s": round(max(0.0, process - stages), 3)}
        if workers:
            out["worker_processes_s"] = round(workers, 3)
        return out


class ProgressLog:
    """The worker side: clips that ended as a record or a failure, counted by one record maker and
    written whole to `.progress/<id>` at most once a second (a store has no append)."""

    def __init__(self, staging: StagingArea, every_s: float = 1.0):
        self.staging, self.every_s = staging, every_s
        self.name = f"{PROGRESS}/{uuid.uuid4().hex}"
        self.done = self.failed = 0
        self.written: float | None = None  # never yet: the first mark is written at once, whatever the clock reads

    def mark(self, status: str) -> None:
        self.done += 1
        self.failed += status == "failed"
        if self.written is None or time.monotonic() - self.written >= self.every_s:
            self.flush()

    def flush(self) -> None:
        self.written = time.monotonic()
        try:
            self.staging.write(self.name, f"{self.done} {self.failed}".encode())
        except Exception:  # noqa: BLE001 - progress is best-effort; the summary comes from the shards
            pass


def count_marks(staging: StagingArea) -> tuple[int, int]:
    done = failed = 0
    try:
        names = staging.names(PROGRESS)
    except OSError:
        return 0, 0
    for name in names:
        try:
            d, f = staging.read(name).split()
        except (OSError, ValueError):
            continue  # removed or being written
        done, failed = done + int(d), failed + int(f)
    return done, failed


class Progress:
    """The driver side: a line on stderr every second on a terminal (every 3 s from a store), every 30 s otherwise."""

    def __init__(self, staging: StagingArea, total: int, enabled: bool = True):
        self.staging, self.total, self.enabled = staging, total, enabled
        self.tty = sys.stderr.isatty()
        self.final: tuple[int, int] | None = None  # exact figures once the run ended
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Progress:
        self.started = time.monotonic()
        if self.enabled:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
            if self.final is not None:
                self._print(final=True)

    def line(self) -> str:
        done, failed = self.final or count_marks(self.staging)
        elapsed = time.monotonic() - self.started
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - done) / rate if rate > 0 else float("nan")
        eta_text = f"{eta:.0f} s" if eta == eta else "?"
        return f"[emer] {done}/{self.total} clips  {rate:.2f} clips/s  ETA {eta_text}  failures {failed}"

    def _print(self, final: bool = False) -> None:
        if self.tty:
            sys.stderr.write("\r" + self.line() + ("\n" if final else ""))
        else:
            sys.stderr.write(self.line() + "\n")
        sys.stderr.flush()

    def _run(self) -> None:
        interval = (3.0 if self.staging.stored else 1.0) if self.tty else 30.0
        while not self._stop.wait(interval):
            self._print()
