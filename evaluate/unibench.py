"""`emer evaluate --suite mer-unibench`: the AffectGPT paper's MER-UniBench table from the authors' own files.

What the authors' `evaluation.py` (AffectGPT at d961cab, `main_zeroshot_scores`, `func_return_scores_one`)
does, file for file, without their GPU and without `allow_pickle=True`:

- predictions: `PRED/results-<dataset>/<run>/checkpoint_<N>_loss_<L>-openset.npz` (string arrays
  `filenames`, `fileitems`: each item the open-set list as the model wrote it, read with MERTools'
  `string_to_list`), and for the sentiment sets `...-openset-sentiment.npz` (positive / negative /
  neutral per name, compared exactly; anything else scores 0). Our own prediction tables (name +
  openset, optionally sentiment) count as checkpoints too. A checkpoint whose open-set file is
  absent (only the reason npz) is listed, not scored: extracting its open-set labels needs the
  authors' LLM step, which `emer evaluate` does not run.
- ground truth: MERBench's `GT/<dataset>-process/label*.npz` (pickled dicts, read by `safe_npz`):
  MER2023 / MER2024 `test1_corpus[name]['emo']`, MELD `test_corpus` (emotion index), IEMOCAP
  `whole_corpus` Session 5 (emotion index), the sentiment sets `test_corpus[name]['val']`, OV-MERD+
  `ovmerdplus-process/ovlabel.csv`; or a corpus table in the same folder (MELD's
  `test_sent_emo.csv`, an MMSA `label.csv` (its test rows), or a `test.csv` of our own columns).
- procedure per dataset: hit rate (MER2023, MER2024, MELD, IEMOCAP), sentiment weighted F1 (CMU-MOSI,
  CMU-MOSEI, CH-SIMS, CH-SIMS v2), emotion-wheel F at level 1 (OV-MERD+); `metrics.py` says how.
- every checkpoint is scored; the best is the first with the highest main score in name order
  (their `np.argmax` over the sorted files); a run's mean is over the nine best scores.
- sentiment sets: a checkpoint without a cached sentiment file has its open-set lists mapped by the
  configured LLM (`evaluate.sentiment`); without an endpoint that checkpoint is "not scored".
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emer_builder.core.errors import UserError
from emer_builder.core.labels import LabelMode, parse_labels
from emer_builder.core.tables import read_table
from emer_builder.evaluate.metrics import hit_rate_metric, sentiment_metric, wheel_metric
from emer_builder.evaluate.readers import SENTIMENT_WORDS, read_side
from emer_builder.evaluate.safe_npz import load_npz
from emer_builder.transforms.wheel import EmotionWheel

SUITE = "mer-unibench"
SUITES: tuple[str, ...] = (SUITE,)
DEFAULT_WHEEL = "fetch:affectgpt"  # the tables the paper's numbers were computed with

MELD_EMOTIONS = ("anger", "joy", "sadness", "neutral", "disgust", "fear", "surprise")  # AffectGPT meld.py
IEMOCAP_EMOTIONS = ("happy", "sad", "neutral", "anger")  # AffectGPT iemocap.py
OPENSET_SUFFIX = "-openset.npz"
SENTIMENT_SUFFIX = "-openset-sentiment.npz"
TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl")

PROCEDURES = {
    "hit_rate": "hit rate (gold level-1 centre among the predicted ones, mean of wheel1..5)",
    "sentiment": "sentiment weighted F1 (positive vs negative, gold 0 dropped)",
    "wheel": "emotion-wheel F, level 1 (mean of wheel1..5)",
}


@dataclass(frozen=True)
class Dataset:
    """One column of the paper's table: where its files are and how it is scored."""

    key: str  # PRED/results-<key>/ (the authors' lowercase names)
    title: str  # the paper's column
    procedure: str  # hit_rate | sentiment | wheel
    gt_folder: str  # GT/<gt_folder>/, as in MERTools' MERBench/dataset/
    gt_file: str  # MERBench's label file there
    corpus: str = ""  # the npz key holding the test dict
    emotions: tuple[str, ...] = ()  # emotion index -> word, where labels are stored as indices
    tables: tuple[str, ...] = ("test.csv",)  # our corpus tables accepted in the same folder


DATASETS: tuple[Dataset, ...] = (
    Dataset("mer2023", "MER2023", "hit_rate", "mer2023-dataset-process", "label-6way.npz", "test1_corpus"),
    Dataset("mer2024", "MER2024", "hit_rate", "mer2024-dataset-process", "label-6way.npz", "test1_corpus"),
    Dataset("meld", "MELD", "hit_rate", "meld-process", "label.npz", "test_corpus", MELD_EMOTIONS, ("test_sent_emo.csv", "test.csv")),
    Dataset("iemocapfour", "IEMOCAP", "hit_rate", "iemocap-process", "label_4way.npz", "whole_corpus", IEMOCAP_EMOTIONS),
    Dataset("cmumosi", "CMU-MOSI", "sentiment", "cmumosi-process", "label.npz", "test_corpus", tables=("label.csv", "test.csv")),
    Dataset("cmumosei", "CMU-MOSEI", "sentiment", "cmumosei-process", "label.npz", "test_corpus", tables=("label.csv", "test.csv")),
    Dataset("sims", "CH-SIMS", "sentiment", "sims-process", "label.npz", "test_corpus", tables=("label.csv", "test.csv")),
    Dataset("simsv2", "CH-SIMS v2", "sentiment", "simsv2-process", "label.npz", "test_corpus", tables=("label.csv", "test.csv")),
    Dataset("ovmerdplus", "OV-MERD+", "wheel", "ovmerdplus-process", "ovlabel.csv", tables=("test.csv",)),
)


# ---------------------------------------------------------------- ground truth


def _gold_file(gt_dir: Path, ds: Dataset) -> Path | None:
    folder = gt_dir / ds.gt_folder
    return next((folder / n for n in (ds.gt_file, *ds.tables) if (folder / n).is_file()), None)


def _emotion(value: Any, ds: Dataset, where: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("latin1")
    try:
        index = int(value)
        if isinstance(value, bool) or index != value:  # True is not index 1, 2.9 is not index 2
            raise ValueError(value)
    except (TypeError, ValueError, OverflowError):
        raise UserError(f"{where}: emotion {value!r} is neither a word nor an index") from None
    if not 0 <= index < len(ds.emotions):
        raise UserError(f"{where}: emotion index {index} has no word for {ds.title} (known: {', '.join(ds.emotions) or 'none'})")
    return ds.emotions[index]


def _from_npz(path: Path, ds: Dataset) -> dict[str, Any]:
    """name -> gold word (discrete sets) or sentiment score, from MERBench's label npz."""
    data = load_npz(path)
    corpus = data.get(ds.corpus)
    if not isinstance(corpus, dict):
        raise UserError(f"{path}: no dict {ds.corpus!r} (found: {', '.join(sorted(data)) or 'nothing'}); MERBench's layout has {ds.corpus}")
    gold: dict[str, Any] = {}
    for raw_name, entry in corpus.items():
        name = str(raw_name)
        if ds.corpus == "whole_corpus" and name[4:5] != "5":
            continue  # IEMOCAP: sessions 1-4 train, Session 5 is the test set (AffectGPT iemocap.py)
        where = f"{path} [{ds.corpus}][{name!r}]"
        if not isinstance(entry, dict):
            raise UserError(f"{where}: expected a dict with 'emo' / 'val', found {type(entry).__name__}")
        key = "val" if ds.procedure == "sentiment" else "emo"
        if key not in entry:
            raise UserError(f"{where}: no {key!r}")
        gold[name] = _score(entry[key], where) if key == "val" else _emotion(entry[key], ds, where)
    return gold


def _score(value: Any, where: str) -> float:
    """A gold sentiment score: a finite number, as the table readers require."""
    try:
        score = float(value)
        if isinstance(value, bool) or not math.isfinite(score):
            raise ValueError(value)
    except (TypeError, ValueError):
        raise UserError(f"{where}: sentiment {value!r} is not a finite number") from None
    return score


def _from_table(path: Path, ds: Dataset) -> dict[str, Any]:
    """name -> gold from a table: OV-MERD+'s ovlabel.csv, MELD's test table, an MMSA label.csv, or our columns."""
    if path.name == "ovlabel.csv":
        table = read_table(path, what="OV-MERD+ labels")
        if not table.has("name", "openset"):
            raise UserError(f"{path}: needs columns name,openset (found {', '.join(table.columns)})")
        # the authors: an empty list is ['neutral'] (which maps to no wheel category: the sample is skipped)
        return {str(r["name"]).strip(): parse_labels(r.get("openset"), "authors") or ["neutral"] for r in table.rows if str(r.get("name") or "").strip()}
    side = read_side(str(path), split="test" if path.name == "label.csv" else None, label_mode="authors", gold=True)
    values = {"hit_rate": side.discrete, "sentiment": side.sentiment, "wheel": side.openset}[ds.procedure]
    if values is None:
        raise UserError(f"{path}: holds {' and '.join(side.kinds()) or 'no labels'}, but {ds.title} is scored on {PROCEDURES[ds.procedure]}")
    return values


def read_gold(gt_dir: Path, ds: Dataset) -> tuple[Path, dict[str, Any]] | None:
    """(file, name -> gold) for one dataset, or None when GT has none of its files."""
    path = _gold_file(gt_dir, ds)
    if path is None:
        return None
    return path, (_from_npz(path, ds) if path.suffix == ".npz" else _from_table(path, ds))


# ---------------------------------------------------------------- predictions


@dataclass
class Checkpoint:
    """One checkpoint's prediction files in a run folder."""

    name: str
    openset: Path | None = None  # -openset.npz
    sentiment: Path | None = None  # -openset-sentiment.npz (cached LLM answers)
    table: Path | None = None  # our own prediction table


def find_checkpoints(run_dir: Path) -> list[Checkpoint]:
    """Every checkpoint of a run folder, in name order (the authors' sorted glob)."""
    found: dict[str, Checkpoint] = {}
    for path in sorted(run_dir.iterdir()):
        if not path.is_file():
            continue
        name = path.name
        if name.endswith(SENTIMENT_SUFFIX):
            found.setdefault(name[: -len(SENTIMENT_SUFFIX)], Checkpoint(name[: -len(SENTIMENT_SUFFIX)])).sentiment = path
        elif name.endswith(OPENSET_SUFFIX):
            found.setdefault(name[: -len(OPENSET_SUFFIX)], Checkpoint(name[: -len(OPENSET_SUFFIX)])).openset = path
        elif name.endswith(".npz") and "-" not in name:  # the reason file: scored only through its open-set file
            found.setdefault(name[: -len(".npz")], Checkpoint(name[: -len(".npz")]))
        elif name.endswith(TABLE_SUFFIXES):
            found.setdefault(path.stem, Checkpoint(path.stem)).table = path
    return [found[k] for k in sorted(found)]


def _text(value: Any) -> str:
    """A name or item as text: NumPy strings as they are, byte strings (Python 2 era files) decoded."""
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def _item_labels(item: Any) -> list[str]:
    """One `fileitems` entry as a label list: a string through the authors' string_to_list, a list as it is."""
    if isinstance(item, (list, tuple)) or getattr(item, "ndim", 0) > 0:
        return [t for t in (_text(x).strip() for x in item) if t]
    return parse_labels(_text(item), "authors")


def read_result_npz(path: Path) -> dict[str, Any]:
    """name -> item of an authors' result file (`filenames`, `fileitems`)."""
    data = load_npz(path)
    if "filenames" not in data or "fileitems" not in data:
        raise UserError(f"{path}: needs arrays filenames and fileitems (found: {', '.join(sorted(data)) or 'nothing'})")
    import numpy as np

    arrays = data["filenames"], data["fileitems"]
    if not all(isinstance(a, np.ndarray) and a.ndim == 1 for a in arrays):
        raise UserError(f"{path}: filenames and fileitems must be one-dimensional arrays (one entry per sample)")
    names, items = list(arrays[0]), list(arrays[1])
    if len(names) != len(items):
        raise UserError(f"{path}: {len(names)} filenames but {len(items)} fileitems")
    out: dict[str, Any] = {}
    for n, i in zip(names, items, strict=True):
        name = _text(n)
        if name in out:
            raise UserError(f"{path}: sample {name!r} appears more than once in filenames")
        out[name] = i
    return out


# ---------------------------------------------------------------- scoring


class _Context:
    """What every checkpoint shares: the wheel and the sentiment mapper, each made once and only when needed."""

    def __init__(self, get_wheel: Callable[[], EmotionWheel], get_mapper: Callable[[], Any], label_mode: LabelMode, has_llm: bool) -> None:
        self._get_wheel, self._get_mapper = get_wheel, get_mapper
        self._wheel: EmotionWheel | None = None
        self._mapper: Any = None
        self._mapper_error: str | None = None if has_llm else "no LLM endpoint to map its open-set labels (--config, or --llm-base-url and --llm-model)"
        self.label_mode = label_mode

    def wheel(self) -> EmotionWheel:
        if self._wheel is None:
            self._wheel = self._get_wheel()
        return self._wheel

    def origin(self) -> str | None:
        return self._wheel.origin() if self._wheel is not None else None

    def mapper(self) -> Any:
        """The sentiment mapper; UserError (kept, said once per checkpoint) when no endpoint is configured."""
        if self._mapper is None and self._mapper_error is None:
            try:
                self._mapper = self._get_mapper()
            except UserError as e:
                self._mapper_error = str(e)
        if self._mapper is None:
            raise UserError(self._mapper_error or "no sentiment mapper")
        return self._mapper


def _openset(ck: Checkpoint, ctx: _Context) -> dict[str, list[str]] | None:
    if ck.openset is not None:
        return {k: _item_labels(v) for k, v in read_result_npz(ck.openset).items()}
    if ck.table is not None:
        return read_side(str(ck.table), label_mode=ctx.label_mode, gold=False).openset
    return None


def _counts(gold: dict[str, Any], pred: dict[str, Any]) -> dict[str, int]:
    return {"gt": len(gold), "pred": len(pred), "missing_predictions": sum(1 for k in gold if k not in pred)}


def _sentiment_values(ck: Checkpoint, gold: dict[str, float], openset: dict[str, list[str]] | None, ctx: _Context) -> tuple[dict[str, float], dict[str, Any]]:
    """name -> predicted score and how it was obtained: the cached file, the table's column, or the LLM mapping."""
    if ck.sentiment is not None:
        items = {k: _text(v) for k, v in read_result_npz(ck.sentiment).items()}
        # the authors compare exactly: 'positive' 1, 'negative' -1, 'neutral' and anything else 0
        values = {k: float(SENTIMENT_WORDS[v]) if v in SENTIMENT_WORDS else 0.0 for k, v in items.items()}
        return values, {"sentiment_source": f"cached file {ck.sentiment.name}", "unrecognised": sum(1 for v in items.values() if v not in SENTIMENT_WORDS)}
    if ck.table is not None:
        side = read_side(str(ck.table), label_mode=ctx.label_mode, gold=False)
        if side.sentiment is not None:
            return side.sentiment, {"sentiment_source": f"column {side.sentiment_column}", "unrecognised": len(side.unrecognised_sentiment)}
    if openset is None:
        raise UserError("its table has neither open-set labels nor a sentiment column")
    mapper = ctx.mapper()
    wanted = {k: openset[k] for k, v in gold.items() if v != 0 and k in openset}  # gold 0 is dropped: nothing to ask
    before = mapper.stats()
    words, failed = mapper.map(wanted)
    values = {k: SENTIMENT_WORDS.get(w, 0.0) for k, w in words.items()} | dict.fromkeys(failed, 0.0)
    return values, {
        "sentiment_source": f"open-set labels mapped by {mapper.describe()}",
        "unrecognised": sum(1 for w in words.values() if w not in SENTIMENT_WORDS),
        "llm_failures": len(failed),
        "llm": {k: v - before[k] for k, v in mapper.stats().items()},
    }


def score_checkpoint(ds: Dataset, gold: dict[str, Any], ck: Checkpoint, ctx: _Context) -> dict[str, Any]:
    """One checkpoint's main score (`score`, None when not scored, with `reason`) and its details."""
    out: dict[str, Any] = {"checkpoint": ck.name, "files": [p.name for p in (ck.openset, ck.sentiment, ck.table) if p is not None]}
    openset = _openset(ck, ctx)
    if openset is None and not (ds.procedure == "sentiment" and (ck.sentiment is not None or ck.table is not None)):
        why = "no open-set labels in its table" if ck.table is not None else f"no {ck.name}{OPENSET_SUFFIX} (its open-set labels are not extracted)"
        return {**out, "score": None, "reason": why}
    if ds.procedure == "hit_rate":
        assert openset is not None
        scores = hit_rate_metric(gold, openset, ctx.wheel())
        rates = {w: s["hit_rate"] for w, s in scores["wheels"].items()}
        out |= {"score": scores["hit_rate"], "wheels": rates, "counts": _counts(gold, openset)}
        return out if scores["hit_rate"] is not None else {**out, "reason": "no gold label maps onto any emotion wheel (neutral or unknown words)"}
    if ds.procedure == "wheel":
        assert openset is not None
        scores = wheel_metric(gold, openset, ctx.wheel(), 1)
        return {**out, "score": scores["f"], "precision": scores["p"], "recall": scores["r"], "counts": _counts(gold, openset)}
    try:
        values, info = _sentiment_values(ck, gold, openset, ctx)
    except UserError as e:
        return {**out, "score": None, "reason": f"no cached {ck.name}{SENTIMENT_SUFFIX}; {e}"}
    scores = sentiment_metric(gold, values)
    out |= {"score": scores["weighted_f1"], "accuracy": scores["accuracy"], "scored": scores["scored"], **info, "counts": _counts(gold, values)}
    return out if scores["weighted_f1"] is not None else {**out, "reason": "every gold sentiment is 0 (neutral): nothing is left to score"}


def _best(checkpoints: list[dict[str, Any]]) -> int | None:
    """The first checkpoint with the highest score (np.argmax over name order), or None when none has one."""
    best: int | None = None
    for i, c in enumerate(checkpoints):
        if c["score"] is not None and (best is None or c["score"] > checkpoints[best]["score"]):
            best = i
    return best


def _runs(pred_dir: Path) -> tuple[dict[str, Path], list[str]]:
    """results-<dataset> folder by dataset key, and every run name found under them."""
    folders: dict[str, Path] = {}
    for path in sorted(pred_dir.iterdir()):
        if path.is_dir() and path.name.lower().startswith("results-"):
            folders[path.name[len("results-") :].lower()] = path
    known = {ds.key for ds in DATASETS}
    if not folders.keys() & known:
        raise UserError(
            f"--pred-dir {pred_dir}: no results-<dataset> folder of MER-UniBench ({', '.join(f'results-{k}' for k in known)}); "
            "the authors' layout is PRED/results-<dataset>/<run>/checkpoint_<N>_loss_<L>-openset.npz"
        )
    runs = sorted({run.name for key, folder in folders.items() if key in known for run in folder.iterdir() if run.is_dir()})
    if not runs:
        raise UserError(
            f"--pred-dir {pred_dir}: no run folder under its results-<dataset> folders (the layout is results-<dataset>/<run>/checkpoint_*-openset.npz)"
        )
    return folders, runs


def run_suite(
    pred_dir: str,
    gt_dir: str,
    wheel: EmotionWheel | str | None = None,
    llm: Any = None,
    suite: str = SUITE,
    label_mode: LabelMode = "lenient",
) -> dict[str, Any]:
    """The benchmark table as JSON-able data: per run and dataset every checkpoint's score, the best marked.

    `wheel`: an `EmotionWheel`, a folder, `fetch:affectgpt` (default) or `fetch:mertools`. `llm`: a
    `SentimentMapper` or an `LlmConfig`, used only for sentiment checkpoints without a cached file.
    `label_mode` parses our own prediction tables (the authors' files are always read their way).
    """
    if suite not in SUITES:
        raise UserError(f"--suite must be one of {', '.join(SUITES)}, not {suite!r}")
    pred, gt = Path(pred_dir), Path(gt_dir)
    for flag, folder in (("--pred-dir", pred), ("--gt-dir", gt)):
        if not folder.is_dir():
            raise UserError(f"{flag} {folder}: not a folder")
    from emer_builder.evaluate.run import _mapper_from
    from emer_builder.transforms.wheel import load_wheel

    chosen = DEFAULT_WHEEL if wheel is None else wheel
    ctx = _Context(lambda: chosen if isinstance(chosen, EmotionWheel) else load_wheel(chosen), _mapper_from(llm), label_mode, llm is not None)
    folders, runs = _runs(pred)
    golds: dict[str, tuple[Path, dict[str, Any]] | None] = {}
    out_runs = []
    for run in runs:
        entries: dict[str, Any] = {}
        for ds in DATASETS:
            run_dir = folders[ds.key] / run if ds.key in folders else None
            if run_dir is None or not run_dir.is_dir():
                entries[ds.title] = {"status": "missing", "reason": f"no {pred.name}/results-{ds.key}/{run}/"}
                continue
            if ds.key not in golds:
                golds[ds.key] = read_gold(gt, ds)
            found = golds[ds.key]
            if found is None:
                names = " or ".join((ds.gt_file, *ds.tables))
                entries[ds.title] = {"status": "missing", "reason": f"no {gt.name}/{ds.gt_folder}/{names}"}
                continue
            gold_path, gold = found
            checkpoints = [score_checkpoint(ds, gold, ck, ctx) for ck in find_checkpoints(run_dir)]
            best = _best(checkpoints)
            for i, c in enumerate(checkpoints):
                c["best"] = i == best
            entry = {
                "status": "scored" if best is not None else "not scored",
                "procedure": PROCEDURES[ds.procedure],
                "metric": {"hit_rate": "hit_rate", "sentiment": "weighted_f1", "wheel": "f"}[ds.procedure],
                "tables": ctx.origin() if ds.procedure != "sentiment" else None,
                "gt": str(gold_path),
                "gt_samples": len(gold),
                "pred": str(run_dir),
                "best": {"checkpoint": checkpoints[best]["checkpoint"], "score": checkpoints[best]["score"]} if best is not None else None,
                "checkpoints": checkpoints,
            }
            if best is None:
                entry["reason"] = "no checkpoint could be scored" if checkpoints else "no checkpoint files"
            entries[ds.title] = entry
        bests = [e["best"]["score"] for e in entries.values() if e.get("best")]
        out_runs.append({"run": run, "datasets": entries, "mean": sum(bests) / len(bests) if len(bests) == len(DATASETS) else None, "scored": len(bests)})
    return {
        "suite": suite,
        "pred_dir": str(pred),
        "gt_dir": str(gt),
        "wheel_tables": ctx.origin(),
        "columns": [ds.title for ds in DATASETS],
        "procedures": {ds.title: PROCEDURES[ds.procedure] for ds in DATASETS},
        "runs": out_runs,
    }
