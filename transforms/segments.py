"""Cut long videos into utterances: from subtitles, from a segment table, or from detected speech.

Episodes, films and interviews are minutes to hours long; EMER works on utterances. Every segmenter
here turns its input into `Utterance`s (a row or cue with times, not yet checked), and `assemble`
turns those into `Segment`s (one per record, with a key, an index and the dialogue context) plus one
failure row (stage `segment`) per utterance or video that cannot become a record. Nothing is
decoded here: a `Segment` says which window of which file the decode stage seeks to, so a long
video is never held in memory.

Keys: `{video_key}__{start_ms:09d}-{end_ms:09d}`, or the table's / corpus' id, both through
`keys.key_for` so they stay safe as WebDataset keys and file names. Exact repeats of a time window
in one video (MELD has them: one subtitle split into two utterances) get `_2`, `_3` in table order.

Plain Python, deterministic (everything sorted), no Beam.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
import subprocess
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from emer_builder.core.config import SegmentConfig as SegmentOptions
from emer_builder.core.errors import ClipError, ProcessFault, UserError, exit_fault, one_line
from emer_builder.core.failures import failure_row, retry_faults
from emer_builder.core.hashing import sha256_file
from emer_builder.core.labels import parse_labels
from emer_builder.core.tables import Table, read_table
from emer_builder.transforms.keys import VideoInput, display_path, key_for

MODES: tuple[str, ...] = ("none", "subtitles", "table", "speech")
STAGE = "segment"  # the stage failure rows name
SUBTITLE_EXTENSIONS: dict[str, str] = {".srt": "srt", ".vtt": "vtt", ".ass": "ass", ".ssa": "ssa"}  # extension -> pysubs2 format
TEXT_SUBTITLE_CODECS = frozenset({"subrip", "srt", "ass", "ssa", "webvtt", "mov_text", "text"})
PROBE_TIMEOUT_S = 60.0
SAMPLE_RATE = 16_000
VAD_BLOCK_S = 600.0  # speech detection reads the audio in blocks this long: memory stays bounded for any length


DEFAULT_OPTIONS = SegmentOptions()


def check_options(options: SegmentOptions) -> None:
    """Every value up front, one line naming the key."""
    checks: list[tuple[str, bool, str]] = [
        ("mode", options.mode in MODES, f"one of {', '.join(MODES)}"),
        ("min_s", options.min_s >= 0, "at least 0"),
        ("max_s", options.max_s > 0 and options.max_s >= options.min_s, "above 0 and at least segment.min_s"),
        ("merge_gap_s", options.merge_gap_s >= 0, "at least 0"),
        ("speech_pause_s", 0 < options.speech_pause_s <= 10, "above 0 and at most 10"),
        ("speech_threshold", 0 < options.speech_threshold < 1, "between 0 and 1"),
        ("speech_pad_s", 0 <= options.speech_pad_s <= 2, "between 0 and 2"),
        ("context_before", 0 <= options.context_before <= 50, "between 0 and 50"),
        ("context_after", 0 <= options.context_after <= 50, "between 0 and 50"),
        ("end_tolerance_s", options.end_tolerance_s >= 0, "at least 0"),
        ("subtitle_stream", options.subtitle_stream is None or options.subtitle_stream >= 0, "at least 0 or null"),
    ]
    for name, ok, what in checks:
        if not ok:
            raise UserError(f"config key segment.{name} must be {what}, got {getattr(options, name)!r}")
    if options.mode == "table" and not options.table:
        raise UserError("--segment table needs a segment table (--segment-table PATH or segment.table in build.yaml)")


# ---------------------------------------------------------------- times and keys

_CLOCK = re.compile(r"(?:(\d+):)?(\d{1,2}):(\d{1,2})(?:[,.](\d{1,9}))?")


def parse_time(value: Any) -> float:
    """Seconds from `12.5`, `HH:MM:SS,mmm`, `H:MM:SS.mmm` or `MM:SS,mmm` (MELD writes both `0:20:23,931`
    and `00:20:23,931`); a number is seconds. ValueError with the value when it is none of these."""
    if value is None or (isinstance(value, str) and not value.strip()):
        raise ValueError("an empty cell is not a time")
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a time")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        text = str(value).strip()
        m = _CLOCK.fullmatch(text)
        if m:
            hours, minutes, secs, fraction = m.groups()
            if int(minutes) >= 60 or int(secs) >= 60:
                raise ValueError(f"{text!r} is not a time (minutes and seconds must be below 60)")
            seconds = int(hours or 0) * 3600 + int(minutes) * 60 + int(secs) + (int(fraction) / 10 ** len(fraction) if fraction else 0.0)
        else:
            try:
                seconds = float(text)
            except ValueError:
                raise ValueError(f"{text!r} is not a time (seconds, or HH:MM:SS,mmm)") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{value!r} is not a time (negative or not finite)")
    return seconds


def clock(seconds: float) -> str:
    """`HH:MM:SS,mmm`, as subtitles write times: how messages show them."""
    ms = round(seconds * 1000)
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"


def segment_key(video_key: str, start_s: float, end_s: float) -> str:
    """`{video_key}__{start_ms:09d}-{end_ms:09d}`; over-long keys are cut and hashed by `key_for`."""
    return key_for(f"{video_key}__{round(start_s * 1000):09d}-{round(end_s * 1000):09d}")


# ---------------------------------------------------------------- what flows


@dataclass(frozen=True)
class ContextLine:
    """A neighbouring utterance of the same dialogue, as the record lists it."""

    speaker: str | None
    text: str | None
    start_s: float | None
    end_s: float | None

    def row(self) -> dict[str, Any]:
        return {"speaker": self.speaker, "text": self.text, "start_s": self.start_s, "end_s": self.end_s}


@dataclass(frozen=True)
class Utterance:
    """One cue, table row or speech region before it is checked: what a segmenter found.

    `where` names it in messages (`segments.csv line 12`, `ep1.srt cue 4`). `problem` is set when the
    row itself is unusable (a time that does not parse); it becomes a failure row."""

    video: VideoInput  # the file decoded: the whole source when `seek`, else the utterance's own clip
    start_s: float | None
    end_s: float | None
    where: str
    id: str | None = None
    speaker: str | None = None
    text: str | None = None
    dialogue: str | None = None  # None: the source video's key
    group: str | None = None  # None: the dialogue when a table gives one, else the source video's key
    order: tuple[Any, ...] = ()  # position in the dialogue; empty: by time
    labels: Mapping[str, Any] | None = None  # `labels` group values (see corpus_labels)
    split: str | None = None  # the corpus' split for the split table, already mapped (train/validation/test)
    seek: bool = True  # False: `video` is already cut to this utterance (MELD's clips); the times place it in `source_key`
    source_key: str | None = None  # None: the video's key
    key: str | None = None  # the record key a corpus' key rule gives; None: from `id`, else from the times
    line: int = 0  # the table line, for the key of a row that cannot be cut
    problem: str | None = None
    record: bool = True  # False: a row whose video is absent, kept only as the dialogue's context (MELD rows without a clip)


@dataclass(frozen=True)
class Segment:
    """One utterance on its way to a record: which file to decode (and which window of it), and the
    values of its `segment` and `labels` groups."""

    key: str
    path: str  # absolute path of the file to decode
    source_path: str  # that file relative to the input folder (display form): the record's source_path
    source_key: str
    start_s: float | None  # None only for already-cut clips whose table gives no usable time
    end_s: float | None
    seek: bool  # True: decode [start_s, end_s) of `path`; False: decode the whole of `path`
    method: str
    index: int
    dialogue: str
    group: str
    id: str | None = None
    speaker: str | None = None
    text: str | None = None
    context_before: tuple[ContextLine, ...] = ()
    context_after: tuple[ContextLine, ...] = ()
    labels: Mapping[str, Any] | None = None

    def window(self) -> tuple[float, float] | None:
        """(start_s, duration_s) to seek to with ffmpeg `-ss START -t DURATION`; None: decode the whole file."""
        if not self.seek:
            return None
        assert self.start_s is not None and self.end_s is not None
        return (self.start_s, self.end_s - self.start_s)

    def segment_fields(self) -> dict[str, Any]:
        """The record's `segment` group."""
        return {
            "method": self.method,
            "source_key": self.source_key,
            "start_s": self.start_s,
            "end_s": self.end_s,
            "index": self.index,
            "id": self.id,
            "speaker": self.speaker,
            "text": self.text,
            "dialogue": self.dialogue,
            "group": self.group,
            "context_before": [c.row() for c in self.context_before],
            "context_after": [c.row() for c in self.context_after],
        }

    def labels_fields(self) -> dict[str, Any] | None:
        """The record's `labels` group; None (a null group) when nothing gave labels."""
        return corpus_labels(**self.labels) if self.labels else None


LABEL_FIELDS: tuple[str, ...] = (
    "corpus",
    "sample_id",
    "official_split",
    "emotion",
    "sentiment",
    "sentiment_score",
    "score_min",
    "score_max",
    "text_score",
    "audio_score",
    "visual_score",
    "emotion_scores",
    "labels",
)


def corpus_labels(**values: Any) -> dict[str, Any]:
    """A full `labels` group: the given values, null (empty lists) for the rest; unknown names are an error."""
    unknown = set(values) - set(LABEL_FIELDS)
    if unknown:
        raise ValueError(f"not fields of the labels group: {', '.join(sorted(unknown))}")
    out: dict[str, Any] = dict.fromkeys(LABEL_FIELDS)
    out.update(values)
    out["emotion_scores"] = [dict(e) for e in out["emotion_scores"] or []]
    out["labels"] = list(out["labels"] or [])
    return out


@dataclass
class Segmentation:
    """What segmenting a build's inputs gave: segments, failure rows, table rows naming no video, and notes
    (dropped or merged cues). `split_table` holds the splits a table or corpus named (key -> split)."""

    segments: list[Segment] = field(default_factory=list)
    failures: list[dict[str, str]] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    split_table: dict[str, str] = field(default_factory=dict)
    files: list[dict[str, Any]] = field(default_factory=list)  # tables and subtitle files read: path, sha256 (inputs fingerprint)
    skipped: list[str] = field(default_factory=list)  # video files a corpus' tables do not list: not inputs, reported like skipped files

    def keys(self) -> list[str]:
        """Every input of the build after segmenting, records and failure rows together: what the completeness check counts."""
        return sorted([s.key for s in self.segments] + [f["key"] for f in self.failures])

    def extend(self, other: Segmentation) -> None:
        self.segments += other.segments
        self.failures += other.failures
        self.unmatched += other.unmatched
        self.notes += other.notes
        self.split_table.update(other.split_table)
        self.files += other.files
        self.skipped += other.skipped

    def sort(self) -> Segmentation:
        self.segments.sort(key=lambda s: s.key)
        self.failures.sort(key=lambda f: (f["key"], f["message"]))
        self.unmatched.sort()
        self.skipped.sort()
        self.files.sort(key=lambda f: f["path"])
        return self


def _failure(key: str, source_path: str, message: str) -> dict[str, str]:
    return failure_row(key, source_path, STAGE, ClipError(message))


# ---------------------------------------------------------------- probing


def _ffprobe(path: str, args: list[str]) -> dict[str, Any] | None:
    """ffprobe's JSON answer, or None when the file is no regular readable media file (decode then names the problem)."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None  # a pipe or device would block ffprobe; decode reports it
    except OSError:
        return None
    try:
        proc = subprocess.run(
            ["ffprobe", "-v", "error", "-print_format", "json", *args, f"file:{path}"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=PROBE_TIMEOUT_S,
            check=False,
        )
    except (subprocess.TimeoutExpired, FileNotFoundError):
        return None
    if proc.returncode != 0:
        return None
    try:
        data = json.loads(proc.stdout or b"{}")
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def probe_duration(path: str) -> float | None:
    """The video's duration in seconds as ffprobe reads it; None when unknown (decode reports why)."""
    data = _ffprobe(path, ["-show_entries", "format=duration"])
    try:
        value = float((data or {}).get("format", {}).get("duration"))
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) and value > 0 else None


# ---------------------------------------------------------------- assembling


def id_key(segment_id: str) -> str:
    """A table's id as a key: `keys.key_for` rules, but a dot is kept as `_` (an id has no file extension to drop)."""
    return key_for(segment_id.replace(".", "_"))


def _key_of(u: Utterance) -> str:
    if u.key is not None:
        return u.key
    if u.id is not None:
        return id_key(u.id)
    assert u.start_s is not None and u.end_s is not None
    return segment_key(u.video.key, u.start_s, u.end_s)


def _line_key(u: Utterance, number: int) -> str:
    """Key of a row whose times do not parse: its own key or id, else the video key and the row's line."""
    if u.key is not None or u.id is not None:
        return _key_of(u)
    return key_for(f"{u.video.key}__line{u.line or number:06d}")


def _check(u: Utterance, duration: float | None, tolerance: float) -> str | None:
    """Why the utterance's window cannot be cut, or None. Already-cut clips are decoded whole: their times only document where they lie."""
    if not u.seek:
        return None
    assert u.start_s is not None and u.end_s is not None
    span = f"segment {clock(u.start_s)} to {clock(u.end_s)}"
    if u.end_s == u.start_s:
        return f"{u.where}: {span} is empty (end = start)"
    if u.end_s < u.start_s:
        return f"{u.where}: {span} is reversed (end before start)"
    if duration is not None:
        if u.start_s >= duration:
            return f"{u.where}: {span} starts past the end of the video ({clock(duration)})"
        if u.end_s > duration + tolerance:
            return f"{u.where}: {span} ends past the end of the video ({clock(duration)})"
    return None


def assemble(
    utterances: Iterable[Utterance],
    method: str,
    options: SegmentOptions,
    duration_of: Callable[[VideoInput], float | None] | None = None,
) -> Segmentation:
    """Checked segments with keys, index and context; one failure row per unusable utterance.

    `duration_of(video)` gives the length that windows are checked against (default: ffprobe, once per
    video); utterances that are already cut (`seek=False`) are not checked against it. Overlapping
    utterances stay separate records. Two ids that give one key are a UserError (a table's ids must be unique).
    """
    items = list(utterances)
    result = Segmentation()
    durations: dict[str, float | None] = {}
    probe = duration_of or (lambda v: probe_duration(v.path))

    def duration(video: VideoInput) -> float | None:
        if video.path not in durations:
            durations[video.path] = probe(video)
        return durations[video.path]

    # keys: a key rule's keys and ids must be unique; repeated time windows in one video are numbered in input order
    keys: dict[int, str] = {}
    by_key: dict[str, Utterance] = {}
    seen: defaultdict[str, int] = defaultdict(int)
    timed: list[tuple[int, Utterance]] = []
    for number, u in enumerate(items, 1):
        if not u.record:
            timed.append((number, u))  # counts in its dialogue's index and context, nothing more
            continue
        cut = u.problem is None and (not u.seek or (u.start_s is not None and u.end_s is not None))
        explicit = u.key is not None or u.id is not None
        key = _key_of(u) if explicit or cut else _line_key(u, number)
        if explicit:
            if key in by_key:
                first = by_key[key]
                raise UserError(f"{u.where}: id {u.key or u.id!r} gives key {key!r}, as {first.where} does (id {first.key or first.id!r}); ids must be unique")
            by_key[key] = u
        else:
            seen[key] += 1
            if seen[key] > 1:
                key = key_for(f"{key}_{seen[key]}")
        keys[number] = key
        if cut:
            timed.append((number, u))
        else:
            result.failures.append(_failure(key, u.video.source_path, u.problem or f"{u.where}: no start or end time"))

    # index and context, within each dialogue, in order
    dialogues: defaultdict[str, list[tuple[int, Utterance]]] = defaultdict(list)
    for number, u in timed:
        dialogues[u.dialogue or u.source_key or u.video.key].append((number, u))
    for dialogue in sorted(dialogues):
        members = sorted(dialogues[dialogue], key=lambda item: (item[1].order or (item[1].start_s or 0.0, item[1].end_s or 0.0), item[0]))
        lines = [ContextLine(u.speaker, u.text, u.start_s, u.end_s) for _, u in members]
        for index, (number, u) in enumerate(members):
            if not u.record:
                continue
            key = keys[number]
            problem = _check(u, duration(u.video) if u.seek else None, options.end_tolerance_s)
            if problem is not None:
                result.failures.append(_failure(key, u.video.source_path, problem))
                continue
            source_key = u.source_key or u.video.key
            before = tuple(lines[max(0, index - options.context_before) : index]) if options.context_before else ()
            result.segments.append(
                Segment(
                    key=key,
                    path=u.video.path,
                    source_path=u.video.source_path,
                    source_key=source_key,
                    start_s=u.start_s,
                    end_s=u.end_s,
                    seek=u.seek,
                    method=method,
                    index=index,
                    dialogue=dialogue,
                    group=u.group or (u.dialogue if u.dialogue else source_key),
                    id=u.id,
                    speaker=u.speaker,
                    text=u.text,
                    context_before=before,
                    context_after=tuple(lines[index + 1 : index + 1 + options.context_after]),
                    labels=u.labels,
                )
            )
            if u.split is not None:
                result.split_table[key] = u.split
    return result.sort()


# ---------------------------------------------------------------- subtitles


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


def subtitle_sidecars(video_path: str | Path, language: str | None = None) -> list[Path]:
    """Subtitle files beside the video with its stem: `{stem}.srt|.vtt|.ass|.ssa`, or `{stem}.{lang}.srt` etc.
    With `language`, only `{stem}.{language}.*` (and the untagged ones when none is tagged so)."""
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
    try:
        subs = pysubs2.load(
            str(p), encoding="utf-8-sig" if encoding.lower().replace("_", "-") == "utf-8" else encoding, format_=SUBTITLE_EXTENSIONS[p.suffix.lower()]
        )
    except UnicodeDecodeError as e:
        raise SubtitleError(f"subtitle file {name} is not {encoding} text ({e.reason} at byte {e.start}); set segment.subtitle_encoding") from None
    except Exception as e:  # pysubs2 raises its own errors and ValueError / IndexError for malformed lines
        raise SubtitleError(f"subtitle file {name} cannot be parsed ({one_line(e)})") from None
    voices = None
    if p.suffix.lower() == ".vtt":
        found = vtt_voices(p.read_bytes().decode(encoding, errors="replace"))
        voices = found if len(found) == len(subs.events) else None  # a cue pysubs2 skipped: names cannot be matched
    cues = _events_to_cues(subs, voices)
    if not cues:
        raise SubtitleError(f"subtitle file {name} cannot be parsed: no cue with a time and text found")
    return cues


def subtitle_streams(video_path: str) -> list[dict[str, Any]]:
    """The video's embedded subtitle streams: number among subtitle streams, codec, language, default flag."""
    data = _ffprobe(video_path, ["-show_streams", "-select_streams", "s"]) or {}
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
        proc = subprocess.run(
            ["ffmpeg", "-nostdin", "-v", "error", "-i", f"file:{video_path}", "-map", f"0:s:{chosen['stream']}", "-f", "ass", "-"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=PROBE_TIMEOUT_S * 5,
            check=False,
        )
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


def subtitle_utterances(video: VideoInput, options: SegmentOptions) -> tuple[list[Utterance], list[str], Path | None]:
    """One video's utterances from its sidecar subtitle file, else its embedded subtitle stream:
    (utterances, notes, sidecar used). SubtitleError when it has none usable."""
    sidecars = subtitle_sidecars(video.path, options.subtitle_language)
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
    videos: Sequence[VideoInput], options: SegmentOptions, duration_of: Callable[[VideoInput], float | None] | None = None
) -> Segmentation:
    """Every video cut at its subtitle cues; a video without usable subtitles is one failure row (key = the video's key)."""
    utterances: list[Utterance] = []
    result = Segmentation()
    for video in sorted(videos, key=lambda v: v.key):
        try:
            found, notes, sidecar = retry_faults(lambda video=video: subtitle_utterances(video, options), video.source_path, STAGE)
        except SubtitleError as e:
            result.failures.append(_failure(video.key, video.source_path, str(e)))
            continue
        utterances += found
        result.notes += [f"{video.source_path}: {n}" for n in notes]
        if sidecar is not None:
            result.files.append({"path": str(sidecar), "sha256": sha256_file(str(sidecar))})
    result.extend(assemble(utterances, "subtitles", options, duration_of))
    return result.sort()


# ---------------------------------------------------------------- tables

# Column name -> what it holds; matched without case, the first present wins.
TABLE_COLUMNS: dict[str, tuple[str, ...]] = {
    "video": ("video", "video_id", "video_key", "file", "source", "path"),
    "start": ("start", "start_s", "start_time", "starttime", "begin"),
    "end": ("end", "end_s", "end_time", "endtime", "stop"),
    "id": ("id", "segment_id", "utterance_key"),
    "speaker": ("speaker",),
    "text": ("text", "utterance", "transcript", "subtitle"),
    "dialogue": ("dialogue", "dialogue_id", "conversation"),
    "group": ("group",),
    "split": ("split",),
    "emotion": ("emotion", "discrete"),
    "sentiment": ("sentiment",),
    "score": ("score", "valence"),
    "labels": ("labels",),
}


def _cell(row: Mapping[str, Any], column: str | None) -> str | None:
    if column is None:
        return None
    value = row.get(column)
    if value is None:
        return None
    text = str(value).strip()
    return text or None


class VideoIndex:
    """Finds the input video a table names: by key, by path relative to the input folder (with or
    without its extension), or by file stem when that stem is unique."""

    def __init__(self, videos: Sequence[VideoInput]):
        self.by_name: dict[str, VideoInput] = {}
        stems: defaultdict[str, list[VideoInput]] = defaultdict(list)
        for v in sorted(videos, key=lambda v: v.key):
            rel = v.source_path
            for name in (v.key, rel, str(Path(rel).with_suffix(""))):
                self.by_name.setdefault(name, v)
            stems[Path(rel).stem].append(v)
        for stem, found in stems.items():
            if len(found) == 1:
                self.by_name.setdefault(stem, found[0])

    def find(self, name: str) -> VideoInput | None:
        name = name.strip().replace("\\", "/")
        return self.by_name.get(name) or self.by_name.get(name.lstrip("./"))


def _number(text: str | None, where: str, what: str) -> float | None:
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{where}: {what} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"{where}: {what} {text!r} is not a finite number")
    return value


def table_labels(row: Mapping[str, Any], columns: Mapping[str, str | None], where: str, corpus: str = "table") -> dict[str, Any] | None:
    """The `labels` group values a generic segment table gives (emotion, sentiment word or score, label list); None when none."""
    values: dict[str, Any] = {}
    emotion = _cell(row, columns.get("emotion"))
    if emotion:
        values["emotion"] = emotion
    sentiment = _cell(row, columns.get("sentiment"))
    if sentiment:
        try:
            values["sentiment_score"] = float(sentiment)
        except ValueError:
            values["sentiment"] = sentiment.lower()
    score = _number(_cell(row, columns.get("score")), where, "score")
    if score is not None:
        values["sentiment_score"] = score
    labels_col = columns.get("labels")
    if labels_col is not None and row.get(labels_col) not in (None, ""):
        try:
            values["labels"] = parse_labels(row.get(labels_col), "lenient")
        except ValueError as e:
            raise ValueError(f"{where}: labels {e}") from None
    if not values:
        return None
    return {"corpus": corpus, **values}


def table_columns(table: Table, mapping: Mapping[str, str] | None = None, group_column: str | None = None) -> dict[str, str | None]:
    """What each column holds: the mapping's columns (checked), else the recognised names (TABLE_COLUMNS)."""
    columns: dict[str, str | None] = {what: table.column(*names) for what, names in TABLE_COLUMNS.items()}
    for what, column in (mapping or {}).items():
        if what not in TABLE_COLUMNS:
            raise UserError(f"segment table mapping: unknown field {what!r} (fields: {', '.join(TABLE_COLUMNS)})")
        found = table.column(column.lower())
        if found is None:
            raise UserError(f"segment table {table.path}: no column {column!r} (mapped to {what}); its columns are {', '.join(table.columns)}")
        columns[what] = found
    if group_column is not None:
        found = table.column(group_column.lower())
        if found is None:
            raise UserError(f"segment table {table.path}: no column {group_column!r} (segment.group_column); its columns are {', '.join(table.columns)}")
        columns["group"] = found
    missing = [what for what in ("video", "start", "end") if columns[what] is None]
    if missing:
        wanted = "; ".join(f"{what}: one of {', '.join(TABLE_COLUMNS[what])}" for what in missing)
        raise UserError(f"segment table {table.path} needs columns video, start and end ({wanted}); it has {', '.join(table.columns)}")
    return columns


SPLIT_ALIASES = {"dev": "validation", "valid": "validation", "val": "validation"}


def table_utterances(
    path: str | Path,
    videos: Sequence[VideoInput],
    mapping: Mapping[str, str] | None = None,
    group_column: str | None = None,
) -> tuple[list[Utterance], list[str], Table]:
    """The table's rows as utterances, and one line per row naming no input video ("reported like
    unmatched annotations"). Rows with times that do not parse carry the problem (a failure row later)."""
    table = read_table(path, what="segment table")
    columns = table_columns(table, mapping, group_column)
    index = VideoIndex(videos)
    utterances, unmatched = [], []
    name = display_path(table.path.name)
    for line, row in table.numbered():
        where = f"{name} line {line}"
        video_name = _cell(row, columns["video"])
        if video_name is None:
            unmatched.append(f"{where}: no video named")
            continue
        video = index.find(video_name)
        if video is None:
            unmatched.append(f"{where}: no input video {video_name!r}")
            continue
        problem = None
        start = end = None
        labels = None
        try:
            start = parse_time(row.get(columns["start"]) if table.format == "jsonl" else _cell(row, columns["start"]))
            end = parse_time(row.get(columns["end"]) if table.format == "jsonl" else _cell(row, columns["end"]))
        except ValueError as e:
            problem = f"{where}: {e}"
        try:
            labels = table_labels(row, columns, where)
        except ValueError as e:
            problem = problem or str(e)
        dialogue = _cell(row, columns["dialogue"])
        split = _cell(row, columns["split"])
        utterances.append(
            Utterance(
                video,
                start,
                end,
                where,
                id=_cell(row, columns["id"]),
                speaker=_cell(row, columns["speaker"]),
                text=_cell(row, columns["text"]),
                dialogue=key_for(f"{video.key}__{dialogue}") if dialogue else None,  # dialogue ids restart per video
                group=_cell(row, columns["group"]),
                labels=labels,
                split=SPLIT_ALIASES.get(split.lower(), split.lower()) if split else None,
                line=line,
                problem=problem,
            )
        )
    return utterances, unmatched, table


def segments_from_table(
    path: str | Path,
    videos: Sequence[VideoInput],
    options: SegmentOptions = DEFAULT_OPTIONS,
    mapping: Mapping[str, str] | None = None,
    duration_of: Callable[[VideoInput], float | None] | None = None,
) -> Segmentation:
    """Cut the videos where a segment table says (CSV, TSV or JSONL: video, start, end; optional id,
    speaker, text, dialogue, group, split, emotion, sentiment, labels). Input videos the table never
    names are one failure row each; rows naming no input video are listed in `unmatched`."""
    utterances, unmatched, table = table_utterances(path, videos, mapping, options.group_column)
    result = assemble(utterances, "table", options, duration_of)
    named = {u.video.key for u in utterances}
    for video in sorted(videos, key=lambda v: v.key):
        if video.key not in named:
            result.failures.append(_failure(video.key, video.source_path, f"segment table {display_path(table.path.name)} names no utterance in this video"))
    result.unmatched += unmatched
    result.files.append({"path": str(table.path), "rows": len(table.rows), "sha256": sha256_file(str(table.path))})
    return result.sort()


# ---------------------------------------------------------------- speech


def has_audio(path: str) -> bool:
    data = _ffprobe(path, ["-show_streams", "-select_streams", "a"]) or {}
    return bool(data.get("streams"))


def speech_regions(path: str, options: SegmentOptions) -> list[tuple[float, float]]:
    """Speech in the file's first audio track as (start_s, end_s), by faster-whisper's Silero VAD on
    16 kHz mono decoded with ffmpeg, block by block (bounded memory for any length). Silences of at
    least `speech_pause_s` end a region; regions longer than `max_s` are cut at a pause (or hard)."""
    import numpy as np
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    vad = VadOptions(
        threshold=options.speech_threshold,
        min_speech_duration_ms=0,  # short speech is dropped (and noted) by the caller
        max_speech_duration_s=options.max_s,
        min_silence_duration_ms=int(options.speech_pause_s * 1000),
        speech_pad_ms=int(options.speech_pad_s * 1000),
    )
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-i", f"file:{path}", "-map", "0:a:0", "-ac", "1", "-ar", str(SAMPLE_RATE), "-f", "s16le", "-"]
    block_bytes = int(VAD_BLOCK_S * SAMPLE_RATE) * 2
    regions: list[tuple[float, float]] = []
    offset = 0.0
    slack = options.speech_pad_s + 0.05
    with subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        while True:
            data = proc.stdout.read(block_bytes)
            if not data:
                break
            audio = np.frombuffer(data[: len(data) // 2 * 2], dtype="<i2").astype(np.float32) / 32768.0
            for n, ts in enumerate(get_speech_timestamps(audio, vad, sampling_rate=SAMPLE_RATE)):
                start, end = offset + ts["start"] / SAMPLE_RATE, offset + ts["end"] / SAMPLE_RATE
                # speech running across a block boundary: the last region of the block before reaches its end, this one starts the block
                across = n == 0 and regions and regions[-1][1] >= offset - slack and start <= offset + slack
                if across and end - regions[-1][0] <= options.max_s:
                    regions[-1] = (regions[-1][0], end)
                else:
                    regions.append((start, end))
            offset += len(audio) / SAMPLE_RATE
        error = proc.stderr.read().decode(errors="replace")
        proc.wait()
    fault = exit_fault(proc.returncode)
    if fault:
        raise ProcessFault(f"ffmpeg was {fault} while decoding the audio for speech segmentation")
    if proc.returncode != 0:
        raise ClipError(f"cannot decode the audio for speech segmentation ({one_line(error) or f'ffmpeg exit {proc.returncode}'})")
    return [(round(s, 3), round(e, 3)) for s, e in regions]


def segments_from_speech(
    videos: Sequence[VideoInput],
    options: SegmentOptions,
    duration_of: Callable[[VideoInput], float | None] | None = None,
    regions_of: Callable[[str, SegmentOptions], list[tuple[float, float]]] = speech_regions,
) -> Segmentation:
    """Every video cut at the pauses of its speech; regions shorter than `min_s` are dropped (noted).
    A video without audio or without speech is one failure row."""
    utterances: list[Utterance] = []
    result = Segmentation()
    for video in sorted(videos, key=lambda v: v.key):
        if not has_audio(video.path):
            result.failures.append(_failure(video.key, video.source_path, "no audio stream: speech segmentation needs one"))
            continue
        try:
            regions = retry_faults(lambda video=video: regions_of(video.path, options), video.source_path, STAGE)
        except ClipError as e:
            result.failures.append(_failure(video.key, video.source_path, str(e)))
            continue
        kept = [(s, e) for s, e in regions if e - s >= options.min_s]
        result.notes += [
            f"{video.source_path}: speech {clock(s)} to {clock(e)} is shorter than segment.min_s {options.min_s:g} s: dropped"
            for s, e in regions
            if e - s < options.min_s
        ]
        if not kept:
            result.failures.append(_failure(video.key, video.source_path, f"no speech of at least {options.min_s:g} s found"))
            continue
        utterances += [Utterance(video, s, e, f"{video.source_path} speech {n}") for n, (s, e) in enumerate(kept, 1)]
    result.extend(assemble(utterances, "speech", options, duration_of))
    return result.sort()


# ---------------------------------------------------------------- one entry point


def segment_videos(
    videos: Sequence[VideoInput], options: SegmentOptions, duration_of: Callable[[VideoInput], float | None] | None = None
) -> Segmentation | None:
    """The build's segmentation for `options.mode`; None for `none` (one file = one record)."""
    check_options(options)
    if options.mode == "none":
        return None
    if options.mode == "subtitles":
        return segments_from_subtitles(videos, options, duration_of)
    if options.mode == "table":
        assert options.table is not None
        return segments_from_table(options.table, videos, options, duration_of=duration_of)
    return segments_from_speech(videos, options, duration_of)


def sidecar_files(videos: Sequence[VideoInput]) -> set[str]:
    """Subtitle files beside input videos, as paths relative to the input folder (the form `match_videos`
    lists skipped files in): they are read with their video, not skipped."""
    out = set()
    for v in videos:
        folder = PurePosixPath(v.source_path).parent
        out |= {(folder / display_path(p.name)).as_posix() for p in subtitle_sidecars(v.path)}
    return out


__all__ = [
    "DEFAULT_OPTIONS",
    "MODES",
    "ContextLine",
    "Cue",
    "Segment",
    "SegmentOptions",
    "Segmentation",
    "SubtitleError",
    "Utterance",
    "VideoIndex",
    "assemble",
    "check_options",
    "clock",
    "corpus_labels",
    "id_key",
    "merge_cues",
    "parse_time",
    "probe_duration",
    "read_subtitle_file",
    "segment_key",
    "segment_videos",
    "segments_from_speech",
    "segments_from_subtitles",
    "segments_from_table",
    "sidecar_files",
    "speech_regions",
    "subtitle_sidecars",
    "subtitle_streams",
    "table_utterances",
]
