"""`emer evaluate`: score predicted emotion labels against ground truth the way the EMER authors do.

Metrics, each as in the authors' code:

- Emotion-wheel metric of OV-MER / MER2025-26 (zeroQiaoba/MERTools
  `MER2026/MER2026_Track2/my_affectgpt/evaluation/wheel.py`: `calculate_openset_overlap_rate`,
  `wheel_metric_calculation`). For each wheel (wheel1..5) and level (1, 2) both label sets are mapped
  to wheel categories (`transforms.wheel`), labels not in the tables dropped; a sample whose mapped
  ground truth is empty is skipped; otherwise P = |G∩P|/|P| and R = |G∩P|/|G| (both 0 for an empty
  mapped prediction). P and R are averaged over the samples, F = 2PR/(P+R) (0 when P+R = 0), and
  [F, P, R] is averaged over the five wheels.
- MER2024 open-vocabulary set accuracy / recall (MERTools `MER2024/main-ov.py`,
  `calculate_openset_overlap_rate_mer2024`): labels are replaced by their synonym group's first
  member, then the same per-sample P and R are averaged; "avg" is their mean. Needs synonym groups.
- Discrete labels: accuracy and weighted F1 (the MER2023 discrete metrics; sklearn's `average="weighted"`).

A sample in the ground truth without a prediction counts as an empty prediction.
"""

from __future__ import annotations

import ast
import csv
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

from emer_builder.core.errors import UserError

NAME_COLUMNS = ("name", "names", "key", "video_id")
LABEL_COLUMNS = ("labels", "openset", "open_vocab_labels", "ov_labels")
DISCRETE_COLUMNS = ("discrete", "emotions", "emotion", "discrete_label", "label")
GROUP_COLUMNS = ("groups", "synonyms", "mapping")


class MissingColumn(UserError):
    """The file has no column for the kind of label asked for."""


# ---------------------------------------------------------------- label strings


def split_labels(value: Any) -> list[str]:
    """A label cell -> labels: a Python-style list string ("['a', 'b']") or a comma-separated string ("a, b").

    List strings are parsed with `ast.literal_eval` (literals only, never code), so a label may hold a
    comma or an apostrophe; a bracketed string that is not a valid literal ("[a, b]") is split the way
    the authors' `string_to_list` splits it (on quotes and commas).
    """
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        items = [str(v) for v in value if v is not None]
    else:
        text = str(value).strip()
        if not text:
            return []
        if text.startswith("[") and text.endswith("]"):
            try:
                parsed = ast.literal_eval(text)
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                parsed = None
            if isinstance(parsed, (list, tuple)) and all(isinstance(v, str) for v in parsed):
                items = list(parsed)
            else:
                items = re.split("['\",]", text[1:-1])
        else:
            items = text.split(",")
    return [item.strip() for item in items if item.strip()]


def split_groups(value: Any) -> list[list[str]]:
    """A synonym-group cell ("[['a', 'b'], ['c']]") -> groups; literal lists only, else the authors' `listlist_to_list` split."""
    if isinstance(value, (list, tuple)):
        return [split_labels(g) for g in value if isinstance(g, (list, tuple))]
    text = str(value or "").strip()
    if not text:
        return []
    try:
        parsed = ast.literal_eval(text) if text.startswith("[") else None
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        parsed = None
    if isinstance(parsed, (list, tuple)) and all(isinstance(g, (list, tuple)) for g in parsed):
        return [split_labels(g) for g in parsed]
    groups = [g for g in re.split(r"[\[\]]", text) if g.strip() not in ("", ",")]
    return [[m.strip() for m in re.split("['\"]", g) if m.strip() not in ("", ",")] for g in groups]


# ---------------------------------------------------------------- readers


def _parse_spec(spec: str, split: str | None) -> tuple[Path, str | None]:
    """`OUT:test` -> (OUT, "test") when OUT is a folder; anything else is a path."""
    path = Path(spec)
    if not path.exists() and ":" in spec:
        head, tail = spec.rsplit(":", 1)
        if tail and Path(head).is_dir():
            if split is not None and split != tail:
                raise UserError(f"{spec}: split {tail!r} conflicts with split={split!r}")
            return Path(head), tail
    if not path.exists():
        raise UserError(f"{spec}: no such file or folder")
    return path, split


def _pick(columns: list[str], wanted: tuple[str, ...], what: str, where: str, error: type[UserError] = MissingColumn) -> str:
    lower = {c.strip().lower(): c for c in columns if c is not None}
    for name in wanted:
        if name in lower:
            return lower[name]
    raise error(f"{where}: no {what} column (looked for {', '.join(wanted)}; found {', '.join(c for c in columns if c) or 'none'})")


def _name(value: Any, column: str) -> str:
    """A sample name; a dataset `key` column gives its last `__` part, the name a built dataset uses."""
    text = str(value).strip()
    return text.split("__")[-1] if column.strip().lower() == "key" else text


def _add(out: dict[str, Any], name: str, value: Any, where: str) -> None:
    if name in out:
        raise UserError(f"{where}: sample {name!r} appears more than once")
    out[name] = value


def _read_rows(path: Path) -> tuple[list[str], list[dict[str, Any]]]:
    """Columns and rows of a CSV or JSONL file."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            with open(path, newline="", encoding="utf-8-sig") as f:
                reader = csv.DictReader(f)
                rows = list(reader)
                return list(reader.fieldnames or []), rows
        if suffix in (".jsonl", ".ndjson"):
            rows = []
            with open(path, encoding="utf-8") as f:
                for number, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise UserError(f"{path}:{number}: not JSON ({e.msg})") from None
                    if not isinstance(row, dict):
                        raise UserError(f"{path}:{number}: expected a JSON object per line")
                    rows.append(row)
            columns = list(dict.fromkeys(k for row in rows for k in row))
            return columns, rows
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text") from None
    except csv.Error as e:
        raise UserError(f"{path}: not a valid CSV file ({e})") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror})") from None
    raise UserError(f"{path}: expected a .csv or .jsonl file, or a built dataset folder")


def _read_dataset(root: Path, split: str | None) -> list[dict[str, Any]]:
    """(name, explanation) rows of a built dataset, optionally one split."""
    import pyarrow.parquet as pq

    if not (root / "manifest.json").is_file():
        raise UserError(f"{root}: a folder without manifest.json is not a built dataset")
    files = sorted((root / "data").glob("*.parquet"))
    if not files:
        raise UserError(f"{root}: no data/*.parquet files")
    rows: list[dict[str, Any]] = []
    splits: set[str] = set()
    for path in files:
        try:
            table = pq.read_table(path, columns=["key", "split", "explanation"])
        except Exception as e:  # pyarrow raises several types for a damaged or foreign file
            raise UserError(f"{path}: cannot read key, split and explanation ({e})") from None
        for row in table.to_pylist():
            splits.add(row["split"])
            if split is None or row["split"] == split:
                rows.append({"name": row["key"].split("__")[-1], "explanation": row["explanation"] or {}})
    if split is not None and split not in splits:
        raise UserError(f"{root}: no records in split {split!r} (splits: {', '.join(sorted(splits))})")
    return rows


def read_labels(spec: str, split: str | None = None) -> dict[str, list[str]]:
    """name -> open-vocabulary labels from a CSV, a JSONL or a built dataset folder (`OUT` or `OUT:split`)."""
    path, split = _parse_spec(spec, split)
    out: dict[str, list[str]] = {}
    if path.is_dir():
        rows = _read_dataset(path, split)
        for row in rows:
            ov = row["explanation"].get("open_vocab_labels") or {}
            _add(out, row["name"], split_labels(ov.get("labels")), spec)
        if rows and all(not (r["explanation"].get("open_vocab_labels") or {}).get("labels") for r in rows):
            raise MissingColumn(f"{spec}: no record has explanation.open_vocab_labels.labels")
        return out
    columns, rows = _read_rows(path)
    name_col = _pick(columns, NAME_COLUMNS, "name", spec, UserError)
    label_col = _pick(columns, LABEL_COLUMNS, "open-vocabulary label", spec)
    for row in rows:
        if row.get(name_col) in (None, ""):
            continue
        _add(out, _name(row[name_col], name_col), split_labels(row.get(label_col)), spec)
    return out


def read_discrete(spec: str, split: str | None = None) -> dict[str, str]:
    """name -> one discrete label (`explanation.discrete_label.label`, or a CSV/JSONL discrete/emotions column); blanks left out."""
    path, split = _parse_spec(spec, split)
    out: dict[str, str] = {}
    if path.is_dir():
        for row in _read_dataset(path, split):
            label = (row["explanation"].get("discrete_label") or {}).get("label")
            if label is not None and str(label).strip():
                _add(out, row["name"], str(label).strip(), spec)
        if not out:
            raise MissingColumn(f"{spec}: no record has explanation.discrete_label.label")
        return out
    columns, rows = _read_rows(path)
    name_col = _pick(columns, NAME_COLUMNS, "name", spec, UserError)
    label_col = _pick(columns, DISCRETE_COLUMNS, "discrete label", spec)
    for row in rows:
        name, label = row.get(name_col), row.get(label_col)
        if name in (None, "") or label is None or not str(label).strip():
            continue
        _add(out, _name(name, name_col), str(label).strip(), spec)
    return out


def read_synonyms(path_str: str) -> tuple[dict[str, dict[str, str]] | None, dict[str, str] | None]:
    """Synonym groups: (per-sample label -> representative, or None) and (one label -> representative map for all samples, or None).

    Per sample (the authors' form, GPT groups made per sample): CSV/JSONL columns name + groups, groups as
    "[['happy', 'joyful'], ['sad']]" or a JSON list of lists. For all samples: columns label + group (a group id).
    Each label stands for its group: the group's first member (authors' rule) or the group id.
    """
    path = Path(path_str)
    if not path.is_file():
        raise UserError(f"--synonyms {path_str}: no such file")
    columns, rows = _read_rows(path)
    lower = [c.strip().lower() for c in columns if c]
    if any(c in lower for c in GROUP_COLUMNS):
        name_col = _pick(columns, NAME_COLUMNS, "name", path_str, UserError)
        group_col = _pick(columns, GROUP_COLUMNS, "groups", path_str)
        per_sample: dict[str, dict[str, str]] = {}
        for row in rows:
            if row.get(name_col) in (None, ""):
                continue
            mapping: dict[str, str] = {}
            for group in split_groups(row.get(group_col)):
                members = [m.lower().strip() for m in group if m.strip()]
                for member in members:
                    mapping[member] = members[0]  # a later group wins, as in the authors' loop
            _add(per_sample, _name(row[name_col], name_col), mapping, path_str)
        return per_sample, None
    label_col = _pick(columns, ("label", "word"), "label", path_str)
    group_col = _pick(columns, ("group", "group_id", "cluster"), "group", path_str)
    shared: dict[str, str] = {}
    for row in rows:
        label, group = row.get(label_col), row.get(group_col)
        if label in (None, "") or group in (None, ""):
            continue
        shared[str(label).lower().strip()] = f"<group {group}>"
    return None, shared


# ---------------------------------------------------------------- metrics


def set_precision_recall(pairs: list[tuple[set[str], set[str]]]) -> dict[str, Any]:
    """Dataset-mean P and R over (gt, pred) set pairs; pairs with an empty gt are skipped (authors' rule)."""
    precision, recall = [], []
    for gt, pred in pairs:
        if not gt:
            continue
        hit = len(gt & pred)
        precision.append(hit / len(pred) if pred else 0.0)
        recall.append(hit / len(gt) if pred else 0.0)
    p = sum(precision) / len(precision) if precision else 0.0
    r = sum(recall) / len(recall) if recall else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return {"f": f, "p": p, "r": r, "evaluated": len(precision), "skipped": len(pairs) - len(precision)}


def _normal(labels: list[str]) -> list[str]:
    return [label.lower().strip() for label in labels]


def wheel_metric(name2gt: dict[str, list[str]], name2pred: dict[str, list[str]], wheel: Any, level: int) -> dict[str, Any]:
    """[F, P, R] averaged over the five wheels at one level, with each wheel's own scores and counts."""
    from emer_builder.transforms.wheel import WHEELS

    per_wheel = {}
    for name in WHEELS:
        pairs = [(wheel.categories(_normal(gt), name, level), wheel.categories(_normal(name2pred.get(key, [])), name, level)) for key, gt in name2gt.items()]
        per_wheel[name] = set_precision_recall(pairs)
    mean = {k: sum(s[k] for s in per_wheel.values()) / len(per_wheel) for k in ("f", "p", "r")}
    return {**mean, "wheels": per_wheel}


def mer2024_metric(name2gt: dict[str, list[str]], name2pred: dict[str, list[str]], per_sample: dict[str, dict[str, str]] | None, shared: dict[str, str] | None) -> dict[str, Any]:
    """MER2024 set-level accuracy and recall after synonym grouping; with per-sample groups only samples that have groups count."""
    pairs, without = [], 0
    for key, gt in name2gt.items():
        if per_sample is not None:
            if key not in per_sample:
                without += 1
                continue
            mapping = per_sample[key]
        else:
            mapping = shared or {}
        gt_set = {mapping.get(x, x) for x in _normal(gt) if x}
        pred_set = {mapping.get(x, x) for x in _normal(name2pred.get(key, [])) if x}
        pairs.append((gt_set, pred_set))
    scores = set_precision_recall(pairs)
    return {
        "accuracy": scores["p"],
        "recall": scores["r"],
        "avg": (scores["p"] + scores["r"]) / 2,
        "evaluated": scores["evaluated"],
        "skipped_empty_gt": scores["skipped"],
        "without_synonyms": without,
    }


def discrete_metric(name2gt: dict[str, str], name2pred: dict[str, str]) -> dict[str, Any]:
    """Accuracy and support-weighted F1 over the ground-truth samples; a missing prediction is wrong."""
    truth = [name2gt[k].lower().strip() for k in name2gt]
    guess = [name2pred.get(k, "").lower().strip() for k in name2gt]
    n = len(truth)
    if n == 0:
        return {"accuracy": 0.0, "weighted_f1": 0.0, "evaluated": 0, "missing_predictions": 0}
    correct = Counter(t for t, g in zip(truth, guess, strict=True) if t == g)
    support, predicted = Counter(truth), Counter(guess)
    weighted = 0.0
    for label, count in support.items():
        tp = correct[label]
        p = tp / predicted[label] if predicted[label] else 0.0
        r = tp / count
        weighted += count * (2 * p * r / (p + r) if p + r else 0.0)
    return {
        "accuracy": sum(correct.values()) / n,
        "weighted_f1": weighted / n,
        "evaluated": n,
        "missing_predictions": sum(1 for k in name2gt if k not in name2pred),
    }


# ---------------------------------------------------------------- evaluate


def _counts(gt: dict[str, Any], pred: dict[str, Any]) -> dict[str, int]:
    return {
        "gt": len(gt),
        "pred": len(pred),
        "missing_predictions": sum(1 for k in gt if k not in pred),
        "extra_predictions": sum(1 for k in pred if k not in gt),
    }


def _read_side(spec: str) -> tuple[dict[str, list[str]] | None, dict[str, str] | None]:
    try:
        labels: dict[str, list[str]] | None = read_labels(spec)
    except MissingColumn:
        labels = None
    try:
        discrete: dict[str, str] | None = read_discrete(spec)
    except MissingColumn:
        discrete = None
    return labels, discrete


def _evaluate_read(
    gt_spec: str,
    pred_spec: str,
    sides: tuple[tuple[Any, Any], tuple[Any, Any]],
    wheel: Any,
    synonyms: str | None,
) -> dict[str, Any]:
    (gt_labels, gt_discrete), (pred_labels, pred_discrete) = sides
    result: dict[str, Any] = {"gt": gt_spec, "pred": pred_spec}
    open_vocab = gt_labels is not None and pred_labels is not None
    if open_vocab:
        result["counts"] = _counts(gt_labels, pred_labels)
        if wheel is not None:
            result["emotion_wheel"] = {"origin": wheel.origin(), "level1": wheel_metric(gt_labels, pred_labels, wheel, 1), "level2": wheel_metric(gt_labels, pred_labels, wheel, 2)}
        if synonyms is not None:
            result["mer2024"] = {"synonyms": synonyms, **mer2024_metric(gt_labels, pred_labels, *read_synonyms(synonyms))}
    elif synonyms is not None:
        raise UserError("--synonyms needs open-vocabulary labels in both GT and PRED")
    if gt_discrete is not None and pred_discrete is not None:
        result["discrete"] = discrete_metric(gt_discrete, pred_discrete)
        result.setdefault("counts", _counts(gt_discrete, pred_discrete))
    if "counts" not in result:
        have = {spec: [k for k, v in (("open-vocabulary labels", lab), ("discrete labels", dis)) if v is not None] for spec, lab, dis in ((gt_spec, gt_labels, gt_discrete), (pred_spec, pred_labels, pred_discrete))}
        said = "; ".join(f"{spec} has {' and '.join(kinds) or 'no labels'}" for spec, kinds in have.items())
        raise UserError(f"nothing to compare: {said}")
    return result


def evaluate(gt_spec: str, pred_spec: str, wheel: Any = None, synonyms: str | None = None) -> dict[str, Any]:
    """All metrics both sides allow, as a JSON-able dict; `wheel` is a `transforms.wheel.EmotionWheel` (None skips the wheel metric)."""
    return _evaluate_read(gt_spec, pred_spec, (_read_side(gt_spec), _read_side(pred_spec)), wheel, synonyms)


def run_evaluate(gt: str, pred: str, wheel_dir: str | None, synonyms: str | None) -> dict[str, Any]:
    """`emer evaluate`: reads both sides, fetches the wheel tables only when open-vocabulary labels are compared."""
    sides = (_read_side(gt), _read_side(pred))
    wheel = None
    if sides[0][0] is not None and sides[1][0] is not None:
        from emer_builder.transforms.wheel import load_wheel

        wheel = load_wheel(wheel_dir)
    return _evaluate_read(gt, pred, sides, wheel, synonyms)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def fmt(row: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))).rstrip()

    return [fmt(header), *[fmt(r) for r in rows]]


def format_report(result: dict[str, Any]) -> str:
    """A plain text report: counts, then one aligned table per metric."""
    c = result["counts"]
    lines = [f"gt: {result['gt']}", f"pred: {result['pred']}", f"samples: gt {c['gt']}, pred {c['pred']}, missing predictions {c['missing_predictions']} (scored as empty), extra predictions {c['extra_predictions']} (ignored)"]
    if "emotion_wheel" in result:
        ew = result["emotion_wheel"]
        rows = []
        for level in ("level1", "level2"):
            for name, s in ew[level]["wheels"].items():
                rows.append([f"{level} {name}", f"{s['f']:.4f}", f"{s['p']:.4f}", f"{s['r']:.4f}", str(s["evaluated"]), str(s["skipped"])])
            rows.append([f"{level} mean", f"{ew[level]['f']:.4f}", f"{ew[level]['p']:.4f}", f"{ew[level]['r']:.4f}", "", ""])
        lines += ["", f"emotion-wheel metric (tables: {ew['origin']})", *_table(["", "F", "P", "R", "evaluated", "skipped"], rows)]
    if "mer2024" in result:
        m = result["mer2024"]
        lines += ["", f"MER2024 set-level metric (synonyms: {m['synonyms']})"]
        lines += _table(["", "accuracy", "recall", "avg", "evaluated", "skipped"], [["set", f"{m['accuracy']:.4f}", f"{m['recall']:.4f}", f"{m['avg']:.4f}", str(m["evaluated"]), str(m["skipped_empty_gt"] + m["without_synonyms"])]])
    if "discrete" in result:
        d = result["discrete"]
        lines += ["", "discrete labels"]
        lines += _table(["", "accuracy", "weighted F1", "evaluated", "missing"], [["discrete", f"{d['accuracy']:.4f}", f"{d['weighted_f1']:.4f}", str(d["evaluated"]), str(d["missing_predictions"])]])
    return "\n".join(lines)
