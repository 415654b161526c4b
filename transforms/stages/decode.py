"""Probe and decode each clip once: ffprobe metadata, 16 kHz mono PCM, frames sampled at N fps.

One ffmpeg process demuxes and decodes the file a single time and writes every output: the sampled
frames to a pipe, the chosen audio stream to a temporary file, and one line per decoded video frame
(its time stamp) to a second file, so the clip's real length is measured, not read from the header.

Headers lie (a cut download keeps its full-length index; a remuxed file can claim an hour), so:
decoding stops at the maximum length whatever the header says, the decoded length is what counts,
and a file that ended with read errors well before its declared length is flagged or failed.
Every problem is one `ClipError` line that says what the file is; nothing here can block forever
(special files are refused before they are opened, and every ffmpeg run has a time limit).

A clip whose samples fit `IN_MEMORY_BYTES` (by its header's length) is held in memory, as it always
was; a longer one (an unsegmented episode) is measured in one pass that keeps its audio on disk, and
its frames are decoded again, one at a time, when a stage iterates them (`long_clip`), so memory does
not grow with the length.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import shutil
import stat
import subprocess
import tempfile
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import soundfile
from emer_builder.core.config import DecodeConfig
from emer_builder.core.cpu import run_child
from emer_builder.core.errors import ProcessFault, exit_fault
from emer_builder.core.hashing import sha256_file
from emer_builder.core.urls import local_copy
from emer_builder.schemas.v1 import MEDIA
from emer_builder.transforms.clip import Audio, AudioSource, Clip, ClipError, Frames, Stage
from emer_builder.transforms.keys import display_path

SAMPLE_RATE = 16_000
PROBE_TIMEOUT_S = 60.0  # ffprobe reads headers only; a file that takes longer is not a clip
LIMIT_MARGIN_S = 0.5  # decoding runs this far past the maximum, so a longer file shows that it is longer
LENGTH_SLACK_S = 0.1  # a clip this little over the maximum (a frame's rounding) still passes
SCRATCH_PREFIX = "emer-decode-"  # + the worker's pid: a killed worker's scratch folder is found and removed
# A clip whose sampled frames and audio would take more than this (46 s at 640x360, 2 fps) is not held in
# memory: its audio stays on disk and its frames are streamed from the file (long_clip).
IN_MEMORY_BYTES = 64 * 2**20
AUDIO_BLOCK = 60 * SAMPLE_RATE  # samples a long clip's track is read in (4 MB) where the whole track is not needed at once

# ISO 639-1 codes and the ISO 639-2 tags files carry for them, so `audio_language: zh` finds `chi` or `zho`.
LANGUAGE_TAGS: dict[str, tuple[str, ...]] = {
    "ar": ("ara",),
    "cs": ("ces", "cze"),
    "de": ("deu", "ger"),
    "el": ("ell", "gre"),
    "en": ("eng",),
    "es": ("spa",),
    "fa": ("fas", "per"),
    "fr": ("fra", "fre"),
    "he": ("heb",),
    "hi": ("hin",),
    "id": ("ind",),
    "it": ("ita",),
    "ja": ("jpn",),
    "ko": ("kor",),
    "nl": ("nld", "dut"),
    "pl": ("pol",),
    "pt": ("por",),
    "ro": ("ron", "rum"),
    "ru": ("rus",),
    "sv": ("swe",),
    "th": ("tha",),
    "tr": ("tur",),
    "uk": ("ukr",),
    "vi": ("vie",),
    "yue": ("yue",),
    "zh": ("zho", "chi", "cmn"),
}


@dataclass(frozen=True)
class AudioStream:
    """One audio stream of a file, as ffprobe lists it."""

    number: int  # among the file's audio streams (ffmpeg `a:N`)
    index: int  # among all streams (ffmpeg `0:N`)
    codec: str | None
    language: str | None
    channels: int | None
    sample_rate: int | None
    is_default: bool

    def row(self) -> dict[str, Any]:
        return {"stream": self.number, "codec": self.codec, "language": self.language, "channels": self.channels, "is_default": self.is_default}


@dataclass
class Probe:
    """What the header says: the public media fields, the streams chosen for decoding, the declared length."""

    media: dict[str, Any]
    video_index: int
    audio: AudioStream | None
    other_audio: list[AudioStream]
    declared_duration_s: float | None
    frames_counted: bool = False  # the length comes from a frame count in the header (AVI): a shorter decode is a cut file


@dataclass
class Decoded:
    """What one decoding pass gave: samples, sampled frames, and the measured length of each stream."""

    audio: Audio | None  # 16 kHz mono float32 (a long clip: on disk); None without an audio stream
    frames: Frames  # (time_s, BGR uint8) at the sampling rate (a long clip: streamed from the file)
    video_frames: int  # every decoded video frame, not only the sampled ones
    video_end_s: float  # end of the last decoded video frame
    errors: list[str] = field(default_factory=list)  # what ffmpeg reported while reading (read errors, corrupt data)

    @property
    def audio_s(self) -> float:
        return 0.0 if self.audio is None else len(self.audio) / SAMPLE_RATE

    @property
    def duration_s(self) -> float:
        return max(self.video_end_s, self.audio_s)

    def release(self) -> None:
        """Remove a long clip's scratch files now (a clip that fails its checks keeps nothing on disk)."""
        for source in (self.audio, self.frames):
            getattr(source, "release", lambda: None)()


_CONTEXT = re.compile(rb"^\[([^\]@]+?) @ 0x[0-9a-fA-F]+\] ")


def _lines(data: bytes) -> list[str]:
    """ffmpeg's messages as UTF-8 text lines (a file name in them may hold any bytes), each line's
    `[h264 @ 0x55d0...]` context cut to `h264: ` so the same file always gives the same message."""
    lines = (_CONTEXT.sub(rb"\1: ", ln.strip()) for ln in data.splitlines())
    return [display_path(ln.decode("utf-8", "surrogateescape")) for ln in lines if ln]


# ffmpeg's closing lines after a failure say nothing about the file; the cause comes before them.
_GENERIC = ("error marking filters as finished", "conversion failed", "error while filtering", "nothing was written", "error while processing the decoded data")
# What demuxers say when the data stops before the file's own index or element sizes say it should.
_CUT_SHORT = ("partial file", "ended prematurely", "end of file", "truncat", "moov atom not found")


def cause(lines: list[str], truncated: bool = False) -> str:
    """The most telling of ffmpeg's error lines: the first that says the data ran out (for a cut file),
    else the first that is not a generic closing line."""
    telling = [ln for ln in lines if not any(g in ln.lower() for g in _GENERIC)]
    if truncated:
        telling = [ln for ln in telling if cut_short([ln])] or telling
    return (telling or lines or ["ffmpeg failed without a message"])[0]


def cut_short(lines: list[str]) -> bool:
    """Whether ffmpeg's messages say the data ran out (a cut download or copy), not that it is damaged."""
    return any(m in ln.lower() for ln in lines for m in _CUT_SHORT)


# What ffmpeg says when it cannot write its own output (ENOSPC, EDQUOT, EFBIG): a full scratch disk, not a
# damaged input; the decode would otherwise end early and read as a truncated file.
WRITE_FAULTS = ("No space left on device", "Disk quota exceeded", "File too large")


def check_scratch_written(errors: list[str], scratch: str) -> None:
    """Raise ProcessFault (retried, never a failure row) when ffmpeg could not write to `scratch`."""
    said = next((line for line in errors if any(w in line for w in WRITE_FAULTS)), None)
    if said is not None:
        raise ProcessFault(f"ffmpeg could not write its scratch files in {os.path.dirname(scratch)} ({said}): free space there or set TMPDIR")


def _reason(stderr: bytes, path: str) -> str:
    """ffmpeg's telling message line, without the file name it starts with (the failure row names the file)."""
    line = cause(_lines(stderr))
    for prefix in (f"file:{display_path(path)}: ", f"{display_path(path)}: "):
        if line.startswith(prefix):
            return line[len(prefix) :]
    return line


def _run(args: list[str], timeout_s: float, what: str, stdout: Any = subprocess.PIPE, stderr: Any = subprocess.PIPE) -> subprocess.CompletedProcess:
    """Run an ffmpeg tool; a child stopped from outside (killed by a signal) is a ProcessFault, not a
    fault of the file, so the clip is retried instead of becoming a failure row. Its CPU goes to the
    calling thread's stage (core.cpu.run_child)."""
    try:
        proc = run_child(args, timeout_s, stdout=stdout, stderr=stderr)
    except subprocess.TimeoutExpired:
        raise ClipError(f"{what} took longer than {timeout_s:.0f} s and was stopped") from None
    except FileNotFoundError:
        raise ClipError(f"{args[0]} is not installed (install ffmpeg)") from None
    fault = exit_fault(proc.returncode)
    if fault:
        raise ProcessFault(f"{args[0]} was {fault} while {what}")
    return proc


def _file_kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISFIFO, "a named pipe (FIFO)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISDIR, "a folder"),
    ):
        if test(mode):
            return name
    return "a special file"


def check_file(path: str) -> int:
    """The file's size once it is known to be a readable, non-empty regular file. Pipes and devices are
    refused before anything opens them: reading a FIFO waits for a writer forever, /dev/zero never ends."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise ClipError(f"cannot read file: {e.strerror or e}") from None
    if not stat.S_ISREG(st.st_mode):
        target = f" ({display_path(os.path.realpath(path))}, through a symlink)" if os.path.islink(path) else ""
        raise ClipError(f"not a regular file: {_file_kind(st.st_mode)}{target}, not a video")
    if st.st_size == 0:
        raise ClipError("file is empty (0 bytes)")
    if not os.access(path, os.R_OK):
        raise ClipError("file is not readable (permission denied)")
    return st.st_size


def sniff(path: str) -> str | None:
    """What a file that ffmpeg cannot read holds, from its first bytes (a text file renamed .mp4, a saved error page)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return None
    for magic, what in (
        (b"%PDF", "a PDF document"),
        (b"PK\x03\x04", "a ZIP archive (or an office document)"),
        (b"\x1f\x8b", "a gzip archive"),
        (b"Rar!", "a RAR archive"),
        (b"7z\xbc\xaf", "a 7-Zip archive"),
    ):
        if head.startswith(magic):
            return what
    if b"\x00" in head:
        return None
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < len(head) - 4:  # not just a character cut at the 4096th byte
            return None
        text = head[: e.start].decode("utf-8")
    start = text.lstrip().lower()
    if start.startswith(("<!doctype html", "<html")):
        return "an HTML page (a download that saved an error page?)"
    return "a text file"


def _is_still_image(fmt: dict[str, Any]) -> bool:
    name = fmt.get("format_name") or ""
    return name.endswith("_pipe") or name == "image2"  # ffmpeg's image readers (png_pipe, jpeg_pipe, webp_pipe, ...)


def language_matches(tag: str | None, wanted: str) -> bool:
    """Whether a stream's language tag (`eng`, `chi`) is the wanted language (`en`, `zh`, `zho`)."""
    if not tag:
        return False
    tag, wanted = tag.lower(), wanted.lower()
    codes = {wanted, *LANGUAGE_TAGS.get(wanted, ())}
    codes |= {code for short, tags in LANGUAGE_TAGS.items() if wanted in tags for code in (short, *tags)}
    return tag in codes


def choose_audio(
    streams: list[AudioStream], audio_stream: int | None = None, audio_language: str | None = None
) -> tuple[AudioStream | None, list[AudioStream]]:
    """One audio stream to decode, the others listed: the wanted language, else the wanted number,
    else the default-disposition stream, else the first. Mixing two tracks (a dub over the original)
    would double the length and mix two languages in one transcript."""
    if not streams:
        return None, []
    chosen = None
    if audio_language:
        chosen = next((s for s in streams if language_matches(s.language, audio_language)), None)
    if chosen is None and audio_stream is not None and 0 <= audio_stream < len(streams):
        chosen = streams[audio_stream]
    if chosen is None:
        chosen = next((s for s in streams if s.is_default), streams[0])
    return chosen, [s for s in streams if s is not chosen]


def probe(path: str, audio_stream: int | None = None, audio_language: str | None = None) -> Probe:
    """Check the file, read its header with ffprobe, choose the streams to decode."""
    size = check_file(path)
    proc = _run(["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams", f"file:{path}"], PROBE_TIMEOUT_S, "reading the header")
    if proc.returncode != 0:
        what, reason = sniff(path), _reason(proc.stderr, path)
        if what:
            raise ClipError(f"not a readable media file: it is {what}, not a video")
        if cut_short([reason]):
            raise ClipError(f"not a readable media file: it is cut short or was never finished ({reason})")
        raise ClipError(f"not a readable media file: {reason}")
    try:
        info = json.loads(proc.stdout.decode("utf-8", "replace"))
    except ValueError:
        raise ClipError("not a readable media file: ffprobe gave no readable answer") from None
    fmt = info.get("format", {})
    streams = info.get("streams", [])
    video = next((s for s in streams if s.get("codec_type") == "video" and not s.get("disposition", {}).get("attached_pic")), None)
    audios = [
        AudioStream(
            number=n,
            index=int(s["index"]),
            codec=s.get("codec_name"),
            language=_language(s),
            channels=_int(s.get("channels")),
            sample_rate=_int(s.get("sample_rate")),
            is_default=bool(s.get("disposition", {}).get("default")),
        )
        for n, s in enumerate(s for s in streams if s.get("codec_type") == "audio")
    ]
    if video is not None and _is_still_image(fmt):
        raise ClipError(f"not a video: it is a still image ({(video.get('codec_name') or 'image').upper()}, {video.get('width')}x{video.get('height')})")
    if video is None:
        if audios:
            cover = any(s.get("disposition", {}).get("attached_pic") for s in streams)
            raise ClipError(f"no video stream: it is an audio file ({audios[0].codec}{', with cover art' if cover else ''})")
        raise ClipError("no video or audio stream")
    if not video.get("width") or not video.get("height"):
        raise ClipError(f"video stream has no frame size ({video.get('codec_name')}): the file is probably damaged")
    audio, others = choose_audio(audios, audio_stream, audio_language)
    declared = _float(fmt.get("duration")) or _float(video.get("duration")) or (_float(_stream(streams, audio.index).get("duration")) if audio else None)
    counted = header_frames_s(fmt, video)
    if counted is not None:  # AVI: ffprobe's duration is what the data holds; the header's frame count is what was written
        declared = max(declared or 0.0, counted)
    width, height = int(video["width"]), int(video["height"])
    if abs(_rotation(video)) % 180 == 90:  # phone videos: stored sideways, shown upright; ffmpeg autorotates
        width, height = height, width
    media = {
        "container": fmt.get("format_name"),
        "size_bytes": size,
        "sha256": sha256_file(path),
        "duration_s": round(declared, 6) if declared else None,
        "video_codec": video.get("codec_name"),
        "width": width,
        "height": height,
        "fps": _rate(video.get("avg_frame_rate")) or _rate(video.get("r_frame_rate")),
        "has_audio": audio is not None,
        "audio_codec": audio.codec if audio else None,
        "audio_sample_rate": audio.sample_rate if audio else None,
        "audio_stream": audio.number if audio else None,
        "audio_language": audio.language if audio else None,
        "other_audio_streams": [s.row() for s in others],
    }
    return Probe(media, int(video["index"]), audio, others, round(declared, 6) if declared else None, counted is not None)


def header_frames_s(fmt: dict[str, Any], video: dict[str, Any]) -> float | None:
    """An AVI header's own length, its video frame count over the frame rate; None for other containers
    (their durations come from an index the demuxer reads, which ffprobe reports)."""
    if "avi" not in (fmt.get("format_name") or "").split(","):
        return None
    frames, rate = _int(video.get("nb_frames")), _rate(video.get("avg_frame_rate")) or _rate(video.get("r_frame_rate"))
    return round(frames / rate, 6) if frames and rate else None


def probe_media(path: str, audio_stream: int | None = None, audio_language: str | None = None) -> dict[str, Any]:
    """The `media` fields the header gives (before decoding measures the length)."""
    return probe(path, audio_stream, audio_language).media


def frame_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """Scaled size that fits `max_side`, keeping the aspect ratio, in even pixels."""
    scale = min(1.0, max_side / max(width, height))
    return max(2, int(width * scale) // 2 * 2), max(2, int(height * scale) // 2 * 2)


def decode_timeout(limit_s: float | None) -> float:
    """Time allowed for one decoding pass: generous (slow codecs decode below real time), but finite."""
    return 120.0 + 4.0 * (limit_s if limit_s is not None else 600.0)


class Overflow(Exception):
    """The clip holds more samples than `decode` was allowed to keep in memory (its header said less)."""


def decode(
    path: str, info: Probe, sample_fps: float, frame_max_side: int, limit_s: float | None = None, start_s: float | None = None, max_bytes: int | None = None
) -> Decoded:
    """Decode the chosen streams once, reading at most `limit_s` seconds of the file from `start_s` (an
    utterance of a long video: ffmpeg seeks there, so memory depends on the window, not the file):
    16 kHz mono audio, frames sampled at `sample_fps`, and the time stamps of every decoded video frame
    (relative to the window's start). With `max_bytes`, frames or audio beyond it raise Overflow
    instead of being held (the frames output stops there; the length is still measured)."""
    width, height = frame_size(info.media["width"], info.media["height"], frame_max_side)
    frame_bytes = width * height * 3
    cap = ["-frames:v", str(max_bytes // frame_bytes + 1)] if max_bytes is not None else []
    graph = f"[0:{info.video_index}]split=2[s][m];[s]fps=fps={sample_fps!r},scale={width}:{height}[out];[m]scale=2:2:flags=neighbor,format=gray[meas]"
    limit = (["-ss", f"{start_s:.3f}"] if start_s else []) + (["-t", f"{limit_s:.3f}"] if limit_s is not None else [])
    with tempfile.TemporaryDirectory(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-") as tmp:
        times_path, pcm_path, err_path = (os.path.join(tmp, n) for n in ("frames.crc", "audio.f32", "stderr.txt"))
        # one decoding thread and one filter thread: the parallelism is the workers' (as for Whisper and
        # YuNet), and each frame thread would hold its own frame buffers (ffmpeg's default is one per core)
        args = ["ffmpeg", "-nostdin", "-hide_banner", "-v", "error", "-threads", "1", *limit, "-i", f"file:{path}", "-filter_complex", graph, "-filter_complex_threads", "1"]
        args += ["-map", "[out]", *cap, "-f", "rawvideo", "-pix_fmt", "bgr24", "pipe:1"]
        args += ["-map", "[meas]", "-c:v", "rawvideo", "-f", "framecrc", times_path]
        if info.audio is not None:
            args += ["-map", f"0:{info.audio.index}", "-ac", "1", "-ar", str(SAMPLE_RATE), "-c:a", "pcm_f32le", "-f", "f32le", pcm_path]
        with open(err_path, "wb") as err:
            proc = _run(args, decode_timeout(limit_s), "decoding", stderr=err)
        stderr = _tail(err_path)
        check_scratch_written(_lines(stderr), tmp)
        video_frames, video_end = _frame_times(times_path)
        has_pcm = info.audio is not None and os.path.exists(pcm_path)
        if max_bytes is not None and ((has_pcm and os.path.getsize(pcm_path) > max_bytes) or len(proc.stdout or b"") > max_bytes):
            raise Overflow(f"more than {max_bytes} bytes of samples")
        audio = np.fromfile(pcm_path, dtype="<f4") if has_pcm else None
    raw = proc.stdout or b""
    count = len(raw) // frame_bytes
    array = np.frombuffer(raw[: count * frame_bytes], dtype=np.uint8).reshape(count, height, width, 3)
    frames = [(round(i / sample_fps, 3), array[i]) for i in range(count)]
    errors = _lines(stderr)
    if proc.returncode != 0 and not errors:
        errors = [f"ffmpeg exited with status {proc.returncode}"]
    if not frames and video_frames:
        frames = _first_frame(path, info, width, height)  # too few frames for the sampling rate (one still frame)
    return Decoded(audio, frames, video_frames, video_end, errors)


def runs_past(path: str, info: Probe, seconds: float) -> bool:
    """Whether the file holds any video or audio at or after `seconds`: a seek there and one second of
    decoding, so a genuinely long file is refused at once instead of after decoding up to the limit."""
    args = ["ffmpeg", "-nostdin", "-hide_banner", "-v", "error", "-ss", f"{seconds:.3f}", "-t", "1", "-i", f"file:{path}", "-map", f"0:{info.video_index}"]
    if info.audio is not None:
        args += ["-map", f"0:{info.audio.index}", "-c:a", "pcm_s16le"]
    args += ["-vf", "scale=2:2:flags=neighbor", "-c:v", "rawvideo", "-f", "framecrc", "pipe:1"]
    proc = _run(args, PROBE_TIMEOUT_S, "checking the length")
    return any(line and not line.startswith(b"#") for line in proc.stdout.splitlines())


def _first_frame(path: str, info: Probe, width: int, height: int) -> list[tuple[float, np.ndarray]]:
    args = ["ffmpeg", "-nostdin", "-hide_banner", "-v", "error", "-i", f"file:{path}", "-map", f"0:{info.video_index}", "-frames:v", "1"]
    args += ["-vf", f"scale={width}:{height}", "-f", "rawvideo", "-pix_fmt", "bgr24", "pipe:1"]
    raw = _run(args, PROBE_TIMEOUT_S, "decoding the first frame").stdout or b""
    if len(raw) < width * height * 3:
        return []
    return [(0.0, np.frombuffer(raw[: width * height * 3], dtype=np.uint8).reshape(height, width, 3))]


def _frame_times(path: str) -> tuple[int, float]:
    """Decoded video frames and the end of the last one, from ffmpeg's framecrc lines (`stream, dts, pts, duration, ...`)."""
    if not os.path.exists(path):
        return 0, 0.0
    num, den, count, end = 1, 1, 0, 0.0
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith("#tb"):
                num, den = (int(x) for x in line.split(":", 1)[1].strip().split("/"))
            elif line.strip() and not line.startswith("#"):
                cells = [c.strip() for c in line.split(",")]
                try:
                    pts, duration = int(cells[2]), int(cells[3])
                except (IndexError, ValueError):
                    continue  # not a frame line (ffmpeg never writes one, but a bad line must not fail the clip)
                count += 1
                end = max(end, (pts + max(1, duration)) * num / den)
    return count, round(end, 6)


def _tail(path: str, limit: int = 16_384) -> bytes:
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - limit))
        return f.read()


def remove_stale_scratch(root: str | None = None) -> list[str]:
    """Remove the decode scratch folders of processes that no longer run (a worker killed with -9 leaves
    its folder behind); folders of live processes are left alone. Returns what was removed."""
    root = root or tempfile.gettempdir()
    removed = []
    try:
        names = [n for n in os.listdir(root) if n.startswith(SCRATCH_PREFIX)]
    except OSError:
        return removed
    for name in names:
        pid = name[len(SCRATCH_PREFIX) :].split("-", 1)[0]
        if not pid.isdigit() or _alive(int(pid)):
            continue
        shutil.rmtree(os.path.join(root, name), ignore_errors=True)
        removed.append(name)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def flac_bytes(audio: Audio) -> bytes:
    """FLAC (16-bit) of the 16 kHz mono track: lossless, a third of the PCM size, byte-stable. A long
    clip's track is encoded block by block from disk (the same bytes as from one array)."""
    buf = io.BytesIO()
    if not isinstance(audio, AudioSource):
        soundfile.write(buf, audio, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
        return buf.getvalue()
    with soundfile.SoundFile(buf, "w", SAMPLE_RATE, 1, "PCM_16", format="FLAC") as out:
        for start in range(0, len(audio), AUDIO_BLOCK):
            out.write(audio.read(start, start + AUDIO_BLOCK))
    return buf.getvalue()


def length_slack(declared_s: float) -> float:
    """How far the decoded length may differ from the header's and still count as agreeing."""
    return max(0.5, 0.05 * declared_s)


class DecodeStage(Stage):
    """Probe, decode once (bounded by the maximum length), measure, check; fills `media` and the clip's
    audio, frames and `flac`."""

    name = "decode"
    group = MEDIA
    config_type = DecodeConfig  # its keys are this constructor's arguments, checked with the config

    def __init__(
        self,
        sample_fps: float = 2.0,
        frame_max_side: int = 640,
        min_duration_s: float = 0.3,
        max_duration_s: float = 14400.0,
        audio_stream: int | None = None,
        audio_language: str | None = None,
        min_decoded_fraction: float = 0.5,
    ):
        self.sample_fps, self.frame_max_side = sample_fps, frame_max_side
        self.min_duration_s, self.max_duration_s = min_duration_s, max_duration_s
        self.audio_stream, self.audio_language = audio_stream, audio_language
        self.min_decoded_fraction = min_decoded_fraction

    @classmethod
    def from_config(cls, section: DecodeConfig | None = None) -> DecodeStage:
        return cls(**asdict(section or DecodeConfig()))

    def setup(self) -> None:
        remove_stale_scratch()

    def process(self, clip: Clip) -> None:
        with local_copy(clip.path) as path:  # an object-store input: one clip on local disk while it decodes
            self._decode(clip, path)

    def _decode(self, clip: Clip, path: str) -> None:
        info = probe(path, self.audio_stream, self.audio_language)
        if clip.start_s is not None and clip.end_s is not None:  # an utterance: only its window is decoded
            declared = round(clip.end_s - clip.start_s, 6)
            d = self._samples(path, clip.path, info, declared, clip.start_s, declared)
            limit = declared
        else:
            declared, limit = info.declared_duration_s, self.max_duration_s
            if declared is not None and declared > limit + LENGTH_SLACK_S and runs_past(path, info, limit + LENGTH_SLACK_S):
                raise ClipError(f"clip is longer than the maximum of {limit:g} s (decode.max_duration_s; its header says {declared:.0f} s): cut it into clips")
            d = self._samples(path, clip.path, info, limit + LIMIT_MARGIN_S, None, declared)
        try:
            self._fill(clip, info, d, declared, limit)
        except BaseException:
            d.release()
            raise

    def _samples(self, path: str, location: str, info: Probe, limit_s: float, start_s: float | None, expected_s: float | None) -> Decoded:
        """Held in memory when the header's length says the samples fit IN_MEMORY_BYTES (and they do:
        a header that says less than half of what the file holds gets it decoded again), else the
        long path: audio on disk, frames streamed from the file (long_clip)."""
        width, height = frame_size(info.media["width"], info.media["height"], self.frame_max_side)
        per_second = self.sample_fps * width * height * 3 + 4 * SAMPLE_RATE
        if expected_s is None or expected_s * per_second <= IN_MEMORY_BYTES:
            try:
                return decode(path, info, self.sample_fps, self.frame_max_side, limit_s=limit_s, start_s=start_s, max_bytes=2 * IN_MEMORY_BYTES)
            except Overflow:
                pass
        from emer_builder.transforms.stages.long_clip import decode_long  # it builds on this module

        return decode_long(path, location, info, self.sample_fps, self.frame_max_side, limit_s, start_s)

    def _fill(self, clip: Clip, info: Probe, d: Decoded, declared: float | None, limit: float) -> None:
        """Check what decoding measured against the header and the limits; fill `media` and the samples."""
        decoded = round(d.duration_s, 6)
        # a window's decoding stops at its end (-t): it is longer only by its last frame's duration, a
        # whole frame (0.2 s at 5 fps), which is not a file longer than the maximum
        if clip.start_s is None and decoded > limit + LENGTH_SLACK_S:
            said = f"; its header says only {declared:g} s" if declared is not None else ""
            raise ClipError(f"clip is longer than the maximum of {limit:g} s (decode.max_duration_s): decoding stopped there{said}; cut it into clips")
        fraction = round(decoded / declared, 4) if declared else None
        short = declared is not None and declared - decoded > length_slack(declared)
        # a window the file does not fill is cut short too, and so is an AVI holding fewer frames than its header counts
        truncated = short and (bool(d.errors) or clip.start_s is not None or info.frames_counted)
        if not d.video_frames:
            if truncated and cut_short(d.errors):
                raise ClipError(
                    f"file is truncated: no video frame could be decoded from its declared {declared:.2f} s (ffmpeg: {cause(d.errors, truncated=True)})"
                )
            raise ClipError(f"no video frame could be decoded{': ' + cause(d.errors) if d.errors else ''}")
        if truncated and fraction is not None and fraction < self.min_decoded_fraction:
            raise ClipError(
                f"file is truncated: only {decoded:.2f} s of its declared {declared:.2f} s could be decoded ({fraction:.0%}, "
                f"below decode.min_decoded_fraction {self.min_decoded_fraction:g}; ffmpeg: {cause(d.errors, truncated=True)})"
            )
        if decoded < self.min_duration_s:
            raise ClipError(f"clip is {decoded:.2f} s long; the minimum is {self.min_duration_s:g} s (decode.min_duration_s)")
        if not d.frames:
            raise ClipError(f"no video frame could be decoded at {self.sample_fps:g} fps ({d.video_frames} frames in the stream)")
        media = dict(info.media)
        agrees = declared is not None and abs(declared - decoded) <= length_slack(declared)
        media["duration_s"] = declared if agrees and not info.other_audio else decoded  # the container's length may be an unused stream's
        clip.audio, clip.frames = d.audio, d.frames
        if clip.audio is not None and len(clip.audio) == 0:
            clip.audio = None
            media["has_audio"] = False  # an audio stream with no decodable samples counts as none
        media["sampled_fps"] = float(self.sample_fps)
        media["frames_sampled"] = len(clip.frames)
        media["declared_duration_s"] = declared
        media["decoded_duration_s"] = decoded
        media["decoded_fraction"] = fraction
        media["truncated"] = truncated
        clip.fields["media"] = media
        if clip.audio is not None:
            clip.media_files["flac"] = flac_bytes(clip.audio)


def _stream(streams: list[dict[str, Any]], index: int) -> dict[str, Any]:
    return next((s for s in streams if s.get("index") == index), {})


def _language(stream: dict[str, Any]) -> str | None:
    tag = (stream.get("tags") or {}).get("language")
    return None if not tag or tag.lower() in ("und", "unk", "mis", "zxx") else tag.lower()


def _rotation(stream: dict[str, Any]) -> int:
    """Display rotation in degrees, from the display matrix side data or the older `rotate` tag."""
    for side in stream.get("side_data_list", []):
        if "rotation" in side:
            return int(float(side["rotation"]))
    return int(float(stream.get("tags", {}).get("rotate", 0) or 0))


def _float(value: Any) -> float | None:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) and f > 0 else None


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _rate(value: str | None) -> float | None:
    if not value or "/" not in value:
        return None
    num, den = value.split("/")
    return round(int(num) / int(den), 6) if int(den) else None
