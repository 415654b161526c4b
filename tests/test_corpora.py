"""Corpus adapters on their own layouts: MELD with its real tables (CRLF, curly quotes, mixed time forms,
overlapping and empty utterances), the MMSA label.csv layout, the CMU SDK .csd layout, MER label tables.
Media are small ffmpeg-made or demo-corpus files; tables other than MELD's are written in each test."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import pytest
from emer_builder.core.errors import UserError
from emer_builder.schemas.fields import RecordSchema
from emer_builder.schemas.segments import LABELS, SEGMENT
from emer_builder.transforms.corpora import CORPORA, adapter, corpus_names, describe, load_corpus
from emer_builder.transforms.segment import Segmentation, SegmentOptions, parse_time
from emer_builder.transforms.split import SplitAssigner

from tests.segment_media import EPISODE_S, make_episode, make_silent_video
from tests.shared_data import SHARED_DATA

MELD = SHARED_DATA / "meld"
needs_meld = pytest.mark.skipif(not (MELD / "test_sent_emo.csv").is_file(), reason=f"MELD tables not found under {MELD} (set EMER_SHARED_DATA)")
SCHEMA = RecordSchema("test", [], [SEGMENT, LABELS])
EPISODE_LONG_S = 1110.0  # the made-up S03E15 ends at 18:30: MELD's later utterances in it lie past its end


def _validate(result: Segmentation) -> None:
    for s in result.segments:
        SCHEMA.validate({"segment": s.segment_fields(), "labels": s.labels_fields()})


def _link(target: Path, link: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target)


def _clip(source: Path, dest: Path) -> None:
    """A clip copied in: links to clips outside ROOT are not followed by default (test_links_leaving_root_...)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, dest)


def _meld_rows(split: str) -> list[dict[str, str]]:
    """The real table read independently of the adapter (csv module)."""
    with open(MELD / f"{split}_sent_emo.csv", encoding="utf-8-sig", newline="") as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------- MELD


@pytest.fixture(scope="module")
def meld_root(tmp_path_factory: pytest.TempPathFactory, demo_videos: Path) -> Path:
    """MELD.Raw's layout around the real tables (linked, never copied): a few small clips per split, junk, one raw episode."""
    root = tmp_path_factory.mktemp("meld") / "MELD.Raw"
    _link(MELD / "train_sent_emo.csv", root / "train" / "train_sent_emo.csv")
    _link(MELD / "dev_sent_emo.csv", root / "dev_sent_emo.csv")
    _link(MELD / "test_sent_emo.csv", root / "test_sent_emo.csv")
    clip = demo_videos / "sample_00000870.mp4"
    for rel in ("train/train_splits/dia0_utt0.mp4", "train/train_splits/dia0_utt1.mp4", "train/train_splits/dia0_utt3.mp4"):
        _clip(clip, root / rel)
    _clip(clip, root / "dev/dev_splits_complete/dia0_utt0.mp4")
    _clip(clip, root / "test/output_repeated_splits_test/dia0_utt1.mp4")
    _clip(clip, root / "train/train_splits/dia99999_utt0.mp4")  # no such row
    _clip(clip, root / "misc/dia1_utt0.mp4")  # no split folder above it
    make_silent_video(root / "episodes" / "Friends.S03E15.The.One.Where.mkv", EPISODE_LONG_S, fps=1, size="32x32")
    return root


@pytest.fixture(scope="module")
def meld(meld_root: Path) -> Segmentation:
    return load_corpus("meld", meld_root, SegmentOptions(context_before=3, context_after=1))


@needs_meld
def test_meld_clips_keys_labels_and_context(meld: Segmentation) -> None:
    by_key = {s.key: s for s in meld.segments}
    train0 = _meld_rows("train")
    first = by_key["train__dia0_utt0"]
    assert (first.id, first.speaker, first.text) == ("dia0_utt0", "Chandler", train0[0]["Utterance"])
    assert "’" in first.text  # the curly apostrophe arrives intact through the CRLF table
    assert not first.seek and first.window() is None and first.source_path == "train/train_splits/dia0_utt0.mp4"
    assert (first.start_s, first.end_s) == (parse_time("00:16:16,059"), parse_time("00:16:21,731"))
    assert first.source_key == "S08E21" and first.dialogue == "train_dia0" and first.method == "corpus:meld"
    assert first.labels_fields() | {"emotion_scores": [], "labels": []} == {
        "corpus": "meld",
        "sample_id": "dia0_utt0",
        "official_split": "train",
        "emotion": "neutral",
        "sentiment": "neutral",
        "sentiment_score": None,
        "score_min": None,
        "score_max": None,
        "text_score": None,
        "audio_score": None,
        "visual_score": None,
        "emotion_scores": [],
        "labels": [],
    }
    # dia0_utt3's clip is there but utt2's is not: utt2 still belongs to the dialogue's history
    third = by_key["train__dia0_utt3"]
    assert third.index == 3
    assert [(c.speaker, c.text) for c in third.context_before] == [(r["Speaker"], r["Utterance"]) for r in train0[:3]]
    assert [c.text for c in third.context_after] == [train0[4]["Utterance"]]
    # official splits: the table a row comes from, dev -> validation; the key keeps MELD's own split word
    assert meld.split_table["train__dia0_utt0"] == "train"
    assert meld.split_table["dev__dia0_utt0"] == "validation"
    assert meld.split_table["test__dia0_utt1"] == "test"
    assert by_key["dev__dia0_utt0"].labels_fields()["official_split"] == "dev"
    _validate(meld)


@needs_meld
def test_meld_episode_cut_with_real_times(meld: Segmentation) -> None:
    """Rows without a clip are cut from the raw episode: real overlaps stay separate records, the real empty
    utterance and those past the episode's end are failure rows naming the segment."""
    by_key = {s.key: s for s in meld.segments}
    failures = {f["key"]: f["message"] for f in meld.failures}
    expected_records, expected_failures = set(), set()
    for split in ("train", "dev", "test"):
        for r in _meld_rows(split):
            if (r["Season"], r["Episode"]) != ("3", "15"):
                continue
            key = f"{split}__dia{r['Dialogue_ID']}_utt{r['Utterance_ID']}"
            start, end = parse_time(r["StartTime"]), parse_time(r["EndTime"])
            ok = end > start and start < EPISODE_LONG_S and end <= EPISODE_LONG_S + 0.25
            (expected_records if ok else expected_failures).add(key)
    episode_records = {k for k, s in by_key.items() if s.seek}
    assert episode_records == expected_records and len(expected_records) > 40
    assert set(failures) == expected_failures
    assert failures["test__dia155_utt3"] == "test_sent_emo.csv line 1442: segment 00:12:32,632 to 00:12:32,632 is empty (end = start)"
    assert failures["test__dia174_utt16"] == "test_sent_emo.csv line 1662: segment 00:18:28,315 to 00:18:32,527 ends past the end of the video (00:18:30,128)"
    # 174/14 (18:22.059-18:28.022) and 174/15 (18:25.270-18:28.022) overlap: two records
    a, b = by_key["test__dia174_utt14"], by_key["test__dia174_utt15"]
    assert a.start_s < b.start_s < a.end_s == b.end_s
    assert a.window() == pytest.approx((1102.059, 5.963)) and a.source_key == "episodes__Friends_S03E15_The_One_Where"
    utt4 = by_key["test__dia155_utt4"]  # `0:12:32,632` written the short way
    assert (utt4.start_s, utt4.end_s) == (752.632, 752.772) and utt4.index == 4
    assert all(f["stage"] == "segment" and f["source_path"] == "episodes/Friends.S03E15.The.One.Where.mkv" for f in meld.failures)


@needs_meld
def test_meld_accounts_for_every_row(meld: Segmentation) -> None:
    rows = sum(len(_meld_rows(s)) for s in ("train", "dev", "test"))
    assert len(meld.segments) + len(meld.failures) + len(meld.unmatched) == rows
    assert len(set(meld.keys())) == len(meld.keys())
    assert "test_sent_emo.csv line 2: no clip test/dia0_utt0.mp4 and no episode S03E19 under the corpus folder" in meld.unmatched
    assert meld.skipped == [
        "misc/dia1_utt0.mp4 (no train, dev or test folder above it: its split is unknown)",
        "misc/dia1_utt0.mp4 (not listed in the meld tables)",
        "train/train_splits/dia99999_utt0.mp4 (not listed in the meld tables)",
    ]
    assert sorted(Path(f["path"]).name for f in meld.files) == ["dev_sent_emo.csv", "test_sent_emo.csv", "train_sent_emo.csv"]
    assert {f["rows"] for f in meld.files} == {9989, 1109, 2610}


@needs_meld
def test_meld_dialogues_stay_together_without_a_split_table(meld: Segmentation) -> None:
    """With the default group (the dialogue), the hash split never parts a dialogue's utterances."""
    assigner = SplitAssigner({"train": 0.5, "validation": 0.25, "test": 0.25}, group_by="segment.group")
    seen: dict[str, set[str]] = {}
    for s in meld.segments:
        seen.setdefault(s.group, set()).add(assigner({"key": s.key, "segment": s.segment_fields()}))
    assert all(len(v) == 1 for v in seen.values()) and len(seen) >= 8
    assert len({next(iter(v)) for v in seen.values()}) > 1


def test_meld_layout_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"corpus meld: no train_sent_emo.csv, dev_sent_emo.csv, test_sent_emo.csv under"):
        load_corpus("meld", tmp_path)
    (tmp_path / "dev_sent_emo.csv").write_text("Sr No.,Utterance,Speaker\n1,Hi,Ross\n")
    with pytest.raises(UserError, match=r"MELD table .*dev_sent_emo.csv: no column Emotion, Sentiment, Dialogue_ID"):
        load_corpus("meld", tmp_path)


# ---------------------------------------------------------------- MMSA


LABEL_CSV = (
    "video_id,clip_id,text,label,label_T,label_A,label_V,annotation,mode\n"
    "video_0001,1,我很开心,0.8,1.0,0.6,0.4,Positive,train\n"
    "video_0001,2,然后呢,0.0,0.2,-0.2,0.0,Neutral,train\n"
    "video_0001,3,太糟了,-0.6,-0.8,-0.4,-0.6,Negative,train\n"
    "video_0002,1,你好,0.2,0.2,0.2,0.2,Positive,valid\n"
    "video_0003,1,缺失的片段,-1.0,-1.0,-1.0,-1.0,Negative,test\n"
)


@pytest.fixture
def sims_root(tmp_path: Path, demo_videos: Path) -> Path:
    root = tmp_path / "ch-sims"
    (root).mkdir()
    (root / "label.csv").write_text(LABEL_CSV, encoding="utf-8")
    for rel in ("Raw/video_0001/0001.mp4", "Raw/video_0001/0002.mp4", "Raw/video_0001/0003.mp4", "Raw/video_0002/0001.mp4", "Raw/video_0002/0009.mp4"):
        _clip(demo_videos / "sample_00000880.mkv", root / rel)
    return root


def test_ch_sims_clips_scores_splits_and_context(sims_root: Path) -> None:
    result = load_corpus("ch-sims", sims_root, SegmentOptions(context_before=2, context_after=1))
    by_key = {s.key: s for s in result.segments}
    assert sorted(by_key) == ["video_0001_1", "video_0001_2", "video_0001_3", "video_0002_1"]
    two = by_key["video_0001_2"]
    assert two.source_path == "Raw/video_0001/0002.mp4" and not two.seek and two.text == "然后呢" and two.index == 1
    assert [c.text for c in two.context_before] == ["我很开心"] and [c.text for c in two.context_after] == ["太糟了"]
    labels = by_key["video_0001_1"].labels_fields()
    assert (labels["corpus"], labels["sentiment"], labels["sentiment_score"], labels["score_min"], labels["score_max"]) == (
        "ch-sims",
        "positive",
        0.8,
        -1.0,
        1.0,
    )
    assert (labels["text_score"], labels["audio_score"], labels["visual_score"]) == (1.0, 0.6, 0.4)
    assert result.split_table == {"video_0001_1": "train", "video_0001_2": "train", "video_0001_3": "train", "video_0002_1": "validation"}
    assert by_key["video_0002_1"].labels_fields()["official_split"] == "valid"
    assert result.unmatched == ["label.csv line 6: no clip video_0003/1.* under the corpus folder"]
    assert result.skipped == ["Raw/video_0002/0009.mp4 (not listed in the ch-sims tables)"]
    assert {s.group for s in result.segments} == {"video_0001", "video_0002"}
    _validate(result)


def test_mosi_in_the_mmsa_layout_uses_its_scale(tmp_path: Path, demo_videos: Path) -> None:
    root = tmp_path / "MOSI"
    root.mkdir()
    (root / "label.csv").write_text("video_id,clip_id,text,label,annotation,mode\n03bSnISJMiM,1,a lot of sad parts,-2.4,Negative,test\n")
    _clip(demo_videos / "sample_00000870.mp4", root / "Raw/03bSnISJMiM/1.mp4")
    assert adapter("cmu-mosi", root).name == "cmu-mosi" and adapter("cmu-mosi", root).files == ("label.csv",)
    (seg,) = load_corpus("cmu-mosi", root).segments
    labels = seg.labels_fields()
    assert seg.key == "03bSnISJMiM_1" and (labels["sentiment_score"], labels["score_min"], labels["score_max"]) == (pytest.approx(-2.4), -3.0, 3.0)
    assert labels["text_score"] is None  # MOSI has no unimodal labels


def test_mmsa_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"corpus ch-sims: no label.csv under"):
        load_corpus("ch-sims", tmp_path)
    (tmp_path / "label.csv").write_text("video,clip,score\nv,1,0\n")
    with pytest.raises(UserError, match=r"no column video_id, clip_id, label"):
        load_corpus("ch-sims", tmp_path)


# ---------------------------------------------------------------- CMU SDK


def _write_csd(path: Path, name: str, data: dict[str, tuple[list[list[float]], list]]) -> None:
    """A computational sequence as the CMU SDK writes it: <name>/data/<video>/{features,intervals}, <name>/metadata."""
    import h5py

    with h5py.File(path, "w") as f:
        group = f.create_group(name)
        d = group.create_group("data")
        for video, (intervals, features) in data.items():
            v = d.create_group(video)
            v.create_dataset("intervals", data=intervals)
            v.create_dataset("features", data=features)
        meta = group.create_group("metadata")
        meta.create_dataset("root name", (1,), dtype=h5py.special_dtype(vlen=str))[0] = json.dumps(name)


def test_cmu_sdk_layout_cuts_full_videos(tmp_path: Path, demo_videos: Path) -> None:
    root = tmp_path / "CMU_MOSEI"
    make_episode(demo_videos, root / "Raw" / "Full" / "zhpQhgha_KU.mp4")
    # stored out of time order on purpose; the last interval lies past the end of the 10.9 s video
    labels = ([[7.5, 9.0], [0.2, 3.0], [10.0, 14.0]], [[-1.0, 0, 2.0, 0, 0, 0, 0.5], [2.5, 1.5, 0, 0, 0.3, 0, 0], [0.0, 0, 0, 0, 0, 0, 0]])
    _write_csd(root / "CMU_MOSEI_Labels.csd", "All Labels", {"zhpQhgha_KU": labels, "absent_video": ([[0.0, 1.0]], [[0.0] * 7])})
    words = ([[0.3, 0.8], [0.8, 1.0], [1.0, 1.6], [7.6, 8.2], [12.0, 12.5]], [[b"hello"], [b"sp"], [b"there"], [b"front"], [b"late"]])
    _write_csd(root / "CMU_MOSEI_TimestampedWords.csd", "words", {"zhpQhgha_KU": words})
    (root / "folds.json").write_text(json.dumps({"train": ["zhpQhgha_KU"], "valid": [], "test": ["absent_video"]}))

    assert adapter("cmu-mosei", root).files[0] == "*[Ll]abels*.csd"
    result = load_corpus("cmu-mosei", root, SegmentOptions(context_before=1))
    assert [(s.key, s.start_s, s.end_s, s.text) for s in result.segments] == [
        ("zhpQhgha_KU_1", 0.2, 3.0, "hello there"),
        ("zhpQhgha_KU_2", 7.5, 9.0, "front"),
    ]
    first, second = result.segments
    assert first.seek and first.window() == (0.2, 2.8) and first.source_path == "Raw/Full/zhpQhgha_KU.mp4"
    assert second.context_before[0].text == "hello there"
    scores = first.labels_fields()
    assert scores["sentiment_score"] == 2.5 and (scores["score_min"], scores["score_max"]) == (-3.0, 3.0)
    assert scores["emotion_scores"] == [
        {"emotion": "happy", "score": 1.5},
        {"emotion": "sad", "score": 0.0},
        {"emotion": "anger", "score": 0.0},
        {"emotion": "surprise", "score": 0.3},
        {"emotion": "disgust", "score": 0.0},
        {"emotion": "fear", "score": 0.0},
    ]
    assert [f["message"] for f in result.failures] == [
        "CMU_MOSEI_Labels.csd zhpQhgha_KU_3: segment 00:00:10,000 to 00:00:14,000 ends past the end of the video (00:00:10,900)"
    ]
    assert result.unmatched == ["CMU_MOSEI_Labels.csd absent_video: no video named absent_video.* under the corpus folder (1 segments)"]
    assert result.split_table == {"zhpQhgha_KU_1": "train", "zhpQhgha_KU_2": "train"}
    assert EPISODE_S > second.end_s
    _validate(result)


def test_cmu_sdk_refuses_what_is_no_sequence(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"corpus cmu-mosi: need exactly one label sequence"):
        load_corpus("cmu-mosi", tmp_path)
    (tmp_path / "CMU_MOSI_Opinion_Labels.csd").write_text("not hdf5")
    with pytest.raises(UserError, match=r"CMU_MOSI_Opinion_Labels.csd: cannot read it as HDF5"):
        load_corpus("cmu-mosi", tmp_path)


# ---------------------------------------------------------------- MER, registry


def test_mer_labels_and_folder_splits(tmp_path: Path, demo_videos: Path) -> None:
    root = tmp_path / "MER2023"
    _clip(demo_videos / "sample_00000870.mp4", root / "train" / "sample_00000870.mp4")
    _clip(demo_videos / "sample_00000880.mkv", root / "test1" / "sample_00000880.mkv")
    (root / "train-label.csv").write_text("name,discrete,valence\nsample_00000870,happy,2.5\nsample_00000880,sad,-3\nsample_00000999,angry,-4\n")
    result = load_corpus("mer", root)
    assert [(s.key, s.labels_fields()["emotion"], s.labels_fields()["sentiment_score"]) for s in result.segments] == [
        ("sample_00000870", "happy", 2.5),
        ("sample_00000880", "sad", -3.0),
    ]
    assert result.split_table == {"sample_00000870": "train", "sample_00000880": "test1"}
    assert result.unmatched == ["train-label.csv line 4: no clip named sample_00000999.* under the corpus folder"]
    _validate(result)


def test_links_leaving_root_count_only_when_followed(tmp_path: Path, demo_videos: Path) -> None:
    """A corpus walks ROOT as `emer build` does: a clip linked from elsewhere, or a link to `..` (which would
    pull in sibling corpora), is not read unless follow_external_links is set; a link inside ROOT is."""
    root = tmp_path / "MER2023"
    _clip(demo_videos / "sample_00000880.mkv", root / "test1" / "sample_00000880.mkv")
    _link(demo_videos / "sample_00000870.mp4", root / "train" / "sample_00000870.mp4")
    _clip(demo_videos / "sample_00000870.mp4", tmp_path / "sibling" / "sample_00000999.mp4")
    os.symlink("..", root / "up")
    os.symlink("test1/sample_00000880.mkv", root / "sample_00000881.mkv")  # inside ROOT: read
    (root / "train-label.csv").write_text("name,discrete,valence\nsample_00000870,happy,2.5\nsample_00000880,sad,-3\nsample_00000881,sad,-3\nsample_00000999,angry,-4\n")
    result = load_corpus("mer", root)
    assert [s.key for s in result.segments] == ["sample_00000880", "sample_00000881"]
    assert result.unmatched == [
        "train-label.csv line 2: no clip named sample_00000870.* under the corpus folder",
        "train-label.csv line 5: no clip named sample_00000999.* under the corpus folder",
    ]
    followed = load_corpus("mer", root, follow_external_links=True)
    assert [(s.key, s.source_path) for s in followed.segments] == [
        ("sample_00000870", "train/sample_00000870.mp4"),
        ("sample_00000880", "test1/sample_00000880.mkv"),
        ("sample_00000881", "sample_00000881.mkv"),
        ("sample_00000999", "up/sibling/sample_00000999.mp4"),
    ]
    assert load_corpus("mer", root).segments == result.segments  # the setting does not outlive the call


def test_registry_names_and_declarations() -> None:
    assert corpus_names() == ["ch-sims", "ch-sims-v2", "cmu-mosei", "cmu-mosi", "meld", "mer", "mmsa"]
    with pytest.raises(UserError, match=r"unknown corpus 'iemocap'; known: ch-sims, .* \(other layouts: --segment table"):
        load_corpus("iemocap", ".")
    text = describe("meld")
    assert "key: {split}__dia{D}_utt{U}" in text and "split: the table a row comes from" in text
    for corpus in CORPORA.values():
        assert corpus.files and corpus.columns and corpus.key_rule and corpus.label_mapping and corpus.split_rule
