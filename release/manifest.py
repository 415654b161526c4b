"""OUT/manifest.json: counts, every file's sha256 and size, versions, the config and its hash."""

from __future__ import annotations

import json
from collections import Counter
from importlib import metadata
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from emer_builder.core.config import BuildConfig
from emer_builder.core.failures import FAILURES_FILE
from emer_builder.core.hashing import sha256_file
from emer_builder.core.version import __version__
from emer_builder.schemas import RecordSchema

MANIFEST = "manifest.json"
BUILD_OUTPUTS = ("data", "media", FAILURES_FILE, "README.md", "report.html", "report", "build.json", MANIFEST)  # what a build writes into OUT; the manifest last: the commit
TRUNCATION_FIELDS = ("declared_duration_s", "decoded_duration_s", "decoded_fraction")  # media fields each truncated record lists
PACKAGES = ("apache-beam", "faster-whisper", "ctranslate2", "deepface", "opensmile", "pyarrow", "webdataset", "ffmpeg-python")


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def write_manifest(
    root: Path,
    videos_dir: Path,
    config: BuildConfig,
    schema: RecordSchema,
    prov: dict[str, Any],
    inputs: int,
    skipped: list[str],
    annotations: dict[str, Any] | None = None,
    wheel_problem: str | None = None,
    known_files: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Describe the finished build in `root`; no timestamps, so equal builds give equal manifests.
    `known_files`: sha256 and bytes of files the shard writers hashed as they wrote them (not read
    again; on an object store they are not in `root` at all)."""
    splits: dict[str, int] = {}
    shards: dict[str, int] = {}
    languages: Counter[str] = Counter()
    clips_with_faces = 0
    audio_seconds = 0.0
    sources: dict[str, Counter[str]] = {}
    keys: dict[str, list[str]] = {}
    truncated: list[dict[str, Any]] = []  # records cut short (a partial download): kept, flagged, listed for the user
    for path in sorted((root / "data").glob("*.parquet")):
        split = path.name.split("-")[0]
        splits[split] = splits.get(split, 0) + pq.ParquetFile(path).metadata.num_rows
        shards[split] = shards.get(split, 0) + 1
        for row in pq.read_table(path, columns=["key", "source_path", "media", "transcript", "faces", "explanation"]).to_pylist():
            keys.setdefault(split, []).append(row["key"])
            if row["media"].get("truncated"):
                measured = {k: None if row["media"].get(k) is None else round(row["media"][k], 3) for k in TRUNCATION_FIELDS}  # float32 digits are noise
                truncated.append({"key": row["key"], "split": split, "source_path": row["source_path"], **measured})
            for name, value in row["explanation"].items():
                if isinstance(value, dict):
                    sources.setdefault(name, Counter())[value["source"] or "null"] += 1
            audio_seconds += row["media"]["duration_s"] if row["media"]["has_audio"] else 0.0
            clips_with_faces += bool(row["faces"]["crops"])
            if row["transcript"]["language"]:
                languages[row["transcript"]["language"]] += 1
    failures = pq.read_table(root / FAILURES_FILE, columns=["stage"]).column("stage").to_pylist()
    files = dict(known_files or {})
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_file() and p.name not in (MANIFEST, "README.md") and rel not in files:
            files[rel] = {"sha256": sha256_file(str(p)), "bytes": p.stat().st_size}
    files = dict(sorted(files.items()))
    manifest = {
        "tool": f"emer-builder {__version__}",
        "schema_version": schema.version,
        "field_groups": [g.name for g in schema.groups],
        "fields": schema.field_types(),  # dotted path -> type: releases compare it to choose the version bump
        "videos_dir": str(videos_dir),
        "config": config.to_dict(),
        "config_hash": config.config_hash(),
        "models": prov,
        "packages": package_versions(),
        "counts": {"inputs": inputs, "records": sum(splits.values()), "failures": len(failures), "skipped_files": len(skipped), "truncated": len(truncated)},
        "failures_by_stage": dict(sorted(Counter(failures).items())),
        "stats": {
            "clips_with_faces": clips_with_faces,
            "records_per_language": dict(sorted(languages.items())),
            "audio_seconds": round(audio_seconds, 3),
            # explanation field -> source -> records ("null": no source gave a value)
            "explanation_sources": {name: dict(sorted(c.items())) for name, c in sources.items()},
        },
        "annotations": annotations or {"files": [], "names_without_video": [], "videos_without_annotation": []},
        "emotion_wheel": prov.get("emotion_wheel") or f"not used: {wheel_problem}",
        "skipped_files": skipped,
        "truncated": sorted(truncated, key=lambda t: t["key"]),
        "languages": sorted(languages),  # for the card's `language` tag
        "splits": splits,
        "keys": {split: sorted(k) for split, k in sorted(keys.items())},  # releases list added and removed keys
        "shards": shards,
        "files": files,
    }
    (root / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    return manifest
