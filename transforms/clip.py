"""What flows between stages: one clip, decoded once, gaining a field group per stage."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from emer_builder.core.config import setting
from emer_builder.core.errors import ClipError
from emer_builder.schemas import FieldGroup

SAMPLE_RATE = 16_000  # the audio every stage reads: 16 kHz mono float32 (Whisper, Silero VAD, openSMILE)

__all__ = ["SAMPLE_RATE", "Clip", "ClipError", "Stage", "setting"]


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
    audio: np.ndarray | None = None  # 16 kHz mono float32, None without an audio track
    frames: list[tuple[float, np.ndarray]] = field(default_factory=list)  # (time_s, BGR uint8)
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
