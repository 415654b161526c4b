"""`emer publish`: one finished build -> one immutable, numbered version on a release store (a Hugging Face Hub
repo, a directory or an fsspec URL such as s3://bucket/path; see store.py for how each makes a version appear
all at once).

Why the checks come first: a version is computed completely before anything is written (every build file
against its sha256, the version against the published ones and the bump the schema change requires, the
card and releases.json rendered), so a refused publish changes nothing on the target.

Every release carries releases.json (newest first) and a README.md card regenerated from the build's
manifest with the changelog; the schema comparison against the previous version decides the smallest
allowed version bump.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from emer_builder.core.errors import UserError
from emer_builder.core.failures import FAILURES_FILE
from emer_builder.core.hashing import sha256_file
from emer_builder.release.card import build_schema, media_card, release_card
from emer_builder.release.manifest import MANIFEST
from emer_builder.release.store import NoReleases, ReleaseFile, Store, generated, is_hub_repo, open_store
from emer_builder.release.versions import RELEASES, Version, format_version, parse_version, read_index, render_index, version_tag
from emer_builder.transforms.split import split_order

__all__ = ["PublishResult", "ReleaseFile", "check_bump", "is_hub_repo", "parse_version", "publish", "read_build", "required_bump", "schema_changes"]

CARD = "README.md"
MEDIA_CARD = "media/README.md"
GENERATED = (MANIFEST, CARD, RELEASES, MEDIA_CARD, FAILURES_FILE)  # files every release writes
EXAMPLES_KEPT = 10  # added / removed keys listed per split in a changelog entry
MANIFEST_KEYS = ("files", "splits", "shards", "keys", "fields", "schema_version", "config", "config_hash", "tool", "counts", "models", "packages")

History = Callable[[Version], tuple[dict[str, Any], list[dict[str, Any]]]]  # a version -> (its manifest, its releases.json)


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
    Re-running an interrupted publish with the same arguments finishes it without sending a file twice.
    """
    wanted = parse_version(version)
    store = open_store(repo, endpoint=endpoint, token=token, private=private, publishing=True)
    build = read_build(out)
    store.prepare(create=not dry_run)
    try:
        published = store.versions()
    except NoReleases:
        published = {}  # a first release (or, in a dry run, a repo that does not exist yet)
    history = _history(store, published)
    release = plan_release(build, wanted, list(published), history, target=store.target, hub_endpoint=store.hub_endpoint, license=license)
    latest = max(published, default=None)
    owned = set(GENERATED) | (set(history(latest)[0].get("files", {})) if latest else set())  # what an earlier release put there
    tag = version_tag(wanted)
    refuse_token_in(release.files, token)
    existing = store.existing(tag, release.files, build.paths, owned)
    files = [replace(f, present=f.path in existing.present) for f in release.files]
    entry = release.entry
    result = PublishResult(
        version=entry["version"],
        previous=entry["previous"],
        required_bump=entry["required_bump"],
        files=files,
        deleted=list(existing.deleted),
        entry=entry,
        card=release.card,
        dry_run=dry_run,
        location=store.location(tag),
        commit=existing.commit,
        resumed=existing.resumed,
    )
    if dry_run:
        return result
    commit = existing.commit or store.upload(tag, files, existing, f"Release {tag}", describe_changes(entry))
    store.tag(tag, commit, release)
    result.commit = commit
    return result


def refuse_token_in(files: list[ReleaseFile], token: str | None) -> None:
    """The texts a release holds (manifest, card, releases.json, the report) must not hold the Hugging Face token
    (given, HF_TOKEN or the saved login), whatever the target: a folder or bucket is read by others too."""
    if token is None:
        from huggingface_hub import get_token

        token = get_token()
    if not token:
        return
    for f in files:
        if f.path.endswith((".json", ".md", ".html")) and token.encode() in f.data():
            raise UserError(f"{f.path} holds your Hugging Face token; remove it from the build (nothing was published)")


def _history(store: Store, published: dict[Version, str]) -> History:
    """A published version -> (its manifest, its releases.json), each read once."""
    seen: dict[Version, tuple[dict[str, Any], list[dict[str, Any]]]] = {}

    def history(version: Version) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        if version not in seen:
            revision, where = published[version], store.location(version_tag(version))
            try:
                manifest = json.loads(store.read(revision, MANIFEST))
            except (ValueError, UnicodeDecodeError, RecursionError):
                raise UserError(f"{MANIFEST} of {where} is not valid JSON: that release is damaged; publish to another target") from None
            seen[version] = manifest, read_index(store.read(revision, RELEASES), f"{RELEASES} of {where}")
        return seen[version]

    return history


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
    for local in _report_files(root):  # derived from the build, so not in its manifest; releases carry it
        files.append(ReleaseFile(local.relative_to(root).as_posix(), local.stat().st_size, sha256_file(str(local)), local))
    return Build(root, manifest, files)


def _report_files(root: Path) -> list[Path]:
    """report.html and its folder, when neither is a link (a link would publish a file from outside the build)."""
    html, folder = root / "report.html", root / "report"
    report = [html] if html.is_file() and not html.is_symlink() else []
    if report and folder.is_dir() and not folder.is_symlink():
        report += sorted(p for p in (root / "report").rglob("*") if p.is_file() and not p.is_symlink())
    return report


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
    index = render_index(releases)
    media = media_card(build.manifest, schema, build.manifest["config"]["faces"]["max_crops"]).encode()
    files = [*build.files, generated(MEDIA_CARD, media), generated(RELEASES, index), generated(CARD, card.encode())]
    return Release(entry, files, card, index)
