"""Match input videos and give each a stable key that is safe as a WebDataset key and a file name."""

from __future__ import annotations

import re
import unicodedata
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mkv", ".mov", ".webm", ".flv", ".m4v", ".mpg", ".mpeg", ".wmv", ".3gp", ".ts"})


@dataclass(frozen=True)
class VideoInput:
    key: str
    path: str  # absolute
    source_path: str  # relative to the input folder, POSIX separators


@dataclass(frozen=True)
class KeyCollision:
    path: str
    source_path: str
    key: str
    others: tuple[str, ...]  # source paths of the other files with the same key


def key_for(source_path: str) -> str:
    """Key from a relative path: extension dropped, folders joined by `__`, other unsafe characters `_`.

    MER ids such as `sample_00000648` stay as they are. Keys never hold dots (WebDataset splits a
    member name at the first dot), slashes, `..` or anything a shell or a file system treats specially.
    """
    parts = Path(source_path).with_suffix("").parts
    cleaned = []
    for part in parts:
        part = unicodedata.normalize("NFC", part)
        part = "".join(ch if (ch.isalnum() or ch in "-_") else "_" for ch in part)
        cleaned.append(part.strip("_") or "_")
    key = "__".join(cleaned)
    return re.sub(r"_{3,}", "__", key)


def match_videos(videos_dir: str | Path) -> tuple[list[VideoInput], list[KeyCollision], list[str]]:
    """All video files under `videos_dir` in key order, files whose keys collide, and skipped non-video files."""
    root = Path(videos_dir)
    by_key: dict[str, list[tuple[str, str]]] = defaultdict(list)
    skipped: list[str] = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if any(part.startswith(".") for part in Path(rel).parts):
            continue  # hidden files and folders (.DS_Store, .git) are not inputs
        if path.is_dir():
            continue
        if path.suffix.lower() not in VIDEO_EXTENSIONS:
            skipped.append(rel)
            continue
        by_key[key_for(rel)].append((str(path.absolute()), rel))
    inputs, collisions = [], []
    for key in sorted(by_key):
        files = by_key[key]
        if len(files) == 1:
            inputs.append(VideoInput(key, *files[0]))
            continue
        for path, rel in files:
            others = tuple(r for _, r in files if r != rel)
            collisions.append(KeyCollision(path, rel, key, others))
    return inputs, collisions, skipped
