"""Fetch real recordings from Debian packages and compose the demo corpus (cached, never committed).

Every clip has a real face photo or film and real speech whose transcript we know:
- `jesper_intro.avi`: the kphotoalbum demo film, a man speaking English to the camera.
- `sample_*`: a kphotoalbum photo muxed with a LibriVox reading from pocketsphinx-testdata
  (public domain, reference transcripts in the package), in five different containers.
- `no_face_dog.mp4`: a photo of a dog with the ALSA "Front Center" voice prompt: no face.

Usage: python bench/demo_corpus.py [DIR]   (default $EMER_HOME/demo-corpus); prints DIR.
"""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import ffmpeg
from emer_builder.core.paths import emer_home

PACKAGES = ("kphotoalbum", "pocketsphinx-testdata", "alsa-utils")
KPA = "usr/share/kphotoalbum/demo"
LIBRIVOX = "usr/share/pocketsphinx/test/data/librivox"

# (file name, kphotoalbum photo, speech wav, video codec, audio codec)
CLIPS = (
    ("sample_00000870.mp4", "new_wave_2.jpg", "sense_and_sensibility_01_austen_64kb-0870.wav", "libx264", "aac"),
    ("sample_00000880.mkv", "anne_helene.jpg", "sense_and_sensibility_01_austen_64kb-0880.wav", "libx264", "libopus"),
    ("sample_00000890.webm", "jesper_2.jpg", "sense_and_sensibility_01_austen_64kb-0890.wav", "libvpx-vp9", "libopus"),
    ("sample_00000920.mov", "bar55_2.jpg", "sense_and_sensibility_01_austen_64kb-0920.wav", "libx264", "aac"),
    ("sample_00000930.flv", "bar55.jpg", "sense_and_sensibility_01_austen_64kb-0930.wav", "flv", "aac"),
    ("no_face_dog.mp4", "donna.jpg", "usr/share/sounds/alsa/Front_Center.wav", "libx264", "aac"),
)
FILM = ("jesper_intro.avi", "movie.avi")
FILM_TRANSCRIPT = "hi my name is jesper"  # first words of the kphotoalbum film, checked by ear


def fetch_packages(dest: Path) -> Path:
    """Download the .debs (no install) and unpack them into dest/root."""
    root = dest / "root"
    if all((root / p).exists() for p in (KPA, LIBRIVOX)) and (root / "usr/share/sounds/alsa").exists():
        return root
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = ["apt-get", "download", *PACKAGES]
        if subprocess.run(cmd, cwd=tmp, capture_output=True).returncode != 0:
            subprocess.run(["apt-get", "update", "-qq"], check=True)
            subprocess.run(cmd, cwd=tmp, check=True, capture_output=True)
        for deb in sorted(Path(tmp).glob("*.deb")):
            subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    return root


def reference_transcripts(root: Path) -> dict[str, str]:
    """LibriVox utterance id -> reference text, from the package's `transcription` file."""
    refs = {}
    for line in (root / LIBRIVOX / "transcription").read_text().splitlines():
        text, _, utt = line.rpartition("(")
        refs[utt.strip(") ")] = text.replace("<s>", "").replace("</s>", "").strip()
    return refs


def compose(root: Path, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    refs = reference_transcripts(root)
    rows = [(Path(FILM[0]).stem, FILM_TRANSCRIPT)]
    shutil.copyfile(root / KPA / FILM[1], out_dir / FILM[0])
    for name, photo, speech, vcodec, acodec in CLIPS:
        wav = root / (speech if "/" in speech else f"{LIBRIVOX}/{speech}")
        target = out_dir / name
        if not target.exists():
            staging = target.with_name("tmp-" + name)
            image = ffmpeg.input(str(root / KPA / photo), loop=1, framerate=25).filter("scale", 640, -2)
            audio = ffmpeg.input(str(wav))
            args = {"vcodec": vcodec, "acodec": acodec, "pix_fmt": "yuv420p", "shortest": None, "ar": 48000 if acodec == "libopus" else 44100}
            if vcodec == "libvpx-vp9":
                args.update({"deadline": "realtime", "cpu-used": 8, "b:v": "300k"})
            if vcodec == "flv":
                args.pop("pix_fmt")
            ffmpeg.output(image, audio, str(staging), **args).global_args("-nostdin", "-v", "error", "-y").run()
            staging.rename(target)
        utt = Path(speech).stem.replace("sense_and_sensibility_01_austen_64kb-", "")
        rows.append((Path(name).stem, refs.get(f"sense_and_sensibility_01_austen_64kb-{utt}", "front center")))
    with open(out_dir.parent / "references.csv", "w", newline="") as f:
        csv.writer(f).writerows([("key", "reference_transcript"), *rows])


def demo_corpus(dest: str | Path | None = None) -> Path:
    """The demo corpus folder (videos only), fetched and composed on first use."""
    base = Path(dest) if dest else emer_home() / "demo-corpus"
    videos = base / "videos"
    if not (base / "references.csv").exists() or len(list(videos.glob("*"))) < len(CLIPS) + 1:
        compose(fetch_packages(base), videos)
    return videos


EPISODE_ROUNDS = 5  # scenes repeated until the episode passes 3 minutes
SCENE_GAP_S = 2.0  # silence after each line


def _seconds(path: Path) -> float:
    out = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(path)], capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


def _srt_time(s: float) -> str:
    ms = round(s * 1000)
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"


def compose_episode(root: Path, out_dir: Path) -> Path:
    """A long raw input as EMER corpora start from: one 3+ minute video of scenes (a photo and a
    LibriVox line, then silence; the kphotoalbum film) with a sidecar SRT whose cues are the lines."""
    out_dir.mkdir(parents=True, exist_ok=True)
    work = out_dir / ".scenes"
    work.mkdir(exist_ok=True)
    refs = reference_transcripts(root)
    scenes = []  # (scene file, speech seconds, text)
    for name, photo, speech, _, _ in CLIPS:
        wav = root / (speech if "/" in speech else f"{LIBRIVOX}/{speech}")
        utt = Path(speech).stem.replace("sense_and_sensibility_01_austen_64kb-", "")
        scene = work / f"{Path(name).stem}.mp4"
        spoken = _seconds(wav)
        if not scene.exists():
            subprocess.run(
                ["ffmpeg", "-nostdin", "-v", "error", "-y", "-loop", "1", "-framerate", "25", "-i", str(root / KPA / photo), "-i", str(wav),
                 "-filter_complex", "[0:v]scale=640:360:force_original_aspect_ratio=decrease,pad=640:360:(ow-iw)/2:(oh-ih)/2,format=yuv420p[v];[1:a]aresample=44100,apad[a]",
                 "-map", "[v]", "-map", "[a]", "-t", f"{spoken + SCENE_GAP_S:.3f}", "-c:v", "libx264", "-preset", "veryfast", "-c:a", "aac", "-ac", "1", str(scene)],
                check=True,
            )  # fmt: skip
        scenes.append((scene, spoken, refs.get(f"sense_and_sensibility_01_austen_64kb-{utt}", "front center")))
    film = work / "film.mp4"
    if not film.exists():
        subprocess.run(
            ["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(root / KPA / FILM[1]),
             "-filter_complex", "[0:v]fps=25,scale=640:360:force_original_aspect_ratio=decrease,pad=640:360:(ow-iw)/2:(oh-ih)/2,format=yuv420p[v];[0:a]aresample=44100[a]",
             "-map", "[v]", "-map", "[a]", "-c:v", "libx264", "-preset", "veryfast", "-c:a", "aac", "-ac", "1", str(film)],
            check=True,
        )  # fmt: skip
    scenes.append((film, 2.5, FILM_TRANSCRIPT))  # the greeting; the rest of the film stays uncued
    listing, cues, at = [], [], 0.0
    for _ in range(EPISODE_ROUNDS):
        for scene, spoken, text in scenes:
            listing.append(f"file '{scene.name}'")
            cues.append((at, at + spoken, text))
            at += _seconds(scene)
    (work / "list.txt").write_text("\n".join(listing) + "\n")
    episode = out_dir / "episode.mp4"
    if not episode.exists():
        subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "concat", "-safe", "0", "-i", str(work / "list.txt"), "-c", "copy", str(episode)], check=True)
    srt = "\n".join(f"{i}\n{_srt_time(a)} --> {_srt_time(b)}\n{text}\n" for i, (a, b, text) in enumerate(cues, 1))
    (out_dir / "episode.srt").write_text(srt)
    return out_dir


def demo_episode(dest: str | Path | None = None) -> Path:
    """The demo's long input: a folder with episode.mp4 (3+ minutes) and episode.srt, made on first use."""
    base = Path(dest) if dest else emer_home() / "demo-corpus"
    folder = base / "long"
    if not (folder / "episode.srt").exists():
        demo_corpus(base)
        compose_episode(base / "root", folder)
    return folder


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--episode":
        print(demo_episode(sys.argv[2] if len(sys.argv) > 2 else None))
    else:
        print(demo_corpus(sys.argv[1] if len(sys.argv) > 1 else None))
