"""The hostile-input corpus: every kind of input that once crashed, hung, lied or vanished, made at
test time with ffmpeg from the demo corpus's real recordings (nothing large is committed).

`make_hostile_corpus` writes it and returns what each input must become: a record (with facts about
its `media` group) or a failure row of a given stage whose message holds a given fragment, plus the
entries the build must list as skipped. It includes the earlier bad-input corpus (tests/media.py).
Build it with `decode.max_duration_s` = MAX_DURATION_S so that the long files stay small.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.media import make_bad_corpus

MAX_DURATION_S = 20.0  # the build's decode.max_duration_s: the "long" files are 30 s, not 12 minutes
KPA = "usr/share/kphotoalbum/demo"
LIBRIVOX = "usr/share/pocketsphinx/test/data/librivox/sense_and_sensibility_01_austen_64kb-{}.wav"


@dataclass(frozen=True)
class Expect:
    """What one input must become: `record`, or the failure stage (`decode`, `match`) with a message fragment."""

    outcome: str
    message: str | None = None
    media: dict[str, Any] = field(default_factory=dict)  # media field -> value a record must hold (floats: within 0.3)
    kind: str = ""  # which hostile class it stands for (for the count in the report)
    key: str | None = None  # the record's key where the test pins it


@dataclass
class HostileCorpus:
    videos: Path
    expected: dict[str, Expect]  # source_path as the build writes it (display form) -> outcome
    skipped: list[str]  # entries the build must list as skipped, as it lists them
    skipped_kinds: dict[str, str] = field(default_factory=dict)  # skipped entry -> the hostile class it stands for

    def kinds(self) -> set[str]:
        return {e.kind for e in self.expected.values() if e.kind} | set(self.skipped_kinds.values())


def run_ffmpeg(*args: str | Path) -> None:
    """ffmpeg quietly, overwriting, failing loudly (a test corpus that did not build is a test error)."""
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *map(str, args)], check=True)


def patch_mkv_duration(path: Path, seconds: float) -> None:
    """Rewrite the Segment Info Duration (EBML id 0x4489, an 8-byte float in milliseconds) of an ffmpeg-made
    Matroska file: the header then claims `seconds` whatever the file holds."""
    data = bytearray(path.read_bytes())
    at = data.find(b"\x44\x89\x88")
    assert at > 0, "no 8-byte Duration element"
    data[at + 3 : at + 11] = struct.pack(">d", seconds * 1000)
    path.write_bytes(bytes(data))


def patch_mp4_duration(path: Path, seconds: float) -> None:
    """Rewrite the movie header (mvhd, version 0) duration of an MP4: ffprobe's format duration follows it."""
    data = bytearray(path.read_bytes())
    at = data.find(b"mvhd")
    assert at > 0 and data[at + 4] == 0, "no version-0 mvhd box"
    timescale = struct.unpack(">I", data[at + 16 : at + 20])[0]
    data[at + 20 : at + 24] = struct.pack(">I", int(seconds * timescale))
    path.write_bytes(bytes(data))


def cut(src: Path, dest: Path, fraction: float) -> None:
    data = src.read_bytes()
    dest.write_bytes(data[: int(len(data) * fraction)])


def _speech(root: Path, utterance: str) -> Path:
    """A LibriVox reading from pocketsphinx-testdata (public domain), 16 kHz mono."""
    return root / LIBRIVOX.format(utterance)


def make_media(demo_videos: Path, work: Path) -> dict[str, Path]:
    """The small real files the corpus is made of (each a few hundred KB at most)."""
    work.mkdir(parents=True, exist_ok=True)
    root = demo_videos.parent / "root"
    jesper = demo_videos / "jesper_intro.avi"  # 4.5 s film of a man speaking, 160x120
    photo = root / KPA / "new_wave_2.jpg"
    m = {
        name: work / name
        for name in (
            "short.mp4",
            "film9.mkv",
            "film9_faststart.mp4",
            "film30.mkv",
            "dual_audio.mkv",
            "photo.png",
            "single_frame.mp4",
            "still_5s.mp4",
            "cover_art.mp4",
        )
    }
    run_ffmpeg("-i", jesper, "-t", "1", "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", m["short.mp4"])
    run_ffmpeg("-stream_loop", "1", "-i", jesper, "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", m["film9.mkv"])
    run_ffmpeg("-stream_loop", "1", "-i", jesper, "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", "-movflags", "+faststart", m["film9_faststart.mp4"])
    run_ffmpeg("-stream_loop", "6", "-i", jesper, "-t", "30", "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", m["film30.mkv"])
    # A photo with two speech tracks: an English one first, then the default one (tagged French).
    run_ffmpeg(
        *("-loop", "1", "-framerate", "25", "-t", "3.5", "-i", photo),
        *("-i", _speech(root, "0880"), "-i", _speech(root, "0930")),
        *("-map", "0:v", "-map", "1:a", "-map", "2:a", "-vf", "scale=320:-2", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"),
        *("-c:a", "aac", "-metadata:s:a:0", "language=eng", "-metadata:s:a:1", "language=fra", "-disposition:a:0", "0", "-disposition:a:1", "default"),
        m["dual_audio.mkv"],
    )
    run_ffmpeg("-i", photo, "-vf", "scale=320:-2", m["photo.png"])
    # One video frame (shown for 0.04 s) and 3 s of speech; and one frame that lasts 5 s, no audio.
    run_ffmpeg(
        "-i",
        photo,
        "-i",
        _speech(root, "0880"),
        "-map",
        "0:v",
        "-map",
        "1:a",
        "-vf",
        "scale=320:-2",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "aac",
        m["single_frame.mp4"],
    )
    run_ffmpeg("-framerate", "1/5", "-i", photo, "-vf", "scale=320:-2", "-c:v", "libx264", "-pix_fmt", "yuv420p", m["still_5s.mp4"])
    run_ffmpeg(
        "-i",
        _speech(root, "0880"),
        "-i",
        photo,
        "-map",
        "0:a",
        "-map",
        "1:v",
        "-c:a",
        "aac",
        "-c:v",
        "mjpeg",
        "-disposition:v",
        "attached_pic",
        m["cover_art.mp4"],
    )
    return m


def make_hostile_corpus(demo_videos: Path, dest: Path) -> HostileCorpus:
    """Write the corpus under dest/videos (plus dest/outside, which links in videos/ point to: not followed)."""
    videos, outside, work = dest / "videos", dest / "outside", dest / "work"
    m = make_media(demo_videos, work)
    expected: dict[str, Expect] = {}
    for name, (outcome, message) in make_bad_corpus(demo_videos, videos).items():
        expected[name] = Expect(outcome, message, kind="bad-input corpus")

    # 1. File and folder names: bytes that are not UTF-8, control and direction characters, shell and
    #    printf syntax, emoji only, a 200-byte name; and two names equal after Unicode normalisation.
    names = {
        b"caf\xe9.mp4": ("caf\\xe9.mp4", "caf_xe9"),
        b"d\xe9j\xe0/\xff\xfe.mkv": ("d\\xe9j\\xe0/\\xff\\xfe.mkv", "d_xe9j_xe0__xff_xfe"),
        b"line\nbreak.mp4": ("line\\x0abreak.mp4", "line_x0abreak"),
        "\u202egnp.mp4".encode(): ("\\u202egnp.mp4", "u202egnp"),
        b"-rf $(reboot) %d;.mp4": ("-rf $(reboot) %d;.mp4", "-rf__reboot__d"),
        "😀.mp4".encode(): ("😀.mp4", None),
        "🎉.mp4".encode(): ("🎉.mp4", None),
        b"n" * 200 + b".mp4": ("n" * 200 + ".mp4", None),
    }
    for raw, (shown, key) in names.items():
        path = os.path.join(os.fsencode(videos), raw)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        shutil.copyfile(m["short.mp4"], path)
        expected[shown] = Expect("record", media={"frames_sampled": 2, "duration_s": 1.0}, kind="file name", key=key)
    composed, decomposed = "\u00e9t\u00e9.mp4", "e\u0301te\u0301.mp4"
    for name, other in ((composed, decomposed), (decomposed, composed)):
        shutil.copyfile(m["short.mp4"], videos / name)
        expected[name] = Expect("match", f"collides with {other}", kind="file name")

    # 2. Two audio streams: the default-disposition one is decoded, the other listed.
    shutil.copyfile(m["dual_audio.mkv"], videos / "dual_audio.mkv")
    other = {"stream": 0, "codec": "aac", "language": "eng", "channels": 1, "is_default": False}
    expected["dual_audio.mkv"] = Expect(
        "record", media={"audio_stream": 1, "audio_language": "fra", "other_audio_streams": [other], "duration_s": 3.5}, kind="two audio streams"
    )

    # 3. Headers that lie about the length, and one that is simply too long.
    shutil.copyfile(m["film30.mkv"], videos / "long_30s.mkv")
    expected["long_30s.mkv"] = Expect(
        "decode", f"longer than the maximum of {MAX_DURATION_S:g} s (decode.max_duration_s; its header says 30 s)", kind="too long"
    )
    shutil.copyfile(m["film30.mkv"], videos / "header_says_5s.mkv")
    patch_mkv_duration(videos / "header_says_5s.mkv", 5.0)
    expected["header_says_5s.mkv"] = Expect("decode", "decoding stopped there; its header says only 5 s", kind="header too short")
    shutil.copyfile(m["film9.mkv"], videos / "header_says_3600s.mkv")
    patch_mkv_duration(videos / "header_says_3600s.mkv", 3600.0)
    expected["header_says_3600s.mkv"] = Expect("record", media={"declared_duration_s": 3600.0, "duration_s": 9.1, "truncated": False}, kind="header too long")

    # 4. A faststart MP4 cut in its media data: flagged when most of it decodes, a failure when little does.
    cut(m["film9_faststart.mp4"], videos / "cut_at_75pc.mp4", 0.75)
    expected["cut_at_75pc.mp4"] = Expect("record", media={"truncated": True, "declared_duration_s": 9.07}, kind="truncated")
    cut(m["film9_faststart.mp4"], videos / "cut_at_25pc.mp4", 0.25)
    expected["cut_at_25pc.mp4"] = Expect("decode", "file is truncated: only", kind="truncated")
    # An AVI cut at 60 %: ffprobe's duration only says what the data holds; the header's frame count
    # says 4.53 s, so it is flagged (it once passed as whole, decoded_fraction 1.1).
    cut(demo_videos / "jesper_intro.avi", videos / "avi_truncated.avi", 0.6)
    expected["avi_truncated.avi"] = Expect("record", media={"truncated": True, "declared_duration_s": 4.53}, kind="truncated AVI")

    # 6. Symlinked folders inside the input folder: followed once; a loop and a second link to the same
    #    folder are listed, not walked.
    (videos / ".shelf").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(m["short.mp4"], videos / ".shelf" / "shelved.mp4")
    os.symlink(".shelf", videos / "linked")
    os.symlink(".shelf", videos / "linked_again")
    os.symlink(".", videos / "loop")
    os.symlink("/nonexistent/folder", videos / "dangling")
    expected["linked/shelved.mp4"] = Expect("record", media={"frames_sampled": 2}, kind="symlinked folder")

    # 7. Links that leave the input folder (its parent, the root of the file system, a folder or a clip
    #    elsewhere): listed as skipped with the reason, never walked (follow_external_links: false).
    outside.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(m["short.mp4"], outside / "outside.mp4")
    os.symlink("..", videos / "up")
    os.symlink("/", videos / "rootlink")
    os.symlink(outside, videos / "elsewhere")
    os.symlink(outside / "outside.mp4", videos / "outside_clip.mp4")
    leaves = "outside the input folder: not followed; set follow_external_links: true to include it"
    real = os.path.realpath
    skipped_kinds = {
        f"up/ (symlink to {real(dest)}, {leaves})": "symlink to ..",
        f"rootlink/ (symlink to /, {leaves})": "symlink to /",
        f"elsewhere/ (symlink to {real(outside)}, {leaves})": "symlink to a folder outside",
        f"outside_clip.mp4 (symlink to {real(outside / 'outside.mp4')}, {leaves})": "symlink to a file outside",
    }

    # 8. Things that are not videos: say what they are, never hang.
    shutil.copyfile(m["photo.png"], videos / "photo.mp4")
    expected["photo.mp4"] = Expect("decode", "not a video: it is a still image (PNG, 320x", kind="still image")
    (videos / "page.mp4").write_text("<!DOCTYPE html>\n<html><body><h1>404 Not Found</h1></body></html>\n")
    expected["page.mp4"] = Expect("decode", "not a readable media file: it is an HTML page", kind="html page")
    shutil.copyfile(m["cover_art.mp4"], videos / "cover_art.mp4")
    expected["cover_art.mp4"] = Expect("decode", "no video stream: it is an audio file (aac, with cover art)", kind="audio with cover art")
    os.mkfifo(videos / "fifo.mp4")
    expected["fifo.mp4"] = Expect("decode", "not a regular file: a named pipe (FIFO)", kind="fifo")
    os.symlink("/dev/zero", videos / "zero.mp4")
    expected["zero.mp4"] = Expect("decode", "not a regular file: a character device (/dev/zero, through a symlink)", kind="device")
    shutil.copyfile(m["single_frame.mp4"], videos / "single_frame.mp4")
    expected["single_frame.mp4"] = Expect("record", media={"frames_sampled": 1, "has_audio": True, "duration_s": 2.99}, kind="single frame")
    shutil.copyfile(m["still_5s.mp4"], videos / "still_5s.mp4")
    expected["still_5s.mp4"] = Expect("record", media={"frames_sampled": 10, "has_audio": False, "duration_s": 5.0}, kind="single frame")

    skipped = [
        "dangling (broken symlink)",
        "linked_again/ (symlink to linked/, already included: not followed)",
        "loop/ (symlink to the input folder itself, already included: not followed)",
        "readme.txt",
        *skipped_kinds,
    ]
    return HostileCorpus(videos, expected, sorted(skipped), skipped_kinds)
