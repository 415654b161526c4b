"""OUT/manifest.json: counts, every file's sha256 and size, versions, the config and its hash."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from emer_builder.core.config import BuildConfig
from emer_builder.core.failures import FAILURES_FILE
from emer_builder.core.hashing import sha256_file
from emer_builder.core.version import __version__
from emer_builder.schemas import RecordSchema
from emer_builder.transforms.keys import display_path

MANIFEST = "manifest.json"
BUILD_OUTPUTS = ("data", "media", FAILURES_FILE, "README.md", "report.html", "report", "build.json", MANIFEST)  # what a build writes into OUT; the manifest last: the commit
TRUNCATION_FIELDS = ("declared_duration_s", "decoded_duration_s", "decoded_fraction")  # media fields each truncated record lists
BATCH_ROWS = 4096  # rows of a Parquet table read at a time
PACKAGES = ("apache-beam", "faster-whisper", "ctranslate2", "deepface", "opensmile", "pyarrow", "webdataset", "ffmpeg-python")


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


@dataclass
class RecordCounts:
    """What the manifest says about the records, counted in one pass over the Parquet tables."""

    splits: dict[str, int] = field(default_factory=dict)
    shards: dict[str, int] = field(default_factory=dict)
    languages: Counter[str] = field(default_factory=Counter)
    clips_with_faces: int = 0
    audio_seconds: float = 0.0
    sources: dict[str, Counter[str]] = field(default_factory=dict)  # explanation field -> source -> records
    keys: dict[str, list[str]] = field(default_factory=dict)  # releases compare them: the one list that grows with the build
    truncated: list[dict[str, Any]] = field(default_factory=list)  # records cut short (a partial download): kept, flagged, listed for the user

    def add(self, split: str, row: dict[str, Any]) -> None:
        self.keys.setdefault(split, []).append(row["key"])
        media = row["media"]
        if media.get("truncated"):
            measured = {k: None if media.get(k) is None else round(media[k], 3) for k in TRUNCATION_FIELDS}  # float32 digits are noise
            self.truncated.append({"key": row["key"], "split": split, "source_path": row["source_path"], **measured})
        for name, value in (row.get("explanation") or {}).items():
            if isinstance(value, dict):
                self.sources.setdefault(name, Counter())[value["source"] or "null"] += 1
        self.audio_seconds += media["duration_s"] if media["has_audio"] else 0.0
        self.clips_with_faces += bool(row["faces"]["crops"])
        if row["transcript"]["language"]:
            self.languages[row["transcript"]["language"]] += 1


def count_records(root: Path) -> RecordCounts:
    """Stream the build's tables batch by batch, reading only the columns the manifest counts (of a record's
    face crops, one number each; of its explanation, each field's source): memory holds the keys, not the rows."""
    counted = RecordCounts()
    columns: dict[Any, list[str]] = {}  # arrow schema -> the columns to read (the tables of a build share one)
    for path in sorted((root / "data").glob("*.parquet")):
        split = path.name.split("-")[0]
        table = pq.ParquetFile(path)
        counted.splits[split] = counted.splits.get(split, 0) + table.metadata.num_rows
        counted.shards[split] = counted.shards.get(split, 0) + 1
        if table.schema_arrow not in columns:
            columns[table.schema_arrow] = _counted_columns(table)
        for batch in table.iter_batches(batch_size=BATCH_ROWS, columns=columns[table.schema_arrow]):
            for row in batch.to_pylist():
                counted.add(split, row)
    return counted


def _counted_columns(table: pq.ParquetFile) -> list[str]:
    """The (nested) columns `RecordCounts.add` reads, as Parquet paths (reading a table's Parquet schema costs
    a few MB that the allocator keeps: once per build, not per table)."""
    paths = [table.schema.column(i).path for i in range(table.metadata.num_columns)]
    crops = next((p for p in paths if p.startswith("faces.crops.")), "faces.crops")  # one leaf tells how many crops
    sources = [p for p in paths if p.startswith("explanation.") and p.count(".") == 2 and p.endswith(".source")]
    media = [f"media.{name}" for name in ("truncated", "duration_s", "has_audio", *TRUNCATION_FIELDS)]
    return ["key", "source_path", *media, "transcript.language", crops, *sources]


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
    counted = count_records(root)
    splits, shards, languages, truncated = counted.splits, counted.shards, counted.languages, counted.truncated
    failures: Counter[str] = Counter()
    for batch in pq.ParquetFile(root / FAILURES_FILE).iter_batches(batch_size=BATCH_ROWS, columns=["stage"]):
        failures.update(batch.column("stage").to_pylist())
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
        "videos_dir": display_path(str(videos_dir)),  # a folder name that is not UTF-8 cannot be written as it is
        "config": config.to_dict(),
        "config_hash": config.config_hash(),
        "models": prov,
        "packages": package_versions(),
        "counts": {"inputs": inputs, "records": sum(splits.values()), "failures": sum(failures.values()), "skipped_files": len(skipped), "truncated": len(truncated)},
        "failures_by_stage": dict(sorted(failures.items())),
        "stats": {
            "clips_with_faces": counted.clips_with_faces,
            "records_per_language": dict(sorted(languages.items())),
            "audio_seconds": round(counted.audio_seconds, 3),
            # explanation field -> source -> records ("null": no source gave a value)
            "explanation_sources": {name: dict(sorted(c.items())) for name, c in counted.sources.items()},
        },
        "annotations": annotations or {"files": [], "names_without_video": [], "videos_without_annotation": []},
        "emotion_wheel": prov.get("emotion_wheel") or f"not used: {wheel_problem}",
        "skipped_files": skipped,
        "truncated": sorted(truncated, key=lambda t: t["key"]),
        "languages": sorted(languages),  # for the card's `language` tag
        "splits": splits,
        "keys": {split: sorted(k) for split, k in sorted(counted.keys.items())},  # releases list added and removed keys
        "shards": shards,
        "files": files,
    }
    (root / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    return manifest
