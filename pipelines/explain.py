"""The explanation step of `emer build`: annotations joined by clip name, corpus statistics for the
rules explainer, an optional LLM endpoint, all feeding `transforms.explanation.explain_clip`.

clips -> Slim (keep the few frames an LLM needs, drop decoded samples)
      -> join annotation rows by name (CoGroupByKey: workers see only their clips' rows)
      -> key by a stable batch number; the corpus statistics (one GroupByKey over every clip's
         measures) go to every batch number; both meet in a CoGroupByKey (no side input)
      -> Explain each batch on a thread pool (LLM requests overlap; the concurrency limit holds)
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import re
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import apache_beam as beam
import cv2
import numpy as np
import soundfile
from emer_builder.core.config import BuildConfig, LlmConfig
from emer_builder.core.errors import UserError, one_line
from emer_builder.pipelines.graph import guarded
from emer_builder.pipelines.progress import ProgressLog, cpu_seconds
from emer_builder.transforms.annotations import AnnotationExplainer, AnnotationTable, load_annotations
from emer_builder.transforms.clip import Clip
from emer_builder.transforms.explanation import EXPLAINED_FIELDS, SOURCES, ExplainInput, explain_clip
from emer_builder.transforms.keys import VideoInput
from emer_builder.transforms.rules_explainer import CorpusStats, RulesExplainer, measures_of

STAGE = "explanation"
KEYFRAME_MAX_SIDE = 512


def join_names(inputs: list[VideoInput], annotated: set[str]) -> dict[str, str]:
    """key -> the name annotation tables use for the clip: its path without extension when a table
    names clips that way (`video_0001/0001`), else its file name (`sample_00000648`).

    One annotated name matching several videos is an error: the annotation would be copied onto each."""
    names: dict[str, str] = {}
    by_name: dict[str, list[str]] = {}
    for i in inputs:
        path = PurePosixPath(i.source_path).with_suffix("")
        names[i.key] = path.as_posix() if path.as_posix() in annotated else path.name
        by_name.setdefault(names[i.key], []).append(i.source_path)
    shared = sorted((n, paths) for n, paths in by_name.items() if n in annotated and len(paths) > 1)
    if shared:
        name, paths = shared[0]
        raise UserError(
            f"annotated name {name!r} matches {len(paths)} videos ({', '.join(sorted(paths)[:3])}); "
            f"name the table's rows by path without extension (e.g. {PurePosixPath(sorted(paths)[0]).with_suffix('').as_posix()!r})"
            + (f"; {len(shared) - 1} more names are shared" if len(shared) > 1 else "")
        )
    return names


def field_sources(config: BuildConfig) -> dict[str, tuple[str, ...]]:
    """Sources per explanation field, checked: known field names, known sources, an endpoint for llm."""
    e = config.explanation
    unknown = sorted(set(e.sources) - set(EXPLAINED_FIELDS))
    if unknown:
        raise UserError(f"explanation.sources names unknown field(s) {', '.join(unknown)}; fields: {', '.join(EXPLAINED_FIELDS)}")
    sources = {}
    for name in EXPLAINED_FIELDS:
        chosen = e.sources.get(name, e.default_sources)
        if not isinstance(chosen, (list, tuple)) or not all(isinstance(s, str) for s in chosen):
            raise UserError(f"explanation.sources.{name} must be a list of source names ({', '.join(SOURCES)}), got {chosen!r}")
        sources[name] = tuple(chosen)
        bad = sorted(set(chosen) - set(SOURCES))
        if bad:
            raise UserError(f"explanation source(s) {', '.join(bad)} for {name} unknown; sources: {', '.join(SOURCES)}")
    if uses_llm(sources) and not (e.llm.base_url and e.llm.model):
        raise UserError("the llm explainer needs explanation.llm.base_url and explanation.llm.model in the build config")
    return sources


def uses_llm(sources: dict[str, tuple[str, ...]]) -> bool:
    return any("llm" in s for s in sources.values())


def describe_sources(sources: dict[str, tuple[str, ...]]) -> str:
    return "; ".join(f"{name}={'>'.join(s) or 'none'}" for name, s in sources.items())


def make_llm(llm: LlmConfig, language: str) -> Any:
    from emer_builder.core.paths import emer_home
    from emer_builder.transforms.llm_explainer import LlmExplainer

    return LlmExplainer(
        base_url=llm.base_url,
        model=llm.model,
        vision_model=llm.vision_model,
        audio_model=llm.audio_model,
        api_key_env=llm.api_key_env,
        timeout_s=llm.timeout_s,
        max_retries=llm.max_retries,
        concurrency=llm.concurrency,
        cache_dir=llm.cache_dir or str(emer_home() / "llm-cache"),
        send_audio=llm.send_audio,
        temperature=llm.temperature,
        prompt_version=llm.prompt_version,
        language=language,
    )


def load_wheel(wheel_dir: str | None) -> tuple[Any, str | None]:
    """The emotion-wheel tables the config asks for: a folder, `fetch` (the pinned download, cached),
    or None: no normalisation, so what a build writes never depends on what the network allows."""
    from emer_builder.transforms.wheel import EmotionWheel
    from emer_builder.transforms.wheel import wheel_dir as resolve

    if wheel_dir is None:
        return None, "no --wheel-dir given (a folder with the tables, or `fetch` to download the pinned ones)"
    return EmotionWheel(resolve(None if wheel_dir == "fetch" else wheel_dir)), None


def check_llm_config(llm: LlmConfig) -> None:
    """Settings the explainer cannot work with, and endpoint URLs that would carry a secret into the
    manifest (which records the config): credentials belong in the variable `api_key_env` names."""
    url = urlsplit(llm.base_url or "")
    if url.scheme not in ("http", "https") or not url.hostname:
        raise UserError(f"explanation.llm.base_url must be an http(s) URL, got {llm.base_url!r}")
    if url.username or url.password or url.query:
        raise UserError("explanation.llm.base_url must not hold credentials or a query string; put the key in the variable named by api_key_env")
    if llm.concurrency < 1 or llm.max_retries < 0 or llm.timeout_s <= 0 or llm.frames < 0:
        raise UserError("explanation.llm: concurrency must be at least 1, max_retries and frames at least 0, timeout_s above 0")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", llm.prompt_version) or ".." in llm.prompt_version:
        raise UserError(f"explanation.llm.prompt_version must be a folder name under transforms/prompts/, got {llm.prompt_version!r}")


@dataclass
class ExplainPlan:
    """What the driver prepared for the explanation step."""

    sources: dict[str, tuple[str, ...]]
    annotations: AnnotationTable
    wheel: Any  # transforms.wheel.EmotionWheel or None
    wheel_problem: str | None
    llm: Any  # transforms.llm_explainer.LlmExplainer or None


def prepare(config: BuildConfig, check_endpoint: bool = True) -> ExplainPlan:
    """Read the tables and check the endpoint in the driver: a broken table or an unreachable LLM
    is one clear error before any worker starts."""
    e = config.explanation
    sources = field_sources(config)
    table = load_annotations(list(e.annotations), list(e.mapped_annotations))
    wheel, problem = load_wheel(e.wheel_dir)
    llm = None
    if uses_llm(sources):
        check_llm_config(e.llm)
        try:
            llm = make_llm(e.llm, e.language)
        except (ValueError, OSError) as err:
            raise UserError(f"explanation.llm: {one_line(err)}") from None
    if llm is not None and check_endpoint:
        try:
            llm.check()
        except Exception as err:  # noqa: BLE001
            raise UserError(f"the llm endpoint {e.llm.base_url} cannot be used: {one_line(err)}") from None
    return ExplainPlan(sources, table, wheel, problem, llm)


def keyframes(frames: list[tuple[float, np.ndarray]], count: int) -> list[tuple[float, bytes]]:
    """`count` frames spread evenly over the clip, as JPEG, for a vision model."""
    if not frames or count <= 0:
        return []
    picks = sorted({round(i * (len(frames) - 1) / max(1, count - 1)) for i in range(count)}) if count > 1 else [len(frames) // 2]
    out = []
    for i in picks:
        t, frame = frames[i]
        scale = KEYFRAME_MAX_SIDE / max(frame.shape[:2])
        if scale < 1:
            frame = cv2.resize(frame, (round(frame.shape[1] * scale), round(frame.shape[0] * scale)), interpolation=cv2.INTER_AREA)
        ok, jpeg = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 85])
        if ok:
            out.append((round(t, 3), jpeg.tobytes()))
    return out


def wav_bytes(audio: np.ndarray | None) -> bytes | None:
    if audio is None:
        return None
    buf = io.BytesIO()
    soundfile.write(buf, audio, 16000, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def slim(clip: Clip, frames: int, send_audio: bool) -> Clip:
    """Keep what the explainers read, drop the decoded samples before the join moves clips around."""
    if clip.failure is not None:
        return clip
    media = {"keyframes": keyframes(clip.frames, frames), "audio_wav": wav_bytes(clip.audio) if send_audio else None}
    return dataclasses.replace(clip, audio=None, frames=[], explain_media=media)


def batch_of(key: str, batches: int) -> int:
    """A stable batch number for a clip: batches are groups of a GroupByKey, not BatchElements
    (whose `finish_bundle` output the DaskRunner drops)."""
    return int.from_bytes(hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()[:8], "big") % batches


class ExplainFn(beam.DoFn):
    """Explain one batch of (clip, annotation name, annotation values) with the corpus statistics."""

    def __init__(self, plan: ExplainPlan, language: str, concurrency: int, progress_dir: str):
        # not the plan itself: its annotation table reaches the workers through the join, row by row
        self.sources, self.wheel, self.llm = plan.sources, plan.wheel, plan.llm
        self.language, self.concurrency, self.progress_dir = language, concurrency, progress_dir

    def setup(self) -> None:
        self.progress = ProgressLog(self.progress_dir)
        self.progress.model_load(STAGE)
        if self.llm is not None:
            self.llm.setup()

    def process(self, element: tuple[int, dict[str, list[Any]]]) -> Iterable[Clip]:
        _, joined = element
        corpus = joined["corpus"][0] if joined["corpus"] else CorpusStats()
        batch = sorted(joined["clips"], key=lambda j: j[0].key)
        rules = RulesExplainer(corpus)
        llm_before = self.llm.stats() if self.llm is not None else {}
        cpu, started = cpu_seconds(), time.perf_counter()

        def one(item: tuple[Clip, str, dict[str, Any]]) -> Clip:
            clip, name, values = item

            def explain(out: Clip) -> None:
                media = out.explain_media or {}
                given = ExplainInput(out.key, name, out.fields, media.get("keyframes") or [], media.get("audio_wav"))
                explainers = {"annotations": AnnotationExplainer({name: values} if values else {}, self.language), "rules": rules, "llm": self.llm}
                out.fields[STAGE] = explain_clip(given, self.sources, explainers, self.wheel)

            return dataclasses.replace(guarded(clip, STAGE, explain, self.progress), explain_media=None)

        with ThreadPoolExecutor(max_workers=max(1, min(self.concurrency, len(batch)))) as pool:
            explained = list(pool.map(one, batch))
        self.progress.stage_time(STAGE, cpu_seconds() - cpu, time.perf_counter() - started)
        if self.llm is not None:
            self.progress.count({f"llm_{k}": v - llm_before[k] for k, v in self.llm.stats().items()})
        yield from explained


def _corpus_per_batch(_: int, rows: Iterable[dict[str, float]], batches: int = 1) -> list[tuple[int, CorpusStats]]:
    stats = CorpusStats.from_measures(list(rows))
    return [(b, stats) for b in range(batches)]


def _clips_by_batch(name: str, joined: dict[str, list[Any]], batches: int = 1) -> list[tuple[int, tuple[Clip, str, dict[str, Any]]]]:
    values = joined["rows"][0] if joined["rows"] else {}
    return [(batch_of(c.key, batches), (c, name, values)) for c in joined["clips"]]


class Explain(beam.PTransform):
    """Clips -> explained clips: annotation rows joined by name, the rules' corpus statistics and the
    clips meet per batch in CoGroupByKeys (no side inputs), then explained on a thread pool."""

    def __init__(self, plan: ExplainPlan, names: dict[str, str], llm_config: LlmConfig, language: str, inputs: int, progress_dir: str):
        super().__init__()
        self.plan, self.names, self.llm_config, self.language, self.progress_dir = plan, names, llm_config, language, progress_dir
        self.concurrency = llm_config.concurrency if plan.llm is not None else 1
        self.batches = max(1, -(-inputs // (2 * self.concurrency if plan.llm is not None else 8)))

    def expand(self, clips: beam.PCollection) -> beam.PCollection:
        plan, batches = self.plan, self.batches
        frames = self.llm_config.frames if plan.llm is not None else 0
        slimmed = clips | "Slim" >> beam.Map(slim, frames, self.llm_config.send_audio and plan.llm is not None)
        corpus = (
            slimmed
            | "Measures" >> beam.FlatMap(lambda c: [] if c.failure is not None else [(0, measures_of(c.fields))])
            | "AllMeasures" >> beam.GroupByKey()
            | "Corpus" >> beam.FlatMapTuple(_corpus_per_batch, batches=batches)
        )
        rows = clips.pipeline | "AnnotationRows" >> beam.Create(sorted(plan.annotations.rows().items()))
        by_name = slimmed | "ByName" >> beam.Map(lambda c, names: (names.get(c.key, c.key), c), self.names)
        joined = (
            {"clips": by_name, "rows": rows}
            | "JoinAnnotations" >> beam.CoGroupByKey()
            | "ByBatch" >> beam.FlatMapTuple(_clips_by_batch, batches=batches)
        )
        return (
            {"clips": joined, "corpus": corpus}
            | "JoinCorpus" >> beam.CoGroupByKey()
            | "Explain" >> beam.ParDo(ExplainFn(plan, self.language, self.concurrency, self.progress_dir))
        )
