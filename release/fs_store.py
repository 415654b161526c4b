"""Releases in a directory or at an fsspec URL (s3://, gs://, memory://, file://): for air-gapped sites and
object storage.

Layout: TARGET/vX.Y.Z/<every file of the version> (its card and releases.json included),
TARGET/README.md (the latest card) and TARGET/releases.json (the index, newest first).

The commit is the index: a version's files are written into its folder first (each object in one write,
so a file is there whole or not at all), then releases.json in one atomic write, then the target's card.
Object stores have no folder rename, and this order needs none: a folder the index does not list is an
interrupted publish that readers never see. Re-running the same publish finds it, keeps every file
that already holds the right bytes (checked by sha256), sends the rest and removes leftovers. A
`.incomplete-vX.Y.Z/` staging folder, left by earlier emer-builders (which staged a version there and moved
it into place, a move object stores cannot do), is used the same way, then removed.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from emer_builder.core.errors import UserError
from emer_builder.core.hashing import sha256_file
from emer_builder.core.urls import file_system
from emer_builder.release.store import Existing, NoReleases, ReleaseFile, error_types, reason, store_errors
from emer_builder.release.versions import RELEASES, Version, index_versions, read_index, version_tag

if TYPE_CHECKING:
    from emer_builder.release.publish import Release

CARD = "README.md"
READ_ONLY = frozenset({"http", "https", "zip", "tar", "github", "git", "reference"})  # fsspec protocols that cannot be written
CREDENTIALS = "check the location's permissions, or the credentials (s3://: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE)"


class FsspecStore:
    """A directory or fsspec URL laid out by `emer publish`; the revision of a version is its folder."""

    hub_endpoint = None

    def __init__(self, target: str, *, publishing: bool = False) -> None:
        from fsspec.implementations.local import LocalFileSystem

        self.fs, root = file_system(os.path.expanduser(target), alternatives="ORG/NAME for the Hub, a directory, or an fsspec URL such as s3://bucket/path")
        self.fs.invalidate_cache()  # fsspec shares one instance per URL in a process: forget listings an earlier call saw
        self.root = root.rstrip("/") or root
        self.local = isinstance(self.fs, LocalFileSystem)
        self.where = self._url(self.root)
        self.target = self.where  # how messages and the card name it: the full path or URL
        self.index = f"{self.root}/{RELEASES}"
        self._index_seen: bytes | None = None  # releases.json as `versions` read it: `tag` refuses to overwrite a newer one
        self._moves: dict[str, str] = {}  # release path -> verified copy in a legacy staging folder
        self._folders: set[str] = set()  # folders `_makedirs` made or found
        if publishing:
            self._check_writable()

    def location(self, tag: str) -> str:
        return f"{self.where}/{tag}"

    def versions(self) -> dict[Version, str]:
        raw = self._read_index()
        if raw is None:
            raise NoReleases(f"{self.target} has no {RELEASES}: it is not a target written by `emer publish`")
        return {v: f"{self.root}/{version_tag(v)}" for v in index_versions(read_index(raw, f"{self.where}/{RELEASES}"))}

    def read(self, revision: str, path: str) -> bytes:
        with self._errors("read"):
            try:
                return self.fs.cat_file(f"{revision}/{path}")
            except FileNotFoundError:
                raise UserError(f"{self._url(revision)} has no {path}: not a release made by `emer publish`") from None

    def prepare(self, create: bool) -> None:
        """Nothing to create: folders appear with their files (and a bucket must exist, see `_check_writable`)."""

    def existing(self, tag: str, files: list[ReleaseFile], build_paths: set[str], owned: set[str]) -> Existing:
        """Build files an interrupted run already wrote, checked by sha256; generated files are always rewritten
        (their date may have changed). Leftovers of a legacy staging folder count too: `upload` moves them."""
        final, legacy = f"{self.root}/{tag}", f"{self.root}/.incomplete-{tag}"
        self._moves = {}
        with self._errors("read"):
            found, legacy_found = self.fs.exists(final), self.fs.exists(legacy)
            present = set()
            for f in files:
                if f.path not in build_paths:
                    continue
                if found and self._holds(f"{final}/{f.path}", f):
                    present.add(f.path)
                elif legacy_found and self._holds(f"{legacy}/{f.path}", f):
                    present.add(f.path)
                    self._moves[f.path] = f"{legacy}/{f.path}"
        return Existing(frozenset(present), resumed=found or legacy_found)

    def upload(self, tag: str, files: list[ReleaseFile], existing: Existing, message: str, description: str) -> None:
        """Every file into TARGET/vX.Y.Z/, then leftovers of earlier attempts out; nothing is published yet."""
        final, legacy = f"{self.root}/{tag}", f"{self.root}/.incomplete-{tag}"
        with self._errors("upload to"):
            for f in files:
                dest = f"{final}/{f.path}"
                if f.path in self._moves:
                    self._makedirs(dest)
                    self.fs.mv(self._moves[f.path], dest)
                elif not f.present:
                    self._put(f, dest)
            wanted = {f"{final}/{f.path}" for f in files}
            for stale in sorted(set(self.fs.find(final)) - wanted):
                self.fs.rm(stale)
            if self.fs.exists(legacy):
                self.fs.rm(legacy, recursive=True)

    def tag(self, tag: str, commit: str | None, release: Release) -> None:
        """The commit: releases.json, refused if another publisher changed it since it was read; then the target's
        card (a run that dies in between leaves the previous card until the next publish, never a card ahead of the index)."""
        with self._errors("publish to"):
            seen = self._index_seen
            if self._read_index() != seen:
                raise UserError(
                    f"{self.where}/{RELEASES} changed while publishing (another publisher?); {tag} is uploaded but not published: re-run the same command"
                )
            self._write_atomic(self.index, release.index)
            self._write_atomic(f"{self.root}/{CARD}", release.card.encode())

    def fetch(self, revision: str, files: dict[str, str], optional: list[str], to: Path) -> dict[str, str]:
        hashes = {}
        for path, want in sorted(files.items()):
            dest = to / path
            if dest.is_file() and (have := sha256_file(dest)) == want:  # the resume: a verified copy stays
                hashes[path] = have
                continue
            try:
                hashes[path] = self._copy(f"{revision}/{path}", dest, want)
            except FileNotFoundError:
                continue  # reported by the verification as missing from the release
        for name in optional:
            with self._errors("read"):
                there = self.fs.exists(f"{revision}/{name}")
            if there:
                self._copy(f"{revision}/{name}", to / name)
        return hashes

    def refetch(self, revision: str, path: str, to: Path, want: str) -> None:
        self._copy(f"{revision}/{path}", to / path, want)

    # -- helpers -------------------------------------------------------------------------------------------------------

    def _errors(self, verb: str) -> Any:
        return store_errors(self.where, verb, CREDENTIALS)

    def _url(self, path: str) -> str:
        """A path of this filesystem as the user writes it: a local path, or a URL with its scheme."""
        return path if self.local else self.fs.unstrip_protocol(path)

    def _check_writable(self) -> None:
        """One clear error before any work: a read-only scheme, an unreachable endpoint, bad credentials or a
        missing bucket. Folders below an existing one are created by the upload (object stores need none)."""
        protocols = self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)
        if READ_ONLY & set(protocols):
            raise UserError(f"{self.target} is read-only ({protocols[0]}://): publish to a directory, an object store URL or a Hub repo")
        with self._errors("publish to"):
            path = self.root
            while not self.fs.exists(path):
                parent = self.fs._parent(path)
                if parent in ("", path):  # the top (an object store's bucket) does not exist
                    raise UserError(f"{self._url(path)} does not exist: create the bucket (or folder) first, then publish to {self.where}")
                path = parent

    def _read_index(self) -> bytes | None:
        with self._errors("read"):
            try:
                raw = self.fs.cat_file(self.index)
            except FileNotFoundError:
                raw = None
        self._index_seen = raw
        return raw

    def _holds(self, path: str, f: ReleaseFile) -> bool:
        """Whether `path` exists with `f`'s size and sha256 (a copy that an interrupted run finished)."""
        if not self.fs.exists(path) or self.fs.size(path) != f.size:
            return False
        digest = hashlib.sha256()
        with self.fs.open(path, "rb") as src:
            while chunk := src.read(1 << 20):
                digest.update(chunk)
        return digest.hexdigest() == f.sha256

    def _makedirs(self, path: str) -> None:
        """The folder of `path`, once per folder (a disk needs it; an object store answers with one request)."""
        folder = path.rsplit("/", 1)[0]
        if folder not in self._folders:
            self.fs.makedirs(folder, exist_ok=True)
            self._folders.add(folder)

    def _put(self, f: ReleaseFile, path: str) -> None:
        """One file to the target, hashed as it is sent: a build file changed since it was checked (a build
        committing into OUT meanwhile) is refused before the version is indexed, not published under the old sha256."""
        self._makedirs(path)
        if isinstance(f.source, bytes):
            self.fs.pipe_file(path, f.source)
            return
        h = hashlib.sha256()
        with open(f.source, "rb") as src, self.fs.open(path, "wb") as out:
            while block := src.read(1 << 20):
                h.update(block)
                out.write(block)
        if h.hexdigest() != f.sha256:
            self.fs.rm(path)
            raise UserError(
                f"{f.path} changed while it was being published (another build in its folder?); nothing was published: re-run when the build is finished"
            )

    def _write_atomic(self, path: str, data: bytes) -> None:
        """Write then move: a rename on a disk, a server-side copy on an object store; readers never see half a file."""
        self.fs.pipe_file(f"{path}.tmp", data)
        self.fs.mv(f"{path}.tmp", path)

    def _copy(self, src: str, dest: Path, want: str | None = None) -> str:
        """Stream to a partial file, then rename: an interrupted copy never sits under the real name, nor one
        whose sha256 is not `want` (the digest returned says so; a killed run leaves no unchecked file). Only a
        regular file is read: a link in a folder release would copy a file from outside it (the reader's own),
        a FIFO or device would never end."""
        try:
            info = self.fs.info(src)
        except FileNotFoundError:
            raise  # the caller's: reported by the verification as missing
        except error_types() as e:
            raise UserError(f"reading {self._url(src)} failed ({type(e).__name__}: {reason(e)})") from None
        if info.get("islink") or info.get("type") != "file":
            what = "a link" if info.get("islink") else "a folder" if info.get("type") == "directory" else "not a regular file"
            raise UserError(f"{self._url(src)} is {what}: a release holds regular files only; refused")
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise UserError(f"cannot write {dest}: a file stands where its folder should be") from None
        partial = dest.with_name(f".{dest.name}.partial")
        h = hashlib.sha256()
        try:
            with self.fs.open(src, "rb") as f, open(partial, "wb") as out:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
                    out.write(block)
            if want is not None and h.hexdigest() != want:
                partial.unlink()
                dest.unlink(missing_ok=True)  # an older copy under the name is not this release's either
            else:
                os.replace(partial, dest)
        except FileNotFoundError:
            partial.unlink(missing_ok=True)
            raise
        except error_types() as e:
            partial.unlink(missing_ok=True)
            raise UserError(f"copying {self._url(src)} failed ({type(e).__name__}: {reason(e)}); run the same command again to resume") from None
        return h.hexdigest()
