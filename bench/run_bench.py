"""Benchmark `emer build` as a whole process against the plain script a researcher would write.

Each variant is a whole process (`emer build ...`, or `python -m bench.plain_script`), run several
times in one invocation, interleaved (round 1 runs every variant, then round 2, ...; the order turns
each round) so that a noisy neighbour hits every variant alike. We report medians of wall time, CPU
time (the process and all its descendants: workers, job service, ffmpeg), peak RSS of the whole
process tree (sampled from /proc every 0.1 s), CPU seconds per video second, the stage CPU shares
the build reports, and ratios against the plain script and between worker counts.

Every build starts with an empty clip cache (a first build, like the plain script's run).

Corpora: `bench` (default; bench/bench_corpus.py: 24 clips, 131 s of real video with moving faces,
every file its own encode) or `demo` (the 7 demo clips linked until `--minutes` is reached).

Variants:
- `plain`: bench/plain_script.py, the yardstick (same libraries and models, one clip after another).
- `default`: `emer build` as shipped (2 workers).
- `samework`: the default without the record's own video (`video.mode: none`): the plain script's
  work, which makes no video; the like-for-like speed ratio.
- `workers1`, `workers2`: `--workers 1` / `--workers 2`.
- `old`: the path before issue 11, still selectable by config: DeepFace's opencv detector on every
  frame at 640 px, Whisper on full 30 s windows; 2 workers.
- `old1`: the same with `--workers 1` and Whisper on 2 threads (the old default for one worker).
- `threads2`: `--workers 2` as two threads of one process (Beam's `multi_threading` mode) instead of
  two worker processes: the same output, one Python and Beam runtime fewer.
- `gpu`: `--workers 1` with `transcript.device: cuda` (float16); needs a GPU machine.
- `llm1` / `llm4`: every explanation field from an OpenAI-compatible endpoint (the tests' loopback
  server answering after `--llm-latency` seconds), fresh response cache per run, 1 and 4 in flight.

Usage: python -m bench.run_bench [--runs 3] [--corpus bench|demo] [--copies 1] [--variants plain,default,workers1,old]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import threading
import time
from datetime import date
from pathlib import Path
from typing import Any

import ffmpeg

from bench.bench_corpus import bench_corpus
from bench.demo_corpus import demo_corpus

HERE = Path(__file__).resolve().parent
OLD_PATH = "faces:\n  detector: opencv\ntranscript:\n  encoder_window: full\n"
VARIANTS: dict[str, dict[str, Any]] = {
    "plain": {"plain": True},
    "default": {"args": []},
    "samework": {"args": [], "config": "video:\n  mode: none\n"},
    "workers1": {"args": ["--workers", "1"]},
    "workers2": {"args": ["--workers", "2"]},
    "old": {"args": ["--workers", "2"], "config": OLD_PATH},
    "old1": {"args": ["--workers", "1"], "config": OLD_PATH + "  cpu_threads: 2\n"},
    "threads2": {"args": ["--workers", "2"], "beam": ["--direct_running_mode=multi_threading"]},
    "gpu": {"args": ["--workers", "1"], "config": "transcript:\n  device: cuda\n"},
    "llm1": {"args": ["--workers", "1"], "llm": 1},
    "llm4": {"args": ["--workers", "1"], "llm": 4},
}


def llm_config(path: Path, base_url: str, concurrency: int, cache: Path) -> list[str]:
    """A build config taking every field from the endpoint (fresh cache: every answer is a request)."""
    shutil.rmtree(cache, ignore_errors=True)
    path.write_text(
        "explanation:\n  default_sources: [llm]\n  llm:\n"
        f"    base_url: {base_url}\n    model: loopback-chat\n    api_key_env: EMER_BENCH_KEY\n"
        f"    concurrency: {concurrency}\n    cache_dir: {cache}\n"
    )
    return ["--config", str(path)]


def demo_links(dest: Path, minutes: float) -> Path:
    """Hard links to (or copies of) the demo clips, repeated until the total is at least `minutes` of video
    (symlinks to clips outside VIDEOS_DIR are not followed by default)."""
    videos = demo_corpus()
    clips = sorted(videos.iterdir())
    seconds_each = sum(float(ffmpeg.probe(str(c))["format"]["duration"]) for c in clips)
    repeats = int(minutes * 60 // seconds_each) + 1
    shutil.rmtree(dest, ignore_errors=True)
    for r in range(repeats):
        folder = dest / f"rep{r:02d}"
        folder.mkdir(parents=True)
        for clip in clips:
            if clip.stat().st_dev == folder.stat().st_dev:
                os.link(clip, folder / clip.name)
            else:
                shutil.copyfile(clip, folder / clip.name)
    return dest


def video_seconds(videos: Path) -> float:
    return sum(float(ffmpeg.probe(str(p))["format"]["duration"]) for p in sorted(videos.rglob("*")) if p.is_file())


def tree_memory(root: int) -> tuple[int, int]:
    """Resident bytes (RSS) and proportional bytes (PSS) of a process and all its descendants, from /proc.
    A sum of RSS counts pages the processes share once per process (a forked child, before it runs
    ffmpeg, shows its parent's whole RSS); a sum of PSS counts each page once."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    rss = pss = 0
    stack = [root]
    while stack:
        pid = stack.pop()
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    name, _, value = line.partition(":")
                    if name in ("Rss", "Pss"):
                        kb = int(value.split()[0]) * 1024
                        rss, pss = (rss + kb, pss) if name == "Rss" else (rss, pss + kb)
        except (OSError, ValueError):
            pass  # the process ended between listing and reading
        stack.extend(children.get(pid, []))
    return rss, pss


def run_once(cmd: list[str], cache: Path, out: Path | None = None) -> dict[str, Any]:
    """One whole process: wall, CPU of it and its descendants, peak RSS of the tree, its output.
    Builds get an empty clip cache (`cache`): every run is a first build, as the plain script's is.
    A build's own CPU figures (`out`/build.json) come along, to hold against the CPU measured here."""
    shutil.rmtree(cache, ignore_errors=True)
    env = {**os.environ, "EMER_CLIP_CACHE": str(cache)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    peak = [0, 0]  # RSS, PSS
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.1):
            peak[:] = map(max, peak, tree_memory(proc.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = proc.communicate()
    done.set()
    sampler.join()
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    shutil.rmtree(cache, ignore_errors=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} failed: {stderr[-2000:]}")
    shares = dict(re.findall(r"(\w+) (\d+)%", stdout.split("stage CPU time", 1)[1].splitlines()[0])) if "stage CPU time" in stdout else {}
    return {
        "wall_s": wall,
        "cpu_s": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
        "sys_s": after.ru_stime - before.ru_stime,
        "peak_rss_mb": peak[0] / 2**20,
        "peak_pss_mb": peak[1] / 2**20,
        "stage_share": {k: int(v) for k, v in shares.items()},
        **build_cpu(out),
    }


def build_cpu(out: Path | None) -> dict[str, Any]:
    """What the build says its CPU went to (build.json): the stages' sum and, since issue 22, the
    process CPU it measured and the part outside every stage."""
    log = out / "build.json" if out is not None else None
    if log is None or not log.is_file():
        return {}
    found = json.loads(log.read_text())
    stages = sum(float(t.get("cpu_s") or 0) for t in (found.get("stage_seconds") or {}).values())
    return {"stage_cpu_s": round(stages, 2), "build_cpu": found.get("cpu") or {}}


def command(name: str, videos: Path, work: Path, run: int, server: Any) -> list[str]:
    spec = VARIANTS[name]
    if spec.get("plain"):
        return [sys.executable, "-m", "bench.plain_script", str(videos), str(work / "plain.jsonl")]
    extra = list(spec["args"])
    if "config" in spec:
        path = work / f"{name}.yaml"
        path.write_text(spec["config"])
        extra += ["--config", str(path)]
    if "llm" in spec:
        extra += llm_config(work / f"{name}.yaml", server.base_url, spec["llm"], work / f"llm-cache-{name}-{run}")
    beam = ["--", *spec["beam"]] if "beam" in spec else []
    return [sys.executable, "-m", "emer_builder.cli.main", "build", str(videos), "--out", str(work / f"ds-{name}"), "--overwrite", "--quiet", *extra, *beam]


def summarise(runs: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    med: dict[str, Any] = {m: statistics.median(r[m] for r in runs) for m in ("wall_s", "cpu_s", "sys_s", "peak_rss_mb", "peak_pss_mb")}
    med["cpu_per_video_s"] = med["cpu_s"] / seconds
    med["video_s_per_wall_s"] = seconds / med["wall_s"]
    med["stage_share"] = sorted(runs, key=lambda r: r["wall_s"])[len(runs) // 2]["stage_share"]
    med["walls"] = [round(r["wall_s"], 1) for r in runs]
    return med


def table(results: dict[str, dict[str, Any]], seconds: float, clips: int, runs: int, load: str) -> str:
    plain = results.get("plain")
    lines = [
        f"### {date.today().isoformat()}: {clips} clips, {seconds:.0f} s of video, medians of {runs} interleaved runs",
        "",
        f"Machine: {os.cpu_count()} cores, {platform.processor() or platform.machine()}, Python {platform.python_version()}; load average before: {load}",
        "",
        "| variant | wall s (runs) | CPU s (sys) | CPU s / video s | peak RSS MB | wall: plain / variant | stage CPU shares |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        shares = ", ".join(f"{k} {v}%" for k, v in r["stage_share"].items())
        speedup = f"{plain['wall_s'] / r['wall_s']:.2f}x" if plain else "-"
        lines.append(
            f"| {name} | {r['wall_s']:.1f} ({', '.join(map(str, r['walls']))}) | {r['cpu_s']:.1f} ({r['sys_s']:.1f}) | {r['cpu_per_video_s']:.3f} | "
            f"{r['peak_rss_mb']:.0f} | {speedup} | {shares} |"
        )
    ratios = []
    for two in ("default", "workers2", "threads2"):
        if "workers1" in results and two in results:
            ratios.append(f"{two} (2 workers) vs workers1: {results['workers1']['wall_s'] / results[two]['wall_s']:.2f}x faster in wall time")
    if "old" in results and "default" in results:
        ratios.append(f"CPU per video second, default vs old path: {results['default']['cpu_s'] / results['old']['cpu_s']:.2f}")
    return "\n".join(lines + ([""] + ratios if ratios else []))


def _records(out: Path) -> dict[str, dict[str, Any]]:
    import pyarrow.parquet as pq

    return {r["key"]: r for f in sorted((out / "data").glob("*.parquet")) for r in pq.read_table(f).to_pylist()}


def quality_notes(work: Path, names: list[str]) -> list[str]:
    """What the faster path changed in the records, against the old path's build of the same corpus."""
    if "old" not in names:
        return []
    old = _records(work / "ds-old")
    notes = []
    for name in (n for n in names if n not in ("old", "plain", "old1") and not n.startswith("llm")):
        new = _records(work / f"ds-{name}")
        same_egemaps = sum(new[k]["acoustics"]["egemaps"] == old[k]["acoustics"]["egemaps"] for k in new)
        same_text = sum(new[k]["transcript"]["text"] == old[k]["transcript"]["text"] for k in new)
        faces_new, faces_old = sum(bool(r["faces"]["crops"]) for r in new.values()), sum(bool(r["faces"]["crops"]) for r in old.values())
        notes.append(
            f"{name} vs old: eGeMAPS identical on {same_egemaps}/{len(new)} clips; transcript text identical on {same_text}/{len(new)}; "
            f"clips with a main face {faces_new} (old {faces_old})"
        )
    return notes


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--corpus", choices=("bench", "demo"), default="bench")
    ap.add_argument("--minutes", type=float, default=5.0, help="demo corpus: repeat the clips up to this length")
    ap.add_argument("--copies", type=int, default=1, help="bench corpus: this many copies, each encoded at its own quality (scaling figures)")
    ap.add_argument("--variants", default="plain,default,workers1,old")
    ap.add_argument("--llm-latency", type=float, default=0.5)
    args = ap.parse_args()
    work = HERE / "out"
    work.mkdir(parents=True, exist_ok=True)
    videos = bench_corpus(copies=args.copies) if args.corpus == "bench" else demo_links(work / "corpus", args.minutes)
    seconds = video_seconds(videos)
    clips = sum(1 for p in videos.rglob("*") if p.is_file() or p.is_symlink())
    names = args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    runs: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    from tests.openai_loopback import OpenAILoopback

    os.environ["EMER_BENCH_KEY"] = "bench-key"
    with OpenAILoopback("bench-key", latency_s=args.llm_latency) as server:
        for i in range(args.runs):
            order = names[i % len(names):] + names[: i % len(names)]
            for name in order:
                result = run_once(command(name, videos, work, i, server), work / "clip-cache", None if VARIANTS[name].get("plain") else work / f"ds-{name}")
                runs[name].append(result)
                stages = f", stages' CPU {result['stage_cpu_s']:.1f} s {json.dumps(result['build_cpu'])}" if "stage_cpu_s" in result else ""
                print(f"round {i + 1} {name}: wall {result['wall_s']:.1f} s, CPU {result['cpu_s']:.1f} s, peak RSS {result['peak_rss_mb']:.0f} MB{stages}", flush=True)
    results = {n: summarise(runs[n], seconds) for n in names}
    for name, r in results.items():
        print(name, json.dumps(r), flush=True)
    text = "\n".join([table(results, seconds, clips, args.runs, load), *quality_notes(work, names)])
    print(text)
    (work / "last-results.md").write_text(text + "\n")
    (work / "last-results.json").write_text(json.dumps({"runs": runs, "video_s": seconds, "clips": clips}, indent=1) + "\n")


if __name__ == "__main__":
    main()
