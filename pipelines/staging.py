"""Where the workers of a build write: a staging folder on a disk (inside a local OUT) or a staging
prefix on an object store (inside an OUT URL). Workers write whole files only (a store has no append
and no rename), so a worker on another machine needs nothing from the driver's disk.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path, PurePosixPath
from typing import Any

from emer_builder.core.urls import file_system, is_url


class StagingArea:
    """Files under one location, named by relative POSIX paths; picklable (the file system is opened lazily)."""

    def __init__(self, location: str | os.PathLike[str]):
        self.location = os.fspath(location).rstrip("/")
        self.stored = is_url(self.location)

    def __getstate__(self) -> dict[str, Any]:
        return {"location": self.location, "stored": self.stored}

    @cached_property
    def _fs(self) -> tuple[Any, str]:
        return file_system(self.location)

    def write(self, rel: str, data: bytes) -> None:
        """Write one whole file. On a disk its folder must exist already (one level is made): a staging
        folder that an interrupted build removed is never made again by a late worker."""
        if self.stored:
            fs, root = self._fs
            fs.pipe_file(f"{root}/{rel}", data)
            return
        target = Path(self.location, rel)
        target.parent.mkdir(exist_ok=True)
        target.write_bytes(data)

    @contextmanager
    def writing(self, rel: str) -> Iterator[str]:
        """A local path to write one file at: the file itself on a disk; on a store a temporary file,
        uploaded when the block ends without an error (a worker's disk holds one file at a time)."""
        if not self.stored:
            yield os.path.join(self.location, rel)
            return
        fd, local = tempfile.mkstemp(prefix="emer-staged-", suffix=PurePosixPath(rel).suffix)
        os.close(fd)
        try:
            yield local
            fs, root = self._fs
            fs.put_file(local, f"{root}/{rel}")
        finally:
            os.unlink(local)

    def read(self, rel: str) -> bytes:
        if self.stored:
            fs, root = self._fs
            return fs.cat_file(f"{root}/{rel}")
        return Path(self.location, rel).read_bytes()

    def remove(self, folder: str) -> None:
        """Remove a folder and everything under it, if it is there."""
        if not self.stored:
            shutil.rmtree(Path(self.location, folder), ignore_errors=True)
            return
        fs, root = self._fs
        try:
            fs.rm(f"{root}/{folder}", recursive=True)
        except FileNotFoundError:
            pass

    def names(self, folder: str) -> list[str]:
        """Relative paths of the files directly in `folder` (none when it does not exist)."""
        if not self.stored:
            where = Path(self.location, folder)
            return sorted(f"{folder}/{p.name}" for p in where.iterdir() if p.is_file()) if where.is_dir() else []
        fs, root = self._fs
        fs.invalidate_cache(f"{root}/{folder}")
        try:
            found = fs.ls(f"{root}/{folder}", detail=False)
        except FileNotFoundError:
            return []
        return sorted(f"{folder}/{p.rstrip('/').rsplit('/', 1)[-1]}" for p in found)
