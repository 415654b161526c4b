"""The explanation step of `emer build`: annotations joined by clip name, corpus statistics for the
rules explainer, an optional LLM endpoint, all feeding `transforms.explanation.explain_clip`.

clips -> Slim (keep the few frames an LLM needs, drop decoded samples)
      -> Park (the clip written to the staging area: the grouping below moves its key, not its fields)
      -> key by a stable batch number; the corpus statistics (one GroupByKey over every clip's
         measures) placed for each batch's own clips (a size that grows with the batch, not the
         corpus), and the annotation rows each batch's clips are named by (found by the driver, which
         knows every key): the three meet in one CoGroupByKey (no side input)
      -> Explain each batch on a thread pool (LLM requests overlap; the concurrency limit holds)
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import apache_beam as beam
import cv2
import soundfile
from emer_builder.core.config import LlmConfig
from emer_builder.pipelines.envelope import Envelope
from emer_builder.pipelines.explain_setup import ExplainPlan
from emer_builder.pipelines.graph import guarded
from emer_builder.pipelines.progress import cpu_seconds, model_load, stage_time, tally
from emer_builder.pipelines.scratch import park_envelope, unparked
from emer_builder.pipelines.staging import StagingArea
from emer_builder.transforms.annotations import AnnotationExplainer
from emer_builder.transforms.clip import Audio, AudioSource, Clip, Frames, FrameSource
from emer_builder.transforms.explanation import ExplainInput, explain_clip
from emer_builder.transforms.rules_explainer import CorpusStats, MeasureRow, PlacedValues, RulesExplainer, measure_row
from emer_builder.transforms.stages.decode import AUDIO_BLOCK

STAGE = "explanation"
KEYFRAME_MAX_SIDE = 512


def keyframes(frames: Frames, count: int) -> list[tuple[float, bytes]]:
    """`count` frames spread evenly over the clip, as JPEG, for a vision model (a long clip's by seeking
    to each: the stream is not read again for a few frames)."""
    if not len(frames) or count <= 0:
        return []
    picks = sorted({round(i * (len(frames) - 1) / max(1, count - 1)) for i in range(count)}) if count > 1 else [len(frames) // 2]
    chosen = frames.pick(picks) if isinstance(frames, FrameSource) else [frames[i] for i in picks]
    out = []
    for t, frame in chosen:
        scale = KEYFRAME_MAX_SIDE / max(frame.shape[:2])
        if scale < 1:
            frame = cv2.resize(frame, (round(frame.shape[1] * scale), round(frame.shape[0] * scale)), interpolation=cv2.INTER_AREA)
        ok, jpeg = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 85])
        if ok:
            out.append((round(t, 3), jpeg.tobytes()))
    return out


def wav_bytes(audio: Audio | None) -> bytes | None:
    """The track as 16-bit WAV for an audio-reading model; a long clip's is written block by block from disk."""
    if audio is None:
        return None
    buf = io.BytesIO()
    if not isinstance(audio, AudioSource):
        soundfile.write(buf, audio, 16000, format="WAV", subtype="PCM_16")
        return buf.getvalue()
    with soundfile.SoundFile(buf, "w", 16000, 1, "PCM_16", format="WAV") as out:
        for start in range(0, len(audio), AUDIO_BLOCK):
            out.write(audio.read(start, start + AUDIO_BLOCK))
    return buf.getvalue()


def slim(item: Envelope, frames: int, send_audio: bool) -> Envelope:
    """Keep what the explainers read, drop the decoded samples before the join moves clips around."""
    if item.failure is not None:
        return item
    clip = item.clip
    media = {"keyframes": keyframes(clip.frames, frames), "audio_wav": wav_bytes(clip.audio) if send_audio else None}
    return dataclasses.replace(item, clip=dataclasses.replace(clip, audio=None, frames=[]), explain_media=media)


def batch_of(key: str, batches: int) -> int:
    """A stable batch number for a clip: batches are groups of a GroupByKey, not BatchElements
    (whose `finish_bundle` output the DaskRunner drops)."""
    return int.from_bytes(hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()[:8], "big") % batches


class ExplainFn(beam.DoFn):
    """Explain one batch of parked clips (key, source path, annotation name) with the batch's annotation
    rows and the corpus statistics."""

    def __init__(self, plan: ExplainPlan, language: str, concurrency: int, staging: StagingArea):
        # not the plan itself: its annotation table reaches the workers through the join, row by row
        self.sources, self.wheel, self.llm = plan.sources, plan.wheel, plan.llm
        self.language, self.concurrency, self.staging = language, concurrency, staging

    def setup(self) -> None:
        self.loaded = model_load(STAGE)  # counted with the first batch
        if self.llm is not None:
            self.llm.setup()

    def process(self, element: tuple[int, dict[str, list[Any]]]) -> Iterable[Envelope]:
        _, joined = element
        corpus = joined["corpus"][0] if joined["corpus"] else CorpusStats()
        rows = dict(joined["rows"])  # annotation name -> values, for this batch's clips
        batch = sorted(joined["clips"])
        rules = RulesExplainer(corpus)
        llm_before = self.llm.stats() if self.llm is not None else {}
        cpu, started = cpu_seconds(), time.perf_counter()

        def one(joined_item: tuple[str, str, str]) -> Envelope:
            key, source_path, name = joined_item
            item = unparked((key, source_path), self.staging)
            media = item.explain_media or {}
            values = rows.get(name, {})

            def explain(out: Clip) -> None:
                given = ExplainInput(out.key, name, out.fields, media.get("keyframes") or [], media.get("audio_wav"))
                explainers = {"annotations": AnnotationExplainer({name: values} if values else {}, self.language), "rules": rules, "llm": self.llm}
                out.fields[STAGE] = explain_clip(given, self.sources, explainers, self.wheel)

            return dataclasses.replace(guarded(item, STAGE, explain), explain_media=None)

        if self.concurrency > 1 and len(batch) > 1:  # LLM requests overlap
            with ThreadPoolExecutor(max_workers=min(self.concurrency, len(batch))) as pool:
                explained = list(pool.map(one, batch))
        else:  # one at a time (the rules, annotations): on this thread, whose clock is the stage's
            explained = [one(j) for j in batch]
        if explained:  # the batch's statistics travel with its first clip
            stats = {**self.loaded, **stage_time(STAGE, cpu_seconds() - cpu, time.perf_counter() - started)}
            if self.llm is not None:
                stats.update({f"llm_{k}": v - llm_before.get(k, 0) for k, v in self.llm.stats().items()})
            explained[0] = dataclasses.replace(explained[0], stats=tally(explained[0].stats, stats))
            self.loaded = {}
        yield from explained


def _corpus_per_batch(_: int, rows: Iterable[tuple[str, MeasureRow]], batches: int = 1) -> list[tuple[int, PlacedValues]]:
    """The corpus statistics, placed for each batch's clips: all of them sent to every batch would
    grow with corpus x batches."""
    every: list[MeasureRow] = []  # arrival order does not matter: the statistics sort, a batch's values are a set
    by_batch: dict[int, list[MeasureRow]] = {b: [] for b in range(batches)}
    for key, measures in rows:
        by_batch[batch_of(key, batches)].append(measures)
        every.append(measures)
    stats = CorpusStats.from_rows(every)
    return [(b, stats.placed(ms)) for b, ms in by_batch.items()]


def rows_by_batch(keys: Iterable[str], names: dict[str, str], rows: dict[str, Any], batches: int) -> list[tuple[int, tuple[str, Any]]]:
    """The annotation rows each batch's clips are named by (a row once per batch that needs it; a row
    no clip names is not sent): the driver knows every key, so the rows join the clips by batch, in the
    one grouping that also brings the corpus statistics."""
    wanted = {(batch_of(key, batches), names.get(key, key)) for key in keys}
    return sorted((batch, (name, rows[name])) for batch, name in wanted if name in rows)


class Explain(beam.PTransform):
    """Envelopes -> explained envelopes: the parked clips, the annotation rows they are named by and the
    rules' corpus statistics meet per batch in one CoGroupByKey (no side inputs), then explained on a
    thread pool. `keys`: every input's key."""

    def __init__(self, plan: ExplainPlan, names: dict[str, str], llm_config: LlmConfig, language: str, keys: list[str], staging: StagingArea):
        super().__init__()
        self.plan, self.names, self.llm_config, self.language, self.staging = plan, names, llm_config, language, staging
        self.concurrency = llm_config.concurrency if plan.llm is not None else 1
        self.batches = max(1, -(-len(keys) // (2 * self.concurrency if plan.llm is not None else 8)))
        self.rows = rows_by_batch(keys, names, plan.annotations.rows(), self.batches)

    def expand(self, clips: beam.PCollection) -> beam.PCollection:
        plan, batches = self.plan, self.batches
        frames = self.llm_config.frames if plan.llm is not None else 0
        slimmed = clips | "Slim" >> beam.Map(slim, frames, self.llm_config.send_audio and plan.llm is not None)
        corpus = (
            slimmed
            | "Measures" >> beam.FlatMap(lambda c: [] if c.failure is not None else [(0, (c.key, measure_row(c.clip.fields)))])
            | "AllMeasures" >> beam.GroupByKey()
            | "Corpus" >> beam.FlatMapTuple(_corpus_per_batch, batches=batches)
        )
        parked = (
            slimmed
            | "Park" >> beam.Map(park_envelope, self.staging)
            | "ByBatch" >> beam.Map(lambda c, names: (batch_of(c[0], batches), (*c, names.get(c[0], c[0]))), self.names)
        )
        rows = clips.pipeline | "AnnotationRows" >> beam.Create(self.rows)
        return (
            {"clips": parked, "rows": rows, "corpus": corpus}
            | "Join" >> beam.CoGroupByKey()
            | "Explain" >> beam.ParDo(ExplainFn(plan, self.language, self.concurrency, self.staging))
        )
