"""Benchmark `emer build` as a whole process on the demo corpus repeated to >= 5 minutes of video.

Each variant runs `emer build` in a subprocess several times; we report medians of wall time,
CPU time (the process and all its descendants), peak RSS of the whole process tree (sampled from
/proc every 0.1 s), video seconds per wall second, and the stage CPU shares the build reports.
The first variant is the baseline; the others are given as ratios against it.

The `llm1` / `llm4` variants take every explanation field from an OpenAI-compatible endpoint:
the loopback server of the tests, answering each request after `--llm-latency` seconds (a stand-in
for a real model's latency), with a fresh response cache per run, at 1 and 4 requests in flight.

Usage: python -m bench.run_bench [--runs 3] [--minutes 5] [--variants workers1,workers2] [--llm-latency 0.5]
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

import ffmpeg

from bench.demo_corpus import demo_corpus

HERE = Path(__file__).resolve().parent
VARIANTS = {
    "workers1": ["--workers", "1"],
    "workers2": ["--workers", "2"],
    "llm1": ["--workers", "1"],
    "llm4": ["--workers", "1"],
}
LLM_CONCURRENCY = {"llm1": 1, "llm4": 4}


def llm_config(path: Path, base_url: str, concurrency: int, cache: Path) -> list[str]:
    """A build config taking every field from the endpoint (fresh cache: every answer is a request)."""
    shutil.rmtree(cache, ignore_errors=True)
    path.write_text(
        "explanation:\n  default_sources: [llm]\n  llm:\n"
        f"    base_url: {base_url}\n    model: loopback-chat\n    api_key_env: EMER_BENCH_KEY\n"
        f"    concurrency: {concurrency}\n    cache_dir: {cache}\n"
    )
    return ["--config", str(path)]


def make_corpus(dest: Path, minutes: float) -> tuple[Path, float]:
    """Links to the demo clips, repeated until the total is at least `minutes` of video."""
    videos = demo_corpus()
    clips = sorted(videos.iterdir())
    seconds_each = sum(float(ffmpeg.probe(str(c))["format"]["duration"]) for c in clips)
    repeats = int(minutes * 60 // seconds_each) + 1
    shutil.rmtree(dest, ignore_errors=True)
    for r in range(repeats):
        folder = dest / f"rep{r:02d}"
        folder.mkdir(parents=True)
        for clip in clips:
            (folder / clip.name).symlink_to(clip)
    return dest, repeats * seconds_each


def _tree_rss(root: int) -> int:
    """Resident bytes of a process and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            ppid, pages = int(fields[1]), int(fields[21])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
        rss[int(entry)] = pages * os.sysconf("SC_PAGE_SIZE")
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack.extend(children.get(pid, []))
    return total


def run_once(videos: Path, out: Path, extra: list[str]) -> dict[str, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    cmd = [sys.executable, "-m", "emer_builder.cli.main", "build", str(videos), "--out", str(out), "--overwrite", "--quiet", *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.wait(0.1):
            peak = max(peak, _tree_rss(proc.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = proc.communicate()
    done.set()
    sampler.join()
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"build failed: {stderr[-2000:]}")
    shares = dict(re.findall(r"(\w+) (\d+)%", stdout.split("stage CPU time", 1)[1])) if "stage CPU time" in stdout else {}
    return {
        "wall_s": wall,
        "cpu_s": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
        "peak_rss_mb": peak / 2**20,
        "stage_share": {k: int(v) for k, v in shares.items()},
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--variants", default="workers1,workers2")
    ap.add_argument("--llm-latency", type=float, default=0.5)
    args = ap.parse_args()
    work = HERE / "out"
    videos, video_seconds = make_corpus(work / "corpus", args.minutes)
    clips = sum(1 for _ in videos.rglob("*.*"))
    results = {}
    from tests.openai_loopback import OpenAILoopback

    os.environ["EMER_BENCH_KEY"] = "bench-key"
    with OpenAILoopback("bench-key", latency_s=args.llm_latency) as server:
        for name in args.variants.split(","):
            runs = []
            for i in range(args.runs):
                extra = list(VARIANTS[name])
                if name in LLM_CONCURRENCY:
                    extra += llm_config(work / f"{name}.yaml", server.base_url, LLM_CONCURRENCY[name], work / f"llm-cache-{name}-{i}")
                runs.append(run_once(videos, work / f"ds-{name}", extra))
            results[name] = runs
    for name, runs in list(results.items()):
        med = {m: statistics.median(r[m] for r in runs) for m in ("wall_s", "cpu_s", "peak_rss_mb")}
        med["video_s_per_wall_s"] = video_seconds / med["wall_s"]
        med["stage_share"] = runs[len(runs) // 2]["stage_share"]
        med["walls"] = [round(r["wall_s"], 1) for r in runs]
        results[name] = med
        print(name, json.dumps(med), flush=True)
    if any(n in LLM_CONCURRENCY for n in results):
        print(f"llm requests answered by the loopback server: {len(server.chat_requests())} at {args.llm_latency} s each")
    base = results[args.variants.split(",")[0]]
    lines = [
        f"### {date.today().isoformat()}: {clips} clips, {video_seconds:.0f} s of video, median of {args.runs} runs",
        "",
        f"Machine: {platform.node() or 'unknown'}, {os.cpu_count()} cores, {platform.processor() or platform.machine()}, Python {platform.python_version()}",
        "",
        "| variant | wall s (runs) | CPU s | peak RSS MB | video s / wall s | wall vs baseline | stage CPU shares |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        shares = ", ".join(f"{k} {v}%" for k, v in r["stage_share"].items())
        lines.append(
            f"| {name} | {r['wall_s']:.1f} ({', '.join(map(str, r['walls']))}) | {r['cpu_s']:.1f} | {r['peak_rss_mb']:.0f} | "
            f"{r['video_s_per_wall_s']:.2f} | {r['wall_s'] / base['wall_s']:.2f}x | {shares} |"
        )
    print("\n".join(lines))
    (work / "last-results.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
