"""The facts the video stage records about the MP4 it just wrote, read from its boxes in this process.

Asking ffprobe cost a process start per clip (83 ms of CPU for a 1.5 s clip, bench/RESULTS.md, issue 22)
for six numbers that sit in the `moov` box. They are computed here the way ffprobe 5.1 computes them
for a plain (unfragmented) MP4, so the record holds the same values:
- duration: the movie header's (`mvhd`) duration in its time scale, rescaled to microseconds with
  rounding to the nearest (libavformat's `av_rescale`), in seconds;
- frames: the video track's sample count from its time-to-sample table (`stts`);
- rate: the track's time scale times that count over the table's total duration, as a reduced fraction;
- size: the video sample entry's width and height;
- audio: whether a track's handler is `soun`.
Anything else (a fragmented file, no video track, a box cut short, numbers ffmpeg would not reduce
exactly) returns None, and the caller asks ffprobe as before.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from fractions import Fraction
from typing import Any

INT_MAX = 2**31 - 1
_MICROSECONDS = 1_000_000


class _Unsure(ValueError):
    """The file is not the plain MP4 these rules are known to hold for."""


def _boxes(data: bytes, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """(type, payload start, payload end) of each box in data[start:end]."""
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, pos)
        header = 8
        if size == 1:
            (size,), header = struct.unpack_from(">Q", data, pos + 8), 16
        elif size == 0:
            size = end - pos
        if size < header or pos + size > end:
            raise _Unsure(f"box {kind!r} runs past its parent")
        yield kind, pos + header, pos + size
        pos += size


def _child(data: bytes, start: int, end: int, kind: bytes) -> tuple[int, int]:
    """The payload bounds of the first `kind` box in data[start:end]."""
    for name, s, e in _boxes(data, start, end):
        if name == kind:
            return s, e
    raise _Unsure(f"no {kind!r} box")


def _path(data: bytes, start: int, end: int, *kinds: bytes) -> tuple[int, int]:
    for kind in kinds:
        start, end = _child(data, start, end, kind)
    return start, end


def _movie_duration_us(data: bytes, start: int) -> int:
    """The `mvhd` duration in microseconds, rounded to the nearest as libavformat rescales it."""
    version = data[start]
    scale, duration = struct.unpack_from(">IQ" if version == 1 else ">II", data, start + (20 if version == 1 else 12))
    if scale <= 0 or duration <= 0:
        raise _Unsure("movie header without a time scale or duration")
    return (duration * _MICROSECONDS + scale // 2) // scale


def _video_track(data: bytes, start: int, end: int) -> dict[str, Any]:
    """Frame count, average rate and size of one video track (`mdia` payload bounds)."""
    mdhd, _ = _child(data, start, end, b"mdhd")
    version = data[mdhd]
    (scale,) = struct.unpack_from(">I", data, mdhd + (20 if version == 1 else 12))
    stbl = _path(data, start, end, b"minf", b"stbl")
    stts, _ = _child(data, *stbl, b"stts")
    (entries,) = struct.unpack_from(">I", data, stts + 4)
    pairs = struct.unpack_from(f">{2 * entries}I", data, stts + 8)
    frames, ticks = sum(pairs[0::2]), sum(c * d for c, d in zip(pairs[0::2], pairs[1::2], strict=True))
    stsd, _ = _child(data, *stbl, b"stsd")
    width, height = struct.unpack_from(">HH", data, stsd + 8 + 8 + 24)  # first sample entry: its header, then 24 bytes before the size
    rate = Fraction(scale * frames, ticks) if ticks and scale else None
    if rate is not None and (rate.numerator > INT_MAX or rate.denominator > INT_MAX):
        raise _Unsure("a frame rate libavformat would approximate")
    return {"video_frames": frames, "fps": round(rate.numerator / rate.denominator, 6) if rate else None, "width": width, "height": height}


def _tracks(data: bytes, start: int, end: int) -> Iterator[tuple[bytes, tuple[int, int]]]:
    """(handler type, `mdia` payload bounds) of each track in the `moov` payload."""
    for kind, s, e in _boxes(data, start, end):
        if kind == b"trak":
            mdia = _child(data, s, e, b"mdia")
            hdlr, _ = _child(data, *mdia, b"hdlr")
            yield data[hdlr + 8 : hdlr + 12], mdia


def mp4_box_facts(data: bytes) -> dict[str, Any] | None:
    """What ffprobe reports of an unfragmented MP4 (duration, frames, rate, size, audio), or None
    where these rules are not known to give ffprobe's answer."""
    try:
        moov = _child(data, 0, len(data), b"moov")
        if any(kind == b"mvex" for kind, _, _ in _boxes(data, *moov)):
            return None  # fragmented: libavformat reads the fragments' own durations
        duration = _movie_duration_us(data, _child(data, *moov, b"mvhd")[0])
        tracks = list(_tracks(data, *moov))
        video = next((mdia for handler, mdia in tracks if handler == b"vide"), None)
        if video is None:
            return None
        facts = {"duration_s": round(duration / _MICROSECONDS, 6), **_video_track(data, *video)}
    except (_Unsure, struct.error, IndexError):
        return None
    return {**facts, "has_audio": any(handler == b"soun" for handler, _ in tracks)}


__all__ = ["mp4_box_facts"]
