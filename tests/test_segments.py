"""Segmentation without Beam: times, keys, subtitles (SRT, WebVTT, ASS, embedded), segment tables, speech,
every bad input as one failure row, the schema groups, and splits grouped by source video."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
from emer_builder.core.config import config_from_dict
from emer_builder.core.errors import UserError
from emer_builder.schemas.fields import RecordSchema
from emer_builder.schemas.segments import LABELS, SEGMENT
from emer_builder.transforms.keys import MAX_KEY_BYTES, VideoInput, match_videos
from emer_builder.transforms.segment import (
    Cue,
    SegmentOptions,
    check_options,
    clock,
    merge_cues,
    parse_time,
    probe_duration,
    segment_key,
    segment_videos,
    segments_from_speech,
    segments_from_subtitles,
    segments_from_table,
    sidecar_files,
    speech_regions,
)
from emer_builder.transforms.split import SplitAssigner

from tests.segment_media import EPISODE_S, FIRST_SPEECH, GAP, SECOND_SPEECH, embed_subtitles, make_episode, make_silent_video, write_ass, write_srt, write_vtt

SCHEMA = RecordSchema("test", [], [SEGMENT, LABELS])


@pytest.fixture(scope="module")
def episode(demo_videos: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ffmpeg-made 10.9 s episode: speech, 2.5 s of silence, speech."""
    return make_episode(demo_videos, tmp_path_factory.mktemp("media") / "episode.mp4")


def _inputs(folder: Path) -> list[VideoInput]:
    inputs, collisions, _ = match_videos(folder)
    assert not collisions
    return inputs


def _folder(tmp_path: Path, episode: Path, *names: str) -> Path:
    folder = tmp_path / "videos"
    folder.mkdir(exist_ok=True)
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(episode, folder / name)  # not a symlink: links leaving the folder are not followed by default
    return folder


def _validate(segmentation) -> None:
    """Every segment's groups fit the schema (the real validator and the Arrow conversion)."""
    for s in segmentation.segments:
        record = {"segment": s.segment_fields(), "labels": s.labels_fields()}
        SCHEMA.validate(record)
        assert SCHEMA.conform(record)["segment"]["start_s"] == s.start_s


# ---------------------------------------------------------------- times and keys


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("00:20:23,931", 1223.931),
        ("0:20:23,931", 1223.931),  # MELD's short form
        ("00:00:03.5", 3.5),
        ("01:02:03,004", 3723.004),
        ("12:05,250", 725.25),
        ("12.75", 12.75),
        ("7", 7.0),
        (8, 8.0),
        (2.5, 2.5),
    ],
)
def test_parse_time_reads_seconds_and_clock_forms(text, seconds) -> None:
    assert parse_time(text) == pytest.approx(seconds, abs=1e-9)


@pytest.mark.parametrize("bad", ["", "abc", "00:61:00,000", "00:00:75,000", "-1", "nan", None, True, "1:2:3:4"])
def test_parse_time_refuses_what_is_no_time(bad) -> None:
    with pytest.raises(ValueError, match="not a time"):
        parse_time(bad)


def test_clock_and_key_format() -> None:
    assert clock(1223.931) == "00:20:23,931"
    assert segment_key("ep1", 0.5, 2.0) == "ep1__000000500-000002000"
    assert segment_key("ep1", 3723.0044, 3725.9996) == "ep1__003723004-003726000"
    long_key = segment_key("x" * 200, 1.0, 2.0)
    assert len(long_key.encode()) <= MAX_KEY_BYTES and "." not in long_key and "/" not in long_key
    assert long_key != segment_key("x" * 200, 1.0, 3.0)  # cut keys stay apart: they end in a hash of the whole


# ---------------------------------------------------------------- subtitles


def test_srt_sidecar_cuts_merges_drops_and_fails_past_the_end(tmp_path: Path, episode: Path) -> None:
    folder = _folder(tmp_path, episode, "ep1.mp4")
    cues = [
        (0.5, 2.0, "Hello there,"),
        (2.1, 3.0, "my friend."),  # 0.1 s after the first: merges with it
        (4.0, 4.2, "Hm."),  # 0.2 s long: dropped
        (7.6, 9.0, "Front center,"),
        (8.5, 9.5, "overlapping line."),  # overlaps the previous one and continues its sentence: merged (speakers unknown)
        (9.8, 10.3, "Last words."),
        (10.6, 12.5, "After the end."),  # the video is 10.9 s long
    ]
    write_srt(folder / "ep1.srt", cues, crlf=True)
    result = segments_from_subtitles(_inputs(folder), SegmentOptions(mode="subtitles", context_before=2, context_after=1))

    assert [s.key for s in result.segments] == ["ep1__000000500-000003000", "ep1__000007600-000009500", "ep1__000009800-000010300"]
    first, second, third = result.segments
    assert first.text == "Hello there, my friend." and (first.start_s, first.end_s) == (0.5, 3.0)
    assert second.text == "Front center, overlapping line."
    assert [s.index for s in result.segments] == [0, 1, 2]
    assert [c.text for c in third.context_before] == ["Hello there, my friend.", "Front center, overlapping line."]
    assert [c.text for c in first.context_after] == ["Front center, overlapping line."]
    assert first.window() == (0.5, 2.5) and first.seek and first.method == "subtitles"
    assert {s.source_key for s in result.segments} == {"ep1"} and {s.group for s in result.segments} == {"ep1"}
    assert {s.source_path for s in result.segments} == {"ep1.mp4"}

    (failure,) = result.failures
    assert failure["key"] == "ep1__000010600-000012500" and failure["stage"] == "segment"
    assert failure["message"] == "ep1.srt cue 7: segment 00:00:10,600 to 00:00:12,500 ends past the end of the video (00:00:10,900)"
    assert result.notes == ["ep1.mp4: ep1.srt cue 3 (00:00:04,000 to 00:00:04,200) is shorter than segment.min_s 0.5 s: dropped"]
    assert result.files[0]["path"].endswith("ep1.srt") and len(result.files[0]["sha256"]) == 64
    inputs, _, skipped = match_videos(folder)
    assert skipped == ["ep1.srt"] and sidecar_files(inputs) == {"ep1.srt"}  # what the driver takes out of the skipped list
    _validate(result)


def test_webvtt_and_ass_sidecars(tmp_path: Path, episode: Path) -> None:
    folder = _folder(tmp_path, episode, "a.mp4", "b.mp4")
    write_vtt(folder / "a.vtt", [(1.0, 2.5, "<v Roger>Bonjour à tous"), (3.0, 4.0, "second")])
    write_ass(folder / "b.ass", [(1.0, 2.0, "Monica", "Hi,"), (2.05, 3.0, "Rachel", "hello!"), (3.05, 4.0, "Rachel", "How are you?")])
    result = segments_from_subtitles(_inputs(folder), SegmentOptions(mode="subtitles"))
    by_key = {s.key: s for s in result.segments}
    assert by_key["a__000001000-000002500"].text == "Bonjour à tous"  # voice tag stripped, UTF-8 kept
    # different speakers never merge; a finished sentence ends the utterance, even the same speaker's; override tags are gone
    b = [s for s in result.segments if s.source_key == "b"]
    assert [(s.speaker, s.text) for s in b] == [("Monica", "Hi,"), ("Rachel", "hello!"), ("Rachel", "How are you?")]
    assert b[1].context_before[0].speaker == "Monica" and b[1].context_before[0].text == "Hi,"
    assert not result.failures
    _validate(result)


def test_embedded_subtitle_stream_and_sidecar_precedence(tmp_path: Path, episode: Path) -> None:
    folder = tmp_path / "videos"
    folder.mkdir()
    srt = write_srt(tmp_path / "embedded.srt", [(1.0, 2.0, "from the stream"), (7.5, 9.0, "second cue")])
    embed_subtitles(episode, srt, folder / "muxed.mp4")
    embed_subtitles(episode, srt, folder / "both.mkv")
    write_srt(folder / "both.srt", [(1.0, 3.0, "from the sidecar")])
    result = segments_from_subtitles(_inputs(folder), SegmentOptions(mode="subtitles"))
    muxed = [s for s in result.segments if s.source_key == "muxed"]
    assert [(s.start_s, s.end_s, s.text) for s in muxed] == [(1.0, 2.0, "from the stream"), (7.5, 9.0, "second cue")]
    assert [s.text for s in result.segments if s.source_key == "both"] == ["from the sidecar"]
    # a language that no stream has is one failure row for that video
    wrong = segments_from_subtitles([v for v in _inputs(folder) if v.key == "muxed"], SegmentOptions(mode="subtitles", subtitle_language="fre"))
    assert [f["message"] for f in wrong.failures] == ["no embedded subtitle stream in 'fre' (streams: eng)"]


def test_bad_subtitles_are_one_failure_row_per_video(tmp_path: Path, episode: Path) -> None:
    folder = _folder(tmp_path, episode, "good.mp4", "garbage.mp4", "empty.mp4", "latin1.mp4", "none.mp4", "two.mp4", "tiny.mp4")
    write_srt(folder / "good.srt", [(1.0, 2.0, "fine")])
    (folder / "garbage.srt").write_text("this is not a subtitle file\nat all\n")
    (folder / "empty.srt").write_bytes(b"")
    (folder / "latin1.srt").write_bytes("1\n00:00:01,000 --> 00:00:02,000\nça va\n".encode("latin-1"))
    write_srt(folder / "two.en.srt", [(1.0, 2.0, "english")])
    write_srt(folder / "two.fr.srt", [(1.0, 2.0, "français")])
    write_srt(folder / "tiny.srt", [(1.0, 1.1, "a"), (3.0, 3.2, "b")])
    result = segments_from_subtitles(_inputs(folder), SegmentOptions(mode="subtitles"))
    assert [s.key for s in result.segments] == ["good__000001000-000002000"]
    messages = {f["key"]: f["message"] for f in result.failures}
    assert messages == {
        "empty": "subtitle file empty.srt is empty",
        "garbage": "subtitle file garbage.srt cannot be parsed: no cue with a time and text found",
        "latin1": "subtitle file latin1.srt is not utf-8 text (invalid continuation byte at byte 32); set segment.subtitle_encoding",
        "none": "no subtitles: no none.srt (.vtt, .ass, .ssa) beside it and no embedded subtitle stream",
        "tiny": "all 2 cues of tiny.srt are shorter than segment.min_s 0.5 s",
        "two": "several subtitle files (two.en.srt, two.fr.srt); keep one or set segment.subtitle_language",
    }
    assert {f["stage"] for f in result.failures} == {"segment"}
    assert sorted(result.keys()) == sorted(["good__000001000-000002000", *messages])  # every video accounted for once
    # the fixes the messages name work
    latin1 = segments_from_subtitles([v for v in _inputs(folder) if v.key == "latin1"], SegmentOptions(subtitle_encoding="latin-1"))
    french = segments_from_subtitles([v for v in _inputs(folder) if v.key == "two"], SegmentOptions(subtitle_language="fr"))
    assert [s.text for s in latin1.segments + french.segments] == ["ça va", "français"]


def test_merge_cues_respects_max_length() -> None:
    cues = [Cue(0.0, 9.0, "a", None, (1,)), Cue(9.1, 18.0, "b", None, (2,)), Cue(18.1, 25.0, "c", None, (3,))]
    merged, notes = merge_cues(cues, SegmentOptions(max_s=20.0))
    assert [(c.start_s, c.end_s, c.text, c.numbers) for c in merged] == [(0.0, 18.0, "a b", (1, 2)), (18.1, 25.0, "c", (3,))]
    assert notes == []


# ---------------------------------------------------------------- tables

TABLE_CSV = (
    "video,start,end,id,speaker,text,dialogue,split,emotion,sentiment\r\n"
    'ep1,"00:00:00,500","0:00:02,000",,Ross,"It’s “fine”, really.",d1,train,joy,positive\r\n'
    "ep1,1.5,3.0,,Rachel,Overlaps the first,d1,train,neutral,neutral\r\n"
    "ep1,1.5,3.0,,Rachel,Same window again,d1,train,neutral,neutral\r\n"
    "ep1,5,5,,Joey,Empty,d1,train,,\r\n"
    "ep1,6,4,,Joey,Reversed,d1,train,,\r\n"
    "ep1,10.5,12,,Joey,Past the end,d1,train,,\r\n"
    "ep1,soon,9,,Joey,Bad time,d1,train,,\r\n"
    "ep2,0:00:01.000,0:00:03.000,,Chandler,Other video,d7,dev,surprise,-0.5\r\n"
    "missing_ep,1,2,,Phoebe,No such video,d9,test,,\r\n"
)


def test_segment_table_cuts_checks_and_reports(tmp_path: Path, episode: Path) -> None:
    folder = _folder(tmp_path, episode, "ep1.mp4", "season2/ep2.mkv", "unnamed.mp4")
    table = tmp_path / "segments.csv"
    table.write_bytes(("\ufeff" + TABLE_CSV).encode())
    result = segments_from_table(table, _inputs(folder), SegmentOptions(mode="table", context_before=5, context_after=5))

    keys = [s.key for s in result.segments]
    assert keys == ["ep1__000000500-000002000", "ep1__000001500-000003000", "ep1__000001500-000003000_2", "season2__ep2__000001000-000003000"]
    first = result.segments[0]
    assert first.text == "It’s “fine”, really." and first.speaker == "Ross"
    assert first.labels_fields()["emotion"] == "joy" and first.labels_fields()["sentiment"] == "positive"
    ep2 = result.segments[-1]
    assert ep2.labels_fields()["sentiment_score"] == -0.5 and ep2.labels_fields()["corpus"] == "table"
    assert ep2.source_key == "season2__ep2" and ep2.source_path == "season2/ep2.mkv"
    # the dialogue counts every row with times, failed ones included, in time order
    assert [c.text for c in result.segments[1].context_before] == ["It’s “fine”, really."]
    assert [c.text for c in first.context_after] == ["Overlaps the first", "Same window again", "Empty", "Reversed", "Past the end"]
    assert {s.group for s in result.segments if s.source_key == "ep1"} == {"ep1__d1"}
    assert result.split_table == {k: "train" for k in keys[:3]} | {keys[3]: "validation"}

    messages = {f["key"]: f["message"] for f in result.failures}
    assert messages == {
        "ep1__000005000-000005000": "segments.csv line 5: segment 00:00:05,000 to 00:00:05,000 is empty (end = start)",
        "ep1__000006000-000004000": "segments.csv line 6: segment 00:00:06,000 to 00:00:04,000 is reversed (end before start)",
        "ep1__000010500-000012000": "segments.csv line 7: segment 00:00:10,500 to 00:00:12,000 ends past the end of the video (00:00:10,900)",
        "ep1__line000008": "segments.csv line 8: 'soon' is not a time (seconds, or HH:MM:SS,mmm)",
        "unnamed": "segment table segments.csv names no utterance in this video",
    }
    assert result.unmatched == ["segments.csv line 10: no input video 'missing_ep'"]
    assert len(result.keys()) == len(set(result.keys())) == 9  # 10 rows: 4 records + 4 failures + 1 unmatched; plus the unnamed video
    _validate(result)


def test_tsv_and_jsonl_tables_and_ids(tmp_path: Path, episode: Path) -> None:
    folder = _folder(tmp_path, episode, "ep1.mp4")
    tsv = tmp_path / "cuts.tsv"
    tsv.write_text("video_id\tstart_time\tend_time\tsegment_id\tutterance\nep1.mp4\t1\t2\tutt.A/1\tone\nep1\t3\t4.25\tutt.B/2\ttwo\n")
    result = segments_from_table(tsv, _inputs(folder))
    assert [(s.key, s.id, s.text, s.end_s) for s in result.segments] == [("utt_A__1", "utt.A/1", "one", 2.0), ("utt_B__2", "utt.B/2", "two", 4.25)]

    jsonl = tmp_path / "cuts.jsonl"
    rows = [
        {"video": "ep1", "start": 1.25, "end": "00:00:02,750", "labels": ["Happy", "relieved"], "group": "show-A"},
        {"video": "ep1", "start": 7.5, "end": 9, "speaker": "Monica"},
    ]
    jsonl.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    result = segments_from_table(jsonl, _inputs(folder))
    assert [(s.key, s.group, s.speaker) for s in result.segments] == [
        ("ep1__000001250-000002750", "show-A", None),
        ("ep1__000007500-000009000", "ep1", "Monica"),
    ]
    assert result.segments[0].labels_fields()["labels"] == ["Happy", "relieved"]
    assert result.segments[1].labels_fields() is None
    _validate(result)

    dup = tmp_path / "dup.csv"
    dup.write_text("video,start,end,id\nep1,1,2,a.1\nep1,3,4,a_1\n")
    with pytest.raises(UserError, match=r"dup.csv line 3: id 'a_1' gives key 'a_1', as dup.csv line 2 does \(id 'a.1'\); ids must be unique"):
        segments_from_table(dup, _inputs(folder))
    no_times = tmp_path / "no_times.csv"
    no_times.write_text("video,begin\nep1,1\n")
    with pytest.raises(UserError, match="needs columns video, start and end"):
        segments_from_table(no_times, _inputs(folder))
    mapped = tmp_path / "mapped.csv"
    mapped.write_text("clip,from,to,who\nep1,1,2,Ross\n")
    (seg,) = segments_from_table(mapped, _inputs(folder), mapping={"video": "clip", "start": "from", "end": "to", "speaker": "who"}).segments
    assert (seg.key, seg.speaker) == ("ep1__000001000-000002000", "Ross")


def test_split_groups_by_source_video_with_the_real_assigner(tmp_path: Path, episode: Path) -> None:
    names = [f"show/ep{n:02d}.mp4" for n in range(24)]
    folder = _folder(tmp_path, episode, *names)
    table = tmp_path / "cuts.csv"
    table.write_text("video,start,end\n" + "".join(f"show/ep{n:02d},{s},{s + 1}\n" for n in range(24) for s in (0, 2, 4, 6, 8)))
    result = segments_from_table(table, _inputs(folder), duration_of=lambda v: EPISODE_S)
    assigner = SplitAssigner({"train": 0.5, "validation": 0.25, "test": 0.25}, group_by="segment.group")
    splits: dict[str, set[str]] = {}
    for s in result.segments:
        record = {"key": s.key, "segment": s.segment_fields()}
        splits.setdefault(s.source_key, set()).add(assigner(record))
    assert len(result.segments) == 120
    assert all(len(found) == 1 for found in splits.values())  # no episode in two splits
    assert len({next(iter(found)) for found in splits.values()}) == 3  # and the episodes do spread over the splits
    by_key = SplitAssigner({"train": 0.5, "validation": 0.25, "test": 0.25}, group_by="key")
    per_key = Counter(len({by_key({"key": s.key}) for s in result.segments if s.source_key == v}) for v in splits)
    assert per_key[1] < len(splits)  # grouping by key alone would scatter an episode's utterances


# ---------------------------------------------------------------- speech


def test_speech_regions_follow_the_real_speech(episode: Path) -> None:
    regions = speech_regions(str(episode), SegmentOptions(mode="speech"))
    assert regions, "no speech found in real speech"
    assert all(not (GAP[0] + 0.3 < s and e < GAP[1] - 0.3) for s, e in regions)  # nothing inside the silence
    assert any(s < FIRST_SPEECH[1] and e > FIRST_SPEECH[0] for s, e in regions)
    assert any(s < SECOND_SPEECH[1] and e > SECOND_SPEECH[0] for s, e in regions)
    assert all(e <= EPISODE_S + 0.01 for _, e in regions)


def test_segments_from_speech_and_videos_without_speech(tmp_path: Path, episode: Path) -> None:
    folder = _folder(tmp_path, episode, "talk.mp4")
    make_silent_video(folder / "silent.mp4", 3.0)
    make_silent_video(folder / "mute.mp4", 3.0, audio=False)
    result = segments_from_speech(_inputs(folder), SegmentOptions(mode="speech", min_s=0.5))
    talk = [s for s in result.segments if s.source_key == "talk"]
    assert len(talk) >= 2 and all(s.method == "speech" and s.text is None for s in talk)
    assert all(s.key == segment_key("talk", s.start_s, s.end_s) for s in talk)
    assert {f["key"]: f["message"] for f in result.failures} == {
        "mute": "no audio stream: speech segmentation needs one",
        "silent": "no speech of at least 0.5 s found",
    }
    _validate(result)


# ---------------------------------------------------------------- options and dispatch


def test_options_are_checked_and_dispatched(tmp_path: Path, episode: Path) -> None:
    with pytest.raises(UserError, match=r"segment.mode must be one of none, subtitles, table, speech, got 'scenes'"):
        check_options(SegmentOptions(mode="scenes"))
    with pytest.raises(UserError, match=r"--segment table needs a segment table"):
        check_options(SegmentOptions(mode="table"))
    with pytest.raises(UserError, match=r"segment.max_s must be above 0 and at least segment.min_s"):  # the config's own rules
        config_from_dict({"segment": {"min_s": 5, "max_s": 2}})
    with pytest.raises(UserError, match=r"config key segment.speech_threshold must be between 0 and 1, got 1.5"):
        config_from_dict({"segment": {"speech_threshold": 1.5}})
    folder = _folder(tmp_path, episode, "ep1.mp4")
    assert segment_videos(_inputs(folder), SegmentOptions()) is None
    table = tmp_path / "t.csv"
    table.write_text("video,start,end\nep1,1,2\n")
    found = segment_videos(_inputs(folder), SegmentOptions(mode="table", table=str(table)))
    assert found is not None and found.keys() == ["ep1__000001000-000002000"]
    assert probe_duration(str(episode)) == pytest.approx(EPISODE_S, abs=0.05)
    assert probe_duration(str(tmp_path / "t.csv")) is None
