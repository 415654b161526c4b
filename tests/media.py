"""Test media made from the real recordings: the bad-input corpus and small variants."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import ffmpeg


def _run(stream) -> None:
    stream.global_args("-nostdin", "-v", "error", "-y").run()


def make_bad_corpus(demo_videos: Path, dest: Path) -> dict[str, tuple[str, str | None]]:
    """Write the bad-input corpus; returns file -> (expected outcome 'record' or failure stage, message part)."""
    dest.mkdir(parents=True, exist_ok=True)
    good = demo_videos / "sample_00000880.mkv"
    photo_clip = demo_videos / "sample_00000870.mp4"
    (dest / "empty.mp4").write_bytes(b"")
    data = (demo_videos / "sample_00000920.mov").read_bytes()
    (dest / "truncated.mp4").write_bytes(data[: len(data) // 3])
    (dest / "notes_renamed.mp4").write_text("these are meeting notes, not a video\n" * 20)
    _run(ffmpeg.output(ffmpeg.input(str(photo_clip)).video, str(dest / "no_audio.mp4"), vcodec="libx264", t=2))
    _run(ffmpeg.output(ffmpeg.input(str(good)).audio, str(dest / "audio_only.mp4"), acodec="aac"))
    silent = ffmpeg.input("anullsrc=r=16000:cl=mono", f="lavfi", t=3)
    _run(ffmpeg.output(ffmpeg.input(str(photo_clip)).video, silent, str(dest / "silence.mp4"), vcodec="libx264", acodec="aac", t=3))
    shutil.copyfile(demo_videos / "no_face_dog.mp4", dest / "no_face.mp4")
    _run(ffmpeg.output(ffmpeg.input(str(good)), str(dest / "tiny.mp4"), vcodec="libx264", acodec="aac", t=0.2))
    os.symlink(dest / "gone-away.mp4", dest / "unreadable.mp4")  # dangling: the target does not exist
    shutil.copyfile(good, dest / "clip.v1.mp4")
    shutil.copyfile(good, dest / "clip_v1.mkv")
    (dest / "readme.txt").write_text("not a video")
    return {
        "empty.mp4": ("decode", "file is empty"),
        "truncated.mp4": ("decode", "not a readable media file: it is cut short or was never finished (mov,mp4,m4a,3gp,3g2,mj2: moov atom not found)"),
        "notes_renamed.mp4": ("decode", "not a readable media file: it is a text file, not a video"),
        "no_audio.mp4": ("record", None),
        "audio_only.mp4": ("decode", "no video stream: it is an audio file (aac)"),
        "silence.mp4": ("record", None),
        "no_face.mp4": ("record", None),
        "tiny.mp4": ("decode", "minimum is 0.3 s"),
        "unreadable.mp4": ("decode", "cannot read file: No such file or directory"),
        "clip.v1.mp4": ("match", "collides with clip_v1.mkv"),
        "clip_v1.mkv": ("match", "collides with clip.v1.mp4"),
    }
