"""A long clip (an unsegmented episode, a film): decoded once to measure it, without holding its samples.

A clip whose sampled frames and audio would pass `decode.IN_MEMORY_BYTES` takes this path (an hour at
2 fps and 640x360 is 5 GB of frames and 230 MB of float32 audio):
- one ffmpeg pass measures it as `decode.decode` does (every video frame's time stamp, the count of
  frames the sampling keeps) and writes its 16 kHz float32 audio to a scratch folder;
- `clip.audio` is an `AudioFile`: blocks read from that file (np.fromfile with an offset, so nothing
  is mapped and counted in memory);
- `clip.frames` is a `FrameStream`: each iteration runs ffmpeg again with the same sampling filter and
  yields the same frames one at a time; `pick` seeks to a few frames.

Scratch lifetime: the folder (`emer-decode-<pid>-*`) belongs to the sources made from it and is removed
when the last of them is gone (the graph drops the samples once the explanation step has its keyframes,
or when a step fails; CPython frees them at once), when `release` is called (decode's own checks fail),
at exit, or, for a killed worker, by the next decode stage's setup (dead pids). A failure in the middle
leaks nothing: every path ends in one of those.

On a runner that pickles elements between stages (no fusion; a cluster moving work between machines)
a source travels as a small description: where its samples come from (the input, the window, the
stream) and the scratch path. A copy owns nothing; when the scratch file is not there (another
machine, or the original was freed) the copy decodes the audio again into a scratch folder of its own,
and frames are always read from the input (a stored object is fetched again). Beam's fusion (local
runner, Flink, Dataflow) runs decode through the explanation step on one worker, so none of that happens.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import shutil
import subprocess
import tempfile
import threading
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from emer_builder.core.cpu import Child
from emer_builder.core.errors import ProcessFault, exit_fault
from emer_builder.core.urls import local_copy
from emer_builder.transforms.clip import AudioSource, ClipError, FrameSource
from emer_builder.transforms.stages.decode import (
    PROBE_TIMEOUT_S,
    SAMPLE_RATE,
    SCRATCH_PREFIX,
    Decoded,
    Probe,
    _first_frame,
    _frame_times,
    _lines,
    _run,
    _tail,
    cause,
    check_scratch_written,
    decode_timeout,
    frame_size,
)

COUNT_BYTES = 4  # a sampled frame in the counting output: 2x2 gray


@functools.cache
def _malloc_trim() -> Any:
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc: its allocator decides
        return None


def trim_heap() -> None:
    """Hand the heap's freed pages back to the system between a long clip's blocks: glibc keeps them
    (measured: Whisper's blocks of a 12-minute track lifted RSS from 423 to 531 MB; with this, flat)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


class Scratch:
    """A scratch folder that lives as long as the sources reading it (or until `remove`)."""

    def __init__(self) -> None:
        self.path = tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-")
        self._finalizer = weakref.finalize(self, shutil.rmtree, self.path, True)

    def remove(self) -> None:
        self._finalizer()


@dataclass(frozen=True)
class Origin:
    """Where a long clip's samples come from: enough to decode them again on another worker."""

    location: str  # the input as given (a path or an object-store URL)
    start_s: float | None  # an utterance's window, as decode read it
    limit_s: float | None

    def seek_args(self) -> list[str]:
        return (["-ss", f"{self.start_s:.3f}"] if self.start_s else []) + (["-t", f"{self.limit_s:.3f}"] if self.limit_s is not None else [])

    @contextlib.contextmanager
    def local(self, kept: str | None = None) -> Iterator[str]:
        """A local path of the input: `kept` (decode's copy) while it exists, else the input itself (fetched again when stored)."""
        if kept is not None and os.path.exists(kept):
            yield kept
            return
        with local_copy(self.location) as path:
            yield path


class _Owned:
    """A source that may own a scratch folder; a pickled copy owns nothing."""

    _scratch: Scratch | None = None

    def release(self) -> None:
        """Remove the scratch folder now (the source must not be read afterwards)."""
        if self._scratch is not None:
            self._scratch.remove()

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_scratch": None}


class AudioFile(_Owned, AudioSource):
    """The 16 kHz mono float32 track in a scratch file, read in blocks."""

    def __init__(self, file: str, samples: int, origin: Origin, stream_index: int, scratch: Scratch | None):
        self.file, self.samples, self.origin, self.stream_index, self._scratch = file, samples, origin, stream_index, scratch

    def __len__(self) -> int:
        return self.samples

    def read(self, start: int, stop: int) -> np.ndarray:
        start, stop = max(0, start), min(self.samples, stop)
        if stop <= start:
            return np.zeros(0, dtype=np.float32)
        if not os.path.exists(self.file):
            self._decode_again()
        return np.fromfile(self.file, dtype="<f4", count=stop - start, offset=4 * start)

    def _decode_again(self) -> None:
        """A copy whose scratch file is gone (another machine): the track decoded again, owned by this copy."""
        scratch = Scratch()
        file = os.path.join(scratch.path, "audio.f32")
        with self.origin.local() as path:
            args = ["ffmpeg", "-nostdin", "-hide_banner", "-v", "error", "-threads", "1", *self.origin.seek_args(), "-i", f"file:{path}"]
            args += ["-map", f"0:{self.stream_index}", "-ac", "1", "-ar", str(SAMPLE_RATE), "-c:a", "pcm_f32le", "-f", "f32le", file]
            proc = _run(args, decode_timeout(self.origin.limit_s), "decoding the audio again", stdout=subprocess.DEVNULL)
        if proc.returncode != 0 or not os.path.exists(file) or os.path.getsize(file) // 4 != self.samples:
            scratch.remove()
            raise ClipError(f"decoding the audio again gave another track than the first decode ({cause(_lines(proc.stderr or b''))})")
        self.file, self._scratch = file, scratch


class FrameStream(_Owned, FrameSource):
    """The sampled frames, decoded from the input each time they are iterated (the same filter as
    `decode.decode`, so the same frames), one frame in memory at a time."""

    def __init__(
        self,
        origin: Origin,
        kept: str | None,
        video_index: int,
        audio_index: int | None,
        sample_fps: float,
        size: tuple[int, int],
        count: int,
        scratch: Scratch | None,
    ):
        self.origin, self.kept, self.video_index, self.audio_index = origin, kept, video_index, audio_index
        self.sample_fps, self.size, self.count, self._scratch = sample_fps, size, count, scratch

    def __len__(self) -> int:
        return self.count

    @property
    def shape(self) -> tuple[int, int]:
        return self.size[1], self.size[0]

    def __iter__(self) -> Iterator[tuple[float, np.ndarray]]:
        with self.origin.local(self.kept) as path:
            yield from self._stream(path)

    def _stream(self, path: str) -> Iterator[tuple[float, np.ndarray]]:
        width, height = self.size
        graph = f"[0:{self.video_index}]fps=fps={self.sample_fps!r},scale={width}:{height}[out]"
        args = ["ffmpeg", "-nostdin", "-hide_banner", "-v", "error", "-threads", "1", *self.origin.seek_args(), "-i", f"file:{path}"]
        args += ["-filter_complex", graph, "-filter_complex_threads", "1", "-map", "[out]", "-f", "rawvideo", "-pix_fmt", "bgr24", "pipe:1"]
        if self.audio_index is not None:
            # the audio read as in the first pass: with the video alone, ffmpeg 5.1 times an MPEG-TS or -PS
            # video from another start, and the sampling filter keeps other frames (or fewer)
            args += ["-map", f"0:{self.audio_index}", "-f", "null", "-"]
        frame_bytes, count, late = width * height * 3, 0, []
        limit_s = decode_timeout(self.origin.limit_s)  # the consumer's time counts too: a generous bound, not a pace
        with tempfile.TemporaryFile() as err, Child(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err) as proc:
            timer = threading.Timer(limit_s, lambda: (late.append(True), proc.kill()))
            timer.daemon = True  # a stream left half read must not hold the interpreter open at exit
            timer.start()
            try:
                assert proc.stdout is not None
                while len(raw := proc.stdout.read(frame_bytes)) == frame_bytes:
                    yield round(count / self.sample_fps, 3), np.frombuffer(raw, dtype=np.uint8).reshape(height, width, 3)
                    count += 1
                proc.wait()
            except BaseException:  # the consumer stopped early (or failed): the decoder is stopped, not left writing
                proc.kill()
                raise
            finally:
                timer.cancel()
            err.seek(0)
            messages = _lines(err.read()[-16_384:])
        if late:
            raise ClipError(f"reading the sampled frames again took longer than {limit_s:.0f} s and was stopped")
        fault = exit_fault(proc.returncode)
        if fault:
            raise ProcessFault(f"ffmpeg was {fault} while reading the sampled frames again")
        if proc.returncode != 0 or count != self.count:
            said = cause(messages) if messages else f"ffmpeg exit {proc.returncode}"
            raise ClipError(f"reading the sampled frames again gave {count} of {self.count} frames ({said})")

    def pick(self, indices: list[int]) -> list[tuple[float, np.ndarray]]:
        """The frames at `indices`, each by a seek to its time (the frame shown then: within one frame of
        the streamed one, which the sampling filter may take from either side)."""
        with self.origin.local(self.kept) as path:
            return [(round(i / self.sample_fps, 3), self._seek(path, i)) for i in indices]

    def _seek(self, path: str, index: int) -> np.ndarray:
        width, height = self.size
        start = (self.origin.start_s or 0.0) + index / self.sample_fps
        for at in (start, max(0.0, start - 1.0)):  # the last sampled frame may lie past the last decodable one
            args = ["ffmpeg", "-nostdin", "-hide_banner", "-v", "error", "-threads", "1", "-ss", f"{at:.3f}", "-i", f"file:{path}"]
            args += ["-map", f"0:{self.video_index}", "-frames:v", "1", "-vf", f"scale={width}:{height}", "-f", "rawvideo", "-pix_fmt", "bgr24", "pipe:1"]
            raw = _run(args, PROBE_TIMEOUT_S, "seeking a sampled frame").stdout or b""
            if len(raw) >= width * height * 3:
                return np.frombuffer(raw[: width * height * 3], dtype=np.uint8).reshape(height, width, 3)
        raise ClipError(f"no frame could be read at {start:.3f} s")


def _keep_input(path: str, scratch: Scratch) -> str:
    """decode's local copy of a stored input, kept in the scratch folder for the frames' later passes."""
    kept = os.path.join(scratch.path, "input" + os.path.splitext(path)[1])
    try:
        os.link(path, kept)
    except OSError:
        shutil.copyfile(path, kept)
    return kept


def decode_long(path: str, location: str, info: Probe, sample_fps: float, frame_max_side: int, limit_s: float | None, start_s: float | None) -> Decoded:
    """`decode.decode` for a long clip: one pass measures the video (every frame's time stamp), counts
    the frames the sampling keeps (at 2x2 pixels) and writes the audio to a scratch file; the samples
    come back as an AudioFile and a FrameStream. `location` is the input as given (`path` may be a
    local copy of a stored object)."""
    width, height = frame_size(info.media["width"], info.media["height"], frame_max_side)
    tiny = "scale=2:2:flags=neighbor,format=gray"
    graph = f"[0:{info.video_index}]split=2[s][m];[s]fps=fps={sample_fps!r},{tiny}[count];[m]{tiny}[meas]"
    origin = Origin(location, start_s, limit_s)
    scratch = Scratch()
    try:
        times_path, count_path, pcm_path, err_path = (os.path.join(scratch.path, n) for n in ("frames.crc", "sampled.gray", "audio.f32", "stderr.txt"))
        args = ["ffmpeg", "-nostdin", "-hide_banner", "-v", "error", "-threads", "1", *origin.seek_args(), "-i", f"file:{path}"]
        args += ["-filter_complex", graph, "-filter_complex_threads", "1"]
        args += ["-map", "[count]", "-f", "rawvideo", "-pix_fmt", "gray", count_path]  # the muxer decode's frames go through: the same count
        args += ["-map", "[meas]", "-c:v", "rawvideo", "-f", "framecrc", times_path]
        if info.audio is not None:
            args += ["-map", f"0:{info.audio.index}", "-ac", "1", "-ar", str(SAMPLE_RATE), "-c:a", "pcm_f32le", "-f", "f32le", pcm_path]
        with open(err_path, "wb") as err:
            proc = _run(args, decode_timeout(limit_s), "decoding", stdout=subprocess.DEVNULL, stderr=err)
        errors = _lines(_tail(err_path))
        check_scratch_written(errors, scratch.path)
        if proc.returncode != 0 and not errors:
            errors = [f"ffmpeg exited with status {proc.returncode}"]
        video_frames, video_end = _frame_times(times_path)
        sampled = os.path.getsize(count_path) // COUNT_BYTES if os.path.exists(count_path) else 0
        audio = None
        if info.audio is not None and os.path.exists(pcm_path):
            audio = AudioFile(pcm_path, os.path.getsize(pcm_path) // 4, origin, info.audio.index, scratch)
        frames: Any = []
        if sampled:
            kept = None if path == location else _keep_input(path, scratch)
            audio_index = info.audio.index if info.audio is not None else None
            frames = FrameStream(origin, kept, info.video_index, audio_index, sample_fps, (width, height), sampled, scratch)
        elif video_frames:
            frames = _first_frame(path, info, width, height)  # too few frames for the sampling rate (one still frame)
        return Decoded(audio, frames, video_frames, video_end, errors)
    except BaseException:
        scratch.remove()
        raise
