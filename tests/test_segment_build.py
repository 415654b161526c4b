"""Long videos become utterance records in a real build: subtitles cut them, each utterance is
decoded by seeking, splits keep a video's utterances together, bad segments are failure rows, and a
corpus adapter brings its official splits and labels."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from emer_builder.core.config import config_from_dict
from emer_builder.pipelines.build import build

from tests.segment_media import FIRST_SPEECH, SECOND_SPEECH, make_episode, write_srt
from tests.shared_data import SHARED_DATA

MELD = SHARED_DATA / "meld"


def _rows(out: Path) -> dict[str, dict]:
    rows = {}
    for path in sorted((out / "data").glob("*.parquet")):
        rows.update({r["key"]: r for r in pq.read_table(path).to_pylist()})
    return rows


@pytest.mark.slow
def test_subtitled_episodes_become_utterance_records(demo_videos: Path, tmp_path: Path):
    videos = tmp_path / "videos"
    for name in ("ep1", "ep2", "ep3", "ep4"):
        make_episode(demo_videos, videos / f"{name}.mp4")
        write_srt(videos / f"{name}.srt", [(*FIRST_SPEECH[:1], FIRST_SPEECH[1], "he was not an ill disposed young man"), (SECOND_SPEECH[0], SECOND_SPEECH[1], "front center"), (11.5, 14.0, "past the end")])
    make_episode(demo_videos, videos / "no_subtitles.mp4")
    config = config_from_dict({"transcript": {"model": "tiny.en"}, "segment": {"mode": "subtitles"}, "split": {"ratios": {"train": 0.5, "test": 0.5}}})
    summary = build(videos, tmp_path / "out", config, workers=1, show_progress=False)
    rows = _rows(tmp_path / "out")
    assert sorted(rows) == sorted(f"{e}__{a}" for e in ("ep1", "ep2", "ep3", "ep4") for a in ("000000000-000005000", "000007500-000010900"))
    failures = pq.read_table(tmp_path / "out" / "failures.parquet").to_pylist()
    assert len(failures) == 5 and {f["stage"] for f in failures} == {"segment"}
    assert sum("no_subtitles" in f["key"] for f in failures) == 1 and sum("past the end" in f["message"] or "end" in f["message"] for f in failures) >= 4
    assert summary.records + summary.failures == 13 and summary.segmentation["utterances"] == 8
    first, second = rows["ep1__000000000-000005000"], rows["ep1__000007500-000010900"]
    assert first["segment"]["source_key"] == "ep1" and first["segment"]["index"] == 0 and second["segment"]["index"] == 1
    assert second["segment"]["context_before"][0]["text"] == "he was not an ill disposed young man"
    assert abs(first["media"]["duration_s"] - 5.0) < 0.15 and abs(second["media"]["duration_s"] - 3.4) < 0.15  # the window, not the file
    assert "young man" in first["transcript"]["text"].lower() and "center" in second["transcript"]["text"].lower()  # tiny.en hears "old-sposed"
    subtitle = first["explanation"]["subtitle"]  # the cue the utterance was cut at is its EMER subtitle
    assert (subtitle["text"], subtitle["language"], subtitle["source"]) == ("he was not an ill disposed young man", "en", "human")
    assert second["explanation"]["subtitle"]["text"] == "front center"
    splits = {}
    for row in rows.values():
        splits.setdefault(row["segment"]["source_key"], set()).add(row["split"])
    assert all(len(s) == 1 for s in splits.values()) and len(set().union(*splits.values())) == 2  # an episode never straddles splits


@pytest.mark.slow
@pytest.mark.skipif(not MELD.is_dir(), reason=f"MELD tables not found at {MELD}")
def test_meld_corpus_build_takes_official_splits_and_labels(demo_videos: Path, tmp_path: Path):
    root = tmp_path / "MELD.Raw"
    (root / "train").mkdir(parents=True)
    for split, table in (("train", "train/train_sent_emo.csv"), ("dev", "dev_sent_emo.csv"), ("test", "test_sent_emo.csv")):
        (root / table).symlink_to(MELD / f"{split}_sent_emo.csv")
    clips = {"train/train_splits/dia0_utt0.mp4": "train", "dev/dev_splits_complete/dia0_utt0.mp4": "validation", "test/output_repeated_splits_test/dia0_utt1.mp4": "test"}
    for rel in clips:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(demo_videos / "sample_00000870.mp4", root / rel)  # links leaving ROOT are not followed by default
    config = config_from_dict({"transcript": {"model": "tiny.en"}, "corpus": "meld"})
    summary = build(root, tmp_path / "out", config, workers=1, show_progress=False)
    rows = _rows(tmp_path / "out")
    assert summary.records == 3 and len(rows) == 3
    tables = {}
    for name in ("train", "dev", "test"):
        with open(MELD / f"{name}_sent_emo.csv", encoding="utf-8-sig", newline="") as f:
            tables[name] = {(r["Dialogue_ID"], r["Utterance_ID"]): r for r in csv.DictReader(f)}
    assert sorted(r["split"] for r in rows.values()) == ["test", "train", "validation"]
    for row in rows.values():
        official = row["labels"]["official_split"]  # MELD's own name; the record's split is ours
        assert row["split"] == {"dev": "validation"}.get(official, official)
        dia, utt = row["labels"]["sample_id"].removeprefix("dia").split("_utt")
        truth = tables[official][(dia, utt)]
        assert row["labels"]["emotion"] == truth["Emotion"] and row["labels"]["sentiment"] == truth["Sentiment"]
        assert row["segment"]["speaker"] == truth["Speaker"]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["counts"]["records"] == 3 and manifest["config"]["corpus"] == "meld"
