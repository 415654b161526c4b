"""Open-set predictions on a sentiment corpus: labels mapped to positive/negative/neutral by an
OpenAI-compatible endpoint (the real `openai` client against the loopback server), with the versioned
prompt and the explainer's response cache."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from emer_builder.cli.main import main
from emer_builder.core.config import LlmConfig
from emer_builder.core.errors import UserError
from emer_builder.evaluate import evaluate_many, run_evaluate
from emer_builder.evaluate.sentiment import PROMPT_VERSION, SentimentMapper, load_sentiment_prompt, parse_sentiment_answer

from tests import openai_loopback
from tests.csv_tables import write_csv as _csv
from tests.openai_loopback import OpenAILoopback

KEY = "sk-loopback-sentiment-never-log-me"
KEY_ENV = "EMER_TEST_LLM_KEY"
POSITIVE = {"happy", "joyful", "grateful", "excited", "relieved"}
NEGATIVE = {"sad", "angry", "disappointed", "worried", "furious"}


def _answer(record: openai_loopback.Recorded) -> str:
    """What a model would say: positive / negative by the labels, "mixed" when they pull both ways (this stand-in
    does not enforce the schema's enum, so the answer outside it still reaches the scoring); JSON when asked for it."""
    labels = set(record.data()["labels"])
    pos, neg = bool(labels & POSITIVE), bool(labels & NEGATIVE)
    word = "mixed" if pos and neg else " Positive." if pos else "negative" if neg else "neutral"
    return json.dumps({"sentiment": word.strip(" .").lower()}) if record.body.get("response_format") else word


@pytest.fixture()
def loopback(monkeypatch: pytest.MonkeyPatch) -> Iterator[OpenAILoopback]:
    """The loopback server taught the sentiment prompt: its system prompt phrase names the request, `_answer` answers it."""
    phrases = (*openai_loopback.FIELD_PHRASES, ("choose the most likely sentiment", "openset_sentiment"))
    monkeypatch.setattr(openai_loopback, "FIELD_PHRASES", phrases)
    emer_answer = openai_loopback.answer_for
    monkeypatch.setattr(openai_loopback, "answer_for", lambda r: _answer(r) if r.field == "openset_sentiment" else emer_answer(r))
    monkeypatch.setenv(KEY_ENV, KEY)
    with OpenAILoopback(KEY) as server:
        yield server


@pytest.fixture()
def files(tmp_path: Path) -> tuple[str, str]:
    """CMU-MOSI-style MMSA label.csv (test rows) and open-set predictions for it."""
    gt = _csv(
        tmp_path / "label.csv",
        ["video_id", "clip_id", "text", "label", "annotation", "mode", "label_T", "label_A", "label_V"],
        [
            ["03bSnISJMiM", 1, "ANSWER I THINK IT WAS GREAT", 2.4, "Positive", "test", "", "", ""],
            ["03bSnISJMiM", 2, "IT WAS A BIT OF A LETDOWN", -1.8, "Negative", "test", "", "", ""],
            ["03bSnISJMiM", 3, "AND THEN IT ENDS", 0.0, "Neutral", "test", "", "", ""],
            ["0h-zjBukYpk", 1, "I LOVED EVERY MINUTE", 3.0, "Positive", "test", "", "", ""],
            ["0h-zjBukYpk", 2, "NOT SURE HOW I FEEL", 0.6, "Positive", "test", "", "", ""],
            ["0h-zjBukYpk", 3, "THAT WAS JUST SAD", -2.2, "Negative", "test", "", "", ""],
            ["1DmNV9C1hbY", 1, "WHATEVER", -0.4, "Negative", "test", "", "", ""],
        ],
    )
    pred = _csv(
        tmp_path / "pred.csv",
        ["name", "openset"],
        [
            ["03bSnISJMiM_1", "['happy', 'excited']"],  # positive, gold + : right
            ["03bSnISJMiM_2", "['disappointed']"],  # negative, gold - : right
            ["03bSnISJMiM_3", "['calm']"],  # gold 0: dropped, never asked
            ["0h-zjBukYpk_1", "['excited', 'happy']"],  # another list, another request (order is kept)
            ["0h-zjBukYpk_2", "['worried', 'relieved']"],  # "mixed": scored 0, gold + : wrong
            ["0h-zjBukYpk_3", "['disappointed']"],  # the same list as above: asked once
            ["1DmNV9C1hbY_1", "[]"],  # empty: neutral without a request, gold - : right
        ],
    )
    return gt, pred


def nonzero(stats: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in stats.items() if v}


def _llm(server: OpenAILoopback, cache: Path, **extra: object) -> LlmConfig:
    return LlmConfig(base_url=server.base_url, model="loopback-chat", api_key_env=KEY_ENV, cache_dir=str(cache), **extra)  # type: ignore[arg-type]


def test_open_set_predictions_mapped_through_the_endpoint(loopback: OpenAILoopback, files: tuple[str, str], tmp_path: Path) -> None:
    gt, pred = files
    result = run_evaluate(f"{gt}:test", pred, llm=_llm(loopback, tmp_path / "cache"))
    assert result["task"] == "sentiment"
    s = result["sentiment"]
    # kept 6 (gold != 0): truth > 0 T F T T F F; mapped > 0 T F T F F F -> accuracy 5/6
    # F1(T): P 1, R 2/3 -> 0.8; F1(F): P 3/4, R 1 -> 6/7; supports 3 and 3
    assert (s["scored"], s["dropped_gold_zero"], s["unrecognised"], s["llm_failures"]) == (6, 1, 1, 0)
    assert s["accuracy"] == pytest.approx(5 / 6) and s["weighted_f1"] == pytest.approx((0.8 + 6 / 7) / 2)
    assert s["predictions"] == f"open-set labels mapped by llm:loopback-chat prompt {PROMPT_VERSION}"
    asked = loopback.chat_requests("openset_sentiment")
    assert len(asked) == 4  # 4 distinct non-empty lists among the kept samples
    assert sorted(json.dumps(r.data()["labels"]) for r in asked) == sorted(
        ['["happy", "excited"]', '["disappointed"]', '["excited", "happy"]', '["worried", "relieved"]']
    )
    first = asked[0]
    assert first.system() == load_sentiment_prompt().system.template and first.body["model"] == "loopback-chat" and first.body["temperature"] == 0.0
    assert first.headers["authorization"] == f"Bearer {KEY}"
    schema = first.body["response_format"]["json_schema"]["schema"]
    assert schema["properties"]["sentiment"] == {"type": "string", "enum": ["positive", "negative", "neutral"]} and first.body["max_tokens"] == 24
    assert nonzero(s["llm"]) == {"cache_misses": 4, "calls": 4, "read_schema": 4}
    # a re-run asks nothing: every answer comes from the cache the explainer uses, and the numbers are the same
    again = run_evaluate(f"{gt}:test", pred, llm=_llm(loopback, tmp_path / "cache"))
    assert len(loopback.chat_requests("openset_sentiment")) == 4
    assert nonzero(again["sentiment"]["llm"]) == {"cache_hits": 4, "read_schema": 4}
    assert {k: v for k, v in again["sentiment"].items() if k != "llm"} == {k: v for k, v in s.items() if k != "llm"}
    # several prediction files share one mapper; each result counts its own requests
    both = evaluate_many(f"{gt}:test", [pred, pred], llm=SentimentMapper.from_config(_llm(loopback, tmp_path / "other-cache")))
    assert [nonzero(r["sentiment"]["llm"]) for r in both] == [{"cache_misses": 4, "calls": 4, "read_schema": 4}, {"cache_hits": 4, "read_schema": 4}]
    cached = sorted((tmp_path / "cache").rglob("*.json"))
    assert len(cached) == 4 and KEY not in "".join(p.read_text() for p in cached)


def test_endpoint_failures_are_counted_not_fatal(loopback: OpenAILoopback, files: tuple[str, str], tmp_path: Path) -> None:
    gt, pred = files
    loopback.inject("500", times=None, field="openset_sentiment")
    mapper = SentimentMapper.from_config(_llm(loopback, tmp_path / "cache", max_retries=0))
    result = run_evaluate(f"{gt}:test", pred, llm=mapper)
    s = result["sentiment"]
    assert s["llm_failures"] == 5 and s["llm"]["failures"] == 4  # 5 samples, 4 distinct lists
    assert s["accuracy"] == pytest.approx(3 / 6)  # every failed list scores 0: only the three negative golds are right
    assert list((tmp_path / "cache").rglob("*.json")) == []  # nothing cached from a failure


def test_cli_with_config_and_unreachable_endpoint(loopback: OpenAILoopback, files: tuple[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gt, pred = files
    config = tmp_path / "build.yaml"
    config.write_text(
        f"explanation:\n  llm: {{base_url: '{loopback.base_url}', model: loopback-chat, api_key_env: {KEY_ENV}, cache_dir: '{tmp_path / 'cache'}'}}\n"
    )
    assert main(["evaluate", "--gt", f"{gt}:test", "--pred", pred, "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "sentiment       0.8286    0.8333       6                 1" in out and "endpoint: 0 answers from the cache, 4 asked, 4 requests; read as schema 4" in out
    dead = ["evaluate", "--gt", f"{gt}:test", "--pred", pred, "--config", str(config), "--llm-base-url", "http://127.0.0.1:9/v1"]
    assert main(dead) == 2
    err = capsys.readouterr().err
    assert err.startswith("emer: error: cannot map labels to sentiment: LLM endpoint http://127.0.0.1:9/v1 is unreachable") and err.count("\n") == 1
    with pytest.raises(UserError, match="needs an OpenAI-compatible endpoint"):
        run_evaluate(f"{gt}:test", pred)


def test_answer_parsing_and_prompt_file() -> None:
    assert [parse_sentiment_answer(a) for a in ("Positive.", " 'negative' ", "```\nneutral\n```", "Mixed feelings")] == [
        "positive",
        "negative",
        "neutral",
        "mixed feelings",
    ]
    prompt = load_sentiment_prompt(PROMPT_VERSION)
    assert "positive, negative, neutral" in prompt.system.template and "$data" in prompt.user.template
    assert "JSON array of strings" not in prompt.system.template  # would be taken for the emer-v1 label prompt
    with pytest.raises(ValueError, match="no sentiment prompt"):
        load_sentiment_prompt("sentiment-v0")
