"""An example plug-in stage, as a user would write one: it adds the `brightness` field group and
reads its own config section (`stage_config.brightness` in build.yaml)."""

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from emer_builder.schemas import Field, FieldGroup
from emer_builder.transforms.clip import Clip, ClipError, Stage, setting


@dataclass(frozen=True)
class BrightnessConfig:
    # a frame whose mean luma is below this counts as dark; the rule is checked with the rest of the config
    dark_below: float = setting(50.0, lambda v: 0 <= v <= 256, "between 0 and 256")


class BrightnessStage(Stage):
    name = "brightness"
    group = FieldGroup(
        "brightness",
        "Mean luma of the sampled frames.",
        (
            Field("mean", pa.float32(), "mean pixel value 0-255 over all sampled frames"),
            Field("frames", pa.int32(), "frames measured"),
            Field("dark_frames", pa.int32(), "frames darker than `stage_config.brightness.dark_below`"),
        ),
    )
    config_type = BrightnessConfig

    def __init__(self, config: BrightnessConfig):
        self.config = config

    def process(self, clip: Clip) -> None:
        if not clip.frames:
            raise ClipError("no frames to measure")
        values = [float(frame.mean()) for _, frame in clip.frames]
        dark = sum(v < self.config.dark_below for v in values)
        clip.fields[self.name] = {"mean": round(float(np.mean(values)), 3), "frames": len(values), "dark_frames": dark}

    def model_id(self) -> str:
        return f"brightness dark_below={self.config.dark_below}"
