"""How an LLM answer is asked for and read, and a name for how each one was read.

Structured answers (the label list, a sentiment word) are asked for with a JSON schema in
`response_format` where the endpoint takes one (vLLM, llama.cpp, Ollama and OpenAI all do), else as a
`json_object`, else as plain text; the reader then takes, in order, the JSON the request asked for, a
JSON value inside prose, a Python-style or bare comma-separated list, and gives up only after that. Each
reader says how it read the answer (`READS`), so a build can count how much rested on the tolerant path.
Pure functions: no client, no I/O.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# How an answer was read: asked with a JSON schema / as a JSON object and parsed as such; asked as text but
# clean JSON anyway; found by the tolerant reader; a text answer; a text answer cut at max_tokens.
READS: tuple[str, ...] = ("schema", "json_object", "json", "tolerant", "text", "cut")
FORMATS: tuple[str, ...] = ("json_schema", "json_object", "text")  # what a request asks for, most structured first
_HOW_ASKED = {"json_schema": "schema", "json_object": "json_object", "text": "json"}
_SENTENCE_END = re.compile(r"[.!?。！？](?=[\"'”’)\]]*(?:\s|$))")
_WORDISH = re.compile(r"[^\W\d_][\w'’ -]{0,38}", flags=re.U)


@dataclass(frozen=True)
class AnswerShape:
    """A structured answer: a JSON object with one property `key` whose value `value_schema` describes."""

    name: str
    key: str
    value_schema: dict[str, Any]
    read: Callable[[str, str], tuple[Any, str]]  # (answer, format asked) -> (value, how it was read)

    def response_format(self, fmt: str) -> dict[str, Any] | None:
        """The request's `response_format` for one of FORMATS (None for text)."""
        if fmt == "json_schema":
            schema = {"type": "object", "properties": {self.key: self.value_schema}, "required": [self.key], "additionalProperties": False}
            return {"type": "json_schema", "json_schema": {"name": self.name, "strict": True, "schema": schema}}
        if fmt == "json_object":
            return {"type": "json_object"}
        return None


def _unfence(answer: str) -> str:
    body = answer.strip()
    fenced = re.fullmatch(r"```[\w-]*\s*(.*?)\s*```", body, flags=re.S)
    return fenced.group(1) if fenced else body


def _string_list(value: Any, key: str) -> list[str] | None:
    """A list of strings, or an object whose `key` holds one (its other keys, a reasoning or an example, are
    not the answer; an object without `key` holds no labels)."""
    if isinstance(value, dict):
        value = value.get(key)
    if isinstance(value, list) and all(isinstance(x, str) for x in value):
        return [x.strip() for x in value if x.strip()]
    return None


def _json_values(text: str) -> list[Any]:
    """Every JSON object or array that starts somewhere in `text` and parses from there, outside those
    already found (the lists inside an object are that object's, not answers of their own)."""
    decoder = json.JSONDecoder()
    found, end = [], 0
    for m in re.finditer(r"[\[{]", text):
        if m.start() < end:
            continue
        try:
            value, end = decoder.raw_decode(text, m.start())
        except ValueError:
            continue
        found.append(value)
    return found


_THINKING = re.compile(r"<think>.*?(?:</think>|$)", flags=re.S)  # a reasoning model's block: its lists are candidates
_REFUSAL = re.compile(r"\b(sorry|apolog\w*|can't|cannot|unable|as an ai)\b", flags=re.I)
_NON_LABELS = frozenset({"null", "none", "true", "false", "n/a", "na", "error", "unknown", "no", "yes", "not sure"})


def _bare_items(text: str) -> list[str] | None:
    """`happy, relieved` or `[happy, relieved]` or `happy and relieved`: short word groups only."""
    body = text.strip().strip("[]").strip().rstrip(".").strip()
    if not body or "\n" in body.strip():
        return None
    items = [x.strip().strip("\"'`").strip() for x in re.split(r",|;|\band\b", body)]
    items = [x for x in items if x]
    if not items or len(items) > 12 or not all(_WORDISH.fullmatch(x) and len(x.split()) <= 2 for x in items):
        return None
    return items


MAX_LABELS, MAX_LABEL_CHARS = 50, 80  # open-vocabulary labels are words: more, or longer, is not a label list
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f<>]+")


def read_labels(answer: str, fmt: str = "text", key: str = "labels") -> tuple[list[str], str]:
    """The label list in an answer and how it was read; ValueError when nothing list-like is in it. Labels
    are kept clean and bounded: control characters and `<>` become spaces, a label over MAX_LABEL_CHARS is
    dropped, at most MAX_LABELS are kept."""
    labels, how = _read_labels(answer, fmt, key)
    cleaned = (" ".join(_UNPRINTABLE.sub(" ", label).split()) for label in labels)
    return [label for label in cleaned if label and len(label) <= MAX_LABEL_CHARS][:MAX_LABELS], how


def _read_labels(answer: str, fmt: str, key: str) -> tuple[list[str], str]:
    body = _unfence(_THINKING.sub("", answer))
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = labels = None
    else:
        if parsed is None or isinstance(parsed, (bool, int, float)):  # null, true, 42: no list of labels
            raise ValueError(f"labels answer is unusable: a JSON {type(parsed).__name__}, not a list")
        strict = isinstance(parsed, list) or (isinstance(parsed, dict) and set(parsed) == {key})  # as asked; other keys: tolerant
        labels = _string_list(parsed, key) if strict else None
    if labels is not None:
        return labels, _HOW_ASKED[fmt]
    values = _json_values(body)  # JSON inside prose: `The labels are ["calm", "shy"].`
    if sum(isinstance(v, dict) and key in v for v in values) > 1:  # the prompt's examples echoed, or several answers
        raise ValueError(f"labels answer is unusable: several {key!r} objects in it, no one answer")
    for value in values:
        labels = _string_list(value, key)
        if labels:  # an empty list in prose is more likely the prompt's own example, echoed, than the answer
            return labels, "tolerant"
    for m in re.finditer(r"\[[^\[\]]*\]", body):  # a Python-style list: ['calm', 'shy']
        try:
            value = ast.literal_eval(m.group(0))
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            continue
        labels = _string_list(value, key)
        if labels:
            return labels, "tolerant"
    cut = re.search(r"\[([^\]]*)$", body)  # JSON cut at max_tokens: keep the strings that closed
    if cut is not None:
        strings = [_unescaped(s) for s in re.findall(r'"((?:[^"\\]|\\.)*)"\s*(?:,|$)', cut.group(1))]
        if any(s.strip() for s in strings):
            return [s.strip() for s in strings if s.strip()], "tolerant"
    if _REFUSAL.search(body):
        raise ValueError("labels answer is unusable: a refusal, not labels")
    last = body.splitlines()[-1] if body.splitlines() else body
    for candidate in (body, re.sub(r"^\s*(output|labels?|emotions?)\s*:\s*", "", last, flags=re.I)):
        items = _bare_items(candidate)
        if items is not None and not all(i.lower().strip(".!") in _NON_LABELS for i in items):
            return items, "tolerant"
    raise ValueError("labels answer is unusable: no JSON, quoted or comma-separated list in it")


def _unescaped(text: str) -> str:
    """A JSON string's content with its escapes read (`\\u5feb` is 快); as it is where they do not parse."""
    try:
        return json.loads(f'"{text}"')
    except ValueError:
        return text


def read_text(answer: str, finish_reason: str | None) -> tuple[str, str]:
    """A prose answer; one cut at max_tokens ends at its last full sentence (when it has one)."""
    text = answer.strip()
    if finish_reason != "length":
        return text, "text"
    ends = list(_SENTENCE_END.finditer(text))
    if ends and ends[-1].end() < len(text):
        return text[: ends[-1].end()].strip(), "cut"
    return text, "cut"


LABELS = AnswerShape("open_vocab_labels", "labels", {"type": "array", "items": {"type": "string"}}, read_labels)
