"""What the build writes for humans and for the Hub (report.html and its plots, README.md, manifest.json) when
the text in it comes from hostile or unusual inputs: labels that matplotlib would read as mathtext or that hold
control characters, a downloaded release's manifest edited to add markup, damaged tables, folder names that are
not UTF-8, config values that would end a Markdown code span. Each gives a report (or one UserError line), never
a traceback, markup, or a lost build."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from emer_builder.core.config import BuildConfig
from emer_builder.core.errors import ClipError, UserError
from emer_builder.report import write_report
from emer_builder.schemas import SCHEMA
from emer_builder.transforms.annotations import load_annotations

from tests.test_report import CHROMIUM_FLAGS, synthetic_build

pytestmark = pytest.mark.slow  # synthetic builds, one headless Chromium

EVIL_A = '<a id="pwn" href="https://evil.example/">click</a>'
HOSTILE = "</script><script>document.title='pwned'</script><img src=x id=injected onerror=\"alert(1)\"></style><!--"
BLOB = re.compile(r'<script type="application/json" id="report-data">(.*?)</script>', re.S)


def build(tmp: Path, records: int = 3, failures=(), mutate: Callable[[dict[str, Any]], None] | None = None) -> Path:
    """A synthetic build (the project's own writers), its Parquet rows then changed by `mutate`."""
    out = tmp / "out"
    synthetic_build(out, records, failures)
    if mutate is not None:
        for p in sorted((out / "data").glob("*.parquet")):
            t = pq.read_table(p)
            rows = t.to_pylist()
            for r in rows:
                mutate(r)
            pq.write_table(pa.Table.from_pylist(rows, schema=t.schema), p)
    return out


def edit_manifest(out: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    m = json.loads((out / "manifest.json").read_text())
    edit(m)
    (out / "manifest.json").write_text(json.dumps(m))


class Elements(HTMLParser):
    """Every start tag of a page as the HTML tokenizer sees it (inside <script> nothing is a tag)."""

    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, {k: v or "" for k, v in attrs}))


def labels_from_annotation(tmp: Path, cell_json: str) -> list[str]:
    """Open-vocabulary labels as the build reads them from a user's JSON-lines annotation table."""
    path = tmp / "openset.jsonl"
    path.write_text(f'{{"name": "clip_00000", "openset": {cell_json}}}\n', encoding="utf-8")
    return load_annotations([path]).by_name["clip_00000"]["open_vocab_labels"]["en"]


# ------------------------------------------------------------------ labels reach matplotlib as mathtext


@pytest.mark.parametrize("label", ["$$", "$_$", r"$\foo$"])
def test_an_open_vocab_label_with_dollars_does_not_crash_the_report(tmp_path: Path, label: str):
    """`$$` (or the money-eyes emoticon `$_$`) as a label: matplotlib parses tick labels as mathtext and
    raises ValueError in savefig, so write_report (and with it the end of every `emer build`) fails."""
    labels = labels_from_annotation(tmp_path, json.dumps([label, "happy"]))
    assert labels == [label, "happy"]  # the annotation table keeps it as given
    out = build(tmp_path, mutate=lambda r: r["explanation"]["open_vocab_labels"].__setitem__("labels", labels))
    write_report(out)  # ValueError: ParseFatalException / ParseException from matplotlib.mathtext


def test_a_control_character_in_a_label_keeps_the_plot_svg_well_formed(tmp_path: Path):
    """A label holding U+000B (a vertical tab, as text pasted from Word carries): matplotlib writes it raw into
    the SVG, which is then not well-formed XML, so the browser shows a broken image for the labels plot."""
    labels = labels_from_annotation(tmp_path, json.dumps(["tense\u000bangry", "happy"]))
    out = build(tmp_path, mutate=lambda r: r["explanation"]["open_vocab_labels"].__setitem__("labels", labels))
    write_report(out)
    ET.parse(out / "report" / "plots" / "labels.svg")  # xml.etree.ElementTree.ParseError: not well-formed (invalid token)


# ------------------------------------------------------------------ a release's manifest reaches the page unescaped

MANIFEST_INJECTIONS = {
    "shards": lambda m: m["shards"].__setitem__("train", EVIL_A),
    "failures_by_stage": lambda m: m.__setitem__("failures_by_stage", {"decode": EVIL_A}),
    "annotations.files.rows": lambda m: m.__setitem__(
        "annotations", {"files": [{"path": "a.csv", "format": "csv", "rows": EVIL_A}], "names_without_video": [], "videos_without_annotation": []}
    ),
    "stats.explanation_sources": lambda m: m["stats"].__setitem__("explanation_sources", {"visual_clue": {"human": EVIL_A}}),
}


@pytest.mark.parametrize("where", sorted(MANIFEST_INJECTIONS))
def test_a_downloaded_release_manifest_cannot_add_markup_to_the_report(tmp_path: Path, where: str):
    """publish -> someone edits the published manifest.json -> `emer download` accepts it (it checks files,
    splits and keys only) -> `emer report` on the download writes those values into report.html unescaped."""
    from emer_builder.core.config import BuildConfig
    from emer_builder.release.card import write_card
    from emer_builder.release.download import download
    from emer_builder.release.publish import publish

    out = tmp_path / "out"
    manifest = synthetic_build(out, 3, [])
    write_card(out, manifest, SCHEMA, BuildConfig())
    store = tmp_path / "store"
    publish(out, str(store), "1.0.0")
    published = store / "v1.0.0" / "manifest.json"
    m = json.loads(published.read_text())
    MANIFEST_INJECTIONS[where](m)
    published.write_text(json.dumps(m))
    download(str(store), tmp_path / "dl")  # accepted
    html = write_report(tmp_path / "dl").read_text()
    injected = [attrs for tag, attrs in Elements(html).tags if attrs.get("id") == "pwn"]
    assert injected == [], f"{where}: an <a href=https://evil.example> became part of the page"


def test_an_injected_meta_refresh_cannot_navigate_away(tmp_path: Path):
    """What such markup can do under the page's CSP: scripts are blocked, but <meta http-equiv=refresh> in the
    body still navigates the reader to a page of the attacker's choosing (here a local file, offline)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no Chromium")
    landing = tmp_path / "landing.html"
    landing.write_text("<!doctype html><title>LANDED</title><p id=landed>attacker page</p>")
    out = build(tmp_path)
    edit_manifest(out, lambda m: m["shards"].__setitem__("train", f'<meta http-equiv="refresh" content="0;url={landing.as_uri()}">'))
    report = write_report(out)
    profile = tmp_path / "profile"
    done = subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=5000", "--dump-dom", report.resolve().as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert 'id="landed"' not in done.stdout, "the report navigated to the page the manifest named"


# ------------------------------------------------------------------ hostile/damaged release content -> traceback, not a one-line error

BAD_MANIFESTS = {
    "splits value not a number": lambda m: m["splits"].__setitem__("train", "3"),
    "names_without_video not strings": lambda m: m.__setitem__(
        "annotations", {"files": [{"path": "a.csv", "format": "csv", "rows": 1}], "names_without_video": [1, 2], "videos_without_annotation": []}
    ),
    "stats.audio_seconds not a number": lambda m: m["stats"].__setitem__("audio_seconds", "12"),
}


@pytest.mark.parametrize("what", sorted(BAD_MANIFESTS))
def test_a_malformed_manifest_gives_a_user_error_not_a_traceback(tmp_path: Path, what: str):
    out = build(tmp_path)
    edit_manifest(out, BAD_MANIFESTS[what])
    try:
        write_report(out)
    except UserError:
        pass  # a one-line refusal is fine; a TypeError (traceback from `emer report`) is not


BAD_TABLES = {
    "duration NaN": lambda r: r["media"].__setitem__("duration_s", float("nan")),
    "pitch infinite": lambda r: r["acoustics"].__setitem__("prosody", {"f0_mean_semitone": float("inf"), "loudness_mean": 1.0}),
    "split named $$": lambda r: r.__setitem__("split", "$$"),
}


@pytest.mark.parametrize("what", sorted(BAD_TABLES))
def test_odd_values_in_a_release_table_give_a_report_or_a_user_error(tmp_path: Path, what: str):
    """A downloaded release's Parquet rows are not the builder's own: NaN/inf (np.histogram_bin_edges raises) or a
    split name matplotlib parses as mathtext end `emer report` with a traceback."""
    out = build(tmp_path, mutate=BAD_TABLES[what])
    try:
        write_report(out)
    except UserError:
        pass


def test_a_failure_row_with_nulls_gives_a_report_or_a_user_error(tmp_path: Path):
    out = build(tmp_path)
    row = {"key": None, "source_path": None, "stage": None, "error_class": None, "message": None}
    pq.write_table(pa.Table.from_pylist([row], schema=pa.schema([(c, pa.string()) for c in row])), out / "failures.parquet")
    try:
        write_report(out)
    except UserError:
        pass


# ------------------------------------------------------------------ text that is not UTF-8 reaches manifest.json


def test_an_input_folder_whose_name_is_not_utf8_gets_a_manifest(tmp_path: Path):
    """`emer build /data/caf\\xe9 OUT` (a Latin-1 folder name): pipelines/build.py keeps Path(videos_dir).absolute()
    with a surrogate, write_manifest dumps it with ensure_ascii=False and write_text fails: UnicodeEncodeError
    after the whole build ran. (File names below the folder get display_path; the folder itself does not.)"""
    from emer_builder.release.manifest import write_manifest

    out = build(tmp_path)
    prov = {"tool": "t", "schema_version": SCHEMA.version}
    write_manifest(out, Path(os.fsdecode(b"/data/caf\xe9")), BuildConfig(), SCHEMA, prov, inputs=3, skipped=[])
    json.loads((out / "manifest.json").read_text(encoding="utf-8"))


def test_a_lone_surrogate_in_a_jsonl_annotation_name_is_refused_or_written(tmp_path: Path):
    """JSON allows "\\udc80": a JSON-lines annotation table whose name holds one is read as is; the name matches no
    video, goes to the manifest's names_without_video, and write_manifest fails with UnicodeEncodeError."""
    from emer_builder.release.manifest import write_manifest

    table = tmp_path / "open.jsonl"
    table.write_text('{"name": "clip\\udc80x", "openset": ["happy"]}\n', encoding="utf-8")
    try:
        ann = load_annotations([table])
    except UserError:
        return  # refusing the table with one line would be fine
    out = build(tmp_path)
    names, _ = ann.unmatched({"clip_00000"})
    prov = {"tool": "t", "schema_version": SCHEMA.version}
    annotations = {"files": ann.files, "names_without_video": names, "videos_without_annotation": []}
    write_manifest(out, Path("/videos"), BuildConfig(), SCHEMA, prov, inputs=3, skipped=[], annotations=annotations)


# ------------------------------------------------------------------ the one list of the report without a bound


def test_the_skipped_files_list_does_not_make_the_report_huge(tmp_path: Path):
    """An input folder with 200,000 extracted frames beside its videos: every other list of the overview is cut
    (truncated 100, names 20, paths 10); skipped_files is written whole: a 7 MB report.html."""
    out = build(tmp_path)
    edit_manifest(out, lambda m: m.__setitem__("skipped_files", [f"frames/clip_{i // 1000:05d}/frame_{i % 1000:06d}.jpg" for i in range(200_000)]))
    size = write_report(out).stat().st_size
    assert size < 1_000_000, f"report.html is {size} bytes"


# ------------------------------------------------------------------ config-derived text in the card's Markdown


def test_a_model_name_cannot_add_markdown_links_to_the_card(tmp_path: Path):
    """manifest["models"] values (config: transcript.model is a free string, a folder path or hub id) go into
    the card inside single backticks: a backtick and newlines end the code span and add links/images/headings."""
    from emer_builder.release.card import write_card

    out = tmp_path / "out"
    manifest = synthetic_build(out, 3, [])
    manifest["models"]["whisper_model"] = "/models/x`\n\n[phish](https://evil.example/) ![t](https://evil.example/t.png)\n`"
    write_card(out, manifest, SCHEMA, BuildConfig())
    body = (out / "README.md").read_text().split("## How it was built", 1)[1].split("## Fields", 1)[0]
    assert "\n[phish](https://evil.example/)" not in body


# ------------------------------------------------------------------ what was already right


def test_fine_record_and_failure_text_stays_text(tmp_path: Path):
    """Transcripts, clues, labels, subtitles and failure messages with markup, `</script>`, `</style>`, `<!--`,
    U+2028 and bidi controls: the overview escapes them, the blob cannot end early and parses back exactly."""
    weird = HOSTILE + "\u2028\u2029\u202e" + "javascript:alert(1)"

    def mutate(r: dict[str, Any]) -> None:
        r["transcript"]["text"] = weird
        r["explanation"]["lexical_clue"]["text"] = weird
        r["explanation"]["open_vocab_labels"]["labels"] = [weird, "happy"]
        r["explanation"]["discrete_label"]["label"] = weird
        r["source_path"] = weird

    out = build(tmp_path, failures=[("bad_one", "decode", ClipError(weird)), ("bad_two", weird, RuntimeError(weird))], mutate=mutate)
    html = write_report(out).read_text()
    tags = Elements(html).tags
    assert [t for t, _ in tags].count("script") == 3 and [t for t, _ in tags].count("style") == 1
    assert not [a for _, a in tags if a.get("id") == "injected" or any(k.startswith("on") for k in a)]
    blob = json.loads(BLOB.search(html).group(1))
    assert sum(it.get("transcript") == weird for it in blob["items"]) == 3
    assert sum(it.get("message") == weird for it in blob["items"]) == 1
    for _tag, attrs in tags:  # every reference stays beside the report
        for name in ("src", "href"):
            value = attrs.get(name)
            if value is not None:
                assert value.startswith("#") or (not re.match(r"[a-z]+:", value) and not value.startswith(("/", "..")) and ".." not in value.split("/")), value


def test_fine_card_front_matter_survives_hostile_license_and_languages(tmp_path: Path):
    from emer_builder.release.card import release_card
    from huggingface_hub import DatasetCard

    out = tmp_path / "out"
    manifest = synthetic_build(out, 3, [])
    manifest["languages"] = ["en", "x: y\n---\n!!python/object/apply:os.system ['id']"]
    releases = [{"version": "1.0.0", "date": "2024-01-01", "counts": {"train": 3}, "previous": None, "schema_version": "1", "tool": "t", "config_hash": "abc"}]
    card = release_card(manifest, releases, SCHEMA, target="org/name", hub_endpoint="https://huggingface.co", license="mit\n---\nfoo: !!python/name:os.system")
    data = DatasetCard(card).data.to_dict()
    assert data["license"] == "mit\n---\nfoo: !!python/name:os.system"
    assert data["language"] == manifest["languages"]
    assert "foo" not in data
