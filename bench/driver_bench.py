"""The driver's work after the Beam runner returns, at 10^3, 10^4 and 10^5 records: time per record and
peak RSS of each step, on a synthetic staged build (a real build of 10^5 clips takes days on this machine).

The staged build is what the runner leaves in a local OUT's staging folder, written with the project's own
shard writer (`pipelines.graph.WriteShardFn`: Parquet + tar shards of 1000 records in the real schema,
`.shards/<name>.json` infos, failures.parquet), tiny media members (two 24x24 JPEG face crops, a 0.05 s
FLAC), 1 % failure rows and 8 progress counters (`.progress/`). It is made once per size under `--work`
and hard-linked into a fresh OUT for every run (the driver only adds, removes and renames files).

Each run is one process (`--one`): it builds the driver's job (clips, config, stages, schema) as the build
does, then times the steps `pipelines.run.produce` runs after `run_pipeline` (the live progress line's
count, shard infos, completeness check, manifest + card + build.json, report, cache index) and the commit
and summary `pipelines.build` runs after it. Memory: RSS of the whole process from /proc/self/statm every
5 ms per step, and ru_maxrss at the end; "growth" is the peak minus the RSS once the job was set up (the
clips list, Beam and the report's libraries imported). Figures are medians of `--runs` interleaved runs.

Usage: flock /tmp/emer-bench.lock python -m bench.driver_bench [--sizes 1000,10000,100000] [--runs 3] [--work DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import io
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

GENERATION = "3"  # bump when the synthetic build changes: templates of another generation are made again
SHARD_RECORDS = 1000
FAILURE_EVERY = 100  # every 100th input fails (at decode)
PROGRESS_FILES = 8
PAGE = os.sysconf("SC_PAGE_SIZE")


# ---------------------------------------------------------------- the synthetic staged build


def _tiny_media() -> dict[str, bytes]:
    import numpy as np
    import soundfile
    from PIL import Image

    faces = []
    for shade in (60, 180):
        out = io.BytesIO()
        Image.new("RGB", (24, 24), (shade, 120, 255 - shade)).save(out, format="JPEG", quality=80)
        faces.append(out.getvalue())
    sound = io.BytesIO()
    t = np.arange(800) / 16000
    soundfile.write(sound, (0.2 * np.sin(2 * np.pi * 220 * t)).astype("float32"), 16000, format="FLAC")
    return {"face_000.jpg": faces[0], "face_001.jpg": faces[1], "flac": sound.getvalue()}


LABELS = ("happy", "sad", "angry", "calm", "surprised", "worried", "excited", "tired", "relieved", "bored", "proud", "shy")


def _record(i: int, split: str) -> tuple[dict[str, Any], bool]:
    """A record as MakeRecords leaves it (schema-conformed later), and whether it has a face."""
    key = f"clip_{i:07d}"
    h = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16)
    has_audio, has_face = i % 13 != 5, i % 11 != 3
    labels = [LABELS[h % len(LABELS)], LABELS[(h // 7) % len(LABELS)]]
    expression = {c: (1 + (h >> n) % 7) / 28 for n, c in enumerate(("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"))}
    crops = [{"index": c, "time_s": c * 0.5, "box": {"x": 10, "y": 10, "w": 100 + i % 50, "h": 100 + i % 50}, "confidence": 0.9, "expression": expression} for c in range(2)]

    def explained(text: str | None, source: str = "rules:1") -> dict[str, Any]:
        return {"text": text, "language": "en" if text else None, "source": source if text else None, "reason": None if text else "rules: no audio"}

    clue = f"In the {{}} of clip {i}, the person keeps a calm expression at first, then smiles and speaks faster. "
    record = {
        "key": key,
        "split": split,
        "source_path": f"videos/{i % 97:02d}/{key}.mp4",
        "media": {"duration_s": 1 + (h % 1900) / 100, "has_audio": has_audio, "width": 640, "height": 480, "frames_sampled": 10, "sha256": hashlib.sha256(key.encode()).hexdigest(), "truncated": i % 997 == 1},
        "transcript": {"model": "base", "language": ("zh" if i % 7 == 0 else "en") if has_audio else None, "text": f"This is clip number {i}, about my day at work." if has_audio else None, "reason": None if has_audio else "no audio track"},
        "faces": {"reason": None if has_face else "no face in 10 sampled frames", "frames_with_face": 2 if has_face else 0, "crop_size": 224, "crops": crops if has_face else [], "expression_mean": expression if has_face else None},
        "acoustics": {"reason": None if has_audio else "no audio track", "prosody": {"f0_mean_semitone": 25 + h % 11, "loudness_mean": (h % 140) / 100} if has_audio else None},
        "explanation": {
            "visual_clue": explained(clue.format("video"), "human" if i % 3 == 0 else "rules:1"),
            "acoustic_clue": explained(clue.format("audio") if has_audio else None),
            "lexical_clue": explained(clue.format("text")),
            "multimodal_explanation": explained(clue.format("clip") * 2),
            "open_vocab_labels": {"labels": labels, "language": "en", "source": "rules:1"},
            "discrete_label": {"label": labels[0], "language": "en", "source": "human"},
            "valence": {"value": (h % 100) / 10 - 5, "source": "human"},
        },
    }
    if record["media"]["truncated"]:
        record["media"].update(declared_duration_s=record["media"]["duration_s"] * 2, decoded_duration_s=record["media"]["duration_s"], decoded_fraction=0.5)
    return record, has_face


def _setting() -> tuple[Any, Any, Any, dict[str, Any]]:
    from emer_builder.core.config import BuildConfig
    from emer_builder.pipelines.stages import build_stages, provenance, stages_schema

    config = BuildConfig()
    stages = build_stages(config)
    prov = provenance(stages, config.config_hash(), "rules", None)
    return config, stages, stages_schema(stages), prov


def make_staged(n: int, where: Path) -> None:
    """A staging folder holding `n` inputs as the runner leaves it: 99 % records, 1 % failure rows."""
    from emer_builder.core.errors import ClipError
    from emer_builder.core.failures import failure_row
    from emer_builder.pipelines import graph
    from emer_builder.pipelines.graph import FAILURES_SHARD, Outcome, WriteShardFn
    from emer_builder.pipelines.out import STAGING_FOLDERS
    from emer_builder.pipelines.staging import StagingArea
    from emer_builder.transforms.split import SplitAssigner

    config, _, schema, prov = _setting()
    s = config.split
    assign = SplitAssigner(s.ratios, s.group_by, s.group_pattern, s.split_table, s.seed)
    media = _tiny_media()
    tmp = where.with_name(where.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for sub in STAGING_FOLDERS:
        (tmp / sub).mkdir(parents=True)
    area = StagingArea(tmp)
    writer = WriteShardFn(area, schema, config.shards.parquet_row_group_size)

    def write(target: tuple[str, int, int], outcomes: list[Any]) -> None:
        """One shard, as the graph hands it to the writer: outcomes parked in the staging area (their
        tickets) where the graph parks them, else the outcomes themselves."""
        park = getattr(graph, "park_outcome", None)
        list(writer.process((target, [park(o, area).parked for o in outcomes] if park else outcomes)))
    stats = {"cpu_s:decode": 0.01, "wall_s:decode": 0.01, "cpu_s:faces": 0.05, "wall_s:faces": 0.05, "ran_decode": 1, "ran_faces": 1}
    by_split: dict[str, list[int]] = {}
    failed = []
    for i in range(n):
        if i % FAILURE_EVERY == FAILURE_EVERY - 1:
            failed.append(i)
            continue
        record, _ = _record(i, "")
        by_split.setdefault(assign(record), []).append(i)
    for split, numbers in sorted(by_split.items()):
        count = -(-len(numbers) // SHARD_RECORDS)
        for index in range(count):
            outcomes = []
            for i in numbers[index * SHARD_RECORDS : (index + 1) * SHARD_RECORDS]:
                record, has_face = _record(i, split)
                record["provenance"] = prov
                files = {k: v for k, v in media.items() if (k != "flac" or record["media"]["has_audio"]) and (k == "flac" or has_face)}
                outcomes.append(Outcome(record["key"], schema.conform(record), files, None, stats=stats))
            write((split, index, count), outcomes)
    rows = [Outcome(f"clip_{i:07d}", None, {}, failure_row(f"clip_{i:07d}", f"videos/{i % 97:02d}/clip_{i:07d}.mp4", "decode", ClipError("no video stream")), stats=stats) for i in failed]
    write(FAILURES_SHARD, rows)
    for w in range(PROGRESS_FILES):
        area.write(f".progress/worker{w}", f"{n // PROGRESS_FILES} 0".encode())
    (tmp / "GENERATION").write_text(f"{GENERATION} {n}\n")
    shutil.rmtree(where, ignore_errors=True)
    tmp.rename(where)


def template(work: Path, n: int) -> Path:
    where = work / f"staged-{n}"
    marker = where / "GENERATION"
    if not (marker.is_file() and marker.read_text().split() == [GENERATION, str(n)]):
        started = time.monotonic()
        make_staged(n, where)
        print(f"  made the staged build of {n} inputs in {time.monotonic() - started:.0f} s ({_du(where) / 2**20:.0f} MiB)", flush=True)
    return where


def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# ---------------------------------------------------------------- one run (its own process)


class Sampler:
    """The peak RSS of this process, sampled from /proc/self/statm every 5 ms, per named step."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * PAGE

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self.rss())

    @contextmanager
    def step(self, name: str, into: dict[str, Any]) -> Iterator[None]:
        self.peak = self.rss()
        started = time.perf_counter()
        yield
        into[name] = {"s": time.perf_counter() - started, "peak": max(self.peak, self.rss())}

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _clips(staged: Path) -> list[Any]:
    """The clips the driver held for the run: every input, records and failures, as the job lists them."""
    import pyarrow.parquet as pq
    from emer_builder.transforms.clip import Clip

    try:
        from emer_builder.pipelines.envelope import Envelope
    except ImportError:  # before the graph's bookkeeping moved out of Clip
        Envelope = None  # noqa: N806

    clips = []
    for path in sorted((staged / "data").glob("*.parquet")) + [staged / "failures.parquet"]:
        t = pq.read_table(path, columns=["key", "source_path"])
        made = [Clip(k, f"/videos/{s}", s) for k, s in zip(t.column("key").to_pylist(), t.column("source_path").to_pylist(), strict=True)]
        clips += [Envelope(c) for c in made] if Envelope else made
    return sorted(clips, key=lambda c: (c.key, c.source_path))


def run_one(staged_template: Path, scratch: Path) -> dict[str, Any]:
    """The driver's steps after the runner, timed one by one, on a fresh OUT linked from the template."""
    import matplotlib  # noqa: F401 - the report's libraries, loaded before the baseline is taken
    from emer_builder.pipelines import run
    from emer_builder.pipelines.explain_setup import prepare
    from emer_builder.pipelines.local_out import LocalOut
    from emer_builder.pipelines.out import Staged
    from emer_builder.pipelines.progress import PROGRESS, count_marks, split_stats
    from emer_builder.pipelines.staging import StagingArea
    from emer_builder.pipelines.summary import summarise
    from PIL import Image  # noqa: F401

    out = scratch / "out"
    target = LocalOut(out, overwrite=False)
    out.mkdir(parents=True)
    staged = target.stage()
    shutil.rmtree(staged.local)
    shutil.copytree(staged_template, staged.local, copy_function=os.link)
    (staged.local / "GENERATION").unlink()
    config, stages, schema, prov = _setting()
    config = dataclasses.replace(config, cache=dataclasses.replace(config.cache, dir=str(scratch / "cache")))
    clips = _clips(staged.local)
    job = run.GraphJob(clips, config, schema, stages, prov, prepare(config), {}, videos="/videos", label=str(out))
    area = StagingArea(staged.local)
    steps: dict[str, Any] = {}
    baseline = Sampler.rss()
    with Sampler() as sampler:
        total = time.perf_counter()
        _steps(run, job, staged, area, sampler, steps, count_marks, split_stats, PROGRESS)
        manifest = steps.pop("_manifest")
        with sampler.step("commit", steps):
            target.commit(Staged(staged.local))
        with sampler.step("summary", steps):
            summarise(str(out), len(clips), [], 1.0, manifest, {}, {}).text()
        total = time.perf_counter() - total
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    report = out / "report"
    return {
        "inputs": len(clips),
        "total_s": total,
        "baseline_rss": baseline,
        "peak_rss": peak,
        "steps": {k: {"s": v["s"], "growth": max(0, v["peak"] - baseline)} for k, v in steps.items()},
        "report_bytes": (out / "report.html").stat().st_size + _du(report),
        "report_files": sum(1 for p in report.rglob("*") if p.is_file()),
    }


def _steps(run: Any, job: Any, staged: Any, area: Any, sampler: Sampler, steps: dict[str, Any], count_marks: Callable[..., Any], split_stats: Callable[..., Any], progress: str) -> None:
    """What `produce` does once `run_pipeline` returned (a local OUT: no tables to fetch)."""
    from emer_builder.core.failures import FAILURES_FILE
    from emer_builder.pipelines.graph import SHARD_INFO, write_failures

    local = staged.local
    with sampler.step("progress", steps):
        count_marks(area)
    with sampler.step("shard_infos", steps):
        written = run.shards_written(area)
    if not (local / FAILURES_FILE).is_file():
        write_failures([], local / FAILURES_FILE)
    with sampler.step("complete", steps):
        run.check_complete(local, job.clips)
    seconds, loads, counts = split_stats(written["stats"])
    for hidden in (progress, ".media", SHARD_INFO, *getattr(run, "SCRATCH", ())):
        area.remove(hidden)
    with sampler.step("manifest_card", steps):
        manifest = run._write_records(job, local, written["files"], 1.0, seconds, loads, counts)
    with sampler.step("report", steps):
        run.write_report(local, manifest=manifest, media_from=staged.url)
    with sampler.step("cache_index", steps):
        run.record_cache_use(job.config, job.stages, local, job.clips, job.label)
    steps["_manifest"] = manifest


# ---------------------------------------------------------------- the invocation


def _median(runs: list[dict[str, Any]], get: Callable[[dict[str, Any]], float]) -> float:
    return statistics.median(get(r) for r in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "emer-driver-bench"))
    parser.add_argument("--one", nargs=2, metavar=("TEMPLATE", "SCRATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(Path(args.one[0]), Path(args.one[1]))))
        return
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    sizes = [int(s) for s in args.sizes.split(",")]
    templates = {n: template(work, n) for n in sizes}
    results: dict[int, list[dict[str, Any]]] = {n: [] for n in sizes}
    for r in range(args.runs):
        for n in sizes if r % 2 == 0 else sizes[::-1]:
            scratch = Path(tempfile.mkdtemp(prefix=f"run-{n}-", dir=work))
            try:
                done = subprocess.run([sys.executable, "-m", "bench.driver_bench", "--one", str(templates[n]), str(scratch)], capture_output=True, text=True, check=False)
                if done.returncode != 0:
                    raise SystemExit(f"run at {n} failed:\n{done.stderr[-3000:]}")
                results[n].append(json.loads(done.stdout.strip().splitlines()[-1]))
                print(f"  run {r + 1} at {n}: {results[n][-1]['total_s']:.1f} s, peak RSS {results[n][-1]['peak_rss'] / 2**20:.0f} MiB", flush=True)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
    _print_table(sizes, results)


def _print_table(sizes: list[int], results: dict[int, list[dict[str, Any]]]) -> None:
    print(f"\n{platform.node()} {platform.processor() or platform.machine()}, Python {platform.python_version()}; medians of {len(results[sizes[0]])} runs")
    steps = list(results[sizes[0]][0]["steps"])
    print("| records (inputs) | total s | us per input | peak RSS MiB | RSS growth MiB | report MB (files) | " + " | ".join(f"{s} us/input" for s in steps) + " |")
    print("|---" * (6 + len(steps)) + "|")
    for n in sizes:
        runs = results[n]
        inputs = runs[0]["inputs"]
        total = _median(runs, lambda r: r["total_s"])
        growth = _median(runs, lambda r: max(s["growth"] for s in r["steps"].values()))
        per_step = " | ".join(f"{_median(runs, lambda r, s=s: r['steps'][s]['s']) / inputs * 1e6:.0f}" for s in steps)
        print(
            f"| {n} | {total:.2f} | {total / inputs * 1e6:.0f} | {_median(runs, lambda r: r['peak_rss']) / 2**20:.0f} | {growth / 2**20:.0f} | "
            f"{_median(runs, lambda r: r['report_bytes']) / 1e6:.1f} ({runs[0]['report_files']}) | {per_step} |"
        )
    print("\nRSS growth per step (MiB, median):")
    for n in sizes:
        print(f"  {n}: " + ", ".join(f"{s} {_median(results[n], lambda r, s=s: r['steps'][s]['growth']) / 2**20:.0f}" for s in steps))
    first, last = sizes[0], sizes[-1]
    per = {n: _median(results[n], lambda r: r["total_s"]) / results[n][0]["inputs"] for n in (first, last)}
    print(f"\ntime per input at {last} / at {first}: {per[last] / per[first]:.2f}x")


if __name__ == "__main__":
    main()
