"""The metrics of `emer evaluate`, each computed as the EMER / AffectGPT authors compute it (pure functions).

- `wheel_metric`: the emotion-wheel set metric of OV-MER / MER2025-26 and of OV-MERD+ in MER-UniBench
  (AffectGPT `my_affectgpt/evaluation/wheel.py`: `calculate_openset_overlap_rate`,
  `wheel_metric_calculation`). For each wheel (wheel1..5) at one level both label sets are mapped to
  wheel categories (`transforms.wheel`), labels not in the tables dropped; a sample whose mapped
  ground truth is empty is skipped; otherwise P = |G∩P|/|P| and R = |G∩P|/|G| (both 0 for an empty
  mapped prediction). P and R are averaged over the samples, F = 2PR/(P+R) (0 when P+R = 0), and
  [F, P, R] is averaged over the five wheels.
- `hit_rate_metric`: MER-UniBench's score of open-vocabulary predictions on discrete emotion sets
  (MER2023, MER2024, MELD, IEMOCAP; `calculate_openset_onehot_hitrate`, `hitrate_metric_calculation`).
  On each wheel the gold word and every predicted word are mapped to their level-1 centre; a sample
  whose gold word maps to nothing is skipped (every `neutral`); a sample is a hit when the gold
  centre is among the predicted centres. Hit rate = hits / scored samples; the figure reported is
  the mean over the five wheels.
- `sentiment_metric`: MER-UniBench's score on sentiment sets (CMU-MOSI, CMU-MOSEI, CH-SIMS, CH-SIMS v2;
  `calculate_dimension_zeroshot`). Samples whose gold value is 0 are dropped; gold and prediction are
  binarised as "> 0"; weighted F1 (sklearn `average="weighted"`) and accuracy.
- `mer2024_metric`: MER2024 open-vocabulary set accuracy / recall (MERTools `MER2024/main-ov.py`,
  `calculate_openset_overlap_rate_mer2024`): labels are replaced by their synonym group's first
  member, then the same per-sample P and R are averaged; "avg" is their mean.
- `discrete_metric`: accuracy and weighted F1 of one predicted word per sample (the MER2023 metrics).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Sequence
from typing import Any

from emer_builder.transforms.wheel import WHEELS, EmotionWheel


def _normal(labels: list[str]) -> list[str]:
    return [label.lower().strip() for label in labels]


def weighted_f1(truth: Sequence[Hashable], guess: Sequence[Hashable]) -> float:
    """F1 per class, averaged with the class's share of `truth` as weight (sklearn's `average="weighted"`);
    a class never predicted has F1 0, a class never true has weight 0."""
    if not truth:
        return 0.0
    correct = Counter(t for t, g in zip(truth, guess, strict=True) if t == g)
    support, predicted = Counter(truth), Counter(guess)
    total = 0.0
    for label, count in support.items():
        tp = correct[label]
        p = tp / predicted[label] if predicted[label] else 0.0
        r = tp / count
        total += count * (2 * p * r / (p + r) if p + r else 0.0)
    return total / len(truth)


def set_precision_recall(pairs: list[tuple[set[str], set[str]]]) -> dict[str, Any]:
    """Dataset-mean P and R over (gt, pred) set pairs; pairs with an empty gt are skipped (authors' rule)."""
    precision, recall = [], []
    for gt, pred in pairs:
        if not gt:
            continue
        hit = len(gt & pred)
        precision.append(hit / len(pred) if pred else 0.0)
        recall.append(hit / len(gt) if pred else 0.0)
    if not precision:  # no pair to score: no score (a 0.0 would read as a real one)
        return {"f": None, "p": None, "r": None, "evaluated": 0, "skipped": len(pairs)}
    p = sum(precision) / len(precision)
    r = sum(recall) / len(recall)
    f = 2 * p * r / (p + r) if p + r else 0.0
    return {"f": f, "p": p, "r": r, "evaluated": len(precision), "skipped": len(pairs) - len(precision)}


def wheel_metric(name2gt: dict[str, list[str]], name2pred: dict[str, list[str]], wheel: EmotionWheel, level: int) -> dict[str, Any]:
    """[F, P, R] averaged over the five wheels at one level, with each wheel's own scores and counts."""
    per_wheel = {}
    for name in WHEELS:
        pairs = [(wheel.categories(_normal(gt), name, level), wheel.categories(_normal(name2pred.get(key, [])), name, level)) for key, gt in name2gt.items()]
        per_wheel[name] = set_precision_recall(pairs)
    scored = [s for s in per_wheel.values() if s["evaluated"]]  # a wheel no gold maps to is left out of the mean, as for the hit rate
    mean = {k: (sum(s[k] for s in scored) / len(scored) if scored else None) for k in ("f", "p", "r")}
    return {**mean, "wheels": per_wheel}


def hit_rate_metric(name2gt: dict[str, str], name2pred: dict[str, list[str]], wheel: EmotionWheel) -> dict[str, Any]:
    """MER-UniBench hit rate of predicted word lists against one gold word per sample, per wheel and averaged.

    A sample without a prediction is a miss. A wheel on which no gold word maps has hit rate None and
    is left out of the mean (the authors' mean would be NaN); `hit_rate` is None when every wheel is.
    """
    per_wheel: dict[str, dict[str, Any]] = {}
    for name in WHEELS:
        hits = scored = 0
        for key, gold in name2gt.items():
            centre = wheel.category(gold, name, 1)
            if centre is None:
                continue  # the gold word is on no wheel position here: `neutral`, or an unknown word
            scored += 1
            hits += centre in wheel.categories(name2pred.get(key, []), name, 1)
        per_wheel[name] = {"hit_rate": hits / scored if scored else None, "hits": hits, "scored": scored, "skipped": len(name2gt) - scored}
    rates = [w["hit_rate"] for w in per_wheel.values() if w["hit_rate"] is not None]
    return {"hit_rate": sum(rates) / len(rates) if rates else None, "wheels": per_wheel}


def sentiment_metric(name2gt: dict[str, float], name2pred: dict[str, float]) -> dict[str, Any]:
    """Weighted F1 and accuracy of "> 0" after dropping gold 0; a missing prediction counts as 0 (not positive)."""
    kept = [key for key, value in name2gt.items() if value != 0]
    truth = [name2gt[key] > 0 for key in kept]
    guess = [name2pred.get(key, 0.0) > 0 for key in kept]
    n = len(kept)
    return {
        "weighted_f1": weighted_f1(truth, guess) if n else None,
        "accuracy": sum(t == g for t, g in zip(truth, guess, strict=True)) / n if n else None,
        "scored": n,
        "dropped_gold_zero": len(name2gt) - n,
        "gold_positive": sum(truth),
        "predicted_positive": sum(guess),
    }


def mer2024_metric(
    name2gt: dict[str, list[str]], name2pred: dict[str, list[str]], per_sample: dict[str, dict[str, str]] | None, shared: dict[str, str] | None
) -> dict[str, Any]:
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
    return {
        "accuracy": sum(t == g for t, g in zip(truth, guess, strict=True)) / n if n else 0.0,
        "weighted_f1": weighted_f1(truth, guess),
        "evaluated": n,
        "missing_predictions": sum(1 for k in name2gt if k not in name2pred),
    }
