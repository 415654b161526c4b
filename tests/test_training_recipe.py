"""The user guide's training recipe (docs/guide/loading.md, "Training on a build") runs as written on a
real build: per utterance the frames (or face crops) as arrays, the waveform, the transcript and the
explanation, batched; the PyTorch `DataLoader` lines run when torch is installed (it is no dependency
of emer-builder)."""

from __future__ import annotations

import io
import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile
from emer_builder.transforms.shards import write_tar
from PIL import Image

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "guide" / "loading.md"


def recipe_blocks() -> list[str]:
    """The python blocks between the recipe's markers: the webdataset pipeline, then the DataLoader."""
    text = GUIDE.read_text()
    part = text[text.index("<!-- training-recipe:start -->") : text.index("<!-- training-recipe:end -->")]
    return re.findall(r"```python\n(.*?)```", part, flags=re.S)


def run_pipeline(out: Path) -> dict[str, Any]:
    namespace: dict[str, Any] = {}
    exec(recipe_blocks()[0].replace('"OUT/', f'"{out}/'), namespace)  # noqa: S102 - the guide's own code
    return namespace


def _train(out: Path) -> tuple[list[dict[str, Any]], dict[str, dict[str, bytes]]]:
    """The train split's rows and each sample's media members, read without the recipe."""
    import webdataset as wds

    rows = [r for p in sorted((out / "data").glob("train-*.parquet")) for r in pq.read_table(p).to_pylist()]
    media = {}
    for shard in sorted((out / "media").glob("train-*.tar")):
        for sample in wds.WebDataset(str(shard), shardshuffle=False):
            media[sample["__key__"]] = {k: v for k, v in sample.items() if not k.startswith("__")}
    return rows, media


def _batches(namespace: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every utterance of every batch of the recipe's `dataset`, by key."""
    found = {}
    for batch in namespace["dataset"]:
        assert batch["frames"].dtype == np.uint8 and batch["frames"].shape[2:] == (224, 224, 3) and batch["waveform"].dtype == np.float32
        for i, key in enumerate(batch["key"]):
            found[key] = {name: batch[name][i] for name in ("frames", "frame_count", "waveform", "waveform_length", "transcript", "explanation", "labels")}
    return found


def test_the_recipe_yields_face_crops_waveform_transcript_and_explanation(release_builds: tuple[Path, Path], tmp_path: Path):
    out = tmp_path / "out"
    shutil.copytree(release_builds[1], out)
    namespace = run_pipeline(out)
    rows, media = _train(out)
    got = _batches(namespace)
    assert sorted(got) == sorted(r["key"] for r in rows) and rows
    for row in rows:
        u, members = got[row["key"]], media[row["key"]]
        crops = len(row["faces"]["crops"])
        assert u["frame_count"] == crops and (u["frames"][:crops].max(axis=(1, 2, 3)) > 0).all() and not u["frames"][crops:].any()
        wave = soundfile.read(io.BytesIO(members["flac"]), dtype="float32")[0]
        assert u["waveform_length"] == len(wave) and np.array_equal(u["waveform"][: len(wave)], wave) and not u["waveform"][len(wave) :].any()
        assert u["transcript"] == row["transcript"]["text"] and u["labels"] == row["explanation"]["open_vocab_labels"]["labels"]
        assert u["explanation"] == (row["explanation"]["multimodal_explanation"]["text"] or "")


def test_the_recipe_prefers_the_records_frames_and_letterboxes_them(release_builds: tuple[Path, Path], tmp_path: Path):
    """A `video.mode: frames` build: frame_NNN.jpg of a wide video (224 x 126) become 224 x 224 arrays, in order."""
    out = tmp_path / "out"
    shutil.copytree(release_builds[1], out)
    rows, media = _train(out)
    samples = []
    for n, row in enumerate(rows):
        files = {k: v for k, v in media[row["key"]].items() if k != "json"}
        for i in range(3 + n):  # a different count per utterance: padding and counts are per utterance
            buf = io.BytesIO()
            Image.new("RGB", (224, 126), (40 * i + 20, 0, 0)).save(buf, format="JPEG", quality=95)
            files[f"frame_{i:03d}.jpg"] = buf.getvalue()
        samples.append((json.loads(media[row["key"]]["json"]), files))
    for shard in (out / "media").glob("train-*.tar"):
        shard.unlink()
    write_tar(out / "media" / "train-00000-of-00001.tar", samples)
    got = _batches(run_pipeline(out))
    for n, row in enumerate(rows):
        u = got[row["key"]]
        assert u["frame_count"] == 3 + n  # the frames, not the face crops
        reds = [int(u["frames"][i, 112, 112, 0]) for i in range(3 + n)]
        assert all(abs(r - (40 * i + 20)) <= 3 for i, r in enumerate(reds))  # in frame order
        assert not u["frames"][0, :40].any() and not u["frames"][0, -40:].any()  # letterboxed: black bars above and below


def test_the_dataloader_lines_run_with_torch(release_builds: tuple[Path, Path], tmp_path: Path):
    torch = pytest.importorskip("torch", reason="torch is not installed: the DataLoader lines of the recipe are skipped")
    out = tmp_path / "out"
    shutil.copytree(release_builds[1], out)
    namespace = run_pipeline(out)
    exec(recipe_blocks()[1], namespace)  # noqa: S102 - the guide's own code
    batch = namespace["batch"]
    assert batch["frames"].dtype == torch.uint8 and batch["waveform"].dtype == torch.float32 and batch["frames"].shape[2:] == (224, 224, 3)
