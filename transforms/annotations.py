"""Human EMER annotation tables, and the `annotations` explainer that reads them.

Users bring the tables the EMER authors published (EMER-V1 `gt-eng.csv` / `gt-chi.csv`, EMER-Fine =
OV-MERD `final-EMER-reason.csv`, open-vocabulary labels `check-openset.csv`, MER2023 labels) or their
own table with a column mapping. Every table becomes values keyed by (clip name, explained field,
language), so several tables can be joined and a clash between two of them is reported instead of
one silently winning. The result is a plain dict, cheap to ship to the build's workers.

Recognised headers (CSV, TSV or JSON lines; column order and case do not matter):

- `names,emotions,subtitles,reasons` (EMER-V1): discrete_label, subtitle, multimodal_explanation;
  each column's language detected from its text.
- `name,chinese,english` whose Chinese cells are explanations (`在视频中…；在音频中…；在文本中…；`,
  EMER-Fine / OV-MERD): multimodal_explanation (zh, en) and the three clues split out of it.
- `name,chinese,english` otherwise: subtitles (zh, en).
- `name,openset`: open_vocab_labels, a Python- or JSON-style list of strings.
- `name,discrete,valence` (MER2023): discrete_label and valence.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emer_builder.core.errors import UserError
from emer_builder.core.hashing import sha256_file
from emer_builder.core.labels import parse_labels
from emer_builder.core.tables import Table, read_table, table_format
from emer_builder.transforms.explanation import EXPLAINED_FIELDS, ExplainInput, FieldValue, Unavailable

CLUE_FIELDS: tuple[str, ...] = ("visual_clue", "acoustic_clue", "lexical_clue")

# Recognised headers (lowercased column sets) -> format name. `name,chinese,english` is told apart by content.
RECOGNISED_HEADERS: dict[frozenset[str], str] = {
    frozenset({"names", "emotions", "subtitles", "reasons"}): "emer-v1",
    frozenset({"name", "chinese", "english"}): "name-chinese-english",
    frozenset({"name", "openset"}): "openset",
    frozenset({"name", "discrete", "valence"}): "mer2023",
}
RECOGNISED_HELP = (
    "names,emotions,subtitles,reasons (EMER-V1); name,chinese,english (EMER-Fine/OV-MERD explanations or subtitles); "
    "name,openset (open-vocabulary labels); name,discrete,valence (MER2023)"
)
WHAT = "annotation table"  # how messages name these files

# A value's key inside one clip: (field, language); valence has language None.
ValueKey = tuple[str, "str | None"]
TableValues = dict[str, dict[str, dict[Any, Any]]]  # name -> field -> language -> value

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LATIN = re.compile(r"[A-Za-z]")

# Chinese EMER-Fine text: `在视频中…；在音频中…；在文本中…；`, one segment per clue.
ZH_MARKERS: tuple[tuple[str, str], ...] = (("visual_clue", "在视频中"), ("acoustic_clue", "在音频中"), ("lexical_clue", "在文本中"))
ZH_SEPARATOR = "；"

# English EMER-Fine text is a machine translation: the markers start sentences, but some rows echo the
# prompt ("Input: … Output: …", the text twice) or miss a marker. Only sentence-initial markers count.
_SENTENCE_START = r"(?:^|(?<=[.!?;])|(?<=[.!?][\"”’']))\s*"
_EN_VISUAL_START = re.compile(r"^\s*(?:Input:\s*)?(?P<m>In the video\b)")
_EN_VISUAL = re.compile(_SENTENCE_START + r"(?P<m>[Ii]n the video\b)")
_EN_ACOUSTIC = re.compile(_SENTENCE_START + r"(?P<m>[Ii]n the audio\b)")
_EN_LEXICAL = re.compile(_SENTENCE_START + r"(?P<m>[Ii]n the text\b|[Ii]n the subtitles? of the text\b|The subtitles? in the text\b)")
_EN_TRAILING_OUTPUT = re.compile(r"\s*Output:\s*$")


def detect_language(texts: Iterable[str]) -> str:
    """"zh" when CJK characters make up at least 30% of the letters, else "en".

    A ratio, not "any CJK character": English EMER-Fine text quotes Chinese words now and then.
    """
    cjk = latin = 0
    for text in texts:
        cjk += len(_CJK.findall(text))
        latin += len(_LATIN.findall(text))
    return "zh" if cjk and cjk >= 0.3 * (cjk + latin) else "en"


def split_chinese_clues(text: str) -> dict[str, str] | None:
    """The visual, acoustic and lexical clues of an EMER-Fine Chinese explanation, or None.

    Segments are separated by `；`; a segment that starts with no marker continues the previous clue
    (the separator is kept), because in one row (sample_00000461) the visual clue itself holds a `；`.
    All three markers must appear once, in order, the first at the start: a missing marker would
    leave its text inside another clue.
    """
    parts: dict[str, list[str]] = {}
    current: str | None = None
    for segment in (s.strip() for s in text.split(ZH_SEPARATOR)):
        if not segment:
            continue
        marker = next((f for f, m in ZH_MARKERS if segment.startswith(m)), None)
        if marker is None:
            if current is None:
                return None
            parts[current].append(segment)
            continue
        if marker in parts or (current is not None and CLUE_FIELDS.index(marker) < CLUE_FIELDS.index(current)):
            return None
        current = marker
        parts[marker] = [segment]
    if list(parts) != list(CLUE_FIELDS):
        return None
    return {f: ZH_SEPARATOR.join(parts[f]) for f in CLUE_FIELDS}


def split_english_clues(text: str) -> dict[str, str] | None:
    """The three clues of an EMER-Fine English explanation, or None when its markers are not clean.

    Clean: the text opens with "In the video" (an echoed "Input: " prefix is dropped), and exactly one
    sentence-initial audio marker and one text marker ("In the text", "In the subtitles of the text",
    "The subtitle in the text") follow in that order, with no video marker after the audio one.
    Anything else (e.g. a row holding its translation twice) is left out rather than guessed.
    """
    start = _EN_VISUAL_START.match(text)
    acoustic = [m.start("m") for m in _EN_ACOUSTIC.finditer(text)]
    lexical = [m.start("m") for m in _EN_LEXICAL.finditer(text)]
    if start is None or len(acoustic) != 1 or len(lexical) != 1 or not acoustic[0] < lexical[0]:
        return None
    if any(m.start("m") > acoustic[0] for m in _EN_VISUAL.finditer(text)):
        return None
    clues = {
        "visual_clue": text[start.start("m") : acoustic[0]].strip().rstrip(";").rstrip(),
        "acoustic_clue": text[acoustic[0] : lexical[0]].strip().rstrip(";").rstrip(),
        "lexical_clue": _EN_TRAILING_OUTPUT.sub("", text[lexical[0] :]).strip(),
    }
    return clues if all(clues.values()) else None


def _cell_text(table: Table, number: int, column: str, cell: Any) -> str | None:
    """A cell as stripped text; None when empty."""
    if cell is None:
        return None
    if isinstance(cell, bool) or not isinstance(cell, (str, int, float)) or (isinstance(cell, float) and not math.isfinite(cell)):
        raise UserError(f"annotation table {table.path}: line {number} column {column!r} holds {cell!r}, not text")
    text = str(cell).strip()
    return text or None


def _field_value(table: Table, number: int, name: str, column: str, field_name: str, cell: Any) -> Any:
    """A cell parsed for its field: text, a label list, or a finite float; None when empty."""
    if field_name == "open_vocab_labels":
        if not isinstance(cell, list):
            cell = _cell_text(table, number, column, cell)
            if cell is None:
                return None
        try:
            return parse_labels(cell, "strict")  # an annotated empty list is a value: the annotator saw no clear emotion
        except ValueError as e:
            raise UserError(f"annotation table {table.path}: {name} column {column!r}: {e}") from None
    if field_name == "valence":
        if isinstance(cell, (int, float)) and not isinstance(cell, bool):
            value = float(cell)
        else:
            text = _cell_text(table, number, column, cell)
            if text is None:
                return None
            try:
                value = float(text)
            except ValueError:
                raise UserError(f"annotation table {table.path}: {name} column {column!r}: valence {text!r} is not a number") from None
        if not math.isfinite(value) or abs(value) > 3.4e38:  # stored as float32
            raise UserError(f"annotation table {table.path}: {name} column {column!r}: valence {value} is not a finite float32")
        return value
    return _cell_text(table, number, column, cell)


def _column_language(table: Table, column: str) -> str:
    """One language per column: a table's column is written in one language (cells may be text or, in JSON lines, label lists)."""

    def texts() -> Iterable[str]:
        for cells in table.rows:
            cell = cells.get(column)
            for text in cell if isinstance(cell, list) else [cell]:
                if isinstance(text, str):
                    yield text

    return detect_language(texts())


def _is_explanation_table(table: Table, chinese: str) -> bool:
    """Whether a `name,chinese,english` table holds EMER-Fine explanations (not subtitles): most Chinese cells carry the clue markers."""
    cells = [str(c[chinese]) for c in table.rows if str(c.get(chinese) or "").strip()]
    marked = sum(1 for c in cells if ZH_MARKERS[0][1] in c and ZH_MARKERS[1][1] in c)
    return bool(cells) and marked * 2 >= len(cells)


@dataclass
class _Parsed:
    fmt: str
    rows: dict[str, dict[ValueKey, Any]]  # name -> (field, language) -> value
    info: dict[str, Any] = field(default_factory=dict)


def _collect(table: Table, fmt: str, name_column: str, per_row: Callable[[int, str, dict[str, Any]], dict[ValueKey, Any]]) -> _Parsed:
    """Run `per_row(cells) -> {(field, lang): value}` over the rows; one name may repeat only with equal values."""
    out: dict[str, dict[ValueKey, Any]] = {}
    for number, cells in table.numbered():
        name = _cell_text(table, number, name_column, cells.get(name_column))
        if name is None:
            raise UserError(f"annotation table {table.path}: line {number} has no name in column {name_column!r}")
        values = {k: v for k, v in per_row(number, name, cells).items() if v is not None}
        if name in out and out[name] != values:
            raise UserError(f"annotation table {table.path}: name {name} appears twice with different values")
        out[name] = values
    return _Parsed(fmt, out)


def _lower_columns(table: Table) -> dict[str, str]:
    return {c.lower(): c for c in table.columns}


def _parse_recognised(table: Table, kind: str) -> _Parsed:
    col = _lower_columns(table)
    if kind == "emer-v1":
        fields = {"emotions": "discrete_label", "subtitles": "subtitle", "reasons": "multimodal_explanation"}
        langs = {c: _column_language(table, col[c]) for c in fields}

        def v1_row(number: int, name: str, cells: dict[str, Any]) -> dict[ValueKey, Any]:
            return {(f, langs[c]): _field_value(table, number, name, col[c], f, cells.get(col[c])) for c, f in fields.items()}

        return _collect(table, kind, col["names"], v1_row)
    if kind == "openset":
        lang = _column_language(table, col["openset"])

        def openset_row(number: int, name: str, cells: dict[str, Any]) -> dict[ValueKey, Any]:
            return {("open_vocab_labels", lang): _field_value(table, number, name, col["openset"], "open_vocab_labels", cells.get(col["openset"]))}

        return _collect(table, kind, col["name"], openset_row)
    if kind == "mer2023":
        lang = _column_language(table, col["discrete"])

        def mer_row(number: int, name: str, cells: dict[str, Any]) -> dict[ValueKey, Any]:
            return {
                ("discrete_label", lang): _field_value(table, number, name, col["discrete"], "discrete_label", cells.get(col["discrete"])),
                ("valence", None): _field_value(table, number, name, col["valence"], "valence", cells.get(col["valence"])),
            }

        return _collect(table, kind, col["name"], mer_row)
    if not _is_explanation_table(table, col["chinese"]):

        def subtitle_row(number: int, name: str, cells: dict[str, Any]) -> dict[ValueKey, Any]:
            return {
                ("subtitle", "zh"): _cell_text(table, number, col["chinese"], cells.get(col["chinese"])),
                ("subtitle", "en"): _cell_text(table, number, col["english"], cells.get(col["english"])),
            }

        return _collect(table, "subtitles", col["name"], subtitle_row)

    split = {"zh": 0, "en": 0}

    def ovmerd_row(number: int, name: str, cells: dict[str, Any]) -> dict[ValueKey, Any]:
        values: dict[ValueKey, Any] = {}
        for lang, column, splitter in (("zh", col["chinese"], split_chinese_clues), ("en", col["english"], split_english_clues)):
            text = _cell_text(table, number, column, cells.get(column))
            if text is None:
                continue
            values[("multimodal_explanation", lang)] = text
            clues = splitter(text)
            if clues is not None:
                split[lang] += 1
                values.update({(f, lang): v for f, v in clues.items()})
        return values

    parsed = _collect(table, "ov-merd", col["name"], ovmerd_row)
    parsed.info["clues_split"] = {lang: sum(1 for v in parsed.rows.values() if ("visual_clue", lang) in v) for lang in split}
    return parsed


def _parse_mapped(spec: Mapping[str, Any]) -> tuple[Table, _Parsed]:
    if not isinstance(spec, Mapping):
        raise UserError(f"explanation.mapped_annotations entries must be mappings {{path, columns, format, language}}, got {spec!r}")
    unknown = set(spec) - {"path", "format", "columns", "language"}
    if "path" not in spec:
        raise UserError(f"annotation mapping {dict(spec)!r} has no `path`")
    path = Path(spec["path"])
    if unknown:
        raise UserError(f"annotation mapping for {path}: unknown keys {', '.join(sorted(unknown))} (allowed: path, format, columns, language)")
    columns = spec.get("columns")
    if not isinstance(columns, Mapping) or "name" not in columns:
        raise UserError(f"annotation mapping for {path}: `columns` must map `name` and at least one field to columns of the table")
    bad = [k for k in columns if k != "name" and k not in EXPLAINED_FIELDS]
    if bad:
        raise UserError(f"annotation mapping for {path}: unknown field {bad[0]!r} (fields: {', '.join(EXPLAINED_FIELDS)})")
    if len(columns) < 2:
        raise UserError(f"annotation mapping for {path}: `columns` maps no field besides `name`")
    language = spec.get("language")
    if language is not None and not (isinstance(language, str) and re.fullmatch(r"[a-z]{2,3}", language)):
        raise UserError(f"annotation mapping for {path}: language must be an ISO 639-1 code such as en or zh, or null to detect it, not {language!r}")
    table = read_table(path, table_format(path, spec.get("format"), WHAT), WHAT)
    for key, column in columns.items():
        if column not in table.columns:
            raise UserError(f"annotation table {path}: no column {column!r} (mapped to {key}); its columns are {', '.join(table.columns)}")
    fields = {f: c for f, c in columns.items() if f != "name"}
    langs: dict[str, str | None] = {}
    for f, c in fields.items():
        if f == "valence":
            langs[f] = None
        elif language is not None:
            langs[f] = language
        else:
            langs[f] = _column_language(table, c)

    def mapped_row(number: int, name: str, cells: dict[str, Any]) -> dict[ValueKey, Any]:
        return {(f, langs[f]): _field_value(table, number, name, c, f, cells.get(c)) for f, c in fields.items()}

    return table, _collect(table, "mapped", columns["name"], mapped_row)


@dataclass
class AnnotationTable:
    """All annotation tables of a build, joined: name -> field -> language -> value (valence: language None)."""

    by_name: TableValues  # plain dicts: what the build ships to its workers
    files: list[dict[str, Any]]  # per table: path, format, rows, sha256 (+ clues_split for EMER-Fine)

    @property
    def names(self) -> set[str]:
        return set(self.by_name)

    def rows(self) -> TableValues:
        """name -> field -> language -> value as plain dicts: what the build ships to workers (picklable, no file handles)."""
        return self.by_name

    def values(self, name: str) -> dict[str, dict[str | None, Any]]:
        """One clip's annotations; empty when the tables do not name it."""
        return {f: dict(langs) for f, langs in self.by_name.get(name, {}).items()}

    def unmatched(self, video_names: set[str]) -> tuple[list[str], list[str]]:
        """(annotated names with no video, video names with no annotation), each sorted: what the build reports."""
        return sorted(self.names - set(video_names)), sorted(set(video_names) - self.names)


def load_annotations(files: Sequence[str | Path], mapped: Sequence[Mapping[str, Any]] = ()) -> AnnotationTable:
    """Read and join annotation tables: recognised ones by header, others by an explicit column mapping.

    Two tables may both give a (name, field, language) only if they agree; a clash names both files.
    """
    parsed: list[tuple[Table, _Parsed]] = []
    for f in files:
        path = Path(f)
        table = read_table(path, what=WHAT)
        kind = RECOGNISED_HEADERS.get(frozenset(c.lower() for c in table.columns))
        if kind is None:
            raise UserError(f"annotation table {path}: header {','.join(table.columns)} is not recognised; recognised: {RECOGNISED_HELP}; give other tables with a column mapping")
        parsed.append((table, _parse_recognised(table, kind)))
    parsed.extend(_parse_mapped(spec) for spec in mapped)

    by_name: TableValues = {}
    origin: dict[tuple[str, str, str | None], Path] = {}
    infos: list[dict[str, Any]] = []
    for table, result in parsed:
        for name, values in result.rows.items():
            clip = by_name.setdefault(name, {})
            for (field_name, lang), value in values.items():
                langs = clip.setdefault(field_name, {})
                key = (name, field_name, lang)
                if lang in langs and langs[lang] != value:
                    where = f" ({lang})" if lang else ""
                    raise UserError(f"annotation tables {origin[key]} and {table.path} give different {field_name}{where} for {name}")
                langs[lang] = value
                origin.setdefault(key, table.path)
        infos.append({"path": str(table.path), "format": result.fmt, "rows": len(result.rows), "sha256": sha256_file(str(table.path)), **result.info})
    # Fields in EXPLAINED_FIELDS order, so records and reports list them the same way every time.
    ordered = {n: {f: by_name[n][f] for f in EXPLAINED_FIELDS if f in by_name[n]} for n in sorted(by_name)}
    return AnnotationTable(ordered, infos)


def _segment_text(item: ExplainInput) -> str | None:
    """The subtitle cue(s) or segment-table text an utterance was cut at (`segment.text`), if any."""
    text = ((item.fields.get("segment") or {}).get("text") or "").strip()
    return text or None


def _text_language(text: str, item: ExplainInput) -> str:
    """Chinese when the text is, else the language Whisper heard (subtitles are mostly in the spoken
    language), else English."""
    if detect_language([text]) == "zh":
        return "zh"
    heard = (item.fields.get("transcript") or {}).get("language")
    return heard if heard and heard != "zh" else "en"


def _lang_order(lang: str | None) -> tuple[bool, str]:
    return (lang is None, lang or "")


class AnnotationExplainer:
    """The `annotations` source: human values from the joined tables, in the configured language when there is one."""

    source_name = "annotations"

    def __init__(self, table_values: Mapping[str, Mapping[str, Mapping[Any, Any]]], language: str = "en") -> None:
        self.table_values = table_values
        self.language = language

    def explain(self, field_name: str, item: ExplainInput) -> FieldValue | Unavailable:
        """The annotated value, else any other language's (sorted, so the choice is stable)."""
        clip = self.table_values.get(item.name)
        langs = clip.get(field_name) if clip else None
        if not langs:
            spoken = _segment_text(item) if field_name == "subtitle" else None
            if spoken:  # the cue or table row the utterance was cut at: words a person wrote down
                return FieldValue(spoken, _text_language(spoken, item), source="human", prompt_version=None, time=None)
            return Unavailable(f"no annotation for {item.name}" if not clip else f"annotations have no {field_name} for {item.name}")
        lang = self.language if self.language in langs else min(langs, key=_lang_order)
        value = langs[lang]
        if isinstance(value, list):
            value = list(value)
        others = {other: list(v) if isinstance(v, list) else v for other, v in langs.items() if other != lang} if field_name != "valence" else {}
        return FieldValue(value, None if field_name == "valence" else lang, source="human", prompt_version=None, time=None, other_languages=others)


__all__ = [
    "AnnotationExplainer",
    "AnnotationTable",
    "CLUE_FIELDS",
    "RECOGNISED_HEADERS",
    "detect_language",
    "load_annotations",
    "split_chinese_clues",
    "split_english_clues",
]
