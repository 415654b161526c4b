"""Bad input gets a clear error and loses nothing: each input is one record or one failure row."""

import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.media import make_bad_corpus

EMER = [sys.executable, "-m", "emer_builder.cli.main"]


@pytest.fixture(scope="module")
def bad_build(demo_videos: Path, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("bad")
    expected = make_bad_corpus(demo_videos, root / "videos")
    out = root / "out"
    proc = subprocess.run([*EMER, "build", str(root / "videos"), "--out", str(out), "--workers", "2", "--quiet"], capture_output=True, text=True)
    return expected, out, proc


def test_every_input_is_one_record_or_one_failure(bad_build):
    expected, out, proc = bad_build
    assert proc.returncode == 0, proc.stderr
    failures = pq.read_table(out / "failures.parquet").to_pylist()
    records = [r for p in (out / "data").glob("*.parquet") for r in pq.read_table(p).to_pylist()]
    assert len(records) + len(failures) == len(expected) == 11
    by_path = {f["source_path"]: f for f in failures}
    assert len(by_path) == len(failures)  # no input twice
    for name, (outcome, message) in expected.items():
        if outcome == "record":
            assert name not in by_path
            continue
        row = by_path[name]
        assert row["stage"] == outcome and message in row["message"], row
        assert row["error_class"] in ("ClipError",)
        assert "Traceback" not in row["message"]
    assert sorted(r["source_path"] for r in records) == ["no_audio.mp4", "no_face.mp4", "silence.mp4"]
    assert "built 3 records from 11 inputs" in proc.stdout
    assert "failures: 8 (decode 6, match 2)" in proc.stdout
    assert "skipped 1 entries (not videos, or folders not followed): readme.txt" in proc.stdout


def test_valid_but_empty_inputs_keep_their_reasons(bad_build):
    _, out, _ = bad_build
    rows = {r["source_path"]: r for p in (out / "data").glob("*.parquet") for r in pq.read_table(p).to_pylist()}
    no_audio = rows["no_audio.mp4"]
    assert no_audio["media"]["has_audio"] is False
    assert no_audio["transcript"]["reason"] == "no audio track" and no_audio["transcript"]["text"] is None
    assert no_audio["acoustics"]["reason"] == "no audio track" and no_audio["acoustics"]["egemaps"] is None
    assert no_audio["faces"]["crops"]  # the face is still there
    silence = rows["silence.mp4"]
    assert silence["transcript"]["text"] == "" and silence["transcript"]["reason"] == "no speech detected"
    assert silence["acoustics"]["prosody"]["voiced_ratio"] == 0.0
    assert rows["no_face.mp4"]["faces"]["reason"].startswith("no face in")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["build", "/nonexistent/videos", "--out", "{tmp}/o"], "input folder not found: /nonexistent/videos"),
        pytest.param(["build", "{tmp}/empty", "--out", "{tmp}/o"], "no video files under", marks=pytest.mark.slow),
        (["build", "{tmp}/empty", "--out", "{tmp}/o", "--config", "{tmp}/bad.yaml"], "unknown config key(s) decode.fps"),
        (["build", "{tmp}/empty", "--out", "{tmp}/o", "--workers", "0"], "--workers must be at least 1"),
        (["build", "{tmp}/empty", "--out", "{tmp}/empty/out"], "must not be inside the input folder"),
        (["build", "{tmp}/one", "--out", "{tmp}", "--overwrite"], "the input folder must not be inside --out"),
        (["build", "{tmp}/one", "--out", "{tmp}/o", "--config", "{tmp}/group.yaml"], "split.group_by 'speaker' names no record field"),
        (["build", "{tmp}/one", "--out", "{tmp}/o", "--config", "{tmp}/regex.yaml"], "split.group_pattern '(unclosed' is not a valid regex"),
        (["build", "{tmp}/one", "--out", "/proc/emer-out"], "cannot write to /proc/emer-out"),
        pytest.param(["build", "{tmp}/one", "--out", "{tmp}/o", "--config", "{tmp}/lang.yaml"], "stage transcript cannot start: ValueError: transcript.language 'xx'", marks=pytest.mark.slow),
        pytest.param(["build", "{tmp}/one", "--out", "{tmp}/o", "--config", "{tmp}/hub.yaml"], "stage transcript cannot start: ", marks=pytest.mark.slow),
    ],
)
def test_user_errors_print_one_line_and_exit_non_zero(tmp_path: Path, args: list[str], message: str):
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad.yaml").write_text("decode:\n  fps: 3\n")
    (tmp_path / "lang.yaml").write_text("transcript:\n  language: xx\n")
    (tmp_path / "group.yaml").write_text("split:\n  group_by: speaker\n")
    (tmp_path / "regex.yaml").write_text("split:\n  group_pattern: '(unclosed'\n")
    (tmp_path / "hub.yaml").write_text("transcript:\n  model: /no/such/model/folder\n")
    (tmp_path / "one").mkdir()
    (tmp_path / "one" / "clip.mp4").write_bytes(b"not read: the check comes first")
    proc = subprocess.run([*EMER, *[a.format(tmp=tmp_path) for a in args]], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("emer: error: ") and message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_existing_different_build_is_refused(bad_build, demo_videos: Path):
    _, out, _ = bad_build
    before = sorted(p.name for p in (out / "data").glob("*"))
    proc = subprocess.run([*EMER, "build", str(demo_videos), "--out", str(out), "--quiet"], capture_output=True, text=True)
    assert proc.returncode == 2 and "holds a different build" in proc.stderr and "--overwrite" in proc.stderr
    assert sorted(p.name for p in (out / "data").glob("*")) == before  # nothing was touched
