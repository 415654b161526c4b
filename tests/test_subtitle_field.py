"""An utterance cut at a subtitle cue or a table row with text carries that text as the EMER `subtitle`
field (source `human`): annotation tables still win, and clips without segment text keep the reason."""

from __future__ import annotations

from emer_builder.transforms.annotations import AnnotationExplainer
from emer_builder.transforms.explanation import ExplainInput, FieldValue, Unavailable


def _item(text: str | None, heard: str | None = "es", name: str = "ep1__000000040-000003380") -> ExplainInput:
    fields = {"transcript": {"language": heard}}
    if text is not None:
        fields["segment"] = {"method": "subtitles", "text": text}
    return ExplainInput(name, name, fields)


def test_segment_text_is_the_subtitle_in_its_language():
    explainer = AnnotationExplainer({}, "en")
    zh = explainer.explain("subtitle", _item("我哪知道啊。"))
    assert isinstance(zh, FieldValue) and (zh.value, zh.language, zh.source) == ("我哪知道啊。", "zh", "human")
    es = explainer.explain("subtitle", _item("¿Dónde está la biblioteca?"))
    assert (es.value, es.language) == ("¿Dónde está la biblioteca?", "es")  # the language Whisper heard
    assert explainer.explain("subtitle", _item("I will show a directory.", heard=None)).language == "en"


def test_annotation_tables_win_and_other_fields_are_untouched():
    explainer = AnnotationExplainer({"ep1__000000040-000003380": {"subtitle": {"en": "From the table."}}}, "en")
    assert explainer.explain("subtitle", _item("From the cue.")).value == "From the table."
    assert isinstance(AnnotationExplainer({}).explain("lexical_clue", _item("From the cue.")), Unavailable)


def test_without_segment_text_the_reason_stays():
    result = AnnotationExplainer({}).explain("subtitle", _item(None))
    assert isinstance(result, Unavailable) and result.reason == "no annotation for ep1__000000040-000003380"
    assert isinstance(AnnotationExplainer({}).explain("subtitle", _item("   ")), Unavailable)
