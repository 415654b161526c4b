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


def _linked_tree(tmp_path: Path) -> Path:
    """videos/ with real folders, a loop, a second name, a broken link, and links to a folder outside it."""
    videos, outside = tmp_path / "videos", tmp_path / "outside"
    (videos / "real" / "deep").mkdir(parents=True)
    (outside / "sub").mkdir(parents=True)
    for p in (videos / "real" / "a.mp4", videos / "real" / "deep" / "b.mp4", outside / "c.mp4", outside / "sub" / "d.mp4"):
        p.write_bytes(b"x")
    os.symlink(outside, videos / "ext")  # outside the input folder
    os.symlink(outside / "sub", videos / "ext_sub")  # outside too; with following allowed, already reached through ext/sub
    os.symlink(videos / "real", videos / "alias")  # a second name for a folder walked already
    os.symlink("..", videos / "real" / "deep" / "up")  # a loop
    os.symlink(tmp_path / "missing", videos / "gone")
    return videos


def test_symlinked_folders_are_followed_once_and_loops_listed(tmp_path: Path):
    videos = _linked_tree(tmp_path)
    inputs, collisions, skipped = match_videos(videos, follow_external_links=True)
    assert [i.source_path for i in inputs] == ["ext/c.mp4", "ext/sub/d.mp4", "real/a.mp4", "real/deep/b.mp4"]
    assert skipped == [
        "alias/ (symlink to real/, already included: not followed)",
        "ext_sub/ (symlink to ext/sub/, already included: not followed)",
        "gone (broken symlink)",
        "real/deep/up/ (symlink to real/, already included: not followed)",
    ]


def test_links_that_leave_the_input_folder_are_listed_not_followed(tmp_path: Path):
    """`..`, `/`, a folder or a clip elsewhere: skipped with the reason by default, so a link never pulls the file
    system into a dataset; a link inside the folder, a link to a device and a dangling link stay as they were."""
    videos = _linked_tree(tmp_path)
    outside = tmp_path / "outside"
    os.symlink("..", videos / "up")
    os.symlink("/", videos / "rootlink")
    os.symlink(outside / "c.mp4", videos / "c_link.mp4")  # a clip elsewhere
    os.symlink(outside / "notes.txt", videos / "notes.txt")  # not a video: listed by name, as any non-video file
    os.symlink("real/a.mp4", videos / "a_again.mp4")  # inside: an input as before
    os.symlink("/dev/zero", videos / "zero.mp4")  # a device: decode names it (a failure row), as before
    os.symlink(tmp_path / "missing.mp4", videos / "dangling.mp4")  # decode names it, as before
    inputs, collisions, skipped = match_videos(videos)
    assert not collisions
    assert [i.source_path for i in inputs] == ["a_again.mp4", "dangling.mp4", "real/a.mp4", "real/deep/b.mp4", "zero.mp4"]
    leaves = "outside the input folder: not followed; set follow_external_links: true to include it"
    assert skipped == [
        "alias/ (symlink to real/, already included: not followed)",
        f"c_link.mp4 (symlink to {outside}/c.mp4, {leaves})",
        f"ext/ (symlink to {outside}, {leaves})",
        f"ext_sub/ (symlink to {outside}/sub, {leaves})",
        "gone (broken symlink)",
        "notes.txt (broken symlink)",
        "real/deep/up/ (symlink to real/, already included: not followed)",
        f"rootlink/ (symlink to /, {leaves})",
        f"up/ (symlink to {tmp_path}, {leaves})",
    ]


def test_a_videos_dir_given_through_a_link_keeps_its_own_links_inside(tmp_path: Path):
    """Inside and outside are decided on resolved paths: VIDEOS_DIR may itself be a link (/data/videos -> /mnt/x)."""
    real = tmp_path / "store" / "videos"
    (real / "clips").mkdir(parents=True)
    (real / "clips" / "a.mp4").write_bytes(b"x")
    (real / ".shelf").mkdir()
    (real / ".shelf" / "b.mp4").write_bytes(b"x")
    os.symlink(real / ".shelf", real / "shelf")  # an absolute link to a hidden folder inside: followed
    os.symlink(real / "clips" / "a.mp4", real / "a_link.mp4")
    os.symlink(real, tmp_path / "videos")
    inputs, _, skipped = match_videos(tmp_path / "videos")
    assert [i.source_path for i in inputs] == ["a_link.mp4", "clips/a.mp4", "shelf/b.mp4"] and skipped == []


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


@pytest.mark.slow
def test_a_folder_of_links_leaving_it_is_one_line_naming_the_setting(tmp_path: Path):
    """Only links to clips elsewhere (a symlink farm): `emer build` says why nothing was found and what to set."""
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "a.mp4").write_bytes(b"x")
    videos = tmp_path / "videos"
    videos.mkdir()
    os.symlink(tmp_path / "elsewhere" / "a.mp4", videos / "a.mp4")
    os.symlink("/", videos / "rootlink")
    emer = [sys.executable, "-m", "emer_builder.cli.main"]
    proc = subprocess.run([*emer, "build", str(videos), "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith(f"emer: error: no video files under {videos} (looked for ")
    assert "; 2 symlinks leading outside it were not followed (a.mp4, rootlink/): set follow_external_links: true in the config to include them" in proc.stderr


def test_the_summary_lists_links_leaving_the_input_folder():
    from emer_builder.pipelines.build import BuildSummary

    leaves = "outside the input folder: not followed; set follow_external_links: true to include it"
    skipped = ["notes.txt", f"rootlink/ (symlink to /, {leaves})", f"up/ (symlink to /data, {leaves})"]
    lines = BuildSummary("/o", 1, {"train": 1}, {}, skipped, 0, {}, 0.0, 1.0).text().splitlines()
    assert f"  skipped 3 entries (not videos, or folders not followed): notes.txt, rootlink/ (symlink to /, {leaves}), up/ (symlink to /data, {leaves})" in lines
    assert "  not followed: 2 symlinks leading outside the input folder (rootlink/, up/); set follow_external_links: true in the config to include them" in lines


def test_follow_external_links_is_a_config_switch(tmp_path: Path):
    from emer_builder.core.config import BuildConfig, load_config
    from emer_builder.core.errors import UserError

    assert BuildConfig().follow_external_links is False
    (tmp_path / "on.yaml").write_text("follow_external_links: true\n")
    assert load_config(tmp_path / "on.yaml").follow_external_links is True
    (tmp_path / "bad.yaml").write_text("follow_external_links: 1\n")
    with pytest.raises(UserError, match=r"config key follow_external_links must be of type bool, got 1"):
        load_config(tmp_path / "bad.yaml")
