"""report.html opened in a real browser (headless Chromium): the demo build's report, and synthetic builds written
with the project's own writers (shards, failure rows, manifest) for failures, paging, filters, hostile text,
partial downloads and the open time of a 10,000-record build."""

from __future__ import annotations

import io
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tarfile
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from emer_builder.core.config import BuildConfig
from emer_builder.core.errors import ClipError, UserError
from emer_builder.core.failures import failure_row
from emer_builder.release.manifest import write_manifest
from emer_builder.report import write_report
from emer_builder.schemas import SCHEMA
from emer_builder.schemas.v1 import EXPRESSION_CLASSES, FAILURE_SCHEMA
from emer_builder.transforms.shards import write_parquet, write_tar
from PIL import Image

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--enable-logging=stderr",
    "--v=0",
)
HOSTILE = "</script><script>document.title='pwned'</script><img src=x id=injected onerror=\"document.title='pwned'\">"


# ---------------------------------------------------------------- the browser


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if found := shutil.which(name):
            return found
    return None


@pytest.fixture(scope="session")
def chromium() -> str:
    found = _chromium()
    if found is None:
        pytest.skip("Chromium is not installed here (Debian: apt-get install -y chromium; `make setup` does it as root)")
    return found


class Page:
    """What Chromium left after the page's scripts ran: the DOM as a tree, and the console lines it logged."""

    def __init__(self, dom: str, console: list[str]):
        self.dom, self.console = dom, console
        self.root = _parse(dom)

    def all(self, tag: str | None = None, **attrs: str | None) -> list[Node]:
        """Elements of `tag` whose attributes hold every `attrs` value (None: present); `class_` matches one class."""
        found = []
        for node in self.root.walk():
            if tag and node.tag != tag:
                continue
            ok = True
            for name, want in attrs.items():
                name = name.rstrip("_").replace("_", "-")
                have = node.attrs.get(name)
                if name == "class":
                    ok = ok and have is not None and want in have.split()
                else:
                    ok = ok and have is not None and (want is None or have == want)
            if ok:
                found.append(node)
        return found

    def one(self, tag: str | None = None, **attrs: str | None) -> Node:
        found = self.all(tag, **attrs)
        assert len(found) == 1, (tag, attrs, len(found))
        return found[0]

    @property
    def html(self) -> Node:
        return self.one("html")


class Node:
    def __init__(self, tag: str, attrs: dict[str, str]):
        self.tag, self.attrs, self.children, self.parts = tag, attrs, [], []

    def walk(self):
        yield self
        for c in self.children:
            yield from c.walk()

    @property
    def text(self) -> str:
        return "".join(p if isinstance(p, str) else p.text for p in self.parts)


VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


def _parse(dom: str) -> Node:
    root = Node("#document", {})

    class Builder(HTMLParser):
        stack = [root]

        def handle_starttag(self, tag, attrs):
            node = Node(tag, {k: v or "" for k, v in attrs})
            self.stack[-1].children.append(node)
            self.stack[-1].parts.append(node)
            if tag not in VOID:
                self.stack.append(node)

        def handle_endtag(self, tag):
            for i in range(len(self.stack) - 1, 0, -1):
                if self.stack[i].tag == tag:
                    del self.stack[i:]
                    break

        def handle_data(self, data):
            self.stack[-1].parts.append(data)

    Builder(convert_charrefs=True).feed(dom)
    return root


def browse(chromium: str, report: Path, tmp: Path, fragment: str = "", screenshot: Path | None = None) -> Page:
    """Open `report` (file:// URL, optional #fragment) in a fresh headless Chromium profile; the DOM after its scripts."""
    profile = tmp / f"profile-{time.monotonic_ns()}"
    url = report.resolve().as_uri() + (f"#{fragment}" if fragment else "")
    args = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=10000"]
    if screenshot:
        args += [f"--screenshot={screenshot}", "--window-size=1280,1600"]
    else:
        args += ["--dump-dom"]
    done = subprocess.run([*args, url], capture_output=True, text=True, timeout=120)
    shutil.rmtree(profile, ignore_errors=True)
    assert done.returncode == 0, done.stderr[-2000:]
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    return Page(done.stdout, console)


def assert_clean(page: Page) -> None:
    """No script error, failed load or policy violation on the page, and nothing on the console."""
    assert page.html.attrs.get("data-errors") == "0", page.one(id="report-errors").text
    assert page.console == []
    assert page.html.attrs.get("data-render-ms"), "the gallery script did not finish"


def cards(page: Page, kind: str = "card") -> list[Node]:
    return page.all("article", class_=kind)


# ---------------------------------------------------------------- synthetic builds, written with the project's writers

LABELS = ("happy", "calm", "sad", "angry", "worried", "surprised", "relaxed", "excited", "nervous", "content")


def _jpeg(rng: random.Random, side: int = 224) -> bytes:
    image = Image.new("RGB", (side, side), (rng.randrange(256), rng.randrange(256), rng.randrange(256)))
    for _ in range(6):
        x, y = rng.randrange(side - 20), rng.randrange(side - 20)
        image.paste((rng.randrange(256), rng.randrange(256), rng.randrange(256)), (x, y, x + 20, y + 20))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=80)
    return out.getvalue()


def _flac(seconds: float = 0.5) -> bytes:
    import numpy as np
    import soundfile

    t = np.arange(int(16000 * seconds)) / 16000
    out = io.BytesIO()
    soundfile.write(out, (0.2 * np.sin(2 * np.pi * 220 * t)).astype("float32"), 16000, format="FLAC")
    return out.getvalue()


def _record(i: int, rng: random.Random, crops: int, wheel: bool) -> dict[str, Any]:
    key = f"clip_{i:05d}"
    split = "train" if i % 10 < 8 else "validation" if i % 10 == 8 else "test"
    lang = "zh" if i % 7 == 0 else "en"
    labels = rng.sample(LABELS, 2)
    scores = [rng.random() for _ in EXPRESSION_CLASSES]
    expression = {c: s / sum(scores) for c, s in zip(EXPRESSION_CLASSES, scores, strict=True)}
    has_audio = i % 13 != 5

    def explained(text: str | None, source: str | None = "rules:1", reason: str | None = None) -> dict[str, Any]:
        return {"text": text, "language": "en" if text else None, "source": source if text else None, "reason": reason}

    clue = f"In the {{}} of clip {i}, the person keeps a calm expression at first, then smiles and speaks faster; the voice rises towards the end. "
    return {
        "key": key,
        "split": split,
        "source_path": f"videos/{key}.mp4",
        "media": {"duration_s": round(rng.uniform(1, 20), 2), "has_audio": has_audio, "width": 640, "height": 480, "frames_sampled": 10},
        "transcript": {
            "model": "tiny.en",
            "language": lang if has_audio else None,
            "text": (f"这是第{i}个片段。" if lang == "zh" else f"This is clip number {i}, and I am telling you about my day at work.") if has_audio else None,
            "reason": None if has_audio else "no audio track",
        },
        "faces": {
            "reason": None if crops else "no face in 10 sampled frames",
            "frames_with_face": crops,
            "crop_size": 224,
            "crops": [
                {"index": c, "time_s": c * 0.5, "box": {"x": 10, "y": 10, "w": 100 + i % 50, "h": 100 + i % 50}, "confidence": 0.9, "expression": expression}
                for c in range(crops)
            ],
            "expression_mean": expression if crops else None,
        },
        "acoustics": {
            "reason": None if has_audio else "no audio track",
            "prosody": {"f0_mean_semitone": rng.gauss(30, 5), "loudness_mean": rng.uniform(0.1, 1.5)} if has_audio else None,
        },
        "explanation": {
            "visual_clue": explained(clue.format("video") * 2, "human" if i % 3 == 0 else "rules:1"),
            "acoustic_clue": explained(clue.format("audio"), "rules:1") if has_audio else explained(None, reason="rules: no audio"),
            "lexical_clue": explained(clue.format("text")),
            "multimodal_explanation": explained(clue.format("clip") * 3),
            "open_vocab_labels": {
                "labels": labels,
                "language": "en",
                "normalised": labels if wheel else None,
                "wheel": [{"wheel": "wheel1", "level1": sorted({lb[:3] for lb in labels}), "level2": labels}] if wheel else None,
                "source": "rules:1",
            },
            "discrete_label": {"label": labels[0], "language": "en", "source": "human"},
            "valence": {"value": round(rng.uniform(-5, 5), 1), "source": "human"},
        },
        "provenance": {"tool": "emer-builder test", "schema_version": SCHEMA.version},
    }


def synthetic_build(
    out: Path,
    records: int,
    failures: list[tuple[str, str, Exception]] = (),
    crops: int = 5,
    wheel: bool = False,
    hostile: bool = False,
    seed: int = 1,
    truncated: tuple[int, ...] = (),
) -> dict[str, Any]:
    """A build folder as `emer build` lays it out (Parquet + tar shards of 1000, failures.parquet, manifest.json,
    build.json with stage times), from synthetic records (those numbered in `truncated` cut short); returns the manifest."""
    rng = random.Random(seed)
    faces = [_jpeg(rng) for _ in range(16)]
    flac = _flac()
    rows = [_record(i, rng, 0 if i % 11 == 3 else crops, wheel) for i in range(records)]
    for i in truncated:  # what decode writes for a partial download (tests/hostile.py: cut_at_75pc.mp4)
        media = rows[i]["media"]
        media.update(truncated=True, declared_duration_s=media["duration_s"] * 2, decoded_duration_s=media["duration_s"], decoded_fraction=0.5)
    if hostile:
        rows[1]["key"], rows[1]["source_path"] = "样本_中文", "videos/样本 中文.mp4"  # keys keep Chinese characters: file names and links too
        rows[0]["transcript"]["text"] = HOSTILE
        rows[0]["explanation"]["lexical_clue"]["text"] = HOSTILE
        rows[0]["explanation"]["open_vocab_labels"]["labels"] = ["<b>bold</b>", "happy"]
    (out / "data").mkdir(parents=True)
    (out / "media").mkdir()
    schema = SCHEMA.arrow_schema()
    for split in ("train", "validation", "test"):
        mine = sorted((r for r in rows if r["split"] == split), key=lambda r: r["key"])
        chunks = [mine[i : i + 1000] for i in range(0, len(mine), 1000)]
        for n, chunk in enumerate(chunks):
            name = f"{split}-{n:05d}-of-{len(chunks):05d}"
            conformed = pa.Table.from_pylist(chunk, schema=schema).to_pylist()
            write_parquet(out / "data" / f"{name}.parquet", conformed, schema, 100)
            samples = []
            for j, r in enumerate(conformed):
                media = {f"face_{c:03d}.jpg": faces[(j + c) % len(faces)] for c in range(len(r["faces"]["crops"]))}
                if r["media"]["has_audio"]:
                    media["flac"] = flac
                samples.append((r, media))
            write_tar(out / "media" / f"{name}.tar", samples)
    fail_rows = [failure_row(key, f"videos/{key}.mp4", stage, error) for key, stage, error in failures]
    pq.write_table(pa.Table.from_pylist(fail_rows, schema=FAILURE_SCHEMA), out / "failures.parquet", compression="zstd")
    prov = {"tool": "emer-builder test", "schema_version": SCHEMA.version, "whisper_model": "tiny.en", "face_detector": "opencv", "emotion_wheel": None}
    manifest = write_manifest(out, Path("/videos"), BuildConfig(), SCHEMA, prov, inputs=records + len(fail_rows), skipped=["notes.txt"])
    timings = {"wall_s": 93.5, "stage_seconds": {"decode": {"cpu_s": 10.0, "wall_s": 12.0}, "faces": {"cpu_s": 30.0, "wall_s": 31.0}, "transcript": {"cpu_s": 60.0, "wall_s": 50.0}}}
    (out / "build.json").write_text(json.dumps(timings))
    return manifest


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


FAILURES = [
    ("broken_a", "decode", ClipError("no video stream in videos/broken_a.mp4")),
    ("broken_b", "decode", ClipError("no video stream in videos/broken_b.mp4")),
    ("weird_c", "faces", RuntimeError("detector crashed")),
]


@pytest.fixture(scope="module")
def small_build(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """40 records (more than one gallery page), 3 failures at two stages, normalised labels, one hostile record."""
    out = tmp_path_factory.mktemp("small") / "out"
    manifest = synthetic_build(out, 40, FAILURES, wheel=True, hostile=True)
    write_report(out)
    return out, manifest


def test_truncated_records_are_counted_in_the_manifest_summary_and_report(tmp_path: Path):
    """Records flagged media.truncated are kept; the user sees how many and which: manifest.json, the build
    summary and a section of report.html, not only a flag inside each record."""
    from emer_builder.pipelines.build import summarise

    out = tmp_path / "out"
    manifest = synthetic_build(out, 12, truncated=(2, 7), crops=0)
    assert manifest["counts"]["truncated"] == 2
    durations = {r["key"]: r["media"]["duration_s"] for p in sorted((out / "data").glob("*.parquet")) for r in pq.read_table(p).to_pylist()}
    assert [(t["key"], t["source_path"], t["decoded_fraction"]) for t in manifest["truncated"]] == [
        ("clip_00002", "videos/clip_00002.mp4", 0.5),
        ("clip_00007", "videos/clip_00007.mp4", 0.5),
    ]
    for t in manifest["truncated"]:
        assert t["decoded_duration_s"] == pytest.approx(durations[t["key"]]) and t["declared_duration_s"] == pytest.approx(2 * durations[t["key"]])

    text = summarise(str(out), 12, [], 1.0, manifest, {}, {}).text()
    line = next(x for x in text.splitlines() if x.startswith("  truncated:"))
    assert line.startswith("  truncated: 2 records decoded only in part") and "videos/clip_00002.mp4 (50% of " in line and "videos/clip_00007.mp4" in line

    html = write_report(out, tmp_path / "report.html").read_text()
    section = html[html.index('<h3 id="truncated">') :]
    section = section[: section.index("</table>")]
    assert re.findall(r'<tr data-truncated="([^"]+)">', section) == ["clip_00002", "clip_00007"]
    assert "videos/clip_00007.mp4" in section and "50%" in section and "2 files were cut short" in section
    assert re.search(r'data-stat="truncated">2<', html)


def test_a_build_without_truncated_records_says_so(small_build):
    out, manifest = small_build
    html = (out / "report.html").read_text()
    assert manifest["counts"]["truncated"] == 0 and manifest["truncated"] == []
    assert '<p data-stat="truncated-none">None: every record decoded to its declared length.</p>' in html
    from emer_builder.pipelines.build import summarise

    assert not [x for x in summarise(str(out), 43, [], 1.0, manifest, {}, {}).text().splitlines() if "truncated" in x]


# ---------------------------------------------------------------- the demo build


def test_demo_report_in_the_browser(demo_build, chromium: str, tmp_path: Path):
    out, _ = demo_build
    manifest = json.loads((out / "manifest.json").read_text())
    report = write_report(out, tmp_path / "report.html")
    assert report == tmp_path / "report.html"
    page = browse(chromium, report, tmp_path)
    assert_clean(page)

    # the overview's counts are the manifest's
    stat = {n.attrs["data-stat"]: n.text for n in page.all(data_stat=None)}
    counts = manifest["counts"]
    assert (stat["inputs"], stat["records"], stat["failures"], stat["skipped"]) == tuple(str(counts[k]) for k in ("inputs", "records", "failures", "skipped_files"))
    assert stat["faces"] == str(manifest["stats"]["clips_with_faces"])
    assert stat["audio-hours"] == f"{manifest['stats']['audio_seconds'] / 3600:.3f}"
    assert stat["config-hash"] == manifest["config_hash"]
    assert {n.attrs["data-split-count"]: int(n.text) for n in page.all(data_split_count=None)} == manifest["splits"]
    for name, sources in manifest["stats"]["explanation_sources"].items():
        assert name in page.one(id="overview").text and all(s in page.one(id="overview").text for s in sources)

    # one card per record, sorted by key, each with its crops loaded and its audio beside the report
    rows = {r["key"]: r for p in sorted((out / "data").glob("*.parquet")) for r in pq.read_table(p).to_pylist()}
    shown = cards(page, "record")
    assert [c.attrs["data-key"] for c in shown] == sorted(rows) == sorted(k for ks in manifest["keys"].values() for k in ks)
    for card in shown:
        row = rows[card.attrs["data-key"]]
        strips = [n for n in card.walk() if n.tag == "img"]
        if row["faces"]["crops"]:
            assert len(strips) == 1 and strips[0].attrs.get("data-loaded") == "1", card.attrs
            with Image.open(tmp_path / strips[0].attrs["src"]) as im:
                assert im.size == (72 * min(8, len(row["faces"]["crops"])), 72)
        else:
            assert strips == [] and "no face crops" in card.text
        audio = [n for n in card.walk() if n.tag == "audio"]
        assert len(audio) == 1 and (tmp_path / audio[0].attrs["src"]).is_file()
        assert row["transcript"]["text"] in card.text
        for clue in ("visual_clue", "acoustic_clue", "lexical_clue", "multimodal_explanation"):
            value = row["explanation"][clue]
            assert value["text"] in card.text and value["source"] in card.text
        assert all(label in card.text for label in row["explanation"]["open_vocab_labels"]["labels"])
    assert len(page.all("img", class_="strip", data_loaded="1")) == manifest["stats"]["clips_with_faces"]

    # the plots are files beside the report, drawn by matplotlib
    plots = page.all("img", data_plot=None)
    assert {p.attrs["data-plot"] for p in plots} >= {"splits", "durations", "faces", "expressions", "prosody", "labels"}
    for p in plots:
        svg = (tmp_path / p.attrs["src"]).read_text()
        assert svg.startswith("<?xml") and "Matplotlib" in svg

    # filtering by split changes the card count
    for split, n in manifest["splits"].items():
        filtered = browse(chromium, report, tmp_path, f"split={split}")
        assert_clean(filtered)
        assert [c.attrs["data-split"] for c in cards(filtered, "record")] == [split] * n
    assert min(manifest["splits"].values()) < counts["records"]

    shot = tmp_path / "screenshot.png"
    browse(chromium, report, tmp_path, screenshot=shot)
    with Image.open(shot) as im:
        assert im.size == (1280, 1600)
        assert len(set(im.convert("L").resize((64, 80)).getdata())) > 20  # drawn, not blank


def test_the_report_never_reaches_the_network(small_build, tmp_path: Path):
    """Every src and href is relative and resolves to a file beside the report; the page's policy allows nothing else."""
    out, _ = small_build
    report = write_report(out, tmp_path / "r.html")
    html = report.read_text()
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', html).group(1)
    assert "default-src 'none'" in csp and "unsafe-inline" not in csp and "http" not in csp
    blob = json.loads(re.search(r'<script type="application/json" id="report-data">(.*?)</script>', html, re.S).group(1))
    links = re.findall(r'(?:src|href)="([^"#][^"]*)"', html) + [it[k] for it in blob["items"] for k in ("strip", "audio") if it.get(k)]
    assert links
    for link in links:
        assert "://" not in link and not link.startswith("/")
        assert (tmp_path / unquote(link)).is_file(), link
    assert not re.search(r"https?://(?!www\.w3\.org/)", html)


# ---------------------------------------------------------------- synthetic builds


@pytest.mark.slow
def test_failures_paging_and_filters_in_the_browser(small_build, chromium: str, tmp_path: Path):
    out, manifest = small_build
    report = out / "report.html"
    page = browse(chromium, report, tmp_path)
    assert_clean(page)
    status = page.one(id="gallery-status")
    total = manifest["counts"]["records"] + manifest["counts"]["failures"]
    assert status.attrs["data-matching"] == str(total) and len(cards(page)) == 24  # first page, sorted by key
    keys = sorted([*(k for ks in manifest["keys"].values() for k in ks), *(f[0] for f in FAILURES)])
    assert [c.attrs["data-key"] for c in cards(page)] == keys[:24]
    last = browse(chromium, report, tmp_path, "page=2")
    assert_clean(last)
    assert [c.attrs["data-key"] for c in cards(last)] == keys[24:] and keys[-1] == "样本_中文"
    with_crops = [c for c in cards(last, "record") if "no face crops" not in c.text]
    assert len(with_crops) > 10 and all([n.attrs.get("data-loaded") for n in c.walk() if n.tag == "img"] == ["1"] for c in with_crops)

    # failures: by stage and by reason (with their paths) in the overview, and as cards with stage and message
    assert {n.attrs["data-failure-stage"]: int(n.text) for n in page.all(data_failure_stage=None)} == {"decode": 2, "faces": 1}
    overview = page.one(id="overview").text
    assert "videos/broken_a.mp4" in overview and "ClipError" in overview and "RuntimeError" in overview
    failed = browse(chromium, report, tmp_path, "status=failures")
    assert [c.attrs["data-key"] for c in cards(failed)] == ["broken_a", "broken_b", "weird_c"]
    assert "failed at faces" in cards(failed)[2].text and "RuntimeError: detector crashed" in cards(failed)[2].text
    at_decode = browse(chromium, report, tmp_path, "status=failed:decode")
    assert [c.attrs["data-key"] for c in cards(at_decode)] == ["broken_a", "broken_b"]

    rows = [r for p in sorted((out / "data").glob("*.parquet")) for r in pq.read_table(p).to_pylist()]
    expect = {
        "split=validation": [r for r in rows if r["split"] == "validation"],
        "label=happy": [r for r in rows if "happy" in r["explanation"]["open_vocab_labels"]["labels"]],
        "lang=zh": [r for r in rows if r["transcript"]["language"] == "zh"],
        "source=human&status=records": [r for r in rows if any((v or {}).get("source") == "human" for v in r["explanation"].values() if isinstance(v, dict))],
        "status=incomplete&split=train": [r for r in rows if r["split"] == "train" and (r["faces"]["reason"] or r["transcript"]["reason"])],
    }
    for fragment, want in expect.items():
        filtered = browse(chromium, report, tmp_path, fragment)
        assert_clean(filtered)
        assert 0 < len(want) < total
        assert filtered.one(id="gallery-status").attrs["data-matching"] == str(len(want)), fragment
        assert [c.attrs["data-key"] for c in cards(filtered)] == sorted(r["key"] for r in want)[:24], fragment

    # the stage times come from build.json
    assert page.one(data_stage_share="transcript").text == "60%"
    assert page.one(data_stat="wall-time").text == "93.5 s"


def test_hostile_text_stays_text(small_build, chromium: str, tmp_path: Path):
    out, _ = small_build
    page = browse(chromium, out / "report.html", tmp_path, "q=clip_00000")
    assert_clean(page)
    assert page.one("title").text.startswith("EMER build report") and "pwned" not in page.one("title").text
    assert page.all(id="injected") == []
    card = cards(page, "record")[0]
    assert card.attrs["data-key"] == "clip_00000"
    assert card.text.count(HOSTILE) == 2 and "<b>bold</b>" in card.text
    assert [n.tag for n in card.walk() if n.tag in ("script", "b")] == []


@pytest.mark.slow
def test_report_is_byte_identical_for_the_same_build(small_build, tmp_path: Path):
    out, _ = small_build
    copy = tmp_path / "copy"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("report*"))
    write_report(copy)
    write_report(copy, tmp_path / "elsewhere" / "report.html")
    first = tree(out / "report") | {"report.html": (out / "report.html").read_bytes()}
    assert tree(copy / "report") | {"report.html": (copy / "report.html").read_bytes()} == first
    assert tree(tmp_path / "elsewhere") == {**{f"report/{k}": v for k, v in tree(out / "report").items()}, "report.html": first["report.html"]}
    plots = {k for k in first if k.startswith("plots/")}
    assert plots == {f"plots/{n}.svg" for n in ("splits", "durations", "faces", "expressions", "prosody", "labels", "wheel")}


def test_a_partial_download_is_reported_as_such(small_build, tmp_path: Path):
    """`emer download --split train` (Parquet of one split, no failures) and `--config media` (tar shards only)."""
    out, manifest = small_build
    tables = tmp_path / "tables"
    (tables / "data").mkdir(parents=True)
    shutil.copy(out / "manifest.json", tables)
    for p in (out / "data").glob("train-*.parquet"):
        shutil.copy(p, tables / "data")
    html = write_report(tables).read_text()
    blob = _blob(html)
    assert {it["split"] for it in blob["items"]} == {"train"} and all(it["strip"] is None and it["audio"] is None for it in blob["items"])
    assert f"split validation: 0 of {manifest['splits']['validation']} records present" in html
    assert "no tar shards here" in html and "failures are counted but not listed" in html

    media = tmp_path / "media-only"
    shutil.copytree(out / "media", media / "media")
    shutil.copy(out / "manifest.json", media)
    html = write_report(media, audio=False).read_text()
    blob = _blob(html)
    assert sorted(it["key"] for it in blob["items"]) == sorted(k for ks in manifest["keys"].values() for k in ks)
    assert "records read from the tar shards" in html
    assert all(it["audio"] is None for it in blob["items"]) and not (media / "report" / "audio").exists()
    assert sum(it["strip"] is not None for it in blob["items"]) == manifest["stats"]["clips_with_faces"]


def _blob(html: str) -> dict[str, Any]:
    return json.loads(re.search(r'<script type="application/json" id="report-data">(.*?)</script>', html, re.S).group(1))


def test_a_hostile_shard_is_refused(tmp_path: Path):
    out = tmp_path / "out"
    synthetic_build(out, 3, crops=1)
    shard = next((out / "media").glob("train-*.tar"))
    with tarfile.open(shard, "a") as tar:
        info = tarfile.TarInfo("../../escape.jpg")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    with pytest.raises(UserError, match="refusing to read .*escape"):
        write_report(out)
    assert not (out / "report.html").exists() and not (out / "report").exists() and not (tmp_path / "escape.jpg").exists()
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []


def test_folders_it_does_not_own_are_never_replaced(tmp_path: Path):
    out = tmp_path / "out"
    synthetic_build(out, 2)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "mine.txt").write_text("keep")
    with pytest.raises(UserError, match="was not written by `emer report`"):
        write_report(out, tmp_path / "notes.html")
    assert (tmp_path / "notes" / "mine.txt").read_text() == "keep"
    for bad in (out / "data" / "x.html", out / "media" / "x.html"):
        with pytest.raises(UserError, match="refusing to write the report inside"):
            write_report(out, bad)
    with pytest.raises(UserError, match="ending in .html"):
        write_report(out, tmp_path / "report.pdf")
    with pytest.raises(UserError, match="no manifest.json"):
        write_report(tmp_path / "notes")
    write_report(out)
    write_report(out)  # its own folder is replaced
    assert (out / "report" / "README.txt").is_file()


@pytest.mark.slow
def test_cli_report_and_the_light_install(small_build, tmp_path: Path):
    """`emer report OUT --to FILE` in a fresh interpreter, which must not import Beam or any model package."""
    out, _ = small_build
    code = (
        "import sys; from emer_builder.cli.main import main; rc = main(['report', sys.argv[1], '--to', sys.argv[2]]);"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'apache_beam', 'cv2', 'faster_whisper', 'deepface', 'opensmile', 'ffmpeg', 'tensorflow'});"
        "print(rc, heavy)"
    )
    to = tmp_path / "copy" / "report.html"
    done = subprocess.run([sys.executable, "-c", code, str(out), str(to)], capture_output=True, text=True, timeout=300)
    assert done.stdout.strip().splitlines()[-1] == "0 []", done.stderr[-2000:]
    assert done.stdout.splitlines()[0] == str(to)
    assert to.read_bytes() == (out / "report.html").read_bytes() and tree(to.parent / "report") == tree(out / "report")
    bad = subprocess.run([sys.executable, "-m", "emer_builder.cli.main", "report", str(tmp_path / "nowhere")], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "build folder not found" in bad.stderr


@pytest.mark.slow  # about 25 s: a benchmark-sized build
def test_a_10000_record_report_opens_in_under_2_s(chromium: str, tmp_path: Path):
    """The page's own clock: navigation start to the first page of cards, and to the load event (crops loaded).
    EMER_REPORT_OPEN_TIME=1 gives every record 16 crops, as real builds have (slower to write, same page)."""
    out = tmp_path / "big"
    started = time.monotonic()
    synthetic_build(out, 10_000, FAILURES, crops=16 if os.environ.get("EMER_REPORT_OPEN_TIME") else 2, wheel=True)
    built = time.monotonic()
    report = write_report(out)
    written = time.monotonic()
    page = browse(chromium, report, tmp_path)
    assert_clean(page)
    render_ms, load_ms = int(page.html.attrs["data-render-ms"]), int(page.html.attrs["data-load-ms"])
    size = report.stat().st_size
    print(f"\n10,000 records: build {built - started:.0f} s, write_report {written - built:.0f} s, report.html {size / 1e6:.1f} MB, "
          f"report/ {sum(p.stat().st_size for p in (out / 'report').rglob('*') if p.is_file()) / 1e6:.0f} MB; first page rendered at {render_ms} ms, load event at {load_ms} ms")
    # the gallery samples a split above GALLERY_PER_SPLIT (1000): train's 8000 records show 1000, validation and test all 1000
    assert len(cards(page)) == 24 and page.one(id="gallery-status").attrs["data-matching"] == "3003"
    assert "the gallery shows 1000 of its 8000 records" in report.read_text()
    assert render_ms < 2000 and load_ms < 2000
