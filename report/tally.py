"""What the report keeps while it streams a build's rows once: per-split totals, the plots' numbers, counters, and a
bounded gallery sample, so that its memory does not grow with the records' text.

Memory per record: four floats for the plots (in arrays, 8 bytes each); per split, the label and expression
counters; the truncated records (manifest.json lists them anyway). The gallery holds at most `GALLERY_PER_SPLIT`
rows per split and `GALLERY_FAILURES` failure rows: every row of a smaller split, else a sample chosen by key hash
(the same build gives the same sample) from a few of the split's shards (`gallery_shards`), so the report opens
only those tar shards. The failures' overview keeps, per (stage, error), a count, `MESSAGES_KEPT` distinct
messages and the first `PATHS_SHOWN` paths.
"""

from __future__ import annotations

import bisect
import hashlib
import heapq
import statistics
from array import array
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

GALLERY_PER_SPLIT = 1000  # records per split in the gallery; a larger split shows a sample of this many
GALLERY_SHARDS = 8  # a sampled split's gallery comes from at least this many of its shards (fewer when it has fewer)
GALLERY_FAILURES = 1000  # failure rows in the gallery; more: a sample of this many
MESSAGES_KEPT = 1000  # distinct messages counted per failure reason (more only add to the reason's total)
PATHS_SHOWN = 10  # paths listed per failure reason in the overview
EXPLANATION_FIELDS = ("subtitle", "visual_clue", "acoustic_clue", "lexical_clue", "multimodal_explanation", "open_vocab_labels", "discrete_label", "valence")
TRUNCATION_FIELDS = ("declared_duration_s", "decoded_duration_s", "decoded_fraction")


def rank(text: str) -> int:
    """Where `text` falls in the sample order: a stable hash, the same on every machine and run."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8", "surrogateescape")).digest()[:8], "big")


class Sample:
    """The `size` offered items of smallest rank (every item while no more were offered): a bounded heap."""

    def __init__(self, size: int):
        self.size, self.offered = size, 0
        self._heap: list[tuple[int, int, Any]] = []  # (-rank, order offered, item): the root is the largest rank kept

    def offer(self, name: str, item: Any) -> None:
        self.offered += 1
        entry = (-rank(name), self.offered, item)
        if len(self._heap) < self.size:
            heapq.heappush(self._heap, entry)
        elif entry[0] > self._heap[0][0]:
            heapq.heapreplace(self._heap, entry)

    def items(self) -> list[Any]:
        return [item for _, _, item in self._heap]

    @property
    def sampled(self) -> bool:
        return self.offered > self.size


def gallery_shards(rows: dict[str, int], per_split: int | None = None, least: int | None = None) -> set[str]:
    """The shards of one split (name -> records) whose records the gallery samples: all of them when the split
    fits the gallery; else shards in the order of their names' hash until at least `least` are taken and they
    hold `per_split` records (a bounded number of shards is opened, spread over the split's key range)."""
    per_split = GALLERY_PER_SPLIT if per_split is None else per_split
    least = GALLERY_SHARDS if least is None else least
    if sum(rows.values()) <= per_split:
        return set(rows)
    chosen: set[str] = set()
    held = 0
    for name in sorted(rows, key=lambda n: (rank(n), n)):
        if len(chosen) >= least and held >= per_split:
            break
        chosen.add(name)
        held += rows[name]
    return chosen


@dataclass
class SplitTally:
    """One split's totals and the plots' values (`durations`, `face_sizes`, `pitch`, `loudness`: one float per record)."""

    records: int = 0
    faces: int = 0
    audio_s: float = 0.0
    durations: array = field(default_factory=lambda: array("d"))
    face_sizes: array = field(default_factory=lambda: array("d"))
    pitch: array = field(default_factory=lambda: array("d"))
    loudness: array = field(default_factory=lambda: array("d"))
    dominant: Counter[str] = field(default_factory=Counter)  # dominant expression class -> clips
    labels: Counter[str] = field(default_factory=Counter)  # open-vocabulary label -> clips
    wheel: Counter[str] = field(default_factory=Counter)  # level-1 wheel category -> clips
    classes: list[str] = field(default_factory=list)  # expression classes of the split's first record by key with scores
    _classes_key: str | None = None

    def add(self, r: dict[str, Any]) -> None:
        self.records += 1
        self.faces += bool(r["faces.crops"])
        if r["media.has_audio"]:
            self.audio_s += r["media.duration_s"] or 0
        if r["media.duration_s"] is not None:
            self.durations.append(r["media.duration_s"])
        if (size := face_size(r)) is not None:
            self.face_sizes.append(size)
        prosody = r["acoustics.prosody"] or {}
        if prosody.get("f0_mean_semitone") is not None:
            self.pitch.append(prosody["f0_mean_semitone"])
        if prosody.get("loudness_mean") is not None:
            self.loudness.append(prosody["loudness_mean"])
        if r["faces.expression_mean"]:
            self.dominant[dominant(r["faces.expression_mean"])] += 1
            if self._classes_key is None or r["key"] < self._classes_key:
                self._classes_key, self.classes = r["key"], list(r["faces.expression_mean"])
        self.labels.update(set(labels_of(r)))
        self.wheel.update(wheel_level1(r))


class RecordTally:
    """Every record's contribution to the report, added one flat row at a time (any order); the gallery's rows."""

    def __init__(self, per_split: int | None = None):
        self.per_split = GALLERY_PER_SPLIT if per_split is None else per_split
        self.splits: dict[str, SplitTally] = {}
        self.languages: Counter[str] = Counter()
        self.sources: dict[str, dict[str, int]] = {}  # explanation field -> source -> records (for a manifest without them)
        self.truncated: list[dict[str, Any]] = []
        self.truncation_known = False  # some record says whether it was truncated (a build made after the flag)
        self.gallery: dict[str, Sample] = {}
        self.shard_of: dict[str, str] = {}  # key of a gallery row -> the shard (name without suffix) that holds it

    def add(self, r: dict[str, Any], shard: str | None = None, candidate: bool = True) -> None:
        """Count one record; `candidate`: it is in a shard the gallery samples from."""
        self.splits.setdefault(r["split"], SplitTally()).add(r)
        if r["transcript.language"]:
            self.languages[r["transcript.language"]] += 1
        for name in EXPLANATION_FIELDS:
            value = r[f"explanation.{name}"]
            if isinstance(value, dict):
                counts = self.sources.setdefault(name, {})
                counts[value.get("source") or "null"] = counts.get(value.get("source") or "null", 0) + 1
        self.truncation_known = self.truncation_known or r["media.truncated"] is not None
        if r["media.truncated"]:
            self.truncated.append({"key": r["key"], "split": r["split"], "source_path": r["source_path"], **{f: r[f"media.{f}"] for f in TRUNCATION_FIELDS}})
        if candidate:
            self.gallery.setdefault(r["split"], Sample(self.per_split)).offer(r["key"], (r, shard))

    @property
    def records(self) -> int:
        return sum(s.records for s in self.splits.values())

    def gallery_rows(self) -> list[dict[str, Any]]:
        """The gallery's records, sorted by key; remembers which shard holds each."""
        rows = []
        for sample in self.gallery.values():
            for r, shard in sample.items():
                rows.append(r)
                if shard is not None:
                    self.shard_of[r["key"]] = shard
        return sorted(rows, key=lambda r: r["key"])


@dataclass
class Reason:
    """One (stage, error class) of the failures: how many, its most frequent messages, its first paths by key."""

    count: int = 0
    messages: Counter[str] = field(default_factory=Counter)
    first: list[tuple[str, str]] = field(default_factory=list)  # (key, source_path), sorted, at most PATHS_SHOWN

    def add(self, f: dict[str, str]) -> None:
        self.count += 1
        if f["message"] in self.messages or len(self.messages) < MESSAGES_KEPT:
            self.messages[f["message"]] += 1
        entry = (f["key"], f["source_path"])
        if len(self.first) < PATHS_SHOWN or entry < self.first[-1]:
            bisect.insort(self.first, entry)
            del self.first[PATHS_SHOWN:]


class FailureTally:
    """Every failure row counted by reason; the gallery's failure rows (all, or a sample by key hash)."""

    def __init__(self, size: int | None = None):
        self.count = 0
        self.reasons: dict[tuple[str, str], Reason] = {}
        self.stages: Counter[str] = Counter()
        self.gallery = Sample(GALLERY_FAILURES if size is None else size)

    def add(self, f: dict[str, str]) -> None:
        self.count += 1
        self.stages[f["stage"]] += 1
        self.reasons.setdefault((f["stage"], f["error_class"]), Reason()).add(f)
        self.gallery.offer(f"{f['key']}\x00{f['source_path']}", f)

    def gallery_rows(self) -> list[dict[str, str]]:
        return sorted(self.gallery.items(), key=lambda f: (f["key"], f["source_path"]))


def face_size(r: dict[str, Any]) -> float | None:
    """The main face's box height over the frame height (median over its crops)."""
    height = r["media.height"]
    heights = [c["box"]["h"] for c in r["faces.crops"] or [] if c.get("box") and c["box"].get("h")]
    if not height or not heights:
        return None
    return min(1.0, statistics.median(heights) / height)


def dominant(scores: dict[str, float | None]) -> str:
    return max(sorted(scores), key=lambda c: scores[c] or 0.0)


def labels_of(r: dict[str, Any]) -> list[str]:
    labels = (r["explanation.open_vocab_labels"] or {}).get("labels") or []
    return [label.strip().lower() for label in labels if label and label.strip()]


def wheel_level1(r: dict[str, Any]) -> set[str]:
    for entry in (r["explanation.open_vocab_labels"] or {}).get("wheel") or []:
        if entry.get("wheel") == "wheel1":
            return set(entry.get("level1") or [])
    return set()
