"""Small MER-UniBench layouts written by tests: emotion-wheel tables in both pinned shapes, MERBench label
npz files, the AffectGPT authors' result npz files and the corpora's own tables.

The two wheel-table sets differ only in format.csv, as AffectGPT@d961cab's differs from MERTools@89120b7's:
in the `affectgpt` set `fearless` also lists its root `fear`, so the gold word `fear` gets the base words
fear and fearless, and the alphabetical tie rule picks fearless's wheel word `courageous` (powerful) on
wheels 2 to 5 (wheel1 has no `courageous`: there both sets give `fearful`, scared).

    wheel word  level1 / level2        base words that map to it (synonym.xlsx)
    cheerful    happy / joyful         happy, joy
    gloomy      sad / lonely           sad, sadness
    irritated   mad / furious          angry, anger
    fearful     scared / afraid        fear
    anxious     scared / afraid        anxious, worried
    courageous  powerful / brave       fearless, bold      (wheels 2-5 only)
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
from openpyxl import Workbook

WHEEL_ROWS = [
    ("happy", "joyful", "cheerful"),
    ("sad", "lonely", "gloomy"),
    ("mad", "furious", "irritated"),
    ("scared", "afraid", "fearful"),
    (None, None, "anxious"),  # blank cells repeat the value above, as in the authors' sheets
]
POWERFUL = ("powerful", "brave", "courageous")
SYNONYMS = {
    "cheerful": "happy, joy",
    "gloomy": "sad, sadness",
    "irritated": "angry, anger",
    "fearful": "fear",
    "anxious": "worried",
    "courageous": "fearless, bold",
}
FORMATS = {
    "anger": "angered,angers",
    "angry": "angrily",
    "anxious": "anxiously",
    "bold": "boldly",
    "fear": "fears,feared",
    "fearless": "fearlessly,fearlessness",
    "happy": "happily",
    "joy": "joyful,joys",
    "sad": "sadly",
    "sadness": "sadnesses",
    "worried": "worriedly",
}
AFFECTGPT_FEARLESS = "fearlessly,fearlessness,fears,feared,fear"  # the "-less" row listing its root, as in AffectGPT's format.csv


def _xlsx(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    book = Workbook()
    sheet = book.active
    sheet.append(header)
    for row in rows:
        sheet.append(row)
    book.save(path)


def write_wheel_tables(folder: Path, affectgpt: bool) -> Path:
    """format.csv, synonym.xlsx and wheel1..5.xlsx in the authors' layout; `affectgpt`: its format.csv."""
    folder.mkdir(parents=True)
    formats = {**FORMATS, "fearless": AFFECTGPT_FEARLESS} if affectgpt else FORMATS
    with open(folder / "format.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["name", "format"])
        w.writerows(sorted(formats.items()))
    runs = range(1, 9)
    header = [f"{kind}_run{i}" for i in runs for kind in ("word", "synonym")]
    _xlsx(folder / "synonym.xlsx", header, [[cell for _ in runs for cell in (word, syn)] for word, syn in SYNONYMS.items()])
    for n in range(1, 6):
        rows = [list(r) for r in WHEEL_ROWS] + ([list(POWERFUL)] if n > 1 else [])
        _xlsx(folder / f"wheel{n}.xlsx", ["level1", "level2", "level3"], rows)
    return folder


def write_label_npz(path: Path, **corpora: dict[str, dict[str, Any]]) -> Path:
    """A MERBench label file: each corpus a pickled dict name -> {'emo': ..., 'val': ...}, as np.savez stores it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **corpora)  # type: ignore[arg-type]
    return path


def write_result_npz(path: Path, items: dict[str, str]) -> Path:
    """An AffectGPT result file: string arrays filenames and fileitems, as their evaluation code saves them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, filenames=list(items), fileitems=list(items.values()))
    return path


def write_table(path: Path, header: list[str], rows: list[list[Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path
