"""Annotation tables: the EMER authors' real files parsed exactly, joins and clashes, mapped tables, the explainer."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
from emer_builder.core.errors import UserError
from emer_builder.core.labels import parse_labels
from emer_builder.transforms.annotations import (
    AnnotationExplainer,
    detect_language,
    load_annotations,
    split_chinese_clues,
    split_english_clues,
)
from emer_builder.transforms.explanation import ExplainInput, FieldValue, Unavailable

from tests.shared_data import SHARED_DATA

EMER = SHARED_DATA / "emer-annotations"
needs_data = pytest.mark.skipif(not (EMER / "gt-eng.csv").is_file(), reason=f"EMER annotation files not found under {EMER} (set EMER_SHARED_DATA)")


@pytest.fixture(scope="module")
def fine():
    """final-EMER-reason.csv (EMER-Fine / OV-MERD) parsed once."""
    return load_annotations([EMER / "final-EMER-reason.csv"])


def _item(name: str) -> ExplainInput:
    return ExplainInput(key=f"clips/{name}", name=name, fields={})


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# --- the real files ---------------------------------------------------------------------------


@needs_data
def test_emer_v1_english_and_chinese():
    eng = load_annotations([EMER / "gt-eng.csv"])
    chi = load_annotations([EMER / "gt-chi.csv"])
    assert [(f["format"], f["rows"]) for f in eng.files + chi.files] == [("emer-v1", 100), ("emer-v1", 100)]
    assert len(eng.files[0]["sha256"]) == 64 and eng.files[0]["path"].endswith("gt-eng.csv")
    assert eng.values("sample_00000648") == {
        "subtitle": {"en": "Don't talk to me about feelings anymore."},
        "multimodal_explanation": {
            "en": "In the video, he roared, spoke passionately, spoke quickly, spoke loudly, and stared with wide eyes. "
            "Therefore, it is inferred that his emotional state is anger."
        },
        "discrete_label": {"en": "angry"},
    }
    assert chi.values("sample_00000648") == {
        "subtitle": {"zh": "别再跟我说感觉。"},
        "multimodal_explanation": {"zh": "在视频中，他怒吼，言辞激动，语速很快，音量很高，眼睛瞪大。因此推测他的情感状态为生气。"},
        "discrete_label": {"zh": "生气"},
    }
    # quoted cells with commas and doubled quotes survive
    assert eng.values("sample_00000680")["subtitle"] == {"en": "Last night, I forgot to thank you properly."}
    assert eng.values("sample_00000680")["multimodal_explanation"]["en"].startswith('In the video, he used the phrase "thank you" to express')
    labels = sorted(v["discrete_label"]["en"] for v in eng.by_name.values())
    assert {x: labels.count(x) for x in set(labels)} == {"angry": 36, "happy": 32, "worried": 17, "sad": 11, "surprise": 4}
    # empty cells are no value: seven clips have no subtitle in either language
    no_subtitle = ["sample_00002021", "sample_00002449", "sample_00003239", "sample_00004264", "sample_00004422", "sample_00005079", "sample_00006591"]
    assert sorted(n for n in eng.names if "subtitle" not in eng.values(n)) == no_subtitle
    assert sorted(n for n in chi.names if "subtitle" not in chi.values(n)) == no_subtitle


@needs_data
def test_emer_v1_languages_join_without_conflict():
    both = load_annotations([EMER / "gt-eng.csv", EMER / "gt-chi.csv"])
    assert len(both.names) == 100 and [f["rows"] for f in both.files] == [100, 100]
    assert both.values("sample_00000648")["discrete_label"] == {"en": "angry", "zh": "生气"}
    assert both.values("sample_00000648")["subtitle"] == {"en": "Don't talk to me about feelings anymore.", "zh": "别再跟我说感觉。"}
    # plain dicts: cheap to ship to workers
    assert both.rows() is both.by_name and pickle.loads(pickle.dumps(both.rows())) == both.by_name
    assert pickle.loads(pickle.dumps(both)).values("sample_00000648") == both.values("sample_00000648")
    empty = load_annotations([])
    assert empty.names == set() and empty.files == [] and empty.unmatched({"a"}) == ([], ["a"])


@needs_data
def test_emer_fine_chinese_clues(fine):
    assert [(f["format"], f["rows"]) for f in fine.files] == [("ov-merd", 332)]
    assert fine.files[0]["clues_split"] == {"zh": 332, "en": 329}
    v = fine.values("sample_00000000")
    assert list(v) == ["visual_clue", "acoustic_clue", "lexical_clue", "multimodal_explanation"]
    zh = {f: v[f]["zh"] for f in ("visual_clue", "acoustic_clue", "lexical_clue")}
    assert zh["visual_clue"].startswith("在视频中，开头的画面显示一位穿着医生服的男性角色")
    assert zh["visual_clue"].endswith("这种变化表明说话者通过开玩笑及调侃的方式缓解了当前的紧张话题。")
    assert zh["acoustic_clue"] == "在音频中，角色在一开始时音调上挑，表达出不满与不耐。之后边笑边说，表达出高兴中带着一份调侃。"
    assert zh["lexical_clue"].startswith("在文本中，字幕内容：“我哪知道啊！我，我，我也没有这方面的经验。”")
    assert zh["lexical_clue"].endswith("表现出一种轻松和愉快的情绪。")
    # the explanation is the whole text, separators included
    assert v["multimodal_explanation"]["zh"] == "；".join(zh.values()) + "；"
    assert v["multimodal_explanation"]["en"].startswith("In the video, the opening scene shows a male character wearing a doctor's uniform.")
    # every row splits, and no clue keeps a separator at its end
    assert all(not fine.values(n)[f]["zh"].endswith("；") for n in fine.names for f in ("visual_clue", "acoustic_clue", "lexical_clue"))


@needs_data
def test_emer_fine_four_segment_row(fine):
    """sample_00000461's visual clue holds a `；`: the unmarked segment joins the visual clue."""
    v = fine.values("sample_00000461")
    assert v["visual_clue"]["zh"] == (
        "在视频中，开头的画面显示一个男性角色，他眉头微微皱起，表情看起来比较严肃；他的目光似乎稍微向下，眼神稍显沉思，好像在回忆着什么事情。"
        "在视频中间，男性角色闭上了眼睛，似乎在深呼吸或是试图控制自己的情绪。这个动作可能表明他感到一些压力或是情绪上的负担。"
    )
    assert v["acoustic_clue"]["zh"] == "在音频中，语音较为低沉和缓慢"
    assert v["lexical_clue"]["zh"].startswith("在文本中，字幕内容：“一个就是生离，一个就是死别，这两样事我都经历了。”")
    assert v["visual_clue"]["en"].endswith("This action may indicate that he is feeling some pressure or emotional burden.")
    assert v["acoustic_clue"]["en"] == "In the audio, the voice is low and slow."


@needs_data
def test_emer_fine_english_split(fine):
    unsplit = sorted(n for n in fine.names if "en" not in fine.values(n)["visual_clue"])
    # these three hold the translation twice ("Input: … Output: …"): their markers repeat, so no English clues
    assert unsplit == ["sample_00000153", "sample_00000227", "sample_00002181"]
    assert all("Output: In the video" in fine.values(n)["multimodal_explanation"]["en"] for n in unsplit)
    assert fine.values("sample_00000153")["visual_clue"] == {"zh": fine.values("sample_00000153")["visual_clue"]["zh"]}
    # an echoed "Input: " prefix is not part of the clue; a trailing "Output:" is dropped
    v = fine.values("sample_00000176")
    assert v["multimodal_explanation"]["en"].startswith("Input: In the video")
    assert v["visual_clue"]["en"] == "In the video, it is impossible to determine the characters' emotional state"
    assert v["acoustic_clue"]["en"] == "in the audio, it is impossible to determine the characters' emotional state"
    assert v["lexical_clue"]["en"].startswith("in the text, the subtitle says, \"So I'm afraid")
    assert fine.values("sample_00000508")["multimodal_explanation"]["en"].endswith("Output:")
    assert fine.values("sample_00000508")["lexical_clue"]["en"].endswith("expresses her doubt about it.")
    # marker variants: no space after the full stop, "In the subtitles of the text"; a quoted "in the audio" is no marker
    v = fine.values("sample_00001055")
    assert v["visual_clue"]["en"].endswith("the woman's emotional state may be irritated and angry.")
    assert v["lexical_clue"]["en"].startswith('In the subtitles of the text, it says, "哎，好奇怪啊')
    assert fine.values("sample_00000669")["lexical_clue"]["en"].startswith('The subtitle in the text says, "Why are you all looking at me')
    assert fine.values("sample_00000518")["acoustic_clue"]["en"] == (
        'In the audio, there is a sound "tsk", which is often associated with negative emotional states of the characters.'
    )


@needs_data
def test_openset_labels():
    t = load_annotations([EMER / "check-openset.csv"])
    assert [(f["format"], f["rows"]) for f in t.files] == [("openset", 332)]
    assert t.values("sample_00000000") == {
        "open_vocab_labels": {"en": ["pleasurable", "self-deprecating", "relaxed", "complaining", "relieved", "humorous", "joyful", "happy"]}
    }
    assert t.values("sample_00000220") == {"open_vocab_labels": {"en": ["surprised"]}}  # written unquoted in the CSV
    assert t.values("sample_00000209")["open_vocab_labels"]["en"] == ["looking forward to", "joyful", "happy"]


@needs_data
def test_real_tables_that_disagree_are_refused():
    """EMER-V1 and EMER-Fine share 39 clips with different explanations: both files are named."""
    with pytest.raises(UserError) as e:
        load_annotations([EMER / "gt-eng.csv", EMER / "final-EMER-reason.csv"])
    msg = str(e.value)
    assert "gt-eng.csv" in msg and "final-EMER-reason.csv" in msg and "multimodal_explanation (en)" in msg and "sample_00000070" in msg
    joined = load_annotations([EMER / "final-EMER-reason.csv", EMER / "check-openset.csv"])
    assert len(joined.names) == 332 and list(joined.values("sample_00000220"))[-1] == "open_vocab_labels"


# --- parsing rules on written files -----------------------------------------------------------


def test_label_lists_are_parsed_not_evaluated(tmp_path: Path):
    path = _write(
        tmp_path / "openset.csv",
        "name,openset\n"
        "a,\"['can't believe it', 'happy, relieved']\"\n"
        "b,\"[\"\"can't believe it\"\", 'happy, relieved']\"\n"
        "c,\"[\"\"excited\"\", \"\"joyful\"\"]\"\n"
        "d,['surprised']\n"
        " e ,\n"
        "f,\"['line\u2028separator', 'crlf']\"\r\n",
    )
    t = load_annotations([path])
    assert t.values("a")["open_vocab_labels"] == {"en": ["can't believe it", "happy, relieved"]}
    assert t.values("b")["open_vocab_labels"] == {"en": ["can't believe it", "happy, relieved"]}
    assert t.values("c")["open_vocab_labels"] == {"en": ["excited", "joyful"]}
    assert t.values("d")["open_vocab_labels"] == {"en": ["surprised"]}
    assert t.values("e") == {} and "e" in t.names  # name stripped, empty cell is no value
    assert t.values("f")["open_vocab_labels"] == {"en": ["line\u2028separator", "crlf"]}
    assert parse_labels("['开心', '放松']") == ["开心", "放松"]
    assert detect_language(["['开心', '放松']"]) == "zh" and detect_language(['In the text, "哎呀" she says']) == "en"
    for bad in ["__import__('os').system('true')", "[__import__('os')]", "[1, 2]", "['a'] + ['b']", "{'a'}", "happy, sad"]:
        with pytest.raises(ValueError):
            parse_labels(bad, "strict")
    unquoted = _write(tmp_path / "unquoted.csv", "name,openset\nx,['a', 'b']\n")
    with pytest.raises(UserError, match=r"unquoted\.csv: line 2 has 3 cells but the header has 2"):
        load_annotations([unquoted])
    evil = _write(tmp_path / "evil.csv", "name,openset\nx,\"[__import__('os').getcwd()]\"\n")
    with pytest.raises(UserError, match=r"evil\.csv: x column 'openset'"):
        load_annotations([evil])


def test_chinese_openset_is_detected(tmp_path: Path):
    t = load_annotations([_write(tmp_path / "zh.csv", "name,openset\na,\"['开心', '放松']\"\n")])
    assert t.values("a") == {"open_vocab_labels": {"zh": ["开心", "放松"]}}


def test_clue_splitters_refuse_unclean_text():
    assert split_chinese_clues("在视频中，甲；在音频中，乙；在文本中，丙；") == {"visual_clue": "在视频中，甲", "acoustic_clue": "在音频中，乙", "lexical_clue": "在文本中，丙"}
    assert split_chinese_clues("在视频中，甲；在文本中，丙；") is None  # a missing clue would leave its text elsewhere
    assert split_chinese_clues("在音频中，乙；在视频中，甲；在文本中，丙；") is None
    assert split_chinese_clues("开头；在视频中，甲；在音频中，乙；在文本中，丙；") is None
    assert split_english_clues("In the video, a. In the audio, b. In the text, c.") == {
        "visual_clue": "In the video, a.",
        "acoustic_clue": "In the audio, b.",
        "lexical_clue": "In the text, c.",
    }
    assert split_english_clues("In the video, a. In the text, c. In the audio, b.") is None
    assert split_english_clues("The scene. In the video, a. In the audio, b. In the text, c.") is None


def test_subtitle_table_and_mer2023(tmp_path: Path):
    subs = _write(tmp_path / "subs.csv", "name,chinese,english\ns1,别再跟我说感觉。,Don't talk to me about feelings anymore.\ns2,,Only English.\n")
    mer = _write(tmp_path / "labels.csv", "name,discrete,valence\ns1,angry,-3.5\ns2,happy,\n")
    t = load_annotations([subs, mer])
    assert [f["format"] for f in t.files] == ["subtitles", "mer2023"]
    assert t.values("s1") == {
        "subtitle": {"zh": "别再跟我说感觉。", "en": "Don't talk to me about feelings anymore."},
        "discrete_label": {"en": "angry"},
        "valence": {None: -3.5},
    }
    assert t.values("s2") == {"subtitle": {"en": "Only English."}, "discrete_label": {"en": "happy"}}
    bad = _write(tmp_path / "bad.csv", "name,discrete,valence\ns1,angry,very\n")
    with pytest.raises(UserError, match=r"bad\.csv: s1 .*valence 'very' is not a number"):
        load_annotations([bad])


def test_conflicting_files_name_both(tmp_path: Path):
    a = _write(tmp_path / "a.csv", "name,discrete,valence\ns1,angry,-2\ns2,sad,-1\n")
    same = _write(tmp_path / "same.csv", "name,discrete,valence\ns1,angry,-2\n")
    assert load_annotations([a, same]).values("s1")["valence"] == {None: -2.0}  # equal values are fine
    b = _write(tmp_path / "b.csv", "name,discrete,valence\ns2,sad,-1.5\n")
    with pytest.raises(UserError) as e:
        load_annotations([a, b])
    assert str(e.value) == f"annotation tables {a} and {b} give different valence for s2"


def test_duplicate_name_in_one_file(tmp_path: Path):
    ok = _write(tmp_path / "ok.csv", "name,discrete,valence\ns1,angry,-2\ns1,angry,-2\n")
    assert load_annotations([ok]).files[0]["rows"] == 1
    dup = _write(tmp_path / "dup.csv", "name,discrete,valence\ns1,angry,-2\n s1 ,happy,-2\n")
    with pytest.raises(UserError, match=r"dup\.csv: name s1 appears twice with different values"):
        load_annotations([dup])


def test_unrecognised_header(tmp_path: Path):
    path = _write(tmp_path / "x.csv", "clip,label\ns1,angry\n")
    with pytest.raises(UserError) as e:
        load_annotations([path])
    msg = str(e.value)
    assert "x.csv" in msg and "clip,label" in msg and "names,emotions,subtitles,reasons" in msg and "name,openset" in msg and "\n" not in msg


def test_mapped_tsv_and_jsonl(tmp_path: Path):
    tsv = _write(tmp_path / "mine.tsv", "clip\tfeeling\tscore\twhy\nc1\tangry\t-2\t他很生气。\nc2\t\t1.5\t\n")
    jsonl = _write(
        tmp_path / "mine.jsonl",
        '{"id": "c1", "labels": ["furious", "tense"], "vis": "He frowns."}\n\n{"id": "c3", "labels": "[\'calm\']", "vis": null}\n',
    )
    t = load_annotations(
        [],
        mapped=[
            {"path": tsv, "columns": {"name": "clip", "discrete_label": "feeling", "valence": "score", "multimodal_explanation": "why"}, "language": None},
            {"path": str(jsonl), "columns": {"name": "id", "open_vocab_labels": "labels", "visual_clue": "vis"}, "language": "en"},
        ],
    )
    assert [(f["format"], f["rows"]) for f in t.files] == [("mapped", 2), ("mapped", 2)]
    assert t.values("c1") == {
        "visual_clue": {"en": "He frowns."},
        "multimodal_explanation": {"zh": "他很生气。"},
        "open_vocab_labels": {"en": ["furious", "tense"]},
        "discrete_label": {"en": "angry"},
        "valence": {None: -2.0},
    }
    assert t.values("c2") == {"valence": {None: 1.5}}
    assert t.values("c3") == {"open_vocab_labels": {"en": ["calm"]}}
    with pytest.raises(UserError, match=r"mine\.tsv: unknown field 'mood'"):
        load_annotations([], mapped=[{"path": tsv, "columns": {"name": "clip", "mood": "feeling"}}])
    with pytest.raises(UserError, match=r"mine\.tsv: no column 'emotion' \(mapped to discrete_label\)"):
        load_annotations([], mapped=[{"path": tsv, "columns": {"name": "clip", "discrete_label": "emotion"}}])
    with pytest.raises(UserError, match=r"mine\.jsonl: no column 'name'"):
        load_annotations([], mapped=[{"path": jsonl, "format": "jsonl", "columns": {"name": "name", "visual_clue": "vis"}}])


# --- the explainer and the join with videos ---------------------------------------------------


def test_explainer_language_fallback():
    values = {
        "s1": {"subtitle": {"zh": "别再跟我说感觉。", "en": "Don't talk to me about feelings anymore."}, "visual_clue": {"zh": "在视频中，甲", "ja": "映像"}},
        "s2": {"open_vocab_labels": {"en": ["happy"]}, "valence": {None: 2.0}},
    }
    en, zh = AnnotationExplainer(values), AnnotationExplainer(values, language="zh")
    assert en.source_name == "annotations"
    # the chosen language is the main value; the others travel along (bilingual tables keep both)
    assert en.explain("subtitle", _item("s1")) == FieldValue("Don't talk to me about feelings anymore.", "en", source="human", other_languages={"zh": "别再跟我说感觉。"})
    assert zh.explain("subtitle", _item("s1")) == FieldValue("别再跟我说感觉。", "zh", source="human", other_languages={"en": "Don't talk to me about feelings anymore."})
    assert en.explain("visual_clue", _item("s1")) == FieldValue("映像", "ja", source="human", other_languages={"zh": "在视频中，甲"})  # no English: first other language, sorted
    assert zh.explain("open_vocab_labels", _item("s2")) == FieldValue(["happy"], "en", source="human")
    assert en.explain("valence", _item("s2")) == FieldValue(2.0, None, source="human", prompt_version=None, time=None)
    assert en.explain("acoustic_clue", _item("s1")) == Unavailable("annotations have no acoustic_clue for s1")
    assert en.explain("subtitle", _item("s9")) == Unavailable("no annotation for s9")
    got = en.explain("open_vocab_labels", _item("s2"))
    got.value.append("changed")
    assert values["s2"]["open_vocab_labels"]["en"] == ["happy"]


@needs_data
def test_explainer_on_real_tables_and_unmatched(fine):
    explainer = AnnotationExplainer(fine.by_name, language="en")
    assert explainer.explain("visual_clue", _item("sample_00000153")) == FieldValue(fine.values("sample_00000153")["visual_clue"]["zh"], "zh", source="human")
    assert explainer.explain("acoustic_clue", _item("sample_00000461")).value == "In the audio, the voice is low and slow."
    assert explainer.explain("subtitle", _item("sample_00000461")) == Unavailable("annotations have no subtitle for sample_00000461")
    videos = {"sample_00000000", "sample_00000461", "my_holiday", "another"}
    no_video, no_annotation = fine.unmatched(videos)
    assert len(no_video) == 330 and no_video[0] == "sample_00000007" and "sample_00000461" not in no_video
    assert no_annotation == ["another", "my_holiday"]
    assert json.loads(json.dumps(fine.by_name, ensure_ascii=False)) == fine.by_name


def test_excel_csv_with_bom_and_crlf(tmp_path: Path):
    """Excel writes a byte-order mark and CRLF: the header is still recognised, quoted line breaks stay in the cell."""
    path = tmp_path / "labels.csv"
    path.write_bytes('\ufeffname,discrete,valence\r\ns1,"happy",2.5\r\ns2,angry,-1\r\n'.encode())
    t = load_annotations([path])
    assert t.files[0]["format"] == "mer2023" and t.values("s1") == {"discrete_label": {"en": "happy"}, "valence": {None: 2.5}}
    subs = _write(tmp_path / "subs.tsv", 'name\tchinese\tenglish\r\ns1\t别再说了。\t"Stop.\r\nPlease."\r\n')
    assert load_annotations([subs]).values("s1")["subtitle"] == {"zh": "别再说了。", "en": "Stop.\r\nPlease."}
