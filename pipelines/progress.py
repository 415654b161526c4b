"""A live progress line for long builds.

Workers append to files of their own in `.progress/`: one byte per finished clip (`<pid>.done`),
stage timings (`<pid>.times`) and stage set-ups (`<pid>.setups`); the driver reads them. This works
for every local runner without any coupling to Beam internals.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path


def cpu_seconds() -> float:
    """CPU time of this process and of the children it waited for (ffmpeg runs as a child)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class ProgressLog:
    """The worker side: mark each clip that ended as a record (`ok`) or a failure."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)

    def mark(self, status: str) -> None:
        self._append("done", "F" if status == "failed" else ".")

    def model_load(self, stage: str) -> None:
        self._append("setups", f"{stage}\n")

    def stage_time(self, stage: str, cpu_s: float, wall_s: float) -> None:
        self._append("times", f"{stage} {cpu_s:.6f} {wall_s:.6f}\n")

    def count(self, counts: dict[str, int]) -> None:
        """Add to named counters (e.g. LLM requests and cache hits) summed over all workers."""
        if any(counts.values()):
            self._append("counts", "".join(f"{name} {n}\n" for name, n in counts.items()))

    def _append(self, kind: str, text: str) -> None:
        try:
            with open(self.directory / f"{os.getpid()}.{kind}", "a") as f:
                f.write(text)
        except OSError:
            pass  # progress is best-effort (remote workers cannot see the driver's disk)


def stage_times(directory: Path) -> dict[str, dict[str, float]]:
    """Per stage: CPU seconds (the worker process's, all threads) and wall seconds, summed over clips."""
    totals: dict[str, dict[str, float]] = {}
    for p in directory.glob("*.times"):
        for line in p.read_text().splitlines():
            stage, cpu, wall = line.split()
            t = totals.setdefault(stage, {"cpu_s": 0.0, "wall_s": 0.0})
            t["cpu_s"] += float(cpu)
            t["wall_s"] += float(wall)
    return {k: {m: round(v, 3) for m, v in t.items()} for k, t in sorted(totals.items())}


def model_loads(directory: Path) -> dict[str, int]:
    """How often each stage was set up (its models loaded), over all worker processes."""
    counts: dict[str, int] = {}
    for p in directory.glob("*.setups"):
        for stage in p.read_text().split():
            counts[stage] = counts.get(stage, 0) + 1
    return dict(sorted(counts.items()))


def count_marks(directory: Path) -> tuple[int, int]:
    done = failed = 0
    for p in directory.glob("*.done"):
        try:
            text = p.read_text()
        except OSError:
            continue
        done += len(text)
        failed += text.count("F")
    return done, failed


class Progress:
    """The driver side: a line on stderr every second on a terminal, every 30 s otherwise."""

    def __init__(self, directory: Path, total: int, already_failed: int = 0, enabled: bool = True):
        self.directory, self.total, self.already_failed, self.enabled = directory, total, already_failed, enabled
        self.tty = sys.stderr.isatty()
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
            self._print(final=True)

    def line(self) -> str:
        done, failed = count_marks(self.directory)
        done += self.already_failed
        failed += self.already_failed
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
        interval = 1.0 if self.tty else 30.0
        while not self._stop.wait(interval):
            self._print()


def counters(directory: Path) -> dict[str, int]:
    """The counters workers added to, summed."""
    totals: dict[str, int] = {}
    for p in directory.glob("*.counts"):
        for line in p.read_text().splitlines():
            name, n = line.rsplit(" ", 1)
            totals[name] = totals.get(name, 0) + int(n)
    return dict(sorted(totals.items()))
