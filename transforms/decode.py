"""Probe and decode each clip once: ffprobe metadata, 16 kHz mono PCM, frames sampled at N fps.

One ffmpeg process demuxes and decodes the file a single time and writes both outputs (the
audio to a temporary file, the frames to a pipe), so nothing downstream touches the video again.
"""

from __future__ import annotations

import io
import os
import tempfile
from typing import Any

import ffmpeg
import numpy as np
import soundfile
from emer_builder.core.hashing import sha256_file
from emer_builder.schemas.v1 import MEDIA
from emer_builder.transforms.clip import Clip, ClipError, Stage

SAMPLE_RATE = 16_000


def _ffmpeg_reason(e: ffmpeg.Error) -> str:
    lines = [ln.strip() for ln in (e.stderr or b"").decode("utf-8", "replace").splitlines() if ln.strip()]
    return lines[-1] if lines else "ffmpeg failed without a message"


def probe_media(path: str) -> dict[str, Any]:
    """The `media` field group (without the sampling fields) from ffprobe and the file bytes."""
    try:
        size = os.path.getsize(path)
    except OSError as e:
        raise ClipError(f"cannot read file: {e.strerror or e}") from None
    if size == 0:
        raise ClipError("file is empty (0 bytes)")
    if not os.access(path, os.R_OK):
        raise ClipError("file is not readable (permission denied)")
    try:
        info = ffmpeg.probe(path)
    except ffmpeg.Error as e:
        raise ClipError(f"not a readable media file: {_ffmpeg_reason(e)}") from None
    streams = info.get("streams", [])
    video = next((s for s in streams if s.get("codec_type") == "video" and not s.get("disposition", {}).get("attached_pic")), None)
    audio = next((s for s in streams if s.get("codec_type") == "audio"), None)
    if video is None:
        raise ClipError("no video stream (audio-only file?)" if audio else "no video or audio stream")
    fmt = info.get("format", {})
    duration = _float(fmt.get("duration")) or _float(video.get("duration")) or (_float(audio.get("duration")) if audio else None)
    if not duration:
        raise ClipError("duration unknown: the file is probably truncated")
    width, height = int(video["width"]), int(video["height"])
    if abs(_rotation(video)) % 180 == 90:  # phone videos: stored sideways, shown upright; ffmpeg autorotates
        width, height = height, width
    return {
        "container": fmt.get("format_name"),
        "size_bytes": size,
        "sha256": sha256_file(path),
        "duration_s": round(duration, 6),
        "video_codec": video.get("codec_name"),
        "width": width,
        "height": height,
        "fps": _rate(video.get("avg_frame_rate")) or _rate(video.get("r_frame_rate")),
        "has_audio": audio is not None,
        "audio_codec": audio.get("codec_name") if audio else None,
        "audio_sample_rate": int(audio["sample_rate"]) if audio and audio.get("sample_rate") else None,
    }


def frame_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """Scaled size that fits `max_side`, keeping the aspect ratio, in even pixels."""
    scale = min(1.0, max_side / max(width, height))
    return max(2, int(width * scale) // 2 * 2), max(2, int(height * scale) // 2 * 2)


def decode(path: str, media: dict[str, Any], sample_fps: float, frame_max_side: int) -> tuple[np.ndarray | None, list[tuple[float, np.ndarray]]]:
    """16 kHz mono float32 audio (None without audio) and BGR frames sampled at `sample_fps`."""
    width, height = frame_size(media["width"], media["height"], frame_max_side)
    src = ffmpeg.input(path)
    video_out = (
        src.video.filter("fps", fps=sample_fps)
        .filter("scale", width, height)
        .output("pipe:", format="rawvideo", pix_fmt="bgr24")
    )
    with tempfile.TemporaryDirectory(prefix="emer-decode-") as tmp:
        pcm_path = os.path.join(tmp, "audio.f32")
        outputs = [video_out]
        if media["has_audio"]:
            outputs.append(src.audio.output(pcm_path, format="f32le", acodec="pcm_f32le", ac=1, ar=SAMPLE_RATE))
        try:
            raw, _ = ffmpeg.merge_outputs(*outputs).global_args("-nostdin", "-v", "error").run(capture_stdout=True, capture_stderr=True)
        except ffmpeg.Error as e:
            raise ClipError(f"decoding failed: {_ffmpeg_reason(e)}") from None
        audio = np.fromfile(pcm_path, dtype="<f4") if media["has_audio"] and os.path.exists(pcm_path) else None
    frame_bytes = width * height * 3
    count = len(raw) // frame_bytes
    array = np.frombuffer(raw[: count * frame_bytes], dtype=np.uint8).reshape(count, height, width, 3)
    frames = [(round(i / sample_fps, 3), array[i]) for i in range(count)]
    if not frames:
        raise ClipError("no video frame could be decoded")
    return audio, frames


def flac_bytes(audio: np.ndarray) -> bytes:
    """FLAC (16-bit) of the 16 kHz mono track: lossless, a third of the PCM size, byte-stable."""
    buf = io.BytesIO()
    soundfile.write(buf, audio, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    return buf.getvalue()


class DecodeStage(Stage):
    """Probe, check length, decode once; fills `media` and the clip's audio, frames and `flac`."""

    name = "decode"
    group = MEDIA

    def __init__(self, sample_fps: float = 2.0, frame_max_side: int = 640, min_duration_s: float = 0.3, max_duration_s: float = 600.0):
        self.sample_fps, self.frame_max_side = sample_fps, frame_max_side
        self.min_duration_s, self.max_duration_s = min_duration_s, max_duration_s

    def process(self, clip: Clip) -> None:
        media = probe_media(clip.path)
        if media["duration_s"] < self.min_duration_s:
            raise ClipError(f"clip is {media['duration_s']:.2f} s long; the minimum is {self.min_duration_s} s (decode.min_duration_s)")
        if media["duration_s"] > self.max_duration_s:
            raise ClipError(f"clip is {media['duration_s']:.0f} s long; the maximum is {self.max_duration_s:.0f} s (decode.max_duration_s): cut it into clips")
        clip.audio, clip.frames = decode(clip.path, media, self.sample_fps, self.frame_max_side)
        if clip.audio is not None and clip.audio.size == 0:
            clip.audio = None
            media["has_audio"] = False  # an audio stream with no decodable samples counts as none
        media["sampled_fps"] = float(self.sample_fps)
        media["frames_sampled"] = len(clip.frames)
        clip.fields["media"] = media
        if clip.audio is not None:
            clip.media_files["flac"] = flac_bytes(clip.audio)


def _rotation(stream: dict[str, Any]) -> int:
    """Display rotation in degrees, from the display matrix side data or the older `rotate` tag."""
    for side in stream.get("side_data_list", []):
        if "rotation" in side:
            return int(float(side["rotation"]))
    return int(float(stream.get("tags", {}).get("rotate", 0) or 0))


def _float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _rate(value: str | None) -> float | None:
    if not value or "/" not in value:
        return None
    num, den = value.split("/")
    return round(int(num) / int(den), 6) if int(den) else None
