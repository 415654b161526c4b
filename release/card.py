"""The dataset card: OUT/README.md at build time, the repo's README.md at each release.

Its YAML `configs` declare the Parquet tables by split (default) and the WebDataset shards (`media`),
with features derived from the schema (the WebDataset loader would otherwise infer them from 5
samples). media/README.md repeats the media config on its own, because `datasets` picks one builder
per folder (huggingface/datasets#7101). The release card adds the license, how to load that version
from where it was published, and the changelog of every release.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from emer_builder.core.config import BuildConfig
from emer_builder.core.errors import UserError
from emer_builder.schemas import SCHEMA, Field, FieldGroup, RecordSchema
from emer_builder.transforms.split import split_order

EMER_CITATION = """@article{lian2023explainable,
  title={Explainable Multimodal Emotion Recognition},
  author={Lian, Zheng and Sun, Haiyang and Sun, Licai and Gu, Hao and Wen, Zhuofan and Zhang, Siyuan and Chen, Shun and Xu, Mingyu and Xu, Ke and Chen, Kang and others},
  journal={arXiv preprint arXiv:2306.15401},
  year={2023}
}"""
EXAMPLES_SHOWN = 10  # keys and fields listed per changelog line; releases.json holds the same cut


def media_features(schema: RecordSchema, max_crops: int, video: dict[str, Any] | None = None) -> datasets.Features:
    """Columns of a WebDataset sample: audio, up to `max_crops` face crops, the record's video (the
    build config's `video` section: `mp4`, or up to `frames` frame JPEGs), the record json.

    `flac` and `mp4` are declared as bytes: the `Audio` and `Video` features of `datasets` need torch +
    torchcodec even to store them; users who have them can `cast_column("flac", datasets.Audio())`.
    """
    feats: dict[str, Any] = {"__key__": datasets.Value("string"), "__url__": datasets.Value("string"), "flac": datasets.Value("binary")}
    for i in range(max_crops):
        feats[f"face_{i:03d}.jpg"] = datasets.Image()
    mode = (video or {}).get("mode", "none")  # a build made before the video section has no video members
    if mode == "clip":
        feats["mp4"] = datasets.Value("binary")
    elif mode == "frames":
        for i in range(int(video["frames"])):
            feats[f"frame_{i:03d}.jpg"] = datasets.Image()
    feats["json"] = schema.features()
    return datasets.Features(feats)


def card_yaml(manifest: dict[str, Any], schema: RecordSchema, max_crops: int) -> dict[str, Any]:
    splits = _ordered(manifest["splits"])
    languages = sorted(manifest.get("languages", []))
    n = manifest["counts"]["records"]
    size = "n<1K" if n < 1000 else "1K<n<10K" if n < 10_000 else "10K<n<100K" if n < 100_000 else "100K<n<1M" if n < 1_000_000 else "n>1M"
    default_info = datasets.DatasetInfo(features=schema.features())._to_yaml_dict()
    media_info = datasets.DatasetInfo(features=media_features(schema, max_crops, manifest["config"].get("video")))._to_yaml_dict()
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


def media_card(manifest: dict[str, Any], schema: RecordSchema, max_crops: int) -> str:
    """media/README.md, which makes `load_dataset(f"{OUT}/media")` read the shards."""
    front = {
        "configs": [{"config_name": "default", "data_files": [{"split": s, "path": f"{s}-*.tar"} for s in _ordered(manifest["splits"])]}],
        "dataset_info": {"features": datasets.DatasetInfo(features=media_features(schema, max_crops, manifest["config"].get("video")))._to_yaml_dict()["features"]},
    }
    return f'---\n{_yaml(front)}---\n\nWebDataset shards of this build: `datasets.load_dataset("<build>/media")` loads them.\n'


def _ordered(splits: dict[str, int]) -> list[str]:
    return sorted(splits, key=split_order)


def _yaml(data: dict[str, Any]) -> str:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def write_card(root: Path, manifest: dict[str, Any], schema: RecordSchema, config: BuildConfig) -> None:
    """OUT/README.md and OUT/media/README.md of a build (no license, no changelog: those come with a release)."""
    (root / "media" / "README.md").write_text(media_card(manifest, schema, config.faces.max_crops))
    loading = """```python
import datasets
rows = datasets.load_dataset("path/to/this/folder")           # Parquet tables, all fields, no media
media = datasets.load_dataset("path/to/this/folder/media")    # WebDataset shards: flac, face_NNN.jpg, mp4 or frame_NNN.jpg, json

import webdataset as wds
for sample in wds.WebDataset("media/train-00000-of-00001.tar", shardshuffle=False):
    sample["__key__"], sample["json"], sample["flac"], sample.get("face_000.jpg")
```"""
    front = _yaml(card_yaml(manifest, schema, config.faces.max_crops))
    (root / "README.md").write_text(f"---\n{front}---\n\n{_body(manifest, schema, loading, changelog='')}")


def release_card(manifest: dict[str, Any], releases: list[dict[str, Any]], schema: RecordSchema, *, target: str, hub_endpoint: str | None, license: str) -> str:
    """README.md of a release: the build's card plus license, loading from `target` at this version, and the changelog.

    `releases` is releases.json, newest first, this release included. `hub_endpoint` set: `target` is a
    Hub repo id there; None: `target` is a directory or fsspec URL holding one folder per version.
    """
    tag = f"v{releases[0]['version']}"
    front = {"license": license, **card_yaml(manifest, schema, manifest["config"]["faces"]["max_crops"])}
    shard = next((p for p in sorted(manifest["files"]) if p.startswith("media/")), "media/train-00000-of-00001.tar")
    split = _ordered(manifest["splits"])[0] if manifest["splits"] else "train"
    own_api = f"""With emer-builder, verified against the manifest: `emer download {target} --version {tag[1:]} --to DIR`
(the whole version on disk), or in Python:

```python
from emer_builder.release.download import load_split
rows = load_split("{target}", version="{tag[1:]}", split="{split}")                    # Parquet rows
media = load_split("{target}", version="{tag[1:]}", split="{split}", config="media")   # WebDataset samples
```"""
    if hub_endpoint is not None:
        loading = f"""```python
import datasets
rows = datasets.load_dataset("{target}", revision="{tag}")   # Parquet tables, all fields, no media

import webdataset as wds                                     # the shards: flac, face_NNN.jpg, json
url = "{hub_endpoint.rstrip("/")}/datasets/{target}/resolve/{tag}/{shard}"
for sample in wds.WebDataset(url, shardshuffle=False):
    sample["__key__"], sample["json"], sample["flac"], sample.get("face_000.jpg")
```

`datasets` picks one builder per repo (huggingface/datasets#7101), so the `media` config declared above
does not load through `load_dataset("{target}", "media")` yet; `load_split(..., config="media")` below does.

{own_api}

A private repo needs a token (`HF_TOKEN` or `hf auth login`)."""
    elif "://" in target:  # an object store: `datasets` reads Parquet files by URL, not a folder; webdataset has no s3://
        data_files = {s: f"{target}/{tag}/data/{s}-*.parquet" for s in _ordered(manifest["splits"])}
        loading = f"""```python
import datasets
rows = datasets.load_dataset("parquet", data_files={data_files!r})   # Parquet tables, all fields, no media
```

The WebDataset shards (`{target}/{tag}/media/`) load through emer-builder: `load_split(..., config="media")`
below, or `iter_samples` for training loops. Credentials and endpoint come from the usual variables
(for s3://: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_ENDPOINT_URL`).

{own_api}

Every version is a folder `vX.Y.Z/` next to `releases.json`, which lists the published versions
(a folder that it does not list is an unfinished publish)."""
    else:
        loading = f"""```python
import datasets
rows = datasets.load_dataset("{target}/{tag}")           # Parquet tables, all fields, no media
media = datasets.load_dataset("{target}/{tag}/media")    # WebDataset shards: flac, face_NNN.jpg, json

import webdataset as wds
for sample in wds.WebDataset("{target}/{tag}/{shard}", shardshuffle=False):
    sample["__key__"], sample["json"], sample["flac"], sample.get("face_000.jpg")
```

{own_api}

Every version is a folder `vX.Y.Z/` next to `releases.json`, which lists the published versions
(a folder that it does not list is an unfinished publish)."""
    return f"---\n{_yaml(front)}---\n\n{_body(manifest, schema, loading, changelog_markdown(releases))}"


def changelog_markdown(releases: list[dict[str, Any]]) -> str:
    """The card's changelog section: one entry per release, newest first (the order of releases.json)."""
    parts = ["## Changelog\n"]
    for entry in releases:
        counts = ", ".join(f"{split} {n}" for split, n in entry["counts"].items())
        lines = [f"### v{entry['version']} ({entry['date']})\n", f"- records: {counts} ({sum(entry['counts'].values())} in all)"]
        if entry["previous"] is None:
            lines.append("- first release")
        else:
            lines.append(f"- against v{entry['previous']}: {_key_changes(entry)}")
            lines.append(f"- schema: {_schema_changes(entry['schema_changes'])}; required bump: {entry['required_bump']}")
        lines.append(f"- schema {entry['schema_version']}, `{entry['tool']}`, config hash `{entry['config_hash'][:12]}`")
        parts.append("\n".join(lines) + "\n")
    return "\n".join(parts) + "\n"


def _key_changes(entry: dict[str, Any]) -> str:
    said = []
    for word, sign in (("added", "+"), ("removed", "-")):
        for split, change in entry[word].items():
            shown = ", ".join(f"`{k}`" for k in change["examples"])
            more = f" and {change['count'] - len(change['examples'])} more" if change["count"] > len(change["examples"]) else ""
            said.append(f"{split} {sign}{change['count']} ({shown}{more})")
    return "; ".join(said) or "same keys"


def _schema_changes(changes: dict[str, Any]) -> str:
    named = {
        "added": [f"`{path}`" for path in changes["added"]],
        "removed": [f"`{path}`" for path in changes["removed"]],
        "changed": [f"`{c['field']}` {c['from']} -> {c['to']}" for c in changes["changed"]],
    }
    said = []
    for word, items in named.items():
        if items:
            more = " ..." if len(items) > EXAMPLES_SHOWN else ""
            said.append(f"{word} {len(items)} field{'s' * (len(items) != 1)} ({', '.join(items[:EXAMPLES_SHOWN])}{more})")
    return "; ".join(said) or "no change"


def _code(value: Any) -> str:
    """A config value as one Markdown code span: a backtick or a line break in it cannot end the span and add
    links or headings to the card."""
    text = " ".join(str(value).split())
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    return f"{fence} {text} {fence}" if "`" in text else f"`{text}`"


def _body(manifest: dict[str, Any], schema: RecordSchema, loading: str, changelog: str) -> str:
    split_rows = "\n".join(f"| {s} | {manifest['splits'][s]} | {manifest['shards'][s]} |" for s in _ordered(manifest["splits"]))
    skip = ("config_hash", "tool", "schema_version")
    models = "\n".join(f"- {k}: {_code(v)}" if v is not None else f"- {k}: not used" for k, v in manifest["models"].items() if k not in skip)
    llm = manifest["config"]["explanation"]["llm"]
    if "llm" in manifest["models"].get("explanation_sources", ""):
        models += f"\n- LLM explainer: prompts {_code(llm['prompt_version'])}, model {_code(llm['model'])}, vision model {_code(llm['vision_model'] or llm['model'])}"
    packages = ", ".join(f"{name} {v}" for name, v in manifest["packages"].items())
    return f"""# EMER dataset

One record per video clip with its transcript (Whisper), the main face's crops and expression
scores, acoustic features (openSMILE eGeMAPSv02) and EMER explanations (clues, open-vocabulary
labels, valence), built by `emer build` (emer-builder) for Explainable Multimodal Emotion Recognition.

## Splits

| split | records | shards |
|---|---|---|
{split_rows}

{manifest["counts"]["failures"]} inputs could not become records: see `failures.parquet` (key, stage, reason).

**Report:** [report.html](report.html): overview, plots and a sample gallery with face crops, transcripts,
clues and labels. Download it together with the `report/` folder and open it locally, or run
`emer report` on a download.

## Loading

{loading}

Parquet rows and tar samples share keys and shard names (`data/train-00000-of-00002.parquet`
holds the same keys as `media/train-00000-of-00002.tar`).

## How it was built

- tool: `{manifest["tool"]}`, schema `{manifest["schema_version"]}`, config hash `{manifest["config_hash"]}`
{models}
- packages: {packages}

`manifest.json` holds the full build config, every file's sha256 and the statistics.

## Fields

{schema.field_table()}

{changelog}## Citation

```bibtex
{EMER_CITATION}
```
"""


def build_schema(root: Path, manifest: dict[str, Any]) -> RecordSchema:
    """The schema of the build's own Parquet files, documented by this code's schema where the paths agree.

    Why not this code's schema: a release card must describe the files it ships, also when another
    version of emer-builder (or a plug-in stage not installed here) wrote them.
    """
    tables = [root / p for p in sorted(manifest.get("files", {})) if p.startswith("data/") and p.endswith(".parquet")]  # the files it ships, not leftovers
    if not tables:
        raise UserError(f"{root} holds no records (data/*.parquet): nothing to publish")
    docs = {path: f.doc for path, f in _documented_schema(manifest).field_paths()}

    def field(f: pa.Field, path: str) -> Field:
        inner = f.type.value_type if pa.types.is_list(f.type) else f.type
        prefix = f"{path}[]." if pa.types.is_list(f.type) else f"{path}."
        children = tuple(field(c, prefix + c.name) for c in inner) if pa.types.is_struct(inner) else ()
        return Field(f.name, f.type, docs.get(path, ""), f.nullable, children)

    return RecordSchema(manifest["schema_version"], [field(f, f.name) for f in pq.read_schema(tables[0])])


def _documented_schema(manifest: dict[str, Any]) -> RecordSchema:
    """This code's schema plus the field groups of the build's plug-in stages that are installed here.

    A plug-in names its class as `package.module:Class` with a `group` attribute; it is imported directly
    (not through the pipelines layer, which would pull in the build's media tools)."""
    schema = SCHEMA
    for spec in manifest["config"].get("extra_stages", []):
        module_name, _, attr = spec.partition(":")
        try:
            group = getattr(getattr(importlib.import_module(module_name), attr), "group", None)
        except (ImportError, AttributeError, ValueError):  # the plug-in is not installed here: its fields go undocumented
            continue
        if isinstance(group, FieldGroup):
            schema = schema.with_group(group)
    return schema
