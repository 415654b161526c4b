"""The MER-UniBench table of `emer evaluate --suite` as text, Markdown or CSV.

Text and Markdown print each run's best score per dataset x 100 in the paper's column order (as the
authors print it, `%.2f` of the score x 100), "missing" where a dataset's files are absent, then which
procedure and which emotion-wheel tables made each column; text adds every checkpoint, the best
marked `*`. CSV has one row per checkpoint (fractions, not percentages) with its procedure and tables.
"""

from __future__ import annotations

import csv
import io
from typing import Any

from emer_builder.transforms.wheel import WHEELS


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    """Aligned columns: the first left-aligned, the others right-aligned."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))).rstrip() for r in [header, *rows]]


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.2f}"


def _cell(entry: dict[str, Any]) -> str:
    if entry["status"] == "missing":
        return "missing"
    return _pct(entry["best"]["score"]) if entry.get("best") else "not scored"


def _rows(result: dict[str, Any]) -> list[list[str]]:
    return [[r["run"], *(_cell(r["datasets"][c]) for c in result["columns"]), _pct(r["mean"])] for r in result["runs"]]


def _legend(result: dict[str, Any]) -> list[str]:
    """One line per procedure: the columns it scores and, for the wheel procedures, the tables that made them."""
    by_procedure: dict[str, list[str]] = {}
    for column, procedure in result["procedures"].items():
        by_procedure.setdefault(procedure, []).append(column)
    lines = []
    for procedure, columns in by_procedure.items():
        uses_wheel = not procedure.startswith("sentiment")
        tables = f"; emotion-wheel tables {result['wheel_tables'] or 'not loaded (nothing scored)'}" if uses_wheel else ""
        lines.append(f"{', '.join(columns)}: {procedure}{tables}")
    return lines


def _header(result: dict[str, Any]) -> list[str]:
    return ["run", *result["columns"], "mean"]


def _detail(result: dict[str, Any]) -> list[str]:
    """Every checkpoint of every scored dataset, the best marked `*`."""
    lines: list[str] = []
    for run in result["runs"]:
        for column, entry in run["datasets"].items():
            if entry["status"] == "missing":
                continue
            tables = f"; tables {entry['tables']}" if entry.get("tables") else ""
            lines += ["", f"{column}, run {run['run']}: {entry['procedure']}{tables}; gt {entry['gt']} ({entry['gt_samples']} samples)"]
            kind = entry["metric"]
            if kind == "hit_rate":
                header = ["  checkpoint", "hit rate", *WHEELS, "missing"]
            elif kind == "f":
                header = ["  checkpoint", "F", "P", "R", "missing"]
            else:
                header = ["  checkpoint", "weighted F1", "accuracy", "scored", "missing", "sentiment from"]
            rows, unscored = [], []
            for c in entry["checkpoints"]:
                mark = "* " if c.get("best") else "  "
                if c["score"] is None:
                    unscored.append(f"  {c['checkpoint']}: not scored: {c['reason']}")
                    continue
                missing = str(c["counts"]["missing_predictions"])
                if kind == "hit_rate":
                    rows.append([mark + c["checkpoint"], _pct(c["score"]), *(_pct(c["wheels"][w]) for w in WHEELS), missing])
                elif kind == "f":
                    rows.append([mark + c["checkpoint"], _pct(c["score"]), _pct(c["precision"]), _pct(c["recall"]), missing])
                else:
                    rows.append([mark + c["checkpoint"], _pct(c["score"]), _pct(c["accuracy"]), str(c["scored"]), missing, c["sentiment_source"]])
            lines += (_table(header, rows) if rows else []) + unscored
    return lines


def format_suite(result: dict[str, Any]) -> str:
    """The table, the procedures and tables behind each column, then every checkpoint."""
    lines = [
        f"suite {result['suite']}: best checkpoint of each run per dataset, score x 100, in the paper's column order",
        f"pred: {result['pred_dir']}",
        f"gt: {result['gt_dir']}",
        "",
        *_table(_header(result), _rows(result)),
        "",
        *_legend(result),
        "mean: of the nine best scores, only when every dataset is scored",
    ]
    return "\n".join(lines + _detail(result))


def format_suite_markdown(result: dict[str, Any]) -> str:
    """The table as a Markdown table, with the procedures and tables as a list under it."""
    header = _header(result)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in _rows(result)]
    lines += ["", *(f"- {line}" for line in _legend(result)), "- mean: of the nine best scores, only when every dataset is scored"]
    return "\n".join(lines)


CSV_COLUMNS = (
    "run",
    "dataset",
    "status",
    "procedure",
    "wheel_tables",
    "checkpoint",
    "best",
    "score",
    "accuracy",
    "precision",
    "recall",
    "missing_predictions",
    "sentiment_from",
    "reason",
)


def format_suite_csv(result: dict[str, Any]) -> str:
    """One row per checkpoint (a missing dataset: one row without a checkpoint), scores as fractions."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for run in result["runs"]:
        for column, entry in run["datasets"].items():
            if entry["status"] == "missing":
                writer.writerow([run["run"], column, "missing", result["procedures"][column], "", "", "", "", "", "", "", "", "", entry["reason"]])
                continue
            for c in entry["checkpoints"]:
                writer.writerow(
                    [
                        run["run"],
                        column,
                        "scored" if c["score"] is not None else "not scored",
                        entry["procedure"],
                        entry.get("tables") or "",
                        c["checkpoint"],
                        "yes" if c.get("best") else "",
                        *("" if c.get(k) is None else repr(float(c[k])) for k in ("score", "accuracy", "precision", "recall")),
                        c["counts"]["missing_predictions"] if "counts" in c else "",
                        c.get("sentiment_source", ""),
                        c.get("reason", ""),
                    ]
                )
    return buf.getvalue()
