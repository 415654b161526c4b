"""Utterances from a segment table (CSV, TSV, JSON lines): video, start, end and optional columns."""

from __future__ import annotations

import math
import unicodedata
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from emer_builder.core.config import SegmentConfig as SegmentOptions
from emer_builder.core.errors import UserError
from emer_builder.core.hashing import sha256_file
from emer_builder.core.labels import parse_labels
from emer_builder.core.tables import Table, read_table
from emer_builder.transforms.keys import VideoInput, display_path
from emer_builder.transforms.segment.model import (
    DEFAULT_OPTIONS,
    Segmentation,
    Utterance,
    assemble,
    segment_failure,
)
from emer_builder.transforms.segment.times import id_key, parse_time

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
        """By the name as written, without one leading `./`, and in NFC (keys and file names are; a table
        written on macOS may be NFD). `../x`, `.x` or `..x` name no input."""
        name = unicodedata.normalize("NFC", name.strip().replace("\\", "/"))
        return self.by_name.get(name) or (self.by_name.get(name[2:]) if name.startswith("./") else None)


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
            number = float(sentiment)
        except ValueError:
            values["sentiment"] = sentiment.lower()
        else:
            if not math.isfinite(number):  # `nan` and `inf` parse as floats: no score
                raise ValueError(f"{where}: sentiment {sentiment!r} is not a finite number")
            values["sentiment_score"] = number
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
                dialogue=id_key(f"{video.key}__{dialogue}") if dialogue else None,  # dialogue ids restart per video; `scene.1` keeps its `.1`
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
    taken = {s.key: s for s in result.segments} | {f["key"]: f for f in result.failures}
    for video in sorted(videos, key=lambda v: v.key):
        if video.key not in named:
            if video.key in taken:  # an id that is another input's key: two inputs would share it
                raise UserError(f"segment table {display_path(table.path.name)}: an utterance's key {video.key!r} is the key of input {video.source_path}, which the table names no utterance in; rename the id")
            result.failures.append(segment_failure(video.key, video.source_path, f"segment table {display_path(table.path.name)} names no utterance in this video"))
    result.unmatched += unmatched
    result.files.append({"path": str(table.path), "rows": len(table.rows), "sha256": sha256_file(str(table.path))})
    return result.sort()


