"""The record's own video (issue 21): the MP4 is the record's window, cut at its frames and the same bytes
on every run; frames are spread over the window in time order; the new tar members pass the download's
checks; segmented builds carry each utterance's video, cached like every stage's result."""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest
from emer_builder.core.config import VideoConfig, config_from_dict
from emer_builder.core.errors import UserError
from emer_builder.release.download import check_shard, iter_samples, load_split
from emer_builder.transforms.clip import Clip
from emer_builder.transforms.clip_cache import decode_entry, encode_entry
from emer_builder.transforms.shards import write_tar
from emer_builder.transforms.stages.decode import DecodeStage
from emer_builder.transforms.stages.mp4_boxes import mp4_box_facts
from emer_builder.transforms.stages.video import MP4, VideoStage, encode_clip, ffprobe_mp4_facts, frame_member, mp4_facts, sample_frames

from tests.segment_media import FIRST_SPEECH, SECOND_SPEECH, make_episode, write_srt

FPS = 25
RAMP_S = 8.0
CONTAINERS = ["jesper_intro.avi", "sample_00000870.mp4", "sample_00000880.mkv", "sample_00000890.webm", "sample_00000920.mov", "sample_00000930.flv"]


@pytest.fixture(scope="module")
def ramp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 s at 25 fps whose frame N has luma 16 + N (so a frame tells its own number), keyframes every
    2 s (a cut must decode from the keyframe before it), with a 440 Hz tone."""
    path = tmp_path_factory.mktemp("ramp") / "ramp.mp4"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", f"nullsrc=s=320x240:r={FPS}:d={RAMP_S},geq=lum='16+N':cb=128:cr=128"]
        + ["-f", "lavfi", "-i", f"sine=f=440:r=44100:d={RAMP_S}", "-c:v", "libx264", "-preset", "ultrafast", "-g", "50", "-pix_fmt", "yuv420p"]
        + ["-c:a", "aac", "-shortest", str(path)],
        check=True,
    )
    return path


def _gray_means(video: str | Path) -> np.ndarray:
    """Mean luma of every frame the file holds, as stored (no frame repeated or dropped)."""
    raw = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(video), "-vsync", "passthrough", "-f", "rawvideo", "-pix_fmt", "gray", "-"], capture_output=True, check=True
    ).stdout
    w, h = (
        int(x)
        for x in subprocess.run(
            ["ffprobe", "-v", "error", "-select_streams", "v", "-show_entries", "stream=width,height", "-of", "csv=p=0", str(video)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split(",")
    )
    return np.frombuffer(raw, np.uint8).reshape(-1, w * h).mean(axis=1)


def _streams(data: bytes, tmp_path: Path) -> dict[str, str]:
    path = tmp_path / "probe.mp4"
    path.write_bytes(data)
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "stream=codec_type,codec_name", "-of", "json", str(path)], capture_output=True, text=True, check=True
    ).stdout
    return {s["codec_type"]: s["codec_name"] for s in json.loads(out)["streams"]}


def _run(stage: VideoStage, path: Path, start: float | None = None, end: float | None = None) -> Clip:
    clip = Clip(path.stem, str(path), path.name, start, end)
    DecodeStage().process(clip)
    stage.process(clip)
    return clip


@pytest.mark.parametrize(
    "start, end",
    [pytest.param(2.0, 5.5, marks=pytest.mark.slow), (2.013, 5.521), (1.019, 1.981), pytest.param(0.0, RAMP_S, marks=pytest.mark.slow), (7.6, RAMP_S)],
)
def test_clip_is_the_window_cut_at_its_frames_and_the_same_bytes_again(ramp: Path, tmp_path: Path, start: float, end: float):
    stage = VideoStage(VideoConfig(mode="clip", max_side=160))
    clip = _run(stage, ramp, start, end)
    data = clip.media_files[MP4]
    source = _gray_means(ramp)
    numbers = [int(np.argmin(np.abs(source - v))) for v in _gray_means(_write(tmp_path, data))]
    assert numbers == list(range(numbers[0], numbers[-1] + 1))  # every frame once, in order
    assert abs(numbers[0] - start * FPS) <= 1 and abs(numbers[-1] + 1 - end * FPS) <= 1  # the window's first and last frames
    facts = mp4_facts(data)
    assert abs(facts["duration_s"] - (end - start)) <= 1 / FPS  # within one frame of the segment
    assert facts["video_frames"] == len(numbers) and (facts["width"], facts["height"]) == (160, 120) and facts["fps"] == pytest.approx(FPS, rel=0.01)
    assert _streams(data, tmp_path) == {"video": "h264", "audio": "aac"}
    video = clip.fields["video"]
    assert video == {
        "mode": "clip", "start_s": start, "end_s": end, "width": 160, "height": 120, "fps": facts["fps"], "duration_s": facts["duration_s"],
        "video_frames": len(numbers), "has_audio": True, "crf": 28, "size_bytes": len(data), "frames": [],
    }  # fmt: skip
    assert _run(VideoStage(VideoConfig(mode="clip", max_side=160)), ramp, start, end).media_files[MP4] == data  # byte-identical on rebuild


def _write(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "clip.mp4"
    path.write_bytes(data)
    return path


@pytest.mark.slow
def test_whole_clips_of_every_container_become_mp4s_of_their_length(demo_videos: Path, tmp_path: Path):
    stage = VideoStage()  # the defaults: clip, 480 px, crf 28
    for name in CONTAINERS:
        clip = _run(stage, demo_videos / name)
        media, video, data = clip.fields["media"], clip.fields["video"], clip.media_files[MP4]
        assert (video["start_s"], video["end_s"]) == (0.0, media["duration_s"]), name
        assert abs(mp4_facts(data)["duration_s"] - media["duration_s"]) <= 1 / media["fps"], name
        assert max(video["width"], video["height"]) == min(480, max(media["width"], media["height"])) and video["width"] % 2 == 0, name
        assert _streams(data, tmp_path) == {"video": "h264", "audio": "aac"} and video["has_audio"], name


@pytest.mark.parametrize(
    "start, end, size, audio",
    [(0.0, RAMP_S, (320, 240), 0), (2.013, 5.521, (160, 120), 0), (1.019, 1.981, (96, 72), None), (7.6, RAMP_S, (160, 120), 0), (3.0, 3.1, (64, 48), 0)],
)
def test_mp4_facts_read_in_process_are_what_ffprobe_reports(ramp: Path, start: float, end: float, size: tuple[int, int], audio: int | None):
    data = encode_clip(str(ramp), start, end, size, audio, 28, 64)  # the video stage's own MP4s: windows, sizes, with and without audio
    assert mp4_box_facts(data) == ffprobe_mp4_facts(data)  # field by field, the values ffprobe gave the records before
    assert mp4_box_facts(data)["has_audio"] is (audio is not None)


@pytest.mark.slow
def test_mp4_facts_of_every_demo_container_are_what_ffprobe_reports(demo_videos: Path):
    for name in CONTAINERS:
        clip = _run(VideoStage(), demo_videos / name)
        data = clip.media_files[MP4]
        assert mp4_box_facts(data) == ffprobe_mp4_facts(data) == {k: clip.fields["video"][k] for k in ffprobe_mp4_facts(data)}, name


def test_mp4_facts_of_an_unusual_file_come_from_ffprobe(ramp: Path, tmp_path: Path):
    fragmented = tmp_path / "fragmented.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(ramp), "-t", "2", "-c", "copy", "-movflags", "frag_keyframe+empty_moov", str(fragmented)], check=True)
    no_frame = encode_clip(str(ramp), 0.5, 0.54, (64, 48), 0, 28, 64)  # a window shorter than a frame: no video track
    for data in (fragmented.read_bytes(), no_frame):
        assert mp4_box_facts(data) is None and mp4_facts(data) == ffprobe_mp4_facts(data)
    assert mp4_facts(no_frame)["video_frames"] == 0 and mp4_box_facts(no_frame[:100]) is None and mp4_box_facts(b"not an mp4") is None


def test_frames_are_spread_over_the_window_in_time_order(ramp: Path):
    start, end, count = 1.5, 6.3, 8
    clip = _run(VideoStage(VideoConfig(mode="frames", frames=count, frame_max_side=64)), ramp, start, end)
    video = clip.fields["video"]
    assert sorted(clip.media_files) == ["flac", *(frame_member(i) for i in range(count))]  # frame_000.jpg ... frame_007.jpg
    assert [f["index"] for f in video["frames"]] == list(range(count)) and (video["width"], video["height"]) == (64, 48)
    times = [f["time_s"] for f in video["frames"]]
    slice_s = (end - start) / count
    for i, t in enumerate(times):  # the first frame at or after the middle of each equal slice
        assert (i + 0.5) * slice_s <= t < (i + 0.5) * slice_s + 1 / FPS + 1e-6, (i, t)
    reference = sample_frames(str(ramp), 0.0, RAMP_S, int(RAMP_S * FPS), (64, 48))  # every frame, through the same path
    luma, numbers = np.array([cv2.cvtColor(f, cv2.COLOR_BGR2GRAY).mean() for _, f in reference]), [round(t * FPS) for t, _ in reference]
    shown = []
    for i in range(count):
        image = cv2.imdecode(np.frombuffer(clip.media_files[frame_member(i)], np.uint8), cv2.IMREAD_COLOR)
        assert image.shape == (48, 64, 3)
        shown.append(numbers[int(np.argmin(np.abs(luma - cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).mean())))])
    assert shown == sorted(shown) and len(set(shown)) == count  # time order, no frame twice
    assert all(abs(n - (start + t) * FPS) <= 1 for n, t in zip(shown, times, strict=True)), (shown, times)  # each JPEG is the frame at its time
    assert video["size_bytes"] == sum(len(clip.media_files[frame_member(i)]) for i in range(count))
    again = _run(VideoStage(VideoConfig(mode="frames", frames=count, frame_max_side=64)), ramp, start, end)
    assert again.media_files == clip.media_files


def test_mode_none_adds_no_member_and_the_section_is_checked(ramp: Path):
    clip = _run(VideoStage(VideoConfig(mode="none")), ramp, 1.0, 2.0)
    assert sorted(clip.media_files) == ["flac"] and clip.fields["video"]["mode"] == "none" and clip.fields["video"]["size_bytes"] is None
    assert VideoStage(VideoConfig(mode="none")).provenance() == {"video_encoder": None}
    with pytest.raises(UserError, match=r"config key video.mode must be one of clip, frames, none, got 'mp4'"):
        config_from_dict({"video": {"mode": "mp4"}})
    with pytest.raises(UserError, match=r"config key video.crf must be between 0 and 51, got 60"):
        config_from_dict({"video": {"crf": 60}})


def test_new_members_pass_the_download_checks_and_unsafe_ones_do_not(tmp_path: Path):
    media = {"flac": b"fLaC", MP4: b"\x00\x00\x00\x18ftypisom", frame_member(0): b"\xff\xd8jpeg", frame_member(1): b"\xff\xd8jpeg"}
    shard = tmp_path / "train-00000-of-00001.tar"
    write_tar(shard, [({"key": "ep__000001000-000002000"}, media)])
    check_shard(shard, {"ep__000001000-000002000"})  # mp4 and frame_NNN.jpg are members the builder writes
    assert decode_entry(encode_entry({"mode": "clip"}, media)) == ({"mode": "clip"}, media)  # and the clip cache keeps them
    for bad in ("frame_000.pyd", "mp4.pickle", "frame 000.jpg"):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for name, data in ((f"k.{bad}", b"x"), ("k.json", b"{}")):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        (tmp_path / "bad.tar").write_bytes(buf.getvalue())
        with pytest.raises(ValueError, match="is not one the builder"):
            check_shard(tmp_path / "bad.tar", {"k"})


def _rows(out: Path) -> dict[str, dict]:
    return {r["key"]: r for p in sorted((out / "data").glob("*.parquet")) for r in pq.read_table(p).to_pylist()}


def _shards(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "media").glob("*.tar"))}


@pytest.mark.slow
def test_segmented_builds_carry_each_utterances_video_cached_like_every_stage(demo_videos: Path, tmp_path: Path):
    from emer_builder.pipelines.build import build

    videos = tmp_path / "videos"
    make_episode(demo_videos, videos / "ep1.mp4")
    write_srt(videos / "ep1.srt", [(*FIRST_SPEECH, "he was not an ill disposed young man."), (*SECOND_SPEECH, "front center.")])
    cache = str(tmp_path / "cache")
    base = {"transcript": {"model": "tiny.en"}, "segment": {"mode": "subtitles"}, "split": {"ratios": {"train": 1.0}}, "cache": {"dir": cache}}
    first = build(videos, tmp_path / "a", config_from_dict(base), workers=1, show_progress=False)
    assert first.records == 2 and first.stage_runs["video"] == 2
    rows = _rows(tmp_path / "a")
    media = load_split(tmp_path / "a", split="train", config="media", cache_dir=tmp_path / "hf")
    assert sorted(media["__key__"]) == sorted(rows)
    for sample in media:
        row = rows[sample["__key__"]]
        start, end = row["segment"]["start_s"], row["segment"]["end_s"]
        assert (row["video"]["start_s"], row["video"]["end_s"]) == (start, end) and row["video"]["mode"] == "clip"
        assert abs(mp4_facts(sample["mp4"])["duration_s"] - (end - start)) <= 1 / row["media"]["fps"]  # the utterance, not the episode
        assert len(sample["mp4"]) == row["video"]["size_bytes"] and row["provenance"]["video_encoder"].startswith("ffmpeg ")
    assert {s["__key__"]: s["mp4"] for s in iter_samples(tmp_path / "a", split="train")} == {s["__key__"]: s["mp4"] for s in media}
    again = build(videos, tmp_path / "b", config_from_dict(base), workers=1, show_progress=False)
    assert again.stage_runs["video"] == 0 and again.cache_restored == {"video": 2}
    assert _shards(tmp_path / "a") == _shards(tmp_path / "b")  # restored from the cache: the same bytes
    frames = build(videos, tmp_path / "c", config_from_dict({**base, "video": {"mode": "frames", "frames": 4}}), workers=1, show_progress=False)
    assert frames.stage_runs["video"] == 2 and frames.stage_runs["transcript"] == 0  # only the video stage reran
    loaded = load_split(tmp_path / "c", split="train", config="media", cache_dir=tmp_path / "hf")
    sample = loaded[0]
    assert "mp4" not in sample and [sample[f"frame_{i:03d}.jpg"].size for i in range(4)] == [(224, 168)] * 4  # frames decode as images
    assert [f["index"] for f in _rows(tmp_path / "c")[sample["__key__"]]["video"]["frames"]] == [0, 1, 2, 3]
    for streamed in iter_samples(tmp_path / "c", split="train"):  # frames in time order, no mp4
        assert streamed["mp4"] is None and [f[:2] for f in streamed["frames"]] == [b"\xff\xd8"] * 4


@pytest.mark.slow
def test_make_demo_long_episode_gives_utterance_records_with_their_video(tmp_path: Path):
    """What `make demo` builds second: the 3.5-minute episode cut by its subtitles, default config."""
    from emer_builder.pipelines.build import build

    from bench.demo_corpus import demo_episode

    summary = build(demo_episode(), tmp_path / "out", config_from_dict({"segment": {"mode": "subtitles"}}), workers=2, show_progress=False)
    rows = _rows(tmp_path / "out")
    assert summary.records == len(rows) >= 20
    videos = {}
    for shard in sorted((tmp_path / "out" / "media").glob("*.tar")):
        with tarfile.open(shard) as tar:
            videos.update({m.name.removesuffix(".mp4"): tar.extractfile(m).read() for m in tar if m.name.endswith(".mp4")})
    assert sorted(videos) == sorted(rows)
    for key, row in rows.items():
        length = row["segment"]["end_s"] - row["segment"]["start_s"]
        assert row["video"]["mode"] == "clip" and abs(mp4_facts(videos[key])["duration_s"] - length) <= 1 / row["media"]["fps"], key
