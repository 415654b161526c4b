"""What the report shows, read from a build folder or a downloaded release: the manifest, the build's timings,
slim record rows, failure rows, and each sample's media from the tar shards (checked before any byte is used).

A downloaded release may hold only some of this (the Parquet tables of one split, or only the tar shards):
the report says what is missing instead of failing. Nothing here runs a stage or imports Beam.
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from emer_builder.core.errors import UserError
from emer_builder.core.failures import FAILURES_FILE
from emer_builder.transforms.split import split_order

MANIFEST = "manifest.json"
FAILURES = FAILURES_FILE
TIMINGS = "build.json"  # written by the build next to the manifest (wall time and stage seconds are not deterministic)
EXPLAINED = ("visual_clue", "acoustic_clue", "lexical_clue", "multimodal_explanation")
GROUPS_WITH_REASON = ("transcript", "faces", "acoustics")

# Dotted record paths the report reads; a release of an older schema may lack some (they read as None).
RECORD_PATHS = (
    "key",
    "split",
    "source_path",
    "media.duration_s",
    "media.has_audio",
    "media.height",
    "media.frames_sampled",
    "media.truncated",
    "media.declared_duration_s",
    "media.decoded_duration_s",
    "media.decoded_fraction",
    "transcript.reason",
    "transcript.model",
    "transcript.language",
    "transcript.text",
    "faces.reason",
    "faces.frames_with_face",
    "faces.crops",
    "faces.expression_mean",
    "acoustics.reason",
    "acoustics.prosody",
    *(f"explanation.{name}" for name in ("subtitle", *EXPLAINED, "open_vocab_labels", "discrete_label", "valence")),
)


@dataclass
class BuildData:
    """A build as the report sees it. `records` are flat dicts (dotted path -> value) sorted by key."""

    root: Path
    manifest: dict[str, Any]
    timings: dict[str, Any]
    records: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, str]] = field(default_factory=list)

    @property
    def splits(self) -> list[str]:
        return sorted({*self.manifest.get("splits", {}), *(r["split"] for r in self.records)}, key=split_order)


def load_build(root: Path, manifest: dict[str, Any] | None = None) -> BuildData:
    """Read the manifest, timings, Parquet rows and failure rows of `root` (a build's OUT or a downloaded release)."""
    if manifest is None:
        path = root / MANIFEST
        if not path.is_file():
            raise UserError(f"{root} holds no {MANIFEST}: not a build made by `emer build` or a release fetched by `emer download`")
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as e:
            raise UserError(f"{path} is not JSON: {e}") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("splits", {}), dict) or not isinstance(manifest.get("keys", {}), dict):
        raise UserError(f"{root / MANIFEST} is not a build manifest (no splits or keys)")
    data = BuildData(root, manifest, _timings(root, manifest))
    for path in sorted((root / "data").glob("*.parquet")):
        data.records += _parquet_rows(path)
    data.records.sort(key=lambda r: r["key"])
    if (root / FAILURES).is_file():
        data.failures = sorted(pq.read_table(root / FAILURES).to_pylist(), key=lambda f: (f["key"], f["source_path"]))
    return data


def shards(root: Path, manifest: dict[str, Any], media_from: str | None = None) -> list[tuple[str, Path | str]]:
    """(split, path) of every tar shard present, in split order then name; with `media_from` (a URL), the
    URLs there of the shards the manifest lists."""
    found: list[tuple[str, Path | str]] = []
    listed = sorted(rel for rel in manifest.get("files", {}) if rel.startswith("media/") and rel.endswith(".tar"))
    for split in sorted(manifest.get("splits", {}), key=split_order):
        if media_from:
            found += [(split, f"{media_from.rstrip('/')}/{rel}") for rel in listed if rel.removeprefix("media/").startswith(f"{split}-")]
        else:
            found += [(split, p) for p in sorted((root / "media").glob(f"{split}-*.tar"))]
    return found


def samples(split: str, path: Path, manifest: dict[str, Any]) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {suffix: bytes}) of one shard, sample by sample. The shard is checked first (release.download's
    check_shard: regular files named `{key}.{suffix}`, keys of the manifest's split, no pickles), so a hostile
    tar cannot make the report write outside its folder."""
    from emer_builder.release.download import check_shard

    try:
        check_shard(path, set(manifest.get("keys", {}).get(split, [])))
    except ValueError as e:
        raise UserError(f"refusing to read {path}: {e}") from None
    current: str | None = None
    members: dict[str, bytes] = {}
    with tarfile.open(path, "r:") as tar:
        for member in tar:
            key, _, suffix = member.name.partition(".")
            if key != current:
                if current is not None:
                    yield current, members
                current, members = key, {}
            f = tar.extractfile(member)
            members[suffix] = f.read() if f else b""
    if current is not None:
        yield current, members


def flat_row(record: dict[str, Any]) -> dict[str, Any]:
    """A record dict (a tar's json) reduced to the report's dotted paths."""
    row = {}
    for path in RECORD_PATHS:
        value: Any = record
        for part in path.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        row[path] = value
    return row


def _parquet_rows(path: Path) -> list[dict[str, Any]]:
    names = set(_leaf_paths(pq.ParquetFile(path).schema_arrow))
    paths = [p for p in RECORD_PATHS if p in names]
    table = pq.read_table(path, columns=paths)
    columns = {p: table.column(i).to_pylist() for i, p in enumerate(paths)}
    return [{p: columns[p][i] if p in columns else None for p in RECORD_PATHS} for i in range(table.num_rows)]


def _leaf_paths(schema: Any) -> Iterator[str]:
    import pyarrow as pa

    def walk(prefix: str, f: pa.Field) -> Iterator[str]:
        yield prefix + f.name
        if pa.types.is_struct(f.type):
            for child in f.type:
                yield from walk(f"{prefix}{f.name}.", child)

    for f in schema:
        yield from walk("", f)


def _timings(root: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Wall time and per-stage seconds: OUT/build.json, else manifest["build"], else nothing (an older build)."""
    path = root / TIMINGS
    if path.is_file():
        try:
            found = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            found = None
        if isinstance(found, dict):
            return found
    found = manifest.get("build")
    return found if isinstance(found, dict) else {}
