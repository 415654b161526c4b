import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import webdataset as wds
from emer_builder.schemas import SCHEMA
from emer_builder.transforms.shards import ShardWriter, plan_shards, sample_members, write_parquet, write_tar


def test_plan_is_bounded_by_count_and_bytes_and_ignores_input_order():
    sizes = [(f"k{i:02d}", 100) for i in range(10)]
    assert plan_shards(sizes, max_records=4, max_bytes=10**9) == [[f"k{i:02d}" for i in r] for r in (range(0, 4), range(4, 8), range(8, 10))]
    assert plan_shards(reversed(sizes), max_records=100, max_bytes=250) == [[f"k{i:02d}" for i in (a, a + 1)] for a in range(0, 10, 2)]
    assert plan_shards([("big", 10_000), ("small", 1)], max_records=10, max_bytes=500) == [["big"], ["small"]]
    assert plan_shards([], 10, 10) == []


def test_tar_is_byte_identical_and_readable(tmp_path: Path):
    samples = [
        ({"key": "b_clip", "x": 1}, {"flac": b"fLaC....", "face_000.jpg": b"\xff\xd8jpeg"}),
        ({"key": "a_clip", "x": 2}, {"flac": b"fLaC!!!!"}),
    ]
    write_tar(tmp_path / "one.tar", samples)
    write_tar(tmp_path / "two.tar", list(reversed(samples)))
    assert (tmp_path / "one.tar").read_bytes() == (tmp_path / "two.tar").read_bytes()
    with tarfile.open(tmp_path / "one.tar") as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == ["a_clip.flac", "a_clip.json", "b_clip.face_000.jpg", "b_clip.flac", "b_clip.json"]
    assert {(m.mtime, m.uid, m.gid, m.uname, m.mode) for m in members} == {(0, 0, 0, "", 0o644)}
    got = [(s["__key__"], sorted(k for k in s if not k.startswith("__"))) for s in wds.WebDataset(str(tmp_path / "one.tar"), shardshuffle=False)]
    assert got == [("a_clip", ["flac", "json"]), ("b_clip", ["face_000.jpg", "flac", "json"])]


def test_sample_members_put_the_record_json_last_by_name():
    names = [n for n, _ in sample_members({"key": "k"}, {"flac": b"", "face_001.jpg": b"", "face_000.jpg": b""})]
    assert names == ["k.face_000.jpg", "k.face_001.jpg", "k.flac", "k.json"]


@pytest.mark.parametrize("suffix", ["json", "../escape.jpg", "a/b.jpg", "", ".hidden", "x..jpg"])
def test_unsafe_member_names_are_refused(suffix: str):
    with pytest.raises(ValueError, match="unsafe tar member suffix"):
        sample_members({"key": "k"}, {suffix: b"data"})


def test_parquet_is_sorted_by_key_and_deterministic(demo_build, tmp_path: Path):
    out, _ = demo_build
    rows = pq.read_table(next((out / "data").glob("train-*.parquet"))).to_pylist()
    write_parquet(tmp_path / "a.parquet", rows, SCHEMA.arrow_schema(), 2)
    write_parquet(tmp_path / "b.parquet", list(reversed(rows)), SCHEMA.arrow_schema(), 2)
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()
    meta = pq.ParquetFile(tmp_path / "a.parquet").metadata
    assert meta.num_rows == len(rows) and meta.num_row_groups == (len(rows) + 1) // 2
    assert pq.read_table(tmp_path / "a.parquet").column("key").to_pylist() == sorted(r["key"] for r in rows)


@pytest.mark.parametrize(("count", "row_group_size"), [(0, 3), (1, 3), (3, 3), (7, 3), (7, 100)])
def test_a_streamed_shard_is_the_table_written_at_once(demo_build, tmp_path: Path, count: int, row_group_size: int):
    """ShardWriter writes a row group at a time; the bytes are those of pyarrow's one-shot write of the whole
    table (an empty shard too), so streaming changed no shard."""
    out, _ = demo_build
    rows = sorted(pq.read_table(next((out / "data").glob("train-*.parquet"))).to_pylist(), key=lambda r: r["key"])
    rows = (rows * 3)[:count]
    rows = [{**r, "key": f"{i:03d}_{r['key']}"} for i, r in enumerate(rows)]
    schema = SCHEMA.arrow_schema()
    writer = ShardWriter(tmp_path / "s.parquet", tmp_path / "s.tar", schema, row_group_size)
    for r in rows:
        writer.add(r, {"flac": r["key"].encode()})
    writer.close()
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), tmp_path / "whole.parquet", row_group_size=row_group_size, compression="zstd")
    assert (tmp_path / "s.parquet").read_bytes() == (tmp_path / "whole.parquet").read_bytes()
    with tarfile.open(tmp_path / "s.tar") as tar:
        assert [m.name for m in tar.getmembers()] == [f"{r['key']}.{s}" for r in rows for s in ("flac", "json")]


def test_a_streamed_shard_refuses_samples_out_of_key_order(tmp_path: Path):
    writer = ShardWriter(tmp_path / "s.parquet", tmp_path / "s.tar", SCHEMA.arrow_schema(), 10)
    writer.add(SCHEMA.conform({"key": "b", "split": "train", "source_path": "b.mp4"}), {})
    with pytest.raises(ValueError, match="out of key order"):
        writer.add(SCHEMA.conform({"key": "a", "split": "train", "source_path": "a.mp4"}), {})
