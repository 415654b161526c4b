"""An example plug-in stage, as a user would write one: it adds the `brightness` field group."""

import numpy as np
import pyarrow as pa
from emer_builder.schemas import Field, FieldGroup
from emer_builder.transforms.clip import Clip, Stage


class BrightnessStage(Stage):
    name = "brightness"
    group = FieldGroup(
        "brightness",
        "Mean luma of the sampled frames.",
        (Field("mean", pa.float32(), "mean pixel value 0-255 over all sampled frames"), Field("frames", pa.int32(), "frames measured")),
    )

    def process(self, clip: Clip) -> None:
        values = [float(frame.mean()) for _, frame in clip.frames]
        clip.fields[self.name] = {"mean": round(float(np.mean(values)), 3), "frames": len(values)}
