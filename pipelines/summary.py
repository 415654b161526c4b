"""What a build tells its user: the summary `emer build` prints, made from the manifest and the run's statistics."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from emer_builder.transforms.keys import OUTSIDE_INPUT


@dataclass
class BuildSummary:
    out: str
    inputs: int
    records_per_split: dict[str, int]
    failures_by_stage: dict[str, int]
    skipped_files: list[str]
    clips_with_faces: int
    languages: dict[str, int]
    audio_hours: float
    wall_s: float
    stage_seconds: dict[str, dict[str, float]] = field(default_factory=dict)
    process_cpu: dict[str, float] = field(default_factory=dict)  # the run's CPU: process_s = stages_s + outside_stages_s (build.json "cpu")
    model_loads: dict[str, int] = field(default_factory=dict)  # stage -> setups over all workers
    explanation_sources: dict[str, dict[str, int]] = field(default_factory=dict)  # field -> source -> records
    annotations: dict[str, Any] = field(default_factory=dict)
    emotion_wheel: str = ""
    llm: dict[str, int] = field(default_factory=dict)  # requests, cache hits and misses, fields left null
    up_to_date: bool = False  # nothing changed since the build in OUT: it was kept as it is
    finished_commit: bool = False  # this build first finished the commit an interrupted (killed) build left in OUT
    truncated: list[dict[str, Any]] = field(default_factory=list)  # records flagged media.truncated (manifest.json "truncated")
    segmentation: dict[str, Any] = field(default_factory=dict)  # method, utterances, videos, failures, rows_without_video
    stage_runs: dict[str, int] = field(default_factory=dict)  # stage -> clips it computed (the rest came from the cache)
    cache_restored: dict[str, int] = field(default_factory=dict)  # last stage restored from the cache -> clips
    manifest: dict[str, Any] = field(repr=False, default_factory=dict)

    @property
    def records(self) -> int:
        return sum(self.records_per_split.values())

    @property
    def failures(self) -> int:
        return sum(self.failures_by_stage.values())

    def text(self) -> str:
        splits = ", ".join(f"{k} {v}" for k, v in sorted(self.records_per_split.items())) or "none"
        fails = ", ".join(f"{k} {v}" for k, v in sorted(self.failures_by_stage.items())) or "none"
        langs = ", ".join(f"{k} {v}" for k, v in sorted(self.languages.items())) or "none"
        if self.up_to_date and self.finished_commit:
            first = f"finished the commit left by an interrupted build: {self.records} records from {self.inputs} inputs in {self.out} (its inputs have not changed since)"
        elif self.up_to_date:
            first = f"up to date: {self.records} records from {self.inputs} inputs in {self.out} (nothing changed)"
        else:
            first = f"built {self.records} records from {self.inputs} inputs in {self.wall_s:.1f} s -> {self.out}"
            if self.finished_commit:
                first += " (after finishing the commit left by an interrupted build)"
        lines = [
            first,
            f"  splits: {splits}",
            f"  failures: {self.failures} ({fails}); details in failures.parquet",
            f"  faces found in {self.clips_with_faces}/{self.records} clips; languages: {langs}; audio {self.audio_hours * 3600:.1f} s ({self.audio_hours:.4f} h)",
        ]
        return "\n".join(lines + self._run_lines() + self._input_lines())

    def _run_lines(self) -> list[str]:
        """How the run went: truncated records, stage times, model loads, the cache, explanations, the LLM."""
        lines = []
        if self.truncated:
            cut = [f"{t['source_path']} ({_share(t.get('decoded_fraction'))} of {t.get('declared_duration_s') or 0:.2f} s)" for t in self.truncated]
            lines.append(f"  truncated: {len(cut)} records decoded only in part (media.truncated; listed in manifest.json and report.html){first_names(cut)}")
        lines += self._cpu_lines()
        if self.model_loads:
            lines.append("  stage set-ups (model loads): " + ", ".join(f"{k} {v}" for k, v in self.model_loads.items()))
        if self.stage_runs:
            lines.append("  clips run per stage: " + ", ".join(f"{k} {v}" for k, v in self.stage_runs.items()) + f"; restored from the cache up to: {_restored(self.cache_restored)}")
        if self.explanation_sources:
            by_field = [f"{name} " + "/".join(f"{src} {n}" for src, n in counts.items()) for name, counts in self.explanation_sources.items() if name != "subtitle"]
            lines.append("  explanation: " + "; ".join(by_field))
        return lines

    def _cpu_lines(self) -> list[str]:
        """Each stage's share of the stages' CPU (its own thread, the ffmpeg it ran, its model's threads),
        then what the run's process spent in all, the part outside every stage named."""
        cpu_total = sum(t["cpu_s"] for t in self.stage_seconds.values())
        if cpu_total <= 0:
            return []
        shares = ", ".join(f"{k} {100 * t['cpu_s'] / cpu_total:.0f}%" for k, t in self.stage_seconds.items())
        lines = [f"  stage CPU time {cpu_total:.1f} s: {shares}"]
        c = self.process_cpu
        if c.get("process_s") and c["stages_s"] > c["process_s"] + 0.05:  # worker processes that reported nothing (lost statistics)
            lines.append(f"  process CPU time {c['process_s']:.1f} s: less than the stages', some worker processes' CPU was not seen")
        elif c.get("process_s"):
            lines.append(
                f"  process CPU time {c['process_s']:.1f} s = stages {c['stages_s']:.1f} s + outside any stage {c['outside_stages_s']:.1f} s"
                " (model loads, the runner and the driver, library threads no stage accounts for)"
            )
        return lines

    def _input_lines(self) -> list[str]:
        """Where things are and what came in: the emotion wheel, the report, the LLM, annotation tables, segmentation, skipped entries."""
        lines = [f"  emotion wheel: {self.emotion_wheel}"]
        lines.append(f"  report: {self.out.rstrip('/')}/report.html")
        if self.llm:
            c = self.llm
            read = ", ".join(f"{k.removeprefix('read_').replace('_', ' ')} {v}" for k, v in sorted(c.items()) if k.startswith("read_") and v)
            fallbacks = f"; {c['text_fallbacks']} label answers read as text" if c.get("text_fallbacks") else ""
            lines.append(
                f"  llm: {c.get('calls', 0)} requests, {c.get('cache_hits', 0)} answers from the cache, {c.get('failures', 0)} fields left null after retries"
                + (f"; answers read: {read}{fallbacks}" if read or fallbacks else "")
            )
        files = self.annotations.get("files") or []
        if files:
            no_video, no_ann = self.annotations["names_without_video"], self.annotations["videos_without_annotation"]
            lines.append(
                f"  annotations: {len(files)} tables; {len(no_video)} names without a video{first_names(no_video)}; {len(no_ann)} videos without an annotation{first_names(no_ann)}"
            )
        if self.segmentation:
            s = self.segmentation
            lines.append(
                f"  segmented ({s['method']}): {s['utterances']} utterances from {s['videos']} videos; {s['failures']} segment failures; "
                f"{len(s['rows_without_video'])} table rows naming no video{first_names(s['rows_without_video'])}"
            )
        if self.skipped_files:
            shown = ", ".join(self.skipped_files[:5]) + (" ..." if len(self.skipped_files) > 5 else "")
            lines.append(f"  skipped {len(self.skipped_files)} entries (not videos, or folders not followed): {shown}")
        leaving = links_leaving(self.skipped_files)
        if leaving:
            lines.append(f"  not followed: {len(leaving)} symlinks leading outside the input folder{first_names(leaving)}; set follow_external_links: true in the config to include them")
        return lines


def links_leaving(skipped: list[str]) -> list[str]:
    """The names of the skipped entries that are symlinks leading outside the input folder."""
    return [s[: s.index(" (symlink to ")] for s in skipped if OUTSIDE_INPUT in s and " (symlink to " in s]


def _share(fraction: float | None) -> str:
    return "?" if fraction is None else f"{fraction:.0%}"


def _restored(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items()) or "none"


def first_names(names: list[str], shown: int = 3) -> str:
    return f" ({', '.join(names[:shown])}{' ...' if len(names) > shown else ''})" if names else ""



def summarise(
    out: str, inputs: int, skipped: list[str], wall_s: float, manifest: dict[str, Any], stage_seconds: dict[str, dict[str, float]], loads: dict[str, int]
) -> BuildSummary:
    stats = manifest["stats"]
    return BuildSummary(
        out=out,
        inputs=inputs,
        records_per_split=dict(manifest["splits"]),
        failures_by_stage=dict(manifest["failures_by_stage"]),
        skipped_files=skipped,
        clips_with_faces=stats["clips_with_faces"],
        languages=dict(stats["records_per_language"]),
        audio_hours=round(stats["audio_seconds"] / 3600, 6),
        wall_s=wall_s,
        stage_seconds=stage_seconds,
        model_loads=loads,
        explanation_sources=manifest["stats"]["explanation_sources"],
        annotations=manifest["annotations"],
        emotion_wheel=manifest["emotion_wheel"],
        truncated=list(manifest.get("truncated", [])),  # a build made before the list has none
        manifest=manifest,
    )
