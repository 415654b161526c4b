"""Old import path of the segmentation package `emer_builder.transforms.segment` (kept until every import moves)."""

from emer_builder.transforms.segment import *  # noqa: F403
from emer_builder.transforms.segment import __all__  # noqa: F401
