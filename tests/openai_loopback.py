"""A real OpenAI-compatible HTTP server on 127.0.0.1 for tests of the `llm` explainer.

It speaks `POST /v1/chat/completions` (a proper `chat.completion` object) and `GET /v1/models`, answers
each EMER prompt with a realistic sentence derived from the request (which prompt is asked is told from
the system prompt of `transforms/prompts/emer-v1` or `emer-v2`), records every request (headers and parsed
body), counts requests in flight at once, and injects faults on demand: HTTP 500, a delay past the client's
timeout, a malformed JSON body, an empty answer, a label answer that is not a JSON list, a label list inside
prose; a wrong key gets 401. Like a real server it can also refuse what a model cannot take: image or audio
parts (HTTP 500 "image input is not supported", as llama.cpp answers without a projector) and JSON-schema
response formats (HTTP 400), and it answers a `json_schema` / `json_object` request with a JSON object.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# A phrase of each emer-v1 system prompt -> the field it asks for.
FIELD_PHRASES = (
    ("frames were sampled uniformly", "visual_clue"),
    ("You cannot see the video", "visual_clue"),
    ("acoustic information in the audio", "acoustic_clue"),
    ("You cannot hear the recording", "acoustic_clue"),
    ("which parts of the subtitle", "lexical_clue"),
    ("merge these clues into one", "multimodal_explanation"),
    ("JSON array of strings", "open_vocab_labels"),
    ('as a JSON object {"labels": [...]}', "open_vocab_labels"),
)
FAULTS = ("500", "delay", "malformed", "empty", "bad_labels", "prose_labels")
LABELS = ["calm", "friendly", "slightly shy"]


@dataclass
class Fault:
    kind: str
    times: int | None  # None: every matching request
    field: str | None  # None: any chat request


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]  # names lowercased
    body: Any  # the parsed JSON body of a POST, else None
    field: str | None  # the EMER field a chat request asks for

    def system(self) -> str:
        return next(m["content"] for m in self.body["messages"] if m["role"] == "system")

    def user_parts(self) -> list[dict[str, Any]]:
        content = next(m["content"] for m in self.body["messages"] if m["role"] == "user")
        return [{"type": "text", "text": content}] if isinstance(content, str) else content

    def user_text(self) -> str:
        return "\n".join(p["text"] for p in self.user_parts() if p["type"] == "text")

    def data(self) -> dict[str, Any]:
        """The JSON of the user message's single `<data>` block."""
        (block,) = re.findall(r"<data>\n(.*?)\n</data>", self.user_text(), flags=re.S)
        return json.loads(block)


def field_of(body: dict[str, Any]) -> str | None:
    system = next((m.get("content") for m in body.get("messages", []) if m.get("role") == "system"), "")
    return next((f for phrase, f in FIELD_PHRASES if isinstance(system, str) and phrase in system), None)


def answer_for(record: Recorded) -> str:
    """A realistic EMER answer to one request, derived from what it sent."""
    data = record.data()
    parts = record.user_parts()
    if record.field == "visual_clue" and "expression_by_part" in data:  # from measurements, no frames
        return (
            f"The face is visible in {data['frames_with_face']} of {data['frames_sampled']} sampled frames. "
            "At the beginning the expression is mostly neutral; in the middle and at the end a smile appears. He seems calm and content."
        )
    if record.field == "visual_clue":
        times = data["frame_times_s"]
        n = sum(p["type"] == "image_url" for p in parts)
        return (
            "At the beginning of the video, the man looks straight into the camera with relaxed eyebrows and a slight smile. "
            "In the middle, he keeps eye contact and tilts his head a little while speaking, his shoulders loose. "
            f"At the end, his smile widens slightly. Across the {n} frames from {times[0]:.1f} s to {times[-1]:.1f} s he appears calm and friendly."
        )
    if record.field == "acoustic_clue":
        if any(p["type"] == "input_audio" for p in parts):
            return "The speaker's voice is soft and even, with a steady rhythm and few pauses; nothing in it suggests tension. He sounds calm."
        rate = data["prosody"]["speech_rate_wps"]
        return (
            f"The speaker reads at a measured pace of about {rate:.1f} words per second, with a mid-range pitch that rises and falls gently "
            "and an even loudness; the voice is clear, without trembling. This suggests a calm, composed state."
        )
    if record.field == "lexical_clue":
        return (
            f'The words "{data["subtitle"]}" carry no strongly emotional vocabulary. Read with the relaxed face and the steady voice, '
            "they sound sincere and matter-of-fact rather than ironic, suggesting a calm, friendly attitude."
        )
    if record.field == "multimodal_explanation":
        return (
            "The man looks into the camera with a relaxed face and a slight smile, speaks at a measured pace in a clear, steady voice, "
            "and his words are matter-of-fact. Taken together, he seems calm and friendly, perhaps slightly shy."
        )
    if (record.body.get("response_format") or {}).get("type") in ("json_schema", "json_object"):
        return json.dumps({"labels": LABELS})
    return "```json\n" + json.dumps(LABELS) + "\n```"


def media_of(body: dict[str, Any]) -> set[str]:
    """The kinds of media parts a chat request carries: "images", "audio"."""
    kinds = set()
    for m in body.get("messages", []):
        if isinstance(m.get("content"), list):
            kinds |= {{"image_url": "images", "input_audio": "audio"}.get(p.get("type"), "") for p in m["content"]} - {""}
    return kinds


class _Server(ThreadingHTTPServer):
    loopback: OpenAILoopback


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    disable_nagle_algorithm = True  # no delayed-ACK stall between headers and body

    def log_message(self, format: str, *args: Any) -> None:  # quiet: the tests read `requests` instead
        pass

    def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:  # the client gave up (timeout): nothing to answer
            pass

    def _send_json(self, status: int, value: Any) -> None:
        self._send(status, json.dumps(value).encode())

    def _authorised(self) -> bool:
        if self.headers.get("Authorization") == f"Bearer {self.server.loopback.api_key}":
            return True
        error = {"message": "Incorrect API key provided.", "type": "invalid_request_error", "code": "invalid_api_key"}
        self._send_json(401, {"error": error})
        return False

    def do_GET(self) -> None:
        lb = self.server.loopback
        lb.record(Recorded("GET", self.path, {k.lower(): v for k, v in self.headers.items()}, None, None))
        if not self._authorised():
            return
        if self.path != "/v1/models":
            self._send_json(404, {"error": {"message": f"no route {self.path}", "type": "invalid_request_error"}})
            return
        models = [{"id": m, "object": "model", "created": 1700000000, "owned_by": "loopback"} for m in lb.model_ids]
        if lb.list_modalities:
            modalities = ["text", *(["image"] if "images" in lb.accepts else []), *(["audio"] if "audio" in lb.accepts else [])]
            models = [{**m, "architecture": {"input_modalities": modalities, "output_modalities": ["text"]}} for m in models]
        self._send_json(200, {"object": "list", "data": models})

    def do_POST(self) -> None:
        lb = self.server.loopback
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        record = Recorded("POST", self.path, {k.lower(): v for k, v in self.headers.items()}, body, field_of(body))
        lb.record(record)
        if not self._authorised():
            return
        if self.path != "/v1/chat/completions" or record.field is None:
            self._send_json(404 if record.field else 400, {"error": {"message": "loopback: not an emer-v1 chat request", "type": "invalid_request_error"}})
            return
        refused = sorted(media_of(body) - lb.accepts)
        if refused:  # llama.cpp's answer to an image for a model without a projector
            kind = {"images": "image", "audio": "audio"}[refused[0]]
            message = f"{kind} input is not supported - hint: if this is unexpected, you may need to provide the mmproj"
            self._send_json(500, {"error": {"code": 500, "message": message, "type": "server_error"}})
            return
        fmt = (body.get("response_format") or {}).get("type")
        if fmt is not None and fmt not in lb.formats:
            self._send_json(400, {"error": {"code": 400, "message": f"loopback: response_format {fmt} is not supported", "type": "invalid_request_error"}})
            return
        with lb.in_flight():  # the request stops counting before its answer is written: a client that has its
            time.sleep(lb.latency_s)  # answer may send the next request at once without overlapping this one
            fault = lb.take_fault(record.field)
            if fault == "delay":
                lb.closing.wait(lb.delay_s)
        if fault == "500":
            self._send_json(500, {"error": {"message": "loopback: injected server error", "type": "server_error"}})
            return
        if fault == "malformed":
            self._send(200, b'{"id": "chatcmpl-loopback", "object": "chat.completion", "choices": [{"index": 0, "mess')
            return
        if fault == "empty":
            content = ""
        elif fault == "bad_labels":
            content = "The emotions are calm and friendly."  # prose, not a JSON list
        elif fault == "prose_labels":
            content = f"Sure! The labels are {json.dumps(LABELS)}, as the explanation says."  # a JSON list inside prose
        else:
            content = answer_for(record)
        self._send_json(200, lb.completion(body["model"], content))


class OpenAILoopback:
    """The server, started on a random port in a daemon thread; use as a context manager."""

    def __init__(
        self,
        api_key: str,
        model_ids: tuple[str, ...] = ("loopback-chat", "loopback-vision"),
        latency_s: float = 0.0,
        delay_s: float = 5.0,
        accepts: tuple[str, ...] = ("images", "audio"),
        formats: tuple[str, ...] = ("json_schema", "json_object"),
        list_modalities: bool = False,
    ) -> None:
        self.api_key = api_key
        self.accepts = set(accepts)  # media parts the models take; others are refused as llama.cpp refuses them
        self.formats = set(formats)  # response_format types taken; others get HTTP 400
        self.list_modalities = list_modalities  # /v1/models names each model's input modalities, as llama.cpp does
        self.model_ids = model_ids
        self.latency_s = latency_s  # time each chat request takes, so concurrent requests overlap
        self.delay_s = delay_s  # how long a "delay" fault stalls (cut short by close())
        self.requests: list[Recorded] = []
        self.max_in_flight = 0
        self.closing = threading.Event()
        self._faults: list[Fault] = []
        self._in_flight = 0
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.loopback = self
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="openai-loopback", daemon=True)
        self._ids = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self) -> OpenAILoopback:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.closing.set()
        self._server.shutdown()
        self._server.server_close()

    def inject(self, kind: str, times: int | None = 1, field: str | None = None) -> None:
        """Answer the next `times` chat requests (for `field`, or any) with a fault; times=None: always."""
        if kind not in FAULTS:
            raise ValueError(f"unknown fault {kind!r}; one of {FAULTS}")
        with self._lock:
            self._faults.append(Fault(kind, times, field))

    def take_fault(self, field: str) -> str | None:
        with self._lock:
            for fault in self._faults:
                if fault.field in (None, field) and (fault.times is None or fault.times > 0):
                    if fault.times is not None:
                        fault.times -= 1
                    return fault.kind
        return None

    def record(self, request: Recorded) -> None:
        with self._lock:
            self.requests.append(request)

    def chat_requests(self, field: str | None = None) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if r.path == "/v1/chat/completions" and field in (None, r.field)]

    @contextmanager
    def in_flight(self) -> Iterator[None]:
        """Counts concurrent chat requests and keeps the maximum."""
        with self._lock:
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
        try:
            yield
        finally:
            with self._lock:
                self._in_flight -= 1

    def completion(self, model: str, content: str) -> dict[str, Any]:
        with self._lock:
            self._ids += 1
            n = self._ids
        return {
            "id": f"chatcmpl-loopback-{n}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "logprobs": None, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 100, "completion_tokens": max(1, len(content.split())), "total_tokens": 100 + max(1, len(content.split()))},
        }
