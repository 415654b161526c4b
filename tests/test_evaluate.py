"""`emer evaluate` metrics and readers, on the authors' real tables and annotation files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from emer_builder.core.errors import UserError
from emer_builder.core.labels import parse_labels
from emer_builder.evaluate import evaluate, format_report, run_evaluate
from emer_builder.evaluate.metrics import discrete_metric, mer2024_metric, wheel_metric
from emer_builder.evaluate.readers import read_discrete, read_labels, read_synonyms
from emer_builder.transforms.annotations import load_annotations
from emer_builder.transforms.wheel import EmotionWheel

from tests.shared_data import SHARED_DATA

TABLES = SHARED_DATA / "emotion-wheel"
ANNOTATIONS = SHARED_DATA / "emer-annotations"
needs_data = pytest.mark.skipif(not (TABLES / "format.csv").is_file(), reason=f"reference data not found at {SHARED_DATA} (set EMER_SHARED_DATA)")

GT = {"v1": ["happy", "excited"], "v2": ["angry"], "v3": ["worried", "nervous", "sad"]}
PRED = {"v1": ["joyful"], "v2": ["furious", "surprised"], "v3": ["xyzzy"]}


@pytest.fixture(scope="module")
def wheel() -> EmotionWheel:
    return EmotionWheel(TABLES)


def _fpr(scores: dict) -> list[float]:
    return [round(scores[k], 6) for k in ("f", "p", "r")]


def _jsonl(path: Path, rows: dict[str, list[str]]) -> str:
    path.write_text("".join(json.dumps({"name": k, "labels": v}) + "\n" for k, v in rows.items()))
    return str(path)


@needs_data
def test_authors_reference_example(wheel: EmotionWheel, tmp_path: Path) -> None:
    assert _fpr(wheel_metric(GT, PRED, wheel, 1)) == [0.542857, 0.533333, 0.566667]
    assert _fpr(wheel_metric(GT, PRED, wheel, 2)) == [0.403175, 0.4, 0.433333]
    one = wheel_metric(GT, PRED, wheel, 1)["wheels"]["wheel5"]
    assert (round(one["p"], 6), round(one["r"], 6), one["evaluated"], one["skipped"]) == (0.666667, 0.5, 3, 0)
    # the same through files; a missing prediction scores as an empty one (v3's "xyzzy" maps to nothing)
    result = evaluate(_jsonl(tmp_path / "gt.jsonl", GT), _jsonl(tmp_path / "pred.jsonl", {k: PRED[k] for k in ("v1", "v2")}), wheel)
    assert _fpr(result["emotion_wheel"]["level1"]) == [0.542857, 0.533333, 0.566667]
    assert _fpr(result["emotion_wheel"]["level2"]) == [0.403175, 0.4, 0.433333]
    assert result["counts"] == {"gt": 3, "pred": 2, "missing_predictions": 1, "extra_predictions": 0}
    assert result["emotion_wheel"]["origin"] == "MERTools@89120b7 sha256:6ab3f0971d6f"
    json.dumps(result)


@needs_data
def test_check_openset_against_itself(wheel: EmotionWheel) -> None:
    path = str(ANNOTATIONS / "check-openset.csv")
    result = evaluate(path, path, wheel)
    assert result["counts"] == {"gt": 332, "pred": 332, "missing_predictions": 0, "extra_predictions": 0}
    for level in ("level1", "level2"):
        ew = result["emotion_wheel"][level]
        assert (ew["f"], ew["p"], ew["r"]) == (1.0, 1.0, 1.0)
        assert [ew["wheels"][w]["evaluated"] for w in sorted(ew["wheels"])] == [327, 328, 324, 327, 316]
        assert [ew["wheels"][w]["skipped"] for w in sorted(ew["wheels"])] == [5, 4, 8, 5, 16]
    assert "discrete" not in result and "mer2024" not in result
    report = format_report(result)
    assert "level1 mean    1.0000  1.0000  1.0000" in report
    assert "level2 wheel5  1.0000  1.0000  1.0000        316       16" in report


@needs_data
def test_shifted_predictions_match_the_authors_algorithm(wheel: EmotionWheel, tmp_path: Path) -> None:
    """Each sample predicted with the next sample's labels; numbers from the authors' case3 code run on wheel_mapping.json."""
    gt = read_labels(str(ANNOTATIONS / "check-openset.csv"))
    names = list(gt)
    pred = {n: gt[names[(i + 1) % len(names)]] for i, n in enumerate(names)}
    assert _fpr(wheel_metric(gt, pred, wheel, 1)) == [0.284607, 0.291905, 0.277687]
    assert _fpr(wheel_metric(gt, pred, wheel, 2)) == [0.163738, 0.163355, 0.164164]


@needs_data
def test_run_evaluate_with_wheel_dir_and_discrete_real_file(tmp_path: Path) -> None:
    gt = str(ANNOTATIONS / "gt-eng.csv")  # EMER-V1: discrete `emotions` only
    result = run_evaluate(gt, gt, str(TABLES), None)
    assert result["task"] == "discrete"
    assert result["discrete"] == {"accuracy": 1.0, "weighted_f1": 1.0, "evaluated": 100, "missing_predictions": 0}
    assert result["hit_rate"]["hit_rate"] == 1.0 and result["hit_rate"]["predictions"] == "discrete labels"
    assert "emotion_wheel" not in result
    pred = tmp_path / "all-angry.csv"
    with open(pred, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["name", "discrete"])
        w.writerows([n, "Angry"] for n in read_discrete(gt))
    d = run_evaluate(gt, str(pred), str(TABLES), None)["discrete"]
    assert (d["accuracy"], round(d["weighted_f1"], 6)) == (0.36, 0.190588)  # 36 of 100 are angry
    # one gold word against open-set lists: the hit rate (this said "nothing to compare" before issue 14)
    hit = run_evaluate(gt, str(ANNOTATIONS / "check-openset.csv"), str(TABLES), None)
    assert hit["task"] == "discrete" and hit["counts"]["gt"] == 100 and "discrete" not in hit
    with pytest.raises(UserError, match=r"nothing to compare: .*gt-eng\.csv has discrete labels; .*x\.csv has no labels"):
        run_evaluate(gt, _write(tmp_path / "x.csv", "name,comment\nsample_00000648,loud\n"), str(TABLES), None)
    with pytest.raises(UserError, match=r"--wheel-dir .*: missing format\.csv, synonym\.xlsx, wheel1\.xlsx"):
        run_evaluate(str(ANNOTATIONS / "check-openset.csv"), str(ANNOTATIONS / "check-openset.csv"), str(tmp_path), None)


def test_discrete_accuracy_and_weighted_f1_by_hand() -> None:
    gt = {"a1": "happy", "a2": "happy", "a3": "happy", "b": "sad", "c": "angry"}
    pred = {"a1": "Happy", "a2": "happy", "a3": "sad", "b": "sad"}
    d = discrete_metric(gt, pred)
    # happy: P 2/2 R 2/3 F .8; sad: P 1/2 R 1 F 2/3; angry: F 0 -> (3*.8 + 1*2/3 + 0) / 5
    assert d["accuracy"] == 0.6 and round(d["weighted_f1"], 6) == 0.613333
    assert (d["evaluated"], d["missing_predictions"]) == (5, 1)


def test_one_label_parser_named_modes(tmp_path: Path) -> None:
    """The build and `emer evaluate` read a cell the same way; the authors' splitting is a named mode."""
    cell = "['can't stop', 'happy, relieved']"
    assert parse_labels(cell, "strict") == parse_labels(cell, "lenient") == ["can't stop", "happy, relieved"]
    assert parse_labels(cell, "authors") == ["can", "t stop", "happy", "relieved"]  # MERTools' string_to_list
    path = tmp_path / "openset.csv"
    path.write_text(f'name,openset\ns1,"{cell}"\n')
    built = load_annotations([path]).values("s1")["open_vocab_labels"]["en"]
    assert built == read_labels(str(path))["s1"] == ["can't stop", "happy, relieved"]
    assert read_labels(str(path), label_mode="authors")["s1"] == ["can", "t stop", "happy", "relieved"]
    # lenient: what strict cannot read is split the authors' way, or at commas when unbracketed
    assert parse_labels("['excited', 'joyful']", "lenient") == ["excited", "joyful"]
    assert parse_labels("happy, sad ,", "lenient") == ["happy", "sad"]
    assert parse_labels("[happy, sad]", "lenient") == ["happy", "sad"]
    assert parse_labels("[__import__('os').system('false')]", "lenient") == ["__import__(", "os", ").system(", "false", ")"]  # never evaluated
    assert parse_labels("", "lenient") == [] and parse_labels(None, "lenient") == [] and parse_labels("[]", "lenient") == []
    assert parse_labels(["a ", "", "b"], "lenient") == ["a", "b"]
    with pytest.raises(ValueError):
        parse_labels("[happy, sad]", "strict")
    with pytest.raises(ValueError, match="unknown label mode"):
        parse_labels("[]", "loose")  # type: ignore[arg-type]


def test_csv_and_jsonl_readers(tmp_path: Path) -> None:
    path = tmp_path / "pred.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["Name", "labels", "discrete"])
        w.writerow(["s1", """["can't stand it", 'happy, sort of']""", "happy"])
        w.writerow(["s2", "angry, furious", ""])
        w.writerow(["", "ignored", "x"])
    assert read_labels(str(path)) == {"s1": ["can't stand it", "happy, sort of"], "s2": ["angry", "furious"]}
    assert read_discrete(str(path)) == {"s1": "happy"}
    jl = tmp_path / "pred.jsonl"
    jl.write_text('{"key": "clips__s1", "openset": ["A", "b"], "emotion": "sad"}\n\n{"key": "s2", "openset": "[\'x\']"}\n')
    assert read_labels(str(jl)) == {"s1": ["A", "b"], "s2": ["x"]}
    assert read_discrete(str(jl)) == {"s1": "sad"}
    dup = tmp_path / "dup.csv"
    dup.write_text("name,openset\ns1,a\ns1,b\n")
    with pytest.raises(UserError, match="'s1' appears more than once"):
        read_labels(str(dup))
    with pytest.raises(UserError, match="no open-vocabulary label column"):
        read_labels(_write(tmp_path / "x.csv", "name,emotions\ns,happy\n"))
    with pytest.raises(UserError, match=r"x\.txt: cannot tell its format from the extension"):
        read_labels(_write(tmp_path / "x.txt", "hi"))
    with pytest.raises(UserError, match="no such file"):
        read_labels(str(tmp_path / "nope.csv"))


def _write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


@needs_data
def test_real_check_openset_reader() -> None:
    labels = read_labels(str(ANNOTATIONS / "check-openset.csv"))
    assert len(labels) == 332
    assert labels["sample_00000007"] == ["excited", "joyful", "happy"]
    assert labels["sample_00000000"][:3] == ["pleasurable", "self-deprecating", "relaxed"]


def _dataset(root: Path) -> Path:
    """A minimal built-dataset folder: manifest.json and one Parquet shard with key, split and explanation."""
    (root / "data").mkdir(parents=True)
    (root / "manifest.json").write_text("{}")
    explanation = pa.struct(
        [
            ("open_vocab_labels", pa.struct([("labels", pa.list_(pa.string())), ("language", pa.string())])),
            ("discrete_label", pa.struct([("label", pa.string()), ("language", pa.string())])),
        ]
    )
    rows = [
        {"key": "mer__sample_1", "split": "train", "explanation": {"open_vocab_labels": {"labels": ["happy", "excited"], "language": "en"}, "discrete_label": {"label": "happy", "language": "en"}}},
        {"key": "mer__sample_2", "split": "test", "explanation": {"open_vocab_labels": {"labels": ["angry"], "language": "en"}, "discrete_label": None}},
        {"key": "sample_3", "split": "test", "explanation": {"open_vocab_labels": None, "discrete_label": {"label": "sad", "language": "en"}}},
    ]
    schema = pa.schema([("key", pa.string()), ("split", pa.string()), ("explanation", explanation)])
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), root / "data" / "train-00000-of-00001.parquet")
    return root


def test_dataset_folder_reader(tmp_path: Path) -> None:
    out = _dataset(tmp_path / "out")
    assert read_labels(str(out)) == {"sample_1": ["happy", "excited"], "sample_2": ["angry"], "sample_3": []}
    assert read_labels(f"{out}:test") == {"sample_2": ["angry"], "sample_3": []}
    assert read_labels(str(out), split="train") == {"sample_1": ["happy", "excited"]}
    assert read_discrete(f"{out}:test") == {"sample_3": "sad"}
    with pytest.raises(UserError, match=r"no records in split 'validation' \(splits: test, train\)"):
        read_labels(f"{out}:validation")
    (tmp_path / "plain").mkdir()
    with pytest.raises(UserError, match="without manifest.json"):
        read_labels(str(tmp_path / "plain"))


@needs_data
def test_dataset_folder_against_jsonl(wheel: EmotionWheel, tmp_path: Path) -> None:
    out = _dataset(tmp_path / "out")
    pred = _jsonl(tmp_path / "pred.jsonl", {"sample_1": ["joyful"], "sample_2": ["furious", "surprised"], "other": ["sad"]})
    result = evaluate(str(out), pred, wheel)
    assert result["counts"] == {"gt": 3, "pred": 3, "missing_predictions": 1, "extra_predictions": 1}
    assert result["emotion_wheel"]["level1"]["wheels"]["wheel1"]["evaluated"] == 2  # sample_3 has no labels: skipped
    assert "discrete" not in result  # the JSONL has no discrete labels


def test_mer2024_set_metric_with_synonym_groups(tmp_path: Path) -> None:
    gt = {"v1": ["Happy", "joyful"], "v2": ["sad"], "v3": ["angry"], "v4": []}
    pred = {"v1": ["glad"], "v3": ["angry"]}
    groups = tmp_path / "groups.csv"
    with open(groups, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["name", "groups"])
        w.writerow(["v1", "[['happy', 'glad'], ['joyful']]"])
        w.writerow(["v2", "[['sad']]"])
        w.writerow(["v4", "[]"])
    per_sample, shared = read_synonyms(str(groups))
    assert shared is None and per_sample["v1"] == {"happy": "happy", "glad": "happy", "joyful": "joyful"}
    m = mer2024_metric(gt, pred, per_sample, shared)
    # v1: gt {happy, joyful}, pred {happy} -> P 1, R .5; v2: empty pred -> 0, 0; v3 has no groups; v4 empty gt
    assert m == {"accuracy": 0.5, "recall": 0.25, "avg": 0.375, "evaluated": 2, "skipped_empty_gt": 1, "without_synonyms": 1}
    flat = _write(tmp_path / "flat.csv", "label,group\nhappy,1\nglad,1\njoyful,2\n")
    per_sample, shared = read_synonyms(flat)
    assert per_sample is None and shared == {"happy": "<group 1>", "glad": "<group 1>", "joyful": "<group 2>"}
    m = mer2024_metric(gt, pred, per_sample, shared)
    # v1 P 1 R .5; v2 0 0; v3 1 1 -> mean over 3
    assert (m["accuracy"], m["recall"], m["evaluated"], m["skipped_empty_gt"]) == (2 / 3, 0.5, 3, 1)
    jl = tmp_path / "groups.jsonl"
    jl.write_text(json.dumps({"name": "v1", "groups": [["Happy", "glad"]]}) + "\n")
    assert read_synonyms(str(jl))[0] == {"v1": {"happy": "happy", "glad": "happy"}}
    gt_path, pred_path = _jsonl(tmp_path / "gt.jsonl", gt), _jsonl(tmp_path / "pred.jsonl", pred)
    result = evaluate(gt_path, pred_path, None, synonyms=str(groups))
    assert result["mer2024"]["avg"] == 0.375 and "emotion_wheel" not in result
    assert "MER2024 set-level metric" in format_report(result)


def test_file_without_name_column_says_so(tmp_path: Path) -> None:
    path = _write(tmp_path / "x.csv", "id,openset\ns1,happy\n")
    with pytest.raises(UserError, match=r"no name column \(looked for name, names, key, video_id; found id, openset\)"):
        evaluate(path, path, None)


@needs_data
def test_authors_label_parsing_reproduces_their_split(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--label-parsing authors` scores the cell as MERTools does: its pieces `happy` and `relieved` reach the wheel."""
    from emer_builder.cli.main import main

    gt = _write(tmp_path / "gt.csv", "name,openset\ns1,\"['can't stop', 'happy, relieved']\"\ns2,\"['sad']\"\n")
    pred = _write(tmp_path / "pred.csv", "name,openset\ns1,\"['joyful']\"\ns2,\"['sad']\"\n")
    whole = run_evaluate(gt, pred, str(TABLES))["emotion_wheel"]["level1"]["wheels"]["wheel1"]
    assert (whole["evaluated"], whole["skipped"]) == (1, 1)  # "can't stop" and "happy, relieved" are no known words: s1 skipped
    cut = run_evaluate(gt, pred, str(TABLES), label_mode="authors")["emotion_wheel"]["level1"]["wheels"]["wheel1"]
    assert (cut["evaluated"], cut["skipped"]) == (2, 0)
    assert (cut["p"], cut["r"]) == (1.0, 1.0)  # s1: happy and relieved both sit at `happy` on wheel1, as does joyful
    assert main(["evaluate", "--gt", gt, "--pred", pred, "--wheel-dir", str(TABLES), "--label-parsing", "authors", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["emotion_wheel"]["level1"]["wheels"]["wheel1"]["evaluated"] == 2
