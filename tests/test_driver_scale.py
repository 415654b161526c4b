"""The driver's work after the runner stays bounded as a build grows (issue 22): the report's gallery is a bounded,
deterministic sample that opens only the shards holding it, while its tables and plots still count every record;
the manifest, the completeness check and the cache's record of use stream the Parquet tables in batches.
bench/driver_bench.py measures the same steps at 10^3..10^5 records."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from emer_builder.core.config import BuildConfig
from emer_builder.core.errors import ClipError
from emer_builder.core.failures import failure_row
from emer_builder.release import manifest as manifest_module
from emer_builder.release.manifest import write_manifest
from emer_builder.report import collect, tally, write, write_report
from emer_builder.report.tally import Sample, gallery_shards
from emer_builder.schemas import SCHEMA
from emer_builder.schemas.v1 import FAILURE_SCHEMA
from emer_builder.transforms.shards import write_parquet, write_tar

from tests.test_report import _jpeg, _record


def staged_build(out: Path, records: int, shard: int, failures: int = 0) -> dict[str, Any]:
    """A build folder as `emer build` lays it out (Parquet + tar shards of `shard` records, failures.parquet,
    manifest.json), one tiny face crop per record with a face."""
    rng = random.Random(5)
    face = _jpeg(rng, side=32)
    rows = [_record(i, rng, 0 if i % 11 == 3 else 1, wheel=False) for i in range(records)]
    for r in rows:
        r["media"]["sha256"] = hashlib.sha256(r["key"].encode()).hexdigest()
    (out / "data").mkdir(parents=True)
    (out / "media").mkdir()
    schema = SCHEMA.arrow_schema()
    for split in ("train", "validation", "test"):
        mine = sorted((r for r in rows if r["split"] == split), key=lambda r: r["key"])
        chunks = [mine[i : i + shard] for i in range(0, len(mine), shard)]
        for n, chunk in enumerate(chunks):
            name = f"{split}-{n:05d}-of-{len(chunks):05d}"
            conformed = pa.Table.from_pylist(chunk, schema=schema).to_pylist()
            write_parquet(out / "data" / f"{name}.parquet", conformed, schema, 7)  # several row groups per table
            write_tar(out / "media" / f"{name}.tar", [(r, {"face_000.jpg": face} if r["faces"]["crops"] else {}) for r in conformed])
    fail_rows = [failure_row(f"bad_{i:04d}", f"videos/bad_{i:04d}.mp4", "decode" if i % 3 else "faces", ClipError(f"no video stream ({i % 4})")) for i in range(failures)]
    pq.write_table(pa.Table.from_pylist(fail_rows, schema=FAILURE_SCHEMA), out / "failures.parquet", compression="zstd")
    prov = {"tool": "emer-builder test", "schema_version": SCHEMA.version, "emotion_wheel": None}
    return write_manifest(out, Path("/videos"), BuildConfig(), SCHEMA, prov, inputs=records + failures, skipped=[])


def _blob(html: str) -> dict[str, Any]:
    return json.loads(re.search(r'<script type="application/json" id="report-data">(.*?)</script>', html, re.S).group(1))


@pytest.fixture
def small_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bounds small enough for a build of a few hundred records: 30 records per split from at least 3 shards, 5 failure rows."""
    monkeypatch.setattr(tally, "GALLERY_PER_SPLIT", 30)
    monkeypatch.setattr(tally, "GALLERY_SHARDS", 3)
    monkeypatch.setattr(tally, "GALLERY_FAILURES", 5)


@pytest.mark.slow
def test_the_gallery_is_a_bounded_sample_from_the_shards_that_hold_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, small_bounds: None):
    """A build larger than the bound: each split's gallery holds at most the bound, chosen by key hash from a few
    shards; only the tar shards holding a gallery record are opened; the tables, tiles and plots count every record."""
    out = tmp_path / "out"
    manifest = staged_build(out, 400, shard=20, failures=12)  # train 320 records in 16 shards; validation and test 40 each in 2
    opened: list[str] = []
    real = write.samples

    def spy(split: str, path: Path, *args: Any, **kwargs: Any) -> Any:
        opened.append(Path(path).name)
        return real(split, path, *args, **kwargs)

    monkeypatch.setattr(write, "samples", spy)
    html = write_report(out).read_text()
    items = _blob(html)["items"]
    records = [it for it in items if it["kind"] == "record"]
    per_split = {s: [it for it in records if it["split"] == s] for s in manifest["splits"]}
    assert {s: len(v) for s, v in per_split.items()} == {"train": 30, "validation": 30, "test": 30}
    assert len([it for it in items if it["kind"] == "failure"]) == 5
    shard_of = {k: name for name in (p.stem for p in (out / "data").glob("*.parquet")) for k in pq.read_table(out / "data" / f"{name}.parquet", columns=["key"]).column("key").to_pylist()}
    holding = {shard_of[it["key"]] + ".tar" for it in records}
    assert sorted(opened) == sorted(holding)  # each shard holding a gallery record opened once, no other
    train_shards = {name for name in holding if name.startswith("train-")}
    assert 3 <= len(train_shards) < 16
    assert all(it["strip"] for it in records if it["crops"])  # the sampled records got their crops
    assert len(list((out / "report" / "crops").iterdir())) == sum(bool(it["crops"]) for it in records)
    # the overview and the plots count every record, not the sample
    assert re.search(r'data-split-count="train">320<', html) and "the gallery shows 30 of its 320 records" in html
    assert "the gallery shows 5 of the 12 failure rows" in html
    data = collect.load_build(out)
    assert data.tally.records == 400 and data.tally.splits["train"].records == 320 and len(data.tally.splits["train"].durations) == 320
    assert data.failure_tally.count == 12 and sum(r.count for r in data.failure_tally.reasons.values()) == 12
    splits_svg = (out / "report" / "plots" / "splits.svg").read_text()
    assert ">320<" in splits_svg and ">12<" in splits_svg
    # the same build gives the same sample
    first = (out / "report.html").read_bytes()
    write_report(out)
    assert (out / "report.html").read_bytes() == first


def test_a_split_within_the_bound_is_shown_whole(tmp_path: Path, small_bounds: None):
    out = tmp_path / "out"
    manifest = staged_build(out, 60, shard=4, failures=3)  # 48 train records in 12 shards: sampled; 6 + 6 whole
    items = _blob(write_report(out).read_text())["items"]
    shown = {s: sorted(it["key"] for it in items if it.get("split") == s) for s in manifest["splits"]}
    assert shown["validation"] == manifest["keys"]["validation"] and shown["test"] == manifest["keys"]["test"]
    assert len(shown["train"]) == 30 and set(shown["train"]) <= set(manifest["keys"]["train"])
    assert sorted(it["key"] for it in items if it["kind"] == "failure") == ["bad_0000", "bad_0001", "bad_0002"]


def test_sample_keeps_the_smallest_ranks_whatever_the_order():
    names = [f"clip_{i:05d}" for i in range(500)]
    kept = []
    for seed in (1, 2):
        sample = Sample(40)
        shuffled = names[:]
        random.Random(seed).shuffle(shuffled)
        for name in shuffled:
            sample.offer(name, name)
        kept.append(sorted(sample.items()))
        assert sample.sampled and len(sample.items()) == 40
    assert kept[0] == kept[1] == sorted(sorted(names, key=tally.rank)[:40])


def test_gallery_shards_are_few_and_hold_enough_records():
    rows = {f"train-{i:05d}-of-00100": 1000 for i in range(100)}
    chosen = gallery_shards(rows, per_split=1000, least=8)
    assert len(chosen) == 8 and chosen == gallery_shards(dict(reversed(rows.items())), per_split=1000, least=8)
    tiny = {f"train-{i:05d}-of-00500": 2 for i in range(500)}
    assert len(gallery_shards(tiny, per_split=100, least=8)) == 50  # enough shards to hold the sample
    assert gallery_shards({"a": 3, "b": 4}, per_split=10, least=1) == {"a", "b"}  # a split that fits: every shard


@pytest.fixture
def no_whole_tables(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reading a whole table at once fails: the driver's steps must stream them (small batches, so a table is many)."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a whole Parquet table was read at once")

    monkeypatch.setattr(pq, "read_table", refuse)
    monkeypatch.setattr(pq.ParquetFile, "read", refuse)
    monkeypatch.setattr(manifest_module, "BATCH_ROWS", 3)
    monkeypatch.setattr(collect, "BATCH_ROWS", 3)


def test_the_manifest_and_the_report_stream_the_tables(tmp_path: Path, no_whole_tables: None):
    """Counted in batches of 3 rows, the manifest says what it said counted whole (tests/test_report.py builds its
    fixtures with it), and the report reads the tables batch by batch too."""
    out = tmp_path / "out"
    manifest = staged_build(out, 45, shard=10, failures=4)
    assert manifest["counts"] == {"inputs": 49, "records": 45, "failures": 4, "skipped_files": 0, "truncated": 0}
    assert sum(map(len, manifest["keys"].values())) == 45 and all(keys == sorted(keys) for keys in manifest["keys"].values())
    assert manifest["stats"]["clips_with_faces"] == sum(1 for i in range(45) if i % 11 != 3)
    assert manifest["failures_by_stage"] == {"decode": 2, "faces": 2}
    assert manifest["stats"]["explanation_sources"]["visual_clue"] == {"human": 15, "rules:1": 30}
    items = _blob(write_report(out).read_text())["items"]
    assert len(items) == 49


def test_completeness_check_and_cache_record_stream_the_tables(tmp_path: Path, no_whole_tables: None, monkeypatch: pytest.MonkeyPatch):
    from emer_builder.core.errors import UserError
    from emer_builder.pipelines import run
    from emer_builder.pipelines.envelope import Envelope
    from emer_builder.transforms.clip import Clip
    from emer_builder.transforms.clip_cache import ClipCache, entry_address

    monkeypatch.setattr(run, "BATCH_ROWS", 3)
    out = tmp_path / "out"
    manifest = staged_build(out, 20, shard=6, failures=2)
    failures = pq.ParquetFile(out / "failures.parquet").iter_batches(columns=["key", "source_path"])
    written = [(k, f"videos/{k}.mp4") for keys in manifest["keys"].values() for k in keys] + [(f["key"], f["source_path"]) for b in failures for f in b.to_pylist()]
    clips = [Envelope(Clip(k, f"/v/{s}", s)) for k, s in sorted(written)]
    run.check_complete(out, clips)
    with pytest.raises(UserError, match=r"missing 1 \(videos/late\.mp4 \[late\]\); unexpected 1 \(videos/clip_00000\.mp4 \[clip_00000\]\)"):
        run.check_complete(out, [c for c in clips if c.key != "clip_00000"] + [Envelope(Clip("late", "/v/late.mp4", "videos/late.mp4"))])

    class Stage:  # chain_digests reads a stage's identity only
        name, cache_version = "decode", 1

        def model_id(self) -> None:
            return None

    config = BuildConfig()
    config = dataclasses.replace(config, cache=dataclasses.replace(config.cache, dir=str(tmp_path / "cache")))
    run.record_cache_use(config, [Stage()], out, clips, "label")
    (record,) = (tmp_path / "cache" / "builds").iterdir()
    addresses = json.loads(record.read_text())["addresses"]
    digest = run.chain_digests([Stage()])[0]
    sha = {r["key"]: r["media"]["sha256"] for path in sorted((out / "data").glob("*.parquet")) for b in pq.ParquetFile(path).iter_batches() for r in b.to_pylist()}
    assert sorted(addresses) == sorted(entry_address(sha[k], digest) for k in sha) and len(addresses) == 20
    assert ClipCache(str(tmp_path / "cache")).stats(1)["builds"] == 1
