"""`emer build`: the Beam pipeline from a folder of videos to Parquet + WebDataset shards.

match -> decode -> transcript -> faces -> acoustics -> [plug-ins] -> record + split
      -> plan shards per split (by key, bounded by count and bytes) -> write shards
failures of any stage -> failures.parquet. The driver then writes the manifest and the card,
and swaps the finished build into OUT only when everything succeeded.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.options.pipeline_options import PipelineOptions
from emer_builder.core.config import BuildConfig
from emer_builder.core.errors import UserError, one_line
from emer_builder.pipelines.progress import Progress, ProgressLog, counters, cpu_seconds, model_loads, stage_times
from emer_builder.pipelines.stages import build_stages, finish_record, provenance, record_schema
from emer_builder.release.card import write_card
from emer_builder.release.manifest import MANIFEST, write_manifest
from emer_builder.schemas import RecordSchema, SchemaError
from emer_builder.schemas.v1 import FAILURE_SCHEMA
from emer_builder.transforms.clip import Clip, ClipError, Stage
from emer_builder.transforms.keys import VIDEO_EXTENSIONS, VideoInput, match_videos
from emer_builder.transforms.shards import plan_shards, sample_bytes, shard_name, write_parquet, write_tar
from emer_builder.transforms.split import SplitAssigner

FAILED = "failed"
OUTPUTS = ("data", "media", MANIFEST, "failures.parquet", "README.md")
STAGING_PREFIX = ".emer-staging-"


def failure_row(key: str, source_path: str, stage: str, error: BaseException) -> dict[str, str]:
    message = str(error) if isinstance(error, (ClipError, SchemaError)) else f"{type(error).__name__}: {error}"
    return {"key": key, "source_path": source_path, "stage": stage, "error_class": type(error).__name__, "message": message[:2000]}


class StageFn(beam.DoFn):
    """Thin Beam wrapper of one stage: models load in `setup`, once per worker process."""

    def __init__(self, stage: Stage, progress_dir: str):
        self.stage, self.progress_dir = stage, progress_dir

    def setup(self) -> None:
        self.stage.setup()
        self.progress = ProgressLog(self.progress_dir)
        self.progress.model_load(self.stage.name)

    def process(self, clip: Clip) -> Iterable[Any]:
        cpu, wall = cpu_seconds(), time.perf_counter()
        try:
            self.stage.process(clip)
        except Exception as e:  # noqa: BLE001 - any failure of one clip must not stop the build
            logging.getLogger(__name__).debug("stage %s failed on %s", self.stage.name, clip.source_path, exc_info=True)
            self.progress.mark("failed")
            yield beam.pvalue.TaggedOutput(FAILED, failure_row(clip.key, clip.source_path, self.stage.name, e))
            return
        finally:
            self.progress.stage_time(self.stage.name, cpu_seconds() - cpu, time.perf_counter() - wall)
        yield clip


class RecordFn(beam.DoFn):
    """Assemble, validate and split-assign the record (the explanation step already dropped the decoded samples)."""

    def __init__(self, schema: RecordSchema, prov: dict[str, Any], config: BuildConfig, progress_dir: str):
        self.schema, self.prov, self.config, self.progress_dir = schema, prov, config, progress_dir

    def setup(self) -> None:
        s = self.config.split
        self.assign = SplitAssigner(s.ratios, s.group_by, s.group_pattern, s.split_table, s.seed)
        self.progress = ProgressLog(self.progress_dir)

    def process(self, clip: Clip) -> Iterable[Any]:
        try:
            record = finish_record(clip, self.schema, self.prov)
            record["split"] = self.assign(record)
            self.schema.validate(record)
            record = self.schema.conform(record)
        except Exception as e:  # noqa: BLE001
            self.progress.mark("failed")
            yield beam.pvalue.TaggedOutput(FAILED, failure_row(clip.key, clip.source_path, "record", e))
            return
        self.progress.mark("ok")
        yield record["key"], (record, clip.media_files)


def _shard_assignments(split_sizes: tuple[str, Iterable[tuple[str, int]]], max_records: int, max_bytes: int) -> Iterable[tuple[str, tuple[str, int, int]]]:
    split, sizes = split_sizes
    shards = plan_shards(sizes, max_records, max_bytes)
    for index, keys in enumerate(shards):
        for key in keys:
            yield key, (split, index, len(shards))


class WriteShardFn(beam.DoFn):
    """Write one Parquet file and one tar with the same keys, named `{split}-{i}-of-{n}`."""

    def __init__(self, staging: str, schema: RecordSchema, row_group_size: int):
        self.staging, self.schema, self.row_group_size = staging, schema, row_group_size

    def process(self, shard: tuple[tuple[str, int, int], Iterable[tuple[dict[str, Any], dict[str, bytes]]]]) -> Iterable[str]:
        (split, index, count), samples = shard
        samples = sorted(samples, key=lambda s: s[0]["key"])
        name = shard_name(split, index, count)
        write_parquet(Path(self.staging, "data", f"{name}.parquet"), [r for r, _ in samples], self.schema.arrow_schema(), self.row_group_size)
        write_tar(Path(self.staging, "media", f"{name}.tar"), samples)
        yield name


def _write_failures(rows: list[dict[str, str]], path: str) -> None:
    rows = sorted(rows, key=lambda r: (r["source_path"], r["stage"]))
    pq.write_table(pa.Table.from_pylist(rows, schema=FAILURE_SCHEMA), path, compression="zstd")


def check_stages(config: BuildConfig) -> None:
    """Set every stage up once in the driver, so a model that cannot load (a typo, no network
    for a hub model, a bad language code) is one clear error before any worker starts."""
    for stage in build_stages(config):
        try:
            stage.setup()
        except Exception as e:  # noqa: BLE001
            raise UserError(f"stage {stage.name} cannot start: {type(e).__name__}: {one_line(e)}") from None


def _names_runner(beam_args: list[str]) -> bool:
    return any(a.startswith("--runner") for a in beam_args)


def pipeline_options(beam_args: list[str], workers: int) -> tuple[PipelineOptions, Any]:
    """Options for Beam; without `--runner` the local multi-process FnApiRunner (no Prism download)."""
    if _names_runner(beam_args):
        return PipelineOptions(beam_args), None
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    mode = ["--direct_running_mode=multi_processing", f"--direct_num_workers={workers}"] if workers > 1 else ["--direct_running_mode=in_memory"]
    return PipelineOptions([*mode, *beam_args]), FnApiRunner()  # the user's options come last and win


def run_pipeline(
    inputs: list[VideoInput],
    early_failures: list[dict[str, str]],
    staging: Path,
    config: BuildConfig,
    schema: RecordSchema,
    stages: list[Stage],
    prov: dict[str, Any],
    workers: int,
    beam_args: list[str],
    plan: Any,
    names: dict[str, str],
) -> None:
    from emer_builder.pipelines.explain import explain_clips

    progress_dir = str(staging / ".progress")
    options, runner = pipeline_options(beam_args, workers)
    sh = config.shards
    with beam.Pipeline(runner=runner, options=options) as p:
        clips = (
            p
            | "Inputs" >> beam.Create([(i.key, i.path, i.source_path) for i in inputs])
            | "Spread" >> beam.Reshuffle()
            | "Clip" >> beam.MapTuple(lambda key, path, rel: Clip(key, path, rel))
        )
        failures = [p | "KeyFailures" >> beam.Create(early_failures)]
        for stage in stages:
            result = clips | stage.name.capitalize() >> beam.ParDo(StageFn(stage, progress_dir)).with_outputs(FAILED, main="clips")
            clips = result.clips
            failures.append(result[FAILED])
        explained = explain_clips(p, clips, plan, names, config.explanation.llm, config.explanation.language, progress_dir)
        clips = explained.clips
        failures.append(explained[FAILED])
        records = clips | "Record" >> beam.ParDo(RecordFn(schema, prov, config, progress_dir)).with_outputs(FAILED, main="records")
        failures.append(records[FAILED])
        keyed = records.records
        plan = (
            keyed
            | "Sizes" >> beam.MapTuple(lambda key, rm: (rm[0]["split"], (key, sample_bytes(*rm))))
            | "BySplit" >> beam.GroupByKey()
            | "Plan" >> beam.FlatMap(_shard_assignments, sh.max_records, sh.max_bytes)
        )
        (
            {"plan": plan, "samples": keyed}
            | "Join" >> beam.CoGroupByKey()
            | "ToShard" >> beam.FlatMapTuple(lambda key, g: [(g["plan"][0], s) for s in g["samples"]])
            | "ByShard" >> beam.GroupByKey()
            | "Write" >> beam.ParDo(WriteShardFn(str(staging), schema, sh.parquet_row_group_size))
        )
        (
            failures
            | "AllFailures" >> beam.Flatten()
            | "FailureList" >> beam.combiners.ToList()
            | "WriteFailures" >> beam.Map(_write_failures, str(staging / "failures.parquet"))
        )


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
    model_loads: dict[str, int] = field(default_factory=dict)  # stage -> setups over all workers
    explanation_sources: dict[str, dict[str, int]] = field(default_factory=dict)  # field -> source -> records
    annotations: dict[str, Any] = field(default_factory=dict)
    emotion_wheel: str = ""
    llm: dict[str, int] = field(default_factory=dict)  # requests, cache hits and misses, fields left null
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
        lines = [
            f"built {self.records} records from {self.inputs} inputs in {self.wall_s:.1f} s -> {self.out}",
            f"  splits: {splits}",
            f"  failures: {self.failures} ({fails}); details in failures.parquet",
            f"  faces found in {self.clips_with_faces}/{self.records} clips; languages: {langs}; audio {self.audio_hours * 3600:.1f} s ({self.audio_hours:.4f} h)",
        ]
        cpu_total = sum(t["cpu_s"] for t in self.stage_seconds.values())
        if cpu_total > 0:
            shares = ", ".join(f"{k} {100 * t['cpu_s'] / cpu_total:.0f}%" for k, t in self.stage_seconds.items())
            lines.append(f"  stage CPU time {cpu_total:.1f} s: {shares}")
        if self.model_loads:
            lines.append("  stage set-ups (model loads): " + ", ".join(f"{k} {v}" for k, v in self.model_loads.items()))
        if self.explanation_sources:
            by_field = [f"{name} " + "/".join(f"{src} {n}" for src, n in counts.items()) for name, counts in self.explanation_sources.items() if name != "subtitle"]
            lines.append("  explanation: " + "; ".join(by_field))
        lines.append(f"  emotion wheel: {self.emotion_wheel}")
        if self.llm:
            c = self.llm
            lines.append(
                f"  llm: {c.get('calls', 0)} requests, {c.get('cache_hits', 0)} answers from the cache, {c.get('failures', 0)} fields left null after retries"
            )
        files = self.annotations.get("files") or []
        if files:
            no_video, no_ann = self.annotations["names_without_video"], self.annotations["videos_without_annotation"]
            lines.append(
                f"  annotations: {len(files)} tables; {len(no_video)} names without a video{_first(no_video)}; {len(no_ann)} videos without an annotation{_first(no_ann)}"
            )
        if self.skipped_files:
            shown = ", ".join(self.skipped_files[:5]) + (" ..." if len(self.skipped_files) > 5 else "")
            lines.append(f"  skipped {len(self.skipped_files)} non-video files: {shown}")
        return "\n".join(lines)


def _first(names: list[str], shown: int = 3) -> str:
    return f" ({', '.join(names[:shown])}{' ...' if len(names) > shown else ''})" if names else ""


def _check_out(out: Path, videos_dir: Path, config: BuildConfig, overwrite: bool) -> None:
    if not out.exists():
        return
    if not out.is_dir():
        raise UserError(f"output {out} exists and is not a folder")
    entries = [e for e in out.iterdir() if not e.name.startswith(STAGING_PREFIX)]
    if not entries or overwrite:
        return
    manifest_path = out / MANIFEST
    if not manifest_path.is_file():
        raise UserError(f"output {out} is not empty and holds no emer build; choose another --out or pass --overwrite")
    try:
        old = json.loads(manifest_path.read_text())
    except ValueError:
        raise UserError(f"output {out} holds an unreadable manifest; pass --overwrite to replace it") from None
    if old.get("config_hash") != config.config_hash() or old.get("videos_dir") != str(videos_dir):
        raise UserError(f"output {out} holds a different build (other inputs or config); pass --overwrite to replace it")


def _remove_stale_staging(out: Path) -> None:
    """Staging folders of builds that were killed (their process is gone) hold partial output only."""
    if not out.is_dir():
        return
    for entry in out.glob(f"{STAGING_PREFIX}*"):
        pid = entry.name.removeprefix(STAGING_PREFIX)
        if pid.isdigit() and not _process_alive(int(pid)):
            shutil.rmtree(entry, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _swap_into_place(staging: Path, out: Path, overwrite: bool) -> None:
    """Replace the previous build's outputs with the new ones; without --overwrite only our own
    outputs are touched, with it everything else in OUT goes too (the inputs are never inside OUT)."""
    if overwrite:
        for entry in out.iterdir():
            if entry != staging:
                shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    for name in OUTPUTS:
        old = out / name
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old)
        elif old.exists() or old.is_symlink():
            old.unlink()
        if (staging / name).exists():
            (staging / name).rename(old)
    shutil.rmtree(staging)


def summarise(
    out: Path, inputs: int, skipped: list[str], wall_s: float, manifest: dict[str, Any], stage_seconds: dict[str, dict[str, float]], loads: dict[str, int]
) -> BuildSummary:
    stats = manifest["stats"]
    return BuildSummary(
        out=str(out),
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
        manifest=manifest,
    )


def build(videos_dir: str | Path, out: str | Path, config: BuildConfig | None = None, workers: int = 2, beam_args: list[str] | None = None, overwrite: bool = False, show_progress: bool = True) -> BuildSummary:
    """Build a dataset from every video under `videos_dir` into `out`; returns the summary."""
    config = config or BuildConfig()
    beam_args = beam_args or []
    videos = Path(videos_dir).absolute()
    out_path = Path(out).absolute()
    if not videos.is_dir():
        raise UserError(f"input folder not found: {videos_dir}")
    if out_path.resolve() == videos.resolve() or videos.resolve() in out_path.resolve().parents:
        raise UserError("--out must not be inside the input folder (the build would read its own output)")
    if out_path.resolve() in videos.resolve().parents:
        raise UserError("the input folder must not be inside --out (replacing the build could delete the videos)")
    if workers < 1:
        raise UserError("--workers must be at least 1")
    _check_out(out_path, videos, config, overwrite)
    schema = record_schema(config)  # fails early on broken plug-ins
    split = config.split
    SplitAssigner(split.ratios, split.group_by, split.group_pattern, split.split_table, split.seed)
    if split.group_by.split(".")[0] not in schema.column_names():
        raise UserError(f"split.group_by {split.group_by!r} names no record field; fields: {', '.join(schema.column_names())}")
    from emer_builder.pipelines.explain import describe_sources, join_names, prepare

    plan = prepare(config)  # tables and endpoint first: cheaper than loading the models
    if not _names_runner(beam_args):
        check_stages(config)  # remote workers may differ from this machine: they report their own errors
    stages = build_stages(config, workers)
    prov = provenance(stages, config.config_hash(), describe_sources(plan.sources), plan.wheel.origin() if plan.wheel else None)

    inputs, collisions, skipped = match_videos(videos)
    names = join_names(inputs, plan.annotations.names)
    unmatched = plan.annotations.unmatched(set(names.values())) if plan.annotations.names else ([], [])
    early = [
        failure_row(c.key, c.source_path, "match", ClipError(f"key {c.key!r} collides with {', '.join(c.others)}; rename one of the files"))
        for c in collisions
    ]
    total = len(inputs) + len(collisions)
    if total == 0:
        raise UserError(f"no video files under {videos_dir} (looked for {', '.join(sorted(VIDEO_EXTENSIONS))})")

    _remove_stale_staging(out_path)
    staging = out_path / f"{STAGING_PREFIX}{os.getpid()}"
    try:
        for sub in ("data", "media", ".progress"):
            (staging / sub).mkdir(parents=True)
    except OSError as e:
        raise UserError(f"cannot write to {out}: {e.strerror or e}") from None
    started = time.monotonic()
    progress = Progress(staging / ".progress", total=total, already_failed=len(early), enabled=show_progress)
    try:
        with progress:
            run_pipeline(inputs, early, staging, config, schema, stages, prov, workers, beam_args, plan, names)
        seconds, loads, counts = stage_times(staging / ".progress"), model_loads(staging / ".progress"), counters(staging / ".progress")
        shutil.rmtree(staging / ".progress")
        wall = round(time.monotonic() - started, 2)
        annotations = {"files": plan.annotations.files, "names_without_video": unmatched[0], "videos_without_annotation": unmatched[1]}
        manifest = write_manifest(staging, videos, config, schema, prov, inputs=total, skipped=skipped, annotations=annotations, wheel_problem=plan.wheel_problem)
        write_card(staging, manifest, schema, config)
        _swap_into_place(staging, out_path, overwrite)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logging.getLogger(__name__).info("build finished")
    summary = summarise(out_path, total, skipped, wall, manifest, seconds, loads)
    summary.llm = {k.removeprefix("llm_"): v for k, v in counts.items() if k.startswith("llm_")} if plan.llm is not None else {}
    return summary

