"""Corpus adapters: `emer build ROOT --corpus NAME` reads a corpus' own layout and tables.

Each adapter is one module with a `CorpusAdapter` subclass (base.py): its declaration (files, columns, key
rule, label mapping, split rule) and `utterances()`, one utterance per corpus row (an already-cut clip decoded
whole, or a window of a long video). The base turns them into a `Segmentation`: records, failure rows, rows
without a video (`unmatched`), the official splits (`split_table`) and the tables read. Subclassing registers
an adapter; another package registers its own through the `emer_builder.corpora` entry point (README,
"Adding a corpus"). The `--corpus` choices and the README table are made from this registry.
Unknown layouts go through a segment table (`--segment table`).
"""

from __future__ import annotations

from pathlib import Path

from emer_builder.core.errors import UserError
from emer_builder.transforms.corpora import cmu_sdk, meld, mer, mmsa  # noqa: F401  (defining the built-in adapters registers them)
from emer_builder.transforms.corpora.base import ENTRY_POINT_GROUP, REGISTRY, CorpusAdapter, installed_names, load_installed
from emer_builder.transforms.corpora.common import following_external_links
from emer_builder.transforms.segment import DEFAULT_OPTIONS, Segmentation, SegmentOptions

# name -> adapter: the built-in ones, and installed ones once loaded (live: the registry itself)
CORPORA: dict[str, type[CorpusAdapter]] = REGISTRY


def corpus_names() -> list[str]:
    """Every name `--corpus` takes: the built-in adapters and those installed packages register (not imported for this)."""
    return sorted(set(REGISTRY) | set(installed_names()))


def adapter(name: str, root: str | Path | None = None) -> type[CorpusAdapter]:
    """The adapter for NAME (an installed package's is imported now); with ROOT, the one for the layout ROOT holds
    (CMU-MOSI and CMU-MOSEI come as MMSA's label.csv or as CMU SDK sequences)."""
    cls = REGISTRY.get(name) or load_installed(name)
    if cls is None:
        raise UserError(f"unknown corpus {name!r}; known: {', '.join(corpus_names())} (other layouts: --segment table with a segment table)")
    return cls if root is None else cls.for_root(Path(root))


def load_corpus(name: str, root: str | Path, options: SegmentOptions = DEFAULT_OPTIONS, follow_external_links: bool = False) -> Segmentation:
    """Read the corpus at ROOT: its utterances, official splits and labels, sorted and deterministic.
    Clips behind links that leave ROOT count only with `follow_external_links`, as for `emer build` without a corpus."""
    path = Path(root)
    if not path.is_dir():
        raise UserError(f"corpus folder {root} is not a folder")
    with following_external_links(follow_external_links):
        return adapter(name, path)(path, options).load()


def describe(name: str, root: str | Path | None = None) -> str:
    """The adapter's declaration as text (the one for ROOT's layout when ROOT is given)."""
    return adapter(name, root).describe()


def builtin_adapters() -> list[type[CorpusAdapter]]:
    """Every adapter this package defines, second layouts included (`register=False`), by name then layout."""
    found: list[type[CorpusAdapter]] = []
    todo = list(CorpusAdapter.__subclasses__())
    while todo:
        cls = todo.pop()
        todo += cls.__subclasses__()
        if "name" in cls.__dict__ and cls.__module__.startswith(f"{__name__}.") and cls not in found:
            found.append(cls)
    return sorted(found, key=lambda c: (c.name, c is not REGISTRY.get(c.name), c.__qualname__))


def corpus_table(adapters: list[type[CorpusAdapter]] | None = None) -> str:
    """The README's table of adapters, made from their declarations; adapters declared alike share a row."""
    rows: dict[tuple[str, ...], list[str]] = {}
    for cls in adapters if adapters is not None else builtin_adapters():
        reads = f"{', '.join(f'`{f}`' for f in cls.files)}; clips: {cls.clips}"
        names = rows.setdefault((reads, cls.key_rule, cls.label_mapping, cls.split_rule), [])
        if cls.name not in names:
            names.append(cls.name)
    lines = ["| NAME | reads | key | labels | split |", "|---|---|---|---|---|"]
    lines += [f"| {', '.join(f'`{n}`' for n in names)} | {' | '.join(_cell(part) for part in row)} |" for row, names in rows.items()]
    return "\n".join(lines)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


__all__ = [
    "CORPORA",
    "ENTRY_POINT_GROUP",
    "CorpusAdapter",
    "adapter",
    "builtin_adapters",
    "corpus_names",
    "corpus_table",
    "describe",
    "load_corpus",
]
