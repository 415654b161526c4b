"""Every built-in corpus adapter through the shared adapter test case, on the small dummy layout checked in
beside it (transforms/corpora/dummy_data/): keys, splits and labels as the corpus defines them; the registry,
`--corpus` and the guide's table made from the adapters' declarations."""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

import pytest
from emer_builder.cli.main import parser
from emer_builder.transforms.corpora import CORPORA, builtin_adapters, corpus_names, corpus_table, testing
from emer_builder.transforms.corpora.base import CorpusAdapter
from emer_builder.transforms.corpora.cmu_sdk import CmuMoseiSdk, CmuMosiSdk
from emer_builder.transforms.corpora.meld import Meld
from emer_builder.transforms.corpora.mer import Mer
from emer_builder.transforms.corpora.mmsa import ChSims, ChSimsV2, CmuMosei, CmuMosi, MmsaCorpus
from emer_builder.transforms.segment import SegmentOptions

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "guide" / "long-videos.md"


class TestMeld(testing.CorpusAdapterTestCase):
    """Clips in split folders; a row without a clip cut from its episode (one past the episode's end), one with neither."""

    ADAPTER = Meld
    MEDIA: ClassVar[dict[str, float]] = {"episodes/Friends.S01E01.The.One.Where.mkv": 12.0}
    OPTIONS = SegmentOptions(context_before=2, context_after=1)
    SPLITS: ClassVar[dict[str, int]] = {"train": 3, "validation": 1, "test": 1}
    KEYS = ("dev__dia0_utt0", "test__dia0_utt0", "train__dia0_utt0", "train__dia0_utt1", "train__dia0_utt2")
    LABELS: ClassVar[dict[str, dict]] = {
        "train__dia0_utt0": {"sample_id": "dia0_utt0", "official_split": "train", "emotion": "surprise", "sentiment": "negative"},
        "train__dia0_utt2": {"emotion": "joy", "sentiment": "positive"},
        "dev__dia0_utt0": {"official_split": "dev", "emotion": "sadness"},
    }
    UNMATCHED = 1  # S09E09: no clip, no episode
    FAILURES = 1  # test dia0_utt1 ends past the 12 s episode
    SKIPPED = 2  # misc/dia7_utt0.mp4: in no split folder, and listed by no table

    def test_episode_window_and_dialogue_context(self) -> None:
        by_key = {s.key: s for s in self.result.segments}
        cut = by_key["train__dia0_utt2"]
        assert cut.seek and cut.window() == pytest.approx((5.1, 2.8)) and cut.source_path == "episodes/Friends.S01E01.The.One.Where.mkv"
        assert [c.text for c in cut.context_before] == ["Oh my God, he’s lost it.", "Who’s lost what?"] and cut.text == "“Nothing!”"
        assert not by_key["train__dia0_utt0"].seek and by_key["train__dia0_utt0"].source_key == "S01E01"
        assert self.result.failures[0]["key"] == "test__dia0_utt1" and "starts past the end of the video (00:00:12" in self.result.failures[0]["message"]


class MmsaLayoutCase:
    """The five MMSA-layout corpora read one dummy layout; each keeps its own score scale (a mixin: not collected itself)."""

    DUMMY_DATA = "mmsa"
    SPLITS: ClassVar[dict[str, int]] = {"train": 2, "validation": 1, "test": 1}
    KEYS = ("video_0001_1", "video_0001_2", "video_0002_1", "video_0003_1")  # video_0003's clip id written 1.0, its file 0001.mkv
    UNMATCHED = 1  # video_0004 has no clip
    SKIPPED = 1  # Raw/video_0002/0009.mp4 is listed by no row
    SCALE: ClassVar[tuple[float | None, float | None]] = (None, None)

    @classmethod
    def setUpClass(cls) -> None:
        low, high = cls.SCALE
        cls.LABELS = {
            "video_0001_1": {"sentiment": "positive", "sentiment_score": 0.8, "text_score": 1.0, "visual_score": 0.4, "score_min": low, "score_max": high},
            "video_0002_1": {"official_split": "valid", "sentiment_score": -0.2},
            "video_0003_1": {"sample_id": "video_0003_1", "text_score": None},
        }
        super().setUpClass()  # type: ignore[misc]


class TestChSims(MmsaLayoutCase, testing.CorpusAdapterTestCase):
    ADAPTER = ChSims
    SCALE = (-1.0, 1.0)


class TestChSimsV2(MmsaLayoutCase, testing.CorpusAdapterTestCase):
    ADAPTER = ChSimsV2
    SCALE = (-1.0, 1.0)


class TestMmsa(MmsaLayoutCase, testing.CorpusAdapterTestCase):
    ADAPTER = MmsaCorpus


class TestCmuMosiMmsa(MmsaLayoutCase, testing.CorpusAdapterTestCase):
    ADAPTER = CmuMosi
    SCALE = (-3.0, 3.0)


class TestCmuMoseiMmsa(MmsaLayoutCase, testing.CorpusAdapterTestCase):
    ADAPTER = CmuMosei
    SCALE = (-3.0, 3.0)


class CmuSdkCase:
    """Full videos cut at a label sequence's intervals (stored out of time order), words from the words sequence,
    splits from folds.csv; the sequences are HDF5, so they are written at test time (a mixin: not collected itself)."""

    DUMMY_DATA = "cmu-sdk"
    MEDIA: ClassVar[dict[str, float]] = {"Full/vid_a.mp4": 10.0, "Full/vid_b.mp4": 6.0}
    LABEL_FILE: ClassVar[str]
    FEATURES: ClassVar[int]  # values per interval: MOSI 1 (sentiment), MOSEI 7 (sentiment, six emotions)
    SPLITS: ClassVar[dict[str, int]] = {"train": 2, "test": 1}
    KEYS = ("vid_a_1", "vid_a_2", "vid_b_1")
    UNMATCHED = 1  # vid_c has no video
    FAILURES = 1  # vid_b's second interval ends past the 6 s video

    @classmethod
    def prepare(cls, root: Path) -> None:
        super().prepare(root)  # type: ignore[misc]
        row = [2.5, 1.5, 0.0, 0.0, 0.3, 0.0, 0.0][: cls.FEATURES]
        labels = {
            "vid_a": ([[5.0, 7.0], [0.5, 3.0]], [[-1.0] * cls.FEATURES, row]),
            "vid_b": ([[1.0, 2.0], [5.5, 8.0]], [row, row]),
            "vid_c": ([[0.0, 1.0]], [row]),
        }
        words = {"vid_a": ([[0.6, 1.0], [1.0, 1.2], [1.2, 2.0], [5.5, 6.0]], [[b"hello"], [b"sp"], [b"there"], [b"later"]])}
        _write_csd(root / cls.LABEL_FILE, "All Labels", labels)
        _write_csd(root / "TimestampedWords.csd", "words", words)


class TestCmuMosiSdk(CmuSdkCase, testing.CorpusAdapterTestCase):
    ADAPTER = CmuMosiSdk
    LABEL_FILE = "CMU_MOSI_Opinion_Labels.csd"
    FEATURES = 1
    LABELS: ClassVar[dict[str, dict]] = {
        "vid_a_1": {"sentiment_score": 2.5, "score_min": -3.0, "score_max": 3.0, "emotion_scores": [], "official_split": "train"}
    }


class TestCmuMoseiSdk(CmuSdkCase, testing.CorpusAdapterTestCase):
    ADAPTER = CmuMoseiSdk
    LABEL_FILE = "CMU_MOSEI_Labels.csd"
    FEATURES = 7
    LABELS: ClassVar[dict[str, dict]] = {
        "vid_a_1": {
            "sentiment_score": 2.5,
            "emotion_scores": [
                {"emotion": "happy", "score": 1.5},
                {"emotion": "sad", "score": 0.0},
                {"emotion": "anger", "score": 0.0},
                {"emotion": "surprise", "score": 0.3},
                {"emotion": "disgust", "score": 0.0},
                {"emotion": "fear", "score": 0.0},
            ],
        },
        "vid_b_1": {"official_split": "test"},
    }

    def test_intervals_in_time_order_with_their_words(self) -> None:
        assert [(s.key, s.start_s, s.end_s, s.text) for s in self.result.segments if s.key.startswith("vid_a")] == [
            ("vid_a_1", 0.5, 3.0, "hello there"),
            ("vid_a_2", 5.0, 7.0, "later"),
        ]


class TestMer(testing.CorpusAdapterTestCase):
    ADAPTER = Mer
    SPLITS: ClassVar[dict[str, int]] = {"train": 1, "test1": 1}  # the clip's top folder names the split
    KEYS = ("sample_00000001", "sample_00000002")
    LABELS: ClassVar[dict[str, dict]] = {
        "sample_00000001": {"emotion": "happy", "sentiment_score": 2.5, "score_min": -5.0, "score_max": 5.0, "official_split": "train"},
        "sample_00000002": {"emotion": "sad", "sentiment_score": -3.0},
    }
    UNMATCHED = 1  # sample_00000003 has no clip
    SKIPPED = 1  # extra/sample_00000009.mp4 is in no table


def _write_csd(path: Path, name: str, data: dict[str, tuple[list[list[float]], list]]) -> None:
    """A computational sequence as the CMU SDK writes it: <name>/data/<video>/{features,intervals}, <name>/metadata."""
    import h5py

    with h5py.File(path, "w") as f:
        group = f.create_group(name)
        d = group.create_group("data")
        for video, (intervals, features) in data.items():
            v = d.create_group(video)
            v.create_dataset("intervals", data=intervals)
            v.create_dataset("features", data=features)
        group.create_group("metadata").create_dataset("root name", (1,), dtype=h5py.special_dtype(vlen=str))[0] = json.dumps(name)


# ---------------------------------------------------------------- the registry and what is made from it


def test_every_adapter_has_a_test_case() -> None:
    """Adding an adapter without its dummy layout and test case fails here."""
    tested = {c.ADAPTER for c in globals().values() if isinstance(c, type) and issubclass(c, testing.CorpusAdapterTestCase) and c.ADAPTER is not None}
    assert set(builtin_adapters()) == tested
    assert corpus_names() == ["ch-sims", "ch-sims-v2", "cmu-mosei", "cmu-mosi", "meld", "mer", "mmsa"]


def test_declarations_are_checked_when_an_adapter_is_defined() -> None:
    with pytest.raises(TypeError, match=r"name 'Bad Name' must be lower-case"):
        type("Bad", (CorpusAdapter,), {"name": "Bad Name"})
    with pytest.raises(TypeError, match=r"declare `key_rule`, a non-empty str"):

        class NoKeyRule(CorpusAdapter, register=False):
            name = "no-key-rule"
            description, clips, label_mapping, split_rule = "d", "c", "l", "s"
            files, columns = ("t.csv",), ("a",)

    with pytest.raises(TypeError, match=r"the name 'meld' is taken by emer_builder.transforms.corpora.meld.Meld"):

        class SecondMeld(Meld):
            name = "meld"

    assert "no-key-rule" not in CORPORA and CORPORA["meld"] is Meld


def test_cli_corpus_choices_come_from_the_registry(capsys: pytest.CaptureFixture[str]) -> None:
    """`emer build --help` lists the registry's names; a name it lacks is refused before anything runs."""
    with pytest.raises(SystemExit):
        parser().parse_args(["build", "--help"])
    assert f"own layout: {', '.join(corpus_names())} (docs/guide/long-videos.md)" in " ".join(capsys.readouterr().out.split())
    with pytest.raises(SystemExit):
        parser().parse_args(["build", "videos", "--out", "out", "--corpus", "iemocap"])
    assert "argument --corpus: invalid choice: 'iemocap' (choose from 'ch-sims', 'ch-sims-v2'" in capsys.readouterr().err
    assert parser().parse_args(["build", "videos", "--out", "out", "--corpus", "cmu-mosei"]).corpus == "cmu-mosei"


def test_guide_corpus_table_is_made_from_the_declarations() -> None:
    text = GUIDE.read_text()
    start, end = text.index("<!-- corpora:start"), text.index("<!-- corpora:end -->")
    assert text[start:end].split("\n", 1)[1].strip() == corpus_table()
