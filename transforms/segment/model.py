"""What segmenters produce and how it becomes records: `Utterance` (a cue, row or speech region, not
yet checked) -> `assemble` -> `Segment`s plus one failure row per utterance or video that cannot be one."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from emer_builder.core.config import SegmentConfig as SegmentOptions
from emer_builder.core.errors import ClipError, UserError
from emer_builder.core.failures import failure_row
from emer_builder.transforms.keys import VideoInput, key_for
from emer_builder.transforms.probe import probe_duration
from emer_builder.transforms.segment.times import clock, id_key, segment_key

STAGE = "segment"  # the stage failure rows name
DEFAULT_OPTIONS = SegmentOptions()


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


def segment_failure(key: str, source_path: str, message: str) -> dict[str, str]:
    """The failure row of an utterance or video that cannot be cut (stage `segment`)."""
    return failure_row(key, source_path, STAGE, ClipError(message))


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


def _with_window_problem(u: Utterance) -> Utterance:
    """The utterance, with a problem where its times are no window of a video: not finite (NaN from a
    corpus file) or negative (a subtitle cue before 0; ffmpeg would read the window from 0)."""
    if u.problem is not None or not u.seek or u.start_s is None or u.end_s is None:
        return u
    if not (math.isfinite(u.start_s) and math.isfinite(u.end_s)):
        return replace(u, problem=f"{u.where}: segment {u.start_s!r} to {u.end_s!r} is not a finite time")
    if u.start_s < 0:
        return replace(u, problem=f"{u.where}: segment starts at {u.start_s:g} s, before the video")
    return u


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

    # keys: a key rule's keys and ids must be unique; repeated time windows in one video are numbered in input order,
    # past any key an id already gives (an id may be a derived key, from a table an earlier build wrote)
    items = [_with_window_problem(u) for u in items]
    keys: dict[int, str] = {}
    by_key: dict[str, Utterance] = {}
    for u in items:
        if u.record and (u.key is not None or u.id is not None):
            key = _key_of(u)
            if key in by_key:
                first = by_key[key]
                raise UserError(f"{u.where}: id {u.key or u.id!r} gives key {key!r}, as {first.where} does (id {first.key or first.id!r}); ids must be unique")
            by_key[key] = u
    seen: defaultdict[str, int] = defaultdict(int)
    timed: list[tuple[int, Utterance]] = []
    for number, u in enumerate(items, 1):
        if not u.record:
            timed.append((number, u))  # counts in its dialogue's index and context, nothing more
            continue
        cut = u.problem is None and (not u.seek or (u.start_s is not None and u.end_s is not None))
        if u.key is not None or u.id is not None:
            key = _key_of(u)
        else:
            base = _key_of(u) if cut else _line_key(u, number)
            n = seen[base]
            while True:  # base, base_2, base_3, ...: the first that no id gives
                n += 1
                key = base if n == 1 else key_for(f"{base}_{n}")
                if key not in by_key:
                    break
            seen[base] = n
        keys[number] = key
        if cut:
            timed.append((number, u))
        else:
            result.failures.append(segment_failure(key, u.video.source_path, u.problem or f"{u.where}: no start or end time"))

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
                result.failures.append(segment_failure(key, u.video.source_path, problem))
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


