"""Hostile inputs: every kind that once crashed, hung, lied about itself or vanished.

Fast tests run the pure parts (matching, DecodeStage) on each hostile file without Beam; one slow
test builds the whole corpus and checks each input's outcome and the accounting invariant.
"""

from __future__ import annotations

import html
import io
import json
import re
import tarfile
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import soundfile
from emer_builder.transforms.clip import Clip, ClipError
from emer_builder.transforms.keys import match_videos
from emer_builder.transforms.stages.decode import DecodeStage

from tests.hostile import MAX_DURATION_S, Expect, HostileCorpus, make_hostile_corpus

SAFE_KEY = re.compile(r"[\w-]+")  # what download.py accepts: no dots, slashes, spaces or `..`
ADDRESS = re.compile(r"0x[0-9a-f]{8,}")  # a pointer in a message would make failures.parquet differ run to run


@pytest.fixture(scope="module")
def hostile(demo_videos: Path, tmp_path_factory: pytest.TempPathFactory) -> HostileCorpus:
    return make_hostile_corpus(demo_videos, tmp_path_factory.mktemp("hostile"))


def _media_problems(name: str, media: dict[str, Any], want: dict[str, Any]) -> list[str]:
    problems = []
    for field, value in want.items():
        got = media.get(field)
        ok = got == pytest.approx(value, abs=0.3) if isinstance(value, float) else got == value
        if not ok:
            problems.append(f"{name}: media.{field} is {got!r}, expected {value!r}")
    return problems


def _outcome_problems(name: str, expect: Expect, outcome: str, message: str | None) -> list[str]:
    if outcome != expect.outcome:
        return [f"{name}: became {outcome} ({message}), expected {expect.outcome} ({expect.message})"]
    if expect.message and expect.message not in (message or ""):
        return [f"{name}: message {message!r} lacks {expect.message!r}"]
    return []


@pytest.mark.slow
def test_corpus_covers_every_hostile_kind(hostile: HostileCorpus):
    assert hostile.kinds() == {
        "bad-input corpus",
        "file name",
        "two audio streams",
        "too long",
        "header too short",
        "header too long",
        "truncated",
        "truncated AVI",
        "symlinked folder",
        "symlink to ..",
        "symlink to /",
        "symlink to a folder outside",
        "symlink to a file outside",
        "still image",
        "html page",
        "audio with cover art",
        "fifo",
        "device",
        "single frame",
    }


@pytest.mark.slow
def test_matching_accounts_for_every_entry(hostile: HostileCorpus):
    inputs, collisions, skipped = match_videos(hostile.videos)
    found = [i.source_path for i in inputs] + [c.source_path for c in collisions]
    assert sorted(found) == sorted(hostile.expected)  # every input once, nothing vanished
    assert skipped == hostile.skipped
    keys = [i.key for i in inputs]
    assert len(keys) == len(set(keys))
    for i in inputs:
        assert SAFE_KEY.fullmatch(i.key) and len(i.key.encode()) <= 160, i.key
        i.source_path.encode("utf-8")  # valid UTF-8 text, whatever bytes the name holds
        want = hostile.expected[i.source_path]
        assert want.outcome != "match", i.source_path
        assert want.key in (None, i.key), (i.source_path, i.key)
        assert Path(i.path).exists() or Path(i.path).is_symlink()  # the real name still opens
    for c in collisions:
        want = hostile.expected[c.source_path]
        assert want.outcome == "match" and want.message in f"collides with {', '.join(c.others)}"


@pytest.mark.slow
@pytest.mark.timeout(120)  # a FIFO or /dev/zero must never make it hang
def test_decode_stage_on_each_hostile_file(hostile: HostileCorpus):
    stage = DecodeStage(max_duration_s=MAX_DURATION_S)
    stage.setup()
    inputs, _, _ = match_videos(hostile.videos)
    problems: list[str] = []
    for i in inputs:
        want = hostile.expected[i.source_path]
        clip = Clip(i.key, i.path, i.source_path)
        try:
            stage.process(clip)
        except ClipError as e:
            message = str(e)
            assert "\n" not in message and not ADDRESS.search(message), message
            problems += _outcome_problems(i.source_path, want, "decode", message)
            continue
        problems += _outcome_problems(i.source_path, want, "record", None)
        media = clip.fields["media"]
        assert set(media) == {f.name for f in DecodeStage.group.fields}
        problems += _media_problems(i.source_path, media, want.media)
        assert media["frames_sampled"] == len(clip.frames) >= 1
        if media["has_audio"]:
            assert len(clip.audio) / 16_000 <= media["decoded_duration_s"] + 0.05
    assert not problems, "\n".join(problems)


@pytest.fixture(scope="module")
def hostile_build(hostile: HostileCorpus, tmp_path_factory: pytest.TempPathFactory):
    from emer_builder.core.config import config_from_dict
    from emer_builder.pipelines.build import build

    config = config_from_dict({"transcript": {"model": "tiny.en"}, "decode": {"max_duration_s": MAX_DURATION_S}})
    out = tmp_path_factory.mktemp("hostile-out") / "out"
    summary = build(hostile.videos, out, config, workers=1, show_progress=False)
    return summary, out


def _flac_seconds(out: Path, key: str) -> float:
    for tar_path in sorted((out / "media").glob("*.tar")):
        with tarfile.open(tar_path) as tar:
            for member in tar.getmembers():
                if member.name == f"{key}.flac":
                    data, rate = soundfile.read(io.BytesIO(tar.extractfile(member).read()))
                    return len(data) / rate
    raise AssertionError(f"no {key}.flac in the shards")


@pytest.mark.slow
@pytest.mark.timeout(600)  # a build of this corpus takes under a minute; a hang (a FIFO opened) must fail, not wait
def test_hostile_build_accounts_for_every_input(hostile: HostileCorpus, hostile_build):
    summary, out = hostile_build
    records = [r for p in sorted((out / "data").glob("*.parquet")) for r in pq.read_table(p).to_pylist()]
    failures = pq.read_table(out / "failures.parquet").to_pylist()
    # The invariant: every input exactly once, as a record or as a failure row.
    assert len(records) + len(failures) == len(hostile.expected) == summary.inputs
    paths = [r["source_path"] for r in records] + [f["source_path"] for f in failures]
    assert sorted(paths) == sorted(hostile.expected)
    keys = [r["key"] for r in records] + [f["key"] for f in failures if f["stage"] != "match"]
    assert len(keys) == len(set(keys))  # each key once (colliding files share theirs, by definition)
    assert summary.skipped_files == hostile.skipped

    problems: list[str] = []
    for f in failures:
        assert f["error_class"] == "ClipError" and "Traceback" not in f["message"] and not ADDRESS.search(f["message"]), f
        problems += _outcome_problems(f["source_path"], hostile.expected[f["source_path"]], f["stage"], f["message"])
    for r in records:
        want = hostile.expected[r["source_path"]]
        problems += _outcome_problems(r["source_path"], want, "record", None)
        problems += _media_problems(r["source_path"], r["media"], want.media)
        assert SAFE_KEY.fullmatch(r["key"]) and want.key in (None, r["key"]), r["key"]
    assert not problems, "\n".join(problems)

    by_path = {r["source_path"]: r for r in records}
    dual = by_path["dual_audio.mkv"]
    # One track decoded (the default, 3.29 s of "he might even have been made amiable himself"), not both interleaved.
    assert _flac_seconds(out, dual["key"]) == pytest.approx(3.29, abs=0.15)  # AAC adds ~0.1 s of padding; both would be 6.4 s
    assert "amiable" in dual["transcript"]["text"].lower() and "disposed" not in dual["transcript"]["text"].lower()
    cut = by_path["cut_at_75pc.mp4"]["media"]
    assert cut["truncated"] and 0.5 <= cut["decoded_fraction"] < 0.9 and cut["duration_s"] == cut["decoded_duration_s"]
    lie = by_path["header_says_3600s.mkv"]["media"]
    assert lie["decoded_fraction"] < 0.01 and not lie["truncated"]
    assert by_path["caf\\xe9.mp4"]["key"] == "caf_xe9"

    # Records kept though cut short are counted and listed where the user looks, not only flagged inside them.
    cut_short = sorted(r["source_path"] for r in records if r["media"]["truncated"])
    assert "cut_at_75pc.mp4" in cut_short
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["truncated"] == len(cut_short) and sorted(t["source_path"] for t in manifest["truncated"]) == cut_short
    assert sorted(t["source_path"] for t in summary.truncated) == cut_short
    assert f"  truncated: {len(cut_short)} records decoded only in part" in summary.text()
    section = (out / "report.html").read_text().split('<h3 id="truncated">', 1)[1].split("</table>", 1)[0]
    assert sorted(html.unescape(p) for p in re.findall(r'<td class="paths">([^<]*)</td>', section)) == cut_short
    # Links that leave the input folder are named in the summary, with the setting that would follow them.
    assert (
        "  not followed: 4 symlinks leading outside the input folder (elsewhere/, outside_clip.mp4, rootlink/ ...); set follow_external_links" in summary.text()
    )
