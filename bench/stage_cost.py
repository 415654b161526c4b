"""Fixed CPU per tiny clip, by stage (issue 22): what each core stage costs a 1.5 s, 128x96 clip.

The stages run in this one thread, without Beam, over `--clips` tiny distinct clips (bench.cache_bench's
`tiny_clips`) after one warm-up clip. A stage's CPU is `core.cpu.thread_cpu()` around its `process`:
this thread's own CPU, plus the children it reaped (ffmpeg, ffprobe) and the library threads that
worked for its calls (CTranslate2's), so it is CPU time, not wall time, and holds while other
processes load the machine. The figure is the median over the clips.

With `--light`, the config of `cache_bench --light` (Whisper tiny.en, no record video).

Usage: python -m bench.stage_cost [--clips 20] [--work /tmp/emer-stage-cost] [--light]
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
from pathlib import Path

import yaml
from emer_builder.core.config import BuildConfig, config_from_dict
from emer_builder.core.cpu import thread_cpu
from emer_builder.pipelines.stages import build_stages
from emer_builder.transforms.clip import Clip, Stage

from bench.cache_bench import LIGHT, tiny_clips


def run_clip(stages: list[Stage], path: Path) -> dict[str, float]:
    """CPU seconds of each stage on one clip, in run order."""
    clip = Clip(key=path.stem, path=str(path), source_path=path.name)
    spent = {}
    for stage in stages:
        start = thread_cpu()
        stage.process(clip)
        spent[stage.name] = thread_cpu() - start
    return spent


def stage_costs(clips: list[Path], config: BuildConfig | None = None) -> dict[str, list[float]]:
    """Per stage, its CPU seconds on each clip after the first (the warm-up: first calls, lazy imports)."""
    stages = build_stages(config or BuildConfig())
    for stage in stages:
        stage.setup()
    run_clip(stages, clips[0])
    seen: dict[str, list[float]] = {stage.name: [] for stage in stages}
    for path in clips[1:]:
        for name, seconds in run_clip(stages, path).items():
            seen[name].append(seconds)
    return seen


def table(seen: dict[str, list[float]]) -> str:
    """The markdown table: median CPU ms per clip of each stage, and their sum."""
    rows = ["| stage | CPU ms per clip (median) |", "|---|---|"]
    medians = {name: statistics.median(values) * 1000 for name, values in seen.items()}
    rows += [f"| {name} | {ms:.0f} |" for name, ms in medians.items()]
    totals = [sum(values) * 1000 for values in zip(*seen.values(), strict=True)]
    rows.append(f"| all stages (median of per-clip sums) | {statistics.median(totals):.0f} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clips", type=int, default=20, help="measured clips (one more is made for the warm-up)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/emer-stage-cost"), help="where the tiny clips are kept between runs")
    parser.add_argument("--light", action="store_true", help="Whisper tiny.en and no record video, as `cache_bench --light`")
    args = parser.parse_args()
    clips = sorted(tiny_clips(args.work / f"tiny{args.clips + 1}", args.clips + 1).glob("*.mp4"))
    seen = stage_costs(clips, config_from_dict(yaml.safe_load(LIGHT)) if args.light else None)
    print(f"`{shlex.join(['python', '-m', 'bench.stage_cost', *sys.argv[1:]])}` ({args.clips} clips after a warm-up, one thread, no Beam)\n")
    print(table(seen))


if __name__ == "__main__":
    main()
