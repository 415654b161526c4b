"""The per-clip cache: each stage's result for each clip under a content address, so a killed build
resumes where it stopped and a grown corpus only runs its new clips.

Address of stage i for a clip = sha256(the input file's sha256, the identities of stages 0..i), where
a stage's identity is its name, class, constructor settings, model id and code (the sha256 of its
module's source, plus an optional `cache_version`). Changing one stage's config therefore reruns it
and the stages after it; the ones before come from the cache. An entry holds the stage's field group
and the media files it added, as a tar of `fields.json` plus raw members: no pickle, exact floats.

The store is any fsspec location (a folder, s3://, gs://...); entries are written to a temporary
name and moved into place, so a reader never sees half an entry.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import inspect
import io
import json
import logging
import os
import re
import stat
import tarfile
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from emer_builder.core.hashing import sha256_file
from emer_builder.core.urls import is_url, sha256_location, stamp
from emer_builder.transforms.clip import Stage

log = logging.getLogger(__name__)

FIELDS_MEMBER = "fields.json"
DIGEST_MEMBER = "sha256"  # of the other members: a cut or damaged entry (a crash, a full disk) is a miss, not a result
IGNORED_SETTINGS = ("cpu_threads",)  # how fast, not what: never part of an address
SAFE_MEMBER = "abcdefghijklmnopqrstuvwxyz0123456789_.-"  # what shards.SAFE_SUFFIX allows a media name (a plug-in's `spec-gram.png`)


def _plain(value: Any, ignored: tuple[str, ...]) -> Any:
    """Settings as JSON: primitives, sequences, mappings and dataclasses, without the `ignored` names
    at any depth; anything else (a loaded model) is not a setting."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _plain(dataclasses.asdict(value), ignored)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        items = [_plain(v, ignored) for v in value]
        return None if any(i is _SKIP for i in items) else items
    if isinstance(value, dict):
        plain = {str(k): _plain(v, ignored) for k, v in value.items() if str(k) not in ignored and not str(k).startswith("_")}
        return {k: v for k, v in sorted(plain.items()) if v is not _SKIP}
    return _SKIP


_SKIP = object()


def stage_identity(stage: Stage) -> dict[str, Any]:
    """What determines a stage's output, taken before `setup` (constructor settings only)."""
    cls = type(stage)
    module = inspect.getmodule(cls)
    try:
        source = inspect.getsource(module) if module else ""
    except (OSError, TypeError):
        source = ""
    ignored = (*IGNORED_SETTINGS, *getattr(cls, "cache_ignore", ()))  # a stage may name its own speed-only settings
    settings = _plain(vars(stage), ignored)
    try:
        model = stage.model_id()
    except Exception:  # noqa: BLE001 - some stages only know their model after setup
        model = None
    return {
        "name": stage.name,
        "class": f"{cls.__module__}.{cls.__qualname__}",
        "settings": settings,
        "model": model,
        "code": hashlib.sha256(source.encode()).hexdigest(),
        "cache_version": getattr(cls, "cache_version", 1),
    }


def chain_digests(stages: list[Stage]) -> list[str]:
    """Per stage, the digest of its identity and every earlier stage's: the part of the address that
    does not depend on the clip."""
    digests, running = [], hashlib.sha256()
    for stage in stages:
        running.update(json.dumps(stage_identity(stage), sort_keys=True, separators=(",", ":")).encode())
        digests.append(running.copy().hexdigest())
    return digests


def input_identity(input_sha256: str, start_s: float | None = None, end_s: float | None = None) -> str:
    """What a clip's stages read: the file, or one window of it (an utterance of a long video)."""
    if start_s is None or end_s is None:
        return input_sha256
    return f"{input_sha256}@{round(start_s * 1000)}-{round(end_s * 1000)}"


def entry_address(input_sha256: str, chain_digest: str) -> str:
    return hashlib.sha256(f"{input_sha256}:{chain_digest}".encode()).hexdigest()


def _json_default(value: Any) -> Any:
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot cache a {type(value).__name__}")


def encode_entry(group: Any, media_files: dict[str, bytes]) -> bytes:
    """A tar: fields.json (the stage's group; NaN kept) plus one member per media file, sorted."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        # key order kept: whatever reads a restored group (an LLM prompt) sees it as the stage made it
        members = {FIELDS_MEMBER: json.dumps({"group": group}, default=_json_default, allow_nan=True).encode()}
        members.update({f"media/{name}": data for name, data in media_files.items()})
        members[DIGEST_MEMBER] = _digest(members).encode()
        for name in sorted(members):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(members[name]), 0, 0o644
            tar.addfile(info, io.BytesIO(members[name]))
    return buf.getvalue()


def _digest(members: dict[str, bytes]) -> str:
    h = hashlib.sha256()
    for name in sorted(members):
        h.update(f"{name}\x00{len(members[name])}\x00".encode())
        h.update(members[name])
    return h.hexdigest()


def decode_entry(data: bytes) -> tuple[Any, dict[str, bytes]]:
    """The group and media files of an entry; members are checked (regular files with plain names), and
    the whole against its digest: an entry cut at a member boundary reads as a shorter tar, not an error."""
    members: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        for member in tar.getmembers():
            name = member.name
            safe = name in (FIELDS_MEMBER, DIGEST_MEMBER) or (name.startswith("media/") and name[6:].strip(".") and set(name[6:].lower()) <= set(SAFE_MEMBER))
            if not member.isfile() or not safe or name in members:
                raise ValueError(f"cache entry holds an unexpected member {name!r}")
            members[name] = tar.extractfile(member).read()
    digest = members.pop(DIGEST_MEMBER, b"").decode("ascii", "replace")
    if FIELDS_MEMBER not in members or digest != _digest(members):
        raise ValueError("cache entry is incomplete or damaged (its digest does not match)")
    fields = json.loads(members.pop(FIELDS_MEMBER))
    if not isinstance(fields, dict) or "group" not in fields:
        raise ValueError("cache entry's fields.json is not an object with a group")
    return fields["group"], {name[6:]: payload for name, payload in members.items()}


class ClipCache:
    """Entries under `{root}/entries/{aa}/{address}.tar`; input hashes memoised by (path, size, mtime)
    under `{root}/inputs/`; the addresses each build used under `{root}/builds/`."""

    def __init__(self, root: str):
        import fsspec

        self.root = root.rstrip("/")
        # a fresh file system object without listing caches: other processes write entries all the time
        self.fs, self.path = fsspec.core.url_to_fs(self.root, skip_instance_cache=True, use_listings_cache=False)

    def _entry(self, address: str) -> str:
        return f"{self.path}/entries/{address[:2]}/{address}.tar"

    def get(self, address: str) -> tuple[Any, dict[str, bytes]] | None:
        try:
            with self.fs.open(self._entry(address), "rb") as f:
                data = f.read()
        except (FileNotFoundError, OSError):
            return None
        try:
            return decode_entry(data)
        except (ValueError, tarfile.TarError, KeyError, RecursionError):
            return None  # a damaged entry is recomputed (and overwritten)

    def put(self, address: str, group: Any, media_files: dict[str, bytes]) -> None:
        """Write an entry; a cache that cannot be written (a full disk) only costs the reuse: the build goes on."""
        final = self._entry(address)
        tmp = f"{final}.tmp-{uuid.uuid4().hex}"
        try:
            self.fs.makedirs(final.rsplit("/", 1)[0], exist_ok=True)
            with self.fs.open(tmp, "wb") as f:
                f.write(encode_entry(group, media_files))
            self.fs.mv(tmp, final)
        except OSError as e:
            with contextlib.suppress(OSError):
                self.fs.rm(tmp)
            log.warning("the clip cache at %s could not be written (%s); this clip's results are not cached", self.root, e)

    def input_sha256(self, path: str) -> str:
        """The input file's sha256, memoised by (path, size, mtime) so an unchanged corpus is not re-read."""
        if is_url(path):  # an object-store input: its ETag (or modification time) stands for the mtime
            size, changed = stamp(path)
        else:
            st = os.stat(path)
            if not stat.S_ISREG(st.st_mode):  # a FIFO or a device would block or never end: decode says what it is
                raise OSError(f"not a regular file: {path}")
            size, changed = st.st_size, str(st.st_mtime_ns)
        memo = hashlib.sha256(f"{path}\x00{size}\x00{changed}".encode("utf-8", "surrogateescape")).hexdigest()
        where = f"{self.path}/inputs/{memo[:2]}/{memo}"
        try:
            with self.fs.open(where, "rb") as f:
                known = f.read().decode("ascii").strip()
            if re.fullmatch(r"[0-9a-f]{64}", known):  # anything else (zeros from a crash) is hashed again
                return known
        except (OSError, ValueError):
            pass
        digest = sha256_location(path) if is_url(path) else sha256_file(path)
        tmp = f"{where}.tmp-{uuid.uuid4().hex}"
        try:
            self.fs.makedirs(where.rsplit("/", 1)[0], exist_ok=True)
            with self.fs.open(tmp, "wb") as f:
                f.write(digest.encode())
            self.fs.mv(tmp, where)
        except OSError:  # a cache that cannot be written: the file is hashed again next time
            with contextlib.suppress(OSError):
                self.fs.rm(tmp)
        return digest

    def record_use(self, addresses: Iterable[str], label: str) -> None:
        """Remember which entries a build used, for `emer cache --prune`. The addresses are written as they
        come (in the order of the build's tables; a repeat is harmless, readers make a set of them), so a
        build of any size records its use without holding the list."""
        name = f"{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:6]}.json"  # sorts in the order builds finished
        tmp = f"{self.path}/builds/.{name}.tmp"  # a build killed while recording leaves no half record
        try:
            self.fs.makedirs(f"{self.path}/builds", exist_ok=True)
            with self.fs.open(tmp, "w") as f:
                f.write(f'{{"label": {json.dumps(label)}, "addresses": [')
                for n, address in enumerate(addresses):
                    f.write(f"{', ' if n else ''}{json.dumps(address)}")
                f.write("]}")
            self.fs.mv(tmp, f"{self.path}/builds/{name}")
        except OSError as e:  # the build's records are complete; only `emer cache --prune` loses what it used
            with contextlib.suppress(OSError):
                self.fs.rm(tmp)
            log.warning("the clip cache at %s could not record this build's entries (%s): a prune may remove them", self.root, e)

    def stats(self, keep_builds: int) -> dict[str, Any]:
        """Entries, bytes, builds recorded, and how many entries the last `keep_builds` builds did not use."""
        entries = self._entries()
        used = self._used(keep_builds)
        unused = [a for a in entries if a not in used]
        return {
            "root": self.root,
            "entries": len(entries),
            "bytes": sum(entries.values()),
            "builds": len(self._builds()),
            "unused_entries": len(unused),
            "unused_bytes": sum(entries[a] for a in unused),
        }

    def prune(self, keep_builds: int) -> dict[str, int]:
        """Delete the entries the last `keep_builds` builds did not use; return what went."""
        entries = self._entries()
        used = self._used(keep_builds)
        gone = [a for a in entries if a not in used]
        for address in gone:
            self.fs.rm(self._entry(address))
        for old in self._builds()[:-keep_builds] if keep_builds > 0 else self._builds():
            self.fs.rm(old)
        return {"entries": len(gone), "bytes": sum(entries[a] for a in gone)}

    def _entries(self) -> dict[str, int]:
        base = f"{self.path}/entries"
        if not self.fs.exists(base):
            return {}
        found = self.fs.find(base, detail=True)
        return {Path(p).name.removesuffix(".tar"): int(info.get("size") or 0) for p, info in found.items() if p.endswith(".tar")}

    def _builds(self) -> list[str]:
        base = f"{self.path}/builds"
        return sorted(p for p in self.fs.find(base) if p.endswith(".json") and not Path(p).name.startswith(".")) if self.fs.exists(base) else []

    def _used(self, keep_builds: int) -> set[str]:
        used: set[str] = set()
        for path in self._builds()[-keep_builds:] if keep_builds > 0 else []:
            try:
                with self.fs.open(path, "r") as f:
                    used.update(str(a) for a in json.load(f)["addresses"])
            except (OSError, ValueError, KeyError, TypeError):  # a record cut short (a build killed while writing it)
                log.warning("skipping the unreadable build record %s", path)
        return used
