"""Split assignment: a stable hash of a group key, or a user's split table. Same inputs, same split."""

from __future__ import annotations

import hashlib
import math
import re
from pathlib import Path
from typing import Any

from emer_builder.core.errors import UserError
from emer_builder.core.tables import read_table


def group_value(record: dict[str, Any], group_by: str, pattern: str | None = None) -> str:
    """The value that keeps a group together: a dotted field path, optionally narrowed by a regex."""
    value: Any = record
    for part in group_by.split("."):
        if not isinstance(value, dict) or part not in value:
            raise KeyError(f"split.group_by field {group_by!r} is not in the record")
        value = value[part]
    text = "" if value is None else str(value)
    if pattern:
        m = re.search(pattern, text)
        if m:
            text = m.group(1) if m.groups() else m.group(0)
    return text


STANDARD_SPLITS = ("train", "validation", "test")
SPLIT_NAME = re.compile(r"[a-z][a-z0-9_]*")  # also a file-name prefix: no dots, slashes or dashes


def split_order(name: str) -> tuple[int, str]:
    """train, validation, test first, then any other split by name."""
    return (STANDARD_SPLITS.index(name) if name in STANDARD_SPLITS else len(STANDARD_SPLITS), name)


def hash_split(group: str, ratios: dict[str, float], seed: str = "emer") -> str:
    """Map a group key to a split through sha256: uniform, stable across machines and Python versions,
    and independent of the order in which the ratios are written (splits are walked in `split_order`)."""
    digest = hashlib.sha256(f"{seed}\x00{group}".encode()).digest()
    position = int.from_bytes(digest[:8], "big") / 2**64
    total = sum(ratios.values())
    cumulative = 0.0
    names = sorted(ratios, key=split_order)
    for name in names:
        cumulative += ratios[name] / total
        if position < cumulative:
            return name
    return [n for n in names if ratios[n] > 0][-1]  # rounding left the position past the sum: never a split of ratio 0


def load_split_table(path: str | Path) -> dict[str, str]:
    """key -> split from a table (CSV, TSV or JSON lines) with columns `key` (or `name`, as MER tables use) and `split`."""
    table = read_table(path, what="split table")
    key_col = table.column("key", "name")
    split_col = table.column("split")
    if key_col is None or split_col is None:
        raise UserError(f"split table {table.path} needs columns key (or name) and split; it has {', '.join(table.columns)}")
    out: dict[str, str] = {}
    for line, row in table.numbered():
        key, split = (str(row.get(c) if row.get(c) is not None else "").strip() for c in (key_col, split_col))
        if not key:
            continue
        if key in out and out[key] != split:
            raise UserError(f"split table {table.path}: line {line} puts {key!r} in {split!r}, an earlier line in {out[key]!r}")
        out[key] = split
    return out


def validate_ratios(ratios: dict[str, float]) -> None:
    if not isinstance(ratios, dict):
        raise UserError(f"split.ratios must be a mapping of split name to share, got {ratios!r}")
    if not ratios or any(not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v < 0 for v in ratios.values()) or sum(ratios.values()) <= 0:
        raise UserError(f"split.ratios must be non-negative numbers with a positive sum, got {ratios}")
    for name in ratios:
        if not SPLIT_NAME.fullmatch(name):
            raise UserError(f"split name {name!r} must be lowercase letters, digits and _")


class SplitAssigner:
    """Assigns `record['split']`; the split table wins for the keys it lists."""

    def __init__(
        self,
        ratios: dict[str, float],
        group_by: str = "key",
        group_pattern: str | None = None,
        split_table: str | None = None,
        seed: str = "emer",
        official: dict[str, str] | None = None,
    ):
        validate_ratios(ratios)
        self.ratios, self.group_by, self.group_pattern, self.seed = dict(ratios), group_by, group_pattern, seed
        if group_pattern is not None:
            try:
                re.compile(group_pattern)
            except re.error as e:
                raise UserError(f"split.group_pattern {group_pattern!r} is not a valid regex: {e}") from None
        self.table = {**(official or {}), **(load_split_table(split_table) if split_table else {})}  # a corpus' official splits, then the user's table
        for key, split in self.table.items():
            if not SPLIT_NAME.fullmatch(split):
                raise UserError(f"split table: key {key!r} has an invalid split name {split!r}")

    def __call__(self, record: dict[str, Any]) -> str:
        if record["key"] in self.table:
            return self.table[record["key"]]
        return hash_split(group_value(record, self.group_by, self.group_pattern), self.ratios, self.seed)
