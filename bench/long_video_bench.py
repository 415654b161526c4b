"""Peak memory against input length for segmented builds: the same 8 utterances cut from a
1-minute and from a 1-hour video (the demo episode repeated), whole-process peak RSS (driver and
workers), cache off. Utterances are decoded by seeking, so the figure should not depend on length.

Usage: python -m bench.long_video_bench [--runs 3]
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
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
