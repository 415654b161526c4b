"""Video stage: the record's own video in the tar, so an utterance cut from an episode can be watched
and a video model (AffectGPT-style, reading frames) can train on it.

Modes (config `video.mode`):
- `clip`: the record's window of the file (an utterance, or the whole clip) as H.264/AAC MP4. It is
  re-encoded, not stream-copied: a copy can only cut at keyframes (seconds off), a re-encode cuts at the
  first frame of the window. The size is bounded by `max_side` and `crf`. Every setting that could vary
  between runs is pinned (one encoder thread, no metadata, bitexact muxer and codecs, fixed x264 preset),
  so a rebuild on the same ffmpeg gives the same bytes; the ffmpeg version is part of the stage's cache
  address and of `provenance.video_encoder`.
- `frames`: `frames` JPEGs, one at the middle of each equal slice of the window (`frame_000.jpg` ...).
- `none`: nothing.

It reads the file itself (one more ffmpeg pass over the window) rather than the decode stage's sampled
frames: those are at `decode.sample_fps` for face analysis, too few for a video and at another size.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import tempfile
from typing import Any

import cv2
import numpy as np
from emer_builder.core.config import VideoConfig
from emer_builder.core.cpu import run_child
from emer_builder.core.urls import local_copy
from emer_builder.schemas.v1 import VIDEO
from emer_builder.transforms.clip import Clip, ClipError, Stage
from emer_builder.transforms.stages.decode import PROBE_TIMEOUT_S, SCRATCH_PREFIX, _lines, _run, cause, decode_timeout, frame_size
from emer_builder.transforms.stages.mp4_boxes import mp4_box_facts

PRESET = "veryfast"  # x264 preset, fixed: part of what makes the bytes (bench/RESULTS.md, "Video members")
JPEG_QUALITY = 90
MP4 = "mp4"


def frame_member(index: int) -> str:
    """Tar member suffix of frame `index` (`frame_000.jpg`); sorts in time order."""
    return f"frame_{index:03d}.jpg"


@functools.lru_cache(maxsize=1)
def ffmpeg_version() -> str:
    """`ffmpeg 5.1.9-0+deb12u1`: the encoder's bytes depend on it."""
    try:
        out = run_child(["ffmpeg", "-hide_banner", "-version"], PROBE_TIMEOUT_S, text=True).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "ffmpeg (version unknown)"
    words = out.split()
    return f"ffmpeg {words[2]}" if len(words) > 2 and words[0] == "ffmpeg" else "ffmpeg (version unknown)"


def window(clip: Clip, media: dict[str, Any]) -> tuple[float, float]:
    """The record's window in the source file: an utterance's [start_s, end_s), else [0, duration)."""
    if clip.start_s is not None and clip.end_s is not None:
        return clip.start_s, clip.end_s
    return 0.0, float(media.get("duration_s") or media.get("decoded_duration_s") or 0.0)


def _seek(start_s: float) -> list[str]:
    return ["-ss", f"{start_s:.3f}"] if start_s > 0 else []


def encode_clip(path: str, start_s: float, end_s: float, size: tuple[int, int], audio_stream: int | None, crf: int, audio_kbps: int) -> bytes:
    """The window [start_s, end_s) of `path` as H.264/AAC MP4 at `size`, byte-identical for the same inputs.

    `-ss` before the input seeks fast and then decodes to the exact start; `-t` on the output ends it at
    the last frame that starts inside the window. Audio is the decoded stream (`a:N`), kept mono or
    folded to stereo."""
    duration = end_s - start_s
    width, height = size
    args = ["ffmpeg", "-nostdin", "-hide_banner", "-v", "error", "-threads", "1", *_seek(start_s), "-i", f"file:{path}", "-t", f"{duration:.3f}"]
    args += ["-map", "0:V:0", "-vf", f"scale={width}:{height}", "-filter_threads", "1", "-vsync", "passthrough"]
    args += ["-c:v", "libx264", "-preset", PRESET, "-crf", str(crf), "-pix_fmt", "yuv420p", "-threads", "1"]
    args += ["-x264-params", "threads=1:lookahead-threads=1:sliced-threads=0"]
    if audio_stream is not None:
        args += ["-map", f"0:a:{audio_stream}", "-af", "aformat=channel_layouts=mono|stereo", "-c:a", "aac", "-b:a", f"{audio_kbps}k"]
    args += ["-map_metadata", "-1", "-map_chapters", "-1", "-fflags", "+bitexact", "-flags:v", "+bitexact", "-flags:a", "+bitexact"]
    args += ["-movflags", "+faststart"]
    with tempfile.TemporaryDirectory(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-") as tmp:
        out = os.path.join(tmp, "clip.mp4")
        proc = _run([*args, "-f", "mp4", out], decode_timeout(duration), "encoding the clip's MP4")
        if proc.returncode != 0 or not os.path.exists(out):
            raise ClipError(f"could not encode the clip's MP4: {cause(_lines(proc.stderr or b''))}")
        with open(out, "rb") as f:
            return f.read()


def mp4_facts(data: bytes) -> dict[str, Any]:
    """What ffprobe reads from an MP4: duration, frame count and rate, size, whether it has audio. Read
    from the MP4's boxes in this process (no process start per clip), from ffprobe where they are unusual."""
    return mp4_box_facts(data) or ffprobe_mp4_facts(data)


def ffprobe_mp4_facts(data: bytes) -> dict[str, Any]:
    """`mp4_facts` as ffprobe reports them: the reference the box reader is held to."""
    with tempfile.NamedTemporaryFile(prefix=SCRATCH_PREFIX, suffix=".mp4") as f:
        f.write(data)
        f.flush()
        args = ["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams", f"file:{f.name}"]
        proc = _run(args, PROBE_TIMEOUT_S, "reading the clip's MP4")
    info = json.loads(proc.stdout.decode("utf-8", "replace") or "{}")
    video = next((s for s in info.get("streams", []) if s.get("codec_type") == "video"), {})
    num, _, den = str(video.get("avg_frame_rate", "0/0")).partition("/")
    return {
        "duration_s": round(float(info.get("format", {}).get("duration", 0.0)), 6),
        "video_frames": int(video.get("nb_frames", 0)),
        "fps": round(int(num) / int(den), 6) if den and int(den) else None,
        "width": int(video.get("width", 0)),
        "height": int(video.get("height", 0)),
        "has_audio": any(s.get("codec_type") == "audio" for s in info.get("streams", [])),
    }


def sample_frames(path: str, start_s: float, end_s: float, count: int, size: tuple[int, int]) -> list[tuple[float, np.ndarray]]:
    """Up to `count` frames of the window, the first at or after the middle of each of `count` equal slices,
    with their times from the window's start (a clip with fewer frames than slices gives fewer)."""
    duration = end_s - start_s
    width, height = size
    pick = f"select='gte(t\\,(selected_n+0.5)*{duration!r}/{count})'"
    graph = f"[0:V:0]{pick},split=2[s][m];[s]scale={width}:{height}[out];[m]settb=1/1000,scale=2:2:flags=neighbor,format=gray[meas]"
    with tempfile.TemporaryDirectory(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-") as tmp:
        times_path = os.path.join(tmp, "frames.crc")
        args = ["ffmpeg", "-nostdin", "-hide_banner", "-v", "error", "-threads", "1", *_seek(start_s), "-t", f"{duration:.3f}", "-i", f"file:{path}"]
        args += ["-filter_complex", graph, "-filter_complex_threads", "1"]
        args += ["-map", "[out]", "-vsync", "passthrough", "-frames:v", str(count), "-f", "rawvideo", "-pix_fmt", "bgr24", "pipe:1"]
        args += ["-map", "[meas]", "-vsync", "passthrough", "-frames:v", str(count), "-c:v", "rawvideo", "-f", "framecrc", times_path]
        proc = _run(args, decode_timeout(duration), "sampling the clip's frames")
        if proc.returncode != 0:
            raise ClipError(f"could not sample the clip's frames: {cause(_lines(proc.stderr or b''))}")
        times = _pts_seconds(times_path)
    frame_bytes = width * height * 3
    raw = proc.stdout or b""
    n = min(len(raw) // frame_bytes, len(times))
    array = np.frombuffer(raw[: n * frame_bytes], dtype=np.uint8).reshape(n, height, width, 3)
    return [(times[i], array[i]) for i in range(n)]


def _pts_seconds(path: str) -> list[float]:
    """Each frame's presentation time in seconds, from ffmpeg's framecrc lines."""
    num, den, times = 1, 1, []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith("#tb"):
                num, den = (int(x) for x in line.split(":", 1)[1].strip().split("/"))
            elif line.strip() and not line.startswith("#"):
                times.append(round(int(line.split(",")[2]) * num / den, 3))
    return times


def jpeg(frame: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise ClipError("could not encode a frame as JPEG")
    return data.tobytes()


class VideoStage(Stage):
    """Adds the `video` group and the record's video members (`mp4`, or `frame_NNN.jpg`); reads the file
    and the `media` group, not the decoded samples."""

    name = "video"
    group = VIDEO
    config_type = VideoConfig

    def __init__(self, config: VideoConfig | None = None):
        self.config = config or VideoConfig()

    @classmethod
    def from_config(cls, section: VideoConfig | None = None) -> VideoStage:
        return cls(section)

    def model_id(self) -> str:
        """The encoder and its fixed parameters; with the settings, part of the stage's cache address."""
        c = self.config
        if c.mode == "clip":
            return f"{ffmpeg_version()} libx264 preset={PRESET} crf={c.crf} max_side={c.max_side}, aac {c.audio_kbps}k"
        if c.mode == "frames":
            return f"{ffmpeg_version()}, {c.frames} frames, JPEG q{JPEG_QUALITY} (OpenCV {cv2.__version__}) max_side={c.frame_max_side}"
        return "none"

    def provenance(self) -> dict[str, Any]:
        return {"video_encoder": None if self.config.mode == "none" else self.model_id()}

    def process(self, clip: Clip) -> None:
        media = clip.fields.get("media") or {}
        start, end = window(clip, media)
        fields: dict[str, Any] = {f.name: None for f in VIDEO.fields}
        fields.update(mode=self.config.mode, start_s=round(start, 6), end_s=round(end, 6), frames=[])
        if self.config.mode != "none":
            with local_copy(clip.path) as path:  # an object-store input: one file on local disk while it is read
                fields.update(self._clip(clip, path, media, start, end) if self.config.mode == "clip" else self._frames(clip, path, media, start, end))
        clip.fields[self.name] = fields

    def _clip(self, clip: Clip, path: str, media: dict[str, Any], start: float, end: float) -> dict[str, Any]:
        size = frame_size(media["width"], media["height"], self.config.max_side)
        audio = media.get("audio_stream") if media.get("has_audio") else None
        data = encode_clip(path, start, end, size, audio, self.config.crf, self.config.audio_kbps)
        facts = mp4_facts(data)
        if not facts["video_frames"]:
            raise ClipError(f"the clip's MP4 holds no video frame ({start:.3f}-{end:.3f} s)")
        clip.media_files[MP4] = data
        return {**facts, "crf": self.config.crf, "size_bytes": len(data)}

    def _frames(self, clip: Clip, path: str, media: dict[str, Any], start: float, end: float) -> dict[str, Any]:
        width, height = frame_size(media["width"], media["height"], self.config.frame_max_side)
        frames = sample_frames(path, start, end, self.config.frames, (width, height))
        if not frames:
            raise ClipError(f"no frame could be sampled from {start:.3f}-{end:.3f} s")
        total, rows = 0, []
        for i, (t, frame) in enumerate(frames):
            data = jpeg(frame)
            clip.media_files[frame_member(i)] = data
            total += len(data)
            rows.append({"index": i, "time_s": t})
        return {"width": width, "height": height, "size_bytes": total, "frames": rows}


__all__ = ["MP4", "VideoStage", "encode_clip", "ffprobe_mp4_facts", "frame_member", "mp4_facts", "sample_frames", "window"]
