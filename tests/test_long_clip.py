"""A long clip (issue 22): samples past decode.IN_MEMORY_BYTES are not held. Its audio stays in a scratch
file read in blocks, its frames are streamed from the file, Whisper and openSMILE get bounded blocks,
and the fields are those of the in-memory path. Short real clips are sent down the long path here by
lowering the budget."""

from __future__ import annotations

import gc
import os
import pickle
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import weakref
from pathlib import Path

import cv2
import numpy as np
import opensmile
import pytest
import soundfile
from emer_builder.core.errors import ProcessFault
from emer_builder.pipelines.envelope import Envelope
from emer_builder.pipelines.explain import keyframes, wav_bytes
from emer_builder.pipelines.graph import guarded
from emer_builder.transforms.clip import Clip, ClipError
from emer_builder.transforms.stages import acoustics as acoustics_module
from emer_builder.transforms.stages import decode as decode_module
from emer_builder.transforms.stages import long_clip
from emer_builder.transforms.stages import transcript as transcript_module
from emer_builder.transforms.stages.acoustics import AcousticsStage, weighted_mean
from emer_builder.transforms.stages.decode import SCRATCH_PREFIX, DecodeStage
from emer_builder.transforms.stages.faces import FacesStage
from emer_builder.transforms.stages.long_clip import AudioFile, FrameStream, decode_long
from emer_builder.transforms.stages.transcript import Transcriber, TranscriptStage, audio_blocks

from bench.demo_corpus import reference_transcripts
from tests.wer import wer

CLIP = "sample_00000870.mp4"  # 9 s, a face and speech


@pytest.fixture()
def scratch_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temporary folder of this test's own, so its scratch folders can be counted."""
    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root


def scratch(root: Path) -> list[str]:
    return sorted(n for n in os.listdir(root) if n.startswith(SCRATCH_PREFIX))


def decoded(path: Path, long: bool, monkeypatch: pytest.MonkeyPatch, start_s: float | None = None, end_s: float | None = None) -> Clip:
    monkeypatch.setattr(decode_module, "IN_MEMORY_BYTES", 1 if long else 64 * 2**20)
    clip = Clip("k", str(path), path.name, start_s=start_s, end_s=end_s)
    DecodeStage().process(clip)
    return clip


def made(path: Path, *args: str) -> Path:
    """A small file from ffmpeg's own test sources."""
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args, str(path)], check=True)
    return path


TESTSRC = ["-f", "lavfi", "-i", "testsrc=size=160x120:rate=25:duration=3", "-f", "lavfi", "-i", "sine=duration=3.5"]


@pytest.fixture(scope="module")
def stages() -> list:
    made = [TranscriptStage(model="tiny.en", cpu_threads=1), FacesStage(), AcousticsStage()]
    for stage in made:
        stage.setup()
    return made


@pytest.mark.slow
def test_the_long_path_gives_the_in_memory_fields(demo_videos: Path, stages: list, scratch_root: Path, monkeypatch: pytest.MonkeyPatch):
    clips = {}
    for long in (False, True):
        clip = decoded(demo_videos / CLIP, long, monkeypatch)
        for stage in stages:
            stage.process(clip)
        clips[long] = clip
    short, long = clips[False], clips[True]
    assert isinstance(short.frames, list) and isinstance(short.audio, np.ndarray)
    assert isinstance(long.frames, FrameStream) and isinstance(long.audio, AudioFile)
    assert len(long.frames) == len(short.frames) == long.fields["media"]["frames_sampled"] >= 16
    for group in ("media", "transcript", "faces", "acoustics"):
        assert long.fields[group] == short.fields[group], group
    assert long.fields["faces"]["crops"] and long.fields["transcript"]["word_count"] > 5
    assert sorted(long.media_files) == sorted(short.media_files) and "face_000.jpg" in long.media_files
    assert all(long.media_files[k] == short.media_files[k] for k in short.media_files)  # FLAC and crops, byte for byte
    assert [t for t, _ in long.frames] == [t for t, _ in short.frames]
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(long.frames, short.frames, strict=True))
    assert np.array_equal(np.asarray(long.audio), short.audio) and np.array_equal(long.audio[100:200], short.audio[100:200])
    assert wav_bytes(long.audio) == wav_bytes(short.audio)
    assert scratch(scratch_root)  # the long clip's audio, while the clip lives
    del clips, long, clip
    gc.collect()
    assert scratch(scratch_root) == []  # gone with the last source that read it (the faces spool too)


def test_the_frame_stream_holds_one_frame_at_a_time(demo_videos: Path, scratch_root: Path, monkeypatch: pytest.MonkeyPatch):
    frames = decoded(demo_videos / CLIP, True, monkeypatch).frames
    alive, most, count = [], 0, 0
    for _, frame in frames:
        alive.append(weakref.ref(frame))
        most = max(most, sum(ref() is not None for ref in alive))
        count += 1
    del frame
    assert count == len(frames) and most == 1
    early = iter(frames)  # a consumer that stops early stops the decoder: nothing is left running or on disk
    next(early)
    early.close()
    picked = keyframes(frames, 3)
    times = [t for t, _ in picked]
    assert times == [t for t, _ in keyframes(list(frames), 3)] and len(times) == 3 and times[0] == 0.0 and times[-1] == (len(frames) - 1) / 2
    shapes = [cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR).shape for _, jpeg in picked + keyframes(list(frames), 3)]
    assert len(set(shapes)) == 1 and max(shapes[0]) == 512  # seeking found frames of the clip, scaled for the model


def test_scratch_is_removed_when_decode_or_a_later_stage_fails(demo_videos: Path, stages: list, scratch_root: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(decode_module, "IN_MEMORY_BYTES", 1)
    with pytest.raises(ClipError, match="the minimum is 60 s"):
        DecodeStage(min_duration_s=60).process(Clip("k", str(demo_videos / CLIP), CLIP))
    assert scratch(scratch_root) == []  # removed at once, though the exception still holds the frame

    item = Envelope(decoded(demo_videos / CLIP, True, monkeypatch))
    faces = FacesStage()
    faces.setup()
    detect, seen = faces._detect, []

    def failing(frames):  # noqa: ANN001, ANN202 - a detector that breaks halfway through the stream
        seen.append(1)
        if len(seen) == 5:
            raise RuntimeError("detector broke")
        return detect(frames)

    faces._detect = failing
    out = guarded(item, "faces", faces.process)
    assert out.failure is not None and out.failure["message"] == "RuntimeError: detector broke" and out.clip.frames == [] and out.clip.audio is None
    assert len(scratch(scratch_root)) == 1  # the input envelope still holds its samples; the spool is gone
    del item
    gc.collect()
    assert scratch(scratch_root) == []


def test_a_pickled_source_is_a_description_that_decodes_again(demo_videos: Path, scratch_root: Path, monkeypatch: pytest.MonkeyPatch):
    clip = decoded(demo_videos / CLIP, True, monkeypatch)
    samples, frames = np.asarray(clip.audio), [f for _, f in clip.frames]
    audio_copy, frames_copy = pickle.dumps(clip.audio), pickle.dumps(clip.frames)
    assert len(audio_copy) < 2000 and len(frames_copy) < 2000  # paths and counts, not samples
    clip.audio.release()  # another machine: the scratch file is not there
    assert scratch(scratch_root) == []
    audio, stream = pickle.loads(audio_copy), pickle.loads(frames_copy)
    assert np.array_equal(audio[0 : len(audio)], samples)  # decoded again, into a scratch folder of its own
    assert all(np.array_equal(a, b) for (_, a), b in zip(stream, frames, strict=True))
    assert len(scratch(scratch_root)) == 1
    del audio, clip
    gc.collect()
    assert scratch(scratch_root) == []


def test_audio_blocks_end_at_pauses_and_cover_the_track():
    rng = np.random.default_rng(0)
    speech = lambda seconds: (0.3 * rng.standard_normal(int(seconds * 16_000))).astype(np.float32)  # noqa: E731
    silence = np.zeros(8_000, dtype=np.float32)
    track = np.concatenate([speech(9), silence, speech(9), silence, speech(4)])  # pauses at 9.0-9.5 s and 18.5-19.0 s
    blocks = list(audio_blocks(track, block_s=10, search_s=3))
    starts = [start for start, _ in blocks]
    assert starts == [0, 144_800, 297_600]  # 9.05 s and 18.6 s: the first quiet tenth of a second of each pause
    assert all(not track[cut - 800 : cut + 800].any() for cut in starts[1:])  # no word is cut
    assert all(len(b) <= 10 * 16_000 for _, b in blocks) and np.array_equal(np.concatenate([b for _, b in blocks]), track)
    assert [(s, len(b)) for s, b in audio_blocks(track[:16_000], block_s=10)] == [(0, 16_000)]
    assert [len(b) for _, b in audio_blocks(track[:0])] == [0]


def test_whisper_blocks_give_segments_at_the_track_times(demo_videos: Path, librivox_dir: Path, monkeypatch: pytest.MonkeyPatch):
    refs = reference_transcripts(demo_videos.parent / "root")
    wavs = sorted(librivox_dir.glob("*.wav"))[:2]
    parts = [soundfile.read(w, dtype="float32")[0] for w in wavs]
    pause = np.zeros(16_000, dtype=np.float32)
    track = np.concatenate([parts[0], pause, parts[1]])
    second = (len(parts[0]) + len(pause)) / 16_000
    monkeypatch.setattr(transcript_module, "BLOCK_S", len(parts[0]) / 16_000 + 1.5)
    monkeypatch.setattr(transcript_module, "PAUSE_SEARCH_S", 2.0)
    result = Transcriber("tiny.en", language="en", cpu_threads=2).transcribe(track)
    starts = [s["start_s"] for s in result["segments"]]
    assert starts == sorted(starts) and result["segments"][-1]["end_s"] <= len(track) / 16_000 + 0.5
    first = [s for s in result["segments"] if s["start_s"] < second - 1.0]
    later = [s for s in result["segments"] if s["start_s"] >= second - 1.0]
    assert first and later and all(s["start_s"] >= second - 0.6 for s in later)  # the second block's times are the track's
    assert wer(refs[wavs[0].stem], " ".join(s["text"] for s in first)) <= 0.3  # tiny.en: "ill-disposed" can come out "old-sposed"
    assert wer(refs[wavs[1].stem], " ".join(s["text"] for s in later)) <= 0.3


def test_acoustics_of_blocks_are_their_length_weighted_mean(demo_videos: Path, monkeypatch: pytest.MonkeyPatch):
    clip = decoded(demo_videos / CLIP, False, monkeypatch)
    audio = clip.audio
    monkeypatch.setattr(acoustics_module, "BLOCK_S", len(audio) / 16_000 / 3)  # three equal blocks
    stage = AcousticsStage()
    stage.setup()
    got = stage.features.extract(audio, None)
    smile = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02, feature_level=opensmile.FeatureLevel.Functionals)
    bounds = [len(audio) * i // 3 for i in range(4)]
    rows = np.vstack([smile.process_signal(audio[a:b], 16_000).iloc[0].to_numpy(dtype=np.float64) for a, b in zip(bounds, bounds[1:], strict=False)])
    expected = weighted_mean(rows, np.diff(bounds))
    assert list(got["egemaps"].values()) == pytest.approx([None if np.isnan(v) else round(float(v), 6) for v in expected])
    assert 0 < got["prosody"]["voiced_ratio"] < 1 and got["prosody"]["f0_mean_semitone"] > 0
    assert weighted_mean(np.array([[1.0, np.nan], [4.0, np.nan]]), np.array([2, 1])).tolist()[0] == 2.0
    assert np.isnan(weighted_mean(np.array([[np.nan], [np.nan]]), np.array([1, 1]))[0])


@pytest.mark.slow
def test_a_build_of_long_path_clips_writes_the_same_shards(demo_videos: Path, tmp_path: Path, scratch_root: Path, monkeypatch: pytest.MonkeyPatch):
    from emer_builder.core.config import config_from_dict
    from emer_builder.pipelines.build import build

    videos = tmp_path / "videos"
    videos.mkdir()
    for name in (CLIP, "no_face_dog.mp4", "jesper_intro.avi"):
        shutil.copyfile(demo_videos / name, videos / name)
    config = config_from_dict({"transcript": {"model": "tiny.en"}, "cache": {"enabled": False}})
    build(videos, tmp_path / "memory", config, workers=1, show_progress=False)
    monkeypatch.setattr(decode_module, "IN_MEMORY_BYTES", 1)  # workers=1 runs in this process: every clip takes the long path
    calls = []
    monkeypatch.setattr(long_clip, "decode_long", lambda *a, **k: calls.append(a[1]) or decode_long(*a, **k))
    build(videos, tmp_path / "long", config, workers=1, show_progress=False)
    assert sorted(Path(p).name for p in calls) == sorted(p.name for p in videos.iterdir())
    files = sorted(p.relative_to(tmp_path / "memory").as_posix() for p in (tmp_path / "memory").rglob("*") if p.parts[-2] in ("data", "media"))
    assert any(f.startswith("media/") for f in files) and any(f.startswith("data/") for f in files)
    for rel in files:
        assert (tmp_path / "memory" / rel).read_bytes() == (tmp_path / "long" / rel).read_bytes(), rel
    gc.collect()
    assert scratch(scratch_root) == []


@pytest.mark.slow
def test_dask_builds_a_long_file_as_the_local_runner_does(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest):
    """50 s of the demo episode (72 MB of samples: the long path without lowering the budget) built on a
    dask.distributed cluster, whose workers pickle what they move: the same bytes, no scratch left."""
    import subprocess
    import time

    from emer_builder.core.config import config_from_dict
    from emer_builder.pipelines.build import build

    from bench.demo_corpus import demo_episode

    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setenv("TMPDIR", str(root))  # the cluster's workers start with it
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    cluster = request.getfixturevalue("dask_cluster")
    videos = tmp_path / "videos"
    videos.mkdir()
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(demo_episode() / "episode.mp4"), "-t", "50", "-c", "copy", str(videos / "talk.mp4")], check=True)
    config = config_from_dict({"transcript": {"model": "tiny.en"}, "cache": {"enabled": False}})
    calls = []
    monkeypatch.setattr(long_clip, "decode_long", lambda *a, **k: calls.append(a[1]) or decode_long(*a, **k))
    local = build(videos, tmp_path / "local", config, workers=1, show_progress=False)
    assert len(calls) == 1  # the long path, by the clip's own length
    dask = build(videos, tmp_path / "dask", config, beam_args=["--runner=DaskRunner", f"--dask_client_address={cluster}", "--dask_partition_size=1"], show_progress=False)
    assert local.records == dask.records == 1
    files = sorted(p.relative_to(tmp_path / "local").as_posix() for p in (tmp_path / "local").rglob("*") if p.parts[-2] in ("data", "media"))
    for rel in files:
        assert (tmp_path / "local" / rel).read_bytes() == (tmp_path / "dask" / rel).read_bytes(), rel
    deadline = time.monotonic() + 30
    while scratch(root) and time.monotonic() < deadline:  # the workers release their results when the graph is done
        time.sleep(0.5)
    assert scratch(root) == []


@pytest.mark.parametrize(
    "name,options",
    [
        ("late_video.ts", ["-itsoffset", "0.3", *TESTSRC, "-map", "0", "-map", "1", "-pix_fmt", "yuv420p", "-c:v", "libx264"]),
        ("mpeg2.mpg", [*TESTSRC, "-pix_fmt", "yuv420p"]),  # ffmpeg's defaults: MPEG-PS, the audio 11 ms first
    ],
)
def test_mpeg_ts_and_ps_stream_the_in_memory_frames(name: str, options: list[str], tmp_path: Path, scratch_root: Path, monkeypatch: pytest.MonkeyPatch):
    """Broadcast and camcorder files (.ts, .mts, .mpg) whose audio starts before the video: the second
    pass read the video alone, and ffmpeg 5.1 timed it from another start, so the sampling kept other
    frames (every other one differed) or fewer (the clip failed on the long path only)."""
    path = made(tmp_path / name, *options)
    short, long = decoded(path, False, monkeypatch), decoded(path, True, monkeypatch)
    assert isinstance(long.frames, FrameStream) and long.fields["media"] == short.fields["media"]
    streamed = [(t, f.copy()) for t, f in long.frames]
    assert [t for t, _ in streamed] == [t for t, _ in short.frames] and len(streamed) >= 6
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(streamed, short.frames, strict=True))


@pytest.mark.parametrize("long", [False, True])
def test_a_window_of_a_low_frame_rate_video_is_not_too_long(long: bool, tmp_path: Path, scratch_root: Path, monkeypatch: pytest.MonkeyPatch):
    """At 5 fps the window's last frame ends up to 0.2 s past the window: that is not a file longer than
    decode.max_duration_s (every such window failed so)."""
    path = made(tmp_path / "fps5.mp4", "-f", "lavfi", "-i", "testsrc=size=160x120:rate=5", "-f", "lavfi", "-i", "sine", "-t", "8", "-pix_fmt", "yuv420p")
    clip = decoded(path, long, monkeypatch, 1.0, 3.03)
    media = clip.fields["media"]
    assert media["duration_s"] == media["declared_duration_s"] == 2.03 and not media["truncated"]
    assert media["frames_sampled"] == 4 and media["decoded_duration_s"] == pytest.approx(2.2)


@pytest.mark.parametrize("long", [False, True])
def test_a_full_scratch_disk_is_a_process_fault_not_a_truncated_file(long: bool, tmp_path: Path, scratch_root: Path, monkeypatch: pytest.MonkeyPatch):
    """ffmpeg's writes to the scratch folder fail (EFBIG here, as ENOSPC would): the decode ended early and
    the clip became a record flagged as a truncated file. Now it is a ProcessFault: retried, never a
    failure row, and its line says where to free space."""
    path = made(tmp_path / "ten.mp4", "-f", "lavfi", "-i", "testsrc=size=160x120:rate=10", "-f", "lavfi", "-i", "sine", "-t", "10", "-pix_fmt", "yuv420p")
    real = decode_module.run_child

    def small_files() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (400_000, 400_000))  # 6.25 s of the 10 s track

    def full_disk(args, timeout_s, **kwargs):  # noqa: ANN001, ANN003, ANN202
        if "f32le" not in args:  # the decoding pass only
            return real(args, timeout_s, **kwargs)
        return subprocess.run(args, timeout=timeout_s, stdin=subprocess.DEVNULL, preexec_fn=small_files, **kwargs)

    monkeypatch.setattr(decode_module, "run_child", full_disk)
    with pytest.raises(ProcessFault, match="could not write its scratch files in .*File too large"):
        decoded(path, long, monkeypatch)
    assert scratch(scratch_root) == []


def test_a_frame_stream_left_half_read_does_not_hold_the_process(tmp_path: Path):
    """A plug-in or script that stops iterating a long clip's frames and keeps the iterator: the stream's
    time limit was a non-daemon timer (hours for a long clip), so the interpreter waited for it at exit."""
    path = made(tmp_path / "six.mp4", "-f", "lavfi", "-i", "testsrc=size=160x120:rate=10", "-t", "6", "-pix_fmt", "yuv420p")
    script = textwrap.dedent(f"""
        from emer_builder.transforms.clip import Clip
        from emer_builder.transforms.stages import decode
        decode.IN_MEMORY_BYTES = 1
        clip = Clip("k", {str(path)!r}, "six.mp4")
        decode.DecodeStage().process(clip)
        held = iter(clip.frames)
        next(held)
    """)
    subprocess.run([sys.executable, "-c", script], timeout=60, env={**os.environ, "TMPDIR": str(tmp_path)}, check=True)
