"""The build proper: the Beam graph run into a staging folder, the completeness check, and the
manifest, card, report and cache record written beside its output. The driver (build.py) imports
this module only once it knows there is work to do, so a no-op rebuild never loads Beam.

Inputs -> ClipStages -> SpillMedia -> Explain -> MakeRecords -> WriteShards
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from emer_builder.core.config import BuildConfig
from emer_builder.core.errors import UserError, one_line
from emer_builder.core.failures import FAILURES_FILE
from emer_builder.core.paths import emer_home
from emer_builder.pipelines.envelope import Envelope
from emer_builder.pipelines.explain import Explain
from emer_builder.pipelines.explain_setup import ExplainPlan
from emer_builder.pipelines.graph import SHARD_INFO, ClipStages, MakeRecords, SpillMediaFn, WriteShards, write_failures
from emer_builder.pipelines.out import Staged
from emer_builder.pipelines.progress import PROGRESS, ProcessClock, Progress, add_up, split_stats
from emer_builder.pipelines.runners import pipeline_options, tidy_after
from emer_builder.pipelines.scratch import SCRATCH, read_inputs, stage_inputs
from emer_builder.pipelines.staging import StagingArea
from emer_builder.release.card import write_card
from emer_builder.release.manifest import write_manifest
from emer_builder.report import write_report
from emer_builder.schemas import RecordSchema
from emer_builder.transforms.clip import Stage
from emer_builder.transforms.clip_cache import ClipCache, chain_digests, entry_address, input_identity
from emer_builder.transforms.segment import Segmentation

log = logging.getLogger(__name__)

BATCH_ROWS = 4096  # rows of a Parquet table read at a time by the driver's checks


class Produced(NamedTuple):
    manifest: dict[str, Any]
    wall_s: float
    stage_seconds: dict[str, dict[str, float]]
    model_loads: dict[str, int]
    counters: dict[str, int]
    cpu: dict[str, float]  # the run's process CPU, the stages' sum, the rest (ProcessClock.account)


@dataclass(frozen=True)
class GraphJob:
    """What the graph works on (the clips and everything they are processed with), and what the build
    records about where they came from."""

    clips: list[Envelope]  # every input (or utterance), sorted by key
    config: BuildConfig
    schema: RecordSchema
    stages: list[Stage]
    prov: dict[str, Any]
    plan: ExplainPlan
    names: dict[str, str]  # key -> the name annotation tables use
    official_splits: dict[str, str] | None = None  # a corpus' own split per key
    videos: str = ""  # VIDEOS_DIR as the manifest names it
    skipped: list[str] = field(default_factory=list)  # entries of VIDEOS_DIR that are no inputs, with why
    unmatched: tuple[list[str], list[str]] = ([], [])  # annotation names without a video, videos without an annotation
    segmentation: Segmentation | None = None
    fingerprint: str = ""  # of the inputs, config and code (a no-op rebuild compares it)
    label: str = ""  # OUT as the cache's record of builds names it


def produce(job: GraphJob, staged: Staged, workers: int, beam_args: list[str], show_progress: bool) -> Produced:
    """Everything a build writes, into `staged` (the driver commits it); raises UserError when the
    runner lost or repeated an input. With `staged.url` the workers write their files there, and
    `staged.local` receives the Parquet tables and what the driver writes; the tar shards stay on the store."""
    started, clock = time.monotonic(), ProcessClock()
    clips, config, local = job.clips, job.config, staged.local
    area = StagingArea(staged.workers_write_to)
    progress = Progress(area, total=len(clips), enabled=show_progress)
    with _quiet_workers(), progress:
        run_pipeline(job, area, workers, beam_args)
        written = shards_written(area)
        progress.final = (written["records"] + written["failures"], written["failures"])
    if staged.url:
        fetch_tables(area, local, written["files"])
    if not (local / FAILURES_FILE).is_file():
        write_failures([], local / FAILURES_FILE)
    check_complete(local, clips)
    seconds, loads, counts = split_stats(written["stats"])
    for hidden in (PROGRESS, ".media", SHARD_INFO, *SCRATCH):  # the workers' scratch: not part of the build
        area.remove(hidden)
    wall, cpu = round(time.monotonic() - started, 2), clock.account(written["stats"], seconds)  # over the same span
    manifest = _write_records(job, local, written["files"], wall, seconds, loads, counts, cpu)
    try:
        write_report(local, manifest=manifest, media_from=staged.url)
    except Exception as e:  # noqa: BLE001 (the report is read by people; the records must not be lost with it)
        log.error("report.html was not written (%s: %s); the records are complete: `emer report OUT` writes it again", type(e).__name__, one_line(e))
    record_cache_use(config, job.stages, local, clips, job.label)
    return Produced(manifest, wall, seconds, loads, counts, cpu)


def _write_records(
    job: GraphJob, local: Path, files: dict[str, Any], wall: float, seconds: dict[str, Any], loads: dict[str, int], counts: dict[str, int], cpu: dict[str, float] | None = None
) -> dict[str, Any]:
    """The manifest, the dataset card and build.json beside the shards (with the run's CPU account when measured)."""
    plan = job.plan
    annotations: dict[str, Any] = {"files": plan.annotations.files, "names_without_video": job.unmatched[0], "videos_without_annotation": job.unmatched[1]}
    if job.segmentation is not None:  # segment table rows naming no video are reported like unmatched annotations
        annotations["segment_rows_without_video"] = job.segmentation.unmatched
    manifest = write_manifest(
        local, job.videos, job.config, job.schema, job.prov, inputs=len(job.clips), skipped=job.skipped, annotations=annotations, wheel_problem=plan.wheel_problem, known_files=files
    )
    write_card(local, manifest, job.schema, job.config)
    log = {"wall_s": wall, "stage_seconds": seconds, "model_loads": loads, "counters": counts, "inputs_fingerprint": job.fingerprint, "skipped_files": job.skipped}
    if cpu:
        log["cpu"] = cpu
    if job.segmentation is not None:
        log["segment_notes"] = job.segmentation.notes
    (local / "build.json").write_text(json.dumps(log, indent=2, sort_keys=True) + "\n")
    return manifest


def shards_written(area: StagingArea) -> dict[str, Any]:
    """What the shard writers reported: every file written (sha256, bytes), the run statistics of all
    clips, and the records and failure rows written."""
    infos = [json.loads(area.read(name)) for name in area.names(SHARD_INFO)]
    files = {rel: meta for info in infos for rel, meta in info["files"].items()}
    return {
        "files": dict(sorted(files.items())),
        "stats": add_up(info["stats"] for info in infos),
        "records": sum(info["records"] for info in infos),
        "failures": sum(info["failures"] for info in infos),
    }


def fetch_tables(area: StagingArea, local: Path, files: dict[str, Any]) -> None:
    """Copy the Parquet tables (records without media: small) from a stored staging area to the
    driver, which reads them for the checks, the manifest, the card and the report."""
    for rel in files:
        if rel.endswith(".parquet"):
            (local / rel).write_bytes(area.read(rel))


def run_pipeline(job: GraphJob, staging: StagingArea, workers: int, beam_args: list[str]) -> None:
    """Inputs -> ClipStages -> Explain -> MakeRecords -> WriteShards, into `staging`."""
    options, runner = pipeline_options(beam_args, workers)
    config, plan = job.config, job.plan
    e = config.explanation
    need_samples = plan.llm is not None and (e.llm.frames > 0 or e.llm.send_audio)  # the LLM reads frames or audio
    parts = stage_inputs(staging, job.clips)  # the inputs in parts in the staging area: the pipeline holds their names
    with beam.Pipeline(runner=runner, options=options) as p:
        (
            p
            | "Inputs" >> beam.Create(parts)
            | "ReadInputs" >> beam.FlatMap(read_inputs, staging)
            | "ClipStages" >> ClipStages(job.stages, cache_root(config), need_samples)
            | "SpillMedia" >> beam.ParDo(SpillMediaFn(staging))
            | "Explain" >> Explain(plan, job.names, e.llm, e.language, [c.key for c in job.clips], staging)
            | "MakeRecords" >> MakeRecords(job.schema, job.prov, config.split, staging, job.official_splits)
            | "WriteShards" >> WriteShards(staging, job.schema, config.shards)
        )
    tidy_after(beam_args)


def record_cache_use(config: BuildConfig, stages: list[Stage], root: Path, clips: list[Envelope], label: str) -> None:
    """Tell the cache which entries this build's records rest on (for `emer cache --prune`)."""
    where = cache_root(config)
    if where is None:
        return
    digests = chain_digests(stages)
    windows = {c.key: (c.clip.start_s, c.clip.end_s) for c in clips if c.clip.start_s is not None}  # utterances only

    def addresses() -> Iterator[str]:  # streamed into the cache's record, one batch of a table at a time
        for key, sha256 in table_columns(root, "key", "media.sha256"):
            identity = input_identity(sha256, *windows.get(key, (None, None)))
            yield from (entry_address(identity, d) for d in digests)

    ClipCache(where).record_use(addresses(), label)


def table_columns(root: Path, *columns: str, failures: bool = False) -> Iterator[tuple[Any, ...]]:
    """Rows of a few (dotted) columns of every Parquet table of the build, and of its failures with
    `failures`, read batch by batch: the driver's memory does not grow with the tables."""
    paths = sorted((root / "data").glob("*.parquet"))
    if failures and (root / FAILURES_FILE).is_file():
        paths.append(root / FAILURES_FILE)
    for path in paths:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=BATCH_ROWS, columns=list(columns)):
            yield from zip(*(_leaf(batch, c).to_pylist() for c in columns), strict=True)


def _leaf(batch: pa.RecordBatch, column: str) -> pa.Array:
    """A dotted column of a batch read with nested columns (a null struct gives nulls below it)."""
    first, *rest = column.split(".")
    array = batch.column(first)
    for name in rest:
        array = pc.struct_field(array, name)
    return array


def _identity(key: str, source_path: str) -> str:
    return f"{source_path} [{key}]"  # utterances share a source path, colliding files share a key


def written_inputs(root: Path) -> Iterator[str]:
    """Every input (key and source path) the build wrote, records and failure rows together, one by one."""
    return (_identity(k, s) for k, s in table_columns(root, "key", "source_path", failures=True))


def check_complete(root: Path, clips: list[Envelope]) -> None:
    """Inputs = records + failures, each input exactly once; anything else names the inputs and the
    build is not committed (a runner that silently drops or repeats elements is caught here). Memory: one
    count per input identity (the tables are streamed), plus any unexpected identities."""
    seen = dict.fromkeys((_identity(c.key, c.source_path) for c in clips), 0)
    extra: Counter[str] = Counter()
    for identity in written_inputs(root):
        if identity in seen:
            seen[identity] += 1
        else:
            extra[identity] += 1
    missing = sorted(k for k, n in seen.items() if n == 0)
    repeated = sorted([k for k, n in seen.items() if n > 1] + [k for k, n in extra.items() if n > 1])
    unexpected = sorted(extra)
    if missing or repeated or unexpected:
        parts = [f"{label} {len(keys)} ({', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''})" for label, keys in (("missing", missing), ("repeated", repeated), ("unexpected", unexpected)) if keys]
        raise UserError(f"the runner lost or repeated inputs, so nothing was committed: {'; '.join(parts)}")


@contextmanager
def _quiet_workers() -> Iterator[None]:
    """Worker processes inherit a standard error that goes to a temporary file (not in OUT, which may
    be full), so their chatter and, on Ctrl-C, their tracebacks stay out of the terminal; the driver's
    own lines (progress, errors) still reach it. EMER_WORKER_STDERR=inherit shows everything."""
    if os.environ.get("EMER_WORKER_STDERR") == "inherit":
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    fd, log = tempfile.mkstemp(prefix="emer-workers-", suffix=".log")
    os.unlink(log)  # the open descriptor keeps it until the run ends
    os.dup2(fd, 2)
    os.close(fd)
    original, hook = sys.stderr, threading.excepthook
    sys.stderr = os.fdopen(os.dup(saved), "w", buffering=1, encoding=original.encoding, errors="backslashreplace")
    # Beam's runner threads report a dying worker themselves: into the log, with the workers' words
    threading.excepthook = lambda args: traceback.print_exception(args.exc_type, args.exc_value, args.exc_traceback, file=original)
    try:
        yield
    finally:
        sys.stderr.flush()
        sys.stderr.close()
        sys.stderr = original
        threading.excepthook = hook
        os.dup2(saved, 2)
        os.close(saved)




def cache_root(config: BuildConfig) -> str | None:
    """Where stage results are cached: the config's folder or URL, $EMER_CLIP_CACHE, else under $EMER_HOME."""
    if not config.cache.enabled:
        return None
    return config.cache.dir or os.environ.get("EMER_CLIP_CACHE") or str(emer_home() / "clip-cache")


