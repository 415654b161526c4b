"""OUT/README.md: the dataset card. Its YAML `configs` declare the Parquet tables by split (default)
and the WebDataset shards (`media`), with features derived from the schema (the WebDataset
loader would otherwise infer them from 5 samples). OUT/media/README.md repeats the media config
on its own, because `datasets` picks one builder per folder (huggingface/datasets#7101)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import datasets
import yaml

from pipelines.config import BuildConfig
from schemas import RecordSchema
from transforms.split import split_order

EMER_CITATION = """@article{lian2023explainable,
  title={Explainable Multimodal Emotion Recognition},
  author={Lian, Zheng and Sun, Haiyang and Sun, Licai and Gu, Hao and Wen, Zhuofan and Zhang, Siyuan and Chen, Shun and Xu, Mingyu and Xu, Ke and Chen, Kang and others},
  journal={arXiv preprint arXiv:2306.15401},
  year={2023}
}"""


def media_features(schema: RecordSchema, max_crops: int) -> datasets.Features:
    """Columns of a WebDataset sample: audio, up to `max_crops` face crops, the record json.

    `flac` is declared as bytes: the `Audio` feature of `datasets` needs torch + torchcodec even to
    store audio; users who have them can `cast_column("flac", datasets.Audio())`.
    """
    feats: dict[str, Any] = {"__key__": datasets.Value("string"), "__url__": datasets.Value("string"), "flac": datasets.Value("binary")}
    for i in range(max_crops):
        feats[f"face_{i:03d}.jpg"] = datasets.Image()
    feats["json"] = schema.features()
    return datasets.Features(feats)


def card_yaml(manifest: dict[str, Any], schema: RecordSchema, config: BuildConfig) -> dict[str, Any]:
    splits = _ordered(manifest["splits"])
    languages = sorted(manifest.get("languages", []))
    n = manifest["counts"]["records"]
    size = "n<1K" if n < 1000 else "1K<n<10K" if n < 10_000 else "10K<n<100K" if n < 100_000 else "100K<n<1M"
    default_info = datasets.DatasetInfo(features=schema.features())._to_yaml_dict()
    media_info = datasets.DatasetInfo(features=media_features(schema, config.faces.max_crops))._to_yaml_dict()
    data: dict[str, Any] = {
        "pretty_name": "EMER dataset built with emer-builder",
        "task_categories": ["video-classification", "audio-classification"],
        "tags": ["emotion-recognition", "multimodal", "emer", "webdataset"],
        "size_categories": [size],
        "configs": [
            {"config_name": "default", "default": True, "data_files": [{"split": s, "path": f"data/{s}-*.parquet"} for s in splits]},
            {"config_name": "media", "data_files": [{"split": s, "path": f"media/{s}-*.tar"} for s in splits]},
        ],
        "dataset_info": [
            {"config_name": "default", "features": default_info["features"]},
            {"config_name": "media", "features": media_info["features"]},
        ],
    }
    if languages:
        data["language"] = languages
    return data


def media_card_yaml(manifest: dict[str, Any], schema: RecordSchema, config: BuildConfig) -> dict[str, Any]:
    """YAML of OUT/media/README.md, which makes `load_dataset(f"{OUT}/media")` read the shards."""
    return {
        "configs": [{"config_name": "default", "data_files": [{"split": s, "path": f"{s}-*.tar"} for s in _ordered(manifest["splits"])]}],
        "dataset_info": {"features": datasets.DatasetInfo(features=media_features(schema, config.faces.max_crops))._to_yaml_dict()["features"]},
    }


def _ordered(splits: dict[str, int]) -> list[str]:
    return sorted(splits, key=split_order)


def write_card(root: Path, manifest: dict[str, Any], schema: RecordSchema, config: BuildConfig) -> None:
    media_front = yaml.safe_dump(media_card_yaml(manifest, schema, config), sort_keys=False, allow_unicode=True)
    (root / "media" / "README.md").write_text(
        f"---\n{media_front}---\n\nWebDataset shards of this build: `datasets.load_dataset(\"<build>/media\")` loads them.\n"
    )
    front = yaml.safe_dump(card_yaml(manifest, schema, config), sort_keys=False, allow_unicode=True)
    split_rows = "\n".join(f"| {s} | {n} | {manifest['shards'][s]} |" for s, n in sorted(manifest["splits"].items()))
    models = "\n".join(f"- {k}: `{v}`" for k, v in manifest["models"].items() if k != "config_hash")
    body = f"""# EMER dataset

One record per video clip with its transcript (Whisper), the main face's crops and expression
scores (DeepFace), and acoustic features (openSMILE eGeMAPSv02), built by `emer build`.

## Splits

| split | records | shards |
|---|---|---|
{split_rows}

{manifest['counts']['failures']} inputs could not become records: see `failures.parquet` (key, stage, reason).

## Loading

```python
import datasets
rows = datasets.load_dataset("path/to/this/folder")           # Parquet tables, all fields, no media
media = datasets.load_dataset("path/to/this/folder/media")    # WebDataset shards: flac, face_NNN.jpg, json

import webdataset as wds
for sample in wds.WebDataset("media/train-00000-of-00001.tar", shardshuffle=False):
    sample["__key__"], sample["json"], sample["flac"], sample.get("face_000.jpg")
```

Parquet rows and tar samples share keys and shard names (`data/train-00000-of-00002.parquet`
holds the same keys as `media/train-00000-of-00002.tar`).

## How it was built

- tool: `{manifest['tool']}`, schema `{manifest['schema_version']}`, config hash `{manifest['config_hash']}`
{models}

## Fields

{schema.field_table()}

## Citation

```bibtex
{EMER_CITATION}
```
"""
    (root / "README.md").write_text(f"---\n{front}---\n\n{body}")
