"""What the graph carries for each clip: the clip (what stages read and write) inside an envelope
that holds the graph's own bookkeeping, which no stage sees or can disturb."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from emer_builder.transforms.clip import Clip


@dataclass
class Envelope:
    """One clip on its way through the graph, and what the graph knows about it."""

    clip: Clip
    failure: dict[str, str] | None = None  # the failure row once a step failed: later steps pass the envelope on untouched
    cache_addresses: list[str] = field(default_factory=list)  # per stage, where its result is cached (empty: no cache)
    restored_through: int = -1  # index of the last stage whose result came from the cache (-1: none)
    explain_media: dict[str, Any] | None = None  # keyframes / audio an LLM reads; dropped after the explanation
    media_spill: str | None = None  # the clip's media files, written to the staging area while records are grouped
    media_bytes: int = 0  # tar bytes of the spilled media files (for shard planning)
    stats: dict[str, float] = field(default_factory=dict)  # run statistics (stage seconds, model loads, counts) on their way to the summary

    @property
    def key(self) -> str:
        return self.clip.key

    @property
    def source_path(self) -> str:
        return self.clip.source_path


def failed_early(row: dict[str, str]) -> Envelope:
    """An input that failed before the graph (a name collision, an unreadable segment table): it
    travels the graph as its failure row."""
    return Envelope(Clip(row["key"], "", row["source_path"]), failure=row)
