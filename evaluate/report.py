"""Plain-text reports of `emer evaluate`: one result in detail, or one row per prediction file."""

from __future__ import annotations

from typing import Any

from emer_builder.transforms.wheel import WHEELS

TASK_TITLES = {
    "discrete": "discrete emotions: emotion-wheel hit rate",
    "sentiment": "sentiment: positive vs negative",
    "openset": "open-set labels: emotion-wheel set metric",
}


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def fmt(row: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))).rstrip()

    return [fmt(header), *[fmt(r) for r in rows]]


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def format_report(result: dict[str, Any]) -> str:
    """One result: counts, then one aligned table per metric."""
    c = result["counts"]
    empty = {"sentiment": "scored as neutral", "discrete": "scored as misses"}.get(result.get("task", ""), "scored as empty")
    lines = [
        f"task: {TASK_TITLES.get(result.get('task', ''), result.get('task', ''))}",
        f"gt: {result['gt']}",
        f"pred: {result['pred']}",
        f"samples: gt {c['gt']}, pred {c['pred']}, missing predictions {c['missing_predictions']} ({empty}), extra predictions {c['extra_predictions']} (ignored)",
    ]
    if "hit_rate" in result:
        h = result["hit_rate"]
        rows = [[name, _num(s["hit_rate"]), str(s["hits"]), str(s["scored"]), str(s["skipped"])] for name, s in h["wheels"].items()]
        rows.append(["mean", _num(h["hit_rate"]), "", "", ""])
        lines += ["", f"hit rate: gold level-1 centre among the predicted centres ({h['predictions']}; tables: {h['origin']})"]
        lines += _table(["", "hit rate", "hits", "scored", "skipped"], rows)
        lines.append("skipped: the gold word maps to no emotion on that wheel (neutral, or a word the tables do not know)")
    if "sentiment" in result:
        s = result["sentiment"]
        lines += ["", f"sentiment: gold != 0 kept, gold and prediction binarised as > 0 (predictions: {s['predictions']})"]
        lines += _table(
            ["", "weighted F1", "accuracy", "scored", "dropped (gold 0)"],
            [["sentiment", _num(s["weighted_f1"]), _num(s["accuracy"]), str(s["scored"]), str(s["dropped_gold_zero"])]],
        )
        notes = []
        if s.get("unrecognised"):
            notes.append(f"{s['unrecognised']} predictions were not positive/negative/neutral (scored as neutral)")
        if s.get("llm_failures"):
            notes.append(f"{s['llm_failures']} label lists got no answer from the endpoint (scored as neutral)")
        if "llm" in s:
            llm = s["llm"]
            reads = ", ".join(f"{k.removeprefix('read_')} {v}" for k, v in llm.items() if k.startswith("read_") and v)
            notes.append(f"endpoint: {llm['cache_hits']} answers from the cache, {llm['cache_misses']} asked, {llm['calls']} requests" + (f"; read as {reads}" if reads else ""))
        lines += notes
    if "emotion_wheel" in result:
        ew = result["emotion_wheel"]
        rows = []
        for level in ("level1", "level2"):
            for name, s in ew[level]["wheels"].items():
                rows.append([f"{level} {name}", _num(s["f"]), _num(s["p"]), _num(s["r"]), str(s["evaluated"]), str(s["skipped"])])
            rows.append([f"{level} mean", _num(ew[level]["f"]), _num(ew[level]["p"]), _num(ew[level]["r"]), "", ""])
        lines += ["", f"emotion-wheel metric (tables: {ew['origin']})", *_table(["", "F", "P", "R", "evaluated", "skipped"], rows)]
    if "mer2024" in result:
        m = result["mer2024"]
        lines += ["", f"MER2024 set-level metric (synonyms: {m['synonyms']})"]
        lines += _table(
            ["", "accuracy", "recall", "avg", "evaluated", "skipped"],
            [["set", f"{m['accuracy']:.4f}", f"{m['recall']:.4f}", f"{m['avg']:.4f}", str(m["evaluated"]), str(m["skipped_empty_gt"] + m["without_synonyms"])]],
        )
    if "discrete" in result:
        d = result["discrete"]
        lines += ["", "discrete labels"]
        lines += _table(
            ["", "accuracy", "weighted F1", "evaluated", "missing"],
            [["discrete", f"{d['accuracy']:.4f}", f"{d['weighted_f1']:.4f}", str(d["evaluated"]), str(d["missing_predictions"])]],
        )
    return "\n".join(lines)


def _summary_row(result: dict[str, Any]) -> list[str]:
    c = result["counts"]
    task = result["task"]
    if task == "discrete":
        h = result["hit_rate"]
        return [
            result["pred"],
            _num(h["hit_rate"]),
            *(_num(h["wheels"][w]["hit_rate"]) for w in WHEELS),
            "/".join(str(w["scored"]) for w in h["wheels"].values()),
            str(c["missing_predictions"]),
        ]
    if task == "sentiment":
        s = result["sentiment"]
        return [result["pred"], _num(s["weighted_f1"]), _num(s["accuracy"]), str(s["scored"]), str(s["dropped_gold_zero"]), str(c["missing_predictions"])]
    ew = result.get("emotion_wheel")
    if ew is None:
        m = result.get("mer2024", {})
        return [result["pred"], "-", "-", "-", "-", _num(m.get("avg")), str(c["missing_predictions"])]
    return [
        result["pred"],
        _num(ew["level1"]["f"]),
        _num(ew["level1"]["p"]),
        _num(ew["level1"]["r"]),
        _num(ew["level2"]["f"]),
        _num(result.get("mer2024", {}).get("avg")),
        str(c["missing_predictions"]),
    ]


_SUMMARY_HEADERS = {
    "discrete": ["pred", "hit rate", *WHEELS, "scored (wheel1..5)", "missing"],
    "sentiment": ["pred", "weighted F1", "accuracy", "scored", "dropped (gold 0)", "missing"],
    "openset": ["pred", "L1 F", "L1 P", "L1 R", "L2 F", "MER2024 avg", "missing"],
}


def format_summary(results: list[dict[str, Any]]) -> str:
    """Several prediction files against one ground truth: one row each, one table per task."""
    if len(results) == 1:
        return format_report(results[0])
    lines = [f"gt: {results[0]['gt']}"]
    for task in ("discrete", "sentiment", "openset"):
        rows = [_summary_row(r) for r in results if r["task"] == task]
        if rows:
            lines += ["", f"task: {TASK_TITLES[task]}", *_table(_SUMMARY_HEADERS[task], rows)]
    return "\n".join(lines)
