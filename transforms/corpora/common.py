"""Helpers every corpus adapter uses: finding its tables and clips under ROOT, and reading cells
(the adapter class and its shared steps are in `base.py`)."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path, PurePosixPath
from typing import Any

from emer_builder.core.errors import UserError
from emer_builder.core.hashing import sha256_file
from emer_builder.transforms.keys import VideoInput, display_path, key_for, walk_inputs

# Split names as corpora write them -> the build's split names.
SPLIT_NAMES: dict[str, str] = {"train": "train", "dev": "validation", "valid": "validation", "val": "validation", "validation": "validation", "test": "test"}


# The build's `follow_external_links` while an adapter loads: set by `load_corpus`, so that adapters need not
# carry it and still walk ROOT exactly as the build's own input matching does.
_FOLLOW_EXTERNAL_LINKS: ContextVar[bool] = ContextVar("follow_external_links", default=False)


@contextmanager
def following_external_links(follow: bool) -> Iterator[None]:
    """Within this block, `root_videos` follows links that leave ROOT (or, by default, lists them as skipped)."""
    token = _FOLLOW_EXTERNAL_LINKS.set(follow)
    try:
        yield
    finally:
        _FOLLOW_EXTERNAL_LINKS.reset(token)


def root_videos(root: Path) -> list[VideoInput]:
    """Every video file under ROOT (hidden entries, symlink loops and, unless `following_external_links`,
    links leaving ROOT skipped), keyed by relative path, sorted."""
    found = walk_inputs(root, _FOLLOW_EXTERNAL_LINKS.get())
    return sorted((VideoInput(key_for(rel), path, display_path(rel)) for path, rel in found.files), key=lambda v: v.source_path)


def find_tables(root: Path, name: str) -> list[Path]:
    """Files called `name` (a glob pattern) anywhere under ROOT, hidden folders left out, sorted."""
    found = []
    for path in sorted(root.rglob(name)):
        rel = path.relative_to(root).parts
        if path.is_file() and not any(part.startswith(".") for part in rel):
            found.append(path)
    return found


def one_table(root: Path, name: str, corpus: str, required: bool = True) -> Path | None:
    """The one file `name` under ROOT; several are an error (which one would be the corpus'?)."""
    found = find_tables(root, name)
    if len(found) > 1:
        where = ", ".join(str(p.relative_to(root)) for p in found)
        raise UserError(f"corpus {corpus}: {len(found)} files match {name} under {root} ({where}); keep one")
    if not found:
        if required:
            raise UserError(f"corpus {corpus}: no {name} under {root}")
        return None
    return found[0]


def file_entry(path: Path, rows: int | None = None) -> dict[str, Any]:
    """A table's entry in `Segmentation.files` (the manifest and the inputs fingerprint)."""
    entry: dict[str, Any] = {"path": str(path), "sha256": sha256_file(str(path))}
    if rows is not None:
        entry["rows"] = rows
    return entry


def text(value: Any) -> str | None:
    """A cell as stripped text, None when empty."""
    if value is None:
        return None
    out = str(value).strip()
    return out or None


def number(value: Any) -> float | None:
    """A cell as a finite float, None when empty or not a number."""
    if value is None or isinstance(value, bool):
        return None
    try:
        out = float(str(value).strip())
    except ValueError:
        return None
    return out if math.isfinite(out) else None


def split_name(word: str | None) -> str | None:
    """A corpus' split word as the build names it (dev, valid -> validation); other words lowercased as they are."""
    if word is None:
        return None
    lowered = word.strip().lower()
    return SPLIT_NAMES.get(lowered, lowered) or None


def unlisted(videos: Iterable[VideoInput], used: set[str], corpus: str) -> list[str]:
    """Video files under ROOT that the corpus' tables do not list: reported, not inputs."""
    return [f"{v.source_path} (not listed in the {corpus} tables)" for v in videos if v.path not in used]


def by_stem(videos: Iterable[VideoInput]) -> dict[str, list[VideoInput]]:
    """Videos by file stem (several files may share one)."""
    out: defaultdict[str, list[VideoInput]] = defaultdict(list)
    for v in videos:
        out[PurePosixPath(v.source_path).stem].append(v)
    return out


__all__ = [
    "SPLIT_NAMES",
    "by_stem",
    "file_entry",
    "find_tables",
    "following_external_links",
    "number",
    "one_table",
    "root_videos",
    "split_name",
    "text",
    "unlisted",
]
