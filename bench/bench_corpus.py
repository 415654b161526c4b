"""The benchmark corpus: 24 clips, about 131 s of real video, every file encoded on its own.

Made from the same real recordings as the demo corpus (Debian packages, fetched into a folder of
its own so nothing else can change them), but with what real corpora hold:
- the kphotoalbum film (a man speaking to the camera, a real moving face) re-encoded six ways:
  scaled, mirrored, looped, slowed, cropped, another codec;
- photos with faces panned and zoomed over time (the face moves through the frame) with one or
  two LibriVox readings as the speech;
- still photos with speech (common in real corpora too), two of them without any face.
No two clips share bytes (each is its own encode, with its own title tag), so no cache, hash or
file-system trick can make one clip pay for another.

Usage: python -m bench.bench_corpus [DIR [COPIES]]   (default $EMER_HOME/bench-corpus, 1); prints the videos folder.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from emer_builder.core.paths import emer_home

from bench.demo_corpus import FILM, KPA, LIBRIVOX, fetch_packages

SPEECH = "sense_and_sensibility_01_austen_64kb-{}.wav"
ALSA_VOICE = "usr/share/sounds/alsa/Front_Center.wav"
FILM_AUDIO = "film"  # the film's own sound track

# (file, visual, speech parts, extra ffmpeg output options)
# visual: "film:<filter>" (the kphotoalbum film through a filter graph), "pan:<photo>:<direction>",
# "zoom:<photo>" or "still:<photo>".
CLIPS: tuple[tuple[str, str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("film_320.mp4", "film:scale=320:240", (FILM_AUDIO,), ("-c:v", "libx264", "-c:a", "aac")),
    ("film_mirror_640.mkv", "film:hflip,scale=640:480", (FILM_AUDIO,), ("-c:v", "libx264", "-c:a", "libopus")),
    ("film_twice.webm", "film-loop:scale=320:240", (FILM_AUDIO,), ("-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "300k", "-c:a", "libopus")),
    ("film_slow.mp4", "film-slow:scale=480:360", (FILM_AUDIO,), ("-c:v", "libx264", "-c:a", "aac")),
    ("film_closeup.mov", "film:crop=120:90:20:0,scale=640:480", (FILM_AUDIO,), ("-c:v", "libx264", "-c:a", "aac")),
    ("film_mpeg4.avi", "film:scale=160:120", (FILM_AUDIO,), ("-c:v", "mpeg4", "-q:v", "4", "-c:a", "pcm_s16le")),
    ("pan_new_wave_2.mp4", "pan:new_wave_2.jpg:right", ("0870",), ("-c:v", "libx264", "-c:a", "aac")),
    ("pan_anne_helene.mp4", "pan:anne_helene.jpg:down", ("0920",), ("-c:v", "libx264", "-c:a", "aac")),
    ("pan_jesper.mkv", "pan:jesper.jpg:left", ("0890",), ("-c:v", "libx264", "-c:a", "libopus")),
    ("pan_jesper_2.mp4", "pan:jesper_2.jpg:right", ("0880", "0930"), ("-c:v", "libx264", "-c:a", "aac")),
    ("pan_bar55_2.webm", "pan:bar55_2.jpg:left", ("0920", "0880"), ("-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "400k", "-c:a", "libopus")),
    ("pan_qt_logo.mp4", "pan:qt-logo.jpg:right", ("0890", "0930"), ("-c:v", "libx264", "-c:a", "aac")),
    ("zoom_new_wave_2.mov", "zoom:new_wave_2.jpg", ("0930",), ("-c:v", "libx264", "-c:a", "aac")),
    ("zoom_jesper_2.mp4", "zoom:jesper_2.jpg", ("0870", "0890"), ("-c:v", "libx264", "-c:a", "aac")),
    ("pan_bar55.flv", "pan:bar55.jpg:right", ("0880",), ("-c:v", "flv", "-c:a", "aac")),
    ("pan_cold_water.mp4", "pan:cold_water.jpg:left", ("0930",), ("-c:v", "libx264", "-c:a", "aac")),
    ("still_anne_helene.mp4", "still:anne_helene.jpg", ("0890",), ("-c:v", "libx264", "-c:a", "aac")),
    ("still_jesper.mkv", "still:jesper.jpg", ("0920",), ("-c:v", "libx264", "-c:a", "libopus")),
    ("still_qt_logo.mp4", "still:qt-logo.jpg", ("0870",), ("-c:v", "libx264", "-c:a", "aac")),
    ("still_new_wave_2.mp4", "still:new_wave_2.jpg", ("0880",), ("-c:v", "libx264", "-c:a", "aac")),
    ("still_grand_canyon_2.mov", "still:grand_canyon_2.jpg", ("0930",), ("-c:v", "libx264", "-c:a", "aac")),
    ("still_bar55_2.mp4", "still:bar55_2.jpg", (FILM_AUDIO,), ("-c:v", "libx264", "-c:a", "aac")),
    ("no_face_dog.mp4", "still:donna.jpg", ("alsa",), ("-c:v", "libx264", "-c:a", "aac")),
    ("no_face_rabbit.mp4", "pan:spiff.jpg:right", ("0880",), ("-c:v", "libx264", "-c:a", "aac")),
)


def _ffmpeg(*args: str | Path) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *map(str, args)], check=True, timeout=300)


def _speech_file(root: Path, parts: tuple[str, ...], work: Path, name: str) -> Path:
    """The clip's sound: one reading, or several joined one after another (16 kHz mono wav)."""
    files = []
    for part in parts:
        if part == FILM_AUDIO:
            files.append(root / KPA / FILM[1])
        elif part == "alsa":
            files.append(root / ALSA_VOICE)
        else:
            files.append(root / LIBRIVOX / SPEECH.format(part))
    out = work / f"{name}.wav"
    inputs = [a for f in files for a in ("-i", f)]
    joined = "".join(f"[{i}:a]" for i in range(len(files))) + f"concat=n={len(files)}:v=0:a=1[a]"
    _ffmpeg(*inputs, "-filter_complex", joined, "-map", "[a]", "-ar", "16000", "-ac", "1", out)
    return out


def _duration(path: Path) -> float:
    out = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(path)], capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


def _video_input(root: Path, visual: str, seconds: float) -> tuple[list[str | Path], str]:
    """ffmpeg input arguments and the filter graph that draws the clip's picture for `seconds`."""
    kind, _, rest = visual.partition(":")
    film = root / KPA / FILM[1]
    if kind == "film":
        return ["-i", film], rest
    if kind == "film-loop":
        return ["-stream_loop", "1", "-i", film], rest
    if kind == "film-slow":
        return ["-i", film], f"setpts=1.25*PTS,{rest}"
    photo, _, direction = rest.partition(":")
    still = ["-loop", "1", "-framerate", "25", "-t", f"{seconds:.3f}", "-i", root / KPA / photo]
    d = f"{seconds:.3f}"
    if kind == "still":
        return still, "scale=640:-2"
    if kind == "zoom":  # from the whole photo to its middle third, 25 frames a second
        frames = int(seconds * 25) + 1
        return still, f"scale=1600:-2,zoompan=z='1+1.5*on/{frames}':x='iw/2-iw/zoom/2':y='ih/3-ih/zoom/3':d=1:s=640x400:fps=25"
    if direction in ("right", "left"):  # a 640x400 window sliding across the photo scaled to 1000 wide
        x = f"(iw-ow)*t/{d}" if direction == "right" else f"(iw-ow)*(1-t/{d})"
        return still, f"scale=1000:-2,crop=640:400:'{x}':'(ih-oh)/2'"
    return still, f"scale=640:-2,crop=640:480:0:'(ih-oh)*t/{d}'"  # down a portrait photo


def _variant_options(options: tuple[str, ...], copy: int) -> list[str]:
    """Copy 0 is the corpus as listed; copy k re-encodes at another quality, so copies share no bytes."""
    if copy == 0:
        return list(options)
    codec = options[options.index("-c:v") + 1]
    if codec in ("libx264", "libvpx-vp9"):
        return [*options, "-crf", str(23 + 2 * copy)]
    return [*options, "-q:v", str(4 + copy)]


def compose(root: Path, out_dir: Path, copy: int = 0) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for number, (name, visual, speech, options) in enumerate(CLIPS):
            target = out_dir / name
            if target.exists():
                continue
            wav = _speech_file(root, speech, work, Path(name).stem)
            seconds = _duration(wav)
            if visual.startswith("film-slow"):
                wav_slow = work / f"{Path(name).stem}-slow.wav"
                _ffmpeg("-i", wav, "-filter:a", "atempo=0.8", wav_slow)
                wav, seconds = wav_slow, seconds * 1.25
            elif visual.startswith("film-loop"):
                wav_loop = work / f"{Path(name).stem}-loop.wav"
                _ffmpeg("-stream_loop", "1", "-i", wav, wav_loop)
                wav, seconds = wav_loop, seconds * 2
            video_in, graph = _video_input(root, visual, seconds)
            pix = [] if "flv" in options else ["-pix_fmt", "yuv420p"]
            staging = target.with_name("tmp-" + name)
            _ffmpeg(
                *video_in, "-i", wav, "-filter:v", graph, "-map", "0:v", "-map", "1:a", *pix, *_variant_options(options, copy),
                "-t", f"{seconds:.3f}", "-metadata", f"title=emer bench clip {number:02d} copy {copy} {name}", staging,
            )
            staging.rename(target)


def bench_corpus(dest: str | Path | None = None, copies: int = 1) -> Path:
    """The benchmark corpus folder (videos only), fetched and composed on first use. `copies` > 1:
    a larger corpus (for scaling figures) of that many copies, each encoded at its own quality."""
    base = Path(dest) if dest else emer_home() / "bench-corpus"
    videos = base / "videos" if copies == 1 else base / f"videos-x{copies}"
    folders = [videos] if copies == 1 else [videos / f"copy{k}" for k in range(copies)]
    for k, folder in enumerate(folders):
        if len(list(folder.glob("*"))) < len(CLIPS) or any(p.name.startswith("tmp-") for p in folder.glob("*")):
            for p in folder.glob("tmp-*"):
                p.unlink()
            compose(fetch_packages(base), folder, k)
    return videos


if __name__ == "__main__":
    print(bench_corpus(sys.argv[1] if len(sys.argv) > 1 and sys.argv[1] else None, int(sys.argv[2]) if len(sys.argv) > 2 else 1))
