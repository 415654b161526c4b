"""One parser for label-list cells: annotation tables, prediction files, synonym groups and the wheel tables.

Label lists are written as Python- or JSON-style list strings (`"['excited', 'joyful']"`). They are
read as literals, never evaluated, so a label may hold a comma or an apostrophe and stays whole.
Three named modes say how forgiving the parser is:

- `strict` (annotation tables of a build): a JSON list, a Python list literal of strings, or the
  unescaped form people write by hand, `['can't stop', 'happy, relieved']` (split only between
  quoted items). Anything else raises ValueError: a build never guesses.
- `lenient` (`emer evaluate`'s default): what `strict` reads, read the same way; a bracketed text
  that is not a list of quoted strings (`[happy, sad]`) is split the way the authors split it; an
  unbracketed text is comma-separated (`happy, sad`).
- `authors`: exactly MERTools' `string_to_list` (drop one leading `[` and one trailing `]`, split
  on every quote and comma, strip, drop empties). Their emotion-wheel tables are written for it,
  and `emer evaluate --label-parsing authors` uses it to reproduce their numbers label for label.
  It cuts `['can't stop', 'happy, relieved']` into four labels: `can`, `t stop`, `happy`, `relieved`.
"""

from __future__ import annotations

import ast
import json
import re
from typing import Any, Literal

LabelMode = Literal["strict", "lenient", "authors"]
LABEL_MODES: tuple[str, ...] = ("strict", "lenient", "authors")

_AUTHORS_SEPARATORS = re.compile("['\",]")
_BETWEEN_QUOTED_ITEMS = re.compile(r"(?<=['\"])\s*,\s*(?=['\"])")


def _check_mode(mode: str) -> None:
    if mode not in LABEL_MODES:
        raise ValueError(f"unknown label mode {mode!r}; one of {', '.join(LABEL_MODES)}")


def _clean(items: list[Any]) -> list[str]:
    return [s for s in (str(i).strip() for i in items if i is not None) if s]


def authors_split(text: str) -> list[str]:
    """MERTools' `string_to_list` on one text: one `[` / `]` dropped at the ends, then split on quotes and commas."""
    if text[:1] == "[":
        text = text[1:]
    if text[-1:] == "]":
        text = text[:-1]
    return [item.strip() for item in _AUTHORS_SEPARATORS.split(text) if item.strip()]


def _quoted_items(inner: str) -> list[str] | None:
    """`'a', "b, c"` -> [a, b, c] split only between quoted items; None unless every piece is one quoted item."""
    inner = inner.strip()
    if not inner:
        return []
    pieces = _BETWEEN_QUOTED_ITEMS.split(inner)
    if not all(len(p) >= 2 and p[0] in "'\"" and p[-1] == p[0] for p in pieces):
        return None
    return [p[1:-1] for p in pieces]


def _literal_list(text: str) -> list[Any] | None:
    """The items of a bracketed JSON or Python list literal, else of a hand-written quoted list; None when neither."""
    try:
        loaded = json.loads(text)
        return loaded if isinstance(loaded, list) else None
    except ValueError:
        pass
    try:
        node = ast.parse(text, mode="eval").body  # parsed, never evaluated
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return _quoted_items(text[1:-1])  # not Python at all: an apostrophe inside a quoted label
    if isinstance(node, ast.List) and all(isinstance(e, ast.Constant) for e in node.elts):
        return [e.value for e in node.elts]  # type: ignore[attr-defined]
    return None  # valid Python but no list of literals: `['a'] + ['b']`, `[__import__('os')]`


def parse_labels(value: Any, mode: LabelMode = "strict") -> list[str]:
    """Labels of one cell (a list string, a list, or empty), stripped, empties dropped, order kept.

    `mode` is one of `LABEL_MODES` (module docstring); `strict` raises ValueError for anything that is
    not a list of strings, the other two always return a list.
    """
    _check_mode(mode)
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        if mode == "strict" and not all(isinstance(v, str) for v in value):
            raise ValueError(f"not a list of strings: {value!r:.80}")
        return _clean(list(value))
    text = str(value)
    if not text.strip():
        return []
    if mode == "authors":
        return authors_split(text)
    text = text.strip()
    bracketed = text.startswith("[") and text.endswith("]")
    if not bracketed:
        if mode == "strict":
            raise ValueError(f"not a list of labels: {text[:80]!r}")
        return _clean(text.split(","))
    items = _literal_list(text)
    if items is not None and all(isinstance(i, str) for i in items):
        return _clean(items)
    if mode == "strict":
        raise ValueError(f"not a list of strings: {text[:80]!r}")
    return authors_split(text)


def parse_label_groups(value: Any, mode: LabelMode = "lenient") -> list[list[str]]:
    """Synonym groups of one cell (`"[['happy', 'glad'], ['sad']]"` or a list of lists).

    A literal list of lists is read as one; otherwise (and always in `authors` mode) the text is cut
    the way MERTools' `listlist_to_list` cuts it: at brackets into groups, each group at quotes.
    `strict` raises ValueError where a literal cannot be read.
    """
    _check_mode(mode)
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [parse_labels(g, mode) for g in value if isinstance(g, (list, tuple))]
    text = str(value).strip()
    if not text:
        return []
    if mode != "authors" and text.startswith("["):
        try:
            parsed = ast.literal_eval(text)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            parsed = None
        if isinstance(parsed, list) and all(isinstance(g, (list, tuple)) and all(isinstance(m, str) for m in g) for g in parsed):
            return [_clean(list(g)) for g in parsed]
    if mode == "strict":
        raise ValueError(f"not a list of lists of strings: {text[:80]!r}")
    groups = [g for g in re.split(r"[\[\]]", text) if g.strip() not in ("", ",")]
    return [[m.strip() for m in re.split("['\"]", g) if m.strip() not in ("", ",")] for g in groups]


__all__ = ["LABEL_MODES", "LabelMode", "authors_split", "parse_label_groups", "parse_labels"]
