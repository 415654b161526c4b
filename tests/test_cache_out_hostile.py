"""The per-clip cache, OUT's commit and publishing to a folder against damage and hostile folders: entries cut at
a member boundary, zero-filled or with a flipped byte (a miss, never a result), foreign fields, input memos and
build records cut short, a full cache disk (the build goes on, nothing left behind), plug-in media names with a
hyphen, commit journals that name folders outside OUT, symlinked reports and leftover tables in a published
build, files changed during a publish, and a token in a build published to a folder."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pyarrow as pa
import pytest
from emer_builder.core.config import config_from_dict
from emer_builder.core.errors import UserError
from emer_builder.pipelines.envelope import Envelope
from emer_builder.pipelines.graph import RestoreFn
from emer_builder.pipelines.local_out import JOURNAL, STAGING_PREFIX, LocalOut, commit, recover
from emer_builder.release.manifest import MANIFEST
from emer_builder.schemas import Field, FieldGroup
from emer_builder.transforms.clip import Clip, Stage
from emer_builder.transforms.clip_cache import ClipCache, encode_entry, entry_address
from emer_builder.transforms.shards import sample_members

from tests.small_disk import small_disk

FAST = {"transcript": {"model": "tiny.en"}, "video": {"mode": "none"}}
ADDR = "ab" * 32

pytestmark = pytest.mark.slow  # small real builds, a loopback publish, a tmpfs


def _tiny_clip(path: Path, seconds: int = 2, freq: int = 440) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=160x120:rate=10", "-f", "lavfi", "-i", f"sine=frequency={freq}",
         "-t", str(seconds), "-pix_fmt", "yuv420p", str(path)],
        check=True,
    )
    return path


def _entry_path(root: Path, address: str) -> Path:
    return root / "entries" / address[:2] / f"{address}.tar"


def _tar(members: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _member_offset(data: bytes, name: str) -> int:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return next(m.offset for m in tar.getmembers() if m.name == name)


# -- 1. the per-clip cache: damaged or foreign entries ------------------------------------------------------------------


def test_entry_truncated_at_a_member_boundary_is_a_miss(tmp_path: Path):
    """A cut-short entry (an interrupted copy of the cache, a damaged disk) must be recomputed; here it loses
    its media silently and the restored clip has no FLAC / face crops."""
    cache = ClipCache(str(tmp_path / "c"))
    cache.put(ADDR, {"has_audio": True}, {"flac": b"F" * 5000, "face_000.jpg": b"J" * 3000})
    path = _entry_path(tmp_path / "c", ADDR)
    data = path.read_bytes()
    path.write_bytes(data[: _member_offset(data, "media/flac")])  # cut where the next member's header starts
    assert cache.get(ADDR) is None, f"truncated entry was trusted: {cache.get(ADDR)!r:.120}"


def test_entry_truncated_inside_a_header_is_a_miss(tmp_path: Path):
    cache = ClipCache(str(tmp_path / "c"))
    cache.put(ADDR, {"v": 1}, {"flac": b"F" * 5000})
    path = _entry_path(tmp_path / "c", ADDR)
    data = path.read_bytes()
    path.write_bytes(data[: _member_offset(data, "media/flac") + 100])
    assert cache.get(ADDR) is None, f"truncated entry was trusted: {cache.get(ADDR)!r:.120}"


def test_zero_filled_entry_is_a_miss(tmp_path: Path):
    """What a crash can leave of a file renamed before its data reached the disk (no fsync in `put`)."""
    cache = ClipCache(str(tmp_path / "c"))
    cache.put(ADDR, {"v": 1}, {"flac": b"F" * 100})
    path = _entry_path(tmp_path / "c", ADDR)
    path.write_bytes(b"\0" * path.stat().st_size)
    assert cache.get(ADDR) is None, f"zero-filled entry was trusted: {cache.get(ADDR)!r}"


def test_entry_without_fields_json_is_a_miss(tmp_path: Path):
    cache = ClipCache(str(tmp_path / "c"))
    path = _entry_path(tmp_path / "c", ADDR)
    path.parent.mkdir(parents=True)
    path.write_bytes(_tar([("media/flac", b"x")]))
    assert cache.get(ADDR) is None, f"entry without fields.json was trusted: {cache.get(ADDR)!r}"


def test_bit_flip_in_an_entry_is_a_miss(tmp_path: Path):
    """No checksum covers the payload: a flipped digit in fields.json is restored as the stage's result."""
    cache = ClipCache(str(tmp_path / "c"))
    cache.put(ADDR, {"valence": 0.25}, {})
    path = _entry_path(tmp_path / "c", ADDR)
    data = bytearray(path.read_bytes())
    data[data.index(b"0.25") + 2] = ord("9")  # 0.25 -> 0.95
    path.write_bytes(bytes(data))
    assert cache.get(ADDR) is None, f"damaged entry was trusted: {cache.get(ADDR)!r}"


@pytest.mark.parametrize("payload", [b"[1, 2]", b"null", b'"text"', b'{"group":' + b"[" * 100_000 + b"]" * 100_000 + b"}"], ids=["list", "null", "string", "deep"])
def test_foreign_fields_json_is_a_miss_not_an_exception(tmp_path: Path, payload: bytes):
    cache = ClipCache(str(tmp_path / "c"))
    path = _entry_path(tmp_path / "c", ADDR)
    path.parent.mkdir(parents=True)
    path.write_bytes(_tar([("fields.json", payload)]))
    try:
        got = cache.get(ADDR)
    except Exception as e:  # noqa: BLE001
        pytest.fail(f"a foreign entry raised {type(e).__name__} out of ClipCache.get (the build stops) instead of being a miss")
    assert got is None


def test_restore_survives_a_foreign_entry(tmp_path: Path):
    """RestoreFn does not guard `cache.get`: one foreign entry stops the whole build."""
    video = _tiny_clip(tmp_path / "v" / "a.mp4")
    root = tmp_path / "c"
    cache = ClipCache(str(root))
    digest = "d" * 64
    address = entry_address(cache.input_sha256(str(video)), digest)
    path = _entry_path(root, address)
    path.parent.mkdir(parents=True)
    path.write_bytes(_tar([("fields.json", b"[1]")]))
    fn = RestoreFn(str(root), [digest], ["media"])
    fn.setup()
    out = list(fn.process(Envelope(Clip("a", str(video), "a.mp4"))))  # once a TypeError that stopped the build
    assert len(out) == 1 and out[0].restored_through == -1


def test_zero_filled_input_memo_is_not_trusted(tmp_path: Path):
    """The input-hash memo is read back unchecked: 64 NUL bytes (a crash-damaged memo) become the input's
    'sha256', and every input with such a memo shares one address: one clip's results restore into another."""
    root = tmp_path / "c"
    cache = ClipCache(str(root))
    a, b = _tiny_clip(tmp_path / "v" / "a.mp4", freq=440), _tiny_clip(tmp_path / "v" / "b.mp4", freq=880)
    real = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in (a, b)}
    assert cache.input_sha256(str(a)) == real[a] and cache.input_sha256(str(b)) == real[b]
    for memo in (root / "inputs").rglob("*"):
        if memo.is_file():
            memo.write_bytes(b"\0" * 64)
    got = {p: ClipCache(str(root)).input_sha256(str(p)) for p in (a, b)}
    assert got == real, f"damaged memos trusted: {got}"


def test_non_utf8_input_memo_is_recomputed(tmp_path: Path):
    root = tmp_path / "c"
    video = _tiny_clip(tmp_path / "v" / "a.mp4")
    ClipCache(str(root)).input_sha256(str(video))
    memo = next(p for p in (root / "inputs").rglob("*") if p.is_file())
    memo.write_bytes(b"\xff" * 64)
    try:
        got = ClipCache(str(root)).input_sha256(str(video))
    except Exception as e:  # noqa: BLE001
        pytest.fail(f"a damaged memo raised {type(e).__name__}: RestoreFn then skips the cache for this input on every build, forever")
    assert got == hashlib.sha256(video.read_bytes()).hexdigest()


# -- 1b. `emer cache` / prune ------------------------------------------------------------------------------------------


def test_a_build_record_cut_short_does_not_break_emer_cache(tmp_path: Path):
    """record_use writes the final name directly: a build that dies while recording (killed, full disk) leaves
    half a JSON file, and every later `emer cache` / `--prune` fails on it."""
    cache = ClipCache(str(tmp_path / "c"))
    cache.put(ADDR, {"v": 1}, {})

    def addresses():
        yield ADDR
        raise OSError(28, "No space left on device")

    cache.record_use(addresses(), "/out")  # a cache that cannot record: a warning, the build goes on
    assert not [p for p in (tmp_path / "c" / "builds").iterdir() if p.is_file()], "a half record was left"
    try:
        stats = cache.stats(1)
        cache.prune(1)
    except ValueError as e:
        pytest.fail(f"`emer cache` fails on a cut-short build record: {type(e).__name__}: {e}")
    assert stats["entries"] == 1


def test_cli_emer_cache_on_a_cut_short_build_record(tmp_path: Path):
    root = tmp_path / "c"
    ClipCache(str(root)).put(ADDR, {"v": 1}, {})
    (root / "builds").mkdir()
    (root / "builds" / "00000000000000000001-1-abcdef.json").write_text('{"label": "/out", "addresses": ["ab')
    emer = str(Path(os.sys.executable).parent / "emer")
    run = subprocess.run([emer, "cache", "--dir", str(root), "--prune"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-600:]


# -- 1c. cache and media names -----------------------------------------------------------------------------------------


def test_media_names_the_shards_accept_survive_the_spill():
    """shards.SAFE_SUFFIX allows '-' in a media suffix, clip_cache.SAFE_MEMBER does not; SpillMediaFn packs every
    clip's media with encode_entry and WriteShardFn unpacks them with decode_entry."""
    from emer_builder.transforms.clip_cache import decode_entry

    media = {"spec-gram.png": b"png"}
    assert sample_members({"key": "k"}, media)  # a shard may hold it
    assert decode_entry(encode_entry(None, media))[1] == media


class HyphenMediaStage(Stage):
    """A plug-in that adds one media file whose suffix holds a '-' (the shards' SAFE_SUFFIX allows it)."""

    name = "redteam_hyphen"
    group = FieldGroup("redteam_hyphen", "probe", (Field("n", pa.int32(), "n"),))

    def process(self, clip: Clip) -> None:
        clip.fields[self.name] = {"n": 1}
        clip.media_files["spec-gram.png"] = b"not really a png"


def test_build_with_a_plugin_media_name_holding_a_hyphen(tmp_path: Path):
    from emer_builder.pipelines.build import build

    videos = tmp_path / "videos"
    _tiny_clip(videos / "a.mp4")
    config = config_from_dict({**FAST, "extra_stages": ["tests.test_cache_out_hostile:HyphenMediaStage"], "cache": {"enabled": False}})
    summary = build(videos, tmp_path / "out", config, workers=1, show_progress=False)
    assert summary.records == 1


# -- 1d. end to end: a damaged entry changes the shards ----------------------------------------------------------------


def _files(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file() and p.name not in ("build.json", ".emer-lock", "report.html")}


def test_truncated_decode_entry_changes_the_rebuilt_shards(tmp_path: Path):
    from emer_builder.pipelines.build import build
    from emer_builder.pipelines.stages import build_stages
    from emer_builder.transforms.clip_cache import chain_digests

    videos = tmp_path / "videos"
    video = _tiny_clip(videos / "a.mp4")
    root = tmp_path / "cache"
    config = config_from_dict({**FAST, "cache": {"dir": str(root)}})
    build(videos, tmp_path / "a", config, workers=1, show_progress=False)
    decode_address = entry_address(hashlib.sha256(video.read_bytes()).hexdigest(), chain_digests(build_stages(config))[0])
    path = _entry_path(root, decode_address)
    data = path.read_bytes()
    path.write_bytes(data[: _member_offset(data, "media/flac")])  # a damaged decode entry: fields.json whole, FLAC gone
    again = build(videos, tmp_path / "b", config, workers=1, show_progress=False)
    assert again.records == 1
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    differs = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
    assert not differs, f"the rebuild trusted the damaged entry; files that differ: {differs}"


def test_two_builds_sharing_one_cache_at_once_give_the_uncached_bytes(tmp_path: Path):
    """(passes) Entries are written to a unique temporary name and renamed: racing writers are harmless."""
    import sys

    videos = tmp_path / "videos"
    _tiny_clip(videos / "a.mp4")
    _tiny_clip(videos / "b.mp4", freq=880)
    cache = tmp_path / "cache"
    script = (
        "import sys; from emer_builder.core.config import config_from_dict; from emer_builder.pipelines.build import build\n"
        f"build({str(videos)!r}, sys.argv[1], config_from_dict({{**{FAST!r}, 'cache': {{'dir': {str(cache)!r}}}}}), workers=1, show_progress=False)"
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path / name)], cwd=Path(__file__).parent.parent) for name in ("x", "y")]
    assert [p.wait(timeout=150) for p in procs] == [0, 0]
    from emer_builder.pipelines.build import build

    build(videos, tmp_path / "ref", config_from_dict({**FAST, "cache": {"enabled": False}}), workers=1, show_progress=False)
    again = build(videos, tmp_path / "z", config_from_dict({**FAST, "cache": {"dir": str(cache)}}), workers=1, show_progress=False)
    assert sum(again.stage_runs.values()) == 0
    ref = _files(tmp_path / "ref")
    assert _files(tmp_path / "x") == ref and _files(tmp_path / "y") == ref and _files(tmp_path / "z") == ref


# -- 1e. a cache on a full disk ----------------------------------------------------------------------------------------


def test_a_full_cache_disk_does_not_fail_the_build_nor_blame_out(tmp_path: Path):
    from emer_builder.pipelines.build import build

    with small_disk(tmp_path / "small", "16k") as mount:
        videos = tmp_path / "videos"
        _tiny_clip(videos / "a.mp4")
        out = tmp_path / "out"  # on the big disk
        config = config_from_dict({**FAST, "cache": {"dir": str(mount / "cache")}})
        try:
            summary = build(videos, out, config, workers=1, show_progress=False)
        except UserError as e:
            pytest.fail(f"a full cache disk failed the build: {e}")
        assert summary.records == 1


def test_a_put_on_a_full_disk_leaves_no_temporary_file(tmp_path: Path):
    """`put` writes `<address>.tar.tmp-<uuid>` and never removes it when the write fails; `emer cache` does not
    count it and `--prune` never deletes it (it does not end in .tar), so the cache disk stays full."""
    with small_disk(tmp_path / "small", "16k") as mount:
        cache = ClipCache(str(mount / "cache"))
        cache.put(ADDR, {"v": 1}, {"flac": os.urandom(40_000)})  # a cache that cannot be written: a warning, the build goes on
        assert cache.get(ADDR) is None
        cache.prune(1)
        left = sorted(p.name for p in (mount / "cache").rglob("*") if p.is_file())
        assert left == [], f"left behind on the full disk after a failed put and a prune: {left}"


# -- 2. OUT: commit journal --------------------------------------------------------------------------------------------


def test_a_journal_cannot_make_recover_delete_outside_out(tmp_path: Path):
    """`recover` joins the journal's `staging` to OUT unchecked and rmtree's it."""
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious.txt").write_text("keep me")
    (out / JOURNAL).write_text(json.dumps({"staging": "../victim", "outputs": [], "overwrite": False}))
    try:
        recover(out)
    except (UserError, ValueError, KeyError, TypeError):
        pass
    assert (victim / "precious.txt").exists(), "recover() deleted a folder outside OUT named by the journal"


def test_a_journal_that_is_not_an_object_is_handled(tmp_path: Path):
    out = tmp_path / "out"
    out.mkdir()
    (out / JOURNAL).write_text("[]")
    try:
        recover(out)
    except TypeError as e:
        pytest.fail(f"a valid-JSON but foreign journal gives a traceback ({e}); a malformed one is handled")


def test_a_first_build_killed_before_its_journal_is_in_place_can_be_rerun(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The first step of the commit writes `.emer-commit.tmp` then os.replace's it; a kill (or ENOSPC) in between
    leaves the .tmp, which `entries()` does not hide: the next build of a new OUT refuses it as foreign."""
    from emer_builder.pipelines import local_out

    out = tmp_path / "out"
    staging = out / f"{STAGING_PREFIX}123"
    (staging / "data").mkdir(parents=True)
    (staging / "data" / "train-00000-of-00001.parquet").write_text("p")
    (staging / MANIFEST).write_text(json.dumps({"files": {}}))

    class Killed(BaseException):
        pass

    def killed(*a, **k):
        raise Killed

    monkeypatch.setattr(local_out.os, "replace", killed)
    with pytest.raises(Killed):
        commit(staging, out, overwrite=False)
    monkeypatch.undo()
    rerun = LocalOut(out, overwrite=False)
    rerun.make_ready()
    rerun.check("hash", "/videos")  # once a UserError: "... holds no emer build (.emer-commit.tmp)"


# -- 3. publish to a folder -------------------------------------------------------------------------------------------


def _copy_build(release_builds: tuple[Path, Path], tmp_path: Path) -> Path:
    """A copy of a small real build (the release fixtures' first), to change freely."""
    build = tmp_path / "build"
    shutil.copytree(release_builds[0], build, symlinks=True)
    return build


def test_a_symlinked_report_html_does_not_publish_a_file_from_outside(tmp_path: Path, release_builds):
    from emer_builder.release.publish import publish

    build = _copy_build(release_builds, tmp_path)
    secret = tmp_path / "secret.txt"
    secret.write_text("hf_NOTPUBLICtoken\n")
    (build / "report.html").unlink(missing_ok=True)
    (build / "report.html").symlink_to(secret)
    target = tmp_path / "target"
    try:
        publish(build, str(target), "1.0.0")
    except UserError:
        return  # refusing is fine
    published = target / "v1.0.0" / "report.html"
    assert not (published.exists() and "NOTPUBLIC" in published.read_text()), "the content of a file outside OUT was published"


def test_a_symlinked_report_folder_does_not_publish_files_from_outside(tmp_path: Path, release_builds):
    from emer_builder.release.publish import publish

    build = _copy_build(release_builds, tmp_path)
    if not (build / "report.html").is_file():
        (build / "report.html").write_text("<html></html>")
    outside = tmp_path / "home-ssh"
    outside.mkdir()
    (outside / "id_rsa").write_text("PRIVATE KEY\n")
    shutil.rmtree(build / "report", ignore_errors=True)
    (build / "report").symlink_to(outside, target_is_directory=True)
    target = tmp_path / "target"
    try:
        publish(build, str(target), "1.0.0")
    except UserError:
        return
    assert not (target / "v1.0.0" / "report" / "id_rsa").exists(), "files of a folder outside OUT were published"


def test_extra_files_outside_the_manifest_are_not_published(tmp_path: Path, release_builds):
    from emer_builder.release.publish import publish

    build = _copy_build(release_builds, tmp_path)
    (build / "data" / "zz-extra.bin").write_bytes(b"not listed")
    (build / "notes.txt").write_text("mine")
    target = tmp_path / "target"
    publish(build, str(target), "1.0.0")
    stored = {p.relative_to(target / "v1.0.0").as_posix() for p in (target / "v1.0.0").rglob("*") if p.is_file()}
    assert "data/zz-extra.bin" not in stored and "notes.txt" not in stored


@pytest.mark.parametrize("valid", [False, True], ids=["not-parquet", "other-schema"])
def test_an_unlisted_parquet_in_data_does_not_decide_the_release(tmp_path: Path, release_builds, valid: bool):
    """card.build_schema reads the schema of sorted(data/*.parquet)[0], listed in the manifest or not."""
    import pyarrow.parquet as pq
    from emer_builder.release.publish import publish

    build = _copy_build(release_builds, tmp_path)
    extra = build / "data" / "aaa-stale.parquet"
    if valid:
        pq.write_table(pa.table({"totally_other_field": [1]}), extra)
    else:
        extra.write_bytes(b"not parquet")
    try:
        result = publish(build, str(tmp_path / "target"), "1.0.0")
    except UserError:
        return  # a clear refusal is fine
    except Exception as e:  # noqa: BLE001
        pytest.fail(f"an unlisted file in data/ gives a traceback: {type(e).__name__}: {str(e)[:120]}")
    assert "totally_other_field" not in result.card, "the published card describes an unlisted, unpublished file"


def test_a_build_file_changed_during_the_publish_is_not_published_under_the_old_sha(tmp_path: Path, release_builds, monkeypatch: pytest.MonkeyPatch):
    """read_build hashes the files, upload copies them later from the same paths; publish takes no OUT lock, so a
    rebuild committing into OUT in between (simulated) puts other bytes into an immutable version."""
    from emer_builder.release import fs_store
    from emer_builder.release.publish import publish

    build = _copy_build(release_builds, tmp_path)
    manifest = json.loads((build / MANIFEST).read_text())
    rel = next(r for r in manifest["files"] if r.startswith("data/"))
    real_upload = fs_store.FsspecStore.upload

    def upload_after_a_concurrent_commit(self, *args, **kwargs):
        path = build / rel
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x01
        path.write_bytes(bytes(data))  # what a concurrent `emer build` commit into OUT would do
        return real_upload(self, *args, **kwargs)

    monkeypatch.setattr(fs_store.FsspecStore, "upload", upload_after_a_concurrent_commit)
    target = tmp_path / "target"
    try:
        publish(build, str(target), "1.0.0")
    except UserError:
        return  # refusing is fine
    published = target / "v1.0.0"
    want = json.loads((published / MANIFEST).read_text())["files"][rel]["sha256"]
    assert hashlib.sha256((published / rel).read_bytes()).hexdigest() == want, f"v1.0.0/{rel} does not match the sha256 its own manifest gives"


def test_token_in_the_build_is_not_published_to_a_folder_either(tmp_path: Path, release_builds, monkeypatch: pytest.MonkeyPatch):
    """The Hub target refuses a build whose manifest holds HF_TOKEN (test_publish.py); a folder / S3 target does not check."""
    from emer_builder.release.publish import publish

    token = "hf_redteamSECRET0123456789abcdef"
    monkeypatch.setenv("HF_TOKEN", token)
    build = _copy_build(release_builds, tmp_path)
    manifest = json.loads((build / MANIFEST).read_text())
    manifest["videos_dir"] = f"/data/{token}/videos"
    (build / MANIFEST).write_text(json.dumps(manifest, indent=2))
    target = tmp_path / "target"
    try:
        publish(build, str(target), "1.0.0")
    except UserError as e:
        assert token not in str(e)
        return
    leaked = sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file() and token.encode() in p.read_bytes())
    assert not leaked, f"HF_TOKEN published in {leaked}"
