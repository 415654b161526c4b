"""Issue 23: `emer evaluate --suite mer-unibench` scores the AffectGPT authors' result files against MERBench's
label files in one command: per-dataset procedure, every checkpoint, the best marked, the paper's columns,
"missing" for absent datasets, the wheel-table set named; and MERBench's pickles read without running code.

Every layout here is written by the tests (tests/unibench_fixtures.py); expected scores are computed by hand
in the comments beside them.
"""

from __future__ import annotations

import csv
import http.server
import io
import json
import os
import pickle
import shutil
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from emer_builder.cli.main import main
from emer_builder.core.config import LlmConfig
from emer_builder.core.errors import UserError
from emer_builder.evaluate.safe_npz import UnsafePickle, load_npz, restricted_loads
from emer_builder.evaluate.suite_report import format_suite, format_suite_csv, format_suite_markdown
from emer_builder.evaluate.unibench import DATASETS, find_checkpoints, run_suite
from emer_builder.transforms import wheel as wheel_mod
from emer_builder.transforms.wheel import TABLE_SETS, EmotionWheel, wheel_dir

from tests import openai_loopback
from tests.openai_loopback import OpenAILoopback
from tests.shared_data import SHARED_DATA
from tests.unibench_fixtures import write_label_npz, write_result_npz, write_table, write_wheel_tables

COLUMNS = ["MER2023", "MER2024", "MELD", "IEMOCAP", "CMU-MOSI", "CMU-MOSEI", "CH-SIMS", "CH-SIMS v2", "OV-MERD+"]
CK1, CK2 = "checkpoint_000010_loss_1.203", "checkpoint_000020_loss_0.871"


# --- the layouts ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("wheel")
    return {"mertools": write_wheel_tables(root / "mertools", affectgpt=False), "affectgpt": write_wheel_tables(root / "affectgpt", affectgpt=True)}


def _mer(gt: Path, pred: Path, key: str, folder: str) -> None:
    """MER2023 / MER2024: gold words in test1_corpus (strings); two checkpoints, the first better.

    gold s1 happy, s2 neutral (skipped everywhere), s3 angry (mad), s4 sad
    CK1: s1 joyful+bold -> happy hit, s3 "sad, gloomy" -> sad (gloomy is no base word) miss, s4 [sadly] -> sad hit: 2/3 on every wheel
    CK2: s1 angry -> mad miss, s3 miss, s4 hit: 1/3
    """
    write_label_npz(
        gt / folder / "label-6way.npz",
        train_corpus={"t1": {"emo": "happy", "val": np.float64(1.0)}},
        test1_corpus={
            "s1": {"emo": "happy", "val": np.float64(2.0)},
            "s2": {"emo": "neutral", "val": np.float64(0.0)},
            "s3": {"emo": "angry", "val": np.float64(-1.5)},
            "s4": {"emo": "sad", "val": np.float64(-1.0)},
        },
    )
    run = pred / f"results-{key}" / "demo"
    write_result_npz(run / f"{CK1}-openset.npz", {"s1": "['joyful', 'bold']", "s2": "['calm']", "s3": "sad, gloomy", "s4": "[sadly]"})
    write_result_npz(run / f"{CK2}-openset.npz", {"s1": "['angry']", "s2": "['calm']", "s3": "sad, gloomy", "s4": "[sadly]"})
    np.savez_compressed(run / f"{CK1}.npz", name2reason=np.array(["the reasons, not read"]))  # the reason file beside them


def _meld(gt: Path, pred: Path) -> None:
    """MELD: emotion indices (anger joy sadness neutral disgust fear surprise), the `fear` case.

    gold dia0_utt0 fear, dia0_utt1 joy, dia0_utt2 neutral (skipped), dia0_utt3 sadness, dia1_utt0 anger
    pred anxious (scared), "happy, cheerful" (happy), fear, angry (mad: miss), anger (mad: hit)
    MERTools' tables: fear -> scared on every wheel: 3 hits of 4 on each wheel -> 0.75
    AffectGPT's: fear -> powerful on wheels 2-5 (its base words fear, fearless; `courageous` sorts first): 3/4, then 2/4 x 4 -> 0.55
    """
    write_label_npz(
        gt / "meld-process" / "label.npz",
        train_corpus={"dia9_utt0": {"emo": np.int64(1)}},
        test_corpus={
            "dia0_utt0": {"emo": np.int64(5)},
            "dia0_utt1": {"emo": np.int64(1)},
            "dia0_utt2": {"emo": np.int64(3)},
            "dia0_utt3": {"emo": np.int64(2)},
            "dia1_utt0": {"emo": 0},
        },
    )
    items = {"dia0_utt0": "['anxious']", "dia0_utt1": "happy, cheerful", "dia0_utt2": "['fear']", "dia0_utt3": "['angry']", "dia1_utt0": "['anger']"}
    write_result_npz(pred / "results-meld" / "demo" / f"{CK1}-openset.npz", items)
    write_result_npz(pred / "results-meld" / "other" / f"{CK1}-openset.npz", {**items, "dia0_utt0": "['fear']"})  # fear for fear: a hit on both


def _iemocap(gt: Path, pred: Path) -> None:
    """IEMOCAP: whole_corpus, Session 5 is the test set; indices happy sad neutral anger.

    Ses05F_impro01_F000 happy <- joy: hit; Ses05M_script01_M001 sad <- happy: miss; Ses05F_impro02_F002 neutral: skipped -> 1/2
    """
    write_label_npz(
        gt / "iemocap-process" / "label_4way.npz",
        whole_corpus={
            "Ses01F_impro01_F000": {"emo": 3},  # session 1: training, not scored
            "Ses05F_impro01_F000": {"emo": 0},
            "Ses05M_script01_M001": {"emo": 1},
            "Ses05F_impro02_F002": {"emo": 2},
        },
    )
    write_result_npz(
        pred / "results-iemocapfour" / "demo" / f"{CK1}-openset.npz",
        {"Ses05F_impro01_F000": "['joy']", "Ses05M_script01_M001": "['happy']", "Ses05F_impro02_F002": "[]"},
    )


MOSI_GOLD = {"v1": 1.2, "v2": -0.6, "v3": 0.0, "v4": 0.4, "v5": -1.0}


def _sentiment_sets(gt: Path, pred: Path) -> None:
    """CMU-MOSI from cached sentiment files; CMU-MOSEI through the LLM; CH-SIMS from an MMSA label.csv and our CSV.

    CMU-MOSI CK1 cached: positive, negative, positive (gold 0: dropped), neutral, "Negative" (not exactly a word: 0)
      kept v1 v2 v4 v5, truth T F T F, prediction T F F F: accuracy 3/4;
      F1(T) = 2*1*0.5/1.5 = 2/3, F1(F) = 2*(2/3)*1/(5/3) = 0.8, weighted (2*2/3 + 2*0.8)/4 = 0.733333
    CMU-MOSI CK2: no cached file and (here) no endpoint: listed, not scored
    """
    for folder in ("cmumosi-process", "cmumosei-process", "simsv2-process"):
        write_label_npz(gt / folder / "label.npz", train_corpus={"t": {"val": 1.0}}, test_corpus={k: {"val": np.float32(v)} for k, v in MOSI_GOLD.items()})
    mosi = pred / "results-cmumosi" / "demo"
    openset = {"v1": "['happy']", "v2": "['sad']", "v3": "['calm']", "v4": "['calm']", "v5": "['angry']"}
    write_result_npz(mosi / f"{CK1}-openset.npz", openset)
    write_result_npz(mosi / f"{CK1}-openset-sentiment.npz", {"v1": "positive", "v2": "negative", "v3": "positive", "v4": "neutral", "v5": "Negative"})
    write_result_npz(mosi / f"{CK2}-openset.npz", openset)
    # CMU-MOSEI: open-set lists only, mapped by the endpoint when one is given (the loopback test below)
    write_result_npz(
        pred / "results-cmumosei" / "demo" / f"{CK1}-openset.npz", {"v1": "['happy', 'excited']", "v2": "['sad']", "v3": "[]", "v4": "['worried']", "v5": "[]"}
    )
    # CH-SIMS v2: one cached checkpoint, every answer right: 1.0
    simsv2 = pred / "results-simsv2" / "demo"
    write_result_npz(simsv2 / f"{CK1}-openset.npz", openset)
    write_result_npz(simsv2 / f"{CK1}-openset-sentiment.npz", {"v1": "positive", "v2": "negative", "v3": "neutral", "v4": "positive", "v5": "negative"})
    # CH-SIMS: the corpus's own MMSA label.csv (test rows) and our prediction table with a sentiment column
    # kept 0001_1 (+), 0001_2 (-), 0002_1 (+); predicted +, +, +: accuracy 2/3; F1(T) = 0.8 x 2, F1(F) = 0 x 1 -> 0.533333
    write_table(
        gt / "sims-process" / "label.csv",
        ["video_id", "clip_id", "text", "label", "mode"],
        [
            ["0001", "1", "好", 0.8, "test"],
            ["0001", "2", "坏", -0.4, "test"],
            ["0001", "3", "嗯", 0.0, "test"],
            ["0002", "1", "行", 0.2, "test"],
            ["0009", "1", "训", -1.0, "train"],
        ],
    )
    write_table(
        pred / "results-sims" / "demo" / "ours.csv",
        ["name", "openset", "sentiment"],
        [["0001_1", "['happy']", "positive"], ["0001_2", "['sad']", "positive"], ["0002_1", "[]", "positive"]],
    )


def _ovmerd(gt: Path, pred: Path) -> None:
    """OV-MERD+: gold open-set lists (ovlabel.csv), the emotion-wheel F at level 1.

    o1 gold happy, fear / pred joy, anxious; o2 gold [] (neutral: skipped); o3 gold sad / pred angry, sadness
    MERTools: o1 {happy, scared} = {happy, scared}: P 1 R 1; o3 {sad} vs {mad, sad}: P .5 R 1 -> P .75 R 1, F 6/7 on every wheel
    AffectGPT, wheels 2-5: o1 {happy, powerful} vs {happy, scared}: P .5 R .5 -> P .5 R .75, F .6; wheel1 as MERTools
      -> F (6/7 + 4*0.6)/5 = 0.651429, P (0.75 + 4*0.5)/5 = 0.55, R (1 + 4*0.75)/5 = 0.8
    """
    write_table(gt / "ovmerdplus-process" / "ovlabel.csv", ["name", "openset"], [["o1", "['happy', 'fear']"], ["o2", "[]"], ["o3", "['sad']"]])
    write_result_npz(pred / "results-ovmerdplus" / "demo" / f"{CK1}-openset.npz", {"o1": "['joy', 'anxious']", "o2": "['happy']", "o3": "['angry', 'sadness']"})


@pytest.fixture()
def layout(tmp_path: Path) -> tuple[Path, Path]:
    """GT and PRED for runs `demo` (every dataset but MER2024's labels) and `other` (MELD only)."""
    gt, pred = tmp_path / "GT", tmp_path / "PRED"
    _mer(gt, pred, "mer2023", "mer2023-dataset-process")
    _mer(gt, pred, "mer2024", "mer2024-dataset-process")
    (gt / "mer2024-dataset-process" / "label-6way.npz").unlink()  # predictions without labels: missing
    _meld(gt, pred)
    _iemocap(gt, pred)
    _sentiment_sets(gt, pred)
    _ovmerd(gt, pred)
    return gt, pred


def _scores(result: dict, run: str = "demo") -> dict[str, float | str | None]:
    entries = next(r for r in result["runs"] if r["run"] == run)["datasets"]
    return {k: (e["best"]["score"] if e.get("best") else e["status"]) for k, e in entries.items()}


# --- the suite ---------------------------------------------------------------------------------------------


def test_suite_scores_every_dataset_with_its_procedure(layout: tuple[Path, Path], tables: dict[str, Path]) -> None:
    gt, pred = layout
    result = run_suite(str(pred), str(gt), EmotionWheel(tables["mertools"]))
    assert result["columns"] == COLUMNS == [d.title for d in DATASETS]
    assert [r["run"] for r in result["runs"]] == ["demo", "other"]
    scores = _scores(result)
    assert scores == {
        "MER2023": pytest.approx(2 / 3),
        "MER2024": "missing",
        "MELD": 0.75,
        "IEMOCAP": 0.5,
        "CMU-MOSI": pytest.approx((2 * 2 / 3 + 2 * 0.8) / 4),
        "CMU-MOSEI": "not scored",  # open-set lists only and no endpoint
        "CH-SIMS": pytest.approx(0.8 * 2 / 3),
        "CH-SIMS v2": 1.0,
        "OV-MERD+": pytest.approx(6 / 7),
    }
    demo = result["runs"][0]
    assert demo["mean"] is None and demo["scored"] == 7  # the mean needs all nine
    assert demo["datasets"]["MER2024"] == {"status": "missing", "reason": "no GT/mer2024-dataset-process/label-6way.npz or test.csv"}
    # every checkpoint scored, the first of the best marked; the reason file alone is no checkpoint to score
    mer = demo["datasets"]["MER2023"]
    assert mer["procedure"].startswith("hit rate") and mer["metric"] == "hit_rate" and mer["tables"].startswith("local tables")
    assert [(c["checkpoint"], c["score"], c["best"]) for c in mer["checkpoints"]] == [(CK1, pytest.approx(2 / 3), True), (CK2, pytest.approx(1 / 3), False)]
    assert mer["best"] == {"checkpoint": CK1, "score": pytest.approx(2 / 3)} and mer["gt_samples"] == 4
    assert mer["checkpoints"][0]["files"] == [f"{CK1}-openset.npz"]
    # IEMOCAP: Session 5 only
    assert demo["datasets"]["IEMOCAP"]["gt_samples"] == 3
    # CMU-MOSI: the cached answers compared exactly; the checkpoint without them is listed, not scored
    mosi = demo["datasets"]["CMU-MOSI"]
    first, second = mosi["checkpoints"]
    assert (first["accuracy"], first["unrecognised"], first["sentiment_source"], first["best"]) == (0.75, 1, f"cached file {CK1}-openset-sentiment.npz", True)
    assert second["score"] is None
    assert (
        second["reason"] == f"no cached {CK2}-openset-sentiment.npz; no LLM endpoint to map its open-set labels (--config, or --llm-base-url and --llm-model)"
    )
    assert mosi["tables"] is None and mosi["procedure"].startswith("sentiment weighted F1")
    assert demo["datasets"]["CMU-MOSEI"]["reason"] == "no checkpoint could be scored"
    sims = demo["datasets"]["CH-SIMS"]["checkpoints"][0]
    assert (sims["checkpoint"], sims["sentiment_source"], sims["counts"]) == ("ours", "column sentiment", {"gt": 4, "pred": 3, "missing_predictions": 1})
    ov = demo["datasets"]["OV-MERD+"]["checkpoints"][0]
    assert (ov["precision"], ov["recall"]) == (0.75, 1.0)
    # the other run: MELD with fear predicted for fear, the rest missing
    assert _scores(result, "other") == {c: ("missing" if c != "MELD" else 0.75) for c in COLUMNS}
    assert json.loads(json.dumps(result)) == result


def test_the_two_wheel_table_sets_score_fear_differently(layout: tuple[Path, Path], tables: dict[str, Path]) -> None:
    gt, pred = layout
    mertools = run_suite(str(pred), str(gt), str(tables["mertools"]))
    affectgpt = run_suite(str(pred), str(gt), str(tables["affectgpt"]))
    meld_m, meld_a = (r["runs"][0]["datasets"]["MELD"]["checkpoints"][0] for r in (mertools, affectgpt))
    assert meld_m["wheels"] == dict.fromkeys(("wheel1", "wheel2", "wheel3", "wheel4", "wheel5"), 0.75)
    assert meld_a["wheels"] == {"wheel1": 0.75, "wheel2": 0.5, "wheel3": 0.5, "wheel4": 0.5, "wheel5": 0.5}
    assert meld_a["score"] == pytest.approx(0.55)
    ov = affectgpt["runs"][0]["datasets"]["OV-MERD+"]["checkpoints"][0]
    assert (ov["score"], ov["precision"], ov["recall"]) == (pytest.approx((6 / 7 + 4 * 0.6) / 5), pytest.approx(0.55), pytest.approx(0.8))
    # sentiment sets do not use the wheel: the same under both
    assert _scores(mertools)["CMU-MOSI"] == _scores(affectgpt)["CMU-MOSI"]
    assert mertools["wheel_tables"] != affectgpt["wheel_tables"]
    assert affectgpt["runs"][0]["datasets"]["MELD"]["tables"] == affectgpt["wheel_tables"] == EmotionWheel(tables["affectgpt"]).origin()


def test_text_markdown_and_csv_name_procedure_and_tables(layout: tuple[Path, Path], tables: dict[str, Path]) -> None:
    gt, pred = layout
    result = run_suite(str(pred), str(gt), str(tables["affectgpt"]))
    origin = result["wheel_tables"]
    text = format_suite(result)
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("run "))
    assert header.split() == ["run", "MER2023", "MER2024", "MELD", "IEMOCAP", "CMU-MOSI", "CMU-MOSEI", "CH-SIMS", "CH-SIMS", "v2", "OV-MERD+", "mean"]
    demo = next(line for line in lines if line.startswith("demo "))
    # x 100, two decimals, as the authors print them
    assert demo.split() == ["demo", "66.67", "missing", "55.00", "50.00", "73.33", "not", "scored", "53.33", "100.00", "65.14", "-"]
    # fear predicted for fear hits on both sets: 3 of 4 (sadness is still missed)
    assert next(line for line in lines if line.startswith("other ")).split() == ["other", *["missing"] * 2, "75.00", *["missing"] * 6, "-"]
    assert (
        f"MER2023, MER2024, MELD, IEMOCAP: hit rate (gold level-1 centre among the predicted ones, mean of wheel1..5); emotion-wheel tables {origin}" in lines
    )
    assert "CMU-MOSI, CMU-MOSEI, CH-SIMS, CH-SIMS v2: sentiment weighted F1 (positive vs negative, gold 0 dropped)" in lines
    assert f"OV-MERD+: emotion-wheel F, level 1 (mean of wheel1..5); emotion-wheel tables {origin}" in lines
    # the checkpoints, best marked, each block naming its procedure and tables
    assert any(line.startswith("MELD, run demo: hit rate") and f"tables {origin}" in line for line in lines)
    assert f"* {CK1}" in text and any(line.startswith(f"  {CK2}") and "33.33" in line for line in lines)
    assert (
        f"  {CK2}: not scored: no cached {CK2}-openset-sentiment.npz; no LLM endpoint to map its open-set labels (--config, or --llm-base-url and --llm-model)"
        in lines
    )

    md = format_suite_markdown(result).splitlines()
    assert md[0] == "| run | MER2023 | MER2024 | MELD | IEMOCAP | CMU-MOSI | CMU-MOSEI | CH-SIMS | CH-SIMS v2 | OV-MERD+ | mean |"
    assert md[2] == "| demo | 66.67 | missing | 55.00 | 50.00 | 73.33 | not scored | 53.33 | 100.00 | 65.14 | - |"
    assert f"- OV-MERD+: emotion-wheel F, level 1 (mean of wheel1..5); emotion-wheel tables {origin}" in md

    rows = list(csv.DictReader(io.StringIO(format_suite_csv(result))))
    meld = [r for r in rows if r["run"] == "demo" and r["dataset"] == "MELD"]
    assert len(meld) == 1 and meld[0]["wheel_tables"] == origin and meld[0]["best"] == "yes" and float(meld[0]["score"]) == pytest.approx(0.55)
    assert meld[0]["procedure"].startswith("hit rate")
    mer = [(r["checkpoint"], r["best"], round(float(r["score"]), 6)) for r in rows if r["run"] == "demo" and r["dataset"] == "MER2023"]
    assert mer == [(CK1, "yes", 0.666667), (CK2, "", 0.333333)]
    missing = next(r for r in rows if r["run"] == "demo" and r["dataset"] == "MER2024")
    assert missing["status"] == "missing" and missing["checkpoint"] == "" and "label-6way.npz" in missing["reason"]


def test_mean_of_all_nine_and_the_authors_argmax(layout: tuple[Path, Path], tables: dict[str, Path]) -> None:
    gt, pred = layout
    _mer(gt, pred, "mer2024", "mer2024-dataset-process")  # labels back
    cached = pred / "results-cmumosei" / "demo" / f"{CK1}-openset-sentiment.npz"
    write_result_npz(cached, {"v1": "positive", "v2": "negative", "v3": "neutral", "v4": "positive", "v5": "negative"})
    # a tie: the first in name order is the best, as np.argmax over the sorted files
    shutil.copyfile(pred / "results-ovmerdplus" / "demo" / f"{CK1}-openset.npz", pred / "results-ovmerdplus" / "demo" / f"{CK2}-openset.npz")
    result = run_suite(str(pred), str(gt), EmotionWheel(tables["mertools"]))
    demo = result["runs"][0]
    bests = [demo["datasets"][c]["best"]["score"] for c in COLUMNS]
    assert bests == pytest.approx([2 / 3, 2 / 3, 0.75, 0.5, (2 * 2 / 3 + 2 * 0.8) / 4, 1.0, 0.8 * 2 / 3, 1.0, 6 / 7])
    assert demo["mean"] == pytest.approx(sum(bests) / 9) and demo["scored"] == 9
    assert [c["best"] for c in demo["datasets"]["OV-MERD+"]["checkpoints"]] == [True, False]


def test_sentiment_mapped_by_the_llm_only_without_a_cached_file(
    layout: tuple[Path, Path], tables: dict[str, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The mapping goes through evaluate.sentiment's mapper against the real openai client and the loopback server."""
    positive, negative = {"happy", "excited"}, {"sad", "worried"}

    def answer(record: openai_loopback.Recorded) -> str:
        labels = set(record.data()["labels"])
        word = "positive" if labels & positive else "negative" if labels & negative else "neutral"
        return json.dumps({"sentiment": word}) if record.body.get("response_format") else word

    phrases = (*openai_loopback.FIELD_PHRASES, ("choose the most likely sentiment", "openset_sentiment"))
    monkeypatch.setattr(openai_loopback, "FIELD_PHRASES", phrases)
    monkeypatch.setattr(openai_loopback, "answer_for", answer)
    monkeypatch.setenv("EMER_TEST_SUITE_KEY", "sk-suite")
    gt, pred = layout
    with OpenAILoopback("sk-suite") as server:
        llm = LlmConfig(base_url=server.base_url, model="loopback-chat", api_key_env="EMER_TEST_SUITE_KEY", cache_dir=str(tmp_path / "cache"))  # type: ignore[arg-type]
        result = run_suite(str(pred), str(gt), EmotionWheel(tables["mertools"]), llm=llm)
        asked = server.chat_requests("openset_sentiment")
    demo = result["runs"][0]["datasets"]
    # CMU-MOSEI: v1 happy+excited +, v2 sad -, v3 gold 0 (never asked), v4 worried - (gold +), v5 [] neutral without a request (gold -)
    # truth T F T F, prediction T F F F: the same 0.733333 as CMU-MOSI's cached answers
    mosei = demo["CMU-MOSEI"]["checkpoints"][0]
    assert mosei["score"] == pytest.approx((2 * 2 / 3 + 2 * 0.8) / 4) and mosei["sentiment_source"].startswith("open-set labels mapped by llm:loopback-chat")
    # one request per distinct list: CMU-MOSI CK2's happy, sad, calm, angry (v3 has gold 0), then CMU-MOSEI's new ones (sad is cached)
    assert sorted(tuple(r.data()["labels"]) for r in asked) == [("angry",), ("calm",), ("happy",), ("happy", "excited"), ("sad",), ("worried",)]
    # CMU-MOSI: CK1 keeps its cached file (never asked), CK2 is now mapped: + - 0 0 for truth T F T F, the same score;
    # on a tie the first in name order stays the best
    first, second = demo["CMU-MOSI"]["checkpoints"]
    assert first["sentiment_source"].startswith("cached file") and second["sentiment_source"].startswith("open-set labels mapped by llm:")
    assert second["score"] == first["score"] and (first["best"], second["best"]) == (True, False)
    assert second["llm"]["calls"] == 4 and mosei["llm"]["calls"] == 2 and mosei["llm_failures"] == 0


def test_cli_suite_default_tables_are_affectgpts(
    layout: tuple[Path, Path], tables: dict[str, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --wheel-dir the suite fetches AffectGPT's pinned set (here served on loopback, its pins set to the fixture's hashes)."""
    gt, pred = layout
    with _serving(tables["affectgpt"], monkeypatch, "AFFECTGPT_BASE_URL", wheel_mod.AFFECTGPT_FILE_SHA256, tmp_path):
        assert main(["evaluate", "--suite", "mer-unibench", "--pred-dir", str(pred), "--gt-dir", str(gt)]) == 0
        out = capsys.readouterr().out
        cache = Path(os.environ["EMER_HOME"]) / "emotion-wheel" / f"affectgpt-{wheel_mod.AFFECTGPT_COMMIT}"
        assert sorted(p.name for p in cache.iterdir()) == sorted(wheel_mod.AFFECTGPT_FILE_SHA256)
    origin = EmotionWheel(tables["affectgpt"]).origin().replace("local tables (not MERTools@89120b7 or AffectGPT@d961cab)", "AffectGPT@d961cab")
    assert f"MER2023, MER2024, MELD, IEMOCAP: hit rate (gold level-1 centre among the predicted ones, mean of wheel1..5); emotion-wheel tables {origin}" in out
    assert next(line for line in out.splitlines() if line.startswith("demo ")).split()[3] == "55.00"  # AffectGPT's MELD
    for flag in ("--json", "--csv", "--markdown"):
        assert main(["evaluate", "--suite", "mer-unibench", "--pred-dir", str(pred), "--gt-dir", str(gt), "--wheel-dir", str(tables["mertools"]), flag]) == 0
        out = capsys.readouterr().out
        if flag == "--json":
            assert json.loads(out)["runs"][0]["datasets"]["MELD"]["best"]["score"] == 0.75
        elif flag == "--csv":
            assert out.startswith("run,dataset,status,procedure,wheel_tables,checkpoint,best,score,")
        else:
            assert out.splitlines()[2].startswith("| demo | 66.67 | missing | 75.00 |")


def test_cli_suite_arguments_are_one_line(layout: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gt, pred = layout
    cases = [
        (["--suite", "mer-unibench", "--pred-dir", str(pred)], "--suite takes --pred-dir PRED and --gt-dir GT"),
        (["--suite", "mer-unibench", "--pred-dir", str(pred), "--gt-dir", str(tmp_path / "nope")], "--gt-dir " + str(tmp_path / "nope") + ": not a folder"),
        (["--suite", "mer-unibench", "--pred-dir", str(gt), "--gt-dir", str(gt)], "no results-<dataset> folder of MER-UniBench"),
        (
            ["--suite", "mer-unibench", "--pred-dir", str(pred), "--gt-dir", str(gt), "--wheel-dir", "fetch:nope"],
            "--wheel-dir fetch:nope: no such pinned table set",
        ),
        (["--gt", str(gt), "--pred", str(pred), "--csv"], "--csv and --markdown are for --suite"),
        (["--pred-dir", str(pred)], "emer evaluate takes --gt FILE and --pred FILE, or --suite mer-unibench"),
    ]
    for args, message in cases:
        assert main(["evaluate", *args]) == 2, args
        err = capsys.readouterr().err
        assert message in err and err.startswith("emer: error: ") and err.count("\n") == 1


def test_layout_readers(layout: tuple[Path, Path], tables: dict[str, Path], tmp_path: Path) -> None:
    gt, pred = layout
    names = [c.name for c in find_checkpoints(pred / "results-mer2023" / "demo")]
    assert names == [CK1, CK2]
    # a reason file without its open-set file: listed, not scored (its labels would need the authors' LLM step)
    (pred / "results-mer2023" / "demo" / f"{CK2}-openset.npz").rename(pred / "results-mer2023" / "demo" / f"{CK2}.npz")
    result = run_suite(str(pred), str(gt), EmotionWheel(tables["mertools"]))
    second = result["runs"][0]["datasets"]["MER2023"]["checkpoints"][1]
    assert second == {"checkpoint": CK2, "files": [], "score": None, "reason": f"no {CK2}-openset.npz (its open-set labels are not extracted)", "best": False}
    # MELD's own test table stands in for MERBench's npz: the same names, the same words
    (gt / "meld-process" / "label.npz").unlink()
    write_table(
        gt / "meld-process" / "test_sent_emo.csv",
        ["Sr No.", "Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID"],
        [[1, "Oh no.", "Ross", "fear", "negative", 0, 0], [2, "Great!", "Monica", "joy", "positive", 0, 1], [3, "Okay.", "Joey", "neutral", "neutral", 0, 2],
         [4, "I miss her.", "Rachel", "sadness", "negative", 0, 3], [5, "Get out!", "Chandler", "anger", "negative", 1, 0]],
    )  # fmt: skip
    again = run_suite(str(pred), str(gt), EmotionWheel(tables["mertools"]))
    assert again["runs"][0]["datasets"]["MELD"]["gt"].endswith("test_sent_emo.csv") and _scores(again)["MELD"] == 0.75
    # names and items written as byte strings (Python 2 era files) read as text
    np.savez_compressed(pred / "results-meld" / "demo" / f"{CK1}-openset.npz", filenames=np.array([b"dia0_utt1"]), fileitems=np.array([b"['joy']"]))
    bytes_meld = run_suite(str(pred), str(gt), EmotionWheel(tables["mertools"]))["runs"][0]["datasets"]["MELD"]["checkpoints"][0]
    assert bytes_meld["counts"] == {"gt": 5, "pred": 1, "missing_predictions": 4} and bytes_meld["wheels"]["wheel1"] == 0.25  # 1 hit of 4 scored
    # a gold set on which nothing maps (all neutral), or whose sentiments are all 0: not scored, said why
    write_label_npz(gt / "mer2023-dataset-process" / "label-6way.npz", test1_corpus={"s1": {"emo": "neutral"}, "s2": {"emo": "neutral"}})
    write_label_npz(gt / "cmumosi-process" / "label.npz", test_corpus={k: {"val": 0.0} for k in MOSI_GOLD})
    flat = run_suite(str(pred), str(gt), EmotionWheel(tables["mertools"]))["runs"][0]["datasets"]
    assert flat["MER2023"]["status"] == "not scored" and flat["MER2023"]["checkpoints"][0]["reason"].startswith("no gold label maps onto any emotion wheel")
    assert flat["CMU-MOSI"]["checkpoints"][0]["reason"] == "every gold sentiment is 0 (neutral): nothing is left to score"
    assert "not scored: no gold label maps onto any emotion wheel" in format_suite(run_suite(str(pred), str(gt), EmotionWheel(tables["mertools"])))
    # result folders without run folders
    empty = tmp_path / "EMPTY"
    (empty / "results-meld").mkdir(parents=True)
    with pytest.raises(UserError, match="no run folder under its results-<dataset> folders"):
        run_suite(str(empty), str(gt), EmotionWheel(tables["mertools"]))
    # an emotion index outside the dataset's list is one line
    write_label_npz(gt / "iemocap-process" / "label_4way.npz", whole_corpus={"Ses05F_impro01_F000": {"emo": 7}})
    with pytest.raises(UserError, match=r"emotion index 7 has no word for IEMOCAP \(known: happy, sad, neutral, anger\)"):
        run_suite(str(pred), str(gt), EmotionWheel(tables["mertools"]))


# --- the restricted unpickler ------------------------------------------------------------------------------


class _RunsCode:
    """A pickle that would run a shell command when loaded with a plain unpickler."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _npz_with_pickle(path: Path, payload: bytes, member: str = "test_corpus") -> Path:
    """An npz whose member is a 0-d object array header followed by `payload` as its pickle."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|O", "fortran_order": False, "shape": ()})
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{member}.npy", header.getvalue() + payload)
    return path


def test_hostile_pickle_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    hostile = pickle.dumps({"s1": {"emo": _RunsCode(marker)}})
    with pytest.raises(UnsafePickle, match=r"^x: its pickle names posix\.system, which is not plain data") as e:
        restricted_loads(hostile, "x")
    assert "\n" not in str(e.value) and not marker.exists()
    # inside a MERBench-shaped label file, through the suite and the CLI
    gt, pred = tmp_path / "GT", tmp_path / "PRED"
    (gt / "meld-process").mkdir(parents=True)
    _npz_with_pickle(gt / "meld-process" / "label.npz", hostile)
    write_result_npz(pred / "results-meld" / "demo" / f"{CK1}-openset.npz", {"s1": "['fear']"})
    with pytest.raises(UnsafePickle, match=r"label\.npz \[test_corpus\]: its pickle names posix\.system"):
        run_suite(str(pred), str(gt), "unused-folder")
    assert not marker.exists()
    # a pickle of an array whose items would run code: the same
    array = np.empty((), dtype=object)
    array[()] = {"s1": _RunsCode(marker)}
    buf = io.BytesIO()
    np.lib.format.write_array(buf, array, allow_pickle=True)
    (tmp_path / "member.npz").unlink(missing_ok=True)
    with zipfile.ZipFile(tmp_path / "member.npz", "w") as z:
        z.writestr("test_corpus.npy", buf.getvalue())
    with pytest.raises(UnsafePickle, match="posix.system"):
        load_npz(tmp_path / "member.npz")
    assert not marker.exists()
    # other names that are no plain data: refused the same way
    for module, name in (("builtins", "eval"), ("subprocess", "Popen"), ("numpy", "load"), ("numpy.lib.npyio", "NpzFile")):
        stream = b"\x80\x04c" + module.encode() + b"\n" + name.encode() + b"\n."  # PROTO 4, GLOBAL module name, STOP
        with pytest.raises(UnsafePickle, match=f"names {module}.{name},"):
            restricted_loads(stream, "y")


def test_plain_data_and_numpy_arrays_load(tmp_path: Path) -> None:
    corpus = {"a": {"emo": np.int64(5), "val": np.float32(-0.5), "name": "x"}, "b": {"emo": "happy", "val": 1.0, "tags": ("x", {1, 2}), "raw": b"\xff"}}
    path = write_label_npz(tmp_path / "label.npz", test_corpus=corpus, names=np.array(["a", "b"]), matrix=np.arange(6, dtype=np.int16).reshape(2, 3))
    data = load_npz(path)
    assert data["test_corpus"] == corpus and type(data["test_corpus"]["a"]["emo"]) is np.int64
    assert data["names"].tolist() == ["a", "b"] and data["matrix"].tolist() == [[0, 1, 2], [3, 4, 5]]
    # protocol 0 and 2 pickles (Python 2 era files) spell builtins and bytes differently
    for protocol in (0, 2):
        assert restricted_loads(pickle.dumps({"a": {1, 2}, "b": b"\x00\xff", "c": (1.5, None)}, protocol=protocol)) == {
            "a": {1, 2},
            "b": b"\x00\xff",
            "c": (1.5, None),
        }
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(UserError, match=r"bad\.npz: not a readable \.npz"):
        load_npz(tmp_path / "bad.npz")
    with pytest.raises(UserError, match=r"cannot read its pickle"):
        load_npz(_npz_with_pickle(tmp_path / "cut.npz", pickle.dumps({"a": 1})[:-3]))


# --- the pinned table sets ---------------------------------------------------------------------------------


def _serving(folder: Path, monkeypatch: pytest.MonkeyPatch, url_name: str, pins: dict[str, str], tmp_path: Path):
    """Serve `folder` on loopback as the pinned set's URL, its pins set to the folder's hashes, EMER_HOME in tmp."""
    import contextlib
    import hashlib

    @contextlib.contextmanager
    def serve() -> Iterator[None]:
        class Quiet(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(folder), **kwargs)

            def log_message(self, *args) -> None:
                pass

        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
        thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        monkeypatch.setattr(wheel_mod, url_name, f"http://127.0.0.1:{httpd.server_address[1]}/")
        for name in list(pins):
            monkeypatch.setitem(pins, name, hashlib.sha256((folder / name).read_bytes()).hexdigest())
        monkeypatch.setenv("EMER_HOME", str(tmp_path / "home"))
        for proxy in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
            monkeypatch.delenv(proxy, raising=False)
        try:
            yield
        finally:
            httpd.shutdown()
            httpd.server_close()

    return serve()


def test_both_sets_pinned_and_selectable(tables: dict[str, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    affectgpt, mertools = TABLE_SETS["affectgpt"], TABLE_SETS["mertools"]
    # AffectGPT@d961cab's files are MERTools@89120b7's but format.csv
    assert {k for k in mertools.sha256 if mertools.sha256[k] != affectgpt.sha256[k]} == {"format.csv"}
    assert affectgpt.base_url() == "https://raw.githubusercontent.com/ouyangjutian/AffectGPT/d961cab04ab2903fefb22a641331e1242949b15d/AffectGPT/emotion_wheel/"
    with _serving(tables["affectgpt"], monkeypatch, "AFFECTGPT_BASE_URL", wheel_mod.AFFECTGPT_FILE_SHA256, tmp_path):
        folder = wheel_dir("fetch:affectgpt")
        assert folder == Path(os.environ["EMER_HOME"]) / "emotion-wheel" / f"affectgpt-{wheel_mod.AFFECTGPT_COMMIT}"
        assert EmotionWheel(folder).origin().startswith("AffectGPT@d961cab sha256:")
    with _serving(tables["mertools"], monkeypatch, "BASE_URL", wheel_mod.FILE_SHA256, tmp_path):
        folder = wheel_dir("fetch:mertools")
        assert folder == Path(os.environ["EMER_HOME"]) / "emotion-wheel" / wheel_mod.UPSTREAM_COMMIT
        assert EmotionWheel(folder).origin().startswith("MERTools@89120b7 sha256:")
    with pytest.raises(UserError, match=r"--wheel-dir fetch:other: no such pinned table set; use fetch:mertools or fetch:affectgpt, or a folder"):
        wheel_dir("fetch:other")


# --- on the real reference data ----------------------------------------------------------------------------

TABLES = SHARED_DATA / "emotion-wheel"
MELD_TEST = SHARED_DATA / "meld" / "test_sent_emo.csv"
# AffectGPT@d961cab's row for `fearless` (MERTools@89120b7 has "fearlessness,fearless,fearlessly"): the root listed too
AFFECTGPT_FEARLESS_ROW = 'fearless,"fearlessness,fearlesses,fearing,fears,feared,fearless,fearlessly,fear"'


@pytest.mark.skipif(
    not (TABLES / "format.csv").is_file() or not MELD_TEST.is_file(), reason=f"reference tables not found under {SHARED_DATA} (set EMER_SHARED_DATA)"
)
def test_real_meld_test_table_and_the_fearless_row(tmp_path: Path) -> None:
    """MELD's real test table as ground truth, the real MERTools tables, and the same tables with AffectGPT's `fearless` row."""
    with open(MELD_TEST, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    gt, pred = tmp_path / "GT", tmp_path / "PRED"
    (gt / "meld-process").mkdir(parents=True)
    shutil.copyfile(MELD_TEST, gt / "meld-process" / "test_sent_emo.csv")
    # every gold word predicted as it is, but `scared` for fear (the same centre as fear on every wheel of MERTools' tables)
    items = {f"dia{r['Dialogue_ID']}_utt{r['Utterance_ID']}": str(["scared" if r["Emotion"] == "fear" else r["Emotion"]]) for r in rows}
    write_result_npz(pred / "results-meld" / "model" / f"{CK1}-openset.npz", items)
    variant = tmp_path / "variant"
    shutil.copytree(TABLES, variant)
    text = (variant / "format.csv").read_text(encoding="utf-8")
    (variant / "format.csv").write_text(text.replace('fearless,"fearlessness,fearless,fearlessly"', AFFECTGPT_FEARLESS_ROW), encoding="utf-8")
    mertools = run_suite(str(pred), str(gt), str(TABLES))
    changed = run_suite(str(pred), str(gt), str(variant))
    m, a = (r["runs"][0]["datasets"]["MELD"] for r in (mertools, changed))
    assert m["gt_samples"] == 2610 and m["tables"] == "MERTools@89120b7 sha256:6ab3f0971d6f" and m["best"]["score"] == 1.0
    assert a["tables"].startswith("local tables (not MERTools@89120b7 or AffectGPT@d961cab)")
    # with `fear` also a base word of `fearless`, gold fear (50 samples) lands elsewhere on wheels 2-5 and every one misses
    scored = {"wheel1": 1354, "wheel2": 1354, "wheel3": 1286, "wheel4": 1354, "wheel5": 1005}
    expected = {w: 1.0 if w == "wheel1" else (n - 50) / n for w, n in scored.items()}
    assert a["checkpoints"][0]["wheels"] == pytest.approx(expected)
    assert a["best"]["score"] == pytest.approx(sum(expected.values()) / 5) and round(a["best"]["score"] * 100, 2) == 96.75
