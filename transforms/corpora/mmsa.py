"""The MMSA layout shared by CH-SIMS, CH-SIMS v2, CMU-MOSI and CMU-MOSEI as commonly distributed.

`label.csv`: video_id, clip_id, text, label (overall sentiment), label_T / label_A / label_V
(unimodal sentiment, CH-SIMS only), annotation (Positive / Negative / Neutral), mode (train /
valid / test). Clips: `Raw/{video_id}/{clip_id}.mp4`; CH-SIMS writes clip_id 1 in the table and
names the file `0001.mp4`. Sentiment lies in [-1, 1] for CH-SIMS and CH-SIMS v2, [-3, 3] for CMU-MOSI
and CMU-MOSEI. The clips of one video are one speaker's monologue: the video is the dialogue
(neighbouring clips are the context) and the split group.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar

from emer_builder.core.errors import UserError
from emer_builder.core.tables import read_table
from emer_builder.transforms.corpora.base import CorpusAdapter
from emer_builder.transforms.corpora.cmu_sdk import CmuMoseiSdk, CmuMosiSdk
from emer_builder.transforms.corpora.common import find_tables, number, one_table, split_name, text
from emer_builder.transforms.keys import VideoInput, display_path, key_for
from emer_builder.transforms.segment import Utterance, corpus_labels

FILES: tuple[str, ...] = ("label.csv",)
COLUMNS: tuple[str, ...] = ("video_id", "clip_id", "label")  # text, label_T, label_A, label_V, annotation, mode when present


def sample_id(row: dict[str, Any]) -> str:
    """`{video_id}_{clip_id}`: the name `emer evaluate` gives MMSA rows, and the CMU segment id."""
    return f"{text(row.get('video_id'))}_{text(row.get('clip_id'))}"


def key(row: dict[str, Any]) -> str:
    return key_for(sample_id(row))


def labels(name: str, scale: tuple[float, float] | None, row: dict[str, Any]) -> dict[str, Any]:
    """label -> sentiment_score, label_T/A/V -> text/audio/visual_score, annotation -> sentiment, on the corpus' scale."""
    annotation = text(row.get("annotation"))
    return {
        "corpus": name,
        "sample_id": sample_id(row),
        "official_split": text(row.get("mode")),
        "sentiment": annotation.lower() if annotation else None,
        "sentiment_score": number(row.get("label")),
        "score_min": scale[0] if scale else None,
        "score_max": scale[1] if scale else None,
        "text_score": number(row.get("label_T")),
        "audio_score": number(row.get("label_A")),
        "visual_score": number(row.get("label_V")),
    }


def split(row: dict[str, Any]) -> str | None:
    """`mode`: train -> train, valid -> validation, test -> test."""
    return split_name(text(row.get("mode")))


def _clip_names(clip_id: str) -> tuple[str, ...]:
    """File stems a clip may have: as written, and zero-padded to 4 digits (CH-SIMS)."""
    return (clip_id, clip_id.zfill(4)) if clip_id.isdigit() else (clip_id,)


def _order(clip_id: str) -> tuple[Any, ...]:
    return (0, int(clip_id), "") if clip_id.isdigit() else (1, 0, clip_id)


class MmsaLayout(CorpusAdapter):
    """The MMSA `label.csv` layout; each corpus in it is a subclass naming itself and its score scale."""

    scale: ClassVar[tuple[float, float] | None] = None  # the corpus' sentiment scale; None: kept as written, scale unknown
    sdk_layout: ClassVar[type[CorpusAdapter] | None] = None  # read a ROOT without label.csv with this adapter instead

    @classmethod
    def for_root(cls, root: Path) -> type[CorpusAdapter]:
        return cls if cls.sdk_layout is None or find_tables(root, "label.csv") else cls.sdk_layout
    files = FILES
    columns = COLUMNS
    clips = "Raw/{video_id}/{clip_id}.mp4 (any video extension; clip ids also zero-padded to 4 digits, as CH-SIMS names them)"
    key_rule = "{video_id}_{clip_id} (the MMSA / CMU segment id)"
    split_rule = "mode: train -> train, valid -> validation, test -> test (the split table); a video's clips keep together"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """The label mapping says the subclass' scale (declared once, in `scale`)."""
        scale = cls.scale
        cls.label_mapping = (
            f"labels.sentiment_score = label{f' on [{scale[0]:g}, {scale[1]:g}]' if scale else ''}, labels.text_score / audio_score / visual_score = "
            "label_T / label_A / label_V, labels.sentiment = annotation (lowercased), segment.text = text"
        )
        super().__init_subclass__(**kwargs)

    def utterances(self) -> Iterator[Utterance]:
        """Every row of ROOT's label.csv as one already-cut clip `{video_id}/{clip_id}.*`; a row without its clip is listed as unmatched."""
        name = self.name
        path = one_table(self.root, "label.csv", name)
        assert path is not None
        table = read_table(path, what=f"{name} label table")
        missing = [c for c in COLUMNS if table.column(c) is None]
        if missing:
            raise UserError(f"{name} label table {path}: no column {', '.join(missing)}; MMSA's label.csv has video_id, clip_id, text, label, annotation, mode")
        self.read_table(path, len(table.rows))
        clips: dict[tuple[str, str], VideoInput] = {}
        for v in self.videos:
            p = PurePosixPath(v.source_path)
            clips.setdefault((p.parent.name, p.stem), v)
        file_name = display_path(path.name)
        for line, raw in table.numbered():
            row = {c: raw.get(table.column(c.lower()) or c) for c in (*COLUMNS, "text", "label_T", "label_A", "label_V", "annotation", "mode")}
            where = f"{file_name} line {line}"
            video_id, clip_id = text(row.get("video_id")), text(row.get("clip_id"))
            if not video_id or not clip_id:
                self.unmatch(f"{where}: no video_id or clip_id")
                continue
            if re.fullmatch(r"\d+\.0", clip_id):  # a spreadsheet wrote the id as a float
                clip_id = clip_id[:-2]
            row["clip_id"] = clip_id
            clip = next((clips[(video_id, n)] for n in _clip_names(clip_id) if (video_id, n) in clips), None)
            if clip is None:
                self.unmatch(f"{where}: no clip {video_id}/{clip_id}.* under the corpus folder")
                continue
            self.use(clip)
            yield Utterance(
                clip,
                None,
                None,
                where,
                id=sample_id(row),
                key=key(row),
                text=text(row.get("text")),
                dialogue=video_id,
                group=video_id,
                order=_order(clip_id),
                labels=corpus_labels(**labels(name, self.scale, row)),
                split=split(row),
                seek=False,
                source_key=video_id,
                line=line,
            )


class ChSims(MmsaLayout):
    name = "ch-sims"
    description = "CH-SIMS: Chinese film and TV clips with multimodal and unimodal sentiment in [-1, 1] (MMSA layout)"
    scale = (-1.0, 1.0)


class ChSimsV2(MmsaLayout):
    name = "ch-sims-v2"
    description = "CH-SIMS v2: as CH-SIMS, more clips (MMSA layout)"
    scale = (-1.0, 1.0)


class MmsaCorpus(MmsaLayout):
    name = "mmsa"
    description = "any corpus in the MMSA label.csv layout; scores kept as written, scale unknown"
    scale = None


class CmuMosi(MmsaLayout):
    """CMU-MOSI as MMSA distributes it; a ROOT without label.csv is read in the CMU SDK layout instead."""

    name = "cmu-mosi"
    description = "CMU-MOSI: YouTube movie-review opinion segments, sentiment in [-3, 3] (MMSA layout)"
    scale = (-3.0, 3.0)
    sdk_layout = CmuMosiSdk


class CmuMosei(MmsaLayout):
    """CMU-MOSEI as MMSA distributes it; a ROOT without label.csv is read in the CMU SDK layout instead."""

    name = "cmu-mosei"
    description = "CMU-MOSEI: YouTube monologue segments, sentiment in [-3, 3] (MMSA layout)"
    scale = (-3.0, 3.0)
    sdk_layout = CmuMoseiSdk
