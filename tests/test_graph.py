"""The composite transforms of the build graph on small in-memory inputs (TestPipeline + assert_that),
and a guard that keeps constructs some runners execute wrongly out of the graph."""

from __future__ import annotations

import dataclasses
import tarfile
import tracemalloc
from pathlib import Path

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to
from emer_builder.core.config import BuildConfig, config_from_dict
from emer_builder.core.errors import ClipError
from emer_builder.core.hashing import sha256_file
from emer_builder.pipelines.build import input_clips
from emer_builder.pipelines.envelope import Envelope, failed_early
from emer_builder.pipelines.explain import Explain
from emer_builder.pipelines.explain_setup import prepare
from emer_builder.pipelines.graph import ClipStages, MakeRecords, Outcome, WriteShardFn, WriteShards, guarded
from emer_builder.pipelines.progress import count_marks
from emer_builder.pipelines.run import GraphJob, run_pipeline
from emer_builder.pipelines.scratch import park
from emer_builder.pipelines.stages import record_schema
from emer_builder.pipelines.staging import StagingArea
from emer_builder.schemas import Field, FieldGroup
from emer_builder.transforms.clip import Clip, Stage
from emer_builder.transforms.clip_cache import encode_entry
from emer_builder.transforms.keys import VideoInput

LOUDNESS = FieldGroup("loudness", "test group", (Field("rms", pa.float32(), "root mean square of the samples"),))


class LoudnessStage(Stage):
    """A real little stage: RMS of the decoded audio; clips without audio fail."""

    name = "loudness"
    group = LOUDNESS

    def process(self, clip: Clip) -> None:
        if clip.audio is None:
            raise ClipError("no audio to measure")
        clip.fields["loudness"] = {"rms": float(np.sqrt(np.mean(np.square(clip.audio))))}


class Broken(Stage):
    name = "broken"
    group = LOUDNESS

    def process(self, clip: Clip) -> None:
        raise RuntimeError("library exploded")


def _clips() -> list[Envelope]:
    return [
        Envelope(Clip("a", "/v/a.mp4", "a.mp4", audio=np.full(1600, 0.5, dtype=np.float32))),
        Envelope(Clip("b", "/v/b.mp4", "b.mp4", audio=None)),
        failed_early({"key": "c", "source_path": "c.mp4", "stage": "match", "error_class": "ClipError", "message": "collides"}),
    ]


def test_guarded_copies_and_never_mutates_its_input():
    clip = _clips()[0]
    out = guarded(clip, "loudness", LoudnessStage().process)
    assert out.clip.fields == {"loudness": {"rms": pytest.approx(0.5)}} and clip.clip.fields == {}
    failed = guarded(_clips()[1], "loudness", LoudnessStage().process)
    assert failed.failure["stage"] == "loudness" and failed.failure["message"] == "no audio to measure"
    already = _clips()[2]
    assert guarded(already, "loudness", Broken().process) is already


def test_clip_stages_pass_failures_through_and_keep_the_first(tmp_path: Path):
    with BeamTestPipeline() as p:
        out = p | beam.Create(_clips()) | ClipStages([LoudnessStage(), Broken()])
        summary = out | beam.Map(lambda c: (c.key, c.failure and (c.failure["stage"], c.failure["message"]), sorted(k for k in c.stats if not k.startswith(("cpu_s", "wall_s", "load")))))
        assert_that(
            summary,
            equal_to([
                ("a", ("broken", "RuntimeError: library exploded"), ["ran_broken", "ran_loudness"]),  # the statistics travel with the clip
                ("b", ("loudness", "no audio to measure"), ["ran_loudness"]),
                ("c", ("match", "collides"), []),
            ]),
        )


def _record_inputs() -> tuple[BuildConfig, object, dict]:
    config = config_from_dict({"split": {"ratios": {"train": 1.0}}})
    schema = record_schema(config).with_group(LOUDNESS)
    prov = {g.name: None for g in schema.groups if g.name == "provenance"}
    return config, schema, prov


def test_make_records_validates_and_turns_bad_records_into_failures(tmp_path: Path):
    config, schema, _ = _record_inputs()
    good = Envelope(Clip("a", "/v/a.mp4", "a.mp4", fields={"loudness": {"rms": 0.5}}))
    bad = Envelope(Clip("b", "/v/b.mp4", "b.mp4", fields={"loudness": {"rms": "loud"}}))  # not a float: the schema says no
    with BeamTestPipeline() as p:
        outcomes = p | beam.Create([good, bad, _clips()[2]]) | MakeRecords(schema, None, config.split, StagingArea(tmp_path))
        summary = outcomes | beam.Map(lambda o: (o.key, o.record["split"] if o.record else None, o.failure["stage"] if o.failure else None))
        assert_that(summary, equal_to([("a", "train", None), ("b", None, "record"), ("c", None, "match")]))
    assert count_marks(StagingArea(tmp_path)) == (3, 2)  # the live progress counters, written whole at teardown


def test_write_shards_writes_every_outcome_once_in_key_order(tmp_path: Path):
    config, schema, _ = _record_inputs()
    config = dataclasses.replace(config, shards=dataclasses.replace(config.shards, max_records=2))
    records = []
    for key in ("k3", "k1", "k2", "k4", "k5"):
        record = {g.name: None for g in schema.groups} | {"key": key, "split": "train", "source_path": f"{key}.mp4", "loudness": {"rms": 0.25}}
        records.append(Outcome(key, schema.conform(record), {"flac": key.encode()}, None, stats={"ran_loudness": 1, "cpu_s:loudness": 0.25}))
    failure = Outcome("bad", None, {}, {"key": "bad", "source_path": "bad.mp4", "stage": "decode", "error_class": "ClipError", "message": "empty"}, stats={"ran_decode": 1})
    (tmp_path / "data").mkdir()
    (tmp_path / "media").mkdir()
    with BeamTestPipeline() as p:
        names = p | beam.Create([*records, failure]) | WriteShards(StagingArea(tmp_path), schema, config.shards)
        assert_that(names, equal_to(["failures.parquet", "train-00000-of-00003", "train-00001-of-00003", "train-00002-of-00003"]))
    keys = [pq.read_table(f, columns=["key"]).column("key").to_pylist() for f in sorted((tmp_path / "data").glob("*.parquet"))]
    assert keys == [["k1", "k2"], ["k3", "k4"], ["k5"]]
    assert pq.read_table(tmp_path / "failures.parquet").to_pylist()[0]["message"] == "empty"
    from emer_builder.pipelines.run import shards_written

    written = shards_written(StagingArea(tmp_path))  # what the driver reads instead of the workers' files
    assert (written["records"], written["failures"]) == (5, 1)
    assert written["stats"] == {"ran_loudness": 5, "cpu_s:loudness": 1.25, "ran_decode": 1}
    on_disk = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file() and not p.relative_to(tmp_path).parts[0].startswith("."))
    assert sorted(written["files"]) == on_disk
    assert all(written["files"][rel] == {"sha256": sha256_file(tmp_path / rel), "bytes": (tmp_path / rel).stat().st_size} for rel in on_disk)


def test_a_shard_is_written_a_sample_at_a_time_not_held_whole(tmp_path: Path):
    """Issue 22: the shard writer reads a shard's parked outcomes and spilled media back one by one in key
    order, so its memory is a sample and a row group, not the shard (300 samples of 100 KB: 30 MB if held);
    the table is the one pyarrow writes from the whole shard at once."""
    _, schema, _ = _record_inputs()
    staging = StagingArea(tmp_path)
    for folder in ("data", "media", ".parked", ".media", ".shards"):
        (tmp_path / folder).mkdir()
    keyed, rows = [], []
    for i in range(300):
        key = f"k{(i * 7919) % 300:04d}"  # not in key order
        record = schema.conform(
            {g.name: None for g in schema.groups} | {"key": key, "split": "train", "source_path": f"{key}.mp4", "loudness": {"rms": i / 300}}
        )
        spill = f".media/{key}.tar"
        staging.write(spill, encode_entry(None, {"flac": np.random.default_rng(i).bytes(100_000)}))
        keyed.append((key, park(staging, "outcome", key, f"{key}.mp4", Outcome(key, record, {}, None, spill, 101_024, {"ran_loudness": 1}))))
        rows.append(record)
    fn = WriteShardFn(staging, schema, row_group_size=10)
    tracemalloc.start()
    try:
        assert list(fn.process((("train", 0, 1), keyed))) == ["train-00000-of-00001"]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 3_000_000, f"the writer held {peak / 1e6:.1f} MB at once"
    pq.write_table(
        pa.Table.from_pylist(sorted(rows, key=lambda r: r["key"]), schema=schema.arrow_schema()),
        tmp_path / "whole.parquet",
        row_group_size=10,
        compression="zstd",
    )
    assert (tmp_path / "data/train-00000-of-00001.parquet").read_bytes() == (tmp_path / "whole.parquet").read_bytes()
    with tarfile.open(tmp_path / "media/train-00000-of-00001.tar") as tar:
        names = tar.getnames()
    assert names == [f"k{i:04d}.{suffix}" for i in range(300) for suffix in ("flac", "json")]


def test_explain_joins_rows_and_corpus_without_side_inputs(tmp_path: Path):
    config = BuildConfig()
    plan = prepare(config)
    fields = {"media": {"duration_s": 2.0, "has_audio": True}, "transcript": {"text": "I am so happy today", "language": "en", "segments": []}, "faces": {"crops": [], "expression_timeline": []}, "acoustics": None}
    clips = [Envelope(Clip(k, f"/v/{k}.mp4", f"{k}.mp4", fields=dict(fields))) for k in ("x", "y", "z")]
    with BeamTestPipeline() as p:
        out = p | beam.Create(clips) | Explain(plan, {c.key: c.key for c in clips}, config.explanation.llm, "en", [c.key for c in clips], StagingArea(tmp_path))
        summary = out | beam.Map(lambda c: (c.key, c.failure is None, c.clip.fields["explanation"]["lexical_clue"]["source"] if c.failure is None else None))
        assert_that(summary, equal_to([("x", True, "rules:1"), ("y", True, "rules:1"), ("z", True, "rules:1")]))


def test_rules_explain_a_batch_on_the_calling_thread_whose_clock_is_the_stage_s(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Without an LLM the clips are explained one at a time on the worker's own thread: no thread pool
    per batch, and the explanation's CPU lands in its stage's seconds (a pool thread's was counted nowhere)."""
    import threading
    import time

    from emer_builder.pipelines import explain

    ran_on = set()

    def busy(*args, **kwargs):
        ran_on.add(threading.get_ident())
        end = time.thread_time() + 0.02
        while time.thread_time() < end:
            pass
        return {"source": "test"}

    monkeypatch.setattr(explain, "explain_clip", busy)
    from emer_builder.pipelines.scratch import park_envelope

    staging = StagingArea(tmp_path)
    clips = [Envelope(Clip(k, f"/v/{k}.mp4", f"{k}.mp4", fields={"media": {}})) for k in ("x", "y", "z")]
    fn = explain.ExplainFn(prepare(BuildConfig()), "en", 1, staging)
    fn.setup()
    out = list(fn.process((0, {"clips": [(*park_envelope(c, staging), c.key) for c in clips], "rows": [], "corpus": []})))
    assert [o.clip.fields["explanation"] for o in out] == [{"source": "test"}] * 3
    assert ran_on == {threading.get_ident()}
    assert out[0].stats["cpu_s:explanation"] >= 0.06


FORBIDDEN = ("BatchElements", "Reshuffle", "GroupIntoBatches")


def test_the_graph_keeps_to_what_every_runner_executes(tmp_path: Path):
    """No tagged outputs, no side inputs, no BatchElements/Reshuffle, exactly one sink: the DaskRunner
    of Beam 2.77 gets each of these wrong (see offline notes), so they must not come back."""
    config = config_from_dict({"transcript": {"model": "tiny.en"}})
    schema = record_schema(config)
    plan = prepare(config)
    inputs = [VideoInput("a", "/v/a.mp4", "a.mp4"), VideoInput("b", "/v/b.mp4", "b.mp4")]
    captured = {}

    class Capture(beam.Pipeline):
        def run(self, test_runner_api="AUTO"):  # inspect instead of running
            captured["pipeline"] = self
            return None

        def __exit__(self, *exc):
            self.run()

    import emer_builder.pipelines.run as run_module

    real = run_module.beam.Pipeline
    run_module.beam.Pipeline = Capture
    try:
        run_pipeline(GraphJob(input_clips(inputs, []), config, schema, [LoudnessStage()], provenance_stub(), plan, {"a": "a", "b": "b"}), StagingArea(tmp_path), 1, [])
    finally:
        run_module.beam.Pipeline = real
    proto = captured["pipeline"].to_runner_api()
    consumed = {pc for t in proto.components.transforms.values() for pc in t.inputs.values()}
    leaves = []
    for t in proto.components.transforms.values():
        own = not (t.unique_name.startswith(("Inputs/", "Explain/AnnotationRows/")))  # Create's own internals are not ours
        assert not (own and any(word in t.unique_name for word in FORBIDDEN)), t.unique_name
        if t.spec.urn == "beam:transform:pardo:v1":
            from apache_beam.portability.api import beam_runner_api_pb2

            payload = beam_runner_api_pb2.ParDoPayload.FromString(t.spec.payload)
            assert not payload.side_inputs, f"{t.unique_name} reads a side input"
            assert len(t.outputs) <= 1, f"{t.unique_name} has tagged outputs"
        if not t.subtransforms and t.outputs and not set(t.outputs.values()) & consumed:
            leaves.append(t.unique_name)
    assert leaves == ["WriteShards/Write"]


def provenance_stub() -> dict:
    return {"tool": "emer-builder test", "schema_version": "x", "config_hash": "", "whisper_model": None, "face_detector": None, "expression_model": None, "opensmile": None, "explanation_sources": "", "emotion_wheel": None}


def _captured_proto(tmp_path: Path, count: int) -> bytes:
    """The pipeline proto of a build of `count` inputs (the graph built, not run)."""
    config = config_from_dict({"transcript": {"model": "tiny.en"}})
    inputs = [VideoInput(f"k{i:05d}", f"/v/k{i:05d}.mp4", f"k{i:05d}.mp4") for i in range(count)]
    captured = {}

    class Capture(beam.Pipeline):
        def __exit__(self, *exc):
            captured["proto"] = self.to_runner_api().SerializeToString()

    import emer_builder.pipelines.run as run_module

    real, run_module.beam.Pipeline = run_module.beam.Pipeline, Capture
    try:
        staging = tmp_path / str(count)
        staging.mkdir()
        run_pipeline(GraphJob(input_clips(inputs, []), config, record_schema(config), [LoudnessStage()], provenance_stub(), prepare(config), {}), StagingArea(staging), 1, [])
    finally:
        run_module.beam.Pipeline = real
    return captured["proto"]


def test_the_pipeline_holds_the_names_of_input_parts_not_the_inputs(tmp_path: Path):
    """A Create of every input embeds them all in the pipeline (and the runner's copies of it): memory
    that grows with the corpus. The workers read the inputs in at most PART_COUNT parts instead."""
    few, many = _captured_proto(tmp_path, 3), _captured_proto(tmp_path, 2000)
    assert len(many) - len(few) < 20_000, (len(few), len(many))  # 2000 envelopes pickled are far more
    assert len(list((tmp_path / "2000" / ".inputs").iterdir())) == 250  # PART_COUNT parts of 8 (the last one shorter)


def test_clips_are_parked_while_grouped_and_explained_as_with_the_whole_corpus(tmp_path: Path):
    """What the explanation's groupings move is a name (no fields, statistics or media), and the rules'
    percentiles, placed per batch, are those of the whole corpus' statistics."""
    from emer_builder.pipelines.scratch import park_envelope, unparked
    from emer_builder.transforms.rules_explainer import CorpusStats, measures_of

    config = BuildConfig()
    staging = StagingArea(tmp_path)
    prosody = [{"f0_mean_semitone": 80.0 + i % 7, "f0_std_semitone": float("nan") if i == 3 else 2.0 + i % 3, "loudness_mean": 0.5, "speech_rate_wps": 2.0 + i, "voiced_ratio": 0.8} for i in range(20)]
    fields = [{"media": {"duration_s": 2.0, "has_audio": True}, "transcript": {"text": "I am so happy", "language": "en", "segments": []}, "acoustics": {"prosody": p, "egemaps": {}}} for p in prosody]
    clips = [Envelope(Clip(f"c{i:02d}", f"/v/c{i:02d}.mp4", f"c{i:02d}.mp4", fields=f), stats={"ran_decode": 1, "cpu_s:decode": 0.5}) for i, f in enumerate(fields)]
    ticket = park_envelope(clips[0], staging)
    assert ticket == ("c00", "c00.mp4") and type(ticket) is tuple  # plain strings: Beam's coder does not fall back to pickle
    assert len(list((tmp_path / ".parked").iterdir())) == 1
    assert unparked(ticket, staging) == clips[0]
    corpus = CorpusStats.from_measures([measures_of(c.clip.fields) for c in clips])
    with BeamTestPipeline() as p:
        out = p | beam.Create(clips) | Explain(prepare(config), {}, config.explanation.llm, "en", [c.key for c in clips], staging)
        evidence = out | beam.FlatMap(lambda c: [(e["measure"], e["value"], e["corpus_percentile"]) for e in c.clip.fields["explanation"]["evidence"] if e["corpus_percentile"] is not None])
        expected = {(m, v, corpus.percentile(m, v)) for c in clips for m, v in measures_of(c.clip.fields).items()}
        assert_that(evidence | beam.Filter(lambda e: e[1] == e[1]), lambda got: _all_in(got, {e for e in expected if e[1] == e[1]}))


def _all_in(got: list, expected: set) -> None:
    assert got and set(got) <= expected, set(got) - expected


def test_annotation_rows_go_to_the_batches_whose_clips_they_name():
    """The driver sends each annotation row only to the batches holding a clip named by it (through the
    names a corpus adapter gives, else the key); a row no clip names is not sent."""
    from emer_builder.pipelines.explain import batch_of, rows_by_batch

    keys = [f"clip{i}" for i in range(40)]
    names = {"clip3": "sample_3", "clip4": "sample_3"}  # two utterances named by one row
    rows = {"sample_3": {"label": {None: "happy"}}, "clip7": {"label": {None: "sad"}}, "nobody": {"label": {None: "calm"}}}
    sent = rows_by_batch(keys, names, rows, batches=5)
    expected = sorted({(batch_of("clip3", 5), "sample_3"), (batch_of("clip4", 5), "sample_3"), (batch_of("clip7", 5), "clip7")})
    assert [(b, name) for b, (name, _) in sent] == expected
    assert all(values == rows[name] for _, (name, values) in sent)
