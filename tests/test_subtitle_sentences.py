"""Subtitle cues are read as sentences: a cue that ends a sentence ends its utterance, a dash or a
speaker tag starts one, different speakers never merge; only continuations (a sentence running over
two cues) are joined. Real-format files: SRT with italics, font tags and two-line cues, ASS with
`Name`, WebVTT with voice tags."""

from __future__ import annotations

from pathlib import Path

from emer_builder.core.config import SegmentConfig
from emer_builder.transforms.segment import merge_cues, read_subtitle_file

OPTIONS = SegmentConfig(mode="subtitles")


def utterances(path: Path) -> list[tuple[float, float, str | None, str]]:
    kept, _ = merge_cues(read_subtitle_file(path), OPTIONS, path.name)
    return [(c.start_s, c.end_s, c.speaker, c.text) for c in kept]


def test_consecutive_sentences_two_frames_apart_stay_apart(tmp_path: Path):
    """The issue's episode: three whole sentences by three speakers, 40 ms apart, once merged into one 16 s record."""
    srt = tmp_path / "ep.srt"
    srt.write_text(
        "1\n00:00:00,040 --> 00:00:03,380\n我哪知道啊。\n\n"
        "2\n00:00:03,420 --> 00:00:11,710\nI will show a directory.\n\n"
        "3\n00:00:11,750 --> 00:00:16,100\n¿Dónde está la biblioteca?\n\n",
        encoding="utf-8",
    )
    assert utterances(srt) == [
        (0.04, 3.38, None, "我哪知道啊。"),
        (3.42, 11.71, None, "I will show a directory."),
        (11.75, 16.1, None, "¿Dónde está la biblioteca?"),
    ]


def test_a_sentence_over_two_cues_and_two_lines_is_one_utterance(tmp_path: Path):
    srt = tmp_path / "ep.srt"
    srt.write_bytes(
        (
            "\ufeff1\r\n00:00:01,000 --> 00:00:03,000\r\n<i>I told him that we would</i>\r\n<font color=\"#ffff00\">never go back</font>\r\n\r\n"
            "2\r\n00:00:03,080 --> 00:00:05,000\r\nto that house again.\r\n\r\n"
            "3\r\n00:00:05,040 --> 00:00:06,500\r\n\"Why not?\"\r\n\r\n"
            "4\r\n00:00:06,540 --> 00:00:08,000\r\nBecause (he said)\r\n\r\n"
            "5\r\n00:00:08,040 --> 00:00:09,000\r\nit's haunted…\r\n\r\n"
        ).encode()
    )
    assert utterances(srt) == [
        (1.0, 5.0, None, "I told him that we would never go back to that house again."),  # tags gone, lines and cues joined
        (5.04, 6.5, None, '"Why not?"'),  # ends before its closing quote
        (6.54, 9.0, None, "Because (he said) it's haunted…"),
    ]


def test_dashes_and_speaker_tags_start_turns(tmp_path: Path):
    srt = tmp_path / "ep.srt"
    srt.write_text(
        "1\n00:00:01,000 --> 00:00:02,000\nWell, I was going to\n\n"
        "2\n00:00:02,040 --> 00:00:03,500\n- Where are you going?\n- Out!\n\n"  # two turns, one pair of times
        "3\n00:00:03,540 --> 00:00:04,500\n- and then\n\n"  # a dash opens a new turn even mid-sentence
        "4\n00:00:04,540 --> 00:00:05,500\nwe left.\n\n"
        "5\n00:00:05,540 --> 00:00:07,000\n- MONICA: Hi,\n- RACHEL: hello!\n\n"
        "6\n00:00:07,040 --> 00:00:08,000\nJOEY: How you doin'\n\n"
        "7\n00:00:08,040 --> 00:00:09,000\nthis morning?\n\n",
        encoding="utf-8",
    )
    assert utterances(srt) == [
        (1.0, 2.0, None, "Well, I was going to"),
        (2.04, 3.5, None, "- Where are you going? - Out!"),
        (3.54, 5.5, None, "and then we left."),
        (5.54, 7.0, "MONICA / RACHEL", "- Hi, - hello!"),  # both speakers recorded, tags out of the text
        (7.04, 9.0, "JOEY", "How you doin' this morning?"),
    ]


def test_ass_names_keep_speakers_apart_and_join_one_speakers_continuation(tmp_path: Path):
    ass = tmp_path / "ep.ass"
    ass.write_text(
        "[Script Info]\nScriptType: v4.00+\n\n[V4+ Styles]\n"
        "Format: Name, Fontname, Fontsize, PrimaryColour, SecondaryColour, OutlineColour, BackColour, Bold, Italic, Underline, StrikeOut, ScaleX, ScaleY, Spacing, Angle, BorderStyle, Outline, Shadow, Alignment, MarginL, MarginR, MarginV, Encoding\n"
        "Style: Default,Arial,20,&H00FFFFFF,&H000000FF,&H00000000,&H00000000,0,0,0,0,100,100,0,0,1,2,2,2,10,10,10,1\n\n"
        "[Events]\nFormat: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text\n"
        "Dialogue: 0,0:00:01.00,0:00:02.00,Default,Monica,0,0,0,,{\\i1}I think{\\i0} that\n"
        "Dialogue: 0,0:00:02.04,0:00:03.00,Default,Monica,0,0,0,,he is right\\Nabout it.\n"
        "Dialogue: 0,0:00:03.04,0:00:04.00,Default,Rachel,0,0,0,,and\n"
        "Dialogue: 0,0:00:04.04,0:00:05.00,Default,Ross,0,0,0,,we were on a break\n",
        encoding="utf-8",
    )
    assert utterances(ass) == [
        (1.0, 3.0, "Monica", "I think that he is right about it."),
        (3.04, 4.0, "Rachel", "and"),  # another speaker: never joined, even mid-sentence
        (4.04, 5.0, "Ross", "we were on a break"),
    ]


def test_webvtt_voices_are_speakers(tmp_path: Path):
    vtt = tmp_path / "ep.vtt"
    vtt.write_text(
        "WEBVTT\n\nNOTE a comment block\n\n"
        "intro\n00:00:01.000 --> 00:00:02.000\n<v Roger Bingham>We are in New York City\n\n"
        "00:00:02.040 --> 00:00:03.000\n<v Roger Bingham>and it is late.\n\n"
        "00:00:03.040 --> 00:00:04.000\n<v.loud Neil deGrasse Tyson>It is\n\n"
        "00:00:04.040 --> 00:00:05.000\n<v Roger Bingham>Really?\n\n",
        encoding="utf-8",
    )
    assert utterances(vtt) == [
        (1.0, 3.0, "Roger Bingham", "We are in New York City and it is late."),
        (3.04, 4.0, "Neil deGrasse Tyson", "It is"),
        (4.04, 5.0, "Roger Bingham", "Really?"),
    ]
