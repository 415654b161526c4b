"""`emer build`: the driver around the Beam graph (pipelines/graph.py), read as plan, then execute.

plan: check the inputs' place, the config, the schema and the explanation sources (no lock, no models)
-> lock OUT, make it ready, check it -> gather: stages, inputs, segmentation, fingerprint (a no-op
rebuild stops here) -> execute: the graph into a staging area, every input exactly one record or one
failure row, manifest, card, report -> commit into OUT (local: journalled; a store: manifest last).
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import logging
import os
import shutil
import threading
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emer_builder.core.config import BuildConfig
from emer_builder.core.errors import BuildFailed, ClipError, UserError, fault_in
from emer_builder.core.failures import failure_row
from emer_builder.core.urls import file_system, is_url, stamp
from emer_builder.pipelines.envelope import Envelope, failed_early
from emer_builder.pipelines.explain_setup import ExplainPlan, describe_sources, join_names, prepare
from emer_builder.pipelines.local_out import LocalOut
from emer_builder.pipelines.object_out import CREDENTIALS as STORE_CREDENTIALS
from emer_builder.pipelines.object_out import StoredOut
from emer_builder.pipelines.out import Out, Staged
from emer_builder.pipelines.runners import names_runner
from emer_builder.pipelines.stages import build_stages, check_stages, provenance, stages_schema
from emer_builder.pipelines.summary import BuildSummary, first_names, links_leaving, summarise
from emer_builder.release.store import store_errors
from emer_builder.schemas import RecordSchema
from emer_builder.transforms.clip import Clip, Stage
from emer_builder.transforms.clip_cache import chain_digests
from emer_builder.transforms.corpora import load_corpus
from emer_builder.transforms.keys import VIDEO_EXTENSIONS, VideoInput, match_videos
from emer_builder.transforms.segment import Segmentation, check_options, segment_videos, sidecar_files
from emer_builder.transforms.split import SplitAssigner

__all__ = ["BuildSummary", "build", "input_clips", "summarise"]


@dataclass(frozen=True)
class BuildPlan:
    """What the checks before the lock settle."""

    videos: Any  # the input folder (absolute Path), or the URL as given
    videos_label: str  # how the manifest names it
    stored_input: bool
    config: BuildConfig  # with the split settings a segmented build implies
    stages: list[Stage]  # built once: the fingerprint, the provenance, the check and the graph use these
    schema: RecordSchema
    explain: ExplainPlan


@dataclass(frozen=True)
class Gathered:
    """What a build reads before deciding whether there is work: its inputs, and their fingerprint."""

    inputs: list[VideoInput]
    collisions: list[Any]
    skipped: list[str]
    segmentation: Segmentation | None
    fingerprint: str


def build(videos_dir: str | Path, out: str | Path, config: BuildConfig | None = None, workers: int = 2, beam_args: list[str] | None = None, overwrite: bool = False, show_progress: bool = True) -> BuildSummary:
    """Build a dataset from every video under `videos_dir` into `out`; returns the summary. Either may
    be an object-store URL (s3://bucket/prefix): inputs are fetched one clip at a time by the workers,
    an OUT URL receives the finished build with its manifest written last."""
    beam_args = beam_args or []
    target: Out = StoredOut(str(out), overwrite) if is_url(out) else LocalOut(Path(out).absolute(), overwrite)
    plan = plan_build(videos_dir, target, config or BuildConfig(), workers)
    with target.lock():
        finished_commit = target.make_ready()
        target.check(plan.config.config_hash(), plan.videos_label)
        gathered = gather(plan, beam_args)
        summary = target.current(gathered.fingerprint) or execute(plan, gathered, target, workers, beam_args, show_progress)
    summary.finished_commit = finished_commit
    return summary


def plan_build(videos_dir: str | Path, target: Out, config: BuildConfig, workers: int) -> BuildPlan:
    """Every check that needs no lock and no model: where the inputs are, the config, the schema, the
    explanation sources (tables and endpoint first: cheaper than loading the models)."""
    stored_input = is_url(videos_dir)
    if stored_input:
        videos: Any = _videos_label(videos_dir)
        file_system(videos, "VIDEOS_DIR")
        if config.corpus or config.segment.mode != "none":
            raise UserError(f"segmenting inputs read from {videos} is not supported yet: sync the videos to a folder first (e.g. `aws s3 sync`)")
    else:
        videos = Path(videos_dir).absolute()
        _check_input_folder(videos_dir, videos, getattr(target, "path", None))
    if workers < 1:
        raise UserError("--workers must be at least 1")
    check_options(config.segment)
    config = split_settings(config, config.corpus is not None or config.segment.mode != "none")
    stages = build_stages(config)  # plug-in classes load here: a broken one fails early
    schema = stages_schema(stages)
    split = config.split
    SplitAssigner(split.ratios, split.group_by, split.group_pattern, split.split_table, split.seed)
    if split.group_by.split(".")[0] not in schema.column_names():
        raise UserError(f"split.group_by {split.group_by!r} names no record field; fields: {', '.join(schema.column_names())}")
    return BuildPlan(videos, _videos_label(videos_dir), stored_input, config, stages, schema, prepare(config))


def _check_input_folder(given: str | Path, videos: Path, out: Path | None) -> None:
    if not videos.exists():
        raise UserError(f"input folder not found: {given}")
    if not videos.is_dir():
        raise UserError(f"input {given} is a file, not a folder: give the folder that holds the videos")
    if out is None:
        return
    if out.resolve() == videos.resolve() or videos.resolve() in out.resolve().parents:
        raise UserError("--out must not be inside the input folder (the build would read its own output)")
    if out.resolve() in videos.resolve().parents:
        raise UserError("the input folder must not be inside --out (replacing the build could delete the videos)")


def gather(plan: BuildPlan, beam_args: list[str]) -> Gathered:
    """The inputs (matched, segmented) and the fingerprint a no-op rebuild compares."""
    config = plan.config
    with store_errors(str(plan.videos), "read", STORE_CREDENTIALS) if plan.stored_input else nullcontext():
        inputs, collisions, skipped = match_videos(plan.videos, config.follow_external_links)
    segmentation = segment_inputs(config, plan.videos, inputs)
    if segmentation is not None:
        skipped = sorted((set(skipped) - sidecar_files(inputs, _inside(config, plan.videos))) | set(segmentation.skipped))
    tables = [*plan.explain.annotations.files, *(segmentation.files if segmentation else [])]
    return Gathered(inputs, collisions, skipped, segmentation, inputs_fingerprint(config, plan.stages, inputs, tables, beam_args))


def execute(plan: BuildPlan, gathered: Gathered, target: Out, workers: int, beam_args: list[str], show_progress: bool) -> BuildSummary:
    """Run the graph into a staging area, check it, commit it; the summary of the new build."""
    job = graph_job(plan, gathered, target, beam_args)
    # the build proper needs Beam, the models' libraries and `datasets` (about 2 s of imports): a
    # no-op rebuild, and a build that fails its checks, have returned before this
    from emer_builder.pipelines.run import produce

    staged = target.stage()
    try:
        produced = produce(job, staged, workers, beam_args, show_progress)
        target.commit(staged)
    except BaseException as e:
        one = _one_line(e, staged)
        if one is None:
            raise
        raise one from None
    finally:
        target.discard(staged)
    logging.getLogger(__name__).info("build finished")
    return _summary(plan, gathered, target, job, produced)


def graph_job(plan: BuildPlan, gathered: Gathered, target: Out, beam_args: list[str]) -> Any:
    """The clips and everything the graph needs, after the last checks (the models load once here)."""
    from emer_builder.pipelines.run import GraphJob

    config, explain = plan.config, plan.explain
    if not names_runner(beam_args):  # remote workers may differ from this machine: they report their own errors
        check_stages(plan.stages)  # checks copies: the stages that travel to workers hold no loaded model
    prov = provenance(plan.stages, config.config_hash(), describe_sources(explain.sources), explain.wheel.origin() if explain.wheel else None)
    names = join_names(gathered.inputs, explain.annotations.names)
    unmatched = explain.annotations.unmatched(set(names.values())) if explain.annotations.names else ([], [])
    early = [
        failure_row(c.key, c.source_path, "match", ClipError(f"key {c.key!r} collides with {', '.join(c.others)}; rename one of the files"))
        for c in gathered.collisions
    ]
    clips = input_clips(gathered.inputs, early, gathered.segmentation)
    if not clips:
        leaving = links_leaving(gathered.skipped)
        hint = f"; {len(leaving)} symlinks leading outside it were not followed{first_names(leaving)}: set follow_external_links: true in the config to include them" if leaving else ""
        raise UserError(f"no video files under {plan.videos_label} (looked for {', '.join(sorted(VIDEO_EXTENSIONS))}){hint}")
    segmentation = gathered.segmentation
    return GraphJob(
        clips, config, plan.schema, plan.stages, prov, explain, names, segmentation.split_table if segmentation else None,
        videos=plan.videos_label, skipped=gathered.skipped, unmatched=unmatched, segmentation=segmentation, fingerprint=gathered.fingerprint, label=target.label,
    )


def _one_line(e: BaseException, staged: Staged) -> Exception | None:
    """The one-line error a failed run becomes (a full disk, a fault outside the inputs), or None to re-raise it."""
    if isinstance(e, KeyboardInterrupt):
        threading.excepthook = lambda args: None  # Beam's runner threads die loudly after an interrupt
    if _disk_full(e):
        free = shutil.disk_usage(staged.local).free // 2**20
        return UserError(f"no space left on the device of {staged.local.parent} ({free} MiB free); free space or choose another --out (nothing was committed)")
    fault = fault_in(e) if isinstance(e, Exception) else None
    return BuildFailed(fault) if fault else None  # a worker's BuildFault, as the runner re-raised it


def _summary(plan: BuildPlan, gathered: Gathered, target: Out, job: Any, produced: Any) -> BuildSummary:
    manifest, wall, seconds, loads, counts, cpu = produced
    summary = summarise(target.label, len(job.clips), gathered.skipped, wall, manifest, seconds, loads)
    summary.process_cpu = cpu
    summary.llm = {k.removeprefix("llm_"): v for k, v in counts.items() if k.startswith("llm_")} if plan.explain.llm is not None else {}
    summary.stage_runs = {s.name: counts.get(f"ran_{s.name}", 0) for s in plan.stages}
    segmentation, config = gathered.segmentation, plan.config
    if segmentation is not None:
        summary.segmentation = {
            "method": f"corpus {config.corpus}" if config.corpus else config.segment.mode,
            "utterances": len(segmentation.segments),
            "videos": len({s.source_key for s in segmentation.segments}),
            "failures": len(segmentation.failures),
            "rows_without_video": segmentation.unmatched,
        }
    summary.cache_restored = {k.removeprefix("restored_"): v for k, v in counts.items() if k.startswith("restored_")}
    return summary


def input_clips(inputs: list[VideoInput], early_failures: list[dict[str, str]], segmentation: Segmentation | None = None) -> list[Envelope]:
    """Every input as a clip (or every utterance, when segmented); inputs that failed before the
    graph (key collisions, bad segments) carry their row."""
    if segmentation is None:
        clips = [Envelope(Clip(i.key, i.path, i.source_path)) for i in inputs]
    else:
        clips = [
            Envelope(Clip(s.key, s.path, s.source_path, start_s=s.start_s if s.seek else None, end_s=s.end_s if s.seek else None, fields={"segment": s.segment_fields(), "labels": s.labels_fields()}))
            for s in segmentation.segments
        ]
        early_failures = [*early_failures, *segmentation.failures]
    clips += [failed_early(f) for f in early_failures]
    return sorted(clips, key=lambda c: (c.key, c.source_path))


def segment_inputs(config: BuildConfig, videos: Path, inputs: list[VideoInput]) -> Segmentation | None:
    """Utterances of the inputs (subtitles, a table, speech) or of a corpus' own layout; None: one file = one record."""
    if config.corpus:
        return load_corpus(config.corpus, videos, config.segment, config.follow_external_links)
    return segment_videos(inputs, config.segment, inside=_inside(config, videos))


def _inside(config: BuildConfig, videos: Any) -> str | None:
    """The input folder, resolved, that links may not leave (None: they may, or the inputs are stored objects)."""
    return None if config.follow_external_links or not isinstance(videos, Path) else os.path.realpath(videos)


def split_settings(config: BuildConfig, segmented: bool) -> BuildConfig:
    """Segmented inputs keep each source video (or dialogue) in one split unless the config says otherwise."""
    if segmented and config.split.group_by == "key":
        return dataclasses.replace(config, split=dataclasses.replace(config.split, group_by="segment.group"))
    return config


def _disk_full(e: BaseException) -> bool:
    return (isinstance(e, OSError) and e.errno == errno.ENOSPC) or "No space left on device" in str(e)


def inputs_fingerprint(config: BuildConfig, stages: list[Stage], inputs: list[VideoInput], tables: list[dict[str, Any]], beam_args: list[str]) -> str:
    """What a build's output depends on, cheaply: config, code (the stages' cache digests), every
    input's path, size and modification time, the annotation tables' checksums."""
    listing: list[tuple[str, int, Any]] = []
    for i in inputs:
        try:
            listing.append((i.source_path, *stamp(i.path)))
        except OSError as e:  # a dangling link: decode reports it
            listing.append((i.source_path, -1, e.errno))
    data = {
        "config": config.config_hash(),
        "stages": chain_digests(stages),
        "inputs": sorted(listing),
        "tables": sorted(t.get("sha256", "") for t in tables),
        "runner": [a for a in beam_args if a.startswith("--runner")],
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode("utf-8", "surrogateescape")).hexdigest()


def _videos_label(videos_dir: str | Path) -> str:
    """How the manifest names the input folder: the URL as given, or the absolute path."""
    return str(videos_dir).rstrip("/") if is_url(videos_dir) else str(Path(videos_dir).absolute())
