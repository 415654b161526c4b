"""Releases in a Hugging Face Hub dataset repo: a version is one commit, then the tag `vX.Y.Z`.

Why this shape: one commit holds every file or none, and `parent_commit` makes a racing publisher fail
instead of interleaving; the tag is created only once the commit exists and is never moved, so `v1.2.0`
means the same bytes forever and an interrupted publish leaves no tag. Downloads pin a version's tag to its
commit, so every file comes from that one commit.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from emer_builder.core.errors import UserError, one_line
from emer_builder.release.store import Existing, NoReleases, ReleaseFile, error_types, reason, status_of, store_errors
from emer_builder.release.versions import Version, tag_version

if TYPE_CHECKING:
    from emer_builder.release.publish import Release

REPO_TYPE = "dataset"
CREDENTIALS = "set HF_TOKEN or run `hf auth login` with a token that may write there"


class HubStore:
    """A Hub dataset repo; versions are its `vX.Y.Z` tags, each mapped to its commit."""

    def __init__(self, repo: str, *, endpoint: str | None = None, token: str | bool | None = None, private: bool = False) -> None:
        from huggingface_hub import HfApi

        self.target, self.endpoint, self.token, self.private = repo, endpoint, token, private
        self.api = HfApi(endpoint=endpoint, token=token)
        self.hub_endpoint = self.api.endpoint
        self._refs: Any = None  # list_repo_refs, read once per publish or download
        self._missing = False  # the repo does not exist (or is private and we have no token)
        self._head: str | None = None  # main's commit when `existing` looked: the release commit's parent

    def location(self, tag: str) -> str:
        return f"{self.target}@{tag}"

    def versions(self) -> dict[Version, str]:
        refs = self._read_refs()
        if refs is None:
            raise NoReleases(f"dataset repo {self.target} not found (a private repo needs a token: `hf auth login` or HF_TOKEN)")
        return {v: t.target_commit for t in refs.tags if (v := tag_version(t.name)) is not None}

    def read(self, revision: str, path: str) -> bytes:
        from huggingface_hub import hf_hub_download

        with tempfile.TemporaryDirectory(prefix="emer-release-") as tmp:
            return Path(self._call(hf_hub_download, filename=path, revision=revision, local_dir=tmp)).read_bytes()

    def prepare(self, create: bool) -> None:
        if create:
            with store_errors(self.target, "create", CREDENTIALS):
                self.api.create_repo(self.target, repo_type=REPO_TYPE, private=self.private, exist_ok=True)
            self._refs, self._missing = None, False  # read again: the repo (and its initial commit) may be new

    def existing(self, tag: str, files: list[ReleaseFile], build_paths: set[str], owned: set[str]) -> Existing:
        """Files already at the head with the same content; files an earlier release owned that this one lacks
        (a README note or paper added by hand stays); and whether the head is this version's release commit,
        made by a run that died before the tag."""
        from huggingface_hub import RepoFile

        refs = self._read_refs()
        head = next((b.target_commit for b in refs.branches if b.name == "main"), None) if refs else None
        self._head = head
        if head is None:
            return Existing(frozenset())
        with store_errors(self.target, "read", CREDENTIALS):
            at_head = {f.path: f for f in self.api.list_repo_tree(self.target, revision=head, recursive=True, repo_type=REPO_TYPE) if isinstance(f, RepoFile)}
            present = frozenset(f.path for f in files if _same_content(f, at_head.get(f.path)))
            if build_paths <= present and self.api.list_repo_commits(self.target, revision=head, repo_type=REPO_TYPE)[0].title == f"Release {tag}":
                return Existing(frozenset(f.path for f in files), resumed=True, commit=head)
        deleted = tuple(sorted((set(at_head) & owned) - {f.path for f in files}))
        return Existing(present, deleted)

    def upload(self, tag: str, files: list[ReleaseFile], existing: Existing, message: str, description: str) -> str:
        """Large files pre-uploaded, then one commit (additions and deletions) on top of the head we read."""
        from huggingface_hub import CommitOperationDelete

        additions = [_addition(f) for f in files if not f.present]
        with store_errors(self.target, "upload to", CREDENTIALS):
            # free_memory=False: create_commit validates the card's YAML from its addition, which would be emptied
            self.api.preupload_lfs_files(self.target, additions=additions, repo_type=REPO_TYPE, free_memory=False)
        try:
            commit = self.api.create_commit(
                self.target,
                [*additions, *(CommitOperationDelete(path) for path in existing.deleted)],
                commit_message=message,
                commit_description=description,
                parent_commit=self._head,
                repo_type=REPO_TYPE,
            )
        except error_types() as e:
            if status_of(e) == 412:
                raise UserError(
                    f"the repo {self.target} changed while publishing (another publisher?); nothing was committed and no tag made: re-run"
                ) from None
            raise UserError(f"the release commit to {self.target} failed ({reason(e)}); no tag was made: re-run the same command") from None
        except ValueError as e:  # huggingface_hub refuses the card's metadata before committing (e.g. an unknown --license id)
            raise UserError(f"the Hub refused the dataset card: {one_line(e)}; nothing was committed") from None
        return commit.oid

    def tag(self, tag: str, commit: str | None, release: Release) -> None:
        try:
            self.api.create_tag(self.target, tag=tag, revision=commit, tag_message=f"Release {tag}", repo_type=REPO_TYPE)
        except error_types() as e:
            if status_of(e) == 409:
                raise UserError(f"{tag} appeared on {self.target} while publishing (another publisher?); tags are never moved: check the repo") from None
            raise UserError(
                f"the release commit {commit} is on {self.target} but creating the tag {tag} failed ({reason(e)}): re-run the same command"
            ) from None

    def fetch(self, revision: str, files: dict[str, str], optional: list[str], to: Path) -> dict[str, str]:
        from huggingface_hub import snapshot_download

        # Exact paths as patterns: a file the manifest does not list is never fetched. snapshot_download skips
        # files it fetched before (its metadata in TO/.cache/huggingface) and resumes broken transfers.
        self._call(snapshot_download, revision=revision, local_dir=to, allow_patterns=sorted(files) + optional)
        return {}

    def refetch(self, revision: str, path: str, to: Path, want: str) -> None:  # noqa: ARG002 (the verification follows)
        from huggingface_hub import hf_hub_download

        self._call(hf_hub_download, filename=path, revision=revision, local_dir=to, force_download=True)

    # -- helpers -------------------------------------------------------------------------------------------------------

    def _read_refs(self) -> Any:
        """The repo's branches and tags, None when the repo does not exist (or is hidden from us)."""
        from huggingface_hub.errors import RepositoryNotFoundError

        if self._refs is None and not self._missing:
            with store_errors(self.target, "read", CREDENTIALS):
                try:
                    self._refs = self.api.list_repo_refs(self.target, repo_type=REPO_TYPE)
                except RepositoryNotFoundError:
                    self._missing = True
        return self._refs

    def _call(self, fn: Any, **kwargs: Any) -> Any:
        """A huggingface_hub download function on this repo; its failures become a UserError that says what to do."""
        from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError, OfflineModeIsEnabled

        try:
            return fn(self.target, repo_type=REPO_TYPE, endpoint=self.endpoint, token=self.token, **kwargs)
        except LocalEntryNotFoundError as e:  # "could not reach the Hub", a subclass of the next one
            raise UserError(
                f"cannot read {kwargs.get('filename')} of {self.target} ({reason(e)}): run the same command again when the Hub is reachable"
            ) from None
        except EntryNotFoundError:
            raise UserError(f"commit {kwargs['revision']} of {self.target} has no {kwargs.get('filename')}: not a release made by `emer publish`") from None
        except OfflineModeIsEnabled:
            raise UserError(f"HF_HUB_OFFLINE is set: unset it to download from {self.target}") from None
        except (*error_types(), ValueError) as e:  # ValueError: huggingface_hub's "force download failed"
            raise UserError(f"download from {self.target} failed ({type(e).__name__}: {reason(e)}); run the same command again to resume") from None


def _addition(f: ReleaseFile) -> Any:
    """The commit operation of one file, with the sha256 we already computed: huggingface_hub would read
    the whole file again to hash it (a second pass over every shard of a large build)."""
    from huggingface_hub import CommitOperationAdd

    op = CommitOperationAdd(f.path, str(f.source) if isinstance(f.source, Path) else f.source)
    op.upload_info.sha256 = bytes.fromhex(f.sha256)
    return op


def _same_content(f: ReleaseFile, remote: Any) -> bool:
    """Whether the repo file `remote` (a RepoFile at the head revision, or None) holds exactly `f`'s content."""
    from huggingface_hub.utils.sha import git_hash

    if remote is None or remote.size != f.size:
        return False
    if remote.lfs is not None:
        return remote.lfs.sha256 == f.sha256
    return remote.blob_id == git_hash(f.data())
