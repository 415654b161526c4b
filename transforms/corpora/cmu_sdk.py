"""CMU-MOSI and CMU-MOSEI in the CMU Multimodal SDK layout: full YouTube videos plus computational sequences.

A computational sequence (`.csd`) is an HDF5 file: `{root}/data/{video_id}/intervals` (N x 2, seconds in
the full video) and `.../features` (N x k), `{root}/metadata/...`. The label sequence
(`CMU_MOSI_Opinion_Labels.csd`, `CMU_MOSEI_Labels.csd`) gives one row per opinion segment: MOSI one
sentiment in [-3, 3]; MOSEI sentiment then happy, sad, anger, surprise, disgust, fear (0 to 3).
Segment ids are `{video}_{n}`, n counting the video's labelled intervals in time order from 1
(the numbering of the corpora's segmented clips). An optional `*TimestampedWords*.csd` gives each
segment's text (the words inside its interval, `sp` pauses left out). The SDK keeps its standard folds
in code: put them beside the data as `folds.json` ({"train": [video ids], "valid": [...], "test": [...]})
or `folds.csv` (video_id, split) to use them as the split table.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from emer_builder.core.errors import UserError, one_line
from emer_builder.core.tables import read_table
from emer_builder.transforms.corpora.base import CorpusAdapter
from emer_builder.transforms.corpora.common import by_stem, find_tables, one_table, split_name
from emer_builder.transforms.keys import display_path, key_for
from emer_builder.transforms.segment import Utterance, corpus_labels

LABEL_FILES: tuple[str, ...] = ("*[Ll]abels*.csd",)
WORD_FILES: tuple[str, ...] = ("*[Tt]imestamped[Ww]ords*.csd",)
FOLD_FILES: tuple[str, ...] = ("folds.json", "folds.csv")
MOSEI_EMOTIONS: tuple[str, ...] = ("happy", "sad", "anger", "surprise", "disgust", "fear")


def read_csd(path: Path) -> dict[str, tuple[list[list[float]], list[Any]]]:
    """video id -> (intervals, features rows) of a computational sequence; UserError when it is not one."""
    try:
        import h5py
    except ImportError:
        raise UserError("reading CMU SDK .csd files needs h5py: pip install 'emer-builder[build]'") from None
    try:
        with h5py.File(path, "r") as f:
            roots = list(f.keys())
            if not roots or "data" not in f[roots[0]]:
                raise UserError(f"{path}: not a computational sequence (no <name>/data group)")
            data = f[roots[0]]["data"]
            out = {}
            for video in sorted(data.keys()):
                intervals = data[video]["intervals"][()].tolist()
                features = data[video]["features"][()].tolist()
                if len(intervals) != len(features):
                    raise UserError(f"{path}: {video} has {len(intervals)} intervals but {len(features)} feature rows")
                out[video] = (intervals, features)
            return out
    except OSError as e:
        raise UserError(f"{path}: cannot read it as HDF5 ({one_line(e)})") from None
    except KeyError as e:
        raise UserError(f"{path}: not a computational sequence ({one_line(e)})") from None


def _word(value: Any) -> str:
    while isinstance(value, list):
        value = value[0] if value else ""
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def segment_text(words: tuple[list[list[float]], list[Any]] | None, start: float, end: float) -> str | None:
    """The words whose interval lies inside [start, end], pauses (`sp`) left out."""
    if words is None:
        return None
    inside = [_word(w) for (s, e), w in zip(*words, strict=True) if s >= start - 1e-3 and e <= end + 1e-3]
    found = " ".join(w for w in inside if w and w.lower() != "sp")
    return found or None


def read_folds(path: Path) -> dict[str, str]:
    """video id -> split word as written, from folds.json ({split: [video ids]}) or folds.csv (video_id, split)."""
    out: dict[str, str] = {}
    if path.suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise UserError(f"{path}: not readable JSON ({one_line(e)})") from None
        if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
            raise UserError(f"{path}: must map split names to lists of video ids")
        pairs = [(str(video), split) for split, videos in data.items() for video in videos]
    else:
        table = read_table(path, what="folds table")
        video_col, split_col = table.column("video_id", "video"), table.column("split", "mode")
        if video_col is None or split_col is None:
            raise UserError(f"folds table {path} needs columns video_id and split")
        pairs = [(str(r.get(video_col)).strip(), str(r.get(split_col)).strip()) for r in table.rows]
    for video, split in pairs:
        if video in out and out[video] != split:
            raise UserError(f"{path}: video {video} is in two folds ({out[video]}, {split})")
        if split:
            out[video] = split
    return out


def labels(name: str, video: str, n: int, features: list[float], fold: str | None) -> dict[str, Any]:
    """First feature -> sentiment_score on [-3, 3]; MOSEI's next six -> emotion_scores."""
    row = [float(x) for x in (features if isinstance(features, list) else [features])]
    if not all(math.isfinite(x) for x in row):
        raise ValueError(f"a label value is not a finite number ({row})")
    values: dict[str, Any] = {"corpus": name, "sample_id": f"{video}_{n}", "official_split": fold, "score_min": -3.0, "score_max": 3.0}
    if row:
        values["sentiment_score"] = row[0]
    if len(row) >= 1 + len(MOSEI_EMOTIONS):
        values["emotion_scores"] = [{"emotion": e, "score": s} for e, s in zip(MOSEI_EMOTIONS, row[1:7], strict=True)]
    return values


class CmuSdkLayout(CorpusAdapter):
    """The CMU Multimodal SDK layout: a label sequence, full videos cut at its intervals, optional words and folds."""

    files = (*LABEL_FILES, *WORD_FILES, *FOLD_FILES)
    columns = ("intervals", "features")
    clips = "the full videos {video_id}.mp4 anywhere under ROOT, cut at the label sequence's intervals"
    key_rule = "{video_id}_{n}, n = the video's labelled intervals in time order from 1"
    label_mapping = "labels.sentiment_score = first feature on [-3, 3]; CMU-MOSEI's next six -> labels.emotion_scores; segment.text from the words sequence"
    split_rule = "folds.json / folds.csv beside the data (the SDK's standard folds); without one, the hash of segment.group (the video)"

    def utterances(self) -> Iterator[Utterance]:
        """Every labelled interval as an utterance cut from the full video `{video_id}.*` under ROOT."""
        root, name = self.root, self.name
        label_paths = [p for pattern in LABEL_FILES for p in find_tables(root, pattern)]
        if len(label_paths) != 1:
            found = ", ".join(str(p.relative_to(root)) for p in label_paths) or "none"
            raise UserError(f"corpus {name}: need exactly one label sequence ({', '.join(LABEL_FILES)}) under {root}, found {found}")
        label_path = label_paths[0]
        word_paths = [p for pattern in WORD_FILES for p in find_tables(root, pattern)]
        words = read_csd(word_paths[0]) if len(word_paths) == 1 else {}
        fold_path = next((p for f in FOLD_FILES if (p := one_table(root, f, name, required=False)) is not None), None)
        folds = read_folds(fold_path) if fold_path else {}
        sequences = read_csd(label_path)
        for path in [label_path, *word_paths[:1], *([fold_path] if fold_path else [])]:
            self.read_table(path)
        stems = by_stem(self.videos)
        file_name = display_path(label_path.name)
        for video_id, (intervals, features) in sequences.items():
            found = stems.get(video_id, [])
            if len(found) != 1:
                why = "no video" if not found else f"{len(found)} videos ({', '.join(v.source_path for v in found)})"
                self.unmatch(f"{file_name} {video_id}: {why} named {video_id}.* under the corpus folder ({len(intervals)} segments)")
                continue
            video = found[0]
            try:
                pairs = [(float(start), float(end)) for start, end in intervals]
                ordered = sorted(zip(pairs, features, strict=True), key=lambda item: item[0])
            except (TypeError, ValueError):  # not (start, end) pairs, or not one feature row per interval
                raise UserError(f"corpus {name}: {file_name} {video_id}: its intervals are not one (start, end) pair per feature row") from None
            if not ordered:  # no utterance: the video is left out and listed, not used
                self.unmatch(f"{file_name} {video_id}: no labelled interval")
                continue
            self.use(video)
            for n, ((start, end), feats) in enumerate(ordered, 1):
                sid = f"{video_id}_{n}"
                try:
                    values, problem = corpus_labels(**labels(name, video_id, n, feats, folds.get(video_id))), None
                except ValueError as e:
                    values, problem = None, f"{file_name} {sid}: {e}"
                yield Utterance(
                    video,
                    start,
                    end,
                    f"{file_name} {sid}",
                    id=sid,
                    key=key_for(sid),
                    text=segment_text(words.get(video_id), start, end) if math.isfinite(start) and math.isfinite(end) else None,
                    dialogue=video.key,
                    order=(n,),
                    labels=values,
                    split=split_name(folds.get(video_id)),
                    problem=problem,
                )


class CmuMosiSdk(CmuSdkLayout, register=False):
    """`cmu-mosi` when ROOT has no label.csv (selected by `mmsa.CmuMosi.for_root`)."""

    name = "cmu-mosi"
    description = "CMU-MOSI, CMU SDK layout: full YouTube videos with opinion segments and sentiment in [-3, 3]"


class CmuMoseiSdk(CmuSdkLayout, register=False):
    """`cmu-mosei` when ROOT has no label.csv (selected by `mmsa.CmuMosei.for_root`)."""

    name = "cmu-mosei"
    description = "CMU-MOSEI, CMU SDK layout: full YouTube videos with segments, sentiment and six emotion intensities"
