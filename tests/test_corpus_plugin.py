"""A corpus adapter from outside the project, as another package ships one: its module, its dummy layout and
its test made from the shared adapter test case, packed as a wheel and pip-installed into a folder of its own
(never into the project's venv), found through its `emer_builder.corpora` entry point. `emer build --help`
lists it, its own test passes, and `emer build --corpus tiny-clips` builds a dataset with it. Each runs in a
subprocess with that folder on PYTHONPATH, so the registry of this process never sees the package."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from emer_builder.core.errors import UserError
from emer_builder.transforms.corpora import CORPORA, adapter, corpus_names

BIN = Path(sys.executable).parent
NAME = "tiny-clips"

ADAPTER = '''"""tiny-clips: clips listed in a JSON Lines table, one emotion and one fold each."""

import json
from collections.abc import Iterator

from emer_builder.transforms.corpora import CorpusAdapter
from emer_builder.transforms.corpora.common import by_stem, one_table, split_name
from emer_builder.transforms.keys import key_for
from emer_builder.transforms.segment import Utterance, corpus_labels


class TinyClips(CorpusAdapter):
    name = "tiny-clips"
    description = "clips listed in clips.jsonl with one emotion each"
    files = ("clips.jsonl",)
    columns = ("clip", "emotion", "fold")
    clips = "{clip}.* anywhere under ROOT"
    key_rule = "tiny_{clip}"
    label_mapping = "labels.emotion = emotion"
    split_rule = "fold: train, dev -> validation, test"

    def utterances(self) -> Iterator[Utterance]:
        path = one_table(self.root, "clips.jsonl", self.name)
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        self.read_table(path, len(rows))
        stems = by_stem(self.videos)
        for n, row in enumerate(rows, 1):
            found = stems.get(row["clip"], [])
            if len(found) != 1:
                self.unmatch(f"clips.jsonl line {n}: no clip {row['clip']}.*")
                continue
            self.use(found[0])
            labels = corpus_labels(corpus=self.name, sample_id=row["clip"], official_split=row["fold"], emotion=row["emotion"])
            yield Utterance(found[0], None, None, f"clips.jsonl line {n}", id=row["clip"], key=key_for(f"tiny_{row['clip']}"),
                            labels=labels, split=split_name(row["fold"]), seek=False, line=n)
'''

PACKAGE_TEST = '''"""The package's own test: the shared adapter test case on the dummy layout beside the adapter."""

from emer_builder.transforms.corpora import testing
from tiny_clips import TinyClips


class TestTinyClips(testing.CorpusAdapterTestCase):
    ADAPTER = TinyClips
    SPLITS = {"train": 1, "validation": 1}
    KEYS = ("tiny_a", "tiny_b")
    LABELS = {"tiny_a": {"emotion": "happy", "official_split": "train"}, "tiny_b": {"emotion": "sad", "official_split": "dev"}}
    UNMATCHED = 1  # d has no clip
    SKIPPED = 1  # c.mp4 is in no row
'''

ROWS = [{"clip": "a", "emotion": "happy", "fold": "train"}, {"clip": "b", "emotion": "sad", "fold": "dev"}, {"clip": "d", "emotion": "angry", "fold": "test"}]


def _jsonl(rows: list[dict[str, str]]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def _wheel(folder: Path, files: dict[str, str], entry_points: str) -> Path:
    """A wheel as any build backend writes one: the files, then a dist-info with the entry points and a RECORD."""
    dist = "emer_tiny_clips-0.1.dist-info"
    files = {
        **files,
        f"{dist}/METADATA": "Metadata-Version: 2.1\nName: emer-tiny-clips\nVersion: 0.1\nRequires-Dist: emer-builder\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        f"{dist}/entry_points.txt": entry_points,
    }
    record = []
    path = folder / "emer_tiny_clips-0.1-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for name, text in files.items():
            data = text.encode()
            z.writestr(name, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            record.append(f"{name},sha256={digest},{len(data)}")
        z.writestr(f"{dist}/RECORD", "\n".join([*record, f"{dist}/RECORD,,"]) + "\n")
    return path


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The package pip-installed into a folder of its own; the environment that puts it on the path."""
    work = tmp_path_factory.mktemp("tiny-clips")
    layout = "tiny_clips/dummy_data/tiny-clips"
    files = {
        "tiny_clips/__init__.py": ADAPTER,
        f"{layout}/clips.jsonl": _jsonl(ROWS),
        f"{layout}/train/a.mp4": "",  # zero bytes: the adapter only matches names
        f"{layout}/dev/b.mp4": "",
        f"{layout}/c.mp4": "",
        "tiny_clips/tests/test_tiny_clips.py": PACKAGE_TEST,
    }
    wheel = _wheel(work, files, f"[emer_builder.corpora]\n{NAME} = tiny_clips:TinyClips\n")
    site = work / "site"
    subprocess.run([BIN / "pip", "install", "-q", "--no-deps", "--no-index", "--target", site, wheel], check=True)
    assert (site / "emer_tiny_clips-0.1.dist-info" / "entry_points.txt").is_file()
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep), "site": str(site)}


def _run(env: dict[str, str], *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_installed_adapter_is_listed_and_passes_the_shared_test_case(installed: dict[str, str]) -> None:
    helped = _run(installed, BIN / "emer", "build", "--help")
    assert helped.returncode == 0, helped.stderr
    assert f"own layout: ch-sims, ch-sims-v2, cmu-mosei, cmu-mosi, meld, mer, mmsa, {NAME} (docs/guide/long-videos.md)" in " ".join(helped.stdout.split())
    tested = _run(installed, sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", Path(installed["site"]) / "tiny_clips" / "tests")
    assert tested.returncode == 0 and "6 passed" in tested.stdout, tested.stdout + tested.stderr
    assert NAME not in corpus_names() and NAME not in CORPORA  # this process never saw the package


def test_entry_points_that_name_no_adapter_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An entry point whose module fails, which names something else than an adapter, or an adapter of another name."""
    dist = tmp_path / "emer_broken_corpora-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: emer-broken-corpora\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[emer_builder.corpora]\nno-module = emer_no_such_module:Adapter\nnot-an-adapter = json:dumps\nrenamed = emer_builder.transforms.corpora.meld:Meld\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert {"no-module", "not-an-adapter", "renamed"} <= set(corpus_names())  # listed from metadata, nothing imported
    with pytest.raises(
        UserError, match=r"corpus 'no-module' \(entry point emer_no_such_module:Adapter in group emer_builder.corpora\) cannot be loaded: .*emer_no_such_module"
    ):
        adapter("no-module")
    with pytest.raises(UserError, match=r"entry point json:dumps must name a subclass of emer_builder.transforms.corpora.CorpusAdapter"):
        adapter("not-an-adapter")
    with pytest.raises(UserError, match=r"entry point emer_builder.transforms.corpora.meld:Meld is the adapter 'meld'"):
        adapter("renamed")


@pytest.mark.slow
def test_build_with_an_installed_corpus(installed: dict[str, str], demo_videos: Path, tmp_path: Path) -> None:
    """`emer build ROOT --corpus tiny-clips`: the package's keys, labels and splits in the records."""
    root = tmp_path / "corpus"
    for rel, clip in (("train/a.mp4", "sample_00000870.mp4"), ("dev/b.mkv", "sample_00000880.mkv")):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(demo_videos / clip, root / rel)
    (root / "clips.jsonl").write_text(_jsonl(ROWS[:2]))
    config = tmp_path / "build.yaml"
    config.write_text("transcript: {model: tiny.en}\n")
    out = tmp_path / "out"
    built = _run(installed, BIN / "emer", "build", root, "--out", out, "--corpus", NAME, "--config", config, "--workers", "1", "--quiet")
    assert built.returncode == 0, built.stdout + built.stderr
    rows = {r["key"]: r for path in sorted((out / "data").glob("*.parquet")) for r in pq.read_table(path).to_pylist()}
    assert sorted(rows) == ["tiny_a", "tiny_b"]
    assert {k: (r["split"], r["labels"]["corpus"], r["labels"]["emotion"], r["segment"]["method"]) for k, r in rows.items()} == {
        "tiny_a": ("train", NAME, "happy", f"corpus:{NAME}"),
        "tiny_b": ("validation", NAME, "sad", f"corpus:{NAME}"),
    }
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["corpus"] == NAME
