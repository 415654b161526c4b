"""MER2023 / MER2024 / MER2025: short clips `sample_XXXXXXXX.*` and label tables `name,discrete,valence`.

The explanation side of these corpora (EMER-V1, EMER-Fine / OV-MERD, open-set labels) is read by the
annotation tables (`--annotations`) already; this adapter adds their labels and splits: each label table
under ROOT whose header has `name` and `discrete` (valence optional, -5 to 5 in MER2023) gives
labels.emotion and labels.sentiment_score. The split is the table's `split` column when it has one,
else the clip's top folder when it names a split (`train`, `test1`, `test2`, `test3`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import PurePosixPath
from typing import Any

from emer_builder.core.errors import UserError
from emer_builder.core.tables import read_table
from emer_builder.transforms.corpora.base import CorpusAdapter
from emer_builder.transforms.corpora.common import by_stem, find_tables, number, split_name, text
from emer_builder.transforms.keys import display_path, key_for
from emer_builder.transforms.segment import Utterance, corpus_labels

NAME = "mer"
FILES: tuple[str, ...] = ("*label*.csv", "*label*.tsv", "*label*.jsonl")
COLUMNS: tuple[str, ...] = ("name", "discrete")
SPLIT_FOLDER = re.compile(r"train|val(?:id|idation)?|dev|test\d*")


def key(row: dict[str, Any]) -> str:
    """The clip name as MER writes it (`sample_00000648`): the name annotation tables and `emer evaluate` use."""
    return key_for(str(row["name"]))


def labels(row: dict[str, Any], split: str | None) -> dict[str, Any]:
    return {
        "corpus": NAME,
        "sample_id": text(row.get("name")),
        "official_split": split,
        "emotion": text(row.get("discrete")),
        "sentiment_score": number(row.get("valence")),
        "score_min": -5.0 if number(row.get("valence")) is not None else None,
        "score_max": 5.0 if number(row.get("valence")) is not None else None,
    }


def folder_split(source_path: str) -> str | None:
    """The clip's top folder when it names a split (MER2023: train, test1, test2, test3)."""
    parts = PurePosixPath(source_path).parts
    if len(parts) > 1 and SPLIT_FOLDER.fullmatch(parts[0].lower()):
        return parts[0].lower()
    return None


class Mer(CorpusAdapter):
    """MER2023 / MER2024 / MER2025: label tables `name,discrete[,valence][,split]` and clips named after their rows."""

    name = NAME
    description = "MER2023/2024/2025: short clips with a discrete emotion and valence (explanations come through --annotations)"
    files = FILES
    columns = COLUMNS
    clips = "{name}.* anywhere under ROOT (one file per name)"
    key_rule = "the clip name (sample_00000648)"
    label_mapping = "labels.emotion = discrete, labels.sentiment_score = valence on [-5, 5]"
    split_rule = "the table's split column, else the clip's top folder when it names a split (train, test1, test2, test3)"

    def utterances(self) -> Iterator[Utterance]:
        """Every labelled clip (decoded whole); a label row without its clip is listed as unmatched."""
        root = self.root
        paths = sorted({p for pattern in FILES for p in find_tables(root, pattern)})
        tables = []
        for path in paths:
            table = read_table(path, what="MER label table")
            if table.has(*COLUMNS):
                tables.append(table)
        if not tables:
            raise UserError(f"corpus mer: no label table with columns name and discrete ({', '.join(FILES)}) under {root}")
        for table in tables:
            self.read_table(table.path, len(table.rows))
        stems = by_stem(self.videos)
        seen: dict[str, dict[str, Any]] = {}
        for table in tables:
            name_col, discrete_col = table.column("name"), table.column("discrete")
            valence_col, split_col = table.column("valence"), table.column("split")
            file_name = display_path(table.path.name)
            for line, raw in table.numbered():
                where = f"{file_name} line {line}"
                row = {"name": text(raw.get(name_col)), "discrete": raw.get(discrete_col), "valence": raw.get(valence_col) if valence_col else None}
                if not row["name"]:
                    self.unmatch(f"{where}: no name")
                    continue
                if row["name"] in seen:
                    if seen[row["name"]] != row:
                        raise UserError(f"{where}: {row['name']} is labelled again, differently")
                    continue
                seen[row["name"]] = row
                found = stems.get(row["name"], [])
                if len(found) != 1:
                    self.unmatch(f"{where}: {'no clip' if not found else f'{len(found)} clips'} named {row['name']}.* under the corpus folder")
                    continue
                clip = found[0]
                self.use(clip)
                word = text(raw.get(split_col)) if split_col else folder_split(clip.source_path)
                yield Utterance(
                    clip,
                    None,
                    None,
                    where,
                    id=row["name"],
                    key=key(row),
                    labels=corpus_labels(**labels(row, word)),
                    split=split_name(word),
                    seek=False,
                    line=line,
                )
