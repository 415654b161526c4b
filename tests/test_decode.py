from pathlib import Path

import numpy as np
import pytest
from emer_builder.transforms.clip import Clip, ClipError
from emer_builder.transforms.decode import DecodeStage, decode, frame_size, probe_media


def test_probe_the_kphotoalbum_film(kphotoalbum_movie: Path):
    media = probe_media(str(kphotoalbum_movie))
    assert media["container"] == "avi"
    assert media["video_codec"] == "mjpeg" and (media["width"], media["height"]) == (160, 120)
    assert media["audio_codec"] == "pcm_u8" and media["audio_sample_rate"] == 11024 and media["has_audio"]
    assert media["duration_s"] == pytest.approx(4.533, abs=0.01)
    assert media["fps"] == pytest.approx(15.0, abs=0.01)
    assert media["sha256"] == "4f5fb4ee2319d3bcb9f0fb46f73cb02e5b271e204e078302e50cb30b4e36960b"
    assert media["size_bytes"] == 491_853


def test_decode_once_gives_16k_audio_and_frames_at_2fps(kphotoalbum_movie: Path):
    clip = Clip("movie", str(kphotoalbum_movie), "movie.avi")
    DecodeStage(sample_fps=2.0).process(clip)
    assert clip.audio.dtype == np.float32
    assert len(clip.audio) / 16_000 == pytest.approx(4.53, abs=0.05)
    assert 0.01 < float(np.sqrt(np.mean(clip.audio**2))) < 0.5  # real speech, not silence or clipping
    assert [t for t, _ in clip.frames] == [i / 2 for i in range(9)]
    assert clip.frames[0][1].shape == (120, 160, 3)
    assert clip.fields["media"]["frames_sampled"] == 9
    assert clip.media_files["flac"][:4] == b"fLaC"


def test_frames_are_scaled_to_fit(demo_videos: Path):
    assert frame_size(1920, 1080, 640) == (640, 360)
    assert frame_size(160, 120, 640) == (160, 120)
    media = probe_media(str(demo_videos / "sample_00000880.mkv"))
    _, frames = decode(str(demo_videos / "sample_00000880.mkv"), media, 4.0, 320)
    assert frames[0][1].shape == (320, 212, 3)  # portrait photo, longer side 320
    assert len(frames) == pytest.approx(media["duration_s"] * 4, abs=1.5)


def test_unreadable_inputs_raise_clip_errors(tmp_path: Path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "text.mp4").write_text("hello\n" * 100)
    with pytest.raises(ClipError, match="file is empty"):
        probe_media(str(tmp_path / "empty.mp4"))
    with pytest.raises(ClipError, match="not a readable media file: .*Invalid data"):
        probe_media(str(tmp_path / "text.mp4"))
    with pytest.raises(ClipError, match="cannot read file"):
        probe_media(str(tmp_path / "missing.mp4"))
