"""Where releases live: one interface, two stores (a Hugging Face Hub repo; a directory or fsspec URL).

`publish` and `download` speak only this interface, so a version is computed, checked and verified the same
way wherever it goes. What differs is how a store makes a version appear all at once:

- the Hub (`hub_store.HubStore`): one commit with every file (`parent_commit` set, so a racing publisher fails),
  then the tag `vX.Y.Z`, created only once the commit exists;
- a directory or object store (`fs_store.FsspecStore`): the version's files under `TARGET/vX.Y.Z/` first,
  then `TARGET/releases.json` written last. Object stores cannot rename a folder, but writing one object is
  atomic, so the index is the commit: a folder it does not list is an unfinished publish that no reader sees
  and that the next run of the same publish finishes.

Every store error (Hub HTTP, transport, fsspec / OS, botocore) reaches the user as one line (`store_errors`).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from emer_builder.core.errors import UserError, one_line
from emer_builder.release.versions import Version

if TYPE_CHECKING:
    from emer_builder.release.publish import Release

HUB_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")


@dataclass(frozen=True)
class ReleaseFile:
    """One file of a release: a verified build file (a local path) or generated content (card, releases.json)."""

    path: str  # inside the release
    size: int
    sha256: str
    source: Path | bytes
    present: bool = False  # the target already holds this exact content: nothing to send

    def data(self) -> bytes:
        return self.source if isinstance(self.source, bytes) else self.source.read_bytes()


def generated(path: str, data: bytes) -> ReleaseFile:
    return ReleaseFile(path, len(data), hashlib.sha256(data).hexdigest(), data)


@dataclass(frozen=True)
class Existing:
    """What a target already holds of the version being published (an earlier, interrupted run's work)."""

    present: frozenset[str]  # release paths already there with this exact content: not sent again
    deleted: tuple[str, ...] = ()  # paths the upload removes: files an earlier release owned that this one lacks
    resumed: bool = False  # an interrupted publish of this version was found
    commit: str | None = None  # the release commit is already made (Hub): only the tag is missing


class NoReleases(UserError):
    """The target holds no release index yet (no Hub repo, no releases.json): a first publish starts here."""


class Store(Protocol):
    """A release target. A revision is what `versions` maps a version to (a Hub commit, a version folder)."""

    target: str  # as the user named it: messages and the card's loading code use it
    hub_endpoint: str | None  # the Hub endpoint for the card; None: a folder per version

    def location(self, tag: str) -> str:
        """Where version `tag` can be read, for messages: `ORG/NAME@v1.2.0`, or the version folder."""
        ...

    def versions(self) -> dict[Version, str]:
        """Published versions -> their revisions; NoReleases when the target has no index at all."""
        ...

    def read(self, revision: str, path: str) -> bytes:
        """One file of a published version."""
        ...

    def prepare(self, create: bool) -> None:
        """Make the target ready to receive a version (the Hub: create the repo); a dry run passes create=False."""
        ...

    def existing(self, tag: str, files: list[ReleaseFile], build_paths: set[str], owned: set[str]) -> Existing:
        """What the target already holds of version `tag` (`owned`: paths an earlier release published)."""
        ...

    def upload(self, tag: str, files: list[ReleaseFile], existing: Existing, message: str, description: str) -> str | None:
        """Send the files not yet present, all or nothing as far as readers can tell; returns the Hub commit."""
        ...

    def tag(self, tag: str, commit: str | None, release: Release) -> None:
        """Make the uploaded version visible: the Hub tag, or the target's card and releases.json (written last)."""
        ...

    def fetch(self, revision: str, files: dict[str, str], optional: list[str], to: Path) -> dict[str, str]:
        """Bring `files` (path -> expected sha256) and, where the release has them, `optional` into `to`.

        Returns the sha256 of the files it hashed on the way, so they are not read twice; a store that hashes
        while it copies leaves a copy that differs from its sha256 out of `to` (its hash says so)."""
        ...

    def refetch(self, revision: str, path: str, to: Path, want: str) -> None:
        """Fetch one file again, replacing the local copy (after a checksum mismatch); as in `fetch`, a copy
        whose sha256 is not `want` may be left out."""
        ...


def is_hub_repo(target: str) -> bool:
    """`ORG/NAME`: a Hub repo; `/x`, `./x`, `../x`, `~/x`, `s3://x`: a directory or fsspec URL. A bare
    `ORG/NAME` that is also a local folder is ambiguous: the user says which with `./ORG/NAME`."""
    if "://" in target or target.startswith(("/", "./", "../", "~")):
        return False
    if HUB_REPO_ID.fullmatch(target) and ".." not in target and "--" not in target:
        if Path(target).exists():
            raise UserError(f"{target!r} is both a Hub repo id and a local folder: write ./{target} for the folder")
        return True
    raise UserError(f"--repo {target!r}: give ORG/NAME for the Hugging Face Hub, or a directory (/path, ./path, ~/path) or an fsspec URL (s3://bucket/path)")


def open_store(
    target: str | os.PathLike[str],
    *,
    endpoint: str | None = None,
    token: str | bool | None = None,
    private: bool = False,
    publishing: bool = False,
) -> Store:
    """The store behind `target`: a Hub repo id, or a directory / fsspec URL (a path object always is one).

    `publishing` checks, before any work, what only a publish needs: Hub-only options on a folder target,
    and a directory / URL that can be written (a known scheme, a reachable endpoint, an existing bucket)."""
    text = str(target)
    if isinstance(target, os.PathLike) or not is_hub_repo(text):
        if publishing and (private or endpoint):
            raise UserError(f"--private and --endpoint apply to Hub repos (ORG/NAME); {text} is a directory or URL")
        from emer_builder.release.fs_store import FsspecStore

        return FsspecStore(text, publishing=publishing)
    from emer_builder.release.hub_store import HubStore

    return HubStore(text, endpoint=endpoint, token=token, private=private)


# -- errors ------------------------------------------------------------------------------------------------------------


def error_types() -> tuple[type[BaseException], ...]:
    """What the clients of a store raise when the store, the network or the credentials fail (not our bugs)."""
    found: list[type[BaseException]] = [OSError]
    try:
        import httpx2  # huggingface_hub's transport

        found.append(httpx2.HTTPError)
    except ImportError:
        pass
    try:
        from botocore.exceptions import BotoCoreError, ClientError  # s3fs: endpoint, credentials, service errors

        found += [BotoCoreError, ClientError]
    except ImportError:
        pass
    return tuple(found)


def status_of(e: BaseException) -> int | None:
    """The HTTP status of a Hub client error, None for others."""
    return getattr(getattr(e, "response", None), "status_code", None)


# A credential an HTTP client may echo in its error (a header it refused to send shows its value).
CREDENTIAL_TEXT = re.compile(r"(Bearer|Basic|token=|Authorization:)\s*[^\s'\",]+|\bhf_[A-Za-z0-9]{8,}", re.IGNORECASE)


def reason(e: BaseException) -> str:
    """An error's first line (a Hub error's later lines repeat the request id and the URL), any credential
    in it masked: the line is printed."""
    text = CREDENTIAL_TEXT.sub(lambda m: f"{m.group(1) or ''} ***".strip(), str(e).strip())
    return one_line(text.splitlines()[0]) if text else type(e).__name__


@contextmanager
def store_errors(target: str, verb: str, credentials: str) -> Iterator[None]:
    """Client errors as one-line UserErrors: a traceback helps no one who lacks a token, a bucket or a network.

    `verb` says what was being done ("read", "upload to"); `credentials` says how to give the missing ones."""
    try:
        yield
    except UserError:
        raise
    except error_types() as e:
        raise UserError(describe(e, target, verb, credentials)) from None


def describe(e: BaseException, target: str, verb: str, credentials: str) -> str:
    name = type(e).__name__
    if name == "OfflineModeIsEnabled":
        return f"HF_HUB_OFFLINE is set: unset it to {verb} {target}"
    if status_of(e) in (401, 403) or isinstance(e, PermissionError) or name in ("NoCredentialsError", "PartialCredentialsError"):
        return f"not allowed to {verb} {target} ({reason(e)}): {credentials}"
    if name in ("EndpointConnectionError", "ConnectTimeoutError", "ConnectError", "ConnectTimeout") or isinstance(e, ConnectionError):
        return f"cannot {verb} {target}: the endpoint is unreachable ({reason(e)}); check the endpoint (HF_ENDPOINT, AWS_ENDPOINT_URL) and the network, then re-run"
    return f"could not {verb} {target}: {reason(e)}"
