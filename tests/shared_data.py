"""Where the reference data lives: $EMER_SHARED_DATA, else ../shared/data beside the clone (read by tests, never committed)."""

import os
from pathlib import Path

SHARED_DATA = Path(os.environ.get("EMER_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
