from pathlib import Path

import cv2
import numpy as np
import pytest
from emer_builder.schemas.v1 import EXPRESSION_CLASSES
from emer_builder.transforms.clip import Clip
from emer_builder.transforms.decode import DecodeStage
from emer_builder.transforms.faces import Detection, FacesStage, FerTfliteExpression, analyse_faces, main_track, track_faces


@pytest.fixture(scope="module")
def faces_stage() -> FacesStage:
    stage = FacesStage()
    stage.setup()
    return stage


def _decoded(path: Path) -> Clip:
    clip = Clip(path.stem, str(path), path.name)
    DecodeStage().process(clip)
    return clip


def test_face_in_the_kphotoalbum_film(faces_stage: FacesStage, kphotoalbum_movie: Path):
    clip = _decoded(kphotoalbum_movie)
    faces_stage.process(clip)
    faces = clip.fields["faces"]
    assert faces["reason"] is None and faces["tracks"] == 1
    assert faces["frames_with_face"] == 9 and len(faces["crops"]) == 9
    for crop in faces["crops"]:
        box = crop["box"]
        # the man's face is in the upper middle of the 160x120 frame, about 65 px wide
        assert 40 <= box["x"] <= 70 and 5 <= box["y"] <= 30 and 50 <= box["w"] <= 80 and box["w"] == box["h"]
        assert crop["confidence"] > 0.8
        assert sum(crop["expression"].values()) == pytest.approx(1.0, abs=0.01)
    image = cv2.imdecode(np.frombuffer(clip.media_files["face_000.jpg"], np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (224, 224, 3)
    assert sorted(k for k in clip.media_files if k.startswith("face_")) == [f"face_{i:03d}.jpg" for i in range(9)]


def test_smiling_face_scores_happy(faces_stage: FacesStage, demo_videos: Path):
    clip = _decoded(demo_videos / "sample_00000870.mp4")
    faces_stage.process(clip)
    mean = clip.fields["faces"]["expression_mean"]
    assert list(mean) == list(EXPRESSION_CLASSES)
    assert max(mean, key=mean.get) == "happy" and mean["happy"] > 0.8
    assert len(clip.fields["faces"]["crops"]) == 16  # 18 frames sampled, capped at max_crops evenly


def test_main_face_is_the_one_present_most_often(faces_stage: FacesStage, demo_videos: Path):
    clip = _decoded(demo_videos / "sample_00000930.flv")  # a photo with three faces
    faces_stage.process(clip)
    faces = clip.fields["faces"]
    assert faces["tracks"] == 3
    boxes = [c["box"] for c in faces["crops"]]
    assert len({(b["x"] // 10, b["y"] // 10) for b in boxes}) == 1  # one face followed over time
    assert 190 <= boxes[0]["x"] <= 215 and 100 <= boxes[0]["w"] <= 115


def test_no_face_is_a_valid_result(faces_stage: FacesStage, demo_videos: Path):
    clip = _decoded(demo_videos / "no_face_dog.mp4")
    faces_stage.process(clip)
    faces = clip.fields["faces"]
    assert faces["crops"] == [] and faces["expression_mean"] is None and faces["tracks"] == 0
    assert faces["reason"] == f"no face in {len(clip.frames)} sampled frames"
    assert not [k for k in clip.media_files if k.startswith("face_")]


def test_tracking_links_overlapping_boxes_across_frames():
    blank = np.zeros((4, 4, 3), np.uint8)
    dets = [Detection(f, f / 2, (100 + f, 50, 60, 60), 0.9, blank) for f in range(5)]
    dets += [Detection(f, f / 2, (300, 40, 80, 80), 0.95, blank) for f in (1, 3)]
    tracks = track_faces(dets)
    assert sorted(len(t) for t in tracks) == [2, 5]
    assert [d.frame_index for d in main_track(tracks)] == [0, 1, 2, 3, 4]
    assert main_track([]) == []


def test_expression_model_scores_sum_to_one():
    model = FerTfliteExpression()
    scores = model.scores(np.full((80, 80, 3), 128, np.uint8))
    assert scores.shape == (7,) and scores.sum() == pytest.approx(1.0, abs=0.01)
    fields, jpegs = analyse_faces([(0.0, np.zeros((64, 64, 3), np.uint8))], model)
    assert fields["reason"] == "no face in 1 sampled frames" and jpegs == []


def test_boxes_are_in_the_videos_own_pixels_whatever_the_sampling_size(faces_stage: FacesStage, demo_videos: Path):
    path = demo_videos / "sample_00000870.mp4"
    full, half = Clip("a", str(path), path.name), Clip("b", str(path), path.name)
    DecodeStage(sample_fps=1.0).process(full)
    DecodeStage(sample_fps=1.0, frame_max_side=320).process(half)
    assert half.frames[0][1].shape[1] == 320 and full.frames[0][1].shape[1] == 640
    faces_stage.process(full)
    faces_stage.process(half)
    big, small = full.fields["faces"]["crops"][0]["box"], half.fields["faces"]["crops"][0]["box"]
    assert 190 <= big["x"] <= 220 and 200 <= big["w"] <= 250
    for k in "xywh":
        assert abs(big[k] - small[k]) <= 12, (big, small)


def test_rotated_phone_video_is_decoded_upright(faces_stage: FacesStage, demo_videos: Path, tmp_path: Path):
    import ffmpeg

    sideways, tagged = tmp_path / "sideways.mp4", tmp_path / "phone.mp4"
    src = ffmpeg.input(str(demo_videos / "sample_00000870.mp4"))
    ffmpeg.output(src.video.filter("transpose", 2), src.audio, str(sideways), vcodec="libx264", acodec="copy").global_args("-v", "error").run()
    ffmpeg.output(ffmpeg.input(str(sideways)), str(tagged), c="copy", **{"metadata:s:v:0": "rotate=90"}).global_args("-v", "error").run()
    clip = _decoded(tagged)
    media = clip.fields["media"]
    assert media["width"] > media["height"]  # shown landscape, stored portrait
    assert clip.frames[0][1].shape[1] > clip.frames[0][1].shape[0]
    faces_stage.process(clip)
    assert clip.fields["faces"]["frames_with_face"] == len(clip.frames)  # the face is upright, so it is found
