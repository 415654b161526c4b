"""The Beam graph of `emer build` as named composite transforms.

    Inputs -> ClipStages -> Explain -> MakeRecords -> WriteShards

Every transform takes and returns one PCollection of `Envelope`s (a clip and the graph's bookkeeping)
or outcomes: a clip that failed a step carries its failure row (`Envelope.failure`) and passes the
later steps untouched, so records and failures travel together and meet one sink. The graph uses only constructs every runner we support
executes correctly: no tagged outputs, one sink, no side inputs, no `finish_bundle` output, no
reliance on `Reshuffle` (Beam 2.77's DaskRunner gets each of those wrong; tests/test_graph.py keeps
them out).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NamedTuple

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from emer_builder.core.errors import BuildFault
from emer_builder.core.failures import FAILURES_FILE, failure_row, retry_faults
from emer_builder.core.hashing import sha256_file
from emer_builder.pipelines.envelope import Envelope
from emer_builder.pipelines.progress import ProgressLog, add_up, cpu_seconds, model_load, stage_time, tally
from emer_builder.pipelines.scratch import park, unpark
from emer_builder.pipelines.stages import finish_record
from emer_builder.pipelines.staging import StagingArea
from emer_builder.schemas import RecordSchema
from emer_builder.schemas.v1 import FAILURE_SCHEMA
from emer_builder.transforms.clip import Clip, Stage
from emer_builder.transforms.clip_cache import ClipCache, chain_digests, decode_entry, encode_entry, entry_address, input_identity
from emer_builder.transforms.shards import ShardWriter, media_bytes, plan_shards, sample_bytes, shard_name
from emer_builder.transforms.split import SplitAssigner

RECORDS_MADE = beam.metrics.Metrics.counter("emer", "records")  # live in runners that show metrics (Dataflow, Flink)
FAILURES_MADE = beam.metrics.Metrics.counter("emer", "failures")

FAILURES_SHARD = ("failures", 0, 1)  # the one "shard" that holds every failure row
SHARD_INFO = ".shards"  # per shard written: its files' sha256 and size, and the run statistics of its clips


def guarded(item: Envelope, step: str, work: Callable[[Clip], None]) -> Envelope:
    """Run one step on a copy of the clip (Beam elements are never mutated); an error of the input becomes
    the clip's failure row instead of stopping the build. A fault of the process (a killed decoder, a
    MemoryError) is retried on a fresh copy and, if it persists, fails the build (BuildFault): a good
    clip is never dropped for it. A clip that already failed passes untouched."""
    if item.failure is not None:
        return item
    clip = item.clip

    def attempt() -> Clip:
        out = dataclasses.replace(clip, fields=dict(clip.fields), media_files=dict(clip.media_files))
        work(out)
        return out

    try:
        return dataclasses.replace(item, clip=retry_faults(attempt, clip.source_path, step))
    except BuildFault:
        raise
    except Exception as e:  # noqa: BLE001 - one clip's failure must not stop the build
        logging.getLogger(__name__).debug("%s failed on %s", step, clip.source_path, exc_info=True)
        bare = dataclasses.replace(clip, audio=None, frames=[])
        return dataclasses.replace(item, clip=bare, explain_media=None, failure=failure_row(clip.key, clip.source_path, step, e))


class RestoreFn(beam.DoFn):
    """Look each clip's stage results up in the per-clip cache, in stage order, stopping at the first
    miss: a clip whose stages are all cached is never decoded again."""

    def __init__(self, cache_root: str, digests: list[str], groups: list[str]):
        self.cache_root, self.digests, self.groups = cache_root, digests, groups

    def setup(self) -> None:
        self.cache = ClipCache(self.cache_root)

    def process(self, item: Envelope) -> Iterable[Envelope]:
        clip = item.clip
        if item.failure is not None or not clip.path:
            yield item
            return
        try:
            identity = input_identity(self.cache.input_sha256(clip.path), clip.start_s, clip.end_s)
        except Exception:  # noqa: BLE001 - an unreadable input or an unreachable store: decode says why
            yield item
            return
        restored = dataclasses.replace(clip, fields=dict(clip.fields), media_files=dict(clip.media_files))
        out = dataclasses.replace(item, clip=restored, cache_addresses=[entry_address(identity, d) for d in self.digests])
        for index, (address, group) in enumerate(zip(out.cache_addresses, self.groups, strict=True)):
            found = self.cache.get(address)
            if found is None:
                break
            restored.fields[group], media = found
            restored.media_files.update(media)
            out.restored_through = index
        if out.restored_through >= 0:
            out.stats = tally(out.stats, {f"restored_{self.groups[out.restored_through]}": 1})
        yield out


class StageFn(beam.DoFn):
    """One stage: models load in `setup`, once per worker process. A stage whose result was restored
    from the cache is skipped, except decode when a later stage still needs the decoded samples; a
    result computed here goes into the cache."""

    def __init__(self, stage: Stage, index: int, last: int, cache_root: str | None, provides_samples: bool):
        self.stage, self.index, self.last = stage, index, last
        self.cache_root, self.provides_samples = cache_root, provides_samples

    def setup(self) -> None:
        self.cache = ClipCache(self.cache_root) if self.cache_root else None
        self.ready = False

    def process(self, item: Envelope) -> Iterable[Envelope]:
        if item.failure is not None:
            yield item
            return
        restored = self.index <= item.restored_through
        if restored and not (self.provides_samples and item.restored_through < self.last):
            yield item
            return
        stats = {f"ran_{self.stage.name}": 1}
        if not self.ready:  # models load on the first clip that needs them: a cached build loads none
            self.stage.setup()
            stats.update(model_load(self.stage.name))
            self.ready = True
        cpu, wall = cpu_seconds(), time.perf_counter()
        out = guarded(item, self.stage.name, self.stage.process)
        out.stats = tally(item.stats, {**stats, **stage_time(self.stage.name, cpu_seconds() - cpu, time.perf_counter() - wall)})
        if out.failure is None and not restored and self.cache is not None and out.cache_addresses:
            before, after = item.clip.media_files, out.clip.media_files
            added = {k: v for k, v in after.items() if before.get(k) != v}
            self.cache.put(out.cache_addresses[self.index], out.clip.fields.get(self.stage.group.name), added)
        yield out


class ClipStages(beam.PTransform):
    """The per-clip stages in run order (pipelines.stages.CORE_STAGES, then plug-ins), behind the
    per-clip cache when one is given."""

    def __init__(self, stages: list[Stage], cache_root: str | None = None, need_samples: bool = False):
        super().__init__()
        self.stages, self.cache_root, self.need_samples = stages, cache_root, need_samples

    def expand(self, clips: beam.PCollection) -> beam.PCollection:
        if self.cache_root:
            clips = clips | "Restore" >> beam.ParDo(RestoreFn(self.cache_root, chain_digests(self.stages), [s.group.name for s in self.stages]))
        last = len(self.stages) if self.need_samples else len(self.stages) - 1  # need_samples: decode even when all is cached
        for index, stage in enumerate(self.stages):
            fn = StageFn(stage, index, last, self.cache_root, provides_samples=index == 0)
            clips = clips | stage.name.capitalize() >> beam.ParDo(fn)
        return clips


class SpillMediaFn(beam.DoFn):
    """Write each clip's media files (FLAC, crops) to the staging area and carry only their name:
    the grouping steps that follow (annotation join, corpus statistics, shard plan) then hold records,
    not media, so a build's memory does not grow with the corpus."""

    def __init__(self, staging: StagingArea):
        self.staging = staging

    def process(self, item: Envelope) -> Iterable[Envelope]:
        clip = item.clip
        if item.failure is not None or not clip.media_files:
            yield item
            return
        name = hashlib.sha256(f"{clip.key}\x00{clip.source_path}".encode("utf-8", "surrogatepass")).hexdigest()
        rel = f".media/{name[:2]}/{name}.tar"
        self.staging.write(rel, encode_entry(None, clip.media_files))
        yield dataclasses.replace(item, clip=dataclasses.replace(clip, media_files={}), media_spill=rel, media_bytes=media_bytes(clip.media_files))


def spilled_media(staging: StagingArea, rel: str | None) -> dict[str, bytes]:
    return decode_entry(staging.read(rel))[1] if rel else {}


class Outcome(NamedTuple):
    """What became of one input: a record with its media files (or where they were spilled), or a failure row."""

    key: str
    record: dict[str, Any] | None
    media_files: dict[str, bytes]
    failure: dict[str, str] | None
    media_spill: str | None = None
    media_bytes: int = 0
    stats: dict[str, float] | None = None  # the clip's run statistics


class RecordFn(beam.DoFn):
    """Assemble, validate and split-assign the record of a clip whose steps all ran."""

    def __init__(self, schema: RecordSchema, prov: dict[str, Any], split: Any, staging: StagingArea, official_splits: dict[str, str] | None = None):
        self.schema, self.prov, self.split, self.staging, self.official = schema, prov, split, staging, official_splits or {}

    def setup(self) -> None:
        s = self.split
        self.assign = SplitAssigner(s.ratios, s.group_by, s.group_pattern, s.split_table, s.seed, self.official)
        self.progress = ProgressLog(self.staging)

    def teardown(self) -> None:
        self.progress.flush()

    def process(self, item: Envelope) -> Iterable[Outcome]:
        outcome = self._outcome(item)
        failed = outcome.failure is not None
        self.progress.mark("failed" if failed else "ok")
        (FAILURES_MADE if failed else RECORDS_MADE).inc()
        yield outcome

    def _outcome(self, item: Envelope) -> Outcome:
        clip = item.clip
        if item.failure is not None:
            return Outcome(clip.key, None, {}, item.failure, stats=item.stats)
        try:
            record = finish_record(clip, self.schema, self.prov)
            record["split"] = self.assign(record)
            self.schema.validate(record)
            record = self.schema.conform(record)
        except Exception as e:  # noqa: BLE001
            return Outcome(clip.key, None, {}, failure_row(clip.key, clip.source_path, "record", e), stats=item.stats)
        return Outcome(record["key"], record, clip.media_files, None, item.media_spill, item.media_bytes, item.stats)


class MakeRecords(beam.PTransform):
    """Envelopes -> outcomes: a validated, split-assigned record or the clip's failure row."""

    def __init__(self, schema: RecordSchema, prov: dict[str, Any], split: Any, staging: StagingArea, official_splits: dict[str, str] | None = None):
        super().__init__()
        self.fn = RecordFn(schema, prov, split, staging, official_splits)

    def expand(self, clips: beam.PCollection) -> beam.PCollection:
        return clips | "Record" >> beam.ParDo(self.fn)


class Ticket(NamedTuple):
    """An outcome parked in the staging area, as the shard planning moves it (every outcome at once,
    in an in-memory runner): its key, its group (a split or the failures), its bytes and its file."""

    key: str
    group: str
    size: int
    parked: str


def park_outcome(outcome: Outcome, staging: StagingArea) -> Ticket:
    """The outcome written to the staging area; its ticket is what the shard planning groups."""
    group, (key, size) = _group_of(outcome)
    source_path = (outcome.record or outcome.failure or {}).get("source_path", "")
    return Ticket(key, group, size, park(staging, "outcome", key, source_path, outcome))


def _group_of(outcome: Outcome) -> tuple[str, tuple[str, int]]:
    if outcome.failure is not None:
        return FAILURES_SHARD[0], (outcome.key, 0)
    return "split:" + outcome.record["split"], (outcome.key, sample_bytes(outcome.record, outcome.media_files, outcome.media_bytes))


def _shard_assignments(group_sizes: tuple[str, Iterable[tuple[str, int]]], max_records: int, max_bytes: int) -> Iterable[tuple[str, tuple[str, int, int]]]:
    group, sizes = group_sizes
    if group == FAILURES_SHARD[0]:
        for key, _ in sizes:
            yield key, FAILURES_SHARD
        return
    split = group.removeprefix("split:")
    shards = plan_shards(sizes, max_records, max_bytes)
    for index, keys in enumerate(shards):
        for key in keys:
            yield key, (split, index, len(shards))


def write_failures(rows: list[dict[str, str]], path: str | Path) -> None:
    rows = sorted(rows, key=lambda r: (r["source_path"], r["stage"], r["key"]))
    pq.write_table(pa.Table.from_pylist(rows, schema=FAILURE_SCHEMA), path, compression="zstd")


class WriteShardFn(beam.DoFn):
    """Write one Parquet file and one tar with the same keys, named `{split}-{i}-of-{n}`; or, for the
    failures group, failures.parquet. Beside them goes `.shards/<name>.json`: each file's sha256 and
    size (the manifest needs not read the shards again) and the run statistics of the shard's clips.
    A shard's samples are read back one at a time in key order and written as they come: what a
    writer holds is one Parquet row group, not the shard. Yields the name written."""

    def __init__(self, staging: StagingArea, schema: RecordSchema, row_group_size: int):
        self.staging, self.schema, self.row_group_size = staging, schema, row_group_size

    def process(self, shard: tuple[tuple[str, int, int], Iterable[tuple[str, str]]]) -> Iterable[str]:
        target, keyed = shard
        parked = [name for _, name in sorted(keyed)]
        if tuple(target) == FAILURES_SHARD:
            outcomes: list[Outcome] = [unpark(self.staging, name) for name in parked]  # failure rows: small
            files = {FAILURES_FILE: self._write(FAILURES_FILE, lambda path: write_failures([o.failure for o in outcomes], path))}
            self._info(FAILURES_SHARD[0], files, add_up(o.stats or {} for o in outcomes), 0, len(outcomes))
            yield FAILURES_FILE
            return
        name = shard_name(*target)
        table, tar = f"data/{name}.parquet", f"media/{name}.tar"
        stats: list[dict[str, float]] = []
        with self.staging.writing(table) as table_path, self.staging.writing(tar) as tar_path:
            writer = ShardWriter(table_path, tar_path, self.schema.arrow_schema(), self.row_group_size)
            for rel in parked:
                outcome: Outcome = unpark(self.staging, rel)
                writer.add(outcome.record, {**outcome.media_files, **spilled_media(self.staging, outcome.media_spill)})
                stats.append(outcome.stats or {})
            writer.close()
            files = {table: _file_facts(table_path), tar: _file_facts(tar_path)}
        self._info(name, files, add_up(stats), len(parked), 0)
        yield name

    def _write(self, rel: str, write: Callable[[str], None]) -> dict[str, Any]:
        with self.staging.writing(rel) as path:
            write(path)
            return _file_facts(path)

    def _info(self, name: str, files: dict[str, Any], stats: dict[str, float], records: int, failures: int) -> None:
        info = {"files": files, "stats": stats, "records": records, "failures": failures}
        self.staging.write(f"{SHARD_INFO}/{name}.json", json.dumps(info, sort_keys=True).encode())


def _file_facts(path: str) -> dict[str, Any]:
    return {"sha256": sha256_file(path), "bytes": os.path.getsize(path)}


class WriteShards(beam.PTransform):
    """Outcomes -> shard files: per split, keys in order cut by count and bytes; failures in one table.
    Each outcome is parked first, so the groupings move tickets, not records and statistics; the plan
    and the tickets meet in a CoGroupByKey (no side input), and this is the graph's one sink."""

    def __init__(self, staging: StagingArea, schema: RecordSchema, shards: Any):
        super().__init__()
        self.staging, self.schema, self.shards = staging, schema, shards

    def expand(self, outcomes: beam.PCollection) -> beam.PCollection:
        sh = self.shards
        tickets = outcomes | "Park" >> beam.Map(park_outcome, self.staging)
        plan = (
            tickets
            | "Sizes" >> beam.Map(lambda t: (t.group, (t.key, t.size)))
            | "ByGroup" >> beam.GroupByKey()
            | "Plan" >> beam.FlatMap(_shard_assignments, sh.max_records, sh.max_bytes)
        )
        keyed = tickets | "ByKey" >> beam.Map(lambda t: (t.key, t.parked))
        return (
            {"plan": plan, "outcomes": keyed}
            | "Join" >> beam.CoGroupByKey()
            | "ToShard" >> beam.FlatMapTuple(lambda key, g: [(tuple(g["plan"][0]), (key, o)) for o in g["outcomes"]])
            | "ByShard" >> beam.GroupByKey()
            | "Write" >> beam.ParDo(WriteShardFn(self.staging, self.schema, sh.parquet_row_group_size))
        )
