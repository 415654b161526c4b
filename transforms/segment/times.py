"""Times and keys of utterances: `12.5` / `HH:MM:SS,mmm` parsed, clock strings, record keys."""

from __future__ import annotations

import math
import re
from typing import Any

from emer_builder.transforms.keys import key_for

_CLOCK = re.compile(r"(?:(\d+):)?(\d{1,2}):(\d{1,2})(?:[,.](\d{1,9}))?")


def parse_time(value: Any) -> float:
    """Seconds from `12.5`, `HH:MM:SS,mmm`, `H:MM:SS.mmm` or `MM:SS,mmm` (MELD writes both `0:20:23,931`
    and `00:20:23,931`); a number is seconds. ValueError with the value when it is none of these."""
    if value is None or (isinstance(value, str) and not value.strip()):
        raise ValueError("an empty cell is not a time")
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a time")
    try:
        seconds = _seconds(value)
    except OverflowError:  # a number or an hour count too large for a float
        raise ValueError(f"{str(value)[:40]!r}{'...' if len(str(value)) > 40 else ''} is not a time (too large)") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{value!r} is not a time (negative or not finite)")
    return seconds


def _seconds(value: Any) -> float:
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        text = str(value).strip()
        m = _CLOCK.fullmatch(text)
        if m:
            hours, minutes, secs, fraction = m.groups()
            if int(minutes) >= 60 or int(secs) >= 60:
                raise ValueError(f"{text!r} is not a time (minutes and seconds must be below 60)")
            seconds = int(hours or 0) * 3600 + int(minutes) * 60 + int(secs) + (int(fraction) / 10 ** len(fraction) if fraction else 0.0)
        else:
            try:
                seconds = float(text)
            except ValueError:
                raise ValueError(f"{text!r} is not a time (seconds, or HH:MM:SS,mmm)") from None
    return seconds


def clock(seconds: float) -> str:
    """`HH:MM:SS,mmm`, as subtitles write times: how messages show them."""
    ms = round(seconds * 1000)
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"


def segment_key(video_key: str, start_s: float, end_s: float) -> str:
    """`{video_key}__{start_ms:09d}-{end_ms:09d}`; over-long keys are cut and hashed by `key_for`."""
    return key_for(f"{video_key}__{round(start_s * 1000):09d}-{round(end_s * 1000):09d}")


def id_key(segment_id: str) -> str:
    """A table's id as a key: `keys.key_for` rules, but a dot is kept as `_` (an id has no file extension to drop)."""
    return key_for(segment_id.replace(".", "_"))


