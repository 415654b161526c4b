"""Light ffprobe look-ups shared by the segmenters and the decode stage: a file's JSON description or
its duration, None when it is no readable media file (the decode stage then says why, as a failure row)."""

from __future__ import annotations

import json
import math
import os
import stat
import subprocess
from typing import Any

from emer_builder.core.cpu import run_child

PROBE_TIMEOUT_S = 60.0  # ffprobe reads headers only; a file that takes longer is not a clip


def ffprobe_json(path: str, args: list[str]) -> dict[str, Any] | None:
    """ffprobe's JSON answer, or None when the file is no regular readable media file (decode then names the problem)."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None  # a pipe or device would block ffprobe; decode reports it
    except OSError:
        return None
    try:
        proc = run_child(["ffprobe", "-v", "error", "-print_format", "json", *args, f"file:{path}"], PROBE_TIMEOUT_S)
    except (subprocess.TimeoutExpired, FileNotFoundError):
        return None
    if proc.returncode != 0:
        return None
    try:
        data = json.loads(proc.stdout or b"{}")
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def probe_duration(path: str) -> float | None:
    """The file's duration in seconds as ffprobe reads it; None when unknown (decode reports why)."""
    data = ffprobe_json(path, ["-show_entries", "format=duration"])
    try:
        value = float((data or {}).get("format", {}).get("duration"))
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) and value > 0 else None
