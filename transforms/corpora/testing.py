"""The shared test of a corpus adapter (TFDS's `DatasetBuilderTestCase` + `dummy_data/` pattern).

A test subclasses `CorpusAdapterTestCase` (import the module, not the class, so that the base itself is not
collected), names its `ADAPTER` and states what the adapter must make of its small dummy layout: records per
split (`SPLITS`), the keys, some labels, and how many rows and videos end elsewhere. The dummy layout is a
folder checked in beside the adapter (`dummy_data/<name>/`: tables, and zero-byte clips where the adapter only
matches names); the videos it cuts windows from (`MEDIA`) are made at test time with ffmpeg, a few seconds of
tiny gray frames, so no binary is committed. The case loads the layout through the registry, as
`emer build --corpus NAME` does, and checks the declaration, keys, splits, labels against the record schema,
the accounting of every row and video, and that a second load from another folder gives the same records.

Runs under pytest or unittest; adapters installed from another package use it the same way.
"""

from __future__ import annotations

import hashlib
import inspect
import shutil
import subprocess
import tempfile
import unittest
from collections import Counter
from pathlib import Path
from typing import Any, ClassVar

from emer_builder.schemas.fields import RecordSchema
from emer_builder.schemas.segments import LABELS, SEGMENT
from emer_builder.transforms.corpora import adapter, corpus_names, describe, load_corpus
from emer_builder.transforms.corpora.base import CorpusAdapter
from emer_builder.transforms.keys import key_for
from emer_builder.transforms.segment import DEFAULT_OPTIONS, Segmentation, SegmentOptions

RECORD_PARTS = RecordSchema("corpus-adapter-test", [], [SEGMENT, LABELS])


def make_video(path: Path, seconds: float) -> Path:
    """A tiny real video (32x32 gray frames at 1 fps, silent audio) of the given length: something to cut windows from."""
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", f"color=c=gray:s=32x32:r=1:d={seconds}"]
        + ["-f", "lavfi", "-i", f"anullsrc=r=8000:cl=mono:d={seconds}", "-c:a", "aac", "-b:a", "8k"]
        + ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-shortest", str(path)],
        check=True,
    )
    return path


class CorpusAdapterTestCase(unittest.TestCase):
    """Loads ADAPTER's dummy layout once per class and checks what it made of it."""

    ADAPTER: ClassVar[type[CorpusAdapter] | None] = None
    DUMMY_DATA: ClassVar[str | Path | None] = None  # a folder, or the name of one in dummy_data/ beside the adapter's module (default: ADAPTER.name)
    MEDIA: ClassVar[dict[str, float]] = {}  # path under ROOT -> seconds: real videos made at test time (adapters that cut windows)
    OPTIONS: ClassVar[SegmentOptions] = DEFAULT_OPTIONS
    SPLITS: ClassVar[dict[str, int]] = {}  # records per official split (the split table), as TFDS' SPLITS
    KEYS: ClassVar[tuple[str, ...] | None] = None  # every record key, sorted, when given
    LABELS: ClassVar[dict[str, dict[str, Any]]] = {}  # record key -> values of its `labels` group it must carry
    UNMATCHED: ClassVar[int] = 0  # table rows naming no video
    FAILURES: ClassVar[int] = 0  # rows that cannot become records (failure rows of stage `segment`)
    SKIPPED: ClassVar[int] = 0  # video files reported as skipped (not listed, not placeable)

    root: ClassVar[Path]
    result: ClassVar[Segmentation]
    _tmp: ClassVar[tempfile.TemporaryDirectory[str]]

    @classmethod
    def dummy_data(cls) -> Path:
        assert cls.ADAPTER is not None
        where = cls.DUMMY_DATA or cls.ADAPTER.name
        return where if isinstance(where, Path) else Path(inspect.getfile(cls.ADAPTER)).parent / "dummy_data" / where

    @classmethod
    def prepare(cls, root: Path) -> None:
        """Make what cannot be checked in as text (videos to cut; binary tables an override writes)."""
        for rel, seconds in sorted(cls.MEDIA.items()):
            make_video(root / rel, seconds)

    @classmethod
    def layout(cls, where: Path) -> Path:
        """A fresh copy of the dummy layout at WHERE, prepared."""
        shutil.copytree(cls.dummy_data(), where, symlinks=True)
        cls.prepare(where)
        return where

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        if cls.ADAPTER is None:
            raise unittest.SkipTest("the shared case itself: a subclass names its ADAPTER")
        if not cls.dummy_data().is_dir():
            raise AssertionError(f"{cls.__name__}: no dummy layout at {cls.dummy_data()}")
        cls._tmp = tempfile.TemporaryDirectory(prefix=f"corpus-{cls.ADAPTER.name}-")
        cls.root = cls.layout(Path(cls._tmp.name) / "root")
        cls.result = load_corpus(cls.ADAPTER.name, cls.root, cls.OPTIONS)

    @classmethod
    def tearDownClass(cls) -> None:
        if getattr(cls, "_tmp", None) is not None:
            cls._tmp.cleanup()
        super().tearDownClass()

    def test_registry_selects_this_adapter(self) -> None:
        """`--corpus NAME` on this layout reaches ADAPTER, whose declaration the help and README show."""
        assert self.ADAPTER is not None
        self.assertIn(self.ADAPTER.name, corpus_names())
        self.assertIs(adapter(self.ADAPTER.name, self.root), self.ADAPTER)
        text = describe(self.ADAPTER.name, self.root)
        for part in (self.ADAPTER.key_rule, self.ADAPTER.label_mapping, self.ADAPTER.split_rule, *self.ADAPTER.files):
            self.assertIn(part, text)

    def test_keys(self) -> None:
        keys = [s.key for s in self.result.segments]
        self.assertTrue(keys, "the dummy layout gives no record")
        self.assertEqual(len(set(self.result.keys())), len(self.result.keys()), "a key is given twice")
        self.assertEqual([key_for(k) for k in keys], keys, "keys must be safe as WebDataset keys and file names")
        if self.KEYS is not None:
            self.assertEqual(keys, sorted(self.KEYS))

    def test_splits(self) -> None:
        split_table = self.result.split_table
        self.assertLessEqual(set(split_table), {s.key for s in self.result.segments}, "the split table names a key that is no record")
        self.assertEqual(dict(Counter(split_table.values())), self.SPLITS)

    def test_labels_fit_the_schema(self) -> None:
        """Every record's segment and labels groups validate; they name the adapter; the stated labels are there."""
        assert self.ADAPTER is not None
        by_key = {}
        for s in self.result.segments:
            fields = {"segment": s.segment_fields(), "labels": s.labels_fields()}
            RECORD_PARTS.validate(fields)
            self.assertEqual((fields["segment"]["method"], fields["labels"]["corpus"]), (f"corpus:{self.ADAPTER.name}", self.ADAPTER.name))
            by_key[s.key] = fields["labels"]
        for key, expected in self.LABELS.items():
            self.assertIn(key, by_key)
            self.assertEqual({name: by_key[key][name] for name in expected}, expected, key)

    def test_every_row_and_video_is_accounted_for(self) -> None:
        """Rows without a video, rows that cannot be cut and videos no table lists are counted, each with its reason;
        every table read is listed with its checksum (the inputs fingerprint)."""
        self.assertEqual(len(self.result.unmatched), self.UNMATCHED, self.result.unmatched)
        self.assertEqual(len(self.result.failures), self.FAILURES, self.result.failures)
        self.assertEqual(len(self.result.skipped), self.SKIPPED, self.result.skipped)
        self.assertTrue(all(f["stage"] == "segment" and f["message"] for f in self.result.failures))
        self.assertTrue(self.result.files, "no table listed as read")
        for entry in self.result.files:
            path = Path(entry["path"])
            self.assertTrue(path.is_relative_to(self.root), path)
            self.assertEqual(entry["sha256"], hashlib.sha256(path.read_bytes()).hexdigest())

    def test_same_records_from_another_folder(self) -> None:
        """Deterministic, and nothing taken from where ROOT lies: a copy elsewhere gives the same records and splits."""
        assert self.ADAPTER is not None
        with tempfile.TemporaryDirectory(prefix=f"corpus-{self.ADAPTER.name}-copy-") as other:
            again = load_corpus(self.ADAPTER.name, self.layout(Path(other) / "elsewhere"), self.OPTIONS)
            self.assertEqual(_records(again), _records(self.result))
            self.assertEqual(again.split_table, self.result.split_table)
            self.assertEqual(again.unmatched, self.result.unmatched)
            self.assertEqual([(f["key"], f["message"]) for f in again.failures], [(f["key"], f["message"]) for f in self.result.failures])


def _records(result: Segmentation) -> list[tuple[Any, ...]]:
    return [(s.key, s.source_path, s.seek, s.window(), s.segment_fields(), s.labels_fields()) for s in result.segments]


__all__ = ["CorpusAdapterTestCase", "make_video"]
