"""The `llm` explainer: EMER clues from any OpenAI-compatible chat endpoint (vLLM, Ollama, OpenAI, ...).

It follows the EMER authors' procedure (Lian et al. 2023, prompts of zeroQiaoba/AffectGPT): a vision model
describes the sampled frames over time, the voice is described from the audio or from the measured
features, the words are read together with those two clues, the clues are merged into one explanation,
and open-vocabulary labels are extracted from it.

- Prompts are versioned files `transforms/prompts/<version>/<name>.txt` (`string.Template`, so braces in
  data cannot break them). Clip text (transcripts, subtitles, earlier answers) only ever enters a prompt
  JSON-encoded inside a `<data>` block that the prompt declares to be data, never instructions.
- Answers are cached on disk by a hash of the exact request, with the time of the original answer, so
  re-runs make no calls and write the same bytes.
- Transient failures (5xx, 408/409/429, timeouts, connection errors, malformed bodies, empty or unusable
  answers) are retried with exponential backoff; other 4xx give up at once. Either way the field becomes
  `Unavailable(reason)`, never an exception. The API key is read from the environment when the client is
  made and never stored on the explainer, so it cannot reach pickles, logs, reasons or cache files.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from string import Template
from typing import Any

import openai
from emer_builder.transforms.explanation import ExplainInput, FieldValue, Unavailable
from openai.types.chat import ChatCompletion

log = logging.getLogger(__name__)

PROMPTS_DIR = Path(__file__).parent / "prompts"
PROMPT_NAMES = ("visual_clue", "acoustic_clue", "acoustic_clue_audio", "lexical_clue", "multimodal_explanation", "open_vocab_labels")
NOT_PROVIDED = ("subtitle", "discrete_label", "valence")  # human annotations only
NO_KEY = "EMPTY"  # what local servers (vLLM, Ollama) accept when no key is configured
RETRIED_STATUS = frozenset({408, 409, 429})  # and every 5xx

# eGeMAPS functionals shown to the model next to the prosody summary: voice quality, spectral balance, rhythm.
EGEMAPS_FOR_PROMPT = (
    "F0semitoneFrom27.5Hz_sma3nz_stddevNorm",
    "loudness_sma3_stddevNorm",
    "jitterLocal_sma3nz_amean",
    "shimmerLocaldB_sma3nz_amean",
    "HNRdBACF_sma3nz_amean",
    "alphaRatioV_sma3nz_amean",
    "hammarbergIndexV_sma3nz_amean",
    "loudnessPeaksPerSec",
    "VoicedSegmentsPerSec",
    "MeanUnvoicedSegmentLength",
    "equivalentSoundLevel_dBp",
)
LANGUAGE_NAMES = {
    "en": "English",
    "zh": "Chinese",
    "de": "German",
    "fr": "French",
    "es": "Spanish",
    "it": "Italian",
    "pt": "Portuguese",
    "ru": "Russian",
    "ja": "Japanese",
    "ko": "Korean",
}

_SEMAPHORES: dict[tuple[str, int], threading.BoundedSemaphore] = {}
_SEMAPHORES_LOCK = threading.Lock()


def _semaphore(base_url: str, concurrency: int) -> threading.BoundedSemaphore:
    """One semaphore per endpoint and limit in the process, shared by every (unpickled) copy of an explainer."""
    with _SEMAPHORES_LOCK:
        return _SEMAPHORES.setdefault((base_url, concurrency), threading.BoundedSemaphore(concurrency))


class LlmEndpointError(RuntimeError):
    """The endpoint is unreachable or rejects the key (raised by `LlmExplainer.check`)."""


class _Retry(Exception):
    """An attempt failed in a way another attempt may fix."""


class _GiveUp(Exception):
    """An attempt failed in a way no retry can fix (e.g. HTTP 401 or 404)."""


@dataclass(frozen=True)
class Prompt:
    system: Template
    user: Template


def load_prompts(version: str) -> dict[str, Prompt]:
    """The prompt files of one version; each has a free-text preamble, a `[system]` and a `[user]` section."""
    folder = PROMPTS_DIR / version
    if not folder.is_dir():
        raise ValueError(f"no prompt version {version!r} under {PROMPTS_DIR}")
    prompts = {}
    for name in PROMPT_NAMES:
        path = folder / f"{name}.txt"
        parts = re.split(r"^\[(system|user)\][ \t]*$", path.read_text(encoding="utf-8"), flags=re.M)
        if parts[1::2] != ["system", "user"]:
            raise ValueError(f"{path}: expected a [system] then a [user] section")
        prompt = Prompt(Template(parts[2].strip()), Template(parts[4].strip()))
        for template in (prompt.system, prompt.user):  # fail now on a misspelt placeholder, not on the first clip
            template.substitute(language="", n_frames="", data="")
        prompts[name] = prompt
    return prompts


def data_json(value: Any) -> str:
    """JSON for a `<data>` block; `<`, `>` and `&` are escaped so clip text cannot close the block."""
    text = json.dumps(value, ensure_ascii=False, indent=2)
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


def parse_labels(answer: str) -> list[str]:
    """The answer of the label prompt as a list of labels; ValueError unless it is a JSON list of strings."""
    body = answer.strip()
    fenced = re.fullmatch(r"```[\w-]*\s*(.*?)\s*```", body, flags=re.S)
    if fenced:
        body = fenced.group(1)
    try:
        labels = json.loads(body)
    except ValueError:
        raise ValueError("labels answer is not JSON") from None
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        raise ValueError("labels answer is not a JSON list of strings")
    return [x.strip() for x in labels if x.strip()]


def _text_answer(answer: str) -> str:
    return answer.strip()


def _round(value: Any) -> Any:
    """Four significant digits: enough for the model, and stable request bytes (hence cache keys)."""
    return float(f"{value:.4g}") if isinstance(value, (int, float)) and not isinstance(value, bool) else value


def _brief(message: object) -> str:
    line = " ".join(str(message).split())
    return line if len(line) <= 160 else line[:157] + "..."


def _status_reason(e: openai.APIStatusError) -> str:
    """`HTTP <code>: <the server's own message>`, without the client's `Error code: ...` wrapping."""
    body = e.body
    detail = body.get("message") if isinstance(body, dict) else body
    return f"HTTP {e.status_code}: {_brief(detail)}" if isinstance(detail, str) and detail.strip() else f"HTTP {e.status_code}"


def _utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _chosen_text(value: FieldValue | None) -> str | None:
    return value.value if value is not None and isinstance(value.value, str) and value.value.strip() else None


class LlmExplainer:
    """Explanation fields from an OpenAI-compatible chat endpoint; picklable, safe to call from many threads."""

    source_name = "llm"

    def __init__(
        self,
        base_url: str,
        model: str,
        vision_model: str | None = None,
        audio_model: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        timeout_s: float = 120.0,
        max_retries: int = 3,
        concurrency: int = 4,
        cache_dir: str | os.PathLike[str] | None = None,
        send_audio: bool = False,
        temperature: float = 0.0,
        prompt_version: str = "emer-v1",
        language: str = "en",
        retry_base_s: float = 0.5,
        retry_cap_s: float = 30.0,
    ) -> None:
        """`vision_model` and `audio_model` default to `model`; `concurrency` limits requests in flight to `base_url` across
        the whole process; `max_retries` counts attempts after the first, spaced `retry_base_s` doubling up to `retry_cap_s`;
        without `cache_dir` nothing is cached. The key is read from `$api_key_env` (unset: "EMPTY", fine for local servers)."""
        if concurrency < 1 or max_retries < 0:
            raise ValueError("concurrency must be >= 1 and max_retries >= 0")
        self.base_url = base_url
        self.model = model
        self.vision_model = vision_model or model
        self.audio_model = audio_model or model
        self.api_key_env = api_key_env
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.concurrency = concurrency
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.send_audio = send_audio
        self.temperature = temperature
        self.prompt_version = prompt_version
        self.language = language
        self.retry_base_s = retry_base_s
        self.retry_cap_s = retry_cap_s
        self.prompts = load_prompts(prompt_version)
        self.cache_hits = 0  # answers read from the cache
        self.cache_misses = 0  # answers asked of the endpoint
        self.calls = 0  # HTTP requests sent, retries included
        self.failures = 0  # fields left unavailable because the endpoint gave no usable answer
        self._client: openai.OpenAI | None = None
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_client"] = None  # holds the key and open connections
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def stats(self) -> dict[str, int]:
        """Counters for the build summary."""
        return {"cache_hits": self.cache_hits, "cache_misses": self.cache_misses, "calls": self.calls, "failures": self.failures}

    def setup(self) -> None:
        """Make the HTTP client (Beam calls this once per worker; `explain` also makes it on first use)."""
        self._get_client()

    def _get_client(self) -> openai.OpenAI:
        with self._lock:
            if self._client is None:
                key = os.environ.get(self.api_key_env) or NO_KEY
                self._client = openai.OpenAI(base_url=self.base_url, api_key=key, timeout=self.timeout_s, max_retries=0)
            return self._client

    def _redact(self, text: str) -> str:
        key = self._client.api_key if self._client is not None else os.environ.get(self.api_key_env)
        return text.replace(key, "***") if key and key != NO_KEY else text

    def _count(self, name: str) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + 1)

    def check(self) -> None:
        """Preflight: GET /models once, so a wrong URL or key stops the build before any clip is explained."""
        client = self._get_client()
        where = f"LLM endpoint {self.base_url}"
        try:
            served = {m.id for m in client.models.list()}
        except openai.APIConnectionError as e:
            detail = f"timed out after {self.timeout_s:g} s" if isinstance(e, openai.APITimeoutError) else _brief(e.__cause__ or e)
            raise LlmEndpointError(self._redact(f"{where} is unreachable: {detail}")) from None
        except openai.APIStatusError as e:
            if e.status_code in (401, 403):
                unset = "" if os.environ.get(self.api_key_env) else f"; ${self.api_key_env} is not set"
                raise LlmEndpointError(f"{where} rejected the API key from ${self.api_key_env} (HTTP {e.status_code}{unset})") from None
            raise LlmEndpointError(self._redact(f"{where} answered {_status_reason(e)} to GET /models")) from None
        except (openai.APIError, ValueError):
            raise LlmEndpointError(f"{where} gave a malformed answer to GET /models; is it OpenAI-compatible?") from None
        wanted = {self.model, self.vision_model} | ({self.audio_model} if self.send_audio else set())
        missing = sorted(wanted - served)
        if served and missing:  # servers may accept aliases they do not list (Ollama's `name` for `name:latest`)
            log.warning("%s does not list model(s) %s; it lists %s", where, ", ".join(missing), ", ".join(sorted(served)[:10]))

    def explain(self, field_name: str, item: ExplainInput) -> FieldValue | Unavailable:
        """One field's value, or why there is none; never raises for endpoint trouble."""
        if field_name in NOT_PROVIDED:
            return Unavailable(f"llm does not provide {field_name}")
        builders: dict[str, Callable[[ExplainInput], tuple[str, list[dict[str, Any]]] | Unavailable]] = {
            "visual_clue": self._visual_request,
            "acoustic_clue": self._acoustic_request,
            "lexical_clue": self._lexical_request,
            "multimodal_explanation": self._multimodal_request,
            "open_vocab_labels": self._labels_request,
        }
        if field_name not in builders:
            raise ValueError(f"unknown explanation field {field_name!r}")
        request = builders[field_name](item)
        if isinstance(request, Unavailable):
            return request
        model, messages = request
        parse = parse_labels if field_name == "open_vocab_labels" else _text_answer
        answer = self._answer(field_name, model, messages, parse)
        if isinstance(answer, Unavailable):
            return answer
        value, when = answer
        return FieldValue(value, self.language, f"llm:{model}", self.prompt_version, when)

    # -- requests, one per field -------------------------------------------------------------------------

    def _messages(self, name: str, data: dict[str, Any], attachments: list[dict[str, Any]] | None = None, **extra: Any) -> list[dict[str, Any]]:
        prompt = self.prompts[name]
        language = LANGUAGE_NAMES.get(self.language, f"the language with ISO 639-1 code {self.language!r}")
        values = {"language": language, "data": data_json(data), **extra}
        user = prompt.user.substitute(values)
        content: str | list[dict[str, Any]] = [{"type": "text", "text": user}, *attachments] if attachments else user
        return [{"role": "system", "content": prompt.system.substitute(values)}, {"role": "user", "content": content}]

    def _visual_request(self, item: ExplainInput) -> tuple[str, list[dict[str, Any]]] | Unavailable:
        if not item.keyframes:
            return Unavailable("no frames")
        frames = sorted(item.keyframes, key=lambda f: f[0])
        data = {"clip_duration_s": _round((item.fields.get("media") or {}).get("duration_s")), "frame_times_s": [round(t, 2) for t, _ in frames]}
        images = [{"type": "image_url", "image_url": {"url": "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")}} for _, jpeg in frames]
        return self.vision_model, self._messages("visual_clue", data, images, n_frames=len(frames))

    def _acoustic_request(self, item: ExplainInput) -> tuple[str, list[dict[str, Any]]] | Unavailable:
        acoustics = item.fields.get("acoustics")
        if not acoustics:
            return Unavailable("no acoustic features measured")
        if acoustics.get("reason"):
            return Unavailable(acoustics["reason"])
        duration = _round((item.fields.get("media") or {}).get("duration_s"))
        if self.send_audio and item.audio_wav:
            audio = {"type": "input_audio", "input_audio": {"data": base64.b64encode(item.audio_wav).decode("ascii"), "format": "wav"}}
            return self.audio_model, self._messages("acoustic_clue_audio", {"clip_duration_s": duration}, [audio])
        prosody = {k: _round(v) for k, v in (acoustics.get("prosody") or {}).items()}
        egemaps = acoustics.get("egemaps") or {}
        selected = {n: _round(egemaps[n]) for n in EGEMAPS_FOR_PROMPT if n in egemaps}
        if not any(isinstance(v, float) for v in (*prosody.values(), *selected.values())):
            return Unavailable("no acoustic measurements to describe")
        transcript = item.fields.get("transcript") or {}
        data = {"clip_duration_s": duration, "prosody": prosody, "egemaps": selected, "transcript_words": transcript.get("word_count")}
        return self.model, self._messages("acoustic_clue", data)

    def _words(self, item: ExplainInput) -> tuple[str, str] | Unavailable:
        """The clip's words and where they come from: the chosen subtitle, else the transcript."""
        subtitle = _chosen_text(item.chosen.get("subtitle"))
        if subtitle:
            return subtitle, "subtitle"
        transcript = item.fields.get("transcript") or {}
        text = (transcript.get("text") or "").strip()
        if text:
            return text, "speech recognition"
        return Unavailable(f"no words: no subtitle, and {transcript.get('reason') or 'the transcript is empty'}")

    def _clues(self, item: ExplainInput, names: tuple[str, ...]) -> dict[str, str]:
        return {n: t for n in names if (t := _chosen_text(item.chosen.get(n)))}

    def _lexical_request(self, item: ExplainInput) -> tuple[str, list[dict[str, Any]]] | Unavailable:
        words = self._words(item)
        if isinstance(words, Unavailable):
            return words
        text, origin = words
        language = item.chosen["subtitle"].language if origin == "subtitle" else (item.fields.get("transcript") or {}).get("language")
        data = {"subtitle": text, "subtitle_origin": origin, "subtitle_language": language, **self._clues(item, ("visual_clue", "acoustic_clue"))}
        return self.model, self._messages("lexical_clue", data)

    def _multimodal_request(self, item: ExplainInput) -> tuple[str, list[dict[str, Any]]] | Unavailable:
        clues = self._clues(item, ("visual_clue", "acoustic_clue", "lexical_clue"))
        if not clues:
            return Unavailable("no clues to merge")
        words = self._words(item)
        data = {**clues, **({"subtitle": words[0]} if isinstance(words, tuple) else {})}
        return self.model, self._messages("multimodal_explanation", data)

    def _labels_request(self, item: ExplainInput) -> tuple[str, list[dict[str, Any]]] | Unavailable:
        explanation = _chosen_text(item.chosen.get("multimodal_explanation"))
        if not explanation:
            return Unavailable("no multimodal explanation to extract labels from")
        return self.model, self._messages("open_vocab_labels", {"explanation": explanation})

    # -- asking, retrying, caching ------------------------------------------------------------------------

    def _answer(self, field_name: str, model: str, messages: list[dict[str, Any]], parse: Callable[[str], Any]) -> tuple[Any, str] | Unavailable:
        """(parsed answer, UTC time it was given), from the cache or the endpoint."""
        path = self._cache_path(field_name, model, messages)
        cached = self._cache_read(path)
        if cached is not None:
            try:
                value = parse(cached["answer"])
            except ValueError:
                log.warning("ignoring unusable cached answer %s", path)
            else:
                self._count("cache_hits")
                return value, cached["time"]
        self._count("cache_misses")
        attempts = self.max_retries + 1
        last = ""
        for attempt in range(attempts):
            if attempt:
                time.sleep(min(self.retry_cap_s, self.retry_base_s * 2 ** (attempt - 1)))
            try:
                answer = self._complete(model, messages)
                value = parse(answer)
            except _GiveUp as e:
                self._count("failures")
                log.warning("llm %s: %s", field_name, e)
                return Unavailable(str(e))
            except (_Retry, ValueError) as e:
                last = str(e)
                log.info("llm %s: attempt %d/%d failed: %s", field_name, attempt + 1, attempts, last)
                continue
            entry = self._cache_store(path, {"answer": answer, "time": _utc_now()})
            if entry["answer"] != answer:  # another thread or worker answered the same request first: its answer wins
                value = parse(entry["answer"])
            return value, entry["time"]
        self._count("failures")
        reason = f"no usable answer from {model} after {attempts} attempt{'s' if attempts > 1 else ''}: {last}"
        log.warning("llm %s: %s", field_name, reason)
        return Unavailable(reason)

    def _complete(self, model: str, messages: list[dict[str, Any]]) -> str:
        """One chat completion; raises _Retry or _GiveUp with a short reason that never holds the key."""
        client = self._get_client()
        with _semaphore(self.base_url, self.concurrency):
            self._count("calls")
            try:
                completion = client.chat.completions.create(model=model, messages=messages, temperature=self.temperature)
            except openai.APITimeoutError:
                raise _Retry(f"timed out after {self.timeout_s:g} s") from None
            except openai.APIConnectionError as e:
                raise _Retry(self._redact(f"connection error: {_brief(e.__cause__ or e)}")) from None
            except openai.APIStatusError as e:
                reason = self._redact(_status_reason(e))
                if e.status_code >= 500 or e.status_code in RETRIED_STATUS:
                    raise _Retry(reason) from None
                raise _GiveUp(reason) from None
            except (openai.APIResponseValidationError, ValueError):
                raise _Retry("malformed response body") from None
        if not isinstance(completion, ChatCompletion) or not completion.choices:
            raise _Retry("malformed response body")
        content = completion.choices[0].message.content
        if not content or not content.strip():
            raise _Retry("empty answer")
        return content

    def _cache_path(self, field_name: str, model: str, messages: list[dict[str, Any]]) -> Path | None:
        if self.cache_dir is None:
            return None
        request = {"model": model, "prompt_version": self.prompt_version, "field": field_name, "temperature": self.temperature, "messages": messages}
        digest = hashlib.sha256(json.dumps(request, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode("utf-8")).hexdigest()
        return self.cache_dir / digest[:2] / f"{digest}.json"

    def _cache_read(self, path: Path | None) -> dict[str, str] | None:
        if path is None:
            return None
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            log.warning("ignoring unreadable cache entry %s: %s", path, e)
            return None
        if not (isinstance(entry, dict) and isinstance(entry.get("answer"), str) and isinstance(entry.get("time"), str)):
            log.warning("ignoring malformed cache entry %s", path)
            return None
        return entry

    def _cache_store(self, path: Path | None, entry: dict[str, str]) -> dict[str, str]:
        """Store the entry unless one exists (hard link: atomic, never replaces), and return the stored
        entry, so two identical requests in flight end with one answer and one time, as a re-run sees."""
        if path is None:
            return entry
        tmp = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=path.parent, suffix=".tmp", delete=False) as f:
                tmp = f.name
                json.dump(entry, f, ensure_ascii=False, sort_keys=True)
            try:
                os.link(tmp, path)
            except FileExistsError:
                return self._cache_read(path) or entry
        except OSError as e:
            log.warning("cannot write LLM cache entry %s: %s", path, e)
        finally:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
        return entry
