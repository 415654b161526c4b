"""What flows between stages: one clip, decoded once, gaining a field group per stage."""

from __future__ import annotations

import abc
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from emer_builder.core.config import setting
from emer_builder.core.errors import ClipError
from emer_builder.schemas import FieldGroup

SAMPLE_RATE = 16_000  # the audio every stage reads: 16 kHz mono float32 (Whisper, Silero VAD, openSMILE)

__all__ = ["SAMPLE_RATE", "Audio", "AudioSource", "Clip", "ClipError", "FrameSource", "Frames", "Stage", "frame_shape", "setting"]


class FrameSource(abc.ABC):
    """A long clip's sampled frames, read again from the file each time they are iterated instead of
    held in memory (an hour at 2 fps is 5 GB): one frame at a time, in time order, the same frames a
    short clip's list holds. `len` is their count; `pick` reads a few by seeking."""

    @abc.abstractmethod
    def __len__(self) -> int: ...

    @abc.abstractmethod
    def __iter__(self) -> Iterator[tuple[float, np.ndarray]]: ...

    @property
    @abc.abstractmethod
    def shape(self) -> tuple[int, int]:
        """(height, width) of every frame."""

    @abc.abstractmethod
    def pick(self, indices: list[int]) -> list[tuple[float, np.ndarray]]:
        """Frames `indices` (of the sampling), without reading the frames between them."""

    def __getitem__(self, index: int) -> tuple[float, np.ndarray]:
        return self.pick([index])[0]


class AudioSource(abc.ABC):
    """A long clip's 16 kHz mono float32 track on disk instead of in memory (230 MB an hour): `len` is
    its sample count and `source[a:b]` reads one block, as for an array; `np.asarray(source)` reads it
    all (what a stage that needs the whole track at once pays)."""

    @abc.abstractmethod
    def __len__(self) -> int: ...

    @abc.abstractmethod
    def read(self, start: int, stop: int) -> np.ndarray:
        """Samples [start, stop), float32."""

    @property
    def size(self) -> int:
        return len(self)

    def __getitem__(self, key: slice) -> np.ndarray:
        if not isinstance(key, slice):
            raise TypeError("an audio source is read in blocks: source[start:stop]")
        start, stop, step = key.indices(len(self))
        if step != 1:
            raise ValueError("an audio source is read in contiguous blocks")
        return self.read(start, max(start, stop))

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        samples = self.read(0, len(self))
        return samples if dtype is None else samples.astype(dtype)


Frames = list[tuple[float, np.ndarray]] | FrameSource  # (time_s, BGR uint8) at the sampling rate
Audio = np.ndarray | AudioSource  # 16 kHz mono float32


def frame_shape(frames: Frames) -> tuple[int, int] | None:
    """(height, width) of the sampled frames; None without frames."""
    if isinstance(frames, FrameSource):
        return frames.shape if len(frames) else None
    return frames[0][1].shape[:2] if frames else None


@dataclass
class Clip:
    """One input video on its way to becoming a record: what stages read and write (the graph's
    bookkeeping travels beside it, in `pipelines.envelope.Envelope`)."""

    key: str
    path: str  # absolute path of the video
    source_path: str  # path relative to the input folder
    start_s: float | None = None  # an utterance of a longer video: its window [start_s, end_s); None: the whole file
    end_s: float | None = None
    fields: dict[str, Any] = field(default_factory=dict)  # field group name -> values
    # 16 kHz mono float32, None without an audio track; an AudioSource (on disk) for a long clip
    audio: Audio | None = None
    # (time_s, BGR uint8) at the sampling rate; a FrameSource (streamed from the file) for a long clip
    frames: Frames = field(default_factory=list)
    media_files: dict[str, bytes] = field(default_factory=dict)  # tar member suffix -> bytes


class Stage:
    """A step that adds one field group to a clip; core stages and plug-ins are the same kind of thing.

    Subclasses set `name` and `group`, optionally `config_type` (their section of build.yaml, a
    dataclass whose keys carry their checks: `setting`), load models in `setup` (once per worker
    process) and fill `clip.fields[name]` in `process`. Raising ClipError (or anything) sends the clip
    to failures. A core stage's section is `config.<name>`, a plug-in's `stage_config.<name>`.
    """

    name: ClassVar[str]  # also the stage named in failures.parquet
    group: ClassVar[FieldGroup]  # the field group the stage fills
    config_type: ClassVar[type | None] = None  # the dataclass of its config section; None: it takes none

    @classmethod
    def from_config(cls, section: Any = None) -> Stage:
        """The stage built from its checked section (None when it takes none); a core stage whose
        constructor takes the section's keys one by one overrides this."""
        return cls() if cls.config_type is None else cls(section)

    def provenance(self) -> dict[str, Any]:
        """What this stage adds to every record's `provenance` group (each key a field of that group):
        the models that made the record."""
        return {}

    def setup(self) -> None:
        pass

    def check(self) -> None:
        """What the driver runs once before any worker starts, so a stage that cannot work is one
        clear error up front. By default a full `setup`; a stage whose model is slow to load checks
        what can fail (names, files, devices) without loading it."""
        self.setup()

    def process(self, clip: Clip) -> None:
        raise NotImplementedError

    def model_id(self) -> str:
        return ""
