"""End-to-end: the demo corpus built on the multi-process runner, read back with every reader."""

import hashlib
import json
import tarfile
from pathlib import Path

import datasets
import pyarrow.parquet as pq
import pytest
import webdataset as wds
from emer_builder.core.config import config_from_dict
from emer_builder.core.errors import UserError
from emer_builder.pipelines.build import build
from emer_builder.schemas import SCHEMA

from tests.wer import normalise, wer

DEMO_KEYS = ["jesper_intro", "no_face_dog", "sample_00000870", "sample_00000880", "sample_00000890", "sample_00000920", "sample_00000930"]


def _rows(out: Path) -> dict[str, dict]:
    rows = {}
    for path in sorted((out / "data").glob("*.parquet")):
        for row in pq.read_table(path).to_pylist():
            rows[row["key"]] = row
    return rows


def test_every_demo_clip_becomes_a_complete_record(demo_build, references):
    out, summary = demo_build
    rows = _rows(out)
    assert sorted(rows) == DEMO_KEYS
    assert summary.records == 7 and summary.failures == 0 and summary.inputs == 7
    assert pq.read_table(out / "failures.parquet").num_rows == 0
    for key, row in rows.items():
        assert row["transcript"]["language"] == "en"
        if key == "jesper_intro":  # only the film's opening words are known for sure
            assert normalise(row["transcript"]["text"])[:4] == ["hi", "my", "name", "is"]
        else:
            assert wer(references[key], row["transcript"]["text"]) <= 0.15, key
        assert len(row["acoustics"]["egemaps"]) == 88 and row["acoustics"]["prosody"]["speech_rate_wps"] > 0.5
        assert row["provenance"]["whisper_model"] == "base" and row["provenance"]["schema_version"] == SCHEMA.version
        assert row["split"] in ("train", "validation", "test")
    with_faces = {k for k, r in rows.items() if r["faces"]["crops"]}
    assert with_faces == set(DEMO_KEYS) - {"no_face_dog"}
    assert rows["no_face_dog"]["faces"]["reason"].startswith("no face in")
    assert summary.clips_with_faces == 6 and summary.languages == {"en": 7}
    assert summary.audio_hours * 3600 == pytest.approx(39.6, abs=0.5)
    assert set(summary.stage_seconds) == {"decode", "transcript", "faces", "acoustics", "video", "explanation"}
    # models load once per worker process (2 workers), never per clip
    assert set(summary.model_loads) == {"acoustics", "decode", "explanation", "faces", "transcript", "video"}
    assert all(1 <= n <= 2 for n in summary.model_loads.values()), summary.model_loads


def test_parquet_and_tar_shards_hold_the_same_keys(demo_build):
    out, _ = demo_build
    parquet_names = sorted(p.name.removesuffix(".parquet") for p in (out / "data").glob("*.parquet"))
    tar_names = sorted(p.name.removesuffix(".tar") for p in (out / "media").glob("*.tar"))
    assert parquet_names == tar_names and parquet_names
    for name in parquet_names:
        split = name.split("-")[0]
        table = pq.read_table(out / "data" / f"{name}.parquet")
        keys = table.column("key").to_pylist()
        assert set(table.column("split").to_pylist()) == {split}
        samples = list(wds.WebDataset(str(out / "media" / f"{name}.tar"), shardshuffle=False))
        assert [s["__key__"] for s in samples] == keys
        for sample, row in zip(samples, table.to_pylist(), strict=True):
            assert json.loads(sample["json"]) == row  # the json in the tar is the Parquet row
            assert sample["flac"][:4] == b"fLaC"
            faces = sorted(k for k in sample if k.startswith("face_"))
            assert faces == [f"face_{i:03d}.jpg" for i in range(len(row["faces"]["crops"]))]
            assert sample["mp4"][4:8] == b"ftyp" and len(sample["mp4"]) == row["video"]["size_bytes"]  # the clip's own video (video.mode clip)


def test_manifest_counts_and_checksums(demo_build):
    out, summary = demo_build
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"] == {"inputs": 7, "records": 7, "failures": 0, "skipped_files": 0, "truncated": 0}
    assert manifest["truncated"] == [] and summary.truncated == []
    assert manifest["splits"] == summary.records_per_split and sum(manifest["splits"].values()) == 7
    # everything but the cards, and what is made from the manifest or records the build's cost: the report, build.json, the lock
    derived = ("manifest.json", "README.md", "report.html", "build.json", ".emer-lock")
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and p.name not in derived and not p.relative_to(out).as_posix().startswith("report/"))
    assert sorted(manifest["files"]) == files
    for rel, entry in manifest["files"].items():
        data = (out / rel).read_bytes()
        assert entry == {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    assert manifest["schema_version"] == SCHEMA.version == "1.4.0" and len(manifest["config_hash"]) == 64
    assert manifest["models"]["whisper_model"] == "base" and manifest["languages"] == ["en"]
    assert manifest["packages"]["apache-beam"] == "2.77.0"


def test_datasets_loads_both_configs(demo_build):
    out, summary = demo_build
    tables = datasets.load_dataset(str(out))
    assert {s: len(d) for s, d in tables.items()} == summary.records_per_split
    row = tables["train"][0]
    assert row["key"] and row["transcript"]["text"] and len(row["acoustics"]["egemaps"]) == 88
    media = datasets.load_dataset(str(out / "media"))
    assert {s: len(d) for s, d in media.items()} == summary.records_per_split
    for split in tables:
        assert media[split]["__key__"] == tables[split]["key"]
    sample = next(s for s in media["train"] if s["json"]["faces"]["crops"])
    assert sample["face_000.jpg"].size == (224, 224)
    assert sample["flac"][:4] == b"fLaC"
    card = (out / "README.md").read_text()
    assert "config_name: media" in card and "| `faces.crops[].box.x` |" in card


def test_two_builds_are_byte_identical(demo_build, demo_videos, tmp_path: Path):
    out, _ = demo_build
    again = tmp_path / "again"
    build(demo_videos, again, workers=1, show_progress=False)
    costs = ("build.json", "report.html")  # wall and stage times: the only bytes allowed to differ
    first = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name not in costs}
    second = {p.relative_to(again).as_posix(): p.read_bytes() for p in again.rglob("*") if p.is_file() and p.name not in costs}
    assert sorted(first) == sorted(second) and any(k.startswith("report/") for k in first)
    assert [k for k in first if first[k] != second[k]] == []


@pytest.mark.slow
def test_small_shard_limits_cut_splits_into_several_shards(demo_videos, tmp_path: Path):
    config = config_from_dict({"shards": {"max_records": 2}, "split": {"ratios": {"train": 1.0}}, "transcript": {"model": "tiny.en"}})
    out = tmp_path / "out"
    summary = build(demo_videos, out, config, workers=2, show_progress=False)
    assert summary.records_per_split == {"train": 7}
    names = sorted(p.name for p in (out / "media").glob("*.tar"))
    assert names == [f"train-{i:05d}-of-00004.tar" for i in range(4)]
    keys_per_shard = []
    for name in names:
        with tarfile.open(out / "media" / name) as tar:
            keys_per_shard.append(sorted({m.name.split(".")[0] for m in tar.getmembers()}))
    assert [len(k) for k in keys_per_shard] == [2, 2, 2, 1]
    assert [k for shard in keys_per_shard for k in shard] == DEMO_KEYS  # cut in key order
    assert sum(pq.ParquetFile(p).metadata.num_rows for p in (out / "data").glob("*.parquet")) == 7
    assert json.loads((out / "manifest.json").read_text())["models"]["whisper_model"] == "tiny.en"


def test_out_holding_another_build_is_refused(demo_build, demo_videos, tmp_path: Path):
    out, _ = demo_build
    other = config_from_dict({"decode": {"sample_fps": 1.0}})
    with pytest.raises(UserError, match="holds a different build"):
        build(demo_videos, out, other, show_progress=False)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    with pytest.raises(UserError, match="not empty and holds no emer build"):
        build(demo_videos, foreign, show_progress=False)
    assert (foreign / "thesis.tex").read_text() == "precious"
