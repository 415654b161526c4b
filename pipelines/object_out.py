"""OUT on an object store (s3://bucket/x, gs://...). The workers write their shards, failure rows and
scratch files under a staging prefix in OUT (`.emer-staging-<host>-<pid>/`), so they need no disk shared
with the driver; the driver reads back only the Parquet tables (records without media) and makes the
manifest, card and report in a local temporary folder. There is no rename on a store, so the commit is
"manifest.json written last": the old manifest goes first, then the old outputs, then the staged shards
are moved into place (a copy on the store's side) and the driver's files uploaded, then the new manifest.
A build cut off at any point leaves no manifest, and the next build removes what it left before it starts.

The lock is an object created only if absent (a conditional PUT where the store has one); a second
build into the same OUT fails at once naming the holder.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from emer_builder.core.errors import UserError
from emer_builder.core.urls import file_system
from emer_builder.pipelines.out import STAGING_FOLDERS, STAGING_PREFIX, Out, Staged
from emer_builder.release.manifest import BUILD_OUTPUTS, MANIFEST
from emer_builder.release.store import store_errors

LOCK = ".emer-lock"
CREDENTIALS = "check the endpoint (AWS_ENDPOINT_URL), the bucket and the credentials (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE)"


class StoredOut(Out):
    """An OUT given as an fsspec URL."""

    def __init__(self, url: str, overwrite: bool = False):
        self.fs, root = file_system(url, "--out")
        self.url = self.label = url.rstrip("/")
        self.overwrite = overwrite
        self.root = root.rstrip("/")
        with self._errors("write to"):
            self.fs.invalidate_cache()
            bucket = self.root.split("/", 1)[0]
            try:
                self.fs.info(bucket)  # unlike exists(), an unreachable endpoint raises here
            except FileNotFoundError:
                raise UserError(f"--out {self.url}: the bucket {bucket} does not exist; create it first") from None

    @contextmanager
    def _errors(self, verb: str) -> Iterator[None]:
        with store_errors(self.url, verb, CREDENTIALS):
            yield

    def _entries(self) -> list[str]:
        """Top-level names under OUT (files and folders)."""
        self.fs.invalidate_cache()
        if not self.fs.exists(self.root):
            return []
        return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(self.root, detail=False))

    @contextmanager
    def lock(self) -> Iterator[None]:
        path = f"{self.root}/{LOCK}"
        holder = f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}"
        locked = f"--out {self.url} is locked by another build ({{}}); wait for it, or delete {self.url}/{LOCK} if that build is gone"
        with self._errors("lock"):
            if self.fs.exists(path):
                raise UserError(locked.format(self._holder(path)))
            try:  # created only if absent where the store has conditional writes (S3's If-None-Match)
                self.fs.pipe_file(path, holder.encode(), mode="create")
            except (FileExistsError, OSError) as e:
                if isinstance(e, FileExistsError) or "Precondition" in str(e):
                    raise UserError(locked.format(self._holder(path))) from None
                raise
        try:
            yield
        finally:
            with self._errors("unlock"):
                self.fs.rm_file(path)

    def _holder(self, path: str) -> str:
        try:
            return self.fs.cat_file(path).decode(errors="replace").strip()
        except (OSError, ValueError):
            return "holder unknown"

    def staging_url(self) -> str:
        return f"{self.url}/{STAGING_PREFIX}{socket.gethostname()}-{os.getpid()}"

    def _path_of(self, url: str) -> str:
        """The store path of a URL under OUT."""
        return f"{self.root}/{url[len(self.url) + 1 :]}"

    def remove_staging(self, staging_url: str) -> None:
        """Remove a staging prefix (after a commit, or what a failed build wrote)."""
        with self._errors("clean up"):
            path = self._path_of(staging_url)
            if self.fs.exists(path):
                self.fs.rm(path, recursive=True)

    def entries(self) -> list[str]:
        with self._errors("read"):
            return [e for e in self._entries() if e != LOCK and not e.startswith(STAGING_PREFIX)]

    def make_ready(self) -> bool:
        """Remove what a build cut off before its manifest left (staged shards included: we hold the
        lock, so their build is gone); refuse an OUT that holds other things. A store has no journal:
        nothing is finished, only cleared."""
        self.prepare(self.overwrite)
        return False

    def stage(self) -> Staged:
        """The workers write under a staging prefix in OUT; the driver's files go to a local temporary folder."""
        local = Path(tempfile.mkdtemp(prefix="emer-out-"))
        for sub in STAGING_FOLDERS:
            (local / sub).mkdir()
        return Staged(local, self.staging_url(), cleanup=lambda: shutil.rmtree(local, ignore_errors=True))

    def commit(self, staged: Staged) -> None:
        assert staged.url is not None
        self.commit_files(staged.local, staged.url)

    def discard(self, staged: Staged) -> None:
        try:
            if staged.url:
                self.remove_staging(staged.url)
        finally:
            staged.cleanup()

    def prepare(self, overwrite: bool) -> None:
        """Clear an interrupted build's files; with `overwrite`, whatever OUT holds."""
        with self._errors("read"):
            entries = [e for e in self._entries() if e != LOCK]
            for name in [e for e in entries if e.startswith(STAGING_PREFIX)]:
                self.fs.rm(f"{self.root}/{name}", recursive=True)
                entries.remove(name)
            if not entries or MANIFEST in entries:
                return
            foreign = [e for e in entries if e not in BUILD_OUTPUTS]
            if foreign and not overwrite:
                raise UserError(f"--out {self.url} is not empty and holds no emer build ({', '.join(foreign[:3])}); choose another --out or pass --overwrite")
            for name in entries:  # an interrupted build's files (or, with --overwrite, what was there)
                self.fs.rm(f"{self.root}/{name}", recursive=True)

    def read_json(self, name: str) -> dict[str, Any] | None:
        with self._errors("read"):
            try:
                return json.loads(self.fs.cat_file(f"{self.root}/{name}"))
            except (FileNotFoundError, ValueError):
                return None

    def damage(self, manifest: dict[str, Any]) -> str | None:
        """What is wrong with the build in OUT, checked cheaply (every listed file there, with its size)."""
        with self._errors("read"):
            sizes = {p[len(self.root) + 1 :]: int(info.get("size") or 0) for p, info in self.fs.find(self.root, detail=True).items()}
        for rel, meta in sorted(manifest.get("files", {}).items()):
            if rel not in sizes:
                return f"{rel} is listed in {MANIFEST} but missing"
            if sizes[rel] != meta.get("bytes"):
                return f"{rel} has {sizes[rel]} bytes, {MANIFEST} says {meta.get('bytes')}"
        return None

    def commit_files(self, local: Path, staging_url: str) -> None:
        """Replace the build in OUT by the staged shards and the driver's files in `local`: old manifest
        first, new manifest last."""
        staged_root = self._path_of(staging_url)
        with self._errors("upload to"):
            if self.fs.exists(f"{self.root}/{MANIFEST}"):
                self.fs.rm_file(f"{self.root}/{MANIFEST}")
            for name in self._entries():
                if name in BUILD_OUTPUTS:
                    self.fs.rm(f"{self.root}/{name}", recursive=True)
            self.fs.invalidate_cache(staged_root)
            staged = sorted(p[len(staged_root) + 1 :] for p in self.fs.find(staged_root) if not p[len(staged_root) + 1 :].startswith("."))
            for rel in staged:  # the shards the workers wrote: moved on the store's side
                self.fs.mv(f"{staged_root}/{rel}", f"{self.root}/{rel}")
            files = sorted(p for p in local.rglob("*") if p.is_file() and p.name != MANIFEST and not p.relative_to(local).parts[0].startswith("."))
            for path in files:
                rel = path.relative_to(local).as_posix()
                if rel not in staged:  # the driver's own files (card, report, build.json)
                    self.fs.put_file(str(path), f"{self.root}/{rel}")
            self.fs.put_file(str(local / MANIFEST), f"{self.root}/{MANIFEST}")
