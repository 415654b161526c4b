"""Peak memory against input length.

Segmented builds (default): the same 8 utterances cut from a 1-minute and from a 1-hour video (the
demo episode repeated), whole-process peak RSS (driver and workers), cache off. Utterances are decoded
by seeking, so the figure should not depend on length.

One long file, not segmented (`--whole 5,20`, issue 22): the demo episode (speech and faces) scaled to
1280x720 and repeated to each length in minutes, built as one record with the default config (cache
off): peak RSS of the process tree, wall and CPU seconds, the lengths interleaved, medians of `--runs`;
`--once 60` adds lengths built once, after the others (an hour takes 15-25 minutes on 2 cores).

Usage: python -m bench.long_video_bench [--runs 3]
       python -m bench.long_video_bench --whole 5,20 [--once 60] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import tempfile
from datetime import date
from pathlib import Path

from bench.cache_bench import run_once
from bench.demo_corpus import demo_episode

CUES = 8


def _inputs(work: Path) -> dict[str, Path]:
    episode = demo_episode()
    cues = (episode / "episode.srt").read_text().strip().split("\n\n")[:CUES]
    srt = "\n\n".join(cues) + "\n"
    made = {}
    for name, seconds in (("minute", 60), ("hour", 3600)):
        folder = work / name
        folder.mkdir()
        repeats = -(-seconds // 200) + 1
        (work / f"{name}.txt").write_text("".join(f"file '{episode / 'episode.mp4'}'\n" for _ in range(repeats)))
        subprocess.run(
            ["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "concat", "-safe", "0", "-i", str(work / f"{name}.txt"), "-t", str(seconds), "-c", "copy", str(folder / "talk.mp4")],
            check=True,
        )
        (folder / "talk.srt").write_text(srt)
        made[name] = folder
    return made


def _episode_720p(work: Path) -> Path:
    """The demo episode (3.5 min, speech and faces) at 1280x720, H.264 + AAC: what a downloaded episode looks like."""
    dest = work / "episode720.mp4"
    args = ["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(demo_episode() / "episode.mp4"), "-vf", "scale=1280:720"]
    subprocess.run([*args, "-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-c:a", "aac", "-b:a", "128k", str(dest)], check=True)
    return dest


def _long_file(episode: Path, work: Path, minutes: float) -> Path:
    """A folder holding one file of `minutes`: the episode repeated (stream copy) and cut there."""
    folder = work / f"whole-{minutes:g}"
    folder.mkdir()
    seconds = minutes * 60
    listing = work / f"whole-{minutes:g}.txt"
    listing.write_text("".join(f"file '{episode}'\n" for _ in range(int(seconds // 200) + 2)))
    args = ["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "concat", "-safe", "0", "-i", str(listing), "-t", f"{seconds:g}", "-c", "copy", str(folder / "talk.mp4")]
    subprocess.run(args, check=True)
    return folder


def whole(lengths: list[float], once: list[float], runs: int) -> None:
    """One long file per length, each built as one record (default config, cache off)."""
    with tempfile.TemporaryDirectory(prefix="emer-long-bench-") as tmp:
        work = Path(tmp)
        episode = _episode_720p(work)
        inputs = {m: _long_file(episode, work, m) for m in lengths + once}
        config = work / "build.yaml"
        config.write_text("cache: {enabled: false}\n")
        got: dict[float, list[dict[str, float]]] = {m: [] for m in inputs}
        schedule = [(r, m) for r in range(runs) for m in lengths] + [(0, m) for m in once]  # interleaved: the lengths see the same machine
        for r, m in schedule:
            one = run_once(inputs[m], work / f"out-{m:g}-{r}", ["--config", str(config)])
            got[m].append(one)
            print(f"run {r} {m:g} min: {one['summary']}; peak {one['peak_rss_mb']:.0f} MB, {one['cpu_s']:.0f} CPU s", flush=True)
        print(f"\n## One long file, not segmented ({date.today()}, {platform.node()}, {os.cpu_count()} cores, medians)\n")
        print("| length | runs | wall s (runs) | CPU s | peak RSS MB (runs) |")
        print("|---|---|---|---|---|")
        for m, rows in got.items():
            walls, peaks = [g["wall_s"] for g in rows], [g["peak_rss_mb"] for g in rows]
            cpu = statistics.median(g["cpu_s"] for g in rows)
            print(f"| {m:g} min | {len(rows)} | {statistics.median(walls):.0f} ({', '.join(f'{w:.0f}' for w in walls)}) | {cpu:.0f} | {statistics.median(peaks):.0f} ({', '.join(f'{p:.0f}' for p in peaks)}) |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--whole", help="one long file, not segmented: lengths in minutes, e.g. 5,20")
    parser.add_argument("--once", default="", help="with --whole: lengths built once, after the others, e.g. 60")
    args = parser.parse_args()
    if args.whole:
        whole([float(m) for m in args.whole.split(",")], [float(m) for m in args.once.split(",") if m], args.runs)
        return
    with tempfile.TemporaryDirectory(prefix="emer-long-bench-") as tmp:
        work = Path(tmp)
        inputs = _inputs(work)
        config = work / "build.yaml"
        config.write_text("cache: {enabled: false}\nsegment: {mode: subtitles}\n")
        peaks: dict[str, list[float]] = {"minute": [], "hour": []}
        walls: dict[str, list[float]] = {"minute": [], "hour": []}
        for r in range(args.runs):
            for name, folder in inputs.items():  # interleaved: both see the same machine state
                got = run_once(folder, work / f"out-{name}-{r}", ["--config", str(config)])
                peaks[name].append(got["peak_rss_mb"])
                walls[name].append(got["wall_s"])
                print(f"run {r} {name}: {got['summary']}; peak {got['peak_rss_mb']:.0f} MB", flush=True)
        print(f"\n## Memory against input length ({date.today()}, {platform.node()}, {os.cpu_count()} cores, median of {args.runs} runs)\n")
        print("| input | length | utterances | wall s | peak RSS MB |")
        print("|---|---|---|---|---|")
        for name, length in (("minute", "1 min"), ("hour", "60 min")):
            print(f"| talk.mp4 | {length} | {CUES} | {statistics.median(walls[name]):.1f} | {statistics.median(peaks[name]):.0f} |")
        print(f"\npeak RSS 1 hour / 1 minute: {statistics.median(peaks['hour']) / statistics.median(peaks['minute']):.2f}")


if __name__ == "__main__":
    main()
