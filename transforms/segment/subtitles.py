"""Utterances from subtitles: a sidecar SRT / WebVTT / ASS file or an embedded text stream, cues read as sentences."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emer_builder.core.config import SegmentConfig as SegmentOptions
from emer_builder.core.cpu import run_child
from emer_builder.core.errors import ProcessFault, exit_fault, one_line
from emer_builder.core.failures import retry_faults
from emer_builder.core.hashing import sha256_file
from emer_builder.transforms.keys import VideoInput, display_path, resolves_outside
from emer_builder.transforms.probe import PROBE_TIMEOUT_S, ffprobe_json
from emer_builder.transforms.segment.model import (
    STAGE,
    Segmentation,
    Utterance,
    assemble,
    segment_failure,
)
from emer_builder.transforms.segment.times import clock

SUBTITLE_EXTENSIONS: dict[str, str] = {".srt": "srt", ".vtt": "vtt", ".ass": "ass", ".ssa": "ssa"}  # extension -> pysubs2 format
TEXT_SUBTITLE_CODECS = frozenset({"subrip", "srt", "ass", "ssa", "webvtt", "mov_text", "text"})


@dataclass(frozen=True)
class Cue:
    """One subtitle event (or several merged)."""

    start_s: float
    end_s: float
    text: str
    speaker: str | None
    numbers: tuple[int, ...]  # 1-based event numbers in the file, for messages
    starts_turn: bool = False  # opens with a dialogue dash or a speaker tag: never joined to the cue before
    ends_sentence: bool = False  # ends with sentence punctuation (or holds several turns): never joined to the cue after


# A sentence ends at . ? ! … 。 ？ ！ (also before a closing quote or bracket); a turn starts with a
# dialogue dash, a `>>` speaker change or an upper-case speaker tag (`JOHN:`).
SENTENCE_END = re.compile(r"[.?!…。？！][\"'”’»」』）)\]]*$")
TURN_DASH = re.compile(r"^[-‐–—]\s*")
SPEAKER_TAG = re.compile(r"^(?:>>\s*|([A-Z][A-Z0-9 .'’-]{0,30}[A-Z0-9])\s*:\s+)")
VTT_VOICE = re.compile(r"<v(?:\.[^\s>]+)*\s+([^>]+)>")


def read_cue(lines: list[str], name: str | None) -> tuple[str, str | None, bool, bool]:
    """A cue's text lines as (text, speaker, starts_turn, ends_sentence). Two or more dashed lines are
    two speakers' turns sharing one pair of times: they stay one utterance (the lines cannot be timed
    apart), the text keeps the dashes, and the speaker lists the tagged names (`A / B`)."""
    lines = [ln.strip() for ln in lines if ln.strip()]
    turns, speakers = 0, []
    cleaned = []
    for line in lines:
        dashed = bool(TURN_DASH.match(line))
        body = TURN_DASH.sub("", line) if dashed else line
        tag = SPEAKER_TAG.match(body)
        if tag:
            if tag.group(1):
                speakers.append(tag.group(1).strip())
            body = body[tag.end() :]
        turns += dashed or bool(tag)
        cleaned.append(f"- {body}" if dashed else body)
    text = " ".join(" ".join(cleaned).split())
    starts_turn = bool(lines) and (bool(TURN_DASH.match(lines[0])) or bool(SPEAKER_TAG.match(lines[0])))
    if name:
        speaker = name
    elif turns > 1:
        speaker = " / ".join(speakers) if len(speakers) == turns else None
    else:
        speaker = speakers[0] if speakers else None
    if turns == 1 and text.startswith("- "):
        text = text[2:]  # one dashed line: the dash only marked the change of speaker
    return text, speaker, starts_turn, turns > 1 or bool(SENTENCE_END.search(text))


class SubtitleError(Exception):
    """A video's subtitles cannot be used: one failure row for the video."""


def subtitle_sidecars(video_path: str | Path, language: str | None = None, inside: str | None = None) -> list[Path]:
    """Subtitle files beside the video with its stem: `{stem}.srt|.vtt|.ass|.ssa`, or `{stem}.{lang}.srt` etc.
    With `language`, only `{stem}.{language}.*` (and the untagged ones when none is tagged so). With `inside`
    (the input folder, resolved), a link leading outside it is not a sidecar, as a video's link is not an
    input (`follow_external_links`)."""
    video = Path(video_path)
    try:
        names = sorted(os.listdir(video.parent))
    except OSError:
        return []
    plain, tagged = [], []
    for name in names:
        p = video.parent / name
        ext = p.suffix.lower()
        if ext not in SUBTITLE_EXTENSIONS or name.startswith("."):
            continue
        if inside is not None and p.is_symlink() and resolves_outside(p, inside):
            continue
        stem = name[: -len(p.suffix)]
        if stem == video.stem:
            plain.append(p)
        elif stem.startswith(video.stem + ".") and "." not in stem[len(video.stem) + 1 :]:
            tag = stem[len(video.stem) + 1 :]
            if language is None or tag.lower() == language.lower():
                tagged.append(p)
    if language is not None:
        return tagged or plain
    return plain + tagged


def _events_to_cues(subs: Any, voices: Sequence[str | None] | None = None) -> list[Cue]:
    """Cues from pysubs2 events (italics and font tags already stripped); `voices`: WebVTT `<v Name>`
    per event, which pysubs2 drops."""
    cues = []
    for number, event in enumerate(subs.events, 1):
        if event.is_comment or getattr(event, "is_drawing", False):
            continue
        name = (event.name or "").strip() or (voices[number - 1] if voices else None)
        text, speaker, starts_turn, ends_sentence = read_cue(event.plaintext.splitlines(), name)
        if not text:
            continue
        cues.append(Cue(event.start / 1000, event.end / 1000, text, speaker, (number,), starts_turn, ends_sentence))
    return sorted(cues, key=lambda c: (c.start_s, c.end_s, c.numbers))


def vtt_voices(text: str) -> list[str | None]:
    """The `<v Name>` voice of each WebVTT cue in file order (None where a cue has none)."""
    voices = []
    for block in re.split(r"\n\s*\n", text.replace("\r\n", "\n")):
        lines = block.strip().splitlines()
        timing = next((i for i, ln in enumerate(lines) if "-->" in ln), None)
        if timing is None:
            continue
        found = VTT_VOICE.search("\n".join(lines[timing + 1 :]))
        voices.append(found.group(1).strip() if found else None)
    return voices


def without_vtt_notes(text: str) -> str:
    """A WebVTT text without its comment blocks (a block whose first line is `NOTE`, alone or before a space)."""
    blocks = re.split(r"\n[ \t]*\n", text.replace("\r\n", "\n").replace("\r", "\n"))
    return "\n\n".join(b for b in blocks if not re.match(r"NOTE(?:[ \t]|\n|$)", b.lstrip("\n")))


def read_subtitle_file(path: str | Path, encoding: str = "utf-8") -> list[Cue]:
    """The cues of an SRT, WebVTT or ASS/SSA file (pysubs2; format from the extension); SubtitleError
    when it cannot be read or holds no cue."""
    import pysubs2

    p = Path(path)
    name = display_path(p.name)
    try:
        size = p.stat().st_size
    except OSError as e:
        raise SubtitleError(f"subtitle file {name}: cannot read ({e.strerror or e})") from None
    if size == 0:
        raise SubtitleError(f"subtitle file {name} is empty")
    codec = "utf-8-sig" if encoding.lower().replace("_", "-") == "utf-8" else encoding
    try:
        if p.suffix.lower() == ".vtt":  # pysubs2 reads a NOTE block after a cue as that cue's text
            subs = pysubs2.SSAFile.from_string(without_vtt_notes(p.read_bytes().decode(codec)), format_="vtt")
        else:
            subs = pysubs2.load(str(p), encoding=codec, format_=SUBTITLE_EXTENSIONS[p.suffix.lower()])
    except UnicodeDecodeError as e:
        raise SubtitleError(f"subtitle file {name} is not {encoding} text ({e.reason} at byte {e.start}); set segment.subtitle_encoding") from None
    except Exception as e:  # pysubs2 raises its own errors and ValueError / IndexError for malformed lines
        raise SubtitleError(f"subtitle file {name} cannot be parsed ({one_line(e)})") from None
    voices = None
    if p.suffix.lower() == ".vtt":
        found = vtt_voices(without_vtt_notes(p.read_bytes().decode(encoding, errors="replace")))
        voices = found if len(found) == len(subs.events) else None  # a cue pysubs2 skipped: names cannot be matched
    cues = _events_to_cues(subs, voices)
    if not cues:
        raise SubtitleError(f"subtitle file {name} cannot be parsed: no cue with a time and text found")
    return cues


def subtitle_streams(video_path: str) -> list[dict[str, Any]]:
    """The video's embedded subtitle streams: number among subtitle streams, codec, language, default flag."""
    data = ffprobe_json(video_path, ["-show_streams", "-select_streams", "s"]) or {}
    out = []
    for n, s in enumerate(data.get("streams") or []):
        tags = s.get("tags") or {}
        out.append(
            {
                "stream": n,
                "codec": s.get("codec_name") or "unknown",
                "language": tags.get("language") or tags.get("LANGUAGE"),
                "default": bool((s.get("disposition") or {}).get("default")),
            }
        )
    return out


def _choose_stream(streams: list[dict[str, Any]], options: SegmentOptions) -> dict[str, Any]:
    if options.subtitle_stream is not None:
        if options.subtitle_stream >= len(streams):
            raise SubtitleError(f"segment.subtitle_stream is {options.subtitle_stream}, but the video has {len(streams)} subtitle stream(s)")
        return streams[options.subtitle_stream]
    if options.subtitle_language:
        tagged = [s for s in streams if (s["language"] or "").lower().startswith(options.subtitle_language.lower())]
        if not tagged:
            langs = ", ".join(str(s["language"]) for s in streams)
            raise SubtitleError(f"no embedded subtitle stream in {options.subtitle_language!r} (streams: {langs})")
        streams = tagged
    return next((s for s in streams if s["default"]), streams[0])


def embedded_cues(video_path: str, options: SegmentOptions) -> list[Cue] | None:
    """Cues of an embedded text subtitle stream (extracted with ffmpeg as ASS, which keeps speaker names);
    None when the video has no subtitle stream."""
    import pysubs2

    streams = subtitle_streams(video_path)
    if not streams:
        return None
    chosen = _choose_stream(streams, options)
    if chosen["codec"] not in TEXT_SUBTITLE_CODECS:
        raise SubtitleError(
            f"embedded subtitle stream {chosen['stream']} is a picture format ({chosen['codec']}): convert it to SRT (OCR) and put it beside the video"
        )
    try:
        proc = run_child(["ffmpeg", "-nostdin", "-v", "error", "-i", f"file:{video_path}", "-map", f"0:s:{chosen['stream']}", "-f", "ass", "-"], PROBE_TIMEOUT_S * 5)
    except subprocess.TimeoutExpired:
        raise SubtitleError(f"extracting embedded subtitle stream {chosen['stream']} took too long") from None
    fault = exit_fault(proc.returncode)
    if fault:
        raise ProcessFault(f"ffmpeg was {fault} while extracting embedded subtitle stream {chosen['stream']}")
    if proc.returncode != 0:
        raise SubtitleError(
            f"embedded subtitle stream {chosen['stream']} ({chosen['codec']}) cannot be extracted ({one_line(proc.stderr.decode(errors='replace'))})"
        )
    try:
        cues = _events_to_cues(pysubs2.SSAFile.from_string(proc.stdout.decode("utf-8", errors="replace"), format_="ass"))
    except Exception as e:  # noqa: BLE001 - pysubs2's errors, as above
        raise SubtitleError(f"embedded subtitle stream {chosen['stream']} cannot be parsed ({one_line(e)})") from None
    if not cues:
        raise SubtitleError(f"embedded subtitle stream {chosen['stream']} holds no cue with text")
    return cues


def merge_cues(cues: Sequence[Cue], options: SegmentOptions, name: str = "") -> tuple[list[Cue], list[str]]:
    """A cue continues the utterance before it only when that one did not end its sentence, the cue
    starts no new turn (dash, speaker tag), the speakers do not differ, it follows within `merge_gap_s`
    (or overlaps) and the result stays within `max_s`: consecutive subtitles two frames apart are
    separate sentences, usually by separate speakers. Utterances shorter than `min_s` are dropped, each
    with a note."""
    merged: list[Cue] = []
    for cue in sorted(cues, key=lambda c: (c.start_s, c.end_s, c.numbers)):
        if merged:
            last = merged[-1]
            same_speaker = last.speaker is None or cue.speaker is None or last.speaker == cue.speaker
            continues = not last.ends_sentence and not cue.starts_turn and same_speaker
            if continues and cue.start_s - last.end_s < options.merge_gap_s and max(cue.end_s, last.end_s) - last.start_s <= options.max_s:
                merged[-1] = Cue(
                    last.start_s, max(last.end_s, cue.end_s), f"{last.text} {cue.text}", last.speaker or cue.speaker, last.numbers + cue.numbers,
                    last.starts_turn, cue.ends_sentence,
                )
                continue
        merged.append(cue)
    kept, notes = [], []
    for cue in merged:
        if cue.end_s - cue.start_s < options.min_s:
            which = ", ".join(map(str, cue.numbers))
            notes.append(f"{name} cue {which} ({clock(cue.start_s)} to {clock(cue.end_s)}) is shorter than segment.min_s {options.min_s:g} s: dropped")
        else:
            kept.append(cue)
    return kept, notes


def subtitle_utterances(video: VideoInput, options: SegmentOptions, inside: str | None = None) -> tuple[list[Utterance], list[str], Path | None]:
    """One video's utterances from its sidecar subtitle file, else its embedded subtitle stream:
    (utterances, notes, sidecar used). SubtitleError when it has none usable."""
    sidecars = subtitle_sidecars(video.path, options.subtitle_language, inside)
    if len(sidecars) > 1:
        names = ", ".join(display_path(p.name) for p in sidecars)
        raise SubtitleError(f"several subtitle files ({names}); keep one or set segment.subtitle_language")
    if sidecars:
        source: Path | None = sidecars[0]
        cues = read_subtitle_file(sidecars[0], options.subtitle_encoding)
        name = display_path(sidecars[0].name)
    else:
        source = None
        found = embedded_cues(video.path, options)
        if found is None:
            stem = display_path(Path(video.path).stem)
            raise SubtitleError(f"no subtitles: no {stem}.srt (.vtt, .ass, .ssa) beside it and no embedded subtitle stream")
        cues = found
        name = f"{display_path(Path(video.source_path).name)} (embedded)"
    kept, notes = merge_cues(cues, options, name)
    if not kept:
        raise SubtitleError(f"all {len(cues)} cues of {name} are shorter than segment.min_s {options.min_s:g} s")
    utterances = [Utterance(video, c.start_s, c.end_s, f"{name} cue {', '.join(map(str, c.numbers))}", speaker=c.speaker, text=c.text) for c in kept]
    return utterances, notes, source


def segments_from_subtitles(
    videos: Sequence[VideoInput], options: SegmentOptions, duration_of: Callable[[VideoInput], float | None] | None = None, inside: str | None = None
) -> Segmentation:
    """Every video cut at its subtitle cues; a video without usable subtitles is one failure row (key = the video's key).
    `inside`: the input folder, resolved, when sidecar links leading outside it are not followed."""
    utterances: list[Utterance] = []
    result = Segmentation()
    for video in sorted(videos, key=lambda v: v.key):
        try:
            found, notes, sidecar = retry_faults(lambda video=video: subtitle_utterances(video, options, inside), video.source_path, STAGE)
        except SubtitleError as e:
            result.failures.append(segment_failure(video.key, video.source_path, str(e)))
            continue
        utterances += found
        result.notes += [f"{video.source_path}: {n}" for n in notes]
        if sidecar is not None:
            result.files.append({"path": str(sidecar), "sha256": sha256_file(str(sidecar))})
    result.extend(assemble(utterances, "subtitles", options, duration_of))
    return result.sort()


