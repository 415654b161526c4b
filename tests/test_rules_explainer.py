"""The rules explainer: corpus-relative statements, and every sentence traceable to a value in the record."""

from __future__ import annotations

import glob
import json
import re

import pyarrow.parquet as pq
import pytest
from emer_builder.transforms.explanation import ExplainInput, FieldValue, Unavailable
from emer_builder.transforms.rules_explainer import CORPUS_MEASURES, CorpusStats, RulesExplainer, _tokens, measure_row, measures_of


def test_midrank_percentile_is_order_free():
    stats = CorpusStats.from_measures([{"m": 3.0}, {"m": 1.0}, {"m": 2.0}, {"m": 2.0}, {}])
    assert stats.values["m"] == (1.0, 2.0, 2.0, 3.0)
    assert stats.percentile("m", 2.0) == 50.0  # one below, two ties counted half
    assert stats.percentile("m", 0.5) == 0.0
    assert stats.percentile("m", 3.0) == 87.5
    assert CorpusStats.from_measures([{"m": 7.0}]).percentile("m", 7.0) == 50.0  # a lone clip is typical
    assert stats.percentile("unknown", 1.0) is None


def test_statistics_from_compact_rows_answer_as_from_dicts():
    """The corpus grouping moves a row of floats per clip and each batch gets its values' percentiles in
    arrays: the answers are those of the whole corpus' statistics, -0.0 and absent measures too; a NaN
    is no measurement, as an absent one."""
    pitch, spread = list(CORPUS_MEASURES)[:2]  # both under acoustics.prosody
    odd = [{pitch: 1.5, spread: float("nan")}, {pitch: 0.0}, {pitch: -0.0, spread: 2.0}, {}, {spread: 2.0}, {pitch: 3.25, spread: -1.0}]
    fields = [{"acoustics": {"prosody": {k.split(".")[-1]: v for k, v in m.items()}}} for m in odd]
    rows = [measure_row(f) for f in fields]
    measured = [{k: v for k, v in m.items() if v == v} for m in odd]  # the NaN left out
    assert [measures_of(f) for f in fields] == measured and rows[3] == (None,) * len(CORPUS_MEASURES) and rows[0][1] is None
    whole = CorpusStats.from_measures(odd)
    assert whole == CorpusStats.from_measures(measured) == CorpusStats.from_rows(rows)
    batch = whole.placed(rows[:3])
    for m in measured[:3]:
        for name, value in m.items():
            assert batch.percentile(name, value) == whole.percentile(name, value), (name, value)
            assert batch.clips(name) == whole.clips(name) == {pitch: 4, spread: 3}[name]
    assert batch.percentile(pitch, -0.0) == batch.percentile(pitch, 0.0) == 25.0  # two ties of four, none below
    assert batch.percentile(spread, float("nan")) is None is whole.percentile(spread, float("nan"))
    with pytest.raises(KeyError):
        batch.percentile(pitch, 3.25)  # not one of the batch's: a bug, never a silent None
    assert batch.percentile("acoustics.egemaps.HNRdBACF_sma3nz_amean", 1.0) is None  # no clip has it


def test_a_nan_measure_does_not_move_the_other_clips():
    """A NaN among the values once left them unsorted (NaN compares false with everything), so the other
    clips' percentiles depended on where it arrived (the highest of four got 100 and the lowest 37.5)."""
    pitch = next(iter(CORPUS_MEASURES))
    rows = [{pitch: 3.0}, {pitch: float("nan")}, {pitch: 1.0}, {pitch: 2.0}]
    expected = {1.0: 50 / 3, 2.0: 50.0, 3.0: 250 / 3}  # midranks among the three measured clips
    for order in (rows, rows[::-1], rows[1:] + rows[:1]):
        stats = CorpusStats.from_rows([measure_row({"acoustics": {"prosody": {"f0_mean_semitone": r[pitch]}}}) for r in order])
        assert stats.clips(pitch) == 3
        assert {v: stats.percentile(pitch, v) for v in expected} == {v: round(p, 1) for v, p in expected.items()}
        assert CorpusStats.from_measures(order) == stats


def test_tokens_leave_out_names_and_keep_compounds():
    assert _tokens("And Mr. John Dashwood had leisure.", drop_names=True) == ["and", "had", "leisure"]
    assert _tokens("Hi. Happy to see you, Anna!", drop_names=True) == ["hi", "happy", "to", "see", "you"]
    assert _tokens("He was not an ill-disposed young man's friend") == ["he", "was", "not", "an", "ill-disposed", "young", "man's", "friend"]


def _fields(**over):
    fields = {
        "media": {"duration_s": 6.0, "frames_sampled": 12},
        "transcript": {"reason": None, "language": "en", "text": "I am so happy and grateful, what a wonderful surprise!", "word_count": 10},
        "faces": {"frames_with_face": 0, "crops": [], "expression_mean": None, "reason": "no face in 12 sampled frames"},
        "acoustics": {"reason": "no audio track", "egemaps": None, "prosody": None},
    }
    fields.update(over)
    return fields


def test_missing_inputs_are_reasons_or_honest_sentences():
    rules = RulesExplainer(CorpusStats())
    item = ExplainInput("k", "k", _fields())
    acoustic = rules.explain("acoustic_clue", item)
    assert isinstance(acoustic, Unavailable) and "no audio track" in acoustic.reason
    visual = rules.explain("visual_clue", item)
    assert isinstance(visual, FieldValue) and "no face is visible" in visual.value
    assert visual.evidence[0]["measure"] == "faces.frames_with_face" and visual.evidence[0]["value"] == 0.0
    lexical = rules.explain("lexical_clue", item)
    assert lexical.value.startswith('In the text, the speaker says: "I am so happy')
    assert "joy ('happy', 'surprise', 'wonderful'); surprise ('surprise', 'wonderful')" in lexical.value
    labels = rules.explain("open_vocab_labels", item)
    assert labels.value == ["joyful", "surprised"] and labels.source == "rules:1"
    assert isinstance(rules.explain("valence", item), Unavailable)


def test_other_languages_are_quoted_not_scored():
    item = ExplainInput("k", "k", _fields(transcript={"reason": None, "language": "zh", "text": "我哪知道啊！", "word_count": 5}))
    lexical = RulesExplainer(CorpusStats()).explain("lexical_clue", item)
    assert lexical.value == "In the text, the speaker says: \"我哪知道啊！\" No emotion lexicon is available for language 'zh', so the words are not scored."


def _records(out):
    rows = []
    for path in sorted(glob.glob(f"{out}/data/*.parquet")):
        rows += pq.read_table(path).to_pylist()
    return {r["key"]: r for r in rows}


def _resolve(record, measure):
    """The value a measure path names in the record: `a.b.c` or `faces.crops[i:j].expression.x` (mean)."""
    sliced = re.fullmatch(r"faces\.crops\[(\d+):(\d+)\]\.expression\.(\w+)", measure)
    if sliced:
        lo, hi, cls = int(sliced[1]), int(sliced[2]), sliced[3]
        crops = record["faces"]["crops"][lo:hi]
        return sum(c["expression"][cls] for c in crops) / len(crops)
    value = record
    for part in measure.split("."):
        value = value[part]
    return value


def test_demo_build_explained_by_rules_and_traceable(demo_build):
    out, _ = demo_build
    records = _records(out)
    corpus = CorpusStats.from_measures([measures_of(r) for r in records.values()])
    checked = 0
    for record in records.values():
        e = record["explanation"]
        for name in ("visual_clue", "acoustic_clue", "lexical_clue", "multimodal_explanation"):
            assert e[name]["source"] == "rules:1" and e[name]["language"] == "en" and e[name]["text"], (record["key"], name)
            assert e[name]["time"] is None and e[name]["reason"] is None
        assert e["subtitle"]["text"] is None and "annotations: no annotation" in e["subtitle"]["reason"]
        assert e["discrete_label"]["label"] is None and e["valence"]["value"] is None
        texts = {name: e[name]["text"] for name in ("visual_clue", "acoustic_clue", "lexical_clue", "multimodal_explanation")}
        for row in e["evidence"]:
            if row["field"] in texts:
                assert row["sentence"] in texts[row["field"]]
            if "#" in row["measure"]:
                continue  # lexicon hits: counted words of the quoted text
            assert _resolve(record, row["measure"]) == pytest.approx(row["value"], rel=1e-4, abs=1e-4), (record["key"], row)
            if row["corpus_percentile"] is not None:
                assert corpus.percentile(row["measure"], _resolve(record, row["measure"])) == pytest.approx(row["corpus_percentile"], abs=0.1)
            checked += 1
    assert checked > 40
    labels = records["sample_00000870"]["explanation"]["open_vocab_labels"]
    assert labels["normalised"] is None and labels["wheel"] is None  # built without --wheel-dir
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["emotion_wheel"].startswith("not used: no --wheel-dir given")
    smiling = records["sample_00000870"]["explanation"]
    assert "smiles and looks happy throughout the clip" in smiling["visual_clue"]["text"]
    assert smiling["open_vocab_labels"]["labels"] == ["happy"]
    assert "no face is visible" in records["no_face_dog"]["explanation"]["visual_clue"]["text"]
    assert records["jesper_intro"]["explanation"]["lexical_clue"]["text"].startswith('In the text, the speaker says: "Hi, my name is')


def test_merge_leaves_out_clues_that_came_from_elsewhere():
    rules = RulesExplainer(CorpusStats())
    item = ExplainInput("k", "k", _fields())
    assert rules.explain("open_vocab_labels", item).value == ["joyful", "surprised"]
    item.chosen["lexical_clue"] = FieldValue("In the text, he complains bitterly.", "en", "human")
    merged = rules.explain("multimodal_explanation", item)
    assert merged.value == "Taken together, the clues show no clear emotion."  # the words were the only rules clue with an emotion
    assert rules.explain("open_vocab_labels", item).value == []
