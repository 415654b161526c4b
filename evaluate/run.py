"""`emer evaluate`: pick the procedure the files call for, score each prediction file, return JSON-able results.

Three tasks, as MER-UniBench scores open-vocabulary answers (metrics.py says how each is computed):

- `discrete`: one gold emotion word per sample (MER2023, MER2024, MELD, IEMOCAP) -> emotion-wheel hit
  rate of the predicted words (plus accuracy / weighted F1 when predictions are one word too);
- `sentiment`: a gold sentiment score (CMU-MOSI, CMU-MOSEI, CH-SIMS, CH-SIMS v2) -> weighted F1 and
  accuracy of positive vs negative; predictions give a sentiment, or open-set labels mapped to one
  by an LLM (`evaluate.sentiment`);
- `openset`: gold open-set label lists (OV-MERD+, EMER) -> the emotion-wheel set P / R / F (plus the
  MER2024 set metric with synonym groups).

Without `task`, the files decide: gold and predictions both with open-set lists -> openset; a gold
emotion word with predicted words -> discrete; a gold sentiment with a predicted sentiment or open-set
lists -> sentiment.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from emer_builder.core.errors import UserError
from emer_builder.core.labels import LabelMode
from emer_builder.evaluate.metrics import discrete_metric, hit_rate_metric, mer2024_metric, sentiment_metric, wheel_metric
from emer_builder.evaluate.readers import SENTIMENT_WORDS, Side, read_side, read_synonyms
from emer_builder.transforms.wheel import EmotionWheel

TASKS: tuple[str, ...] = ("discrete", "sentiment", "openset")


def choose_task(gt: Side, pred: Side, task: str | None = None) -> str:
    """The task for one (ground truth, predictions) pair: `task` when given (checked), else what the files hold."""
    can = {
        "openset": gt.openset is not None and pred.openset is not None,
        "discrete": gt.discrete is not None and (pred.openset is not None or pred.discrete is not None),
        "sentiment": gt.sentiment is not None and (pred.sentiment is not None or pred.openset is not None),
    }
    if task is None:
        found = next((t for t in ("openset", "discrete", "sentiment") if can[t]), None)
        if found is not None:
            return found
        said = "; ".join(f"{side.spec} has {' and '.join(side.kinds()) or 'no labels'}" for side in (gt, pred))
        raise UserError(f"nothing to compare: {said} (see `emer evaluate --help` for the columns read)")
    if task not in TASKS:
        raise UserError(f"--task must be one of {', '.join(TASKS)}, not {task!r}")
    if not can[task]:
        needs = {
            "openset": "gold and predicted open-set labels",
            "discrete": "one gold emotion word per sample and predicted open-set or discrete labels",
            "sentiment": "a gold sentiment (valence, MMSA label, MELD Sentiment) and a predicted sentiment column or open-set labels",
        }[task]
        raise UserError(
            f"--task {task} needs {needs}; {gt.spec} has {' and '.join(gt.kinds()) or 'no labels'}, {pred.spec} has {' and '.join(pred.kinds()) or 'no labels'}"
        )
    return task


def _counts(gt: dict[str, Any], pred: dict[str, Any]) -> dict[str, int]:
    return {
        "gt": len(gt),
        "pred": len(pred),
        "missing_predictions": sum(1 for k in gt if k not in pred),
        "extra_predictions": sum(1 for k in pred if k not in gt),
    }


class _Resources:
    """The wheel, synonym groups and sentiment mapper, each made once and only when a task needs it."""

    def __init__(self, get_wheel: Callable[[], EmotionWheel | None], get_mapper: Callable[[], Any], synonyms: str | None, label_mode: LabelMode):
        self._get_wheel, self._get_mapper = get_wheel, get_mapper
        self.synonyms_path = synonyms
        self.synonyms = read_synonyms(synonyms, label_mode) if synonyms is not None else None
        self._wheel: EmotionWheel | None = None
        self._mapper: Any = None

    def wheel(self) -> EmotionWheel | None:
        if self._wheel is None:
            self._wheel = self._get_wheel()
        return self._wheel

    def mapper(self) -> Any:
        if self._mapper is None:
            self._mapper = self._get_mapper()
        return self._mapper


def _score_openset(gt: Side, pred: Side, res: _Resources, result: dict[str, Any]) -> None:
    assert gt.openset is not None and pred.openset is not None
    result["counts"] = _counts(gt.openset, pred.openset)
    wheel = res.wheel()
    if wheel is not None:
        result["emotion_wheel"] = {
            "origin": wheel.origin(),
            "level1": wheel_metric(gt.openset, pred.openset, wheel, 1),
            "level2": wheel_metric(gt.openset, pred.openset, wheel, 2),
        }
    if res.synonyms is not None:
        result["mer2024"] = {"synonyms": res.synonyms_path, **mer2024_metric(gt.openset, pred.openset, *res.synonyms)}


def _score_discrete(gt: Side, pred: Side, res: _Resources, result: dict[str, Any]) -> None:
    assert gt.discrete is not None
    if pred.openset is not None:
        words, kind = pred.openset, "open-set labels"
    else:
        assert pred.discrete is not None
        words, kind = {k: [v] for k, v in pred.discrete.items()}, "discrete labels"
    result["counts"] = _counts(gt.discrete, words)
    wheel = res.wheel()
    if wheel is None:
        raise UserError("the hit rate maps words onto the emotion wheels: pass wheel=EmotionWheel(folder) (or a folder)")
    scores = hit_rate_metric(gt.discrete, words, wheel)
    if scores["hit_rate"] is None:
        raise UserError(f"{gt.spec}: no gold label maps onto any emotion wheel (all {len(gt.discrete)} skipped: neutral or unknown words)")
    result["hit_rate"] = {"origin": wheel.origin(), "predictions": kind, **scores}


def _score_sentiment(gt: Side, pred: Side, res: _Resources, result: dict[str, Any]) -> None:
    gold = gt.sentiment
    assert gold is not None
    info: dict[str, Any]
    if pred.sentiment is not None:
        values, given = pred.sentiment, pred.sentiment
        info = {"predictions": f"column {pred.sentiment_column}", "unrecognised": len(pred.unrecognised_sentiment)}
    else:
        assert pred.openset is not None
        given = pred.openset
        mapper = res.mapper()
        wanted = {k: given[k] for k, v in gold.items() if v != 0 and k in given}  # gold 0 is dropped: nothing to ask
        before = mapper.stats()
        words, failed = mapper.map(wanted)
        values = {k: SENTIMENT_WORDS.get(w, 0.0) for k, w in words.items()} | dict.fromkeys(failed, 0.0)
        info = {
            "predictions": f"open-set labels mapped by {mapper.describe()}",
            "unrecognised": sum(1 for w in words.values() if w not in SENTIMENT_WORDS),
            "llm_failures": len(failed),
            "llm": {k: v - before[k] for k, v in mapper.stats().items()},  # this file's share: one mapper serves every --pred
        }
    result["counts"] = _counts(gold, given)
    scores = sentiment_metric(gold, values)
    if not scores["scored"]:
        raise UserError(f"{gt.spec}: every gold sentiment is 0 (neutral): nothing is left to score")
    result["sentiment"] = {**scores, **info}


_SCORERS = {"openset": _score_openset, "discrete": _score_discrete, "sentiment": _score_sentiment}


def _evaluate(gt: str, preds: Sequence[str], task: str | None, label_mode: LabelMode, res_factory: Callable[[], _Resources]) -> list[dict[str, Any]]:
    if not preds:
        raise UserError("no prediction file given")
    gt_side = read_side(gt, label_mode=label_mode, gold=True)
    pred_sides = [read_side(p, label_mode=label_mode, gold=False) for p in preds]
    tasks = [choose_task(gt_side, side, task) for side in pred_sides]
    res = res_factory()
    if res.synonyms is not None and "openset" not in tasks:
        raise UserError("--synonyms needs open-vocabulary labels in both GT and PRED")
    results = []
    for side, chosen in zip(pred_sides, tasks, strict=True):
        result: dict[str, Any] = {"task": chosen, "gt": gt, "pred": side.spec}
        _SCORERS[chosen](gt_side, side, res, result)
        if gt_side.discrete is not None and side.discrete is not None:
            result["discrete"] = discrete_metric(gt_side.discrete, side.discrete)
        results.append(result)
    return results


def _mapper_from(llm: Any) -> Callable[[], Any]:
    """A maker of the sentiment mapper from a `SentimentMapper`, an `LlmConfig` or None, checked on first use."""

    def make() -> Any:
        if llm is None or (not hasattr(llm, "map") and not (getattr(llm, "base_url", None) and getattr(llm, "model", None))):
            raise UserError(
                "the predictions hold open-set labels and the gold a sentiment: mapping labels to positive/negative/neutral needs an "
                "OpenAI-compatible endpoint (--config FILE with explanation.llm.base_url and model, or --llm-base-url and --llm-model), "
                "or predictions with a `sentiment` column"
            )
        if hasattr(llm, "map"):
            return llm
        try:
            from emer_builder.evaluate.sentiment import SentimentMapper
            from emer_builder.transforms.llm_explainer import LlmEndpointError
        except ImportError as e:
            raise UserError(f"mapping open-set labels to sentiment needs the `openai` package ({e.name} is missing): pip install openai") from None
        mapper = SentimentMapper.from_config(llm)
        try:
            mapper.check()
        except LlmEndpointError as e:
            raise UserError(f"cannot map labels to sentiment: {e}") from None
        return mapper

    return make


def evaluate_many(
    gt: str,
    preds: Sequence[str],
    wheel: EmotionWheel | str | None = None,
    synonyms: str | None = None,
    task: str | None = None,
    label_mode: LabelMode = "lenient",
    llm: Any = None,
) -> list[dict[str, Any]]:
    """One result per prediction file against the same ground truth, read once.

    `wheel`: an `EmotionWheel`, a folder of its tables, or None (openset: no wheel metric; discrete: an
    error). `llm`: a `SentimentMapper` or a build config's `LlmConfig`, used only to map open-set
    predictions to sentiment. `label_mode`: how list cells are parsed (`core.labels`: lenient or authors).
    """
    from emer_builder.transforms.wheel import load_wheel

    def get_wheel() -> EmotionWheel | None:
        return load_wheel(wheel) if isinstance(wheel, str) else wheel

    return _evaluate(gt, preds, task, label_mode, lambda: _Resources(get_wheel, _mapper_from(llm), synonyms, label_mode))


def evaluate(
    gt: str,
    pred: str,
    wheel: EmotionWheel | str | None = None,
    synonyms: str | None = None,
    task: str | None = None,
    label_mode: LabelMode = "lenient",
    llm: Any = None,
) -> dict[str, Any]:
    """The result for one prediction file (`evaluate_many` for the arguments); the same dict as `emer evaluate --json`."""
    return evaluate_many(gt, [pred], wheel, synonyms, task, label_mode, llm)[0]


def run_evaluate_many(
    gt: str,
    preds: Sequence[str],
    wheel_dir: str | None = None,
    synonyms: str | None = None,
    task: str | None = None,
    label_mode: LabelMode = "lenient",
    llm: Any = None,
) -> list[dict[str, Any]]:
    """`emer evaluate`: as `evaluate_many`, the wheel tables read from `wheel_dir` or fetched (pinned, cached) only when a task needs them."""
    from emer_builder.transforms.wheel import load_wheel

    return _evaluate(gt, preds, task, label_mode, lambda: _Resources(lambda: load_wheel(wheel_dir), _mapper_from(llm), synonyms, label_mode))


def run_evaluate(
    gt: str, pred: str, wheel_dir: str | None = None, synonyms: str | None = None, task: str | None = None, label_mode: LabelMode = "lenient", llm: Any = None
) -> dict[str, Any]:
    """`emer evaluate` with one prediction file."""
    return run_evaluate_many(gt, [pred], wheel_dir, synonyms, task, label_mode, llm)[0]


def llm_settings(config: str | None = None, base_url: str | None = None, model: str | None = None) -> Any:
    """The endpoint that maps open-set predictions to sentiment: a build config's `explanation.llm`, with
    `base_url` / `model` given on the command line taking precedence; None when nothing is configured."""
    import dataclasses

    from emer_builder.core.config import LlmConfig, load_config

    llm = load_config(config).explanation.llm if config is not None else None
    overrides = {k: v for k, v in (("base_url", base_url), ("model", model)) if v}
    if overrides:
        llm = dataclasses.replace(llm or LlmConfig(), **overrides)
    return llm
