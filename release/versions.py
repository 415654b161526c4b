"""Version numbers and the release index: one definition for `emer publish` and `emer download`.

A version is `MAJOR.MINOR.PATCH`; on a target it is named `vX.Y.Z` (a Hub tag, a folder). Every release
carries `releases.json`, the index: its changelog entries, newest first, one per published version. On a
directory or object store the index at the target's root is the commit point: a version is published
once that file lists it, whatever else the target holds.
"""

from __future__ import annotations

import json
import re
from typing import Any

from emer_builder.core.errors import UserError, one_line

RELEASES = "releases.json"
SEMVER = re.compile(r"v?(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)")  # what a user may type
VERSION_TAG = re.compile(r"v(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)")  # the tags / folders that count as versions

Version = tuple[int, int, int]


def parse_version(text: str) -> Version:
    """`1.2.0` or `v1.2.0` -> (1, 2, 0); anything else is a UserError that shows the expected form."""
    match = SEMVER.fullmatch(text.strip())
    if not match:
        raise UserError(f"version {text!r} is not semantic: use MAJOR.MINOR.PATCH, e.g. 1.2.0")
    return int(match[1]), int(match[2]), int(match[3])


def format_version(version: Version) -> str:
    return ".".join(map(str, version))


def version_tag(version: Version) -> str:
    """The name of a version on a target: the Hub tag and the folder `vX.Y.Z`."""
    return f"v{format_version(version)}"


def tag_version(name: str) -> Version | None:
    """The version a tag or folder name stands for, None for names that are not versions (`v1.01.0`, `latest`)."""
    return parse_version(name) if VERSION_TAG.fullmatch(name) else None


def read_index(raw: bytes, where: str) -> list[dict[str, Any]]:
    """releases.json as written by `emer publish`: a list of entries, each with a semantic `version`.

    A damaged index is refused rather than guessed at: publishing over it could reuse a version number."""
    try:
        entries = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:  # RecursionError: nested deeper than the parser goes
        raise UserError(f"{where} is not valid JSON ({one_line(e)}): the release index is damaged (each version keeps the index it was published with)") from None
    if not isinstance(entries, list) or not all(isinstance(e, dict) and isinstance(e.get("version"), str) and SEMVER.fullmatch(e["version"]) for e in entries):
        raise UserError(f"{where} is not a release index (a list of entries with a semantic `version`): it is damaged or was not written by `emer publish`")
    return entries


def index_versions(entries: list[dict[str, Any]]) -> list[Version]:
    return [parse_version(e["version"]) for e in entries]


def render_index(entries: list[dict[str, Any]]) -> bytes:
    return (json.dumps(entries, indent=2, ensure_ascii=False) + "\n").encode()
