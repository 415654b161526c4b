"""Corpus adapters: `emer build ROOT --corpus NAME` reads a corpus' own layout and tables.

Each adapter is one small module declaring the files it reads, their columns, the key rule, the label
mapping and the split rule (a `Corpus`), and a `load(root, options)` that returns a `Segmentation`:
one utterance per corpus row (an already-cut clip decoded whole, or a window of a long video), failure
rows, rows without a video (`unmatched`), the official splits (`split_table`) and the tables read.

- `meld`: MELD's `{train,dev,test}_sent_emo.csv`, clips `dia{D}_utt{U}.mp4` or raw episodes.
- `ch-sims`, `ch-sims-v2`, `mmsa`: the MMSA `label.csv` layout.
- `cmu-mosi`, `cmu-mosei`: the MMSA layout when ROOT has a label.csv, else the CMU SDK layout (`.csd`).
- `mer`: MER2023/2024/2025 clips with `name,discrete,valence` tables.
Unknown layouts go through a segment table (`--segment table`, transforms/segments.py).
"""

from __future__ import annotations

from pathlib import Path

from emer_builder.core.errors import UserError
from emer_builder.transforms.corpora import cmu_sdk, meld, mer, mmsa
from emer_builder.transforms.corpora.common import Corpus, find_tables, following_external_links
from emer_builder.transforms.segments import DEFAULT_OPTIONS, Segmentation, SegmentOptions

_MMSA = {c.name: c for c in mmsa.CORPORA}
_SDK = {c.name: c for c in cmu_sdk.CORPORA}

CORPORA: dict[str, Corpus] = {meld.CORPUS.name: meld.CORPUS, **_MMSA, mer.CORPUS.name: mer.CORPUS}


def corpus_names() -> list[str]:
    return sorted(CORPORA)


def adapter(name: str, root: str | Path) -> Corpus:
    """The adapter for NAME at ROOT: CMU-MOSI and CMU-MOSEI come in two layouts, told apart by what ROOT holds."""
    if name not in CORPORA:
        raise UserError(f"unknown corpus {name!r}; known: {', '.join(corpus_names())} (other layouts: --segment table with a segment table)")
    if name in _SDK and not find_tables(Path(root), "label.csv"):
        return _SDK[name]
    return CORPORA[name]


def load_corpus(name: str, root: str | Path, options: SegmentOptions = DEFAULT_OPTIONS, follow_external_links: bool = False) -> Segmentation:
    """Read the corpus at ROOT: its utterances, official splits and labels, sorted and deterministic.
    Clips behind links that leave ROOT count only with `follow_external_links`, as for `emer build` without a corpus."""
    path = Path(root)
    if not path.is_dir():
        raise UserError(f"corpus folder {root} is not a folder")
    with following_external_links(follow_external_links):
        return adapter(name, path).load(path, options)


def describe(name: str, root: str | Path | None = None) -> str:
    """The adapter's declaration as text (`emer build --corpus NAME --explain`, the README)."""
    c = adapter(name, root) if root is not None else CORPORA[name]
    return "\n".join(
        [
            f"{c.name}: {c.description}",
            f"  files: {', '.join(c.files)}",
            f"  columns: {', '.join(c.columns)}",
            f"  clips: {c.clips}",
            f"  key: {c.key_rule}",
            f"  labels: {c.label_mapping}",
            f"  split: {c.split_rule}",
        ]
    )


__all__ = ["CORPORA", "Corpus", "adapter", "corpus_names", "describe", "load_corpus"]
