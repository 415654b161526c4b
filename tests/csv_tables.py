"""Small CSV tables written by tests (ground truth, predictions, labels)."""

import csv
from pathlib import Path


def write_csv(path: Path, header: list[str], rows: list[list[object]]) -> str:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return str(path)
