"""OUT behind one small interface, a local folder (local_out.py) or an object-store URL (object_out.py):
lock it, make it ready (finish or clear what an interrupted build left), check that it holds nothing
but this build's earlier self, answer a no-op rebuild, stage a new build and commit or discard it."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emer_builder.core.errors import UserError
from emer_builder.pipelines.summary import BuildSummary, summarise
from emer_builder.release.manifest import MANIFEST

STAGING_PREFIX = ".emer-staging-"  # OUT/.emer-staging-<...>: a build's workers write here until the commit
STAGING_FOLDERS = ("data", "media", ".media", ".progress", ".shards", ".inputs", ".parked")  # made before any worker starts (workers make none)


@dataclass
class Staged:
    """Where one build is written before its commit: `local` holds what the driver writes (and, for a
    local OUT, everything); `url` is where the workers write on an object store (None: `local`)."""

    local: Path
    url: str | None = None
    cleanup: Callable[[], None] = field(default=lambda: None, repr=False)

    @property
    def workers_write_to(self) -> str:
        return self.url or str(self.local)


class Out:
    """What a build needs of OUT; subclasses give the storage primitives, the checks are shared."""

    label: str  # how OUT is named to the user and in the cache's record of builds
    overwrite: bool

    def lock(self) -> AbstractContextManager[None]:
        raise NotImplementedError

    def make_ready(self) -> bool:
        """Finish or clear what an interrupted build left (we hold the lock, so it is gone); True when a
        commit it began was finished."""
        raise NotImplementedError

    def entries(self) -> list[str]:
        """Top-level names in OUT, without the lock, the commit journal and staging areas."""
        raise NotImplementedError

    def read_json(self, name: str) -> dict[str, Any] | None:
        """A JSON file of OUT; None when absent or unreadable."""
        raise NotImplementedError

    def damage(self, manifest: dict[str, Any]) -> str | None:
        """What is wrong with the build in OUT, checked cheaply (every listed file there, with its size)."""
        raise NotImplementedError

    def stage(self) -> Staged:
        raise NotImplementedError

    def commit(self, staged: Staged) -> None:
        """Replace the build in OUT by the staged one: old manifest first, new manifest last."""
        raise NotImplementedError

    def discard(self, staged: Staged) -> None:
        raise NotImplementedError

    def check(self, config_hash: str, videos_label: str) -> None:
        """Refuse (one line, unless --overwrite) an OUT that holds something other than an earlier build
        of the same inputs and config, or a damaged one."""
        if self.overwrite:
            return
        entries = self.entries()
        if not entries:
            return
        if MANIFEST not in entries:
            shown = ", ".join(entries[:3]) + (" ..." if len(entries) > 3 else "")
            raise UserError(f"output {self.label} is not empty and holds no emer build ({shown}); choose another --out or pass --overwrite")
        old = self.read_json(MANIFEST)
        if old is None:
            raise UserError(f"output {self.label} holds an unreadable manifest; pass --overwrite to replace it")
        if old.get("config_hash") != config_hash or old.get("videos_dir") != videos_label:
            raise UserError(f"output {self.label} holds a different build (other inputs or config); pass --overwrite to replace it")
        broken = self.damage(old)
        if broken:
            raise UserError(f"output {self.label} holds a damaged build ({broken}); pass --overwrite to replace it")

    def current(self, fingerprint: str) -> BuildSummary | None:
        """The summary of the build already in OUT when nothing it depends on changed (a no-op rebuild
        costs a listing, no Beam run); None when it must be (re)built."""
        if self.overwrite:
            return None
        log, manifest = self.read_json("build.json"), self.read_json(MANIFEST)
        if not log or not manifest or log.get("inputs_fingerprint") != fingerprint:
            return None
        summary = summarise(self.label, manifest["counts"]["inputs"], log.get("skipped_files", manifest.get("skipped_files", [])), 0.0, manifest, {}, {})
        summary.up_to_date = True
        return summary
