"""Object-store locations (s3://, gs://, az://: any fsspec URL) for the inputs of a build.

Workers never hand a URL to ffmpeg: each clip is fetched to a local temporary file for the time its
stages read it (`local_copy`), so the decoders see a seekable file and a worker's disk holds one clip.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import PurePosixPath
from typing import Any

from emer_builder.core.errors import ClipError, UserError


def is_url(location: str | os.PathLike[str]) -> bool:
    """A location with a scheme other than file://."""
    text = os.fspath(location)
    return "://" in text and not text.startswith("file://")


def file_system(url: str, what: str = "", alternatives: str = "a folder or an fsspec URL such as s3://bucket/path") -> tuple[Any, str]:
    """The fsspec file system of `url` and the path on it; a missing package for the scheme or an
    unknown scheme is one line naming `what` the URL was given as and the `alternatives`."""
    import fsspec

    named = f"{what} {url}".strip()
    try:
        return fsspec.core.url_to_fs(url)
    except ImportError as e:  # a known scheme whose package is missing: s3fs, gcsfs, adlfs ...
        raise UserError(f"{named}: {e} (for s3:// install `emer-builder[s3]`)") from None
    except ValueError as e:  # "Protocol not known: foo"
        raise UserError(f"{named}: unsupported URL scheme ({e}); use {alternatives}") from None


def stamp(location: str) -> tuple[int, str]:
    """Size and a change stamp (mtime in ns on a disk, the ETag or modification time on a store): what
    tells that an input changed without reading it."""
    if not is_url(location):
        st = os.stat(location)
        return st.st_size, str(st.st_mtime_ns)
    fs, path = file_system(location)
    info = fs.info(path)
    changed = info.get("ETag") or info.get("etag") or info.get("LastModified") or info.get("mtime") or info.get("last_modified") or ""
    return int(info.get("size") or 0), str(changed).strip('"')


def sha256_location(url: str) -> str:
    """The sha256 of a stored object, streamed (no local copy)."""
    fs, path = file_system(url)
    digest = hashlib.sha256()
    with fs.open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@contextmanager
def local_copy(location: str) -> Iterator[str]:
    """A local path to read `location` from: the path itself, or a temporary copy of a stored object
    (same extension, removed afterwards)."""
    if not is_url(location):
        yield location
        return
    fs, path = file_system(location)
    fd, local = tempfile.mkstemp(prefix="emer-input-", suffix=PurePosixPath(path).suffix)
    os.close(fd)
    try:
        try:
            fs.get_file(path, local)
        except Exception as e:  # noqa: BLE001 - the store's client errors vary by scheme
            raise ClipError(f"cannot fetch {location}: {type(e).__name__}: {e}") from None
        yield local
    finally:
        os.unlink(local)
