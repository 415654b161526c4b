"""Where a build's peak memory is reached: one `emer build` in this process (the local runner's workers
are threads of it), its resident set sampled every 20 ms and charged to the step running at that
moment: the driver before the run, each fused stage of the Beam graph, and each of the driver's steps
after it (shard statistics, completeness check, manifest, report, cache record).

Run it on a small and a large corpus and compare the steps' peaks: the step whose peak grows with the
corpus is what holds something per clip.

Usage: python -m bench.memory_phases VIDEOS_DIR --out OUT [--config CONFIG] [--json FILE]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.run_bench import tree_memory


def resident_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class PhaseMemory:
    """The resident set when each named step first started and the largest seen while it ran (in the
    order first seen): a step whose peak is far above its start is one that holds something itself."""

    def __init__(self, every_s: float = 0.02):
        self.every_s, self.current, self.peaks, self.starts = every_s, "driver: before the run", {}, {}
        self.tree_peak_mb, self.ticks = 0.0, 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self.done.wait(self.every_s):
            self.note(self.current)
            self.ticks += 1
            if self.ticks % 5 == 0:  # the whole process tree (ffmpeg children too), as bench.cache_bench reads it
                self.tree_peak_mb = max(self.tree_peak_mb, tree_memory(os.getpid())[0] / 2**20)

    def note(self, phase: str) -> None:
        self.peaks[phase] = max(self.peaks.get(phase, 0.0), resident_mb())

    def enter(self, phase: str) -> None:
        self.note(self.current)
        self.current = phase
        self.starts.setdefault(phase, resident_mb())
        self.note(phase)

    def wrap(self, owner: Any, name: str, phase: Callable[..., str] | str) -> None:
        original = getattr(owner, name)

        @functools.wraps(original)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            self.enter(phase(*args, **kwargs) if callable(phase) else phase)
            return original(*args, **kwargs)

        setattr(owner, name, wrapped)


def stage_label(name: str) -> str:
    """A fused stage's name, from its first transform to its last (Beam's names run to a paragraph)."""
    parts = re.findall(r"ref_AppliedPTransform_([A-Za-z-]+?)(?:-lambda[^_]*)?_\d+|([A-Za-z]+(?:/[A-Za-z]+)*/(?:Read|Write))\b", name)
    steps = [a or b for a, b in parts]
    return "graph: " + (f"{steps[0]} .. {steps[-1]}" if len(steps) > 1 else steps[0] if steps else name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("videos")
    parser.add_argument("--out", required=True)
    parser.add_argument("--config")
    parser.add_argument("--json", type=Path, help="write the peaks here as JSON too")
    args = parser.parse_args()

    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from emer_builder.cli.main import main as emer
    from emer_builder.pipelines import run

    mem = PhaseMemory()
    mem.wrap(fn_runner.FnApiRunner, "_execute_bundle", lambda _self, _ctx, bundle, _input: stage_label(bundle.stage.name))
    for step in ("shards_written", "check_complete", "_write_records", "write_report", "record_cache_use"):
        mem.wrap(run, step, "driver: " + step)
    mem.thread.start()
    started = time.perf_counter()
    code = emer(["build", args.videos, "--out", args.out, "--overwrite", "--quiet", *(["--config", args.config] if args.config else [])])
    mem.enter("driver: after the build")
    mem.done.set()
    peaks = {phase: {"start_mb": round(mem.starts.get(phase, 0.0), 1), "peak_mb": round(mb, 1)} for phase, mb in mem.peaks.items()}
    print("   start     peak  step")
    for phase, mb in peaks.items():
        print(f"{mb['start_mb']:8.1f} {mb['peak_mb']:8.1f}  {phase}")
    print(f"peak RSS of the process tree {mem.tree_peak_mb:.1f} MB; exit {code}, {time.perf_counter() - started:.1f} s")
    if args.json:
        args.json.write_text(json.dumps({"steps": peaks, "tree_peak_mb": round(mem.tree_peak_mb, 1)}, indent=1) + "\n")


if __name__ == "__main__":
    main()
