"""`emer download`, `load_split` and `iter_samples`: fetch a release made by `emer publish` and check it.

A release is a Hub dataset repo tagged `vX.Y.Z`, or `TARGET/vX.Y.Z/` on a directory / fsspec URL with
`TARGET/releases.json` listing the published versions. Only the files asked for are fetched (one config,
some splits), and every one of them is checked against the sha256 in the release's `manifest.json`
before anything reads it: a release is only as trustworthy as its manifest, so the manifest is
checked too (no absolute or `..` paths, nothing outside data/, media/ and failures.parquet).

Nothing here unpickles downloaded bytes: Parquet carries its own schema, tar members are read as
bytes and only `.json` members are parsed, and every member of a shard is validated (regular file,
`{key}.{suffix}` with a key of the manifest's split and a suffix the builder writes) before use.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from emer_builder.core.errors import UserError, one_line
from emer_builder.core.failures import FAILURES_FILE
from emer_builder.core.hashing import sha256_file
from emer_builder.core.paths import emer_home
from emer_builder.release.manifest import MANIFEST
from emer_builder.release.store import Store, open_store
from emer_builder.release.versions import RELEASES, SEMVER, format_version, parse_version
from emer_builder.transforms.shards import SAFE_SUFFIX
from emer_builder.transforms.split import SPLIT_NAME

if TYPE_CHECKING:
    import datasets

log = logging.getLogger(__name__)

CONFIGS = ("default", "media")
ROOT_FILES = (FAILURES_FILE,)  # the build's root outputs a manifest lists (README.md and manifest.json it never does)
PICKLED_SUFFIXES = frozenset({"pyd", "pickle", "pkl", "pth", "pt"})  # webdataset's default decoders would unpickle these
# readers decompress these and decode by the suffix inside (`x.pth.gz` reaches torch.load); the builder writes none
COMPRESSED_SUFFIXES = frozenset({"gz", "bz2", "xz", "zst", "lz4", "z"})
KEY = re.compile(r"[\w-]+")  # what transforms.keys.key_for makes: no dots, slashes or `..`
UNSAFE_PATH_CHARS = re.compile(r"[\\\x00-\x1f*?\[\]:]")  # separators of other systems, control and glob characters


@dataclass(frozen=True)
class DownloadResult:
    """What `download` fetched and checked: `text()` is the CLI's summary."""

    source: str
    version: str
    to: Path
    fetched: tuple[str, ...]  # manifest files written by this run
    present: tuple[str, ...]  # manifest files already there (an earlier, maybe interrupted, run)
    bytes_fetched: int
    verified: int  # files whose sha256 matched the manifest
    redownloaded: tuple[str, ...] = ()  # files fetched a second time after a checksum mismatch
    manifest: dict[str, Any] = field(default_factory=dict, repr=False)

    def text(self) -> str:
        lines = [
            f"{self.source} v{self.version} -> {self.to}",
            f"  {_files(len(self.fetched))} fetched ({_human(self.bytes_fetched)}), {len(self.present)} already present",
            f"  {_files(self.verified)} verified against {MANIFEST} (sha256)",
        ]
        if self.redownloaded:
            lines.append(f"  fetched again after a checksum mismatch: {', '.join(self.redownloaded)}")
        return "\n".join(lines)


def download(
    repo: str | os.PathLike[str],
    to: str | os.PathLike[str],
    version: str | None = None,
    splits: list[str] | str | None = None,
    config: str = "default",
    endpoint: str | None = None,
    token: str | bool | None = None,
) -> DownloadResult:
    """Fetch one config (and optionally some splits) of a release into `to` and verify every file's sha256.

    `repo` is a Hub id ORG/NAME, or a directory / fsspec URL (contains `://`, starts with `/`, `./`, `../`, `~` or exists).
    `version` defaults to the highest published. Re-running resumes: files already there are not fetched again.
    A file whose sha256 differs from the manifest is fetched once more; if it still differs it is deleted and a
    UserError names it. `to` holds one release: a folder with another release's manifest.json is refused.
    """
    store = open_store(repo, endpoint=endpoint, token=token)
    version, revision = _pick_version(str(repo), store, version)
    return _download(store, str(repo), version, revision, Path(to).expanduser().absolute(), [splits] if isinstance(splits, str) else splits, config)


def load_split(
    repo: str | os.PathLike[str],
    version: str | None = None,
    split: str = "train",
    config: str = "default",
    endpoint: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    token: str | bool | None = None,
) -> datasets.Dataset:
    """One split of a release, or of a local build folder, as a `datasets.Dataset` (default: the Parquet
    rows; media: the WebDataset samples).

    A release downloads (verified) into `cache_dir/<repo>/<version>/`, by default under `$EMER_HOME/releases/`.
    A folder holding a manifest.json (an `emer build` OUT, or a `download` folder) is read where it is, each
    file checked against the manifest's sha256 first; nothing is written into it. The media config gets the
    features of the media card, so `flac` and `mp4` stay bytes (no torch needed) and faces and frames are images.
    """
    import datasets

    local = Path(os.path.expanduser(repo))
    if (local / MANIFEST).is_file():
        root, manifest = local.absolute(), _parse_manifest((local / MANIFEST).read_bytes(), str(local))
        work = _local_cache(root, cache_dir)
        _check_local(root, manifest, _select(manifest, [split], config), work)
        cache = str(work / "datasets")
    else:
        root, manifest = _fetch_release(repo, version, split, config, endpoint, cache_dir, token)
        cache = str(root / ".cache" / "datasets")  # next to the release it was made from, deleted with it
    files = [str(root / p) for p in _select(manifest, [split], config)]
    if config == "default":
        return _loaded(root, split, lambda: datasets.load_dataset("parquet", data_files=files, split="train", cache_dir=cache))
    keys = set(manifest["keys"].get(split, []))
    for path in files:
        check_shard(path, keys)
    features = _media_features(root)
    return _loaded(root, split, lambda: datasets.load_dataset("webdataset", data_files=files, split="train", features=features, cache_dir=cache))


def _loaded(root: Path, split: str, load: Any) -> datasets.Dataset:
    """`load()`, with what its readers say of files that are not this release's tables as one line (the files
    match the manifest's sha256: the publisher's own files, not a damaged transfer)."""
    import pyarrow as pa
    from datasets.exceptions import DatasetGenerationError
    from datasets.table import CastError

    try:
        return load()
    except (pa.ArrowException, DatasetGenerationError, CastError) as e:
        raise UserError(f"{root}: split {split!r} cannot be read as a release of `emer build` output ({type(e).__name__}: {one_line(e)})") from None


def iter_samples(
    repo_or_dir: str | os.PathLike[str],
    version: str | None = None,
    split: str = "train",
    endpoint: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    token: str | bool | None = None,
) -> Iterator[dict[str, Any]]:
    """Samples of a split's WebDataset shards for training loops: {"__key__", "json" (dict), "flac" (bytes or None),
    "faces" (JPEG bytes in crop order), "mp4" (the record's video, bytes or None), "frames" (JPEG bytes in time order)}.

    `repo_or_dir` is a release (downloaded and verified like `load_split`'s) or a local folder holding a
    manifest.json (a build's OUT, or a `download --config media` folder), read as it is. Each shard's members are
    validated before its first sample is yielded; a bad one raises ValueError naming the shard and the member.
    """
    local = Path(os.path.expanduser(repo_or_dir))
    if (local / MANIFEST).is_file():
        root, manifest = local.absolute(), _parse_manifest((local / MANIFEST).read_bytes(), str(local))
        # each shard against the manifest's sha256, as load_split does (a download killed before its check
        # leaves its copies unchecked): recorded outside the folder, so later reads do not hash again
        _check_local(root, manifest, _select(manifest, [split], "media"), _local_cache(root, cache_dir))
    else:
        root, manifest = _fetch_release(repo_or_dir, version, split, "media", endpoint, cache_dir, token)
    shards = [root / p for p in _select(manifest, [split], "media")]
    return _samples(shards, set(manifest["keys"].get(split, [])))


def check_shard(path: str | os.PathLike[str], keys: set[str]) -> None:
    """Raise ValueError unless every member of the tar is a regular file named `{key}.{suffix}`, with `key` in
    `keys` (the manifest's keys of the shard's split) and a suffix the builder writes; a sample's members must be
    adjacent (else readers split it in two) and include its json. Reads the headers only."""
    names: set[str] = set()  # key.suffix, the suffix lower-cased as webdataset reads it
    finished: set[str] = set()  # samples whose members are all behind us
    current, has_json = None, False
    try:
        with tarfile.open(path, "r:") as tar:
            for member in tar:
                where = f"{path}: member {member.name!r}"
                if not member.isreg():
                    kind = "link" if member.issym() or member.islnk() else "directory" if member.isdir() else "device or special file"
                    raise ValueError(f"{where} is a {kind}, not a regular file")
                key, dot, suffix = member.name.partition(".")
                if not dot or not KEY.fullmatch(key):
                    raise ValueError(f"{where} is not named {{key}}.{{suffix}} with a safe key")
                if key not in keys:
                    raise ValueError(f"{where}: key {key!r} is not one of the manifest's keys for this split")
                parts = set(suffix.lower().split("."))
                if not SAFE_SUFFIX.fullmatch(suffix) or parts & (PICKLED_SUFFIXES | COMPRESSED_SUFFIXES):
                    raise ValueError(f"{where}: suffix {suffix!r} is not one the builder (or a plug-in stage) writes")
                if f"{key}.{suffix.lower()}" in names or key in finished:
                    raise ValueError(f"{where} repeats a member or splits sample {key!r}")
                if key != current:
                    if current is not None:
                        if not has_json:
                            raise ValueError(f"{path}: sample {current!r} has no json member")
                        finished.add(current)
                    current, has_json = key, False
                names.add(f"{key}.{suffix.lower()}")
                has_json = has_json or suffix == "json"
    except tarfile.TarError as e:
        raise ValueError(f"{path}: not a readable tar ({e})") from None
    if current is not None and not has_json:
        raise ValueError(f"{path}: sample {current!r} has no json member")


def _samples(shards: list[Path], keys: set[str]) -> Iterator[dict[str, Any]]:
    import webdataset as wds

    for shard in shards:
        check_shard(shard, keys)
        for sample in wds.WebDataset(str(shard), shardshuffle=False):  # raw bytes: no decoder runs
            faces = sorted(s for s in sample if s.startswith("face_"))
            frames = sorted(s for s in sample if s.startswith("frame_"))
            yield {
                "__key__": sample["__key__"],
                "json": json.loads(sample["json"]),
                "flac": sample.get("flac"),
                "faces": [sample[s] for s in faces],
                "mp4": sample.get("mp4"),
                "frames": [sample[s] for s in frames],
            }


def _download(store: Store, label: str, version: str, revision: str, to: Path, splits: list[str] | None, config: str) -> DownloadResult:
    raw = store.read(revision, MANIFEST)
    manifest = _parse_manifest(raw, f"{label} v{version}")
    selected = {p: manifest["files"][p]["sha256"] for p in _select(manifest, splits or None, config)}
    if to.exists() and not to.is_dir():
        raise UserError(f"{to} is a file, not a folder: download into a folder")
    to.mkdir(parents=True, exist_ok=True)
    if (to / MANIFEST).is_file() and (to / MANIFEST).read_bytes() != raw:
        raise UserError(f"{to} already holds another release (its {MANIFEST} differs from v{version}'s): download into an empty folder")
    _write_atomic(to / MANIFEST, raw)  # first: a later run into this folder knows which release it holds
    before = {p: _stamp(to / p) for p in selected}
    optional = ["README.md", RELEASES] + (["media/README.md"] if config == "media" else [])
    hashes = store.fetch(revision, selected, optional, to)
    fetched = sorted(p for p in selected if (to / p).is_file() and _stamp(to / p) != before[p])
    bad, missing = _verify(to, selected, hashes)
    redownloaded = []
    for path in bad:
        log.warning("%s: sha256 does not match the manifest; fetching it again", path)
        store.refetch(revision, path, to, selected[path])
        redownloaded.append(path)
    still_bad, left_out = _verify(to, {p: selected[p] for p in bad}, {})
    still_bad = sorted(still_bad + left_out)  # a store that hashes while it copies left the bad copy out
    for path in still_bad:
        (to / path).unlink(missing_ok=True)  # nothing may read it by mistake
    if still_bad or missing:
        problems = [f"{p}: sha256 differs from the release manifest even after fetching it again (the copy was deleted)" for p in still_bad]
        problems += [f"{p}: listed in the release manifest but not fetched (missing from the release, or the transfer failed)" for p in missing]
        raise UserError(f"v{version} of {label} failed verification: " + "; ".join(problems) + ". Re-run to retry; if it persists, the release is damaged")
    fetched = sorted(set(fetched) | set(redownloaded))
    return DownloadResult(
        source=label,
        version=version,
        to=to,
        fetched=tuple(fetched),
        present=tuple(sorted(set(selected) - set(fetched))),
        bytes_fetched=sum(manifest["files"][p]["bytes"] for p in fetched),
        verified=len(selected),
        redownloaded=tuple(redownloaded),
        manifest=manifest,
    )


def _fetch_release(
    repo: str | os.PathLike[str],
    version: str | None,
    split: str,
    config: str,
    endpoint: str | None,
    cache_dir: str | os.PathLike[str] | None,
    token: str | bool | None,
) -> tuple[Path, dict[str, Any]]:
    """Download one split of a release into the per-release cache folder; returns (folder, manifest)."""
    store = open_store(repo, endpoint=endpoint, token=token)
    version, revision = _pick_version(str(repo), store, version)
    slug = re.sub(r"[^A-Za-z0-9_-]+", "_", str(repo)).strip("_")[:80]
    ident = hashlib.sha256(f"{endpoint or ''}|{repo}".encode()).hexdigest()[:8]  # same name, other endpoint: another folder
    root = Path(cache_dir).expanduser().absolute() if cache_dir is not None else emer_home() / "releases"
    result = _download(store, str(repo), version, revision, root / f"{slug}-{ident}" / version, [split], config)
    return result.to, result.manifest


def _local_cache(root: Path, cache_dir: str | os.PathLike[str] | None) -> Path:
    """Where `load_split` keeps what it derives from a local build (the verification record, the `datasets`
    cache): outside the build, which stays as `emer build` wrote it."""
    base = Path(cache_dir).expanduser().absolute() if cache_dir is not None else emer_home() / "local-builds"
    return base / f"{re.sub(r'[^A-Za-z0-9_-]+', '_', root.name)[:40]}-{hashlib.sha256(str(root).encode()).hexdigest()[:12]}"


def _check_local(root: Path, manifest: dict[str, Any], paths: list[str], work: Path) -> None:
    """Every file of a local build that will be read, against its manifest (a shard rewritten or damaged
    since the build fails here with its name)."""
    files = {p: manifest["files"][p]["sha256"] for p in paths}
    bad, missing = _verify(root, files, {}, record_path=work / "emer-verified.json")
    if missing:
        raise UserError(f"{root} lacks files its {MANIFEST} lists: {', '.join(missing)}")
    if bad:
        raise UserError(f"{root}: {', '.join(bad)} differ from the sha256 in its {MANIFEST} (changed since the build); rebuild it")


def _pick_version(label: str, store: Store, version: str | None) -> tuple[str, str]:
    """(version, revision): the one asked for, or the highest published."""
    versions = store.versions()
    if not versions:
        raise UserError(f"{label} has no published releases (no vX.Y.Z)")
    ordered = sorted(versions, reverse=True)
    if version is None:
        return format_version(ordered[0]), versions[ordered[0]]
    wanted = parse_version(version) if SEMVER.fullmatch(version.strip()) else None
    if wanted not in versions:
        raise UserError(f"{label} has no release {version!r}; available: {', '.join(map(format_version, ordered))}")
    return format_version(wanted), versions[wanted]


def _parse_manifest(raw: bytes, label: str) -> dict[str, Any]:
    """The manifest, refused unless its paths, splits, keys and checksums are well formed: it decides what is written where."""
    try:
        manifest = json.loads(raw)
    except (ValueError, RecursionError) as e:  # RecursionError: nested deeper than the parser goes
        raise UserError(f"{MANIFEST} of {label} is not JSON: {one_line(e)}") from None
    if not isinstance(manifest, dict) or not all(isinstance(manifest.get(k), dict) for k in ("files", "splits", "keys")):
        raise UserError(f"{MANIFEST} of {label} lacks its files, splits or keys")
    for path, entry in manifest["files"].items():
        if not _safe_path(path):
            raise UserError(f"{MANIFEST} of {label} lists an unsafe path {path!r}: only data/..., media/... and {', '.join(ROOT_FILES)} are allowed")
        if not (isinstance(entry, dict) and re.fullmatch(r"[0-9a-f]{64}", str(entry.get("sha256"))) and isinstance(entry.get("bytes"), int)):
            raise UserError(f"{MANIFEST} of {label}: {path} has no valid sha256 and bytes")
    folders = {str(parent) for path in manifest["files"] for parent in PurePosixPath(path).parents}
    nested = sorted(set(manifest["files"]) & folders)
    if nested:
        raise UserError(f"{MANIFEST} of {label} lists {nested[0]!r} both as a file and as a folder of other files")
    for split, keys in manifest["keys"].items():
        if split not in manifest["splits"] or not isinstance(keys, list) or not all(isinstance(k, str) and KEY.fullmatch(k) for k in keys):
            raise UserError(f"{MANIFEST} of {label}: bad keys for split {split!r}")
    bad_splits = [s for s in manifest["splits"] if not SPLIT_NAME.fullmatch(s)]
    if bad_splits:
        raise UserError(f"{MANIFEST} of {label}: bad split names {bad_splits}")
    return manifest


def _safe_path(path: str) -> bool:
    """Relative POSIX path of plain segments, under data/ or media/, or a known root file: never escapes the folder."""
    if not isinstance(path, str) or UNSAFE_PATH_CHARS.search(path) or path.startswith("/"):
        return False
    parts = PurePosixPath(path).parts
    if any(p in (".", "..") for p in parts) or "/".join(parts) != path:  # also catches `a//b`, `./a` and `a/`
        return False
    return path in ROOT_FILES or (len(parts) >= 2 and parts[0] in ("data", "media"))


def _select(manifest: dict[str, Any], splits: list[str] | None, config: str) -> list[str]:
    """Manifest files of a config: default -> data/{split}-*.parquet (+ failures.parquet without a split filter),
    media -> media/{split}-*.tar."""
    if config not in CONFIGS:
        raise UserError(f"unknown config {config!r}; one of {', '.join(CONFIGS)}")
    known = list(manifest["splits"])
    unknown = [s for s in splits or [] if s not in known]
    if unknown:
        raise UserError(f"no split {', '.join(map(repr, unknown))} in this release; its splits: {', '.join(known)}")
    folder, ext = ("data", "parquet") if config == "default" else ("media", "tar")
    chosen = []
    for split in splits or known:
        paths = sorted(p for p in manifest["files"] if fnmatchcase(p, f"{folder}/{split}-*.{ext}"))
        if not paths:
            raise UserError(f"the release manifest lists no {folder}/{split}-*.{ext}")
        chosen += paths
    if config == "default" and splits is None:
        chosen += [p for p in ROOT_FILES if p in manifest["files"]]
    return chosen


def _verify(to: Path, files: dict[str, str], known: dict[str, str], record_path: Path | None = None) -> tuple[list[str], list[str]]:
    """(files whose sha256 differs, files that are missing); `known` holds hashes computed while copying.

    A file verified before and not rewritten since (same size and mtime, recorded in
    `.cache/emer-verified.json`) is not hashed again: `load_split` on a 100 GB split stays instant."""
    record_path = record_path or to / ".cache" / "emer-verified.json"
    try:
        record = json.loads(record_path.read_text())
    except (OSError, ValueError):
        record = {}
    bad, missing = [], []
    for path, want in sorted(files.items()):
        file = to / path
        if not file.is_file():
            # a copy left out for its sha256 (its hash known) is bad, not missing: it is fetched again
            (bad if known.get(path) not in (None, want) else missing).append(path)
            continue
        st = file.stat()
        stamp = [st.st_size, st.st_mtime_ns]
        seen = record.get(path)
        got = known.get(path) or (seen[2] if isinstance(seen, list) and seen[:2] == stamp else None) or sha256_file(str(file))
        if got != want:
            bad.append(path)
            record.pop(path, None)
        else:
            record[path] = [*stamp, got]
    record_path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(record_path, json.dumps(record, sort_keys=True).encode())
    return bad, missing


def _stamp(path: Path) -> tuple[int, int, int] | None:
    """Changes when a file is (re)written: how `download` tells fetched files from ones already there."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _media_features(root: Path) -> datasets.Features:
    """Features of the media config from media/README.md (as `emer build` wrote it): flac as bytes, faces as images."""
    import datasets
    import yaml

    card = root / "media" / "README.md"
    text = card.read_text(errors="replace") if card.is_file() else ""
    end = text.find("\n---", 3)
    not_ours = f"{root}/media/README.md has no readable dataset_info features: not a release of `emer build` output"
    try:
        front = yaml.safe_load(text[3:end]) if text.startswith("---") and end > 0 else None
        info = front.get("dataset_info") if isinstance(front, dict) else None
        features = info.get("features") if isinstance(info, dict) else None
        if not features:
            raise UserError(not_ours)
        return datasets.DatasetInfo._from_yaml_dict({"features": features}).features
    except (yaml.YAMLError, TypeError, ValueError, KeyError, AttributeError, RecursionError) as e:  # the card is not in the manifest: anyone's text
        raise UserError(f"{not_ours} ({type(e).__name__}: {one_line(e)})") from None


def _files(n: int) -> str:
    return f"{n} file" if n == 1 else f"{n} files"


def _human(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    size, unit = n / 1024, "KB"
    for bigger in ("MB", "GB"):
        if size < 1024:
            break
        size, unit = size / 1024, bigger
    return f"{size:.1f} {unit}"
