"""What a ground-truth or prediction file holds, by sample name, read straight from the corpora's own tables.

Recognised, in this order:

- a built dataset folder (`OUT`, or `OUT:test` for one split): `explanation.open_vocab_labels.labels`,
  `explanation.discrete_label.label` and `explanation.valence.value` of each record, named by the
  last `__` part of its key;
- MELD's `{train,dev,test}_sent_emo.csv` (columns Dialogue_ID, Utterance_ID, Emotion, Sentiment):
  name `dia{Dialogue_ID}_utt{Utterance_ID}` (the name of MELD's clips), discrete label = Emotion,
  sentiment = Sentiment (positive +1, negative -1, neutral 0);
- the MMSA `label.csv` of CH-SIMS, CH-SIMS v2, CMU-MOSI and CMU-MOSEI (columns video_id, clip_id,
  label, mode): name `{video_id}_{clip_id}`, sentiment score = label; `label.csv:test` keeps the rows
  whose `mode` is test;
- any other CSV / TSV / JSON-lines table with a name column (name, names, key, video_id) and any of:
  open-set labels (openset, labels, open_vocab_labels, ov_labels; list strings or JSON lists),
  one discrete label (discrete, emotions, emotion, discrete_label, label), a sentiment
  (sentiment, valence, score: a number or positive / negative / neutral). `FILE:SPLIT` keeps the
  rows whose `split` (or `mode`) column says SPLIT.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emer_builder.core.errors import UserError
from emer_builder.core.labels import LabelMode, parse_label_groups, parse_labels
from emer_builder.core.tables import Table, read_table

NAME_COLUMNS = ("name", "names", "key", "video_id")
OPENSET_COLUMNS = ("openset", "labels", "open_vocab_labels", "ov_labels")
DISCRETE_COLUMNS = ("discrete", "emotions", "emotion", "discrete_label", "label")
SENTIMENT_COLUMNS = ("sentiment", "valence", "score")
SPLIT_COLUMNS = ("split", "mode")
GROUP_COLUMNS = ("groups", "synonyms", "mapping")
MELD_COLUMNS = ("dialogue_id", "utterance_id", "emotion", "sentiment")
MMSA_COLUMNS = ("video_id", "clip_id", "label")
SENTIMENT_WORDS = {"positive": 1.0, "negative": -1.0, "neutral": 0.0}


class MissingColumn(UserError):
    """The file has no column for the kind of label asked for."""


@dataclass
class Side:
    """What one file holds, by sample name; a kind the file does not have is None.

    `openset`: open-vocabulary label lists; `discrete`: one emotion word; `sentiment`: a number
    (valence, an MMSA label, or positive / negative / neutral as +1 / -1 / 0).
    """

    spec: str
    source: str  # dataset | meld | mmsa | table
    openset: dict[str, list[str]] | None = None
    discrete: dict[str, str] | None = None
    sentiment: dict[str, float] | None = None
    sentiment_column: str | None = None
    unrecognised_sentiment: list[str] = field(default_factory=list)  # names whose sentiment cell was no number or sentiment word

    def kinds(self) -> list[str]:
        """The kinds of label present, in words, for messages."""
        named = (("open-set labels", self.openset), ("discrete labels", self.discrete), ("sentiment", self.sentiment))
        return [word for word, values in named if values is not None]

    def names(self) -> set[str]:
        """Every sample name the file gives any label for."""
        return set().union(*(v or {} for v in (self.openset, self.discrete, self.sentiment)))


def sentiment_value(value: Any) -> float | None:
    """A sentiment cell as a number: finite numbers as they are, positive / negative / neutral as +1 / -1 / 0
    (case, spaces, quotes and a final full stop ignored); None for anything else."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else None
    text = str(value).strip().strip("\"'`").strip().rstrip(".").strip().lower()
    if text in SENTIMENT_WORDS:
        return SENTIMENT_WORDS[text]
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def parse_spec(spec: str, split: str | None = None) -> tuple[Path, str | None]:
    """`OUT:test` or `label.csv:test` -> (path, "test"); anything else is a path (and `split` as given)."""
    path = Path(spec)
    if not path.exists() and ":" in spec:
        head, tail = spec.rsplit(":", 1)
        if tail and Path(head).exists():
            if split is not None and split != tail:
                raise UserError(f"{spec}: split {tail!r} conflicts with split={split!r}")
            return Path(head), tail
    if not path.exists():
        raise UserError(f"{spec}: no such file or folder")
    return path, split


def _add(out: dict[str, Any], name: str, value: Any, spec: str) -> None:
    if name in out:
        raise UserError(f"{spec}: sample {name!r} appears more than once")
    out[name] = value


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def read_side(spec: str, split: str | None = None, label_mode: LabelMode = "lenient", gold: bool = True) -> Side:
    """Everything a ground-truth (`gold`) or prediction file holds. A gold sentiment cell that is no number
    or sentiment word is an error; in predictions it scores 0 (neutral), as the authors score such answers."""
    path, split = parse_spec(spec, split)
    if path.is_dir():
        return _read_dataset(spec, path, split)
    table = read_table(path, what="")
    if table.has(*MELD_COLUMNS):
        if split is not None:
            raise UserError(f"{spec}: MELD tables have no split column; give the split's own file (train/dev/test_sent_emo.csv)")
        return _read_meld(spec, table)
    if table.has(*MMSA_COLUMNS):
        return _read_mmsa(spec, table, split, gold)
    return _read_generic(spec, table, split, label_mode, gold)


def _keep(table: Table, spec: str, split: str | None) -> list[tuple[int, dict[str, Any]]]:
    """The rows of one split (`split`/`mode` column), or all rows."""
    rows = list(table.numbered())
    if split is None:
        return rows
    column = table.column(*SPLIT_COLUMNS)
    if column is None:
        raise UserError(f"{spec}: no split or mode column to pick split {split!r} from")
    kept = [(n, r) for n, r in rows if _text(r.get(column)) == split]
    if not kept:
        found = sorted({_text(r.get(column)) for _, r in rows})
        raise UserError(f"{spec}: no rows with {column} {split!r} (found: {', '.join(found)})")
    return kept


def _sentiment(side: Side, name: str, cell: Any, column: str, line: int, gold: bool) -> None:
    """Stores one sentiment cell; an empty cell is no value."""
    if _text(cell) == "":
        return
    value = sentiment_value(cell)
    if value is None:
        if gold:
            raise UserError(f"{side.spec}: line {line}: {column} {cell!r} is neither a number nor positive, negative or neutral")
        side.unrecognised_sentiment.append(name)
        value = 0.0
    assert side.sentiment is not None
    _add(side.sentiment, name, value, side.spec)


def _read_meld(spec: str, table: Table) -> Side:
    dia, utt, emotion, sentiment = (table.column(c) for c in MELD_COLUMNS)
    assert dia and utt and emotion and sentiment
    side = Side(spec, "meld", discrete={}, sentiment={}, sentiment_column=sentiment)
    for line, row in table.numbered():
        name = f"dia{_text(row.get(dia))}_utt{_text(row.get(utt))}"
        label = _text(row.get(emotion))
        if label:
            _add(side.discrete, name, label, spec)  # type: ignore[arg-type]
        _sentiment(side, name, row.get(sentiment), sentiment, line, gold=True)
    return side


def _read_mmsa(spec: str, table: Table, split: str | None, gold: bool) -> Side:
    video, clip, label = (table.column(c) for c in MMSA_COLUMNS)
    assert video and clip and label
    side = Side(spec, "mmsa", sentiment={}, sentiment_column=label)
    for line, row in _keep(table, spec, split):
        _sentiment(side, f"{_text(row.get(video))}_{_text(row.get(clip))}", row.get(label), label, line, gold)
    return side


def _numeric_column(rows: list[tuple[int, dict[str, Any]]], column: str) -> bool:
    cells = [r.get(column) for _, r in rows if _text(r.get(column))]
    return bool(cells) and all(sentiment_value(c) is not None and _text(c).lower() not in SENTIMENT_WORDS for c in cells)


def _read_generic(spec: str, table: Table, split: str | None, label_mode: LabelMode, gold: bool) -> Side:
    name_col = table.column(*NAME_COLUMNS)
    if name_col is None:
        raise UserError(f"{spec}: no name column (looked for {', '.join(NAME_COLUMNS)}; found {', '.join(table.columns) or 'none'})")
    rows = _keep(table, spec, split)
    openset_col = table.column(*OPENSET_COLUMNS)
    discrete_col = table.column(*DISCRETE_COLUMNS)
    sentiment_col = table.column(*SENTIMENT_COLUMNS)
    if discrete_col is not None and discrete_col.lower() == "label" and sentiment_col is None and _numeric_column(rows, discrete_col):
        discrete_col, sentiment_col = None, discrete_col  # a `label` column of numbers is a score, not an emotion word
    side = Side(
        spec,
        "table",
        openset={} if openset_col else None,
        discrete={} if discrete_col else None,
        sentiment={} if sentiment_col else None,
        sentiment_column=sentiment_col,
    )
    for line, row in rows:
        raw = _text(row.get(name_col))
        if not raw:
            continue
        name = raw.split("__")[-1] if name_col.lower() == "key" else raw  # a dataset key's last part is the clip name
        if openset_col:
            _add(side.openset, name, parse_labels(row.get(openset_col), label_mode), spec)  # type: ignore[arg-type]
        if discrete_col and _text(row.get(discrete_col)):
            _add(side.discrete, name, _text(row.get(discrete_col)), spec)  # type: ignore[arg-type]
        if sentiment_col:
            _sentiment(side, name, row.get(sentiment_col), sentiment_col, line, gold)
    return side


def _read_dataset(spec: str, root: Path, split: str | None) -> Side:
    """A built dataset: the labels its records carry."""
    import pyarrow.parquet as pq

    if not (root / "manifest.json").is_file():
        raise UserError(f"{root}: a folder without manifest.json is not a built dataset")
    files = sorted((root / "data").glob("*.parquet"))
    if not files:
        raise UserError(f"{root}: no data/*.parquet files")
    openset: dict[str, list[str]] = {}
    discrete: dict[str, str] = {}
    sentiment: dict[str, float] = {}
    splits: set[str] = set()
    any_labels = False
    for path in files:
        try:
            table = pq.read_table(path, columns=["key", "split", "explanation"])
        except Exception as e:  # pyarrow raises several types for a damaged or foreign file
            raise UserError(f"{path}: cannot read key, split and explanation ({' '.join(str(e).split())[:200]})") from None
        for row in table.to_pylist():
            splits.add(row["split"])
            if split is not None and row["split"] != split:
                continue
            name = row["key"].split("__")[-1]
            explanation = row["explanation"] or {}
            labels = (explanation.get("open_vocab_labels") or {}).get("labels")
            any_labels = any_labels or bool(labels)
            _add(openset, name, parse_labels(labels, "lenient"), spec)
            label = _text((explanation.get("discrete_label") or {}).get("label"))
            if label:
                discrete[name] = label
            value = (explanation.get("valence") or {}).get("value")
            if isinstance(value, (int, float)) and math.isfinite(value):
                sentiment[name] = float(value)
    if split is not None and split not in splits:
        raise UserError(f"{root}: no records in split {split!r} (splits: {', '.join(sorted(splits))})")
    return Side(spec, "dataset", openset if any_labels else None, discrete or None, sentiment or None, "explanation.valence")


def read_labels(spec: str, split: str | None = None, label_mode: LabelMode = "lenient") -> dict[str, list[str]]:
    """name -> open-vocabulary labels of a file or built dataset; MissingColumn when it has none."""
    side = read_side(spec, split, label_mode)
    if side.openset is None:
        where = "no record has explanation.open_vocab_labels.labels" if side.source == "dataset" else "no open-vocabulary label column"
        raise MissingColumn(f"{spec}: {where} (looked for {', '.join(OPENSET_COLUMNS)})")
    return side.openset


def read_discrete(spec: str, split: str | None = None) -> dict[str, str]:
    """name -> one discrete label of a file or built dataset (blanks left out); MissingColumn when it has none."""
    side = read_side(spec, split)
    if side.discrete is None:
        where = "no record has explanation.discrete_label.label" if side.source == "dataset" else "no discrete label column"
        raise MissingColumn(f"{spec}: {where} (looked for {', '.join(DISCRETE_COLUMNS)})")
    return side.discrete


def read_sentiment(spec: str, split: str | None = None, gold: bool = True) -> dict[str, float]:
    """name -> sentiment score of a file or built dataset; MissingColumn when it has none."""
    side = read_side(spec, split, gold=gold)
    if side.sentiment is None:
        raise MissingColumn(f"{spec}: no sentiment (looked for {', '.join(SENTIMENT_COLUMNS)}, MELD's Sentiment, MMSA's label, explanation.valence)")
    return side.sentiment


def read_synonyms(path_str: str, label_mode: LabelMode = "lenient") -> tuple[dict[str, dict[str, str]] | None, dict[str, str] | None]:
    """Synonym groups: (per-sample label -> representative, or None) and (one label -> representative map for all samples, or None).

    Per sample (the authors' form, GPT groups made per sample): columns name + groups, groups as
    "[['happy', 'joyful'], ['sad']]" or a JSON list of lists. For all samples: columns label + group (a group id).
    Each label stands for its group: the group's first member (authors' rule) or the group id.
    """
    table = read_table(path_str, what="--synonyms")
    group_col = table.column(*GROUP_COLUMNS)
    if group_col is not None:
        name_col = table.column(*NAME_COLUMNS)
        if name_col is None:
            raise UserError(f"--synonyms {path_str}: no name column (looked for {', '.join(NAME_COLUMNS)})")
        per_sample: dict[str, dict[str, str]] = {}
        for row in table.rows:
            raw = _text(row.get(name_col))
            if not raw:
                continue
            mapping: dict[str, str] = {}
            for group in parse_label_groups(row.get(group_col), label_mode):
                members = [m.lower().strip() for m in group if m.strip()]
                for member in members:
                    mapping[member] = members[0]  # a later group wins, as in the authors' loop
            _add(per_sample, raw.split("__")[-1] if name_col.lower() == "key" else raw, mapping, path_str)
        return per_sample, None
    label_col, id_col = table.column("label", "word"), table.column("group", "group_id", "cluster")
    if label_col is None or id_col is None:
        raise MissingColumn(f"--synonyms {path_str}: needs columns name,groups (per sample) or label,group (found {', '.join(table.columns)})")
    shared: dict[str, str] = {}
    for row in table.rows:
        label, group = _text(row.get(label_col)), _text(row.get(id_col))
        if label and group:
            shared[label.lower()] = f"<group {group}>"
    return None, shared
