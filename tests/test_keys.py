from pathlib import Path

from emer_builder.transforms.keys import key_for, match_videos


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
