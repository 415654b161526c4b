import hashlib
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from emer_builder.core.config import config_from_dict
from emer_builder.core.errors import UserError
from emer_builder.transforms.clip import Clip, ClipError
from emer_builder.transforms.stages.decode import (
    AudioStream,
    DecodeStage,
    check_file,
    choose_audio,
    decode,
    frame_size,
    language_matches,
    probe,
    probe_media,
    remove_stale_scratch,
    runs_past,
    sniff,
)

from tests.hostile import cut, make_media, patch_mkv_duration, patch_mp4_duration, run_ffmpeg


@pytest.fixture(scope="module")
def media(demo_videos: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Small real files made from the demo recordings: a 9 s film, two audio tracks, a single frame, ..."""
    return make_media(demo_videos, tmp_path_factory.mktemp("decode-media"))


def test_probe_the_kphotoalbum_film(kphotoalbum_movie: Path):
    media = probe_media(str(kphotoalbum_movie))
    assert media["container"] == "avi"
    assert media["video_codec"] == "mjpeg" and (media["width"], media["height"]) == (160, 120)
    assert media["audio_codec"] == "pcm_u8" and media["audio_sample_rate"] == 11024 and media["has_audio"]
    assert media["duration_s"] == pytest.approx(4.533, abs=0.01)
    assert media["fps"] == pytest.approx(15.0, abs=0.01)
    assert media["sha256"] == "4f5fb4ee2319d3bcb9f0fb46f73cb02e5b271e204e078302e50cb30b4e36960b"
    assert media["size_bytes"] == 491_853
    assert media["audio_stream"] == 0 and media["audio_language"] is None and media["other_audio_streams"] == []


def test_decode_once_gives_16k_audio_and_frames_at_2fps(kphotoalbum_movie: Path):
    clip = Clip("movie", str(kphotoalbum_movie), "movie.avi")
    DecodeStage(sample_fps=2.0).process(clip)
    assert clip.audio.dtype == np.float32
    assert len(clip.audio) / 16_000 == pytest.approx(4.53, abs=0.05)
    assert 0.01 < float(np.sqrt(np.mean(clip.audio**2))) < 0.5  # real speech, not silence or clipping
    assert [t for t, _ in clip.frames] == [i / 2 for i in range(9)]
    assert clip.frames[0][1].shape == (120, 160, 3)
    media = clip.fields["media"]
    assert media["frames_sampled"] == 9
    # 68 frames at 15 fps end at 4.533 s, as the header says: the header's value stands
    assert media["duration_s"] == media["declared_duration_s"] == pytest.approx(4.533288)
    assert media["decoded_duration_s"] == pytest.approx(4.5334, abs=0.001) and media["decoded_fraction"] == pytest.approx(1.0, abs=0.001)
    assert media["truncated"] is False
    assert clip.media_files["flac"][:4] == b"fLaC"


def test_decoding_is_deterministic(demo_videos: Path):
    path = str(demo_videos / "sample_00000890.webm")
    runs = []
    for _ in range(2):
        clip = Clip("k", path, "k.webm")
        DecodeStage().process(clip)
        runs.append(clip)
    assert runs[0].fields == runs[1].fields and runs[0].media_files == runs[1].media_files
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(runs[0].frames, runs[1].frames, strict=True))


def test_frames_are_scaled_to_fit(demo_videos: Path):
    assert frame_size(1920, 1080, 640) == (640, 360)
    assert frame_size(160, 120, 640) == (160, 120)
    info = probe(str(demo_videos / "sample_00000880.mkv"))
    decoded = decode(str(demo_videos / "sample_00000880.mkv"), info, 4.0, 320)
    assert decoded.frames[0][1].shape == (320, 212, 3)  # portrait photo, longer side 320
    assert len(decoded.frames) == pytest.approx(info.declared_duration_s * 4, abs=1.5)
    assert decoded.video_frames == 125 and decoded.video_end_s == pytest.approx(5.0)  # every frame counted, not only the sampled ones


def test_unreadable_inputs_raise_clip_errors(tmp_path: Path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "text.mp4").write_text("hello\n" * 100)
    (tmp_path / "binary.mp4").write_bytes(b"".join(hashlib.sha256(bytes([i])).digest() for i in range(200)))
    with pytest.raises(ClipError, match="file is empty"):
        probe_media(str(tmp_path / "empty.mp4"))
    with pytest.raises(ClipError, match="^not a readable media file: it is a text file, not a video$"):
        probe_media(str(tmp_path / "text.mp4"))
    with pytest.raises(ClipError, match="^not a readable media file: Invalid data found when processing input$"):
        probe_media(str(tmp_path / "binary.mp4"))  # no file name in the message: the failure row names the file
    with pytest.raises(ClipError, match="cannot read file: No such file or directory"):
        probe_media(str(tmp_path / "missing.mp4"))


@pytest.mark.timeout(30)
def test_special_files_are_refused_without_opening_them(tmp_path: Path):
    os.mkfifo(tmp_path / "pipe.mp4")  # opening it would wait for a writer forever
    os.symlink("/dev/zero", tmp_path / "zero.mp4")  # reading it would never end
    with pytest.raises(ClipError, match=r"^not a regular file: a named pipe \(FIFO\), not a video$"):
        DecodeStage().process(Clip("pipe", str(tmp_path / "pipe.mp4"), "pipe.mp4"))
    with pytest.raises(ClipError, match=r"^not a regular file: a character device \(/dev/zero, through a symlink\), not a video$"):
        check_file(str(tmp_path / "zero.mp4"))
    with pytest.raises(ClipError, match="not a regular file: a folder"):
        check_file(str(tmp_path))


def test_sniff_says_what_a_renamed_file_is(tmp_path: Path):
    cases = {
        "doc.mp4": (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n", "a PDF document"),
        "arch.mp4": (b"PK\x03\x04" + bytes(60), "a ZIP archive (or an office document)"),
        "page.mp4": (b"  <!doctype html><title>403</title>", "an HTML page (a download that saved an error page?)"),
        "notes.mp4": ("Zeile mit Umlauten: äöü\n".encode() * 300, "a text file"),
        "noise.mp4": (bytes(range(256)), None),
    }
    for name, (data, what) in cases.items():
        (tmp_path / name).write_bytes(data)
        assert sniff(str(tmp_path / name)) == what, name


def test_a_still_image_renamed_mp4_says_so(media: dict[str, Path], tmp_path: Path):
    renamed = tmp_path / "photo.mp4"
    renamed.write_bytes(media["photo.png"].read_bytes())
    size = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "stream=width,height", "-of", "csv=s=x:p=0", str(media["photo.png"])],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # the photo's size follows the kphotoalbum package Debian ships
    assert size.startswith("320x")
    with pytest.raises(ClipError, match=rf"^not a video: it is a still image \(PNG, {size}\)$"):
        probe(str(renamed))


def test_audio_with_cover_art_is_not_a_video(media: dict[str, Path]):
    with pytest.raises(ClipError, match=r"^no video stream: it is an audio file \(aac, with cover art\)$"):
        probe(str(media["cover_art.mp4"]))


def test_one_audio_stream_is_chosen_and_the_others_listed(media: dict[str, Path]):
    path = str(media["dual_audio.mkv"])
    default = probe(path)
    assert (default.audio.number, default.audio.language, default.audio.is_default) == (1, "fra", True)
    assert default.media["other_audio_streams"] == [{"stream": 0, "codec": "aac", "language": "eng", "channels": 1, "is_default": False}]
    assert probe(path, audio_language="en").audio.number == 0  # ISO 639-1 finds the `eng` tag
    assert probe(path, audio_language="eng").audio.number == 0
    assert probe(path, audio_stream=0).audio.number == 0
    assert probe(path, audio_language="ja").audio.number == 1  # no Japanese track: the default one
    assert probe(path, audio_stream=7).audio.number == 1  # no such stream: the default one
    clip = Clip("dual", path, "dual_audio.mkv")
    DecodeStage(audio_language="en").process(clip)
    # one 2.99 s track (plus AAC padding), not both tracks interleaved into 6.4 s
    assert len(clip.audio) / 16_000 == pytest.approx(2.99, abs=0.15)
    assert clip.fields["media"]["audio_stream"] == 0 and clip.fields["media"]["audio_language"] == "eng"
    assert clip.fields["media"]["other_audio_streams"][0]["language"] == "fra"


def test_choose_audio_rules():
    def stream(n: int, lang: str | None, default: bool) -> AudioStream:
        return AudioStream(n, n + 1, "aac", lang, 2, 48000, default)

    a, b, c = stream(0, "chi", False), stream(1, "eng", True), stream(2, None, False)
    assert choose_audio([]) == (None, [])
    assert choose_audio([a, b, c]) == (b, [a, c])  # default disposition
    assert choose_audio([a, c]) == (a, [c])  # else the first
    assert choose_audio([a, b, c], audio_language="zh") == (a, [b, c])
    assert choose_audio([a, b, c], audio_stream=2) == (c, [a, b])
    assert choose_audio([a, b, c], audio_stream=2, audio_language="en") == (b, [a, c])  # the language wins
    assert language_matches("chi", "zho") and language_matches("zho", "zh") and language_matches("ENG", "en")
    assert not language_matches(None, "en") and not language_matches("eng", "de")


def test_stage_settings_are_checked_with_its_config_section():
    """The decode section's keys carry their checks (core/config.py); the stage is built from the checked section."""
    for section, message in (
        ({"audio_stream": -1}, "config key decode.audio_stream must be at least 0 or null, got -1"),
        ({"audio_stream": 1.5}, "config key decode.audio_stream must be an integer or null, got 1.5"),
        ({"audio_language": "english"}, "config key decode.audio_language must be a 2- or 3-letter ISO 639 code or null, got 'english'"),
        ({"min_decoded_fraction": 1.5}, "config key decode.min_decoded_fraction must be between 0 and 1, got 1.5"),
    ):
        with pytest.raises(UserError) as caught:
            config_from_dict({"decode": section})
        assert str(caught.value) == message
    stage = DecodeStage.from_config(config_from_dict({"decode": {"audio_language": "eng", "min_decoded_fraction": 0}}).decode)
    assert (stage.audio_language, stage.min_decoded_fraction, stage.sample_fps) == ("eng", 0.0, 2.0)


def test_a_header_that_claims_an_hour_does_not_decide(media: dict[str, Path], tmp_path: Path):
    for name, patch in (("lie.mkv", patch_mkv_duration), ("lie.mp4", patch_mp4_duration)):
        src = media["film9.mkv" if name.endswith("mkv") else "film9_faststart.mp4"]
        lie = tmp_path / name
        lie.write_bytes(src.read_bytes())
        patch(lie, 3600.0)
        assert probe(str(lie)).declared_duration_s == 3600.0
        clip = Clip("lie", str(lie), name)
        DecodeStage(max_duration_s=600).process(clip)  # the old check refused it as "3600 s long: cut it"
        m = clip.fields["media"]
        assert m["duration_s"] == m["decoded_duration_s"] == pytest.approx(9.1, abs=0.15)
        assert m["declared_duration_s"] == 3600.0 and m["decoded_fraction"] < 0.01 and m["truncated"] is False


def test_decoding_stops_at_the_maximum_whatever_the_header_says(media: dict[str, Path], tmp_path: Path):
    short_header = tmp_path / "long_but_says_5s.mkv"
    short_header.write_bytes(media["film30.mkv"].read_bytes())
    patch_mkv_duration(short_header, 5.0)
    info = probe(str(short_header))
    assert info.declared_duration_s == 5.0
    decoded = decode(str(short_header), info, 2.0, 640, limit_s=8.5)
    assert decoded.duration_s == pytest.approx(8.5, abs=0.1) and len(decoded.frames) <= 18  # bounded by the limit, not the file
    with pytest.raises(
        ClipError,
        match=r"^clip is longer than the maximum of 8 s \(decode.max_duration_s\): decoding stopped there; its header says only 5 s; cut it into clips$",
    ):
        DecodeStage(max_duration_s=8).process(Clip("k", str(short_header), "k.mkv"))
    # a header that says 30 s, and is right: refused after a one-second look past the maximum
    assert runs_past(str(media["film30.mkv"]), probe(str(media["film30.mkv"])), 8.1)
    assert not runs_past(str(media["film9.mkv"]), probe(str(media["film9.mkv"])), 9.5)
    with pytest.raises(ClipError, match=r"longer than the maximum of 8 s \(decode.max_duration_s; its header says 30 s\): cut it into clips"):
        DecodeStage(max_duration_s=8).process(Clip("k", str(media["film30.mkv"]), "k.mkv"))


def test_a_cut_file_is_flagged_or_failed_by_how_much_decodes(media: dict[str, Path], tmp_path: Path):
    cut(media["film9_faststart.mp4"], tmp_path / "cut75.mp4", 0.75)
    cut(media["film9_faststart.mp4"], tmp_path / "cut25.mp4", 0.25)
    clip = Clip("cut75", str(tmp_path / "cut75.mp4"), "cut75.mp4")
    DecodeStage().process(clip)
    m = clip.fields["media"]
    assert m["truncated"] is True and m["declared_duration_s"] == pytest.approx(9.067, abs=0.01)
    assert m["duration_s"] == m["decoded_duration_s"] == pytest.approx(len(clip.audio) / 16_000, abs=0.6)
    assert 0.55 < m["decoded_fraction"] < 0.9 and m["frames_sampled"] == len(clip.frames)
    with pytest.raises(
        ClipError,
        match=r"^file is truncated: only 2\.\d\d s of its declared 9\.07 s could be decoded \(2\d%, below decode.min_decoded_fraction 0\.5; ffmpeg: mov,mp4,m4a,3gp,3g2,mj2: stream \d, offset 0x[0-9a-f]+: partial file\)$",
    ):
        DecodeStage().process(Clip("cut25", str(tmp_path / "cut25.mp4"), "cut25.mp4"))
    DecodeStage(min_decoded_fraction=0.0).process(clip := Clip("cut25", str(tmp_path / "cut25.mp4"), "cut25.mp4"))
    assert clip.fields["media"]["truncated"] is True  # with the fraction at 0 it is a flagged record
    data = media["film9_faststart.mp4"].read_bytes()
    (tmp_path / "header_only.mp4").write_bytes(data[: data.find(b"mdat") + 64])  # the full index, almost no media data
    with pytest.raises(ClipError, match=r"^file is truncated: no video frame could be decoded from its declared 9\.07 s \(ffmpeg: .*partial file\)$"):
        DecodeStage().process(Clip("header_only", str(tmp_path / "header_only.mp4"), "header_only.mp4"))


def test_cut_without_read_errors_is_not_called_truncated(media: dict[str, Path], tmp_path: Path):
    """A stream of packets cut at a packet boundary (MPEG-TS) reads cleanly: its declared length is
    what is there, so nothing disagrees and nothing is flagged."""
    ts = tmp_path / "film.ts"
    run_ffmpeg("-i", media["film9.mkv"], "-c", "copy", ts)
    cut(ts, tmp_path / "cut.ts", 0.55)
    clip = Clip("cut", str(tmp_path / "cut.ts"), "cut.ts")
    DecodeStage().process(clip)
    assert clip.fields["media"]["truncated"] is False


def test_single_frame_videos_give_their_frame(media: dict[str, Path]):
    clip = Clip("one", str(media["single_frame.mp4"]), "one.mp4")
    DecodeStage().process(clip)  # one frame shown for 0.04 s and 3 s of speech: the sampling filter yields nothing
    width, height = clip.fields["media"]["width"], clip.fields["media"]["height"]  # the photo's size follows Debian's kphotoalbum
    assert width == 320 and len(clip.frames) == 1 and clip.frames[0][0] == 0.0 and clip.frames[0][1].shape == (height, width, 3)
    assert clip.fields["media"]["frames_sampled"] == 1 and clip.fields["media"]["has_audio"]
    still = Clip("still", str(media["still_5s.mp4"]), "still.mp4")
    DecodeStage().process(still)  # one frame that lasts 5 s
    assert still.fields["media"]["frames_sampled"] == 10 and still.fields["media"]["duration_s"] == 5.0


def test_a_truncated_avi_is_flagged_from_its_header_frame_count(demo_videos: Path, tmp_path: Path):
    """An AVI's header counts its frames; ffprobe's duration only says what the data holds, so a cut AVI
    once passed as whole (declared 2.7 s, decoded 3.0 s, fraction 1.1)."""
    whole = demo_videos / "jesper_intro.avi"  # 68 MJPEG frames at 15 fps: 4.53 s
    cut(whole, tmp_path / "avi_truncated.avi", 0.6)
    info = probe(str(tmp_path / "avi_truncated.avi"))
    assert info.declared_duration_s == pytest.approx(4.533, abs=0.01) and info.frames_counted
    clip = Clip("t", str(tmp_path / "avi_truncated.avi"), "avi_truncated.avi")
    DecodeStage().process(clip)
    m = clip.fields["media"]
    assert m["truncated"] is True and m["declared_duration_s"] == pytest.approx(4.533, abs=0.01)
    assert 0.5 < m["decoded_fraction"] < 0.9 and m["duration_s"] == m["decoded_duration_s"] < 4
    DecodeStage().process(whole_clip := Clip("w", str(whole), whole.name))
    assert whole_clip.fields["media"]["truncated"] is False and whole_clip.fields["media"]["decoded_fraction"] == pytest.approx(1.0, abs=0.01)
    cut(whole, tmp_path / "avi_cut_early.avi", 0.35)
    with pytest.raises(ClipError, match=r"^file is truncated: only \d\.\d\d s of its declared 4\.53 s could be decoded \([1-4]\d%, below decode.min_decoded_fraction"):
        DecodeStage().process(Clip("e", str(tmp_path / "avi_cut_early.avi"), "avi_cut_early.avi"))


def test_duration_describes_the_decoded_streams_not_an_unused_longer_one(tmp_path: Path):
    path = tmp_path / "dub_longer.mp4"
    run_ffmpeg(
        *("-f", "lavfi", "-i", "testsrc=size=96x64:rate=10:duration=2", "-f", "lavfi", "-i", "sine=frequency=300:duration=4"),
        *("-f", "lavfi", "-i", "sine=frequency=500:duration=2", "-map", "0:v", "-map", "1:a", "-map", "2:a", "-c:v", "libx264", "-c:a", "aac"),
        *("-disposition:a:0", "0", "-disposition:a:1", "default"),
        path,
    )
    clip = Clip("d", str(path), path.name)
    DecodeStage().process(clip)
    m = clip.fields["media"]
    assert m["audio_stream"] == 1 and len(m["other_audio_streams"]) == 1
    assert m["declared_duration_s"] == pytest.approx(4.0, abs=0.1)  # the container's: the unused stream's length
    assert m["duration_s"] == m["decoded_duration_s"] == pytest.approx(2.0, abs=0.15)


def test_scratch_of_a_killed_worker_is_removed_and_a_live_ones_kept(tmp_path: Path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    (tmp_path / f"emer-decode-{dead.pid}-abc").mkdir()
    (tmp_path / f"emer-decode-{dead.pid}-abc" / "audio.f32").write_bytes(b"\0" * 1024)
    (tmp_path / f"emer-decode-{os.getpid()}-def").mkdir()
    (tmp_path / "emer-decode-notapid").mkdir()
    assert remove_stale_scratch(str(tmp_path)) == [f"emer-decode-{dead.pid}-abc"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"emer-decode-{os.getpid()}-def", "emer-decode-notapid"]
