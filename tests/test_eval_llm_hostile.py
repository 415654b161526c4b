"""`emer evaluate`, the MER-UniBench suite and the LLM answer readers against hostile or odd inputs: a result
npz whose pickled dtype lies about holding objects (it crashed Python), gold values that are not numbers,
0-d and duplicate result arrays, open-set gold that no wheel maps, and LLM answers that hold other lists,
thinking blocks, echoed prompts, refusals, cut JSON escapes or unbounded labels. Nothing here starts a server:
the LLM path is driven through the pure readers and through `LlmExplainer` with `_complete` replaced.
"""

from __future__ import annotations

import io
import json
import pickle
import random
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from emer_builder.core.errors import UserError
from emer_builder.evaluate import evaluate
from emer_builder.evaluate.metrics import hit_rate_metric, sentiment_metric, set_precision_recall, weighted_f1
from emer_builder.evaluate.readers import read_side, sentiment_value
from emer_builder.evaluate.safe_npz import load_npz, restricted_loads
from emer_builder.evaluate.sentiment import read_sentiment
from emer_builder.evaluate.unibench import DATASETS, _from_npz, read_result_npz, run_suite
from emer_builder.transforms.llm_answers import read_labels
from emer_builder.transforms.wheel import EmotionWheel

from tests.unibench_fixtures import write_label_npz, write_result_npz, write_table, write_wheel_tables

DS = {d.key: d for d in DATASETS}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> EmotionWheel:
    return EmotionWheel(write_wheel_tables(tmp_path_factory.mktemp("rt-wheel") / "w", affectgpt=False))


# ------------------------------------------------------------------ the restricted unpickler


def _forged_object_array_pickle(n: int = 2) -> bytes:
    """A pickle naming only admitted globals (numpy.dtype, numpy._core.multiarray._reconstruct, numpy.ndarray)
    that rebuilds an object-dtype array whose dtype flags (taken from the pickle by dtype.__setstate__) say
    "no objects", so its raw bytes (0x4141...) become PyObject pointers."""
    from numpy._core.multiarray import _reconstruct

    class ForgedDtype:
        def __reduce__(self):
            return (np.dtype, ("O8", False, True), (3, "|", None, None, None, -1, -1, 0))  # flags 0: hasobject False

    class ForgedArray:
        def __reduce__(self):
            return (_reconstruct, (np.ndarray, (0,), b"b"), (1, (n,), ForgedDtype(), False, b"\x41" * (8 * n)))

    return pickle.dumps(ForgedArray(), protocol=2)


def _object_member(payload: bytes, shape: tuple[int, ...]) -> bytes:
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|O", "fortran_order": False, "shape": shape})
    return header.getvalue() + payload


def test_restricted_unpickler_admits_a_dtype_that_lies_about_holding_objects() -> None:
    """Was: only admitted names are used, yet the result is an 'O' array with hasobject False (raw bytes as pointers).
    Reading it must fail with one line; touching an element segfaults (next test)."""
    try:
        array = restricted_loads(_forged_object_array_pickle(), "x")
    except UserError:
        return
    # do NOT touch the elements (that dereferences 0x4141414141414141), nor let pytest repr the array
    kind, hasobject = str(array.dtype.kind), bool(array.dtype.hasobject)
    del array
    consistent = hasobject == (kind == "O")
    assert consistent, f"an array of kind {kind!r} with hasobject={hasobject} came through"


def test_suite_with_a_forged_result_npz_is_one_line_not_a_segfault(tmp_path: Path) -> None:
    """Was: `emer evaluate --suite` on a third party's result file dies with SIGSEGV (rc -11) in read_result_npz."""
    gt, pred = tmp_path / "GT", tmp_path / "PRED"
    write_label_npz(gt / "meld-process" / "label.npz", test_corpus={"a": {"emo": 1}})
    run = pred / "results-meld" / "demo"
    run.mkdir(parents=True)
    items = io.BytesIO()
    np.lib.format.write_array(items, np.array(["['joy']", "['joy']"]))
    with zipfile.ZipFile(run / "checkpoint_1_loss_1-openset.npz", "w") as z:
        z.writestr("filenames.npy", _object_member(_forged_object_array_pickle(), (2,)))
        z.writestr("fileitems.npy", items.getvalue())
    wheel_dir = write_wheel_tables(tmp_path / "w", affectgpt=False)
    argv = ["evaluate", "--suite", "mer-unibench", "--pred-dir", str(pred), "--gt-dir", str(gt), "--wheel-dir", str(wheel_dir)]
    code = f"import sys; from emer_builder.cli.main import main; sys.exit(main({argv!r}))"
    r = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, f"rc {r.returncode}; stderr: {r.stderr[-300:]}"
    assert r.stderr.startswith("emer: error:") and r.stderr.count("\n") == 1


# ------------------------------------------------------------------ MERBench label files (suite ground truth)


@pytest.mark.parametrize("val", ["abc", None, [1.0]], ids=["str", "none", "list"])
def test_gold_sentiment_that_is_not_a_number_is_one_line(tmp_path: Path, val: Any) -> None:
    """Was: unibench.py:124 `float(entry[key])` raises ValueError/TypeError (a traceback from `emer evaluate --suite`)."""
    path = write_label_npz(tmp_path / "label.npz", test_corpus={"v1": {"val": val}})
    with pytest.raises(UserError):
        _from_npz(path, DS["cmumosi"])


def test_gold_sentiment_nan_is_refused_as_the_table_readers_refuse_it(tmp_path: Path) -> None:
    """Was: a NaN gold value is kept (NaN != 0, NaN > 0 is False: scored as a negative sample); tables refuse it."""
    path = write_label_npz(tmp_path / "label.npz", test_corpus={"v1": {"val": float("nan")}, "v2": {"val": 1.0}})
    with pytest.raises(UserError):
        _from_npz(path, DS["cmumosi"])


def test_gold_emotion_index_infinite_is_one_line(tmp_path: Path) -> None:
    """Was: unibench.py:99 int(inf) raises OverflowError, not caught by `except (TypeError, ValueError)`."""
    path = write_label_npz(tmp_path / "label.npz", test_corpus={"d": {"emo": float("inf")}})
    with pytest.raises(UserError):
        _from_npz(path, DS["meld"])


# ------------------------------------------------------------------ result files (suite predictions)


def test_result_npz_with_0d_arrays_is_one_line(tmp_path: Path) -> None:
    """Was: unibench.py:199 list() of a 0-d array -> TypeError ('iteration over a 0-d array'); a 0-d object array
    holding an int -> TypeError; one holding a str is split into characters as names."""
    np.savez(tmp_path / "a.npz", filenames=np.array("x"), fileitems=np.array("['happy']"))
    with pytest.raises(UserError):
        read_result_npz(tmp_path / "a.npz")


def test_result_npz_0d_object_string_is_not_split_into_characters(tmp_path: Path) -> None:
    one = np.empty((), dtype=object)
    one[()] = "abc"
    np.savez(tmp_path / "b.npz", filenames=one, fileitems=one)
    try:
        got = read_result_npz(tmp_path / "b.npz")
    except UserError:
        return
    assert set(got) != {"a", "b", "c"}, "the name 'abc' became three samples a, b, c"


def test_result_npz_duplicate_names_are_reported_like_tables(tmp_path: Path) -> None:
    """Consistency: prediction tables refuse a repeated name (readers._add); the authors' result npz keeps the last silently."""
    np.savez(tmp_path / "d.npz", filenames=np.array(["a", "a"]), fileitems=np.array(["['happy']", "['sad']"]))
    with pytest.raises(UserError, match="more than once"):
        read_result_npz(tmp_path / "d.npz")


def test_npz_member_names_and_bad_members_are_one_line(tmp_path: Path) -> None:
    """Fine: a traversal-looking member name is only a dict key; a non-array member is one line."""
    with zipfile.ZipFile(tmp_path / "t.npz", "w") as z:
        buf = io.BytesIO()
        np.lib.format.write_array(buf, np.array(["a"]))
        z.writestr("../../evil.npy", buf.getvalue())
        z.writestr("junk.npy", b"not numpy")
    with pytest.raises(UserError, match="not a NumPy array"):
        load_npz(tmp_path / "t.npz")
    with zipfile.ZipFile(tmp_path / "u.npz", "w") as z:
        z.writestr("../../evil.npy", buf.getvalue())
    assert list(load_npz(tmp_path / "u.npz")) == ["../../evil"] and not (tmp_path.parent / "evil.npy").exists()


# ------------------------------------------------------------------ metrics by hand


def _reference_weighted_f1(truth: list[Any], guess: list[Any]) -> float:
    labels = sorted(set(truth) | set(guess), key=repr)
    total = 0.0
    for c in labels:
        tp = sum(1 for t, g in zip(truth, guess, strict=False) if t == c and g == c)
        fp = sum(1 for t, g in zip(truth, guess, strict=False) if t != c and g == c)
        fn = sum(1 for t, g in zip(truth, guess, strict=False) if t == c and g != c)
        f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
        total += f1 * truth.count(c)
    return total / len(truth)


def test_weighted_f1_matches_a_confusion_matrix_reference() -> None:
    rng = random.Random(7)
    for _ in range(300):
        n = rng.randint(1, 12)
        truth = [rng.choice("abcd") for _ in range(n)]
        guess = [rng.choice("abcde") for _ in range(n)]
        assert weighted_f1(truth, guess) == pytest.approx(_reference_weighted_f1(truth, guess))


def test_sentiment_metric_by_hand() -> None:
    # kept a b c d (e gold 0); truth T F T F; guess T T F F(missing) -> acc 2/4; F1(T)=.5 F1(F)=.5 -> .5
    s = sentiment_metric({"a": 1, "b": -2, "c": 0.5, "d": -0.1, "e": 0.0}, {"a": 3.0, "b": 0.2, "c": 0.0, "e": 9.0})
    assert (s["accuracy"], s["weighted_f1"], s["scored"], s["dropped_gold_zero"]) == (0.5, pytest.approx(0.5), 4, 1)
    # one class only in truth (all positive) and all predicted positive: 1.0, not a division by zero
    assert sentiment_metric({"a": 1.0}, {"a": 1.0})["weighted_f1"] == 1.0


def test_set_precision_recall_by_hand() -> None:
    # s1 G{a,b} P{a}: P 1 R .5 ; s2 G{c} P{}: 0 0 ; s3 G{} skipped ; s4 G{d} P{d,e,f,g}: .25 1
    out = set_precision_recall([({"a", "b"}, {"a"}), ({"c"}, set()), (set(), {"x"}), ({"d"}, {"d", "e", "f", "g"})])
    p, r = 1.25 / 3, 1.5 / 3
    assert (out["p"], out["r"], out["f"], out["evaluated"], out["skipped"]) == (pytest.approx(p), pytest.approx(r), pytest.approx(2 * p * r / (p + r)), 3, 1)


def test_hit_rate_by_hand_case_and_spacing(wheel: EmotionWheel) -> None:
    # gold " Happy " -> happy; pred "JOYFUL" (joy -> cheerful -> happy) hit; gold sad, pred none: miss; gold neutral skipped
    scores = hit_rate_metric({"a": " Happy ", "b": "sad", "c": "neutral"}, {"a": ["JOYFUL", "xyzzy"]}, wheel)
    assert scores["hit_rate"] == 0.5 and scores["wheels"]["wheel1"] == {"hit_rate": 0.5, "hits": 1, "scored": 2, "skipped": 1}


def test_openset_with_no_scorable_gold_is_not_a_score_of_zero(wheel: EmotionWheel, tmp_path: Path) -> None:
    """Was: every gold list empty or off the wheels -> F = P = R = 0.0 ("evaluated 0") is reported as a
    score, where the discrete and sentiment tasks stop with one line (run.py:_score_discrete / _score_sentiment) and a
    hit-rate wheel without gold is '-' and left out of the mean. metrics.py:63/75 turn 'no samples' into 0.0."""
    gt = write_table(tmp_path / "gt.csv", ["name", "openset"], [["a", "['xyzzy']"], ["b", "[]"]])
    pred = write_table(tmp_path / "pred.csv", ["name", "openset"], [["a", "['happy']"], ["b", "['sad']"]])
    try:
        result = evaluate(str(gt), str(pred), wheel=wheel)
    except UserError:
        return
    level1 = result["emotion_wheel"]["level1"]
    assert level1["f"] is None, f"reported F {level1['f']} with {level1['wheels']['wheel1']['evaluated']} samples evaluated"


def test_suite_ovmerd_with_no_scorable_gold_is_not_scored(wheel: EmotionWheel, tmp_path: Path) -> None:
    """The same in the suite: OV-MERD+ whose gold lists are all empty (-> ['neutral'], skipped) is 'scored' 0.00."""
    gt, pred = tmp_path / "GT", tmp_path / "PRED"
    write_table(gt / "ovmerdplus-process" / "ovlabel.csv", ["name", "openset"], [["o1", "[]"], ["o2", "[]"]])
    write_result_npz(pred / "results-ovmerdplus" / "demo" / "checkpoint_1_loss_1-openset.npz", {"o1": "['happy']", "o2": "['sad']"})
    entry = run_suite(str(pred), str(gt), wheel)["runs"][0]["datasets"]["OV-MERD+"]
    assert entry["status"] != "scored", f"status {entry['status']}, best {entry['best']}"


# ------------------------------------------------------------------ prediction tables (fine)


def test_prediction_tables_hostile_cells(tmp_path: Path) -> None:
    """Fine: non-finite / odd sentiment cells are 'unrecognised' (0) in predictions and an error in gold; duplicate
    names (also after `key`'s last part, after stripping) are one line; empty and header-only files behave."""
    assert [sentiment_value(v) for v in ("nan", "inf", "1e400", "-Infinity", True, None, " Positive. ", "'neutral'")] == [
        None,
        None,
        None,
        None,
        None,
        None,
        1.0,
        0.0,
    ]
    (tmp_path / "p.jsonl").write_text('{"name": "a", "sentiment": NaN}\n{"name": "b", "sentiment": Infinity}\n{"name": "c", "sentiment": true}\n')
    side = read_side(str(tmp_path / "p.jsonl"), gold=False)
    assert side.sentiment == {"a": 0.0, "b": 0.0, "c": 0.0} and side.unrecognised_sentiment == ["a", "b", "c"]
    with pytest.raises(UserError, match="neither a number"):
        read_side(str(tmp_path / "p.jsonl"), gold=True)
    dup = write_table(tmp_path / "dup.csv", ["name", "openset"], [["a", "['x']"], [" a ", "['y']"]])
    with pytest.raises(UserError, match="appears more than once"):
        read_side(str(dup), gold=False)
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(UserError, match="is empty"):
        read_side(str(tmp_path / "empty.csv"))
    header_only = write_table(tmp_path / "h.csv", ["name", "openset"], [])
    assert read_side(str(header_only), gold=False).openset == {}


# ------------------------------------------------------------------ LLM label answers


@pytest.mark.parametrize(
    "answer",
    [
        '{"reasoning": ["he smiles", "his voice is steady"], "labels": ["happy"]}',
        '<think>Candidates ["sad", "angry"] do not fit.</think>\n{"labels": ["happy"]}',
        '{"examples": {"labels": ["sad"]}, "labels": ["happy"]}',
    ],
    ids=["extra-key-first", "think-block", "nested-example"],
)
def test_labels_key_wins_over_other_lists_in_the_answer(answer: str) -> None:
    """Was: llm_answers.read_labels:93-100: `_string_list` only unwraps an object whose ONLY key is `labels`; otherwise
    the tolerant loop returns the first string list anywhere in the text (another key's value, a <think> block)."""
    assert read_labels(answer)[0] == ["happy"]


@pytest.mark.parametrize("answer", ["null", "true", '"null"', "I'm sorry, I can't.", "Sorry, no."])
def test_non_answers_are_not_labels(answer: str) -> None:
    """Was: the bare-list fallback (llm_answers.py:115-118) turns JSON null/true and short refusals into labels
    (['null'], ['true'], ["I'm sorry", "I can't"], ['Sorry', 'no'])."""
    with pytest.raises(ValueError):
        read_labels(answer)


def test_answer_repeating_the_prompt_is_not_an_empty_label_list() -> None:
    """Was: an answer that echoes the system prompt yields its example `{"labels": []}` as the labels (no failure)."""
    from emer_builder.transforms.llm_explainer import load_prompts

    prompt = load_prompts("emer-v2")["open_vocab_labels"].system.substitute(language="English", n_frames="", data="")
    with pytest.raises(ValueError):
        read_labels(prompt)


@pytest.mark.parametrize(
    ("answer", "labels"),
    [('{"labels": ["\\u5feb\\u4e50", "\\u60b2', ["快乐"]), ('{"labels": ["a \\"b\\" c", "d', ['a "b" c'])],
    ids=["unicode-escape", "escaped-quote"],
)
def test_truncated_json_strings_are_unescaped(answer: str, labels: list[str]) -> None:
    """Was: the cut-at-max_tokens path (llm_answers.py:111) returns the raw JSON text of each string, escapes and all."""
    assert read_labels(answer)[0] == labels


def test_label_content_is_bounded_and_clean() -> None:
    """Was: the JSON path keeps any number and length of labels, control characters and markup as they are
    (read as a clean 'json' answer), while the bare-text path allows at most 12 short word groups."""
    huge = json.dumps({"labels": ["happy"] * 2000 + ["x" * 5000]})
    labels, how = read_labels(huge)
    assert len(labels) <= 100 and max(map(len, labels)) <= 200, f"{len(labels)} labels read as {how!r}"
    dirty, _ = read_labels(json.dumps({"labels": ["happy\u0000", "sad\nangry", "<img src=x onerror=alert(1)>"]}))
    assert not any(ch in label for label in dirty for ch in "\x00\n<>"), dirty


@pytest.mark.parametrize(
    ("answer", "labels", "how"),
    [
        ('```json\n{"labels": ["happy"]}\n```', ["happy"], "json"),
        ('```JSON\n{"labels": ["happy"]}\n```\nHope this helps!', ["happy"], "tolerant"),
        ('["happy", "calm"]', ["happy", "calm"], "json"),
        ('{"labels": ["快乐", "悲伤"]}', ["快乐", "悲伤"], "json"),
        ('{"labels": ["happy", "sa', ["happy"], "tolerant"),
    ],
)
def test_label_answers_that_are_fine(answer: str, labels: list[str], how: str) -> None:
    assert read_labels(answer) == (labels, how)


@pytest.mark.parametrize("answer", ['{"labels": [1, 2]}', '{"labels": "happy, sad"}', '{"labels": null}', "42", "N/A", "```\n```", "[{}]"])
def test_label_answers_that_fail_cleanly(answer: str) -> None:
    with pytest.raises(ValueError, match="labels answer is unusable"):
        read_labels(answer)


def _explainer_answering(monkeypatch: pytest.MonkeyPatch, answer: str):
    from emer_builder.transforms.explanation import ExplainInput, FieldValue
    from emer_builder.transforms.llm_explainer import LlmExplainer

    explainer = LlmExplainer("http://127.0.0.1:9/v1", "m", max_retries=0)
    monkeypatch.setattr(explainer, "_complete", lambda ask, fmt: (answer, "stop"))
    item = ExplainInput("k", "n", {}, chosen={"multimodal_explanation": FieldValue("He smiles.", "en", "rules:1")})
    return explainer, item


def test_explainer_unusable_answer_is_one_failure_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fine: an unusable labels answer is Unavailable with a one-line reason, counted as a failure."""
    from emer_builder.transforms.explanation import Unavailable

    explainer, item = _explainer_answering(monkeypatch, '{"labels": [1, 2]}')
    result = explainer.explain("open_vocab_labels", item)
    assert isinstance(result, Unavailable) and "\n" not in result.reason and explainer.failures == 1


def test_explainer_stores_another_keys_list_as_the_labels(monkeypatch: pytest.MonkeyPatch) -> None:
    """Was, end to end: the reasoning list becomes the field's labels (source llm:m), with no failure counted."""
    explainer, item = _explainer_answering(monkeypatch, '{"reasoning": ["he smiles", "steady voice"], "labels": ["happy"]}')
    assert explainer.explain("open_vocab_labels", item).value == ["happy"]


# ------------------------------------------------------------------ LLM sentiment answers


@pytest.mark.parametrize(
    ("answer", "word"),
    [
        ('{"sentiment": "Positive."}', "positive"),  # the text path drops the full stop; the JSON path keeps it
        ('```JSON\n{"sentiment": "negative"}\n```', "negative"),  # removeprefix("json") is case-sensitive
        ('JSON\n{"sentiment": "negative"}', "negative"),
    ],
)
def test_sentiment_answers_read_like_their_plain_text_forms(answer: str, word: str) -> None:
    """Was: evaluate/sentiment.py:64/68 reads these clear answers as unrecognised words (scored 0)."""
    assert read_sentiment(answer, "json_object")[0] == word


@pytest.mark.parametrize(
    ("answer", "word"),
    [
        ('{"sentiment": "negative"}', "negative"),
        ('```json\n{"sentiment": "neutral"}\n```', "neutral"),
        ("Positive.", "positive"),
        ('"positive"', "positive"),
        ("", ""),
        ("I'm sorry, I can't help with that.", "i'm sorry, i can't help with that"),
    ],
)
def test_sentiment_answers_that_are_fine(answer: str, word: str) -> None:
    """Fine: never raises; anything but the three words is kept and scored 0 (counted as unrecognised)."""
    assert read_sentiment(answer, "json_schema")[0] == word

