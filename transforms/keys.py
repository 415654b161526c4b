"""Match input videos and give each a stable key that is safe as a WebDataset key and a file name.

Nothing under the input folder may vanish: every entry ends as an input (then a record or a failure
row), a key collision (a failure row), a skipped non-video file, or a skipped folder with the reason.
File names are bytes on Linux; names that are not valid UTF-8 keep their real path for opening and
get a UTF-8 display form (`caf\\xe9.mp4`) for everything written (source_path, failure rows, reports).
A symlink whose target lies outside the input folder (`..`, `/`, a clip elsewhere) is not followed
unless the config says `follow_external_links: true`: a link must not pull the file system into a dataset.
"""

from __future__ import annotations

import hashlib
import os
import re
import unicodedata
from collections import defaultdict, deque
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from emer_builder.core.urls import file_system, is_url

VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mkv", ".mov", ".webm", ".flv", ".m4v", ".mpg", ".mpeg", ".wmv", ".3gp", ".ts"})

MAX_KEY_BYTES = 160  # keys become file names with a suffix (`KEY.flac`): stay well under 255 bytes
# Characters that reorder how text is shown (a name could display as `mp4.exe`): escaped in the display form.
_BIDI_CONTROLS = frozenset("\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


@dataclass(frozen=True)
class VideoInput:
    key: str
    path: str  # absolute, the real name for opening (may hold undecodable bytes as surrogates)
    source_path: str  # relative to the input folder, POSIX separators, display form (valid UTF-8)


@dataclass(frozen=True)
class KeyCollision:
    path: str
    source_path: str
    key: str
    others: tuple[str, ...]  # source paths of the other files with the same key


def display_path(rel: str | bytes) -> str:
    """A path as valid UTF-8 text, one-to-one: undecodable bytes as `\\xNN` (80-ff), control and
    direction characters as `\\xNN` (below 80) or `\\uNNNN`, a backslash as `\\\\`; everything else
    (any script, spaces) as it is.

    One-to-one matters: two files must never share a source_path, or the accounting of inputs breaks.
    """
    text = os.fsdecode(rel) if isinstance(rel, bytes) else rel
    out = []
    for ch in text:
        code = ord(ch)
        if ch == "\\":
            out.append("\\\\")
        elif 0xDC80 <= code <= 0xDCFF:  # an undecodable byte, as os.fsdecode (surrogateescape) holds it
            out.append(f"\\x{code - 0xDC00:02x}")
        elif unicodedata.category(ch) in ("Cc", "Cs", "Zl", "Zp") or ch in _BIDI_CONTROLS:
            out.append(f"\\x{code:02x}" if code < 0x80 else f"\\u{code:04x}")  # \x80-\xff: raw bytes only
        else:
            out.append(ch)
    return "".join(out)


def _key_part(part: str) -> str:
    part = unicodedata.normalize("NFC", part)
    cleaned = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in part)  # exactly regex `[\w-]`
    cleaned = cleaned.strip("_")
    if not any(ch.isalnum() for ch in cleaned):
        # Nothing readable (emoji, punctuation): a short hash keeps such names apart instead of all becoming `_`.
        cleaned = "h" + hashlib.sha256(part.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return cleaned


def key_for(source_path: str | bytes) -> str:
    """Key from a relative path (as the file system gives it, str or bytes): extension dropped, folders
    joined by `__`, other unsafe characters `_`; undecodable bytes count as their `xNN` display form.

    MER ids such as `sample_00000648` stay as they are. Keys never hold dots (WebDataset splits a
    member name at the first dot), slashes, `..` or anything a shell or a file system treats specially;
    a part with no letter or digit becomes `h` + 8 hex digits of its hash, and a key longer than
    MAX_KEY_BYTES is cut and ends in a hash of the whole path, so it stays unique and fits a file name.
    """
    raw = os.fsdecode(source_path) if isinstance(source_path, bytes) else source_path
    text = display_path(raw)  # what the hash of a long key covers: one-to-one with the name
    # undecodable bytes and control characters count as their `xNN` form; a backslash is just unsafe
    path = PurePosixPath("".join(ch if ch == "\\" else display_path(ch) for ch in raw))
    parts = [p for p in (*path.parent.parts, path.stem) if p not in ("", "/")] or ["_"]
    key = re.sub(r"_{3,}", "__", "__".join(_key_part(p) for p in parts))
    if len(key.encode()) > MAX_KEY_BYTES:
        digest = hashlib.sha256(text.encode()).hexdigest()[:12]
        cut = key.encode()[: MAX_KEY_BYTES - 13].decode("utf-8", "ignore").rstrip("_")
        key = f"{cut}_{digest}"
    return key


# The reason a link that leaves the input folder was not followed: the summary counts skipped entries holding it.
OUTSIDE_INPUT = "outside the input folder: not followed; set follow_external_links: true to include it"


@dataclass
class _Walk:
    """One pass over the input folder: files found (real absolute path, raw relative path) and what was skipped."""

    files: list[tuple[str, str]]
    skipped: list[str]


def resolves_outside(path: str | Path, folder: str) -> str | None:
    """Where `path` resolves to, when that lies outside `folder` (a resolved path); None when inside it."""
    target = os.path.realpath(path)
    return None if (target + os.sep).startswith(folder.rstrip(os.sep) + os.sep) else target


def walk_inputs(videos_dir: str | Path, follow_external_links: bool = False) -> _Walk:
    """Every entry under `videos_dir`, following symlinked folders once each (loops and repeats are
    listed as skipped with the reason). Hidden entries (`.git`, `.DS_Store`) are not inputs. A link to a
    folder or regular video file outside `videos_dir` is listed as skipped unless `follow_external_links`;
    links to devices, pipes or nothing stay inputs, so that decode names what they are."""
    root = os.path.abspath(os.fspath(videos_dir))
    inside = os.path.realpath(root)

    def leaves(path: str) -> str | None:
        """Where the link `path` resolves to, when that lies outside the input folder and must not be followed."""
        return None if follow_external_links else resolves_outside(path, inside)

    files: list[tuple[str, str]] = []
    skipped: list[str] = []
    seen: dict[tuple[int, int], str] = {}  # (device, inode) of each folder walked -> where it was included
    links: deque[tuple[str, str]] = deque()  # symlinked folders, followed after the real tree (real paths win)

    def walk(folder: str, prefix: str) -> None:
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: os.fsencode(e.name))
        except OSError as e:
            skipped.append(f"{display_path(prefix.rstrip('/')) or '.'}/ (folder not readable: {e.strerror or e})")
            return
        for entry in entries:
            if entry.name.startswith("."):
                continue  # hidden files and folders are not inputs
            rel = prefix + entry.name
            try:
                is_link, is_dir = entry.is_symlink(), entry.is_dir()
            except OSError:
                is_link, is_dir = False, False
            if is_link and (target := leaves(entry.path)) is not None and (is_dir or _is_video(entry.name) and os.path.isfile(target)):
                skipped.append(f"{display_path(rel)}{'/' if is_dir else ''} (symlink to {display_path(target)}, {OUTSIDE_INPUT})")
            elif is_dir and is_link:
                links.append((entry.path, rel))
            elif is_dir:
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError as e:
                    skipped.append(f"{display_path(rel)}/ (folder not readable: {e.strerror or e})")
                    continue
                where = seen.setdefault((st.st_dev, st.st_ino), rel)
                if where != rel:  # reached again through a symlinked folder followed earlier (or a bind mount)
                    skipped.append(f"{display_path(rel)}/ (same folder as {display_path(where)}/, already included: not walked again)")
                    continue
                walk(entry.path, rel + "/")
            elif _is_video(entry.name):
                files.append((entry.path, rel))  # special files and broken links too: decode names the problem
            elif is_link and not os.path.exists(entry.path):
                skipped.append(f"{display_path(rel)} (broken symlink)")
            else:
                skipped.append(display_path(rel))

    st = os.stat(root)
    seen[(st.st_dev, st.st_ino)] = "."
    walk(root, "")
    while links:
        path, rel = links.popleft()
        try:
            st = os.stat(path)
        except OSError as e:
            skipped.append(f"{display_path(rel)}/ (symlinked folder not readable: {e.strerror or e})")
            continue
        where = seen.get((st.st_dev, st.st_ino))
        if where is not None:
            what = "the input folder itself" if where == "." else f"{display_path(where)}/"
            skipped.append(f"{display_path(rel)}/ (symlink to {what}, already included: not followed)")
            continue
        seen[(st.st_dev, st.st_ino)] = rel
        walk(path, rel + "/")
    return _Walk(files, sorted(skipped))


def _is_video(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in VIDEO_EXTENSIONS


def list_stored_inputs(url: str) -> _Walk:
    """Every object under an object-store prefix (s3://bucket/videos): video files by extension, the
    rest listed as skipped; hidden names (`.keep`, `.emer-*`) are not inputs. Paths are full URLs."""
    fs, root = file_system(url)
    root = root.rstrip("/")
    files: list[tuple[str, str]] = []
    skipped: list[str] = []
    for path in sorted(fs.find(root)):
        rel = path[len(root) :].lstrip("/")
        if not rel or any(part.startswith(".") for part in rel.split("/")):
            continue
        if os.path.splitext(rel)[1].lower() in VIDEO_EXTENSIONS:
            files.append((fs.unstrip_protocol(path), rel))
        else:
            skipped.append(display_path(rel))
    return _Walk(files, sorted(skipped))


def match_videos(videos_dir: str | Path, follow_external_links: bool = False) -> tuple[list[VideoInput], list[KeyCollision], list[str]]:
    """All video files under `videos_dir` in key order, files whose keys collide, and skipped entries
    (non-video files by name; folders, broken links and links leaving `videos_dir` with the reason in parentheses)."""
    found = list_stored_inputs(str(videos_dir)) if is_url(videos_dir) else walk_inputs(videos_dir, follow_external_links)
    by_key: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for path, rel in found.files:
        by_key[key_for(rel)].append((path, display_path(rel)))
    inputs, collisions = [], []
    for key in sorted(by_key):
        files = sorted(by_key[key], key=lambda f: f[1])
        if len(files) == 1:
            inputs.append(VideoInput(key, *files[0]))
            continue
        for path, rel in files:
            others = tuple(r for _, r in files if r != rel)
            collisions.append(KeyCollision(path, rel, key, others))
    return inputs, collisions, found.skipped


__all__ = ["OUTSIDE_INPUT", "VIDEO_EXTENSIONS", "KeyCollision", "VideoInput", "display_path", "key_for", "list_stored_inputs", "match_videos", "resolves_outside", "walk_inputs"]
