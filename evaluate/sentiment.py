"""Open-set label lists -> positive / negative / neutral, through an OpenAI-compatible chat endpoint.

MER-UniBench scores open-vocabulary answers on sentiment corpora by asking an LLM (the authors used
Qwen2.5-7B-Instruct and cached the answers) which of positive, negative and neutral the labels
describe. `SentimentMapper` asks the configured endpoint with the versioned prompt
`transforms/prompts/sentiment-v1/openset_to_sentiment.txt`, through the `llm` explainer's client:
the same retries and the same disk cache keyed by the exact request, so a re-run asks nothing and
gets the same answers. The answer is asked for as JSON with a schema whose only value is one of the three
words (an endpoint without schemas gets a JSON object, then plain text, read as the authors read it). One
request per distinct label list; an empty list is neutral without a request (the prompt's own example).
This module imports `openai`; `emer evaluate` imports it only when a mapping is needed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from string import Template
from typing import Any

from emer_builder.transforms.explanation import Unavailable
from emer_builder.transforms.llm_answers import AnswerShape
from emer_builder.transforms.llm_explainer import PROMPTS_DIR, Ask, LlmExplainer, Prompt

PROMPT_VERSION = "sentiment-v2"
PROMPT_NAME = "openset_to_sentiment"
FIELD = "openset_sentiment"  # the request's name in the cache key
SENTIMENTS = ("positive", "negative", "neutral")
MAX_TOKENS = 24  # {"sentiment": "negative"} is about 8 tokens


def load_sentiment_prompt(version: str = PROMPT_VERSION) -> Prompt:
    """The prompt file of one version: a free-text preamble, a `[system]` and a `[user]` section ($data)."""
    path = PROMPTS_DIR / version / f"{PROMPT_NAME}.txt"
    if not path.is_file():
        raise ValueError(f"no sentiment prompt {path}")
    parts = re.split(r"^\[(system|user)\][ \t]*$", path.read_text(encoding="utf-8"), flags=re.M)
    if parts[1::2] != ["system", "user"]:
        raise ValueError(f"{path}: expected a [system] then a [user] section")
    prompt = Prompt(Template(parts[2].strip()), Template(parts[4].strip()))
    for template in (prompt.system, prompt.user):
        template.substitute(data="", language="")
    return prompt


def parse_sentiment_answer(answer: str) -> str:
    """The answer as one lowercase word: spaces, quotes, code fences and a final full stop dropped.

    Never raises: an answer that is not positive / negative / neutral is kept as given (and cached), and
    scores 0, as the authors score such answers."""
    text = answer.strip().strip("`").strip()
    if text.lower().startswith(("text\n", "json\n")):
        text = text[5:]
    return text.strip().strip("\"'").strip().rstrip(".").strip().lower()


def read_sentiment(answer: str, fmt: str = "text") -> tuple[str, str]:
    """(sentiment word, how it was read): the JSON object's `sentiment` where the answer is one, else the
    plain-text reading of `parse_sentiment_answer` (never raises)."""
    body = answer.strip().strip("`").strip()
    if body[:4].lower() == "json":  # a fence's tag, or a bare `JSON` line, in any case
        body = body[4:]
    try:
        value = json.loads(body.strip())
    except ValueError:
        value = None
    if isinstance(value, dict) and isinstance(value.get("sentiment"), str):  # read as the plain text is: `Positive.` is positive
        return parse_sentiment_answer(value["sentiment"]), {"json_schema": "schema", "json_object": "json_object"}.get(fmt, "json")
    return parse_sentiment_answer(answer), "text"


SENTIMENT = AnswerShape("sentiment", "sentiment", {"type": "string", "enum": list(SENTIMENTS)}, read_sentiment)


class SentimentMapper(LlmExplainer):
    """Maps label lists to a sentiment word with the explainer's endpoint client, retries and cache."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str = "OPENAI_API_KEY",
        timeout_s: float = 60.0,
        max_retries: int = 3,
        concurrency: int = 4,
        cache_dir: str | Path | None = None,
        temperature: float = 0.0,
        version: str = PROMPT_VERSION,
        retry_base_s: float = 0.5,
        response_format: str = "auto",
        seed: int | None = 0,
    ) -> None:
        super().__init__(
            base_url,
            model,
            api_key_env=api_key_env,
            timeout_s=timeout_s,
            max_retries=max_retries,
            concurrency=concurrency,
            cache_dir=cache_dir,
            temperature=temperature,
            retry_base_s=retry_base_s,
            response_format=response_format,
            seed=seed,
        )
        # This client asks one thing only: its prompt and version replace the explanation prompts,
        # and the version is part of every cache key.
        self.prompt_version = version
        self.prompts = {PROMPT_NAME: load_sentiment_prompt(version)}

    @classmethod
    def from_config(cls, llm: Any, cache_dir: str | Path | None = None) -> SentimentMapper:
        """From a build config's `explanation.llm` section (`core.config.LlmConfig`); its cache folder by default."""
        from emer_builder.core.paths import emer_home

        return cls(
            llm.base_url,
            llm.model,
            api_key_env=llm.api_key_env,
            timeout_s=llm.timeout_s,
            max_retries=llm.max_retries,
            concurrency=llm.concurrency,
            cache_dir=cache_dir or llm.cache_dir or emer_home() / "llm-cache",
            temperature=llm.temperature,
            response_format=llm.response_format,
            seed=llm.seed,
        )

    def describe(self) -> str:
        """Model and prompt version, as reports name the mapping."""
        return f"llm:{self.model} prompt {self.prompt_version}"

    def ask(self, labels: Iterable[str]) -> str | Unavailable:
        """The sentiment word for one label list, or why there is none."""
        labels = list(labels)
        if not labels:
            return "neutral"
        messages = self._messages(PROMPT_NAME, {"labels": labels})
        answer = self._answer(Ask(FIELD, self.model, messages, MAX_TOKENS, shape=SENTIMENT))
        return answer if isinstance(answer, Unavailable) else answer[0]

    def map(self, name2labels: dict[str, list[str]]) -> tuple[dict[str, str], dict[str, str]]:
        """(name -> sentiment word, name -> why no answer): one request per distinct label list, `concurrency` at a time."""
        distinct = sorted({tuple(labels) for labels in name2labels.values()})
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            answers = dict(zip(distinct, pool.map(self.ask, distinct), strict=True))
        words: dict[str, str] = {}
        failed: dict[str, str] = {}
        for name, labels in name2labels.items():
            answer = answers[tuple(labels)]
            if isinstance(answer, Unavailable):
                failed[name] = answer.reason
            else:
                words[name] = answer
        return words, failed
