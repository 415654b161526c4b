"""What the record's own video costs (issue 21): media shard bytes and build time per video-second for each
`video.mode`, on the demo corpus (7 pre-cut clips, 40 s) and the demo episode cut by its subtitles
(`make demo`'s long input), each build a whole `emer build` process with the clip cache off.

Variants: none (the baseline), clip at the default (max_side 480, crf 28), clip at 640 px and crf 23
(larger, sharper), frames (8 at 224 px). Runs are interleaved (variant after variant, then again);
figures are medians. Video-seconds are the records' windows (`video.end_s - video.start_s`).

`--stage-only`: the video stage alone, in this process, on the episode's first 12 cues and the demo
clips: ffmpeg's CPU seconds (children's rusage, so another process on the machine does not count)
per video-second, for each variant.

Usage: python -m bench.video_bench [--runs 3] [--corpus demo,episode] [--variants "clip (480 px, crf 28)"] [--stage-only]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import tempfile
from datetime import date
from pathlib import Path

import pyarrow.parquet as pq

from bench.cache_bench import run_once
from bench.demo_corpus import demo_corpus, demo_episode

VARIANTS: dict[str, str] = {
    "none": "video: {mode: none}",
    "clip (480 px, crf 28)": "video: {mode: clip}",
    "clip (640 px, crf 23)": "video: {mode: clip, max_side: 640, crf: 23}",
    "frames (8 x 224 px)": "video: {mode: frames}",
}


def corpora(names: list[str]) -> dict[str, tuple[Path, list[str]]]:
    """Corpus name -> (input folder, extra build arguments)."""
    found = {}
    if "demo" in names:
        found["demo corpus (7 clips)"] = (demo_corpus(), [])
    if "episode" in names:
        found["demo episode (subtitles)"] = (demo_episode(), ["--segment", "subtitles"])
    return found


def measure(out: Path) -> dict[str, float]:
    """Media shard bytes, records and video-seconds of a finished build, and the CPU seconds (ffmpeg
    children included) its stages and the video stage alone report in build.json."""
    seconds, records = 0.0, 0
    for path in sorted((out / "data").glob("*.parquet")):
        for row in pq.read_table(path, columns=["video"]).to_pylist():
            records += 1
            seconds += row["video"]["end_s"] - row["video"]["start_s"]
    media = sum(p.stat().st_size for p in (out / "media").glob("*.tar"))
    stages = json.loads((out / "build.json").read_text())["stage_seconds"]
    cpu = sum(s["cpu_s"] for s in stages.values())
    return {"media_bytes": media, "records": records, "video_s": seconds, "stages_cpu_s": cpu, "video_cpu_s": stages.get("video", {}).get("cpu_s", 0.0)}


def stage_only() -> None:
    import resource

    import yaml
    from emer_builder.core.config import config_from_dict
    from emer_builder.transforms.clip import Clip
    from emer_builder.transforms.stages.decode import DecodeStage
    from emer_builder.transforms.stages.video import VideoStage

    episode = demo_episode()
    cues = [c.split("\n") for c in (episode / "episode.srt").read_text().strip().split("\n\n")][:12]
    windows = []
    for cue in cues:
        a, b = (sum(float(x) * m for x, m in zip(t.strip().replace(",", ".").split(":"), (3600, 60, 1), strict=True)) for t in cue[1].split("-->"))
        windows.append(("episode", str(episode / "episode.mp4"), a, b))
    windows += [("demo", str(p), None, None) for p in sorted(demo_corpus().iterdir()) if p.is_file()]
    decoded = {}
    for _, path, a, b in windows:
        clip = Clip("k", path, path, a, b)
        DecodeStage().process(clip)
        decoded[(path, a)] = clip.fields["media"]
    print("| input | video.mode | ffmpeg CPU s / video s | KB / video s |\n|---|---|---|---|")
    for corpus in ("demo", "episode"):
        for name, text in VARIANTS.items():
            stage = VideoStage(config_from_dict(yaml.safe_load(text)).video)
            cpu = seconds = size = 0.0
            for c, path, a, b in windows:
                if c != corpus:
                    continue
                clip = Clip("k", path, path, a, b, fields={"media": decoded[(path, a)]})
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                stage.process(clip)
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                cpu += after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
                seconds += clip.fields["video"]["end_s"] - clip.fields["video"]["start_s"]
                size += sum(len(v) for k, v in clip.media_files.items() if k != "flac")
            print(f"| {corpus} ({seconds:.1f} s) | {name} | {cpu / seconds:.3f} | {size / 1024 / seconds:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--corpus", default="demo,episode")
    parser.add_argument("--stage-only", action="store_true")
    parser.add_argument("--variants", default=";".join(VARIANTS), help="variant names separated by ';' (none is always run: the baseline)")
    args = parser.parse_args()
    if args.stage_only:
        stage_only()
        return
    inputs = corpora(args.corpus.split(","))
    chosen = {"none", *args.variants.split(";")}
    variants = {name: text for name, text in VARIANTS.items() if name in chosen}
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="emer-video-bench-") as tmp:
        work = Path(tmp)
        configs = {}
        for i, (name, text) in enumerate(variants.items()):
            configs[name] = work / f"variant{i}.yaml"
            configs[name].write_text(f"cache: {{enabled: false}}\n{text}\n")
        for run in range(args.runs):
            for corpus, (videos, extra) in inputs.items():
                for name, config in configs.items():
                    out = work / f"out-{run}-{config.stem}-{len(extra)}"
                    figures = run_once(videos, out, ["--config", str(config), *extra])
                    figures.update(measure(out))
                    subprocess.run(["rm", "-rf", str(out)], check=True)
                    results.setdefault((corpus, name), []).append(figures)
                    print(f"run {run + 1} {corpus} {name}: {figures['wall_s']:.1f} s, {figures['media_bytes'] / 1e6:.2f} MB", flush=True)
    print(f"\n{date.today()}, {platform.node()} ({platform.machine()}, {_cpus()} CPUs), {args.runs} runs, medians\n")
    print(
        "| input | video.mode | records | video s | wall s (runs) | + wall s / video s | video stage CPU s / video s (share of stages' CPU) | media MB | + KB / video s |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for corpus in inputs:
        base = results[(corpus, "none")]
        base_wall = statistics.median(r["wall_s"] for r in base)
        base_bytes = statistics.median(r["media_bytes"] for r in base)
        for name in variants:
            runs = results[(corpus, name)]
            wall = statistics.median(r["wall_s"] for r in runs)
            media = statistics.median(r["media_bytes"] for r in runs)
            secs = runs[0]["video_s"]
            walls = ", ".join(f"{r['wall_s']:.1f}" for r in runs)
            video_cpu = statistics.median(r["video_cpu_s"] for r in runs)
            share = statistics.median(r["video_cpu_s"] / r["stages_cpu_s"] for r in runs)
            print(
                f"| {corpus} | {name} | {runs[0]['records']} | {secs:.1f} | {wall:.1f} ({walls}) | {(wall - base_wall) / secs:+.3f} "
                f"| {video_cpu / secs:.3f} ({share:.0%}) | {media / 1e6:.2f} | {(media - base_bytes) / 1024 / secs:+.1f} |"
            )


def _cpus() -> int:
    import os

    return os.cpu_count() or 0


if __name__ == "__main__":
    main()
