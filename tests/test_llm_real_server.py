"""The `llm` explainer and the sentiment mapping against a real LLM server: llama.cpp (xllamacpp) serving
SmolLM2-135M-Instruct, a text-only chat model, on loopback (tests/llama_server.py).

A 135M model's wording is not the point: these tests assert on structure and provenance (which fields the
model gave, how each answer was read, what was sent and what was not, what the server counted), never on
what the model said. The image path stays tested against the loopback stand-in (tests/test_llm_explainer.py):
no package reachable here ships a vision model with its projector.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import openai
import pytest
from emer_builder.evaluate.sentiment import SENTIMENTS, SentimentMapper
from emer_builder.transforms.explanation import FieldValue, Unavailable
from emer_builder.transforms.llm_explainer import LlmExplainer

from tests.llama_server import MODEL_ID, LlamaServer, missing
from tests.test_llm_explainer import ASKED, clip_inputs, make_item, nonzero, run_all

SHORT = {"visual_clue": 96, "acoustic_clue": 96, "lexical_clue": 96, "multimodal_explanation": 128, "open_vocab_labels": 64}


@pytest.fixture(scope="module")
def clip(demo_videos: Path, librivox_dir: Path) -> dict[str, Any]:
    return clip_inputs(demo_videos, librivox_dir)


def explainer(server: LlamaServer, cache: Path | None, **kw: Any) -> LlmExplainer:
    return LlmExplainer(server.base_url, MODEL_ID, cache_dir=cache, timeout_s=120, retry_base_s=0.01, max_tokens=kw.pop("max_tokens", SHORT), **kw)


@pytest.mark.slow  # five prompts of 300-950 tokens: about 20 s on 2 cores
def test_a_text_only_model_gives_every_field_of_a_clip(llama_server: LlamaServer, clip: dict[str, Any], tmp_path: Path) -> None:
    """check() learns from /v1/models that the model takes no images, so no frame is ever sent; every clue, the
    explanation and the labels come from the model; a second explainer on the same cache asks nothing."""
    before = llama_server.metrics()["tokens_predicted_total"]
    first = explainer(llama_server, tmp_path / "cache")
    first.check()
    assert first.known[(MODEL_ID, "images")] is False and first.known[(MODEL_ID, "audio")] is False
    results = run_all(first, make_item(clip))

    assert {n: results[n] for n in ("subtitle", "discrete_label", "valence")} == {n: Unavailable(f"llm does not provide {n}") for n in ("subtitle", "discrete_label", "valence")}
    values = {n: results[n] for n in ASKED}
    assert all(isinstance(v, FieldValue) for v in values.values()), values
    assert {n: v.source for n, v in values.items()} == {
        "visual_clue": f"llm:{MODEL_ID}:text",  # from the measured face data
        "acoustic_clue": f"llm:{MODEL_ID}:text",  # from eGeMAPS and prosody
        "lexical_clue": f"llm:{MODEL_ID}",
        "multimodal_explanation": f"llm:{MODEL_ID}",
        "open_vocab_labels": f"llm:{MODEL_ID}",
    }
    for name in ASKED[:-1]:
        assert isinstance(values[name].value, str) and values[name].value.strip() and values[name].prompt_version == "emer-v2"
    labels = values["open_vocab_labels"].value
    assert isinstance(labels, list) and all(isinstance(x, str) and x for x in labels)
    stats = first.stats()
    assert (stats["calls"], stats["failures"], stats["text_fallbacks"]) == (5, 0, 1)  # the visual clue from measurements
    assert stats["read_schema"] + stats["read_tolerant"] == 1 and stats["read_text"] + stats["read_cut"] == 4  # tolerant: a list cut at max_tokens
    assert llama_server.metrics()["tokens_predicted_total"] > before

    entries = [json.loads(p.read_text()) for p in (tmp_path / "cache").rglob("*.json")]
    assert sorted(e["format"] for e in entries) == ["json_schema", "text", "text", "text", "text"]

    after = llama_server.metrics()["tokens_predicted_total"]
    again = explainer(llama_server, tmp_path / "cache")
    assert run_all(again, make_item(clip)) == results
    assert nonzero(again.stats()) == {k: v for k, v in nonzero(stats).items() if k.startswith("read_") or k == "text_fallbacks"} | {"cache_hits": 5}
    assert llama_server.metrics()["tokens_predicted_total"] == after  # the server generated nothing


@pytest.mark.slow
def test_the_first_image_request_is_refused_once_and_learned(llama_server: LlamaServer, clip: dict[str, Any]) -> None:
    """Without check(), the first request with frames meets llama.cpp's HTTP 500 "image input is not supported":
    not retried, learned for the process, and the clue comes from the measurements."""
    fresh = explainer(llama_server, None, max_retries=3, max_tokens={"visual_clue": 24})
    value = fresh.explain("visual_clue", make_item(clip))
    assert isinstance(value, FieldValue) and value.source == f"llm:{MODEL_ID}:text"
    assert (fresh.calls, fresh.failures, fresh.text_fallbacks) == (2, 0, 1)  # one refused image request, one text request
    other = explainer(llama_server, None, max_tokens={"visual_clue": 24})  # another explainer in the same process: the refusal is known
    assert other.explain("visual_clue", make_item(clip)).source == f"llm:{MODEL_ID}:text" and other.calls == 1
    with pytest.raises(openai.InternalServerError, match="image input is not supported"):  # what the server really answers
        client = openai.OpenAI(base_url=llama_server.base_url, api_key="EMPTY", max_retries=0)
        image = {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64," + "A" * 8}}
        client.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": [{"type": "text", "text": "?"}, image]}], max_tokens=4)


@pytest.mark.slow  # two full label generations; the fast set keeps one real-server request (the image refusal)
@pytest.mark.parametrize(("fmt", "read"), [("json_object", "json_object"), ("text", None)])
def test_labels_without_a_schema(llama_server: LlamaServer, clip: dict[str, Any], fmt: str, read: str | None) -> None:
    """`json_object` is enforced too; plain text is read strictly, then tolerantly, or the field is null with the reason
    (not retried at temperature 0): structure either way, whatever this small model says."""
    item = make_item(clip)
    item.chosen["multimodal_explanation"] = FieldValue("He smiles warmly and speaks calmly; he seems happy and relaxed.", "en", "rules:1")
    ask = explainer(llama_server, None, response_format=fmt)
    result = ask.explain("open_vocab_labels", item)
    assert ask.calls == 1
    if read is not None:
        assert isinstance(result, FieldValue) and ask.stats()[f"read_{read}"] == 1
    else:
        assert isinstance(result, FieldValue) and ask.stats()["read_json"] + ask.stats()["read_tolerant"] == 1 or (
            isinstance(result, Unavailable) and result.reason.endswith("not retried at temperature 0")
        )
    if isinstance(result, FieldValue):
        assert isinstance(result.value, list) and all(isinstance(x, str) for x in result.value)


@pytest.mark.slow  # two server starts and four generations: a determinism study, not a per-change check
def test_same_request_twice_without_the_cache(clip: dict[str, Any]) -> None:
    """Determinism as measured on CPU (temperature 0, seed 0, one slot): a request computed from scratch gives the
    same bytes every time, across a server restart too. What is not bit-identical is a request whose prompt prefix
    the slot reuses from the previous one (llama.cpp's `cache_prompt`, on by default): the rest of the prompt is
    computed in another batch shape and a close greedy choice can flip (docs/guide/explanations.md, "Explanations from an LLM").
    A build's answers are deterministic through its answer cache, not through the server."""
    reason = missing()
    if reason:
        pytest.skip(reason)
    item = make_item(clip)
    item.chosen["multimodal_explanation"] = FieldValue("He smiles warmly and speaks calmly; he seems happy and relaxed.", "en", "rules:1")
    answers = []
    for _ in range(2):
        with LlamaServer(parallel=1) as server:
            ask = explainer(server, None, response_format="json_schema")
            request = ask._labels_request(item)
            client = openai.OpenAI(base_url=server.base_url, api_key="EMPTY", max_retries=0)
            for _ in range(2):
                completion = client.chat.completions.create(
                    model=MODEL_ID, messages=request.messages, temperature=0, seed=0, max_tokens=request.max_tokens,
                    response_format=request.shape.response_format("json_schema"), extra_body={"cache_prompt": False},
                )
                answers.append(completion.choices[0].message.content)
    assert len(set(answers)) == 1 and json.loads(answers[0])["labels"] is not None


@pytest.mark.slow  # four generations
def test_sentiment_mapping_against_the_real_server(llama_server: LlamaServer, tmp_path: Path) -> None:
    """`emer evaluate`'s open-set -> sentiment mapping: the schema's enum makes every answer one of the three words."""
    mapper = SentimentMapper(llama_server.base_url, MODEL_ID, cache_dir=tmp_path / "cache", timeout_s=60)
    lists = {"a": ["happy", "excited"], "b": ["sad", "disappointed"], "c": ["calm"], "d": ["angry"], "e": [], "f": ["happy", "excited"]}
    words, failed = mapper.map(lists)
    assert failed == {} and set(words) == set(lists) and set(words.values()) <= set(SENTIMENTS)
    assert words["e"] == "neutral" and words["a"] == words["f"]  # empty: no request; one request per distinct list
    assert nonzero(mapper.stats()) == {"cache_misses": 4, "calls": 4, "read_schema": 4}
    again = SentimentMapper(llama_server.base_url, MODEL_ID, cache_dir=tmp_path / "cache")
    assert again.map(lists) == (words, {}) and nonzero(again.stats()) == {"cache_hits": 4, "read_schema": 4}
