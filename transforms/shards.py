"""Deterministic shards: a plan from (key, size) pairs, then Parquet and WebDataset tar files whose
bytes depend only on the records (sorted members, pinned tar metadata)."""

from __future__ import annotations

import io
import json
import re
import tarfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

SAFE_SUFFIX = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")


def shard_name(split: str, index: int, count: int) -> str:
    return f"{split}-{index:05d}-of-{count:05d}"


def plan_shards(sizes: Iterable[tuple[str, int]], max_records: int, max_bytes: int) -> list[list[str]]:
    """Keys in key order cut into shards bounded by record count and bytes (a lone oversize record gets its own)."""
    shards: list[list[str]] = []
    current: list[str] = []
    current_bytes = 0
    for key, size in sorted(sizes):
        if current and (len(current) >= max_records or current_bytes + size > max_bytes):
            shards.append(current)
            current, current_bytes = [], 0
        current.append(key)
        current_bytes += size
    if current:
        shards.append(current)
    return shards


def record_json(record: dict[str, Any]) -> bytes:
    return json.dumps(record, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()


def sample_members(record: dict[str, Any], media_files: dict[str, bytes]) -> list[tuple[str, bytes]]:
    """Tar members of one sample: `{key}.{suffix}` for each media file and the record json, sorted."""
    key = record["key"]
    for suffix in media_files:
        if not SAFE_SUFFIX.fullmatch(suffix) or suffix == "json":
            raise ValueError(f"unsafe tar member suffix {suffix!r} for {key!r}")
    members = [(f"{key}.{suffix}", data) for suffix, data in media_files.items()]
    members.append((f"{key}.json", record_json(record)))
    return sorted(members)


def media_bytes(media_files: dict[str, bytes]) -> int:
    """Approximate tar bytes of a sample's media members (data plus one 512-byte header each)."""
    return sum(len(d) + 1024 for d in media_files.values())


def sample_bytes(record: dict[str, Any], media_files: dict[str, bytes], spilled_bytes: int = 0) -> int:
    """Approximate tar bytes of a sample: its media (in memory, or `spilled_bytes` of it on disk) and its json."""
    return media_bytes(media_files) + spilled_bytes + len(record_json(record)) + 1024


class TarShard:
    """A WebDataset shard written a sample at a time, in key order: members sorted, owner/time/mode pinned."""

    def __init__(self, path: str | Path):
        self.tar = tarfile.open(path, mode="w", format=tarfile.PAX_FORMAT)

    def add(self, record: dict[str, Any], media_files: dict[str, bytes]) -> None:
        for name, data in sample_members(record, media_files):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            self.tar.addfile(info, io.BytesIO(data))

    def close(self) -> None:
        self.tar.close()


class ParquetShard:
    """A Parquet table written a row group at a time from records in key order: what it holds is one
    row group, not the shard (the bytes are those of the whole table written at once)."""

    def __init__(self, path: str | Path, schema: pa.Schema, row_group_size: int):
        self.writer = pq.ParquetWriter(path, schema, compression="zstd")
        self.schema, self.row_group_size, self.rows, self.empty = schema, row_group_size, [], True

    def add(self, record: dict[str, Any]) -> None:
        self.rows.append(record)
        if len(self.rows) == self.row_group_size:
            self._flush()

    def _flush(self) -> None:
        self.writer.write_table(pa.Table.from_pylist(self.rows, schema=self.schema), row_group_size=self.row_group_size)
        self.rows, self.empty = [], False

    def close(self) -> None:
        if self.rows or self.empty:  # an empty table is one empty row group, as pyarrow writes it at once
            self._flush()
        self.writer.close()


class ShardWriter:
    """One shard's Parquet table and tar, written together from samples given in key order (checked:
    the order is what makes the bytes deterministic; a repeated key is left to the completeness check)."""

    def __init__(self, parquet_path: str | Path, tar_path: str | Path, schema: pa.Schema, row_group_size: int):
        self.table, self.tar, self.last_key = ParquetShard(parquet_path, schema, row_group_size), TarShard(tar_path), None

    def add(self, record: dict[str, Any], media_files: dict[str, bytes]) -> None:
        if self.last_key is not None and record["key"] < self.last_key:
            raise ValueError(f"shard samples out of key order: {record['key']!r} after {self.last_key!r}")
        self.last_key = record["key"]
        self.table.add(record)
        self.tar.add(record, media_files)

    def close(self) -> None:
        self.table.close()
        self.tar.close()


def write_tar(path: str | Path, samples: list[tuple[dict[str, Any], dict[str, bytes]]]) -> None:
    """A WebDataset shard of `samples` (in any order)."""
    tar = TarShard(path)
    for record, media_files in sorted(samples, key=lambda s: s[0]["key"]):
        tar.add(record, media_files)
    tar.close()


def write_parquet(path: str | Path, records: list[dict[str, Any]], schema: pa.Schema, row_group_size: int) -> None:
    """A Parquet table of `records` (in any order)."""
    table = ParquetShard(path, schema, row_group_size)
    for record in sorted(records, key=lambda r: r["key"]):
        table.add(record)
    table.close()
