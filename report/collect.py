"""What the report shows, read from a build folder or a downloaded release: the manifest, the build's timings,
slim record rows and failure rows (streamed once into report/tally.py's counts and bounded gallery sample), and
the gallery's media from the tar shards that hold it (checked before any byte is used).

A downloaded release may hold only some of this (the Parquet tables of one split, or only the tar shards):
the report says what is missing instead of failing. Nothing here runs a stage or imports Beam.
"""

from __future__ import annotations

import json
import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from emer_builder.core.errors import UserError
from emer_builder.core.failures import FAILURES_FILE
from emer_builder.core.urls import local_copy
from emer_builder.report.tally import FailureTally, RecordTally, gallery_shards
from emer_builder.transforms.split import split_order

MANIFEST = "manifest.json"
FAILURES = FAILURES_FILE
TIMINGS = "build.json"  # written by the build next to the manifest (wall time and stage seconds are not deterministic)
EXPLAINED = ("visual_clue", "acoustic_clue", "lexical_clue", "multimodal_explanation")
GROUPS_WITH_REASON = ("transcript", "faces", "acoustics")
BATCH_ROWS = 1024  # rows read from a Parquet table at a time
SHARD_NAME = re.compile(r"(.+)-\d{5,}-of-\d{5,}")

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
    """A build as the report sees it: every row counted once in a stream (`tally`, `failure_tally`) and the
    gallery's rows, `records` (flat dicts, dotted path -> value, sorted by key) and `failures` (sorted by key):
    all of a normal build's, a bounded sample of a large one's (report/tally.py)."""

    root: Path
    manifest: dict[str, Any]
    timings: dict[str, Any]
    tally: RecordTally = field(default_factory=RecordTally)
    failure_tally: FailureTally = field(default_factory=FailureTally)
    records: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, str]] = field(default_factory=list)
    with_table: set[str] = field(default_factory=set)  # splits whose records came from Parquet tables
    gallery_shards: dict[str, tuple[int, int]] = field(default_factory=dict)  # split -> (shards sampled, shards)
    _keys: dict[str, set[str]] = field(default_factory=dict, repr=False)

    @property
    def splits(self) -> list[str]:
        return sorted({*self.manifest.get("splits", {}), *self.tally.splits}, key=split_order)

    def keys_of(self, split: str) -> set[str]:
        """The manifest's keys of `split`, as a set made once (every shard of the split is checked against it)."""
        if split not in self._keys:
            self._keys[split] = set(self.manifest.get("keys", {}).get(split, []))
        return self._keys[split]


def load_build(root: Path, manifest: dict[str, Any] | None = None, media_from: str | None = None) -> BuildData:
    """Read the manifest and timings of `root` (a build's OUT or a downloaded release), then stream its Parquet rows
    (a split without a table: its tar shards' json) and failure rows once, batch by batch, into the tallies."""
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
    for split, rows in _tables(root).items():
        chosen = gallery_shards(rows)
        data.gallery_shards[split] = (len(chosen), len(rows))
        for name in sorted(rows):
            for r in parquet_rows(root / "data" / f"{name}.parquet"):
                data.with_table.add(r["split"])
                data.tally.add(r, name, name in chosen)
    _rows_from_shards(data, media_from)
    data.records = data.tally.gallery_rows()
    if (root / FAILURES).is_file():
        for batch in pq.ParquetFile(root / FAILURES).iter_batches(batch_size=BATCH_ROWS):
            for f in batch.to_pylist():
                data.failure_tally.add(f)
        data.failures = data.failure_tally.gallery_rows()
    return data


def _tables(root: Path) -> dict[str, dict[str, int]]:
    """split -> Parquet table name (without suffix) -> its rows, from the tables' footers."""
    tables: dict[str, dict[str, int]] = {}
    for path in sorted((root / "data").glob("*.parquet")):
        tables.setdefault(split_of(path.stem), {})[path.stem] = pq.ParquetFile(path).metadata.num_rows
    return tables


def split_of(name: str) -> str:
    """The split a shard's name (`train-00000-of-00002`) belongs to."""
    found = SHARD_NAME.fullmatch(name)
    return found.group(1) if found else name.split("-")[0]


def _rows_from_shards(data: BuildData, media_from: str | None) -> None:
    """Records of splits without a Parquet table here (a download of the media only), from their shards' json."""
    found = [(split, where) for split, where in shards(data.root, data.manifest, media_from) if split not in data.with_table]
    by_split: dict[str, list[Path | str]] = {}
    for split, where in found:
        by_split.setdefault(split, []).append(where)
    for split, places in by_split.items():
        each = -(-int(data.manifest.get("splits", {}).get(split) or 0) // len(places))  # the shards' rows are known only once read
        chosen = gallery_shards({shard_stem(w): each for w in places})
        data.gallery_shards[split] = (len(chosen), len(places))
        for where in places:
            name = shard_stem(where)
            with local_copy(str(where)) as local:
                for key, members in samples(split, Path(local), data.manifest, suffixes={"json"}, known=data.keys_of(split)):
                    if "json" in members:
                        data.tally.add(flat_row(record_json(members["json"], Path(local), key)), name, name in chosen)


def shard_stem(where: Path | str) -> str:
    """A tar shard's name without folder and suffix: the name its Parquet table shares."""
    return str(where).rstrip("/").rsplit("/", 1)[-1].removesuffix(".tar")


def record_json(raw: bytes, path: Path, key: str) -> dict[str, Any]:
    """A sample's json member as the record it must hold."""
    try:
        record = json.loads(raw)
    except ValueError as e:
        raise UserError(f"{path}: {key}.json is not JSON: {e}") from None
    if not isinstance(record, dict) or record.get("key") != key:
        raise UserError(f"{path}: {key}.json does not hold the record of {key}")
    return record


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


def samples(
    split: str, path: Path, manifest: dict[str, Any], keys: set[str] | None = None, suffixes: set[str] | None = None, known: set[str] | None = None
) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {suffix: bytes}) of one shard, sample by sample; with `keys` or `suffixes`, only those samples and
    members are read (the others are skipped over). The shard is checked first (release.download's check_shard:
    regular files named `{key}.{suffix}`, keys of the manifest's split (`known`, when the caller holds that set),
    no pickles), so a hostile tar cannot make the report write outside its folder."""
    from emer_builder.release.download import check_shard

    try:
        check_shard(path, known if known is not None else set(manifest.get("keys", {}).get(split, [])))
    except ValueError as e:
        raise UserError(f"refusing to read {path}: {e}") from None
    current: str | None = None
    members: dict[str, bytes] = {}
    with tarfile.open(path, "r:") as tar:
        for member in tar:
            key, _, suffix = member.name.partition(".")
            if (keys is not None and key not in keys) or (suffixes is not None and suffix not in suffixes):
                continue
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


def parquet_rows(path: Path) -> Iterator[dict[str, Any]]:
    """The report's flat rows of one Parquet table, read batch by batch (only the columns it shows)."""
    table = pq.ParquetFile(path)
    names = set(_leaf_paths(table.schema_arrow))
    paths = [p for p in RECORD_PATHS if p in names]
    for batch in table.iter_batches(batch_size=BATCH_ROWS, columns=paths):
        for row in batch.to_pylist():
            yield flat_row(row)


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
