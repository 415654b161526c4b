"""One reader for the tables users bring: CSV, TSV, JSON lines (and the authors' .xlsx wheel tables).

Annotation tables, prediction and ground-truth files, corpus label tables (MELD, MMSA), split tables
and the emotion-wheel tables all come through `read_table`, so they share one set of rules:

- UTF-8 text; a byte-order mark is dropped; CRLF or LF line ends; quoted CSV cells may hold the
  delimiter, quotes and line breaks.
- The header's names are stripped; a name used twice is an error; unnamed columns are ignored.
- Rows are dicts column -> cell (CSV/TSV: text, "" when empty; JSON lines: any JSON value, None
  when absent; .xlsx: the cell value, None when empty); blank lines and fully empty rows are skipped.
  A CSV row longer than the header is an error (an unquoted delimiter), a shorter one is padded.
- Every problem is one line naming the file (and the line): a `UserError`, never a traceback.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emer_builder.core.errors import UserError, one_line

FORMATS: dict[str, str] = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".xlsx": "xlsx"}
TEXT_FORMATS: tuple[str, ...] = ("csv", "tsv", "jsonl")


@dataclass(frozen=True)
class Table:
    """A table's header and rows; `lines[i]` is where `rows[i]` starts in the file (for messages)."""

    path: Path
    format: str
    columns: list[str]
    rows: list[dict[str, Any]]
    lines: list[int]

    def numbered(self) -> Iterator[tuple[int, dict[str, Any]]]:
        """(line number, row) pairs."""
        return zip(self.lines, self.rows, strict=True)

    def column(self, *candidates: str) -> str | None:
        """The first of `candidates` (lowercase) the header has, matched without case; None when none is there."""
        lower = {c.lower(): c for c in self.columns}
        return next((lower[name] for name in candidates if name in lower), None)

    def has(self, *names: str) -> bool:
        """Whether the header has all of `names` (matched without case)."""
        return all(self.column(name) is not None for name in names)


def _where(what: str, path: Path) -> str:
    return f"{what} {path}" if what else str(path)


def table_format(path: str | Path, given: str | None = None, what: str = "table") -> str:
    """csv, tsv, jsonl or xlsx: `given` when set, else from the file extension."""
    p = Path(path)
    if given is not None:
        if given not in FORMATS.values():
            raise UserError(f"{_where(what, p)}: format must be csv, tsv, jsonl or xlsx, not {given!r}")
        return given
    fmt = FORMATS.get(p.suffix.lower())
    if fmt is None:
        raise UserError(f"{_where(what, p)}: cannot tell its format from the extension; use .csv, .tsv, .jsonl (or .xlsx)")
    return fmt


def read_table(path: str | Path, format: str | None = None, what: str = "table") -> Table:
    """The rows of a CSV, TSV, JSON-lines or .xlsx file; `what` names the file in messages ("annotation table")."""
    p = Path(path)
    fmt = table_format(p, format, what)
    if not p.is_file():
        raise UserError(f"{_where(what, p)}: no such file")
    if fmt == "xlsx":
        return _read_xlsx(p, what)
    try:
        with open(p, encoding="utf-8-sig", newline="") as f:  # newline="": a quoted cell keeps its own line breaks
            text = f.read()
    except UnicodeDecodeError as e:
        raise UserError(f"{_where(what, p)} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise UserError(f"{_where(what, p)}: cannot read ({e.strerror})") from None
    if fmt == "jsonl":
        return _read_jsonl(p, text, what)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t" if fmt == "tsv" else ",")
    try:
        return _read_delimited(p, fmt, reader, what)
    except csv.Error as e:
        raise UserError(f"{_where(what, p)}: line {reader.line_num} is not valid {fmt.upper()} ({e})") from None


def _header(p: Path, cells: list[Any], what: str) -> list[str]:
    columns = ["" if c is None else str(c).strip() for c in cells]
    named = [c for c in columns if c]
    if len({c.lower() for c in named}) != len(named):  # columns are found without case: `start` and `START` are one
        raise UserError(f"{_where(what, p)}: its header repeats a column ({','.join(named)})")
    return columns


def _read_delimited(p: Path, fmt: str, reader: Any, what: str) -> Table:
    header = next(reader, None)
    if not header or not any(c.strip() for c in header):
        raise UserError(f"{_where(what, p)} is empty")
    columns = _header(p, header, what)
    rows, lines = [], []
    start = reader.line_num + 1
    for cells in reader:
        line, start = start, reader.line_num + 1  # a quoted cell may span lines: report where the row starts
        if not any(c.strip() for c in cells):
            continue
        if len(cells) > len(columns):
            raise UserError(f"{_where(what, p)}: line {line} has {len(cells)} cells but the header has {len(columns)} (quote cells holding the delimiter)")
        cells = cells + [""] * (len(columns) - len(cells))
        rows.append({c: v for c, v in zip(columns, cells, strict=True) if c})
        lines.append(line)
    return Table(p, fmt, [c for c in columns if c], rows, lines)


def _read_jsonl(p: Path, text: str, what: str) -> Table:
    columns: dict[str, None] = {}
    rows, lines = [], []
    for number, line in enumerate(text.split("\n"), 1):  # not splitlines(): JSON strings may hold U+2028
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            json.dumps(obj, ensure_ascii=False).encode("utf-8")  # a lone surrogate (`"\ud800"`) is JSON, but no text can hold it
        except (ValueError, RecursionError) as e:  # UnicodeEncodeError is a ValueError
            raise UserError(f"{_where(what, p)}: line {number} is not JSON of valid text ({one_line(e)})") from None
        if not isinstance(obj, dict):
            raise UserError(f"{_where(what, p)}: line {number} is not a JSON object")
        columns.update(dict.fromkeys(k for k in obj if k not in columns))
        rows.append(obj)
        lines.append(number)
    if not rows:
        raise UserError(f"{_where(what, p)} is empty")
    return Table(p, "jsonl", list(columns), rows, lines)


def _read_xlsx(p: Path, what: str) -> Table:
    """The first sheet; the first row is the header."""
    import openpyxl

    try:
        book = openpyxl.load_workbook(p, read_only=True, data_only=True)
    except Exception as e:  # openpyxl raises many types for a damaged or foreign file
        raise UserError(f"{_where(what, p)}: cannot read it as .xlsx ({one_line(e)})") from None
    try:
        sheet = book.worksheets[0].iter_rows(values_only=True)
        header = next(sheet, None)
        if not header:
            raise UserError(f"{_where(what, p)} is empty")
        columns = _header(p, list(header), what)
        rows, lines = [], []
        for number, values in enumerate(sheet, 2):
            cells = {c: v for c, v in zip(columns, values, strict=False) if c}  # openpyxl may give short rows
            if any(v is not None for v in cells.values()):
                rows.append({c: cells.get(c) for c in columns if c})
                lines.append(number)
        return Table(p, "xlsx", [c for c in columns if c], rows, lines)
    finally:
        book.close()


__all__ = ["FORMATS", "TEXT_FORMATS", "Table", "read_table", "table_format"]
