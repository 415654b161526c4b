"""Test media for segmentation, made with ffmpeg from the demo corpus's real speech: an "episode" with
speech, a silent gap and more speech; subtitle files in each format; a video with an embedded subtitle stream."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

# Where the speech lies in `make_episode`'s output: LibriVox reading, silence, the ALSA "Front Center" prompt.
FIRST_SPEECH = (0.0, 5.0)  # sample_00000880's audio (5.0 s)
GAP = (5.0, 7.5)  # digital silence
SECOND_SPEECH = (7.5, 10.9)  # no_face_dog's audio (3.4 s)
EPISODE_S = 10.9


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True)


def make_episode(demo_videos: Path, dest: Path) -> Path:
    """A ~10.9 s video: gray frames at 10 fps; audio = real speech (5 s), 2.5 s of silence, real speech (3.4 s)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    _ffmpeg(
        "-i", str(demo_videos / "sample_00000880.mkv"),
        "-i", str(demo_videos / "no_face_dog.mp4"),
        "-f", "lavfi", "-i", f"color=c=gray:s=320x240:r=10:d={EPISODE_S}",
        "-filter_complex",
        "[0:a]aresample=16000,aformat=channel_layouts=mono,apad,atrim=0:5,asetpts=N/SR/TB[a0];"
        "anullsrc=r=16000:cl=mono,atrim=0:2.5[gap];"
        "[1:a]aresample=16000,aformat=channel_layouts=mono,apad,atrim=0:3.4,asetpts=N/SR/TB[a1];"
        "[a0][gap][a1]concat=n=3:v=0:a=1[a]",
        "-map", "2:v", "-map", "[a]", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest",
        str(dest),
    )  # fmt: skip
    return dest


def make_silent_video(dest: Path, seconds: float = 3.0, audio: bool = True, fps: int = 10, size: str = "160x120") -> Path:
    """Gray frames, with a silent audio track (or none); at fps=1 and a tiny size even a 20-minute "episode" takes a second."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    args = ["-f", "lavfi", "-i", f"color=c=gray:s={size}:r={fps}:d={seconds}"]
    if audio:
        args += ["-f", "lavfi", "-i", f"anullsrc=r=8000:cl=mono:d={seconds}", "-c:a", "aac", "-b:a", "8k"]
    _ffmpeg(*args, "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-shortest", str(dest))
    return dest


def _srt_time(s: float) -> str:
    ms = round(s * 1000)
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"


def write_srt(path: Path, cues: Sequence[tuple[float, float, str]], crlf: bool = False) -> Path:
    blocks = [f"{n}\n{_srt_time(s)} --> {_srt_time(e)}\n{text}\n" for n, (s, e, text) in enumerate(cues, 1)]
    body = "\n".join(blocks)
    path.write_bytes(body.replace("\n", "\r\n").encode() if crlf else body.encode())
    return path


def write_vtt(path: Path, cues: Sequence[tuple[float, float, str]]) -> Path:
    blocks = [f"{_srt_time(s).replace(',', '.')} --> {_srt_time(e).replace(',', '.')}\n{text}\n" for s, e, text in cues]
    path.write_text("WEBVTT\n\n" + "\n".join(blocks), encoding="utf-8")
    return path


def write_ass(path: Path, cues: Sequence[tuple[float, float, str, str]]) -> Path:
    """ASS with a speaker (`Name`) per event and an override tag in the text."""

    def t(s: float) -> str:
        cs = round(s * 100)
        return f"{cs // 360000}:{cs // 6000 % 60:02d}:{cs // 100 % 60:02d}.{cs % 100:02d}"

    lines = [
        "[Script Info]",
        "ScriptType: v4.00+",
        "",
        "[V4+ Styles]",
        "Format: Name, Fontname, Fontsize, PrimaryColour, SecondaryColour, OutlineColour, BackColour, Bold, Italic, Underline, StrikeOut, "
        "ScaleX, ScaleY, Spacing, Angle, BorderStyle, Outline, Shadow, Alignment, MarginL, MarginR, MarginV, Encoding",
        "Style: Default,Arial,20,&H00FFFFFF,&H000000FF,&H00000000,&H00000000,0,0,0,0,100,100,0,0,1,2,2,2,10,10,10,1",
        "",
        "[Events]",
        "Format: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text",
    ]
    lines += [f"Dialogue: 0,{t(s)},{t(e)},Default,{who},0,0,0,,{{\\i1}}{text}{{\\i0}}" for s, e, who, text in cues]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def embed_subtitles(video: Path, srt: Path, dest: Path, language: str = "eng") -> Path:
    """The video with the SRT muxed in as a subtitle stream (mov_text in .mp4, subrip in .mkv)."""
    codec = "mov_text" if dest.suffix == ".mp4" else "srt"
    _ffmpeg(
        "-i",
        str(video),
        "-i",
        str(srt),
        "-map",
        "0",
        "-map",
        "1",
        "-c:v",
        "copy",
        "-c:a",
        "copy",
        "-c:s",
        codec,
        "-metadata:s:s:0",
        f"language={language}",
        str(dest),
    )
    return dest
