"""The non-video input side against unusual and hostile inputs: subtitles (WebVTT NOTE blocks, negative cue
times, encodings), segment tables (ids that are derived keys or another input's key, dialogue ids with dots,
names outside the folder or in NFD, headers repeating a column in another case, non-finite scores, times too
large for a float), corpus adapters (CMU intervals that are NaN, negative, malformed or absent; MELD times) and
annotation tables. Each gives the right record, one failure row or one UserError line: never a traceback, a key
shared by two inputs, or an input that vanishes."""

from __future__ import annotations

import json
import math
import os
import random
import re
from pathlib import Path

import pytest
from emer_builder.core.errors import UserError
from emer_builder.schemas.fields import RecordSchema
from emer_builder.schemas.segments import LABELS, SEGMENT
from emer_builder.transforms.annotations import load_annotations
from emer_builder.transforms.corpora import load_corpus
from emer_builder.transforms.keys import MAX_KEY_BYTES, VideoInput, key_for, match_videos
from emer_builder.transforms.segment import (
    SegmentOptions,
    merge_cues,
    parse_time,
    read_subtitle_file,
    segments_from_subtitles,
    segments_from_table,
)
from emer_builder.transforms.segment.subtitles import SubtitleError
from emer_builder.transforms.segment.times import id_key
from emer_builder.transforms.split import SplitAssigner, load_split_table

SCHEMA = RecordSchema("redteam", [], [SEGMENT, LABELS])
TEN_S = lambda v: 10.0  # noqa: E731 - the duration every dummy video reports: no ffprobe, no real media needed

ASS_HEAD = (
    "[Script Info]\nScriptType: v4.00+\n\n[Events]\n"
    "Format: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text\n"
)
MELD_HEAD = "Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID,Season,Episode,StartTime,EndTime\n"


def _video(folder: Path, name: str = "ep1.mp4") -> VideoInput:
    """A dummy video file (never decoded: every test passes `duration_of`)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(b"not decoded")
    return VideoInput(key_for(name), str(folder / name), name)


def _table(tmp_path: Path, text: str, name: str = "cuts.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _subs(tmp_path: Path, name: str, data: str | bytes, encoding: str = "utf-8"):
    path = tmp_path / name
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return read_subtitle_file(path, encoding)


# ====================================================================== what was wrong before (each failed)

# ---------------------------------------------------------------- subtitles


def test_vtt_note_block_after_a_cue_is_not_cue_text(tmp_path: Path) -> None:
    """WebVTT NOTE blocks are comments (allowed between cues); pysubs2 appends them to the cue before."""
    vtt = (
        "WEBVTT\n\n"
        "00:00:01.000 --> 00:00:02.000\nHello.\n\n"
        "NOTE translator: check this line\n\n"
        "00:00:03.000 --> 00:00:04.000\nWorld.\n"
    )
    cues = _subs(tmp_path, "ep1.vtt", vtt)
    assert [c.text for c in cues] == ["Hello.", "World."]


def test_negative_cue_start_is_not_a_window_before_the_video(tmp_path: Path) -> None:
    """An ASS event at -0:00:02.00 (pysubs2 keeps negative times) becomes a segment with start_s = -2.0:
    `_check` never refuses a negative start, and decode's `-ss` skips negatives, so the record's
    audio/video is [0, 4) while its segment says [-2, 2)."""
    folder = tmp_path / "videos"
    video = _video(folder)
    (folder / "ep1.ass").write_text(ASS_HEAD + "Dialogue: 0,-0:00:02.00,0:00:02.00,Default,A,0,0,0,,Hi there.\n")
    result = segments_from_subtitles([video], SegmentOptions(mode="subtitles"), duration_of=TEN_S)
    assert len(result.segments) + len(result.failures) == 1
    assert all(s.start_s is not None and s.start_s >= 0 for s in result.segments), [(s.key, s.start_s, s.end_s) for s in result.segments]


# ---------------------------------------------------------------- segment tables: keys


def test_table_id_and_a_derived_key_do_not_give_one_key_twice(tmp_path: Path) -> None:
    """A table whose id column (e.g. `utterance_key` from an earlier build) is filled on some rows only:
    the id `ep1__000001000-000002000` and the id-less row 1-2 of ep1 give the same key. Explicit keys are only
    checked against explicit keys and derived keys against derived ones (model.py assemble)."""
    video = _video(tmp_path / "videos")
    table = _table(tmp_path, "video,start,end,utterance_key\nep1,1,2,ep1__000001000-000002000\nep1,1,2,\n")
    try:
        result = segments_from_table(table, [video], duration_of=TEN_S)
    except UserError:
        return  # refusing the table up front is fine too
    keys = result.keys()
    assert len(keys) == len(set(keys)) == 2, keys


def test_table_repeat_suffix_does_not_collide_with_an_id(tmp_path: Path) -> None:
    """The `_2` given to a repeated window is not checked against ids."""
    video = _video(tmp_path / "videos")
    table = _table(tmp_path, "video,start,end,id\nep1,1,2,\nep1,1,2,\nep1,3,4,ep1__000001000-000002000_2\n")
    try:
        result = segments_from_table(table, [video], duration_of=TEN_S)
    except UserError:
        return
    keys = result.keys()
    assert len(keys) == len(set(keys)) == 3, keys


def test_table_id_does_not_collide_with_an_unnamed_videos_failure_row(tmp_path: Path) -> None:
    """Ids named after clips: id `ep2` on a row of ep1, and the input ep2.mp4 that the table never names
    (its failure row's key is `ep2`): a record and a failure row share the key `ep2`."""
    folder = tmp_path / "videos"
    ep1, ep2 = _video(folder, "ep1.mp4"), _video(folder, "ep2.mp4")
    table = _table(tmp_path, "video,start,end,id\nep1,1,2,ep2\n")
    try:
        result = segments_from_table(table, [ep1, ep2], duration_of=TEN_S)
    except UserError:
        return
    keys = result.keys()
    assert len(keys) == len(set(keys)), keys


def test_table_dialogue_ids_with_dots_stay_apart(tmp_path: Path) -> None:
    """dialogue `scene.1` and `scene.2` both become `ep1__scene` (key_for drops `.1` / `.2` as a file
    extension, table.py `dialogue=key_for(...)`): one dialogue, mixed context, one split group."""
    video = _video(tmp_path / "videos")
    table = _table(tmp_path, "video,start,end,dialogue,text\nep1,1,2,scene.1,a\nep1,3,4,scene.2,b\nep1,5,6,scene.1,c\n")
    result = segments_from_table(table, [video], SegmentOptions(context_before=3, context_after=0), duration_of=TEN_S)
    by_text = {s.text: s for s in result.segments}
    assert by_text["a"].dialogue != by_text["b"].dialogue
    assert [c.text for c in by_text["c"].context_before] == ["a"]


# ---------------------------------------------------------------- segment tables: names and columns


@pytest.mark.parametrize("name", ["../ep1.mp4", "..ep1", ".ep1"])
def test_table_video_outside_or_other_name_is_not_matched_to_an_input(tmp_path: Path, name: str) -> None:
    """`VideoIndex.find` strips leading dots and slashes with `lstrip("./")`: `../ep1.mp4` (a file beside the
    input folder) is silently cut from the input ep1.mp4 instead of being listed as naming no input video."""
    video = _video(tmp_path / "videos")
    table = _table(tmp_path, f"video,start,end\n{name},1,2\n")
    result = segments_from_table(table, [video], duration_of=TEN_S)
    assert result.segments == [] and len(result.unmatched) == 1, [s.key for s in result.segments]


def test_table_video_name_in_nfd_finds_the_nfc_file(tmp_path: Path) -> None:
    """Keys are NFC (key_for normalises), but VideoIndex compares the table's text as written: a table
    written on macOS (NFD `café`) names no input video, and the message shows the same-looking name."""
    video = _video(tmp_path / "videos", "caf\u00e9.mp4")
    table = _table(tmp_path, "video,start,end\ncafe\u0301,1,2\n")
    result = segments_from_table(table, [video], duration_of=TEN_S)
    assert [s.source_path for s in result.segments] == ["caf\u00e9.mp4"], result.unmatched


def test_table_header_repeating_a_column_in_another_case_is_refused(tmp_path: Path) -> None:
    """Columns are matched without case, but the header check only refuses exact repeats: `start` and
    `START` both pass and the last one silently wins (here giving a reversed window)."""
    video = _video(tmp_path / "videos")
    table = _table(tmp_path, "video,start,end,START\nep1,1,2,5\n")
    with pytest.raises(UserError, match="repeat"):
        segments_from_table(table, [video], duration_of=TEN_S)


def test_table_sentiment_that_is_not_finite_is_a_segment_failure(tmp_path: Path) -> None:
    """A `sentiment` cell `nan` / `inf` becomes labels.sentiment_score NaN / inf (the `score` column is
    checked for finiteness, `sentiment` is not): the record only fails later, at the schema."""
    video = _video(tmp_path / "videos")
    table = _table(tmp_path, "video,start,end,sentiment\nep1,1,2,nan\nep1,3,4,inf\n")
    result = segments_from_table(table, [video], duration_of=TEN_S)
    assert len(result.segments) + len(result.failures) == 2
    for s in result.segments:
        score = s.labels_fields()["sentiment_score"]
        assert score is None or math.isfinite(score), (s.key, score)


# ---------------------------------------------------------------- times


@pytest.mark.parametrize("value", ["9" * 400 + ":00:00", 10**400])
def test_parse_time_of_a_huge_value_is_a_value_error(value) -> None:
    """OverflowError (int too large to convert to float) escapes; every caller catches only ValueError."""
    with pytest.raises(ValueError):
        parse_time(value)


def test_jsonl_table_with_a_huge_integer_time_is_a_failure_row(tmp_path: Path) -> None:
    video = _video(tmp_path / "videos")
    table = tmp_path / "cuts.jsonl"
    table.write_text(json.dumps({"video": "ep1", "start": 10**400, "end": 2}) + "\n" + json.dumps({"video": "ep1", "start": 1, "end": 2}) + "\n")
    result = segments_from_table(table, [video], duration_of=TEN_S)
    assert len(result.segments) == 1 and len(result.failures) == 1


def test_meld_row_with_a_huge_time_is_not_a_traceback(tmp_path: Path) -> None:
    root = tmp_path / "meld"
    (root / "episodes").mkdir(parents=True)
    (root / "episodes" / "Friends.S01E01.mkv").write_bytes(b"")
    (root / "train_sent_emo.csv").write_text(MELD_HEAD + f'1,Hi,Ross,joy,positive,0,0,1,1,"{"9" * 400}:00:00,000","0:00:02,500"\n')
    try:
        result = load_corpus("meld", root)
    except UserError:
        return
    assert len(result.failures) == 1


def test_meld_bad_time_message_says_where(tmp_path: Path) -> None:
    """Segment tables say `cuts.csv line 8: 'soon' is not a time`; MELD's failure row only says
    `an empty cell is not a time` (no table, line or column)."""
    root = tmp_path / "meld"
    (root / "episodes").mkdir(parents=True)
    (root / "episodes" / "Friends.S01E01.mkv").write_bytes(b"")
    (root / "train_sent_emo.csv").write_text(MELD_HEAD + '1,Hi,Ross,joy,positive,0,0,1,1,,"0:00:02,500"\n')
    (failure,) = load_corpus("meld", root).failures
    assert "train_sent_emo.csv line 2" in failure["message"], failure["message"]


# ---------------------------------------------------------------- CMU SDK computational sequences


def _cmu_root(tmp_path: Path, intervals, features) -> Path:
    h5py = pytest.importorskip("h5py")
    np = pytest.importorskip("numpy")
    root = tmp_path / "mosi"
    root.mkdir()
    (root / "vidA.mp4").write_bytes(b"")  # only matched by name; ffprobe finds no duration, so no end check
    with h5py.File(root / "CMU_MOSI_Opinion_Labels.csd", "w") as f:
        g = f.create_group("Opinion Segment Labels").create_group("data").create_group("vidA")
        g["intervals"] = np.array(intervals, dtype=float)
        g["features"] = np.array(features, dtype=float)
    return root


def test_cmu_nan_interval_is_not_a_traceback(tmp_path: Path) -> None:
    """`clock(nan)` in model._check: ValueError: cannot convert float NaN to integer."""
    root = _cmu_root(tmp_path, [[float("nan"), 2.0], [3.0, 4.0]], [[1.0], [2.0]])
    try:
        result = load_corpus("cmu-mosi", root)
    except UserError:
        return
    assert len(result.segments) == 1 and len(result.failures) == 1


def test_cmu_negative_interval_is_refused(tmp_path: Path) -> None:
    root = _cmu_root(tmp_path, [[-1.0, 2.0], [3.0, 4.0]], [[1.0], [2.0]])
    result = load_corpus("cmu-mosi", root)
    assert all(s.start_s >= 0 for s in result.segments), [(s.key, s.start_s) for s in result.segments]


@pytest.mark.parametrize(("intervals", "features"), [([[1.0, 2.0, 3.0]], [[1.0]]), ([1.0, 2.0], [1.0, 2.0])])
def test_cmu_malformed_intervals_are_one_user_error(tmp_path: Path, intervals, features) -> None:
    """N x 3 intervals: ValueError (too many values to unpack); 1-D intervals: TypeError."""
    root = _cmu_root(tmp_path, intervals, features)
    with pytest.raises(UserError):
        load_corpus("cmu-mosi", root)


def test_cmu_non_finite_label_is_not_a_record_score(tmp_path: Path) -> None:
    """labels() takes float(x) as it is: NaN / inf sentiment scores (MMSA's `number()` refuses them)."""
    root = _cmu_root(tmp_path, [[1.0, 2.0], [3.0, 4.0]], [[float("nan")], [float("inf")]])
    result = load_corpus("cmu-mosi", root)
    for s in result.segments:
        score = s.labels_fields()["sentiment_score"]
        assert score is None or math.isfinite(score), (s.key, score)


def test_cmu_video_with_no_intervals_is_accounted_for(tmp_path: Path) -> None:
    """A video the label sequence lists with zero intervals is marked used (so not `skipped`), gives no record,
    no failure row and no unmatched line: it vanishes from the build's accounting."""
    root = _cmu_root(tmp_path, [[0.0, 2.0]][:0], [[1.0]][:0])
    result = load_corpus("cmu-mosi", root)
    mentioned = [s.source_path for s in result.segments] + [f["source_path"] for f in result.failures] + result.unmatched + result.skipped
    assert any("vidA" in m for m in mentioned), mentioned


# ---------------------------------------------------------------- links and annotation headers


def test_annotation_header_repeating_name_in_another_case_is_refused(tmp_path: Path) -> None:
    """`Name,name,openset` is taken as the openset format and the last `name` column silently wins."""
    path = _table(tmp_path, "Name,name,openset\nsample_1,sample_2,\"['happy']\"\n", "openset.csv")
    with pytest.raises(UserError, match="repeat"):
        load_annotations([path])


# ====================================================================== probes that came out fine (these pass)


def test_binary_and_wrongly_encoded_subtitles_are_subtitle_errors(tmp_path: Path) -> None:
    for name, data in [
        ("bin.srt", bytes(range(256)) * 40),
        ("nul.srt", b"\x00" * 1000),
        ("u16.srt", "\ufeff1\n00:00:01,000 --> 00:00:02,000\nhé\n".encode("utf-16")),
        ("latin.vtt", "WEBVTT\n\n00:00:01.000 --> 00:00:02.000\nça\n".encode("latin-1")),
    ]:
        with pytest.raises(SubtitleError):
            _subs(tmp_path, name, data)
    assert [c.text for c in _subs(tmp_path, "u16b.srt", "\ufeff1\n00:00:01,000 --> 00:00:02,000\nhé\n".encode("utf-16"), "utf-16")] == ["hé"]


def test_encodings_line_ends_and_ass_markup(tmp_path: Path) -> None:
    cue = "1{nl}00:00:01,000 --> 00:00:02,000{nl}héllo.{nl}{nl}2{nl}00:00:03,000 --> 00:00:04,000{nl}wörld.{nl}"
    for nl in ("\n", "\r\n", "\r"):
        assert [c.text for c in _subs(tmp_path, "a.srt", ("\ufeff" + cue.format(nl=nl)).encode())] == ["héllo.", "wörld."]
    ass = ASS_HEAD + (
        "Dialogue: 0,0:00:01.00,0:00:02.00,Default,Bob,0,0,0,,Well, {\\pos(1,2)}yes, no\\hmaybe.\n"
        "Comment: 0,0:00:03.00,0:00:04.00,Default,,0,0,0,,a comment\n"
        "Dialogue: 0,0:00:03.00,0:00:04.00,Default,,0,0,0,,{\\p1}m 0 0 l 100 0{\\p0}\n"
    )
    assert [(c.text, c.speaker) for c in _subs(tmp_path, "a.ass", ass)] == [("Well, yes, no maybe.", "Bob")]
    vtt = "WEBVTT\n\nSTYLE\n::cue { color: red }\n\nintro\n00:00:01.000 --> 00:00:02.000 align:left\nHi.\n\n2\n00:00:03.000 --> 00:00:04.000\n<v Bob>Yes.\n"
    assert [(c.text, c.speaker) for c in _subs(tmp_path, "a.vtt", vtt)] == [("Hi.", None), ("Yes.", "Bob")]


def test_cue_order_overlap_zero_and_repeats(tmp_path: Path) -> None:
    folder = tmp_path / "videos"
    video = _video(folder)
    srt = (
        "1\n00:00:05,000 --> 00:00:06,000\nLater.\n\n"
        "2\n00:00:01,000 --> 00:00:02,000\nEarlier.\n\n"
        "3\n00:00:01,000 --> 00:00:02,000\nEarlier.\n\n"  # exact repeat
        "4\n00:00:03,000 --> 00:00:03,000\nZero.\n\n"
        "5\n00:00:08,000 --> 00:00:07,000\nReversed.\n\n"
        "6\n00:00:09,000 --> 00:00:12,000\nPast the end.\n"
    )
    (folder / "ep1.srt").write_text(srt)
    runs = [segments_from_subtitles([video], SegmentOptions(mode="subtitles"), duration_of=TEN_S) for _ in range(2)]
    result = runs[0]
    assert [s.key for s in result.segments] == ["ep1__000001000-000002000", "ep1__000001000-000002000_2", "ep1__000005000-000006000"]
    assert [f["key"] for f in result.failures] == ["ep1__000009000-000012000"]
    assert len(result.notes) == 2  # zero and reversed cues dropped with a note each
    assert [s.key for s in runs[1].segments] == [s.key for s in result.segments]


def test_many_cues_stay_fast_and_unique(tmp_path: Path) -> None:
    folder = tmp_path / "videos"
    video = _video(folder)

    def ts(ms: int) -> str:
        return f"{ms // 3600000:02d}:{ms // 60000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"

    (folder / "ep1.srt").write_text("\n".join(f"{i + 1}\n{ts(i * 1000)} --> {ts(i * 1000 + 800)}\nLine {i}.\n" for i in range(20000)))
    result = segments_from_subtitles([video], SegmentOptions(mode="subtitles", context_before=50, context_after=50), duration_of=lambda v: 1e6)
    assert len(result.segments) == 20000 and len(set(result.keys())) == 20000


def test_merge_never_joins_different_speakers_or_finished_sentences() -> None:
    from emer_builder.transforms.segment import Cue

    cues = [Cue(0.0, 1.0, "a", "A", (1,)), Cue(1.0, 2.0, "b", "B", (2,)), Cue(2.0, 3.0, "c.", None, (3,), False, True), Cue(3.0, 4.0, "d", None, (4,))]
    merged, _ = merge_cues(cues, SegmentOptions())
    assert [c.text for c in merged] == ["a", "b c.", "d"]


def test_table_windows_touching_identical_starts_and_bad_rows(tmp_path: Path) -> None:
    video = _video(tmp_path / "videos")
    table = _table(
        tmp_path,
        "video,start,end\nep1,1,2\nep1,2,3\nep1,2,2.5\nep1,\"0:00:04,000\",\"25:00:00,000\"\nep1,,3\nep1,1,2\nmissing,1,2\n/abs/ep1.mp4,1,2\n",
    )
    result = segments_from_table(table, [video], duration_of=TEN_S)
    assert len(result.segments) == 4 and len(result.failures) == 2 and len(result.unmatched) == 2
    assert len(set(result.keys())) == len(result.keys())


def test_table_empty_header_only_and_semicolons(tmp_path: Path) -> None:
    video = _video(tmp_path / "videos")
    with pytest.raises(UserError, match="is empty"):
        segments_from_table(_table(tmp_path, "", "e.csv"), [video], duration_of=TEN_S)
    only = segments_from_table(_table(tmp_path, "video,start,end\n", "h.csv"), [video], duration_of=TEN_S)
    assert [f["key"] for f in only.failures] == ["ep1"]
    with pytest.raises(UserError, match="needs columns video, start and end"):
        segments_from_table(_table(tmp_path, "video;start;end\nep1;1;2\n", "s.csv"), [video], duration_of=TEN_S)


def test_ids_and_names_never_make_unsafe_keys() -> None:
    rng = random.Random(7)
    alphabet = list("ab./\\_- ~$`'\"*?:;|&<>\n\t\x00é\u0301\u202e😀") + ["..", "../", "/..", "x" * 60]
    for _ in range(20000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
        for make in (key_for, id_key):
            key = make(text)
            assert re.fullmatch(r"[\w-]+", key) and len(key.encode()) <= MAX_KEY_BYTES and key_for(key) == key, (text, key)


def test_meld_odd_rows(tmp_path: Path) -> None:
    root = tmp_path / "meld"
    clip = root / "train" / "train_splits" / "dia0_utt0.mp4"
    clip.parent.mkdir(parents=True)
    clip.write_bytes(b"")
    (root / "episodes").mkdir()
    (root / "episodes" / "Friends.S01E01.mkv").write_bytes(b"")
    (root / "train_sent_emo.csv").write_text(
        MELD_HEAD
        + '1,Hi,Ross,joy,positive,0,0,1,1,"0:00:01,234","00:00:02,500"\r\n'
        + '2,Yo,Joey,joy,positive,0,1,1,1,"25:00:01,234","25:00:02,500"\r\n'
        + '3,Eh,Joey,joy,positive,0,2,9,9,"0:00:01,234","0:00:02,500"\r\n'
    )
    result = load_corpus("meld", root)
    assert [(s.key, s.seek) for s in result.segments] == [("train__dia0_utt0", False), ("train__dia0_utt1", True)]
    assert result.segments[1].start_s == pytest.approx(90001.234) and len(result.unmatched) == 1
    (root / "train_sent_emo.csv").write_text(MELD_HEAD + "1,Hi,Ross,joy,positive,0,0,1,1,1,2\n2,Hi,Ross,joy,positive,0,0,1,1,1,2\n")
    with pytest.raises(UserError, match="ids must be unique"):
        load_corpus("meld", root)
    (root / "train_sent_emo.csv").write_text(MELD_HEAD + "1,Hi,Ross,joy,positive,0.5,0,1,1,1,2\n")
    with pytest.raises(UserError, match="whole numbers"):
        load_corpus("meld", root)
    (root / "train_sent_emo.csv").write_text(MELD_HEAD)
    assert load_corpus("meld", root).segments == []


def test_mmsa_names_with_dot_dot_are_unmatched(tmp_path: Path) -> None:
    root = tmp_path / "sims"
    clip = root / "Raw" / "video_0001" / "0001.mp4"
    clip.parent.mkdir(parents=True)
    clip.write_bytes(b"")
    (root / "label.csv").write_text("video_id,clip_id,label,mode\n../Raw/video_0001,1,0.5,train\nvideo_0001,../0001,0.5,train\nvideo_0001,1,0.5,train\n")
    result = load_corpus("ch-sims", root)
    assert [s.key for s in result.segments] == ["video_0001_1"] and len(result.unmatched) == 2


def test_annotation_tables_odd_but_handled(tmp_path: Path) -> None:
    same = _table(tmp_path, "name,openset\nx,\"['happy']\"\nx,\"['happy']\"\n", "same.csv")
    assert load_annotations([same]).by_name == {"x": {"open_vocab_labels": {"en": ["happy"]}}}
    for name, data in [
        ("ws.csv", b"name,openset\nx,\"['happy']\"\n x ,\"['sad']\"\n"),
        ("semi.csv", b"name;openset\nx;['happy']\n"),
        ("u16.csv", "\ufeffname,openset\nx,['happy']\n".encode("utf-16")),
        ("nan.csv", b"name,discrete,valence\nx,happy,nan\n"),
        ("noname.csv", b"name,openset\n,['happy']\n"),
    ]:
        (tmp_path / name).write_bytes(data)
        with pytest.raises(UserError):
            load_annotations([tmp_path / name])
    bom = tmp_path / "bom.csv"
    bom.write_bytes("\ufeffname,openset\r\nx,[]\r\ny,\r\n".encode())
    assert load_annotations([bom]).by_name == {"x": {"open_vocab_labels": {"en": []}}, "y": {}}


def test_split_tables_odd_but_handled(tmp_path: Path) -> None:
    assert load_split_table(_table(tmp_path, "key,split\n", "h.csv")) == {}
    for text in ("key,split\na,Train\n", "key,split\na,\n", "key,split\na,../x\n"):
        with pytest.raises(UserError, match="invalid split name"):
            SplitAssigner({"train": 1.0}, split_table=str(_table(tmp_path, text, "bad.csv")))
    with pytest.raises(UserError, match="puts 'a' in"):
        load_split_table(_table(tmp_path, "key,split\na,train\na,test\n", "twice.csv"))


def test_sidecar_subtitle_linked_from_outside_the_input_folder_is_not_read(tmp_path: Path) -> None:
    """A video link leaving VIDEOS_DIR is skipped unless follow_external_links; a sidecar `ep1.srt` linking to a
    file anywhere on the machine was read and its text went into segment.text. A link inside the folder is
    still a sidecar, and with follow_external_links (no `inside`) the outside one is read as before."""
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "private.srt").write_text("1\n00:00:01,000 --> 00:00:02,000\nPrivate words.\n")
    folder = tmp_path / "videos"
    _video(folder)
    os.symlink(outside / "private.srt", folder / "ep1.srt")
    inputs, _, _ = match_videos(folder)
    inside = os.path.realpath(folder)
    refused = segments_from_subtitles(inputs, SegmentOptions(mode="subtitles"), duration_of=TEN_S, inside=inside)
    assert not refused.segments and "no subtitles" in refused.failures[0]["message"]
    followed = segments_from_subtitles(inputs, SegmentOptions(mode="subtitles"), duration_of=TEN_S)
    assert [s.text for s in followed.segments] == ["Private words."]
    (folder / "ep1.srt").unlink()
    (folder / "subs").mkdir()
    (folder / "subs" / "ep1.srt").write_text("1\n00:00:01,000 --> 00:00:02,000\nOur words.\n")
    os.symlink(folder / "subs" / "ep1.srt", folder / "ep1.srt")
    inputs, _, _ = match_videos(folder)
    assert [s.text for s in segments_from_subtitles(inputs, SegmentOptions(mode="subtitles"), duration_of=TEN_S, inside=inside).segments] == ["Our words."]
