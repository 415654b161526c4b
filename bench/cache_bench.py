"""Corpus-scale figures of `emer build`, whole process, in one invocation: the per-clip cache's
no-op, incremental and resume rebuilds against a full build, and peak RSS as the corpus grows.

Per run (a fresh cache and OUT each time), on 22 clips of the bench corpus (`--copies N`: N re-muxed
copies of them, every copy other bytes):
- full:        20 (x N) clips, nothing cached
- no-op:       the same command again (nothing changed)
- incremental: 2 (x N) clips more (+10 %)
- resume:      a fresh cache; the full build killed (SIGKILL, whole process group) once half the
               clips are cached, then the same command again: the rerun's wall time
Memory: the demo corpus (7 clips) against 10 copies of it (70 clips, each re-muxed so no two share
bytes), cache off, peak RSS of the whole process tree (driver, workers), medians of `--runs`
interleaved builds. `--tiny 1000,10000`: instead, that many tiny distinct clips (1.5 s, 128x96, cut
from the demo corpus by one ffmpeg encode with per-frame noise, so no two share bytes), with wall and
CPU seconds (the build and its children) per clip: what a corpus of many short utterances costs.

Usage: python -m bench.cache_bench [--runs 3] [--skip-memory | --skip-cache] [--copies 5] [--tiny N,M [--light]]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

from bench.bench_corpus import bench_corpus
from bench.demo_corpus import demo_corpus
from bench.run_bench import tree_memory

EMER = str(Path(sys.executable).parent / "emer")


def run_once(videos: Path, out: Path, extra: list[str]) -> dict[str, float]:
    """One `emer build` as a whole process (no --overwrite: a rebuild of OUT is what is measured)."""
    started, before = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.Popen([EMER, "build", str(videos), "--out", str(out), "--quiet", *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = [0, 0]  # RSS, PSS
    while proc.poll() is None:
        peak[:] = map(max, peak, tree_memory(proc.pid))
        time.sleep(0.1)
    stdout, stderr = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"build failed: {stderr[-2000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the build, and the children it waited for (ffmpeg)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return {"wall_s": time.perf_counter() - started, "cpu_s": cpu, "peak_rss_mb": peak[0] / 2**20, "peak_pss_mb": peak[1] / 2**20, "summary": stdout.splitlines()[0]}


def _config(path: Path, cache: Path | None) -> Path:
    path.write_text(f"cache: {{dir: {cache}}}\n" if cache else "cache: {enabled: false}\n")
    return path


def _subset(src: Path, dest: Path, names: list[str]) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for name in names:
        if not (dest / name).exists():
            os.link(src / name, dest / name) if src.stat().st_dev == dest.stat().st_dev else shutil.copy2(src / name, dest / name)
    return dest


def _killed_at_half(videos: Path, out: Path, config: Path, cache: Path, clips: int) -> None:
    proc = subprocess.Popen([EMER, "build", str(videos), "--out", str(out), "--config", str(config), "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    stages = 5  # decode, transcript, faces, acoustics, video: the entries of one finished clip
    while len(list((cache / "entries").rglob("*.tar"))) < stages * clips // 2:
        if proc.poll() is not None:
            raise RuntimeError("the build ended before it could be killed")
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def cache_figures(runs: int, work: Path, copies: int = 1) -> dict[str, list[float]]:
    """`copies` > 1: the bench corpus that many times, each copy re-muxed (other bytes, so other cache
    entries): 22 x copies clips, of which 20 x copies are built first and 2 x copies added (+10 %)."""
    source = bench_corpus()
    base = sorted(p.name for p in source.iterdir() if p.is_file())[:22]
    corpus = _subset(source, work / "base", base)
    if copies > 1:
        corpus = _copies(corpus, work / "corpus", copies)
    names = sorted(p.name for p in corpus.iterdir() if p.is_file())
    late = {Path(n).stem for n in base[-2:]}  # the 2 clips of every 22 that the incremental build adds
    first = [n for n in names if Path(n).stem.rsplit("_copy", 1)[0] not in late]
    walls: dict[str, list[float]] = {"full": [], "noop": [], "incremental": [], "resume": []}
    for r in range(runs):
        run = work / f"run{r}"
        cache = run / "cache"
        videos = _subset(corpus, run / "videos", first)
        config = _config(run / "build.yaml", cache)
        out = run / "out"
        walls["full"].append(run_once(videos, out, ["--config", str(config)])["wall_s"])
        walls["noop"].append(run_once(videos, out, ["--config", str(config)])["wall_s"])
        _subset(corpus, videos, names)
        walls["incremental"].append(run_once(videos, out, ["--config", str(config)])["wall_s"])
        cache2 = run / "cache2"
        config2 = _config(run / "build2.yaml", cache2)
        resumed = run / "resumed"
        _killed_at_half(videos, resumed, config2, cache2, len(names))
        walls["resume"].append(run_once(videos, resumed, ["--config", str(config2)])["wall_s"])
        print(f"run {r}: " + ", ".join(f"{k} {v[-1]:.1f} s" for k, v in walls.items()), flush=True)
    return walls


def _copies(src: Path, dest: Path, times: int) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for i in range(times):
        for video in sorted(src.iterdir()):
            target = dest / f"{video.stem}_copy{i:02d}{video.suffix}"
            if not target.exists():  # a re-mux with its own title tag: same media, other bytes
                subprocess.run(["ffmpeg", "-v", "error", "-i", str(video), "-map", "0", "-c", "copy", "-metadata", f"title=copy {i}", str(target)], check=True)
    return dest


def tiny_clips(dest: Path, count: int) -> Path:
    """`count` distinct 1.5 s clips at 128x96 (H.264 + AAC), cut from the demo corpus played in a loop:
    one ffmpeg encode with per-frame noise (no two clips share bytes) and a segment muxer."""
    if dest.is_dir() and len(list(dest.glob("*.mp4"))) == count:
        return dest
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    demo = sorted(p for p in demo_corpus().iterdir() if p.is_file())
    inputs = [a for v in demo for a in ("-i", str(v))]
    parts = "".join(f"[{i}:v]scale=128:96,setsar=1,fps=15,format=yuv420p[v{i}];[{i}:a]aresample=16000,aformat=channel_layouts=mono[a{i}];" for i in range(len(demo)))
    graph = parts + "".join(f"[v{i}][a{i}]" for i in range(len(demo))) + f"concat=n={len(demo)}:v=1:a=1[cv][ca];[cv]loop=-1:32767:0,noise=alls=12:allf=t[v];[ca]aloop=-1:2e9[a]"
    subprocess.run(
        ["ffmpeg", "-v", "error", *inputs, "-filter_complex", graph, "-map", "[v]", "-map", "[a]", "-t", f"{count * 1.5}",
         "-c:v", "libx264", "-preset", "veryfast", "-force_key_frames", "expr:gte(t,n_forced*1.5)", "-c:a", "aac", "-b:a", "32k",
         "-f", "segment", "-segment_time", "1.5", "-reset_timestamps", "1", str(dest / "tiny_%06d.mp4")],
        check=True,
    )
    return dest


# --light: the two largest fixed costs per clip turned down (bench/RESULTS.md, "fixed CPU per tiny clip"),
# so 10,000 tiny clips build in about half an hour on 2 cores; what the graph holds per clip is the same
LIGHT = "transcript: {model: tiny.en}\nvideo: {mode: none}\n"


def memory_figures(work: Path, runs: int = 3, tiny: tuple[int, int] | None = None, light: bool = False) -> dict[str, dict[str, float]]:
    """Peak RSS of the demo corpus against ten copies of it (or of `tiny` clips, few against many):
    medians of `runs` interleaved builds (one sample of a peak is noisy: two long clips decoding at
    once show as a spike)."""
    config = _config(work / "nocache.yaml", None)
    if light:
        config.write_text(config.read_text() + LIGHT)
    if tiny:
        many = tiny_clips(work / f"tiny{tiny[1]}", tiny[1])
        corpora = {"x1": _subset(many, work / f"tiny{tiny[0]}", sorted(p.name for p in many.iterdir())[: tiny[0]]), "x10": many}
    else:
        demo = demo_corpus()
        corpora = {"x1": _copies(demo, work / "x1", 1), "x10": _copies(demo, work / "x10", 10)}
    seen: dict[str, list[dict[str, float]]] = {"x1": [], "x10": []}
    for _ in range(runs):
        for name, videos in corpora.items():
            shutil.rmtree(work / f"out-{name}", ignore_errors=True)
            seen[name].append(run_once(videos, work / f"out-{name}", ["--config", str(config), "--overwrite"]))
            print(f"{name}: {seen[name][-1]}", flush=True)
    return {
        name: {
            "clips": len(list(corpora[name].iterdir())),
            "cpu_s": statistics.median(x["cpu_s"] for x in got),
            "wall_s": statistics.median(x["wall_s"] for x in got),
            "peak_rss_mb": statistics.median(x["peak_rss_mb"] for x in got),
            "peak_pss_mb": statistics.median(x["peak_pss_mb"] for x in got),
            "peaks": [x["peak_rss_mb"] for x in got],
            "pss_peaks": [x["peak_pss_mb"] for x in got],
        }
        for name, got in seen.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--copies", type=int, default=1, help="the bench corpus this many times (re-muxed copies)")
    parser.add_argument("--skip-cache", action="store_true", help="the memory figures only")
    parser.add_argument("--tiny", help="N,M: the memory figures of N against M tiny distinct clips (implies --skip-cache)")
    parser.add_argument("--light", action="store_true", help="with --tiny: Whisper tiny.en and no record video (the fixed cost per clip down, what the graph holds the same)")
    parser.add_argument("--work", type=Path, help="keep the corpora here (tiny clips take a while to make), not in a temporary folder")
    args = parser.parse_args()
    tiny = tuple(int(n) for n in args.tiny.split(",")) if args.tiny else None
    with tempfile.TemporaryDirectory(prefix="emer-cache-bench-") as tmp:
        work = args.work or Path(tmp)
        if args.skip_cache or tiny:
            _print_memory(memory_figures(work, args.runs, tiny, args.light))  # type: ignore[arg-type]
            return
        walls = cache_figures(args.runs, work, args.copies)
        med = {k: statistics.median(v) for k, v in walls.items()}
        print(f"\n## Cache and resume ({date.today()}, {platform.node()}, {os.cpu_count()} cores, {22 * args.copies} clips, median of {args.runs} runs)\n")
        print("| build | wall s (median) | runs | share of the full build |")
        print("|---|---|---|---|")
        for k in ("full", "noop", "incremental", "resume"):
            print(f"| {k} | {med[k]:.2f} | {', '.join(f'{v:.2f}' for v in walls[k])} | {100 * med[k] / med['full']:.1f} % |")
        if not args.skip_memory:
            _print_memory(memory_figures(work, args.runs))


def _print_memory(mem: dict[str, dict[str, float]]) -> None:
    print("\n| corpus | clips | wall s (median) | CPU s per clip | peak RSS MB (median) | RSS peaks | peak PSS MB (median) | PSS peaks |")
    print("|---|---|---|---|---|---|---|---|")
    for k in ("x1", "x10"):
        m = mem[k]
        print(
            f"| {k} | {m['clips']} | {m['wall_s']:.1f} | {m['cpu_s'] / m['clips']:.3f} | {m['peak_rss_mb']:.0f} | {', '.join(f'{p:.0f}' for p in m['peaks'])} "
            f"| {m['peak_pss_mb']:.0f} | {', '.join(f'{p:.0f}' for p in m['pss_peaks'])} |"
        )
    print(f"\npeak RSS x10 / x1: {mem['x10']['peak_rss_mb'] / mem['x1']['peak_rss_mb']:.2f}; peak PSS x10 / x1: {mem['x10']['peak_pss_mb'] / mem['x1']['peak_pss_mb']:.2f}")


if __name__ == "__main__":
    main()
