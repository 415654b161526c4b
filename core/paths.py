"""Where emer-builder keeps its own files (models, caches, the demo corpus)."""

from __future__ import annotations

import os
from pathlib import Path


def emer_home() -> Path:
    return Path(os.environ.get("EMER_HOME", Path.home() / ".cache" / "emer-builder"))
