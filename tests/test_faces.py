import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from emer_builder.schemas.v1 import EXPRESSION_CLASSES
from emer_builder.transforms.clip import Clip
from emer_builder.transforms.stages.decode import DecodeStage
from emer_builder.transforms.stages.faces import (
    Detection,
    FacesStage,
    FerTfliteExpression,
    YuNetDetector,
    aligned_square,
    alignment_matrix,
    analyse_faces,
    iou,
    main_track,
    track_faces,
)

DEMO_FACES = ("jesper_intro.avi", "sample_00000870.mp4", "sample_00000880.mkv", "sample_00000890.webm", "sample_00000920.mov", "sample_00000930.flv")
SMILING = ("sample_00000870.mp4", "sample_00000880.mkv", "sample_00000930.flv")  # photos of people smiling broadly


@pytest.fixture(scope="module")
def faces_stage() -> FacesStage:
    stage = FacesStage()  # the default: YuNet
    stage.setup()
    return stage


@pytest.fixture(scope="module")
def old_stage() -> FacesStage:
    stage = FacesStage(detector="opencv")  # the path before issue 11: DeepFace's Haar cascades + alignment
    stage.setup()
    return stage


def _decoded(path: Path) -> Clip:
    clip = Clip(path.stem, str(path), path.name)
    DecodeStage().process(clip)
    return clip


@pytest.fixture(scope="module")
def both_paths(demo_videos: Path, faces_stage: FacesStage, old_stage: FacesStage) -> dict[str, tuple[Clip, dict, dict]]:
    """Every demo clip decoded once and analysed by the new and the old path."""
    out = {}
    for path in sorted(demo_videos.iterdir()):
        clip = _decoded(path)
        new, old = Clip(clip.key, clip.path, clip.source_path, fields=dict(clip.fields), frames=clip.frames), Clip(clip.key, clip.path, clip.source_path, fields=dict(clip.fields), frames=clip.frames)
        faces_stage.process(new)
        old_stage.process(old)
        out[path.name] = (clip, new.fields["faces"], old.fields["faces"])
    return out


def test_face_in_the_kphotoalbum_film(faces_stage: FacesStage, kphotoalbum_movie: Path):
    clip = _decoded(kphotoalbum_movie)
    faces_stage.process(clip)
    faces = clip.fields["faces"]
    assert faces["reason"] is None and faces["tracks"] == 1 and faces["detector"] == "yunet@320px"
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
    clip = _decoded(demo_videos / "sample_00000930.flv")  # a bar: the couple in front, people behind
    faces_stage.process(clip)
    faces = clip.fields["faces"]
    assert faces["tracks"] >= 3  # YuNet also finds the small faces behind the couple
    boxes = [c["box"] for c in faces["crops"]]
    assert max(b["x"] for b in boxes) - min(b["x"] for b in boxes) <= 6 and max(b["y"] for b in boxes) - min(b["y"] for b in boxes) <= 6  # one face
    assert boxes[0]["w"] >= 90  # one of the couple, not a face in the background


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
    fields, jpegs = analyse_faces([(0.0, np.zeros((64, 64, 3), np.uint8))], model, YuNetDetector())
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


# Quality kept against the old path (issue 11), on the demo clips


def test_the_same_demo_clips_get_a_main_face(both_paths: dict):
    with_face_new = sorted(name for name, (_, new, _) in both_paths.items() if new["crops"])
    with_face_old = sorted(name for name, (_, _, old) in both_paths.items() if old["crops"])
    assert with_face_new == with_face_old == sorted(DEMO_FACES)


def test_old_main_face_boxes_are_found_again(both_paths: dict, faces_stage: FacesStage):
    """On every frame where the old path found its main face, YuNet finds that face with box IoU >= 0.7;
    where both paths chose the same person as the main face, their boxes agree to IoU >= 0.7 too."""
    for name in DEMO_FACES:
        clip, new, old = both_paths[name]
        scale = clip.fields["media"]["width"] / clip.frames[0][1].shape[1]
        found = faces_stage._detect(clip.frames)
        index_of = {t: i for i, (t, _) in enumerate(clip.frames)}
        new_main = {c["time_s"]: tuple(c["box"].values()) for c in new["crops"]}
        for crop in old["crops"]:
            box = tuple(crop["box"].values())
            frame = index_of[crop["time_s"]]
            best = max((iou(box, tuple(round(v * scale) for v in d.box)) for d in found if d.frame_index == frame), default=0.0)
            assert best >= 0.7, (name, crop["time_s"], box, best)
            if crop["time_s"] in new_main and iou(box, new_main[crop["time_s"]]) > 0.3:  # the same person
                assert iou(box, new_main[crop["time_s"]]) >= 0.7, (name, crop["time_s"])


@pytest.mark.parametrize("name", SMILING)
def test_smiling_demo_faces_still_rank_happy_first(both_paths: dict, name: str):
    _, new, old = both_paths[name]
    for faces in (new, old):
        mean = faces["expression_mean"]
        assert max(mean, key=mean.get) == "happy", (name, faces["detector"], mean)


def test_old_path_stays_selectable(both_paths: dict):
    _, new, old = both_paths["sample_00000870.mp4"]
    assert old["detector"] == "opencv" and new["detector"] == "yunet@320px"
    assert old["expression_model"] == new["expression_model"]
    assert set(old) == set(new)  # the same field group shape (the explanation reads the same timeline)


def test_yunet_path_is_deterministic(demo_videos: Path):
    clip = _decoded(demo_videos / "sample_00000890.webm")
    results = []
    for _ in range(2):
        stage = FacesStage()
        stage.setup()
        copy = Clip(clip.key, clip.path, clip.source_path, fields=dict(clip.fields), frames=clip.frames)
        stage.process(copy)
        results.append((copy.fields["faces"], copy.media_files))
    assert results[0] == results[1]


def test_crops_are_cut_from_the_full_frame_with_the_eyes_level(demo_videos: Path):
    clip = _decoded(demo_videos / "sample_00000890.webm")
    frame = clip.frames[0][1]
    h, w = frame.shape[:2]
    tilted = cv2.warpAffine(frame, cv2.getRotationMatrix2D((w / 2, h / 2), -30, 1.0), (w, h), borderMode=cv2.BORDER_REPLICATE)
    face = max(YuNetDetector(max_side=320)([(0.0, tilted)]), key=lambda d: d.box[2])
    (lx, ly), (rx, ry) = face.eyes
    assert math.degrees(math.atan2(ry - ly, rx - lx)) > 10  # the head leans in the frame
    m = alignment_matrix(face, 224)
    (clx, cly), (crx, cry) = (m @ np.array([x, y, 1.0]) for x, y in face.eyes)
    assert abs(cly - cry) < 0.5 and clx < crx  # the eyes level in the crop, left stays left
    assert np.allclose(m @ np.array([face.square[0], face.square[1], 1.0]), [112, 112])  # the face centred
    crop = aligned_square(tilted, face, 224)
    again = max(YuNetDetector(max_side=224)([(0.0, crop)]), key=lambda d: d.box[2])
    assert again.box[2] > 120  # the face fills the crop
    assert face.square[2] > 160  # detected at 320 px, cut from the 640 px frame: twice the pixels detection saw
