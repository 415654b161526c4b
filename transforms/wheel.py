"""Emotion-wheel label normalisation, rebuilt from the OV-MER / MER2025-26 authors' tables.

The tables (format.csv, synonym.xlsx, wheel1..5.xlsx) come pinned from two places, and the two
sets differ: zeroQiaoba/MERTools at 89120b7, `MER2026/MER2026_Track2/emotion_wheel/` (`mertools`,
the default), and the AffectGPT repository at d961cab, `AffectGPT/emotion_wheel/` (`affectgpt`),
whose format.csv differs in 17 rows: there 15 words ending in "-less" also list their roots
(`fearless` lists `fear`; `embrace` and `received` list a "-less" form), so `fear` maps elsewhere on
wheels 2 to 5. The AffectGPT paper's MER-UniBench numbers were computed with AffectGPT's set. They
are CC BY-NC, so the product never ships them: `wheel_dir()` uses a folder the user names or
downloads one set once into the cache (`fetch:mertools`, `fetch:affectgpt`), each file checked
against a pinned sha256; `origin()` names the set a folder holds.

The mappings are built the way the authors' evaluation code builds them (AffectGPT
`my_affectgpt/evaluation/wheel.py`: `read_format2raws`, `read_candidate_synonym_merge`,
`read_wheel_to_map`, `func_get_wheel_cluster`; MERTools MER2026 Track2 loads the same three
mappings pre-compiled from `wheel_mapping.npz`), three stages:

1. `format_mapping`: surface form -> base words (format.csv; every base word also maps to itself).
2. `raw_mapping`: base word -> emotion-wheel words (synonym.xlsx, eight GPT runs merged).
3. `wheel_map_whole[wheel][level]`: wheel word -> category on that wheel at level 1 or 2.

Rules (all from the authors' code):

- Labels are lowercased and stripped first. A label not in `format_mapping`, or one none of whose
  wheel words lies on the wheel asked for, is dropped (authors: "elements not in the vocabulary are
  removed", `func_map_label_to_synonym`).
- Tie rule: a label's candidate wheel words are gathered over all its base words, sorted
  alphabetically, and the first one present on the wheel decides the category
  (`func_backward_case3`). `normalise` keeps a label that is itself a base word and otherwise takes
  the alphabetically first of its base words (`func_backward_case1`, which would also turn the base
  word "happy" into "happiness"; the metrics never use `normalise`).
- A word listed more than once on one wheel takes the category of its last listing in table
  order (the dictionary is overwritten in reading order in `func_get_wheel_cluster`).
- At level 2, a level-1 word maps to its alphabetically first level-2 child.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emer_builder.core.errors import UserError
from emer_builder.core.hashing import sha256_file
from emer_builder.core.labels import parse_labels
from emer_builder.core.paths import emer_home
from emer_builder.core.tables import read_table

UPSTREAM_REPO = "zeroQiaoba/MERTools"
UPSTREAM_COMMIT = "89120b780ab18b28349f0e37dcc12b8cc253cb02"
UPSTREAM_PATH = "MER2026/MER2026_Track2/emotion_wheel"
BASE_URL = f"https://raw.githubusercontent.com/{UPSTREAM_REPO}/{UPSTREAM_COMMIT}/{UPSTREAM_PATH}/"
DOWNLOAD_TIMEOUT_S = 30.0

WHEELS = ("wheel1", "wheel2", "wheel3", "wheel4", "wheel5")
LEVELS = ("level1", "level2")

# sha256 of the authors' files at UPSTREAM_COMMIT, in the order they are hashed for `origin()`.
FILE_SHA256 = {
    "format.csv": "82234299875465ecf6c196ace42ffbe745baaeea72b5e39de955af36929982a4",
    "synonym.xlsx": "23f81f9ab1d2418aaf96775304fb5dc52c62bb5d5ef652a97471d045fc9d2e29",
    "wheel1.xlsx": "e70485d354b82a7491ff24648273182a5f4f13f92c76e6b3e4f9033f5e6afcc1",
    "wheel2.xlsx": "acc001e076a8e60440361f58dd8c05ed900c4890c84bb7d8d1df93708a7d9c87",
    "wheel3.xlsx": "d62f30bf88c17c55876634cd088eacaef98278fc25457474364439872f9dbf83",
    "wheel4.xlsx": "660260561b7fe15550f3679a01e7c783608ce3403d4c28db0a88520f68d83aea",
    "wheel5.xlsx": "2dd4595b2cf8e7628ca06a416a8e38ac831614b244f23d1ae613dc34007649f1",
}
SYNONYM_RUNS = tuple(f"run{i}" for i in range(1, 9))

# The AffectGPT repository's copy (`ouyangjutian/AffectGPT` at d961cab; the same blobs sit in its
# `OV-MER/emotion_wheel/`): every file equals MERTools' but format.csv.
AFFECTGPT_REPO = "ouyangjutian/AffectGPT"
AFFECTGPT_COMMIT = "d961cab04ab2903fefb22a641331e1242949b15d"
AFFECTGPT_PATH = "AffectGPT/emotion_wheel"
AFFECTGPT_BASE_URL = f"https://raw.githubusercontent.com/{AFFECTGPT_REPO}/{AFFECTGPT_COMMIT}/{AFFECTGPT_PATH}/"
AFFECTGPT_FILE_SHA256 = {**FILE_SHA256, "format.csv": "ba6de7d61db8e129d1d7ef8a2aae22a9e93a2c2e3e683e6f2735d04455f016f2"}


@dataclass(frozen=True)
class TableSet:
    """One pinned set of the authors' tables: where it is downloaded from and what each file hashes to."""

    name: str  # the `fetch:NAME` that selects it
    label: str  # how `origin()` names it
    repo: str
    commit: str
    path: str
    sha256: dict[str, str]

    def base_url(self) -> str:
        # read at call time so that tests can point a set at a local server
        return BASE_URL if self.name == "mertools" else AFFECTGPT_BASE_URL

    def cache_dir(self) -> Path:
        return cache_dir() if self.name == "mertools" else emer_home() / "emotion-wheel" / f"{self.name}-{self.commit}"

    def hint(self) -> str:
        return f"pass --wheel-dir DIR holding {', '.join(self.sha256)} from github.com/{self.repo} @ {self.commit[:7]} {self.path}/"


TABLE_SETS: dict[str, TableSet] = {
    "mertools": TableSet("mertools", "MERTools", UPSTREAM_REPO, UPSTREAM_COMMIT, UPSTREAM_PATH, FILE_SHA256),
    "affectgpt": TableSet("affectgpt", "AffectGPT", AFFECTGPT_REPO, AFFECTGPT_COMMIT, AFFECTGPT_PATH, AFFECTGPT_FILE_SHA256),
}

# Cell texts pandas reads as missing by default: the authors read the tables with pandas, so a cell
# holding exactly one of these counts as empty here too.
_PANDAS_NA = frozenset(
    ["", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"]
)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _hint() -> str:
    return TABLE_SETS["mertools"].hint() + " (or --wheel-dir fetch:mertools / fetch:affectgpt)"


def _download(name: str, target: Path, tables: TableSet | None = None) -> None:
    """One table from the pinned URL into `target`, renamed into place only once its sha256 matches."""
    tables = tables or TABLE_SETS["mertools"]
    url = tables.base_url() + name
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            data = response.read()
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = f"HTTP {e.code} {e.reason}" if isinstance(e, urllib.error.HTTPError) else (getattr(e, "reason", None) or e)
        raise UserError(f"could not download the emotion-wheel table {name} from {url} ({reason}); {tables.hint()}") from None
    got = _sha256(data)
    if got != tables.sha256[name]:
        raise UserError(f"emotion-wheel table {name} from {url} has sha256 {got[:12]}, expected {tables.sha256[name][:12]}; {tables.hint()}")
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".partial", dir=target.parent)  # private: workers may race
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def cache_dir() -> Path:
    return emer_home() / "emotion-wheel" / UPSTREAM_COMMIT


def table_set(spec: str | None) -> TableSet | None:
    """The pinned set `spec` selects (`fetch:mertools`, `fetch:affectgpt`; `fetch` and None: MERTools'), or None for a folder."""
    if spec is None or spec == "fetch":
        return TABLE_SETS["mertools"]
    if spec.startswith("fetch:"):
        name = spec.removeprefix("fetch:")
        if name not in TABLE_SETS:
            raise UserError(f"--wheel-dir {spec}: no such pinned table set; use {' or '.join(f'fetch:{n}' for n in TABLE_SETS)}, or a folder")
        return TABLE_SETS[name]
    return None


def wheel_dir(wheel_dir: str | None = None) -> Path:
    """The folder holding the tables: `wheel_dir` as given (checked), else the download cache of the pinned set
    it names (`fetch:NAME`; None: MERTools'), filled on first use."""
    tables = table_set(wheel_dir)
    if tables is None:
        assert wheel_dir is not None
        folder = Path(wheel_dir)
        if not folder.is_dir():
            raise UserError(f"--wheel-dir {wheel_dir}: not a folder; {_hint()}")
        missing = [name for name in FILE_SHA256 if not (folder / name).is_file()]
        if missing:
            raise UserError(f"--wheel-dir {wheel_dir}: missing {', '.join(missing)}; {_hint()}")
        return folder
    folder = tables.cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create the emotion-wheel cache {folder} ({e.strerror}); set EMER_HOME or {_hint()}") from None
    for name, sha in tables.sha256.items():
        path = folder / name
        if path.is_file() and sha256_file(str(path)) == sha:
            continue
        _download(name, path, tables)
    return folder


# ---------------------------------------------------------------- reading the tables


def _cell(value: Any) -> str | None:
    """A table cell as pandas would give it to the authors' code: None for missing, else the text."""
    if value is None:
        return None
    text = value if isinstance(value, str) else str(value)
    return None if text in _PANDAS_NA else text


def _read_rows(path: Path) -> list[dict[str, str | None]]:
    """Rows of a wheel table (.csv or the first sheet of .xlsx) as header -> cell, cells read as pandas reads them;
    rows left without any cell are dropped (they change no mapping)."""
    table = read_table(path, what="emotion-wheel table")
    rows = [{k: _cell(v) for k, v in row.items()} for row in table.rows]
    return [row for row in rows if any(v is not None for v in row.values())]


def _labels(cell: str | None) -> list[str]:
    """A list cell of the tables, split exactly as the authors' `string_to_list` splits it."""
    return [] if cell is None else parse_labels(cell, "authors")


def read_wheel_to_map(path: Path) -> dict[str, dict[str, list[str]]]:
    """level1 -> level2 -> [level3]; blank cells repeat the value above (authors' `read_wheel_to_map`)."""
    store: dict[str, dict[str, list[str]]] = {}
    level1 = level2 = level3 = ""
    for row in _read_rows(path):
        for col in LEVELS + ("level3",):
            if col not in row:
                raise UserError(f"emotion-wheel table {path} has no column {col}; {_hint()}")
        level1 = row["level1"] if row["level1"] is not None else level1
        level2 = row["level2"] if row["level2"] is not None else level2
        level3 = row["level3"] if row["level3"] is not None else level3
        level1, level2, level3 = level1.lower().strip(), level2.lower().strip(), level3.lower().strip()
        store.setdefault(level1, {}).setdefault(level2, []).append(level3)
    return store


def wheel_cluster(emotion_wheel: dict[str, dict[str, list[str]]], level: str) -> dict[str, str]:
    """Every word on one wheel -> its level-1 or level-2 category (authors' `func_get_wheel_cluster`)."""
    wheel_map: dict[str, str] = {}
    for level1, children in emotion_wheel.items():
        wheel_map[level1] = level1 if level == "level1" else sorted(children)[0]
        for level2, level3s in children.items():
            wheel_map[level2] = level1 if level == "level1" else level2
            for level3 in level3s:
                wheel_map[level3] = level1 if level == "level1" else level2
    return wheel_map


def _merge_map(map1: dict[str, list[str]], map2: dict[str, list[str]]) -> dict[str, list[str]]:
    """Authors' `func_merge_map`: keys in both get the de-duplicated union (sorted here: theirs is set order)."""
    merged: dict[str, list[str]] = {}
    for key in list(map1) + list(map2):
        if key in map1 and key in map2:
            merged[key] = sorted(set(map1[key] + map2[key]))
        else:
            merged[key] = map1[key] if key in map1 else map2[key]
    return merged


def read_raw_mapping(path: Path, wheel_words: set[str]) -> dict[str, list[str]]:
    """Base word -> wheel words from synonym.xlsx, eight runs merged (authors' `read_candidate_synonym_merge`)."""
    rows = _read_rows(path)
    merged: dict[str, list[str]] | None = None
    for run in SYNONYM_RUNS:
        label2wheel: dict[str, list[str]] = {}
        for row in rows:
            word = row.get(f"word_{run}")
            if word is None:
                raise UserError(f"emotion-wheel table {path}: a row has no word_{run}; {_hint()}")
            raw = word.strip().lower()
            if raw not in wheel_words:
                raise UserError(f"emotion-wheel table {path}: word_{run} {raw!r} is on no wheel; {_hint()}")
            label2wheel.setdefault(raw, []).append(raw)
            for synonym in _labels(row.get(f"synonym_{run}")):
                label2wheel.setdefault(synonym.strip().lower(), []).append(raw)
        merged = label2wheel if merged is None else _merge_map(merged, label2wheel)
    return merged or {}


def read_format_mapping(path: Path) -> dict[str, list[str]]:
    """Surface form -> base words from format.csv; each base word maps to itself too (authors' `read_format2raws`)."""
    format2raws: dict[str, list[str]] = {}
    for row in _read_rows(path):
        if "name" not in row or "format" not in row:
            raise UserError(f"emotion-wheel table {path} needs columns name,format; {_hint()}")
        raw = row["name"] or ""
        for item in _labels(row["format"]):
            format2raws.setdefault(item, []).append(raw)
        format2raws.setdefault(raw, []).append(raw)
    return format2raws


# ---------------------------------------------------------------- the wheel


def _wheel_name(wheel: str | int) -> str:
    name = f"wheel{wheel}" if isinstance(wheel, int) else wheel
    if name not in WHEELS:
        raise ValueError(f"unknown wheel {wheel!r}; expected one of {', '.join(WHEELS)}")
    return name


def _level_name(level: str | int) -> str:
    name = f"level{level}" if isinstance(level, int) else level
    if name not in LEVELS:
        raise ValueError(f"unknown level {level!r}; expected 1 or 2")
    return name


class EmotionWheel:
    """The three mappings, built once from a folder of the authors' tables."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        wheels = {name: read_wheel_to_map(self.folder / f"{name}.xlsx") for name in WHEELS}
        words: set[str] = set()
        for tree in wheels.values():
            for level1, children in tree.items():
                words.add(level1)
                for level2, level3s in children.items():
                    words.add(level2)
                    words.update(level3s)
        self.format_mapping = read_format_mapping(self.folder / "format.csv")
        self.raw_mapping = read_raw_mapping(self.folder / "synonym.xlsx", words)
        self.wheel_map_whole = {name: {level: wheel_cluster(tree, level) for level in LEVELS} for name, tree in wheels.items()}
        self.file_sha256 = {name: sha256_file(str(self.folder / name)) for name in FILE_SHA256}

    def mappings(self) -> dict[str, Any]:
        """The compiled mappings in the layout of the authors' `wheel_mapping.npz`."""
        return {"format_mapping": self.format_mapping, "raw_mapping": self.raw_mapping, "wheel_map_whole": self.wheel_map_whole}

    def table_set(self) -> TableSet | None:
        """The pinned set these tables are byte for byte, or None for other tables."""
        return next((t for t in TABLE_SETS.values() if self.file_sha256 == t.sha256), None)

    def origin(self) -> str:
        """Where the tables came from plus a hash over all of them, for provenance fields and reports."""
        combined = _sha256("".join(f"{name} {sha}\n" for name, sha in self.file_sha256.items()).encode())[:12]
        tables = self.table_set()
        if tables is not None:
            return f"{tables.label}@{tables.commit[:7]} sha256:{combined}"
        pinned = " or ".join(f"{t.label}@{t.commit[:7]}" for t in TABLE_SETS.values())
        return f"local tables (not {pinned}) sha256:{combined}"

    def base_word(self, label: str, prefer_self: bool = True) -> str | None:
        """The base word of a surface form; None when unknown.

        A label that is itself a base word stays itself ("happy", not "happiness"); other surface forms
        take the alphabetically first of their base words, the authors' case1 rule. With
        `prefer_self=False` every label follows case1 exactly (`func_backward_case1`).
        """
        clean = label.lower().strip()
        bases = self.format_mapping.get(clean)
        if not bases:
            return None
        return clean if prefer_self and clean in bases else sorted(bases)[0]

    def category(self, label: str, wheel: str | int, level: str | int) -> str | None:
        """The label's category on one wheel (authors' case3 and its alphabetical tie rule); None when it has none."""
        wheel_map = self.wheel_map_whole[_wheel_name(wheel)][_level_name(level)]
        bases = self.format_mapping.get(label.lower().strip())
        if not bases:
            return None
        candidates = sorted(word for base in bases for word in self.raw_mapping.get(base, ()))
        for word in candidates:
            if word in wheel_map:
                return wheel_map[word]
        return None

    def normalise(self, labels: Iterable[str], keep_unknown: bool = False) -> list[str]:
        """Labels as base words, first-seen order, no repeats; unknown labels dropped as the metric drops them (or kept lowercased)."""
        out: list[str] = []
        for label in labels:
            clean = label.lower().strip()
            base = self.base_word(clean)
            word = base if base is not None else (clean if keep_unknown and clean else None)
            if word is not None and word not in out:
                out.append(word)
        return out

    def categories(self, labels: Iterable[str], wheel: str | int, level: str | int) -> set[str]:
        """The set of categories the labels fall in on one wheel and level; labels without one are dropped."""
        found = (self.category(label, wheel, level) for label in labels)
        return {c for c in found if c is not None}

    def wheel_categories(self, labels: Iterable[str]) -> list[dict[str, Any]]:
        """Level-1 and level-2 categories on each of the five wheels, sorted: the record's `wheel` field."""
        labels = list(labels)
        return [{"wheel": w, "level1": sorted(self.categories(labels, w, 1)), "level2": sorted(self.categories(labels, w, 2))} for w in WHEELS]


_LOADED: dict[Path, EmotionWheel] = {}
_LOCK = threading.Lock()


def load_wheel(wheel_dir_arg: str | None = None) -> EmotionWheel:
    """The wheel for `--wheel-dir` (or the download cache), built once per process and folder."""
    folder = wheel_dir(wheel_dir_arg).resolve()
    with _LOCK:
        if folder not in _LOADED:
            _LOADED[folder] = EmotionWheel(folder)
        return _LOADED[folder]
