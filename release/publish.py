"""`emer publish`: one finished build -> one immutable, numbered version on the Hugging Face Hub or in a directory.

Why this shape: on the Hub a version is ONE commit (every file or none; `parent_commit` makes a racing
publisher fail instead of interleaving) and then a tag created only once the commit exists; tags are never
moved, so `v1.2.0` means the same bytes forever and an interrupted publish leaves no tag. A directory or
fsspec URL (air-gapped sites) gets the same guarantees from a staging folder moved into place and
releases.json written last: a version counts as published only once releases.json lists it.

Every release carries releases.json (newest first) and a README.md card regenerated from the build's
manifest with the changelog; the schema comparison against the previous version decides the smallest
allowed version bump.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from emer_builder.core.errors import UserError, one_line
from emer_builder.core.hashing import sha256_file
from emer_builder.release.card import build_schema, media_card, release_card
from emer_builder.release.manifest import MANIFEST
from emer_builder.transforms.split import split_order

RELEASES = "releases.json"
CARD = "README.md"
MEDIA_CARD = "media/README.md"
REPO_TYPE = "dataset"
SEMVER = re.compile(r"v?(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)")
VERSION_TAG = re.compile(r"v(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)")  # the tags that count as versions
HUB_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")
GENERATED = ("manifest.json", "README.md", "releases.json", "media/README.md", "failures.parquet")  # files every release writes
EXAMPLES_KEPT = 10  # added / removed keys listed per split in a changelog entry
MANIFEST_KEYS = ("files", "splits", "shards", "keys", "fields", "schema_version", "config", "config_hash", "tool", "counts", "models", "packages")

Version = tuple[int, int, int]
History = Callable[[Version], tuple[dict[str, Any], list[dict[str, Any]]]]  # a version -> (its manifest, its releases.json)


@dataclass(frozen=True)
class ReleaseFile:
    """One file of a release: a verified build file (a local path) or generated content (card, releases.json)."""

    path: str  # inside the release
    size: int
    sha256: str
    source: Path | bytes
    present: bool = False  # the target already holds this exact content: nothing to send


@dataclass
class PublishResult:
    """What `publish` did (or, in a dry run, would do); `text()` is what `emer publish` prints."""

    version: str
    previous: str | None
    required_bump: str | None  # None: the first release
    files: list[ReleaseFile]
    deleted: list[str]  # files of the previous release that this one no longer has
    entry: dict[str, Any]  # this release's changelog entry (the head of releases.json)
    card: str
    dry_run: bool
    location: str  # where this version can be read: "ORG/NAME@v1.2.0" or the version folder
    commit: str | None = None  # Hub only
    resumed: bool = False  # an interrupted publish of this version was found and finished

    def text(self) -> str:
        new = [f for f in self.files if not f.present]
        bump = f"previous v{self.previous}, required bump: {self.required_bump}" if self.previous else "first release"
        lines = [
            f"{'dry run, nothing written: would publish' if self.dry_run else 'published'} v{self.version} to {self.location} ({bump})",
            f"changes: {describe_changes(self.entry)}",
        ]
        if self.dry_run:
            lines += [f"  {f.size:>14,} B  {'already there' if f.present else 'upload':<13}  {f.path}" for f in self.files]
            lines += [f"  {'':>16}  {'delete':<13}  {path}" for path in self.deleted]
        lines.append(
            f"{len(self.files)} files, {_sum(self.files):,} bytes: {len(new)} new or changed ({_sum(new):,} bytes), "
            f"{len(self.files) - len(new)} already there; {len(self.deleted)} deleted"
        )
        if self.resumed:
            lines.append(f"an interrupted publish of v{self.version} was found: {'it would be finished' if self.dry_run else 'finished it'}")
        if self.commit:
            lines.append(f"{'would tag' if self.dry_run else 'tagged'} v{self.version} at commit {self.commit}")
        if self.dry_run:
            lines += ["", f"--- {CARD} ---", self.card]
        return "\n".join(lines)


def publish(
    out: str | Path,
    repo: str,
    version: str,
    private: bool = False,
    dry_run: bool = False,
    endpoint: str | None = None,
    token: str | None = None,
    license: str = "other",
) -> PublishResult:
    """Publish the build in `out` as `version` of `repo`: a Hub dataset repo `ORG/NAME`, or a directory / fsspec URL.

    `token=None` lets huggingface_hub find HF_TOKEN or the saved login itself; the token is never printed.
    """
    wanted = parse_version(version)
    to_hub = is_hub_repo(repo)
    if not to_hub and (private or endpoint):
        raise UserError(f"--private and --endpoint apply to Hub repos (ORG/NAME); {repo} is a directory or URL")
    build = read_build(out)
    if to_hub:
        return _publish_hub(build, repo, wanted, private=private, dry_run=dry_run, endpoint=endpoint, token=token, license=license)
    return _publish_fs(build, repo, wanted, dry_run=dry_run, license=license)


def parse_version(text: str) -> Version:
    match = SEMVER.fullmatch(text.strip())
    if not match:
        raise UserError(f"version {text!r} is not semantic: use MAJOR.MINOR.PATCH, e.g. 1.2.0")
    return int(match[1]), int(match[2]), int(match[3])


def format_version(version: Version) -> str:
    return ".".join(map(str, version))


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


# -- the build ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Build:
    root: Path
    manifest: dict[str, Any]
    files: list[ReleaseFile]  # every file the manifest lists, plus manifest.json

    @property
    def paths(self) -> set[str]:
        return {f.path for f in self.files}


def read_build(out: str | Path) -> Build:
    """The finished build in `out`, every file checked against its sha256 in the manifest: a corrupted build is never published."""
    root = Path(out).expanduser()
    path = root / MANIFEST
    if not path.is_file():
        raise UserError(f"{out} is not a finished build (no {MANIFEST}); run `emer build` first")
    try:
        manifest = json.loads(path.read_text())
    except ValueError as e:
        raise UserError(f"{path} is not valid JSON ({e}); rebuild") from None
    missing = [k for k in MANIFEST_KEYS if k not in manifest]
    if missing:
        raise UserError(f"{path} lacks {', '.join(missing)}: it was made by an older emer-builder; rebuild to publish")
    files = []
    for rel, meta in sorted(manifest["files"].items()):
        local = root / rel
        if not local.is_file():
            raise UserError(f"{rel} is listed in {MANIFEST} but missing from {out}: the build is incomplete")
        if local.stat().st_size != meta["bytes"] or sha256_file(str(local)) != meta["sha256"]:
            raise UserError(f"{rel} does not match its sha256 in {MANIFEST}: the build changed after it was made; rebuild it (nothing was published)")
        files.append(ReleaseFile(rel, meta["bytes"], meta["sha256"], local))
    files.append(ReleaseFile(MANIFEST, path.stat().st_size, sha256_file(str(path)), path))
    return Build(root, manifest, files)


def _generated(path: str, data: bytes) -> ReleaseFile:
    return ReleaseFile(path, len(data), hashlib.sha256(data).hexdigest(), data)


def _sum(files: list[ReleaseFile]) -> int:
    return sum(f.size for f in files)


# -- versions and the changelog ----------------------------------------------------------------------------------------


def previous_version(wanted: Version, published: list[Version]) -> Version | None:
    """The highest published version, which `wanted` must exceed; an existing version is never replaced."""
    if wanted in published:
        raise UserError(f"v{format_version(wanted)} already exists; tags are never moved: publish a new version")
    previous = max(published, default=None)
    if previous is not None and wanted < previous:
        raise UserError(f"v{format_version(wanted)} is lower than the latest version v{format_version(previous)}: versions must increase")
    return previous


def schema_changes(old: dict[str, str], new: dict[str, str]) -> dict[str, list[Any]]:
    """Fields (dotted paths) added, removed and changed in type between two manifests' `fields`."""
    return {
        "added": sorted(set(new) - set(old)),
        "removed": sorted(set(old) - set(new)),
        "changed": [{"field": p, "from": old[p], "to": new[p]} for p in sorted(set(old) & set(new)) if old[p] != new[p]],
    }


def required_bump(changes: dict[str, list[Any]]) -> str:
    """A change to existing fields breaks readers (major); added fields do not (minor); anything else is a patch."""
    if changes["removed"] or changes["changed"]:
        return "major"
    return "minor" if changes["added"] else "patch"


def check_bump(previous: Version, wanted: Version, bump: str) -> None:
    """Refuse a version whose bump over `previous` is smaller than `bump`, naming the bump and a version that would do."""
    enough = {"major": wanted[0] > previous[0], "minor": wanted[:2] > previous[:2], "patch": wanted > previous}[bump]
    if not enough:
        smallest = {"major": (previous[0] + 1, 0, 0), "minor": (previous[0], previous[1] + 1, 0)}[bump]
        raise UserError(
            f"the schema changed against v{format_version(previous)} (fields removed or changed need a major bump, added fields a minor one): "
            f"a {bump} bump is required, e.g. v{format_version(smallest)}, not v{format_version(wanted)}"
        )


def changelog_entry(manifest: dict[str, Any], wanted: Version, previous: Version | None, previous_manifest: dict[str, Any] | None) -> dict[str, Any]:
    """This release's releases.json entry: counts per split, keys added / removed and schema changes against `previous`."""
    old_keys = previous_manifest["keys"] if previous_manifest else {}
    new_keys = manifest["keys"]
    added, removed = {}, {}
    for split in sorted(set(old_keys) | set(new_keys), key=split_order):
        old, new = set(old_keys.get(split, [])), set(new_keys.get(split, []))
        for changed, keys in ((added, new - old), (removed, old - new)):
            if keys:
                changed[split] = {"count": len(keys), "examples": sorted(keys)[:EXAMPLES_KEPT]}
    changes = schema_changes(previous_manifest["fields"], manifest["fields"]) if previous_manifest else {"added": [], "removed": [], "changed": []}
    return {
        "version": format_version(wanted),
        "date": datetime.now(timezone.utc).date().isoformat(),
        "previous": format_version(previous) if previous else None,
        "required_bump": required_bump(changes) if previous else None,
        "counts": {split: manifest["splits"][split] for split in sorted(manifest["splits"], key=split_order)},
        "added": added,
        "removed": removed,
        "schema_changes": changes,
        "schema_version": manifest["schema_version"],
        "tool": manifest["tool"],
        "config_hash": manifest["config_hash"],
    }


def describe_changes(entry: dict[str, Any]) -> str:
    """One line: keys added / removed per split and the schema change count."""
    if entry["previous"] is None:
        return "first release: " + ", ".join(f"{split} {n}" for split, n in entry["counts"].items())
    said = [f"{split} {sign}{c['count']} ({', '.join(c['examples'])})" for word, sign in (("added", "+"), ("removed", "-")) for split, c in entry[word].items()]
    changes = entry["schema_changes"]
    fields = ", ".join(f"{len(changes[word])} {word}" for word in ("added", "removed", "changed") if changes[word])
    return f"{'; '.join(said) or 'same keys'}; schema: {fields + ' fields' if fields else 'no change'}"


@dataclass(frozen=True)
class Release:
    """Everything a version publishes, computed before anything is written."""

    entry: dict[str, Any]
    files: list[ReleaseFile]  # the build's files, then media/README.md, releases.json and README.md
    card: str
    index: bytes  # releases.json: this entry, then the previous version's list


def plan_release(build: Build, wanted: Version, published: list[Version], history: History, *, target: str, hub_endpoint: str | None, license: str) -> Release:
    """Check `wanted` against the published versions (and the required bump), then render releases.json and the card."""
    previous = previous_version(wanted, published)
    previous_manifest, previous_releases = history(previous) if previous else (None, [])
    entry = changelog_entry(build.manifest, wanted, previous, previous_manifest)
    if previous and entry["required_bump"] != "patch":
        check_bump(previous, wanted, entry["required_bump"])
    releases = [entry, *previous_releases]
    schema = build_schema(build.root, build.manifest)
    card = release_card(build.manifest, releases, schema, target=target, hub_endpoint=hub_endpoint, license=license)
    index = (json.dumps(releases, indent=2, ensure_ascii=False) + "\n").encode()
    media = media_card(build.manifest, schema, build.manifest["config"]["faces"]["max_crops"]).encode()
    files = [*build.files, _generated(MEDIA_CARD, media), _generated(RELEASES, index), _generated(CARD, card.encode())]
    return Release(entry, files, card, index)


def _refuse_token_in(files: list[ReleaseFile], token: str | None) -> None:
    """The texts we publish (manifest, card, releases.json) must not hold the Hub token, whatever put it there."""
    if not token:
        return
    for f in files:
        if f.path.endswith((".json", ".md")) and token.encode() in (f.source if isinstance(f.source, bytes) else f.source.read_bytes()):
            raise UserError(f"{f.path} holds your Hugging Face token; remove it from the build (nothing was published)")


# -- the Hugging Face Hub ------------------------------------------------------------------------------------------------


def _publish_hub(
    build: Build, repo: str, wanted: Version, *, private: bool, dry_run: bool, endpoint: str | None, token: str | None, license: str
) -> PublishResult:
    from huggingface_hub import CommitOperationDelete, HfApi, RepoFile, get_token
    from huggingface_hub.errors import RepositoryNotFoundError

    api = HfApi(endpoint=endpoint, token=token)
    tag = f"v{format_version(wanted)}"
    with _hub_errors(repo, "create"):
        if not dry_run:
            api.create_repo(repo, repo_type=REPO_TYPE, private=private, exist_ok=True)
    with _hub_errors(repo, "read"):
        try:
            refs = api.list_repo_refs(repo, repo_type=REPO_TYPE)
        except RepositoryNotFoundError:
            if not dry_run:
                raise
            refs = None  # a dry run against a repo that does not exist yet
        head = next((b.target_commit for b in refs.branches if b.name == "main"), None) if refs else None
        published = [parse_version(t.name) for t in (refs.tags if refs else []) if VERSION_TAG.fullmatch(t.name)]

        def history(previous: Version) -> tuple[dict[str, Any], list[dict[str, Any]]]:
            return _hub_json(api, repo, MANIFEST, f"v{format_version(previous)}"), _hub_json(api, repo, RELEASES, f"v{format_version(previous)}")

        release = plan_release(build, wanted, published, history, target=repo, hub_endpoint=api.endpoint, license=license)
        _refuse_token_in(release.files, token or get_token())
        at_head = {f.path: f for f in api.list_repo_tree(repo, revision=head, recursive=True, repo_type=REPO_TYPE) if isinstance(f, RepoFile)} if head else {}
        files = [replace(f, present=_same_content(f, at_head.get(f.path))) for f in release.files]
        # Only files an earlier release owned leave the repo: a README note or paper added by hand stays.
        owned = set(GENERATED) | (set(_hub_json(api, repo, MANIFEST, f"v{format_version(max(published))}").get("files", {})) if published else set())
        deleted = sorted((set(at_head) & owned) - {f.path for f in files})
        # An earlier run of this same publish committed and then died before the tag: tag that commit, upload nothing.
        resumed = (
            bool(head)
            and all(f.present for f in files if f.path in build.paths)
            and api.list_repo_commits(repo, revision=head, repo_type=REPO_TYPE)[0].title == f"Release {tag}"
        )
    if resumed:
        files, deleted = [replace(f, present=True) for f in files], []
    result = _result(release, files=files, deleted=deleted, dry_run=dry_run, location=f"{repo}@{tag}", commit=head if resumed else None, resumed=resumed)
    if dry_run:
        return result
    if not resumed:
        additions = [_addition(f) for f in files if not f.present]
        with _hub_errors(repo, "upload to"):
            # free_memory=False: create_commit validates the card's YAML from its addition, which would be emptied
            api.preupload_lfs_files(repo, additions=additions, repo_type=REPO_TYPE, free_memory=False)
        try:
            commit = api.create_commit(
                repo,
                [*additions, *(CommitOperationDelete(path) for path in deleted)],
                commit_message=f"Release {tag}",
                commit_description=describe_changes(release.entry),
                parent_commit=head,
                repo_type=REPO_TYPE,
            )
        except _hub_error_types() as e:
            if _status(e) == 412:
                raise UserError(f"the repo {repo} changed while publishing (another publisher?); nothing was committed and no tag made: re-run") from None
            raise UserError(f"the release commit to {repo} failed ({_reason(e)}); no tag was made: re-run the same command") from None
        except ValueError as e:  # huggingface_hub refuses the card's metadata before committing (e.g. an unknown --license id)
            raise UserError(f"the Hub refused the dataset card: {one_line(e)}; nothing was committed") from None
        result.commit = commit.oid
    try:
        api.create_tag(repo, tag=tag, revision=result.commit, tag_message=f"Release {tag}", repo_type=REPO_TYPE)
    except _hub_error_types() as e:
        if _status(e) == 409:
            raise UserError(f"{tag} appeared on {repo} while publishing (another publisher?); tags are never moved: check the repo") from None
        raise UserError(f"the release commit {result.commit} is on {repo} but creating the tag {tag} failed ({_reason(e)}): re-run the same command") from None
    return result


def _addition(f: ReleaseFile) -> Any:
    """The commit operation of one file, with the sha256 we already computed: huggingface_hub would read
    the whole file again to hash it (a second pass over every shard of a large build)."""
    from huggingface_hub import CommitOperationAdd

    op = CommitOperationAdd(f.path, str(f.source) if isinstance(f.source, Path) else f.source)
    op.upload_info.sha256 = bytes.fromhex(f.sha256)
    return op


def _result(release: Release, **kwargs: Any) -> PublishResult:
    entry = release.entry
    return PublishResult(version=entry["version"], previous=entry["previous"], required_bump=entry["required_bump"], entry=entry, card=release.card, **kwargs)


def _same_content(f: ReleaseFile, remote: Any) -> bool:
    """Whether the repo file `remote` (a RepoFile at the head revision, or None) holds exactly `f`'s content."""
    from huggingface_hub.utils.sha import git_hash

    if remote is None or remote.size != f.size:
        return False
    if remote.lfs is not None:
        return remote.lfs.sha256 == f.sha256
    return remote.blob_id == git_hash(f.source if isinstance(f.source, bytes) else f.source.read_bytes())


def _hub_json(api: Any, repo: str, path: str, revision: str) -> Any:
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    try:
        return json.loads(Path(api.hf_hub_download(repo, path, repo_type=REPO_TYPE, revision=revision)).read_text())
    except LocalEntryNotFoundError as e:  # a subclass of EntryNotFoundError that means "could not reach the Hub"
        raise UserError(f"cannot read {path} of {repo} at {revision} ({one_line(e)}): re-run when the Hub is reachable") from None
    except EntryNotFoundError:
        raise UserError(f"{revision} of {repo} has no {path}: it was not published by `emer publish`; publish to another repo") from None
    except (ValueError, UnicodeDecodeError):
        raise UserError(f"{path} of {repo} at {revision} is not valid JSON: that release is damaged; publish to another repo") from None


def _hub_error_types() -> tuple[type[Exception], ...]:
    """HTTP errors of the Hub client: its HfHubHTTPError and the transport errors' base class (httpx's HTTPError)."""
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    return HfHubHTTPError, HfHubHTTPError.__mro__[1], OfflineModeIsEnabled


def _status(e: Exception) -> int | None:
    response = getattr(e, "response", None)
    return getattr(response, "status_code", None)


def _reason(e: Exception) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


@contextmanager
def _hub_errors(repo: str, verb: str) -> Iterator[None]:
    """Hub client errors as one-line UserErrors (a traceback helps no one who lacks a token or a network)."""
    from huggingface_hub.errors import OfflineModeIsEnabled

    try:
        yield
    except OfflineModeIsEnabled:
        raise UserError("HF_HUB_OFFLINE is set: unset it to publish to the Hub") from None
    except _hub_error_types() as e:
        if _status(e) in (401, 403):
            raise UserError(f"not allowed to {verb} {repo}: set HF_TOKEN or run `hf auth login` with a token that may write there") from None
        raise UserError(f"could not {verb} {repo}: {_reason(e)}") from None


# -- a directory or fsspec URL -------------------------------------------------------------------------------------------


def _publish_fs(build: Build, target: str, wanted: Version, *, dry_run: bool, license: str) -> PublishResult:
    """TARGET/vX.Y.Z/ (all files, card, releases.json), TARGET/README.md (latest card), TARGET/releases.json (written last)."""
    import fsspec
    from fsspec.implementations.local import LocalFileSystem

    fs, root = fsspec.core.url_to_fs(os.path.expanduser(target))
    root = root.rstrip("/")
    where = root if isinstance(fs, LocalFileSystem) else fs.unstrip_protocol(root)
    index = f"{root}/{RELEASES}"
    listed = json.loads(fs.cat_file(index)) if fs.exists(index) else []

    def history(previous: Version) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        return json.loads(fs.cat_file(f"{root}/v{format_version(previous)}/{MANIFEST}")), listed

    release = plan_release(build, wanted, [parse_version(e["version"]) for e in listed], history, target=where, hub_endpoint=None, license=license)
    tag = f"v{format_version(wanted)}"
    final, staging = f"{root}/{tag}", f"{root}/.incomplete-{tag}"
    # A staging folder, or a version folder that releases.json does not list, is an interrupted publish: finish it.
    partial = staging if fs.exists(staging) else final if fs.exists(final) else None
    # only the build's files are checked: the generated ones are always rewritten (their date may have changed)
    files = [replace(f, present=partial is not None and f.path in build.paths and _holds(fs, f"{partial}/{f.path}", f)) for f in release.files]
    result = _result(release, files=files, deleted=[], dry_run=dry_run, location=f"{where}/{tag}", commit=None, resumed=partial is not None)
    if dry_run:
        return result
    if fs.exists(final):
        if partial == staging:
            fs.rm(final, recursive=True)
        else:
            fs.mv(final, staging, recursive=True)
    fs.makedirs(staging, exist_ok=True)
    for f in files:
        if not f.present:
            _put(fs, f, f"{staging}/{f.path}")
    wanted_paths = {f"{staging}/{f.path}" for f in files}
    for stale in sorted(set(fs.find(staging)) - wanted_paths):
        fs.rm(stale)
    fs.mv(staging, final, recursive=True)
    fs.pipe_file(f"{root}/{CARD}", release.card.encode())
    fs.pipe_file(f"{index}.tmp", release.index)  # last, in one move: from now on the version is published
    fs.mv(f"{index}.tmp", index)
    return result


def _holds(fs: Any, path: str, f: ReleaseFile) -> bool:
    """Whether `path` exists with `f`'s size and sha256 (a copy that an interrupted run finished)."""
    if not fs.exists(path) or fs.size(path) != f.size:
        return False
    digest = hashlib.sha256()
    with fs.open(path, "rb") as src:
        while chunk := src.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest() == f.sha256


def _put(fs: Any, f: ReleaseFile, path: str) -> None:
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    if isinstance(f.source, bytes):
        fs.pipe_file(path, f.source)
    else:
        fs.put_file(str(f.source), path)
