"""A local OUT: an flock for one build at a time, a staging folder inside OUT, and a journalled commit
(a kill at any instant leaves the old build or the new one; the next build finishes the commit)."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from emer_builder.core.errors import UserError
from emer_builder.pipelines.out import STAGING_FOLDERS, STAGING_PREFIX, Out, Staged
from emer_builder.release.manifest import BUILD_OUTPUTS, MANIFEST

LOCK_FILE = ".emer-lock"
JOURNAL = ".emer-commit"


class LocalOut(Out):
    """OUT as a folder on this machine (or a shared file system the workers see)."""

    def __init__(self, path: Path, overwrite: bool):
        self.path, self.overwrite, self.label = path, overwrite, str(path)
        if path.exists() and not path.is_dir():
            raise UserError(f"output {path} exists and is not a folder")

    def lock(self) -> Any:
        return out_lock(self.path)

    def make_ready(self) -> bool:
        finished = recover(self.path)
        _remove_stale_staging(self.path)
        return finished

    def entries(self) -> list[str]:
        if not self.path.is_dir():
            return []
        return sorted(e.name for e in self.path.iterdir() if not e.name.startswith(STAGING_PREFIX) and e.name not in (LOCK_FILE, JOURNAL, JOURNAL + ".tmp"))

    def read_json(self, name: str) -> dict[str, Any] | None:
        try:
            data = json.loads((self.path / name).read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def damage(self, manifest: dict[str, Any]) -> str | None:
        return verify_build(self.path, manifest)

    def stage(self) -> Staged:
        staging = self.path / f"{STAGING_PREFIX}{os.getpid()}"
        try:
            for sub in STAGING_FOLDERS:
                (staging / sub).mkdir(parents=True)
        except OSError as e:
            raise UserError(f"cannot write to {self.path}: {e.strerror or e}") from None
        return Staged(staging)

    def commit(self, staged: Staged) -> None:
        commit(staged.local, self.path, self.overwrite)

    def discard(self, staged: Staged) -> None:
        if not (self.path / JOURNAL).is_file():  # a commit under way is finished by the next build, not undone
            _discard(staged.local)


def verify_build(out: Path, manifest: dict[str, Any]) -> str | None:
    """What is wrong with a committed build, checked cheaply (every listed file there, with its size)."""
    for rel, meta in sorted(manifest.get("files", {}).items()):
        path = out / rel
        if not path.is_file():
            return f"{rel} is listed in {MANIFEST} but missing"
        if path.stat().st_size != meta.get("bytes"):
            return f"{rel} has {path.stat().st_size} bytes, {MANIFEST} says {meta.get('bytes')}"
    return None


@contextmanager
def out_lock(out: Path) -> Iterator[None]:
    """One build at a time per OUT: an flock on OUT/.emer-lock (released by the kernel when the
    holder dies, so a killed build never leaves a stale lock). A second build fails at once."""
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd = os.open(out / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise UserError(f"cannot write to {out}: {e.strerror or e}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 400, 0).decode("utf-8", "replace").strip() or "another process"
            raise UserError(f"output {out} is in use by another build ({holder}); wait for it or choose another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode(), 0)
        yield
        os.ftruncate(fd, 0)  # the holder's line goes with the lock
    finally:
        os.close(fd)
        if created and [e.name for e in out.iterdir()] == [LOCK_FILE]:  # a build that failed early leaves no OUT behind
            (out / LOCK_FILE).unlink()
            out.rmdir()


def _remove_stale_staging(out: Path) -> None:
    """Staging folders of earlier builds (we hold the lock, so their process is gone) hold partial output only."""
    if not out.is_dir():
        return
    for entry in out.glob(f"{STAGING_PREFIX}*"):
        shutil.rmtree(entry, ignore_errors=True)  # called after `recover`, so no journal names one
    (out / (JOURNAL + ".tmp")).unlink(missing_ok=True)  # a build killed before its journal was in place: nothing committed


def _discard(staging: Path) -> None:
    """Remove a staging folder that runner threads may still be writing into after an interrupt."""
    for _ in range(50):
        shutil.rmtree(staging, ignore_errors=True)
        if not staging.exists():
            return
        time.sleep(0.1)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def commit(staging: Path, out: Path, overwrite: bool) -> None:
    """Move a finished staging folder into OUT so that a kill at any instant leaves the old build or
    the new one: a journal naming the staging folder and its outputs is written first (atomically),
    the old manifest goes first, the new manifest last; the next build finishes an interrupted commit
    (`recover`)."""
    journal = {"staging": staging.name, "outputs": [n for n in BUILD_OUTPUTS if (staging / n).exists()], "overwrite": overwrite}
    tmp = out / (JOURNAL + ".tmp")
    tmp.write_text(json.dumps(journal) + "\n")
    os.replace(tmp, out / JOURNAL)
    _finish_commit(out, journal)


def _finish_commit(out: Path, journal: dict[str, Any]) -> None:
    staging = out / journal["staging"]
    if not (staging / MANIFEST).exists():  # the new manifest is in place: only the clean-up was left
        (out / JOURNAL).unlink()
        shutil.rmtree(staging, ignore_errors=True)
        return
    _remove(out / MANIFEST)  # from here on OUT holds no valid old build
    for entry in out.iterdir():
        name = entry.name
        if name in (staging.name, LOCK_FILE, JOURNAL) or name.startswith(STAGING_PREFIX):
            continue
        if name in BUILD_OUTPUTS:
            if name not in journal["outputs"] or (staging / name).exists():  # an old output (a new one not yet moved replaces it)
                _remove(entry)
        elif journal["overwrite"]:
            _remove(entry)
    for name in journal["outputs"]:  # in BUILD_OUTPUTS order: manifest last
        if (staging / name).exists():
            (staging / name).rename(out / name)
    (out / JOURNAL).unlink()
    shutil.rmtree(staging, ignore_errors=True)


def recover(out: Path) -> bool:
    """Finish a commit that a killed build began (its staging folder was complete: the journal is
    written only after the manifest). True when one was finished."""
    path = out / JOURNAL
    if not path.is_file():
        return False
    try:
        journal = json.loads(path.read_text())
    except ValueError:  # killed while writing the journal's temporary file cannot leave this; be safe
        path.unlink()
        return False
    staging = journal.get("staging") if isinstance(journal, dict) else None
    outputs = journal.get("outputs") if isinstance(journal, dict) else None
    # only a journal `commit` could have written: a staging folder directly in OUT, outputs of a build
    if not (isinstance(staging, str) and staging.startswith(STAGING_PREFIX) and "/" not in staging and staging not in (".", "..")
            and isinstance(outputs, list) and set(outputs) <= set(BUILD_OUTPUTS)):
        path.unlink()
        return False
    _finish_commit(out, {"staging": staging, "outputs": outputs, "overwrite": bool(journal.get("overwrite"))})
    return True
