import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from emer_builder.transforms.keys import MAX_KEY_BYTES, display_path, key_for, match_videos


def test_mer_ids_stay_as_they_are():
    assert key_for("sample_00000648.mp4") == "sample_00000648"
    assert key_for("MER2023/sample_00000648.avi") == "MER2023__sample_00000648"


def test_keys_are_webdataset_safe():
    for rel in ["a b/c.d.e.MP4", "x/../y.avi", "clip.v1.mp4", "-odd-/name;rm -rf.mkv", "中文/视频.mp4"]:
        key = key_for(rel)
        assert "." not in key and "/" not in key and ".." not in key and " " not in key, key
        assert key and not key.startswith("/")
    assert key_for("中文/视频.mp4") == "中文__视频"  # Chinese file names keep their characters


def test_match_finds_videos_case_insensitively_and_skips_others(tmp_path: Path):
    for name in ["b/two.MOV", "a/one.mp4", "three.webm", "four.FLV", "notes.txt", "cover.jpg", ".hidden.mp4", ".git/x.mp4"]:
        p = tmp_path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    inputs, collisions, skipped = match_videos(tmp_path)
    assert [i.key for i in inputs] == ["a__one", "b__two", "four", "three"]
    assert [i.source_path for i in inputs] == ["a/one.mp4", "b/two.MOV", "four.FLV", "three.webm"]
    assert all(Path(i.path).is_absolute() for i in inputs)
    assert collisions == []
    assert skipped == ["cover.jpg", "notes.txt"]


def test_colliding_keys_are_all_reported(tmp_path: Path):
    for name in ["clip.v1.mp4", "clip_v1.mkv", "ok.mp4"]:
        (tmp_path / name).write_bytes(b"x")
    inputs, collisions, _ = match_videos(tmp_path)
    assert [i.key for i in inputs] == ["ok"]
    assert sorted((c.source_path, c.others) for c in collisions) == [("clip.v1.mp4", ("clip_v1.mkv",)), ("clip_v1.mkv", ("clip.v1.mp4",))]
    assert {c.key for c in collisions} == {"clip_v1"}


def test_names_that_are_not_utf8_keep_their_real_path_and_get_a_display_form(tmp_path: Path):
    root = os.fsencode(tmp_path)
    os.makedirs(os.path.join(root, b"d\xe9j\xe0"))
    for raw in (b"caf\xe9.mp4", b"d\xe9j\xe0/\xff\xfe.mkv", b"back\\slash.mp4", b"tab\there.mp4", b"notes\xff.txt"):
        with open(os.path.join(root, raw), "wb") as f:
            f.write(b"x")
    inputs, collisions, skipped = match_videos(tmp_path)
    assert collisions == []
    assert [(i.source_path, i.key) for i in inputs] == [
        ("back\\\\slash.mp4", "back_slash"),
        ("caf\\xe9.mp4", "caf_xe9"),
        ("d\\xe9j\\xe0/\\xff\\xfe.mkv", "d_xe9j_xe0__xff_xfe"),
        ("tab\\x09here.mp4", "tab_x09here"),
    ]
    assert skipped == ["notes\\xff.txt"]
    for i in inputs:
        i.source_path.encode("utf-8")  # what Parquet and JSON get
        with open(i.path, "rb") as f:  # what ffmpeg gets: the real name
            assert f.read() == b"x"


def test_display_path_is_one_to_one():
    names = ["a\\xe9.mp4", os.fsdecode(b"a\xe9.mp4"), "a\u00e9.mp4", "a\ne.mp4", "a\\x0ae.mp4", "\u202egnp.mp4"]
    shown = [display_path(n) for n in names]
    assert len(set(shown)) == len(names)
    assert shown[:2] == ["a\\\\xe9.mp4", "a\\xe9.mp4"] and shown[5] == "\\u202egnp.mp4"
    assert display_path("中文/视频 1.mp4") == "中文/视频 1.mp4"  # any script and spaces stay as they are


def test_keys_for_unreadable_or_long_names_stay_unique_and_fit():
    assert key_for("😀.mp4") != key_for("🎉.mp4") and key_for("😀.mp4").startswith("h")
    long_a, long_b = "n" * 300 + "a.mp4", "n" * 300 + "b.mp4"
    assert key_for(long_a) != key_for(long_b) and len(key_for(long_a).encode()) <= MAX_KEY_BYTES
    assert key_for(long_a) == key_for(long_a)
    assert key_for(b"caf\xe9.mp4") == key_for(os.fsdecode(b"caf\xe9.mp4")) == "caf_xe9"


def test_symlinked_folders_are_followed_once_and_loops_listed(tmp_path: Path):
    videos, outside = tmp_path / "videos", tmp_path / "outside"
    (videos / "real" / "deep").mkdir(parents=True)
    (outside / "sub").mkdir(parents=True)
    for p in (videos / "real" / "a.mp4", videos / "real" / "deep" / "b.mp4", outside / "c.mp4", outside / "sub" / "d.mp4"):
        p.write_bytes(b"x")
    os.symlink(outside, videos / "ext")  # outside the input folder: followed
    os.symlink(outside / "sub", videos / "ext_sub")  # already reached through ext/sub
    os.symlink(videos / "real", videos / "alias")  # a second name for a folder walked already
    os.symlink("..", videos / "real" / "deep" / "up")  # a loop
    os.symlink(tmp_path / "missing", videos / "gone")
    inputs, collisions, skipped = match_videos(videos)
    assert [i.source_path for i in inputs] == ["ext/c.mp4", "ext/sub/d.mp4", "real/a.mp4", "real/deep/b.mp4"]
    assert skipped == [
        "alias/ (symlink to real/, already included: not followed)",
        "ext_sub/ (symlink to ext/sub/, already included: not followed)",
        "gone (broken symlink)",
        "real/deep/up/ (symlink to real/, already included: not followed)",
    ]


def test_an_unreadable_folder_is_listed_not_lost():
    """Run as an unprivileged user (root reads every folder): through setpriv when the tests run as root."""
    as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] if os.geteuid() == 0 else []
    if as_nobody and not shutil.which("setpriv"):
        pytest.skip("running as root without setpriv")
    root = Path(tempfile.mkdtemp(prefix="emer-locked-"))  # not under pytest's root-only folder
    try:
        (root / "locked").mkdir()
        (root / "locked" / "x.mp4").write_bytes(b"x")
        (root / "ok.mp4").write_bytes(b"x")
        root.chmod(0o755)
        (root / "locked").chmod(0)
        code = f"from emer_builder.transforms.keys import match_videos; i, c, s = match_videos({str(root)!r}); print([x.source_path for x in i], s)"
        proc = subprocess.run([*as_nobody, sys.executable, "-c", code], capture_output=True, text=True, check=True)
    finally:
        (root / "locked").chmod(0o755)
        shutil.rmtree(root)
    assert proc.stdout.strip() == "['ok.mp4'] ['locked/ (folder not readable: Permission denied)']"
