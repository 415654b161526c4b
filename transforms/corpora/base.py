"""The corpus adapter: one class per corpus layout, registered by subclassing (built-in adapters) or through the
`emer_builder.corpora` entry point (adapters installed from another package).

A subclass declares what it reads and how it maps it (`name`, `description`, `files`, `columns`, `clips`,
`key_rule`, `label_mapping`, `split_rule`: shown by `emer build --help`, `describe` and the README) and
implements one method, `utterances()`, yielding one `Utterance` per corpus row. While it reads, it notes
what the build reports beside the records (`read_table`, `unmatched`, `use`, `skip`); `load()` then does the
steps every corpus shares: assemble the utterances into keyed segments with their context, add the rows
without a video, the tables read and the videos no table lists, and sort, so two loads give the same result.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import cached_property
from importlib import metadata
from pathlib import Path
from typing import Any, ClassVar

from emer_builder.core.errors import UserError, one_line
from emer_builder.transforms.corpora.common import file_entry, root_videos, unlisted
from emer_builder.transforms.keys import VideoInput
from emer_builder.transforms.segment import DEFAULT_OPTIONS, Segmentation, SegmentOptions, Utterance, assemble

ENTRY_POINT_GROUP = "emer_builder.corpora"
NAME = re.compile(r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*")
TEXT_PARTS: tuple[str, ...] = ("description", "clips", "key_rule", "label_mapping", "split_rule")
TUPLE_PARTS: tuple[str, ...] = ("files", "columns")

# name -> the adapter `--corpus NAME` selects (itself may pick another layout for a given ROOT: `for_root`)
REGISTRY: dict[str, type[CorpusAdapter]] = {}


class CorpusAdapter:
    """Reads one corpus layout under ROOT: a subclass declares the layout and yields its utterances.

    Subclassing registers the adapter under `name` (pass `register=False` for a second layout of a name that
    `for_root` selects, or for a class only tests use). Intermediate classes without their own `name` are
    not registered: they share code and declarations between adapters (the MMSA layout's five corpora)."""

    name: ClassVar[str]
    description: ClassVar[str]
    files: ClassVar[tuple[str, ...]]  # the tables it reads, as found under ROOT (names or glob patterns)
    columns: ClassVar[tuple[str, ...]]  # columns those tables must have
    clips: ClassVar[str]  # where the videos are
    key_rule: ClassVar[str]
    label_mapping: ClassVar[str]
    split_rule: ClassVar[str]

    def __init_subclass__(cls, register: bool = True, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" not in cls.__dict__:
            return  # a shared base of several adapters
        _check_declaration(cls)
        if register:
            known = REGISTRY.get(cls.name)
            if known is not None and _qualified(known) != _qualified(cls):  # the same class again (a reloaded module) replaces itself
                raise TypeError(f"corpus adapter {_qualified(cls)}: the name {cls.name!r} is taken by {_qualified(known)}")
            REGISTRY[cls.name] = cls

    def __init__(self, root: Path, options: SegmentOptions = DEFAULT_OPTIONS) -> None:
        self.root = root
        self.options = options
        self.unmatched: list[str] = []  # table rows that name no video under ROOT
        self.tables_read: list[dict[str, Any]] = []  # `Segmentation.files`: path, sha256, rows
        self.skipped: list[str] = []  # videos the adapter cannot place (beyond those no table lists), with the reason
        self.used: set[str] = set()  # paths of the videos some utterance reads

    @classmethod
    def for_root(cls, root: Path) -> type[CorpusAdapter]:
        """The adapter for the layout found at ROOT: this one, unless a corpus comes in several layouts."""
        return cls

    @cached_property
    def videos(self) -> list[VideoInput]:
        """Every video file under ROOT, walked as `emer build` walks its input folder."""
        return root_videos(self.root)

    def utterances(self) -> Iterator[Utterance]:
        """One utterance per corpus row, in table order (that order numbers repeated windows); the one method to write."""
        raise NotImplementedError(f"{type(self).__name__}.utterances")

    # ---- notes taken while reading

    def read_table(self, path: Path, rows: int | None = None) -> None:
        """A table read: it counts in the inputs fingerprint and the manifest."""
        self.tables_read.append(file_entry(path, rows))

    def unmatch(self, message: str) -> None:
        """A row without its video, as `{table} line {n}: why`: listed like unmatched annotations."""
        self.unmatched.append(message)

    def use(self, video: VideoInput) -> None:
        """A video some utterance reads: not reported as unlisted."""
        self.used.add(video.path)

    def skip(self, message: str) -> None:
        """A video the corpus cannot place (a duplicate, no split folder), as `{path} (why)`."""
        self.skipped.append(message)

    # ---- the steps every corpus shares

    @property
    def method(self) -> str:
        return f"corpus:{self.name}"

    def load(self) -> Segmentation:
        """The corpus' segmentation: utterances assembled into keyed segments (and failure rows), then the rows
        without a video, the tables read and the videos no table lists, sorted."""
        result = assemble(list(self.utterances()), self.method, self.options)
        result.unmatched += self.unmatched
        result.files += self.tables_read
        result.skipped += unlisted(self.videos, self.used, self.name) + self.skipped
        return result.sort()

    @classmethod
    def describe(cls) -> str:
        """The declaration as text (`describe`, the README)."""
        return "\n".join(
            [
                f"{cls.name}: {cls.description}",
                f"  files: {', '.join(cls.files)}",
                f"  columns: {', '.join(cls.columns)}",
                f"  clips: {cls.clips}",
                f"  key: {cls.key_rule}",
                f"  labels: {cls.label_mapping}",
                f"  split: {cls.split_rule}",
            ]
        )


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _check_declaration(cls: type[CorpusAdapter]) -> None:
    """A declaration with every part (they are what users read before building), a name fit for `--corpus`."""
    if not isinstance(cls.__dict__["name"], str) or not NAME.fullmatch(cls.name):
        raise TypeError(f"corpus adapter {_qualified(cls)}: name {cls.__dict__['name']!r} must be lower-case letters and digits, words joined by -")
    for part in (*TEXT_PARTS, *TUPLE_PARTS):
        value = getattr(cls, part, None)
        kind = str if part in TEXT_PARTS else tuple
        if not (value and isinstance(value, kind)):
            raise TypeError(f"corpus adapter {_qualified(cls)} ({cls.name}): declare `{part}`, a non-empty {kind.__name__}")
    if cls.utterances is CorpusAdapter.utterances:
        raise TypeError(f"corpus adapter {_qualified(cls)} ({cls.name}): implement utterances()")


def installed_names() -> list[str]:
    """Names of the adapters other packages install (`emer_builder.corpora` entry points), read from their metadata: nothing is imported."""
    return sorted({ep.name for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)})


def load_installed(name: str) -> type[CorpusAdapter] | None:
    """The adapter an installed package registers as NAME (its module imported now), or None when none does."""
    found = sorted((ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP) if ep.name == name), key=lambda ep: ep.value)
    if not found:
        return None
    if len({ep.value for ep in found}) > 1:
        raise UserError(f"corpus {name!r}: several installed packages register it ({', '.join(ep.value for ep in found)}); uninstall one")
    ep = found[0]
    try:
        cls = ep.load()
    except Exception as e:  # any error of a third-party module: one line naming it, not a traceback
        raise UserError(f"corpus {name!r} (entry point {ep.value} in group {ENTRY_POINT_GROUP}) cannot be loaded: {one_line(e)}") from None
    if not (isinstance(cls, type) and issubclass(cls, CorpusAdapter)):
        raise UserError(f"corpus {name!r}: entry point {ep.value} must name a subclass of emer_builder.transforms.corpora.CorpusAdapter")
    if cls.__dict__.get("name") != name:
        raise UserError(f"corpus {name!r}: entry point {ep.value} is the adapter {cls.__dict__.get('name')!r}; an entry point is named as its adapter")
    return cls


__all__ = ["ENTRY_POINT_GROUP", "REGISTRY", "CorpusAdapter", "installed_names", "load_installed"]
