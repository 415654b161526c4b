"""What the graph keeps in the staging area instead of in its elements, so that a build's memory does
not grow with the corpus: the input rows (read by the workers in parts, not embedded in the pipeline
as a `Create` of every clip), and each clip parked while the groupings move it (an in-memory runner
holds every element of a grouping at once: it should hold a name, not a clip's fields and statistics).

Parked files are written whole and named by the clip, so a retried bundle writes the same file again.
"""

from __future__ import annotations

import hashlib
import pickle
from typing import Any

from emer_builder.pipelines.envelope import Envelope
from emer_builder.pipelines.staging import StagingArea

INPUTS, PARKED = ".inputs", ".parked"
SCRATCH = (INPUTS, PARKED)
PART_COUNT = 256  # input parts at most: enough to spread over the workers, few enough to be nothing in the pipeline


def stage_inputs(staging: StagingArea, clips: list[Envelope], parts: int = PART_COUNT) -> list[str]:
    """Write the inputs in up to `parts` files (one clip each for a small corpus: the runner spreads
    parts over its workers as it spread clips); returns their names, the `Create` of the graph."""
    size = max(1, -(-len(clips) // parts))
    names = []
    for start in range(0, len(clips), size):
        name = f"{INPUTS}/part-{start // size:05d}.pkl"
        staging.write(name, pickle.dumps(clips[start : start + size], protocol=pickle.HIGHEST_PROTOCOL))
        names.append(name)
    return names


def read_inputs(name: str, staging: StagingArea) -> list[Envelope]:
    """The clips of one input part."""
    return pickle.loads(staging.read(name))


def _name(kind: str, key: str, source_path: str) -> str:
    # key and source path: utterances share a source path, colliding files share a key
    digest = hashlib.sha256(f"{key}\x00{source_path}".encode("utf-8", "surrogatepass")).hexdigest()
    return f"{PARKED}/{kind}-{digest}.pkl"


def park(staging: StagingArea, kind: str, key: str, source_path: str, value: Any) -> str:
    """Write one clip's value of a kind (each kind its own file: a retried bundle reads what it read
    the first time) to the staging area; returns its name."""
    name = _name(kind, key, source_path)
    staging.write(name, pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))
    return name


def unpark(staging: StagingArea, name: str) -> Any:
    """What `park` wrote under `name` (the file stays: a retried bundle reads it again)."""
    return pickle.loads(staging.read(name))


ParkedClip = tuple[str, str]
"""A clip parked whole, as the explanation's grouping moves it: (key, source path), the parked file's
name follows from them. A plain tuple of strings on purpose: Beam's coder writes it as two strings,
where a NamedTuple or dataclass falls back to pickle, and an in-memory runner's grouping then holds
about 4 KB per clip instead of 1 (measured at 10,000 clips)."""


def park_envelope(item: Envelope, staging: StagingArea) -> ParkedClip:
    """The clip written to the staging area whole (fields, statistics, explanation media; a failed
    clip's failure row)."""
    park(staging, "clip", item.key, item.source_path, item)
    return item.key, item.source_path


def unparked(parked: ParkedClip, staging: StagingArea) -> Envelope:
    """The envelope `park_envelope` wrote."""
    return unpark(staging, _name("clip", *parked))
