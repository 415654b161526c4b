"""The `llm` explainer: EMER clues from any OpenAI-compatible chat endpoint (vLLM, Ollama, llama.cpp, OpenAI, ...).

It follows the EMER authors' procedure (Lian et al. 2023, prompts of zeroQiaoba/AffectGPT): a vision model
describes the sampled frames over time, the voice is described from the audio or from the measured
features, the words are read together with those two clues, the clues are merged into one explanation,
and open-vocabulary labels are extracted from it.

- Prompts are versioned files `transforms/prompts/<version>/<name>.txt` (`string.Template`, so braces in
  data cannot break them). Clip text (transcripts, subtitles, earlier answers) only ever enters a prompt
  JSON-encoded inside a `<data>` block that the prompt declares to be data, never instructions.
- Every request carries `max_tokens` (per field) and a seed; the label list is asked for with a JSON schema
  where the endpoint takes one, then as a JSON object, then as text, and read tolerantly (`llm_answers`).
- Capabilities, not blind retries: a model that refuses images (or audio) is learned once per endpoint and
  model (or from `/v1/models`, or set in the config); its visual clue is then written from the build's
  measured face data as text, as the acoustic clue is from eGeMAPS, with the source `llm:<model>:text`.
- Answers are cached on disk by a hash of the exact request, with the time of the original answer, so
  re-runs make no calls and write the same bytes.
- Transient failures (5xx, 408/409/429, timeouts, connection errors, malformed bodies, empty answers) are
  retried with exponential backoff; what cannot change on retry is not (other 4xx, a refused image or
  audio part, an unusable answer at temperature 0). Either way the field becomes `Unavailable(reason)`,
  never an exception. The API key is read from the environment when the client is made and never stored
  on the explainer, so it cannot reach pickles, logs, reasons or cache files.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import re
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from string import Template
from typing import Any

import openai
from emer_builder.core.config import LlmConfig
from emer_builder.transforms.explanation import ExplainInput, FieldValue, Unavailable
from emer_builder.transforms.llm_answers import FORMATS, LABELS, READS, AnswerShape, read_text
from openai.types.chat import ChatCompletion

log = logging.getLogger(__name__)

PROMPTS_DIR = Path(__file__).parent / "prompts"
PROMPT_NAMES = ("visual_clue", "acoustic_clue", "acoustic_clue_audio", "lexical_clue", "multimodal_explanation", "open_vocab_labels")
OPTIONAL_PROMPTS = ("visual_clue_text",)  # since emer-v2: the visual clue from measured face data
NOT_PROVIDED = ("subtitle", "discrete_label", "valence")  # human annotations only
ASKED_FIELDS = ("visual_clue", "acoustic_clue", "lexical_clue", "multimodal_explanation", "open_vocab_labels")
NO_KEY = "EMPTY"  # what local servers (vLLM, Ollama) accept when no key is configured
RETRIED_STATUS = frozenset({408, 409, 429})  # and every 5xx
NOT_A_REFUSAL = frozenset({401, 403, 404, *RETRIED_STATUS})  # 4xx that say nothing about what a request may carry
# Answer length caps (tokens), from the config's defaults: an EMER clue is a paragraph of 80-200 words, the explanation a little longer.
DEFAULT_MAX_TOKENS: dict[str, int] = LlmConfig().max_tokens
IMAGE_MODES = ("auto", "on", "off")
FORMAT_MODES = ("auto", *FORMATS)
_MEDIA_WORDS = {
    "images": re.compile(r"image|vision|multimodal|mmproj|modalit", re.I),
    "audio": re.compile(r"audio|multimodal|mmproj|modalit", re.I),
}
_FORMAT_WORDS = re.compile(r"response_format|json_schema|json_object|schema|grammar|structured|not supported|unsupported", re.I)

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
_LEARNED: dict[tuple[str, str, str], Any] = {}  # (base_url, model, what) -> False (refuses images / audio) or the response format it takes
_PROCESS_LOCK = threading.Lock()


def _semaphore(base_url: str, concurrency: int) -> threading.BoundedSemaphore:
    """One semaphore per endpoint and limit in the process, shared by every (unpickled) copy of an explainer."""
    with _PROCESS_LOCK:
        return _SEMAPHORES.setdefault((base_url, concurrency), threading.BoundedSemaphore(concurrency))


class LlmEndpointError(RuntimeError):
    """The endpoint is unreachable or rejects the key (raised by `LlmExplainer.check`)."""


class _Retry(Exception):
    """An attempt failed in a way another attempt may fix."""


class _GiveUp(Exception):
    """An attempt failed in a way no retry can fix (e.g. HTTP 401 or 404)."""


class _Refused(_GiveUp):
    """The endpoint refused what the request carries (an image or audio part, a response format)."""


@dataclass(frozen=True)
class Prompt:
    system: Template
    user: Template


@dataclass
class Ask:
    """One request as the explainer means it: what the cache key is made of, and how to read the answer."""

    field: str  # the field (or other request name) in the cache key
    model: str
    messages: list[dict[str, Any]]
    max_tokens: int
    shape: AnswerShape | None = None  # a structured answer; None: prose
    media: str | None = None  # "images" / "audio": a part the model may refuse
    key_extra: dict[str, Any] = field(default_factory=dict)  # what else tells this request apart in the cache


def load_prompts(version: str, names: tuple[str, ...] = PROMPT_NAMES, optional: tuple[str, ...] = OPTIONAL_PROMPTS) -> dict[str, Prompt]:
    """The prompt files of one version; each has a free-text preamble, a `[system]` and a `[user]` section."""
    folder = PROMPTS_DIR / version
    if not folder.is_dir():
        raise ValueError(f"no prompt version {version!r} under {PROMPTS_DIR}")
    prompts = {}
    for name in (*names, *optional):
        path = folder / f"{name}.txt"
        if name in optional and not path.is_file():
            continue
        if not path.is_file():
            raise ValueError(f"prompt version {version!r} has no {path.name}")
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
    """The label list in an answer (JSON, or found by the tolerant reader); ValueError when there is none."""
    return LABELS.read(answer, "text")[0]


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


def _mean_scores(crops: list[dict[str, Any]]) -> dict[str, float] | None:
    scored = [c["expression"] for c in crops if c.get("expression")]
    if not scored:
        return None
    return {k: round(sum(s[k] or 0.0 for s in scored) / len(scored), 3) for k in scored[0]}


def face_measures(fields: dict[str, Any]) -> dict[str, Any] | Unavailable:
    """What the build measured about the main face, for a model that cannot see the frames: presence,
    expression scores over the beginning, middle and end, face size and movement (the rules describer's
    measures, plus size and motion from the crop boxes)."""
    faces = fields.get("faces")
    media = fields.get("media") or {}
    if not faces:
        return Unavailable("no face measurements")
    crops = sorted(faces.get("crops") or [], key=lambda c: c["time_s"])
    sampled = media.get("frames_sampled")
    if not crops and not sampled:
        return Unavailable(faces.get("reason") or "no frames were sampled")
    duration = media.get("duration_s") or (crops[-1]["time_s"] + 1e-3 if crops else None)
    parts: dict[str, Any] = {}
    for label, lo, hi in (("beginning", 0.0, 1 / 3), ("middle", 1 / 3, 2 / 3), ("end", 2 / 3, 1.01)):
        part = [c for c in crops if duration and lo <= c["time_s"] / duration < hi]
        parts[label] = _mean_scores(part)
    height = media.get("height")
    sizes = sorted(c["box"]["h"] / height for c in crops if height and c.get("box")) if crops else []
    speeds = []
    for a, b in zip(crops[:-1], crops[1:], strict=True):
        dt = b["time_s"] - a["time_s"]
        width = (a["box"]["w"] + b["box"]["w"]) / 2
        if dt > 0 and width > 0:
            dx = (b["box"]["x"] + b["box"]["w"] / 2) - (a["box"]["x"] + a["box"]["w"] / 2)
            dy = (b["box"]["y"] + b["box"]["h"] / 2) - (a["box"]["y"] + a["box"]["h"] / 2)
            speeds.append((dx * dx + dy * dy) ** 0.5 / width / dt)
    return {
        "clip_duration_s": _round(duration),
        "frames_sampled": sampled,
        "frames_with_face": faces.get("frames_with_face"),
        "tracks": faces.get("tracks"),
        "expression_by_part": parts,
        "expression_mean": {k: round(v, 3) for k, v in (faces.get("expression_mean") or {}).items()} or None,
        "face_size": {"min": round(sizes[0], 3), "median": round(statistics.median(sizes), 3), "max": round(sizes[-1], 3)} if sizes else None,
        "face_movement": round(statistics.median(speeds), 3) if speeds else None,
    }


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
        prompt_version: str = "emer-v2",
        language: str = "en",
        retry_base_s: float = 0.5,
        retry_cap_s: float = 30.0,
        max_tokens: dict[str, int] | None = None,
        images: str = "auto",
        response_format: str = "auto",
        seed: int | None = 0,
    ) -> None:
        """`vision_model` and `audio_model` default to `model`; `concurrency` limits requests in flight to `base_url` across
        the whole process; `max_retries` counts attempts after the first, spaced `retry_base_s` doubling up to `retry_cap_s`;
        without `cache_dir` nothing is cached. `max_tokens` overrides DEFAULT_MAX_TOKENS per field; `images` is auto (send
        frames until the model refuses them), on or off; `response_format` is auto or the one format to ask structured
        answers in; `seed` None sends none. The key is read from `$api_key_env` (unset: "EMPTY", fine for local servers)."""
        if concurrency < 1 or max_retries < 0:
            raise ValueError("concurrency must be >= 1 and max_retries >= 0")
        if images not in IMAGE_MODES or response_format not in FORMAT_MODES:
            raise ValueError(f"images must be one of {', '.join(IMAGE_MODES)} and response_format one of {', '.join(FORMAT_MODES)}")
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
        self.max_tokens = {**DEFAULT_MAX_TOKENS, **(max_tokens or {})}
        self.images = images
        self.response_format = response_format
        self.seed = seed
        self.prompts = load_prompts(prompt_version)
        self.known: dict[tuple[str, str], bool] = {}  # (model, "images"/"audio") -> accepted, from /v1/models (travels to workers)
        self.cache_hits = 0  # answers read from the cache
        self.cache_misses = 0  # answers asked of the endpoint
        self.calls = 0  # HTTP requests sent, retries included
        self.failures = 0  # fields left unavailable because the endpoint gave no usable answer
        self.text_fallbacks = 0  # clues written from measurements because the model refused the images or audio
        self.reads = dict.fromkeys(READS, 0)  # how each answer used was read (llm_answers.READS)
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
        """Counters for the build summary: requests, cache use, fields left null, text fallbacks and `read_<how>`
        for every way an answer can be read (always all keys, so two snapshots subtract)."""
        counts = {"cache_hits": self.cache_hits, "cache_misses": self.cache_misses, "calls": self.calls, "failures": self.failures}
        counts["text_fallbacks"] = self.text_fallbacks
        counts.update({f"read_{k}": v for k, v in self.reads.items()})
        return counts

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

    def _count(self, name: str, read: str | None = None) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + 1)
            if read is not None:
                self.reads[read] += 1

    def check(self) -> None:
        """Preflight: GET /models once, so a wrong URL or key stops the build before any clip is explained; where the
        listing names a model's input modalities (llama.cpp does), a model without images is known before any request."""
        client = self._get_client()
        where = f"LLM endpoint {self.base_url}"
        try:
            listed = list(client.models.list())
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
        served = {m.id for m in listed}
        wanted = {self.model, self.vision_model} | ({self.audio_model} if self.send_audio else set())
        missing = sorted(wanted - served)
        if served and missing:  # servers may accept aliases they do not list (Ollama's `name` for `name:latest`)
            log.warning("%s does not list model(s) %s; it lists %s", where, ", ".join(missing), ", ".join(sorted(served)[:10]))
        for m in listed:
            modalities = ((m.model_extra or {}).get("architecture") or {}).get("input_modalities")
            if isinstance(modalities, list) and all(isinstance(x, str) for x in modalities):
                self.known[(m.id, "images")] = "image" in modalities
                self.known[(m.id, "audio")] = "audio" in modalities

    def explain(self, field_name: str, item: ExplainInput) -> FieldValue | Unavailable:
        """One field's value, or why there is none; never raises for endpoint trouble."""
        if field_name in NOT_PROVIDED:
            return Unavailable(f"llm does not provide {field_name}")
        if field_name == "visual_clue":
            return self._with_media("images", self.vision_model, self._visual_request(item), lambda extra: self._visual_text_request(item, extra))
        if field_name == "acoustic_clue":
            return self._with_media("audio", self.audio_model, self._audio_request(item), lambda extra: self._acoustic_request(item, extra))
        builders: dict[str, Callable[[ExplainInput], Ask | Unavailable]] = {
            "lexical_clue": self._lexical_request,
            "multimodal_explanation": self._multimodal_request,
            "open_vocab_labels": self._labels_request,
        }
        if field_name not in builders:
            raise ValueError(f"unknown explanation field {field_name!r}")
        return self._value(builders[field_name](item))

    def _value(self, ask: Ask | Unavailable, suffix: str = "") -> FieldValue | Unavailable:
        if isinstance(ask, Unavailable):
            return ask
        answer = self._answer(ask)
        if isinstance(answer, Unavailable):
            return answer
        value, when = answer
        return FieldValue(value, self.language, f"llm:{ask.model}{suffix}", self.prompt_version, when)

    def _accepts(self, kind: str, model: str) -> bool | None:
        """Whether `model` at this endpoint takes images / audio: the config, what /v1/models said, what a refusal taught."""
        if kind == "images" and self.images != "auto":
            return self.images == "on"
        if (model, kind) in self.known:
            return self.known[(model, kind)]
        with _PROCESS_LOCK:
            return _LEARNED.get((self.base_url, model, kind))

    def _with_media(
        self, kind: str, model: str, media: Ask | Unavailable | None, text: Callable[[dict[str, Any]], Ask | Unavailable]
    ) -> FieldValue | Unavailable:
        """A clue from the media when the model takes it, else from the measurements as text (source `llm:<model>:text`).

        Where it is not known yet whether the model takes the media, a cached answer to either request is used
        first, so a re-run of a build whose model refused the media asks nothing."""
        if media is None:  # the config sends no media of this kind
            return self._value(text({}), ":text")
        accepts = self._accepts(kind, model)
        fallback_key = {"instead_of": kind, "refused_by": model}  # a text answer given because this model refused
        if accepts is False:  # known: the measurements as text, whether or not there were frames to send
            self._count("text_fallbacks")
            return self._value(text(fallback_key), ":text")
        if isinstance(media, Unavailable):
            return media
        if accepts is None:
            for ask, suffix in ((media, ""), (text(fallback_key), ":text")):
                if not isinstance(ask, Unavailable) and (hit := self._cached(ask)) is not None:
                    if isinstance(hit, Unavailable):
                        return hit
                    value, when = hit
                    if suffix:
                        self._count("text_fallbacks")
                    return FieldValue(value, self.language, f"llm:{ask.model}{suffix}", self.prompt_version, when)
        answer = self._value(media)
        if not (isinstance(answer, Unavailable) and answer.reason.startswith("refused:")):
            return answer
        if kind == "images" and self.images == "on":
            self._count("failures")
            return Unavailable(answer.reason.removeprefix("refused: "))
        self._count("text_fallbacks")
        return self._value(text(fallback_key), ":text")

    # -- requests, one per field -------------------------------------------------------------------------

    def _messages(self, name: str, data: dict[str, Any], attachments: list[dict[str, Any]] | None = None, **extra: Any) -> list[dict[str, Any]]:
        prompt = self.prompts[name]
        language = LANGUAGE_NAMES.get(self.language, f"the language with ISO 639-1 code {self.language!r}")
        values = {"language": language, "data": data_json(data), **extra}
        user = prompt.user.substitute(values)
        content: str | list[dict[str, Any]] = [{"type": "text", "text": user}, *attachments] if attachments else user
        return [{"role": "system", "content": prompt.system.substitute(values)}, {"role": "user", "content": content}]

    def _visual_request(self, item: ExplainInput) -> Ask | Unavailable | None:
        if self.images == "off":
            return None
        if not item.keyframes:
            return Unavailable("no frames")
        frames = sorted(item.keyframes, key=lambda f: f[0])
        data = {"clip_duration_s": _round((item.fields.get("media") or {}).get("duration_s")), "frame_times_s": [round(t, 2) for t, _ in frames]}
        images = [{"type": "image_url", "image_url": {"url": "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")}} for _, jpeg in frames]
        messages = self._messages("visual_clue", data, images, n_frames=len(frames))
        return Ask("visual_clue", self.vision_model, messages, self.max_tokens["visual_clue"], media="images")

    def _visual_text_request(self, item: ExplainInput, key_extra: dict[str, Any]) -> Ask | Unavailable:
        if "visual_clue_text" not in self.prompts:
            return Unavailable(f"{self.vision_model} takes no images here, and prompt version {self.prompt_version} has no visual_clue_text prompt")
        data = face_measures(item.fields)
        if isinstance(data, Unavailable):
            return data
        return Ask("visual_clue", self.model, self._messages("visual_clue_text", data), self.max_tokens["visual_clue"], key_extra=key_extra)

    def _audio_request(self, item: ExplainInput) -> Ask | Unavailable | None:
        acoustics = item.fields.get("acoustics")
        if not acoustics:
            return Unavailable("no acoustic features measured")
        if acoustics.get("reason"):
            return Unavailable(acoustics["reason"])
        if not (self.send_audio and item.audio_wav):
            return None
        duration = _round((item.fields.get("media") or {}).get("duration_s"))
        audio = {"type": "input_audio", "input_audio": {"data": base64.b64encode(item.audio_wav).decode("ascii"), "format": "wav"}}
        messages = self._messages("acoustic_clue_audio", {"clip_duration_s": duration}, [audio])
        return Ask("acoustic_clue", self.audio_model, messages, self.max_tokens["acoustic_clue"], media="audio")

    def _acoustic_request(self, item: ExplainInput, key_extra: dict[str, Any]) -> Ask | Unavailable:
        acoustics = item.fields.get("acoustics")
        if not acoustics:
            return Unavailable("no acoustic features measured")
        if acoustics.get("reason"):
            return Unavailable(acoustics["reason"])
        duration = _round((item.fields.get("media") or {}).get("duration_s"))
        prosody = {k: _round(v) for k, v in (acoustics.get("prosody") or {}).items()}
        egemaps = acoustics.get("egemaps") or {}
        selected = {n: _round(egemaps[n]) for n in EGEMAPS_FOR_PROMPT if n in egemaps}
        if not any(isinstance(v, float) for v in (*prosody.values(), *selected.values())):
            return Unavailable("no acoustic measurements to describe")
        transcript = item.fields.get("transcript") or {}
        data = {"clip_duration_s": duration, "prosody": prosody, "egemaps": selected, "transcript_words": transcript.get("word_count")}
        return Ask("acoustic_clue", self.model, self._messages("acoustic_clue", data), self.max_tokens["acoustic_clue"], key_extra=key_extra)

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

    def _lexical_request(self, item: ExplainInput) -> Ask | Unavailable:
        words = self._words(item)
        if isinstance(words, Unavailable):
            return words
        text, origin = words
        language = item.chosen["subtitle"].language if origin == "subtitle" else (item.fields.get("transcript") or {}).get("language")
        data = {"subtitle": text, "subtitle_origin": origin, "subtitle_language": language, **self._clues(item, ("visual_clue", "acoustic_clue"))}
        return Ask("lexical_clue", self.model, self._messages("lexical_clue", data), self.max_tokens["lexical_clue"])

    def _multimodal_request(self, item: ExplainInput) -> Ask | Unavailable:
        clues = self._clues(item, ("visual_clue", "acoustic_clue", "lexical_clue"))
        if not clues:
            return Unavailable("no clues to merge")
        words = self._words(item)
        data = {**clues, **({"subtitle": words[0]} if isinstance(words, tuple) else {})}
        return Ask("multimodal_explanation", self.model, self._messages("multimodal_explanation", data), self.max_tokens["multimodal_explanation"])

    def _labels_request(self, item: ExplainInput) -> Ask | Unavailable:
        explanation = _chosen_text(item.chosen.get("multimodal_explanation"))
        if not explanation:
            return Unavailable("no multimodal explanation to extract labels from")
        messages = self._messages("open_vocab_labels", {"explanation": explanation})
        return Ask("open_vocab_labels", self.model, messages, self.max_tokens["open_vocab_labels"], shape=LABELS)

    # -- asking, retrying, caching ------------------------------------------------------------------------

    def _read(self, ask: Ask, entry: dict[str, str]) -> tuple[Any, str]:
        """(value, how it was read) from a cache entry or a fresh answer; ValueError if unusable."""
        if ask.shape is not None:
            return ask.shape.read(entry["answer"], entry.get("format", "text"))
        return read_text(entry["answer"], entry.get("finish"))

    def _cached(self, ask: Ask) -> tuple[Any, str] | Unavailable | None:
        """(value, time) of a cached answer to this request, counted as a cache hit; None when there is none. An
        unusable answer kept at temperature 0 gives the same Unavailable as when it was first given."""
        path = self._cache_path(ask)
        cached = self._cache_read(path)
        if cached is None:
            return None
        try:
            value, how = self._read(ask, cached)
        except ValueError as e:
            if self.temperature != 0:
                log.warning("ignoring unusable cached answer %s", path)
                return None
            self._count("cache_hits")
            self._count("failures")
            return Unavailable(self._unusable(ask, e))
        self._count("cache_hits", how)
        return value, cached["time"]

    @staticmethod
    def _unusable(ask: Ask, error: ValueError) -> str:
        return f"unusable answer from {ask.model} ({error}); not retried at temperature 0"

    def _formats(self, ask: Ask) -> list[str]:
        """The response formats still to try for this request, most structured first."""
        if ask.shape is None:
            return ["text"]
        if self.response_format != "auto":
            return [self.response_format]
        with _PROCESS_LOCK:
            learned = _LEARNED.get((self.base_url, ask.model, "format"), FORMATS[0])
        return list(FORMATS[FORMATS.index(learned) :])

    def _answer(self, ask: Ask) -> tuple[Any, str] | Unavailable:
        """(parsed answer, UTC time it was given), from the cache or the endpoint."""
        hit = self._cached(ask)
        if hit is not None:
            return hit
        self._count("cache_misses")
        attempts = self.max_retries + 1
        last = ""
        formats = self._formats(ask)
        attempt = 0
        while attempt < attempts:
            if attempt:
                time.sleep(min(self.retry_cap_s, self.retry_base_s * 2 ** (attempt - 1)))
            fmt = formats[0]
            try:
                answer, finish = self._complete(ask, fmt)
                entry = {"answer": answer, "time": _utc_now(), "format": fmt, "finish": finish or "stop"}
                value, how = self._read(ask, entry)
            except _Refused as e:
                if e.args[1] == "format" and len(formats) > 1:  # the endpoint takes no such format: ask in the next one, at once
                    formats.pop(0)
                    with _PROCESS_LOCK:
                        _LEARNED[(self.base_url, ask.model, "format")] = formats[0]
                    log.info("llm %s: %s refused response_format %s (%s); asking as %s", ask.field, ask.model, fmt, e.args[0], formats[0])
                    continue
                if e.args[1] in ("images", "audio"):  # not a failure yet: the caller decides whether text can stand in
                    with _PROCESS_LOCK:
                        _LEARNED[(self.base_url, ask.model, e.args[1])] = False
                    log.warning("llm %s: %s takes no %s (%s)", ask.field, ask.model, e.args[1], e.args[0])
                    return Unavailable(f"refused: {e.args[0]}")
                self._count("failures")
                return Unavailable(e.args[0])
            except _GiveUp as e:
                self._count("failures")
                log.warning("llm %s: %s", ask.field, e)
                return Unavailable(str(e))
            except ValueError as e:
                last = str(e)
                if self.temperature == 0:  # the same request at temperature 0 gives the same answer: asking again cannot help,
                    self._count("failures")  # and the answer is kept, so a rebuild says the same without asking
                    reason = self._unusable(ask, e)
                    self._cache_store(self._cache_path(ask), entry)
                    log.warning("llm %s: %s", ask.field, reason)
                    return Unavailable(reason)
                log.info("llm %s: attempt %d/%d failed: %s", ask.field, attempt + 1, attempts, last)
                attempt += 1
                continue
            except _Retry as e:
                last = str(e)
                log.info("llm %s: attempt %d/%d failed: %s", ask.field, attempt + 1, attempts, last)
                attempt += 1
                continue
            stored = self._cache_store(self._cache_path(ask), entry)
            if stored["answer"] != entry["answer"]:  # another thread or worker answered the same request first: its answer wins
                value, how = self._read(ask, stored)
            self._count_read(how)
            return value, stored["time"]
        self._count("failures")
        reason = f"no usable answer from {ask.model} after {attempts} attempt{'s' if attempts > 1 else ''}: {last}"
        log.warning("llm %s: %s", ask.field, reason)
        return Unavailable(reason)

    def _count_read(self, how: str) -> None:
        with self._lock:
            self.reads[how] += 1

    def _complete(self, ask: Ask, fmt: str) -> tuple[str, str | None]:
        """One chat completion: (answer, finish reason); raises _Retry, _Refused or _GiveUp with a short reason that never holds the key."""
        client = self._get_client()
        options: dict[str, Any] = {"temperature": self.temperature, "max_tokens": ask.max_tokens}
        if self.seed is not None:
            options["seed"] = self.seed
        response_format = ask.shape.response_format(fmt) if ask.shape is not None else None
        if response_format is not None:
            options["response_format"] = response_format
        with _semaphore(self.base_url, self.concurrency):
            self._count("calls")
            try:
                completion = client.chat.completions.create(model=ask.model, messages=ask.messages, **options)
            except openai.APITimeoutError:
                raise _Retry(f"timed out after {self.timeout_s:g} s") from None
            except openai.APIConnectionError as e:
                raise _Retry(self._redact(f"connection error: {_brief(e.__cause__ or e)}")) from None
            except openai.APIStatusError as e:
                reason = self._redact(_status_reason(e))
                refused = self._refusal(e, ask, response_format is not None)
                if refused is not None:
                    raise _Refused(reason, refused) from None
                if e.status_code >= 500 or e.status_code in RETRIED_STATUS:
                    raise _Retry(reason) from None
                raise _GiveUp(reason) from None
            except (openai.APIResponseValidationError, ValueError):
                raise _Retry("malformed response body") from None
        if not isinstance(completion, ChatCompletion) or not completion.choices:
            raise _Retry("malformed response body")
        choice = completion.choices[0]
        content = choice.message.content
        if not content or not content.strip():
            raise _Retry("empty answer")
        return content, choice.finish_reason

    @staticmethod
    def _refusal(e: openai.APIStatusError, ask: Ask, structured: bool) -> str | None:
        """What an error refuses, when it is a refusal no retry can change: "images", "audio" or "format"; else None."""
        if e.status_code in NOT_A_REFUSAL:
            return None
        body = e.body
        message = str(body.get("message") if isinstance(body, dict) else body or "")
        if ask.media is not None and (e.status_code < 500 or _MEDIA_WORDS[ask.media].search(message)):
            return ask.media
        if structured and (e.status_code < 500 or _FORMAT_WORDS.search(message)):
            return "format"
        return None

    def _cache_path(self, ask: Ask) -> Path | None:
        if self.cache_dir is None:
            return None
        request = {
            "model": ask.model,
            "prompt_version": self.prompt_version,
            "field": ask.field,
            "temperature": self.temperature,
            "max_tokens": ask.max_tokens,
            "seed": self.seed,
            "messages": ask.messages,
            **ask.key_extra,
        }
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
