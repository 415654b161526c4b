"""The download and read side against hostile releases (a folder release or manifest written by someone else):
links and special files, sizes, nested and unsafe paths, suffixes that reach a decoder, damaged JSON, cards and
tables, killed downloads, and tokens in error messages. Each is one clear line (UserError or, for a shard's
members, ValueError naming the shard), never a traceback, a hang or a file from outside the release."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from emer_builder.core.errors import UserError
from emer_builder.release.download import check_shard, download, iter_samples, load_split

pytestmark = pytest.mark.slow  # the session's release builds, a loopback Hub, subprocess downloads

TRAIN_PQ, VALID_PQ = "data/train-00000-of-00001.parquet", "data/validation-00000-of-00001.parquet"
TRAIN_TAR, VALID_TAR = "media/train-00000-of-00001.tar", "media/validation-00000-of-00001.tar"


# -- helpers -----------------------------------------------------------------------------------------------------------


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def store_from(build: Path, target: Path, version: str = "1.0.0") -> Path:
    """A folder store holding `build` as its only version; returns the version folder."""
    folder = target / f"v{version}"
    shutil.copytree(build, folder)
    (target / "releases.json").write_text(json.dumps([{"version": version}]))
    return folder


def rewrite(folder: Path, path: str, data: bytes) -> None:
    """Replace one file of a release / build folder and make its manifest agree (the publisher is hostile)."""
    (folder / path).parent.mkdir(parents=True, exist_ok=True)
    (folder / path).write_bytes(data)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"][path] = {"sha256": sha(data), "bytes": len(data)}
    (folder / "manifest.json").write_text(json.dumps(manifest))


def tar_bytes(members: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def user_error_or_value_error(fn) -> BaseException:
    """Run fn; return the exception, failing the test if it is not a UserError / ValueError (a traceback for a user)."""
    try:
        fn()
    except (UserError, ValueError) as e:
        return e
    except BaseException as e:  # noqa: BLE001
        pytest.fail(f"hostile input gave {type(e).__name__} (a traceback), not a UserError: {e!s:.300}")
    pytest.fail("hostile input was accepted")


# -- symlinks in a folder store: files from outside the release end up in the download ----------------------------------


def test_symlinked_optional_file_in_a_folder_release_is_not_copied(tmp_path: Path, release_builds) -> None:
    secret = tmp_path / "victim" / "token"
    secret.parent.mkdir()
    secret.write_text("hf_VICTIMSECRET0123456789")
    folder = store_from(release_builds[0], tmp_path / "target")
    (folder / "README.md").unlink()
    (folder / "README.md").symlink_to(os.path.relpath(secret, folder))  # a relative link, as a tarball would carry it
    try:
        download(str(tmp_path / "target"), tmp_path / "to")
    except UserError:
        pass  # refusing the link is fine
    leaked = [p for p in (tmp_path / "to").rglob("*") if p.is_file() and b"VICTIMSECRET" in p.read_bytes()]
    assert not leaked, f"a file outside the release was copied into the download: {leaked}"


# -- manifest shape ----------------------------------------------------------------------------------------------------


def _store_with_manifest(tmp_path: Path, raw: bytes) -> Path:
    target = tmp_path / "target"
    (target / "v1.0.0").mkdir(parents=True)
    (target / "v1.0.0" / "manifest.json").write_bytes(raw)
    (target / "releases.json").write_text(json.dumps([{"version": "1.0.0"}]))
    return target


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"\xff\xfe garbage",
        b"[]",
        b"[1, 2]",
        b"null",
        b'"x"',
        b'{"files": [], "splits": {}, "keys": {}}',
        b'{"files": {}, "splits": {"train": 1}, "keys": {"train": "abc"}}',
        b'{"files": {}, "splits": {"../x": 1}, "keys": {}}',
        b'{"files": {}, "splits": {"train": 1}, "keys": {"train": ["../x"]}}',
        b'{"files": {"data/train-0.parquet": {"sha256": "' + b"A" * 64 + b'", "bytes": 1}}, "splits": {"train": 1}, "keys": {}}',
        b'{"files": {"data/train-0.parquet": {"sha256": "' + b"a" * 64 + b'", "bytes": "1"}}, "splits": {"train": 1}, "keys": {}}',
        b'{"files": {"data/train-0.parquet": "x"}, "splits": {"train": 1}, "keys": {}}',
    ],
)
def test_malformed_manifests_are_one_line_errors(tmp_path: Path, raw: bytes) -> None:
    target = _store_with_manifest(tmp_path, raw)
    e = user_error_or_value_error(lambda: download(str(target), tmp_path / "to"))
    assert isinstance(e, UserError)


def test_deeply_nested_manifest_is_a_user_error(tmp_path: Path) -> None:
    target = _store_with_manifest(tmp_path, b"[" * 200_000 + b"]" * 200_000)
    e = user_error_or_value_error(lambda: download(str(target), tmp_path / "to"))
    assert isinstance(e, UserError)


def test_deeply_nested_release_index_is_a_user_error(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.mkdir()
    (target / "releases.json").write_bytes(b"[" * 200_000 + b"]" * 200_000)
    e = user_error_or_value_error(lambda: download(str(target), tmp_path / "to"))
    assert isinstance(e, UserError)


@pytest.mark.parametrize(
    "bad",
    [
        "data/../x.parquet",
        "/abs/x.parquet",
        "data\\x.parquet",
        "data/train-0.parquet/",
        "data/\x00.parquet",
        "data/tr*n-0.parquet",
        "c:data/x.parquet",
        "./data/x.parquet",
        "data/x/../../y.parquet",
        "media/..",
        "README.md",
        ".cache/emer-verified.json",
        "manifest.json",
        "releases.json",
    ],
)
def test_more_unsafe_manifest_paths(tmp_path: Path, release_builds, bad: str) -> None:
    manifest = json.loads((release_builds[0] / "manifest.json").read_text())
    manifest["files"][bad] = {"sha256": "0" * 64, "bytes": 1}
    target = _store_with_manifest(tmp_path, json.dumps(manifest).encode())
    with pytest.raises(UserError, match="unsafe path"):
        download(str(target), tmp_path / "sub" / "to")
    assert not (tmp_path / "sub").exists()


def test_manifest_paths_that_nest_inside_each_other_are_a_user_error(tmp_path: Path, release_builds) -> None:
    """`data/train-0.parquet` and `data/train-0.parquet/x.parquet` both match the split: one must be a folder."""
    folder = store_from(release_builds[0], tmp_path / "target")
    data = (folder / TRAIN_PQ).read_bytes()
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"][f"{TRAIN_PQ}/x.parquet"] = {"sha256": sha(data), "bytes": len(data)}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    e = user_error_or_value_error(lambda: download(str(tmp_path / "target"), tmp_path / "to"))
    assert isinstance(e, UserError)


# -- versions and split names ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["../../x", "v1/../../", "1.0.0/../../x", "1.0.0/", "v1.0.0\x00", "1.0", "latest", " ", "v01.0.0", "1.0.0 ; rm"])
def test_hostile_version_strings_are_refused(tmp_path: Path, release_builds, version: str) -> None:
    store_from(release_builds[0], tmp_path / "target")
    with pytest.raises(UserError):
        download(str(tmp_path / "target"), tmp_path / "to", version=version)
    with pytest.raises(UserError):
        load_split(str(tmp_path / "target"), version=version, split="train", cache_dir=tmp_path / "cache")
    assert not list((tmp_path / "cache").rglob("*")) if (tmp_path / "cache").exists() else True
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("entries", [[{"version": "../../x"}], [{"version": "1.0.0/../.."}], [{"version": 1}], {"version": "1.0.0"}, [["1.0.0"]]])
def test_hostile_release_index_is_refused(tmp_path: Path, release_builds, entries) -> None:
    store_from(release_builds[0], tmp_path / "target")
    (tmp_path / "target" / "releases.json").write_text(json.dumps(entries))
    with pytest.raises(UserError):
        download(str(tmp_path / "target"), tmp_path / "to")


@pytest.mark.parametrize("split", ["../train", "train/../validation", "train/", "/train", "*", "train-*", "tr?in", "[t]rain", "TRAIN", "train\x00"])
def test_hostile_split_names_are_refused(tmp_path: Path, release_builds, split: str) -> None:
    store_from(release_builds[1], tmp_path / "target")
    with pytest.raises(UserError):
        download(str(tmp_path / "target"), tmp_path / "to", splits=[split])
    with pytest.raises(UserError):
        load_split(str(tmp_path / "target"), split=split, cache_dir=tmp_path / "cache")


def test_manifest_split_names_with_separators_are_refused(tmp_path: Path, release_builds) -> None:
    manifest = json.loads((release_builds[0] / "manifest.json").read_text())
    manifest["splits"]["x/../y"] = 1
    target = _store_with_manifest(tmp_path, json.dumps(manifest).encode())
    with pytest.raises(UserError, match="bad split names"):
        download(str(target), tmp_path / "to")


# -- tar members -------------------------------------------------------------------------------------------------------


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "", size: int = 2) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, link, size if kind == tarfile.REGTYPE else 0
    return info


def _raw_tar(path: Path, members: list[tarfile.TarInfo], fmt: int = tarfile.PAX_FORMAT) -> None:
    with tarfile.open(path, "w", format=fmt) as tar:
        for info in members:
            tar.addfile(info, io.BytesIO(b"{}" + b"\0" * max(0, info.size - 2)) if info.isreg() else None)


K = "sample_00000870"  # a train key of the release fixture


@pytest.mark.parametrize(
    "members",
    [
        [_member(f"{K}.json"), _member(f"{K}.flac", tarfile.LNKTYPE, f"{K}.json")],  # hardlink
        [_member(f"{K}.json"), _member(f"{K}.flac", tarfile.SYMTYPE, "../../etc/passwd")],
        [_member(f"{K}.json"), _member(f"{K}.flac", tarfile.FIFOTYPE)],
        [_member(f"{K}.json"), _member(f"{K}.flac", tarfile.BLKTYPE)],
        [_member(f"{K}.json"), _member(f"{K}.flac", tarfile.DIRTYPE)],
        [_member(f"{K}.json"), _member(f"{K}/x.flac")],
        [_member(f"{K}.json"), _member(f"./{K}.flac")],
        [_member(f"{K}.json"), _member(f"{K}.flac/..")],
        [_member(f"{K}.json"), _member(f"{K}.fl ac")],
        [_member(f"{K}.json"), _member(f"{K}.")],
        [_member(f"{K}.json"), _member(f"{K}..flac")],
        [_member(f"{K}.json"), _member(f"{K}.PKL")],
        [_member(f"{K}.json"), _member(f"{K}.x.pickle")],
        [_member(f"{K}.json"), _member(f"{K}.pth.gz")],  # datasets' webdataset decompresses, then torch.load()s
        [_member(f"{K}.json"), _member(f"{K}.pyd.xz")],
        [_member(f"{K}.json"), _member(f"{K}.pkl.bz2")],
        [_member(f"{K}.json"), _member(f"{K}.json")],
        [_member("sample_0000087\u0660.json")],  # an Arabic-Indic digit: \\w matches it, the manifest lacks it
        [_member(f"{K}\u200b.json")],
        [_member("../" + K + ".json")],
        [_member("/" + K + ".json")],
    ],
)
def test_more_bad_tar_members(tmp_path: Path, release_builds, members) -> None:
    out = tmp_path / "out"
    (out / "media").mkdir(parents=True)
    shutil.copyfile(release_builds[1] / "manifest.json", out / "manifest.json")
    shard = out / TRAIN_TAR
    try:
        _raw_tar(shard, members)
    except Exception as e:  # noqa: BLE001  # tarfile may refuse to write it: nothing to probe
        pytest.skip(f"cannot write such a tar: {e}")
    e = user_error_or_value_error(lambda: list(iter_samples(out, split="train")))
    assert "train-00000-of-00001.tar" in str(e)


def test_truncated_member_data_is_a_value_error(tmp_path: Path, release_builds) -> None:
    """A member whose header declares more bytes than the tar holds: check_shard reads headers only."""
    out = tmp_path / "out"
    (out / "media").mkdir(parents=True)
    shutil.copyfile(release_builds[1] / "manifest.json", out / "manifest.json")
    good = tar_bytes([(f"{K}.flac", b"x" * 5000), (f"{K}.json", b"{}")])
    (out / TRAIN_TAR).write_bytes(good[:2000])  # cut inside the flac member's data
    user_error_or_value_error(lambda: list(iter_samples(out, split="train")))


def test_check_shard_rejects_compressed_pickle_suffixes(tmp_path: Path) -> None:
    path = tmp_path / "s.tar"
    path.write_bytes(tar_bytes([(f"{K}.json", b"{}"), (f"{K}.pth.gz", b"x")]))
    with pytest.raises(ValueError):
        check_shard(path, {K})


@pytest.mark.parametrize("names", [[f"{K}.json", f"{K}.JSON"], [f"{K}.flac", f"{K}.FLAC", f"{K}.json"]])
def test_check_shard_rejects_case_variant_duplicates(tmp_path: Path, names: list[str]) -> None:
    """webdataset lower-cases suffixes, so `k.flac` and `k.FLAC` are one field twice; check_shard's repeat check is
    case-sensitive and lets it through (webdataset then fails with a ValueError that does not name the shard)."""
    path = tmp_path / "s.tar"
    path.write_bytes(tar_bytes([(n, b"{}") for n in names]))
    with pytest.raises(ValueError):
        check_shard(path, {K})


def test_load_split_media_with_compressed_torch_member(tmp_path: Path, release_builds) -> None:
    """load_split(config="media") hands the shard to datasets' webdataset loader, which gunzips `*.pth.gz` and
    torch.load()s it: the suffix check looks at `gz` only."""
    import gzip

    out = tmp_path / "out"
    shutil.copytree(release_builds[1], out)
    original = tarfile.open(out / TRAIN_TAR)
    members = [(m.name, original.extractfile(m).read()) for m in original]
    original.close()
    members.append((f"{K}.weights.pth.gz", gzip.compress(b"not a torch file")))
    members.sort()
    rewrite(out, TRAIN_TAR, tar_bytes(members))
    user_error_or_value_error(lambda: load_split(out, split="train", config="media", cache_dir=tmp_path / "cache"))


# -- Parquet / card content --------------------------------------------------------------------------------------------


def test_parquet_that_is_not_parquet_is_a_user_error(tmp_path: Path, release_builds) -> None:
    folder = store_from(release_builds[0], tmp_path / "target")
    rewrite(folder, TRAIN_PQ, b"PAR1 this is not a parquet file PAR1")
    e = user_error_or_value_error(lambda: load_split(str(tmp_path / "target"), split="train", cache_dir=tmp_path / "cache"))
    assert isinstance(e, UserError)


def test_parquet_schema_unlike_the_manifest_is_a_user_error(tmp_path: Path, release_builds) -> None:
    """Two tables of one split with different schemas (the manifest lists both, with their real sha256)."""
    folder = store_from(release_builds[0], tmp_path / "target")
    buf = io.BytesIO()
    pq.write_table(pa.table({"key": [1, 2], "evil": ["a", "b"]}), buf)
    rewrite(folder, "data/train-00001-of-00001.parquet", buf.getvalue())
    e = user_error_or_value_error(lambda: load_split(str(tmp_path / "target"), split="train", cache_dir=tmp_path / "cache"))
    assert isinstance(e, UserError)


@pytest.mark.parametrize(
    "card",
    [
        "---\nfoo: [unclosed\n---\n",
        "---\ndataset_info:\n  features: 5\n---\n",
        "---\ndataset_info:\n  features:\n  - name: json\n    dtype: no_such_type\n---\n",
        "---\n!!python/object/apply:os.system ['echo pwned']\n---\n",
    ],
)
def test_hostile_media_card_is_a_user_error(tmp_path: Path, release_builds, card: str) -> None:
    """media/README.md is not in the manifest (not verified) yet decides the features load_split uses."""
    folder = store_from(release_builds[0], tmp_path / "target")
    (folder / "media" / "README.md").write_text(card)
    e = user_error_or_value_error(lambda: load_split(str(tmp_path / "target"), split="train", config="media", cache_dir=tmp_path / "cache"))
    assert isinstance(e, UserError)


# -- failed / interrupted downloads ------------------------------------------------------------------------------------


def test_a_tampered_shard_never_sits_under_its_name_after_a_killed_download(tmp_path: Path, release_builds, monkeypatch) -> None:
    """A folder store copies every selected file under its real name, and checks the sha256 only once all are
    copied. Killed in between (simulated), the tampered shard stays next to manifest.json; iter_samples on
    that folder reads it without checking any sha256."""
    import emer_builder.release.download as dl

    folder = store_from(release_builds[1], tmp_path / "target")
    tampered = tar_bytes([(f"{K}.json", json.dumps({"key": K, "evil": True}).encode())])
    (folder / TRAIN_TAR).write_bytes(tampered)  # the manifest keeps the real sha256

    def killed(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(dl, "_verify", killed)
    with pytest.raises(KeyboardInterrupt):
        download(str(tmp_path / "target"), tmp_path / "to", config="media")
    monkeypatch.undo()
    to = tmp_path / "to"
    assert not ((to / TRAIN_TAR).is_file() and (to / TRAIN_TAR).read_bytes() == tampered), "unverified shard left under its real name"


def test_iter_samples_on_a_download_folder_checks_sha256(tmp_path: Path, release_builds) -> None:
    folder = store_from(release_builds[1], tmp_path / "target")
    download(str(tmp_path / "target"), tmp_path / "to", config="media")
    tampered = tar_bytes([(f"{K}.json", json.dumps({"key": K, "evil": True}).encode())])
    (tmp_path / "to" / TRAIN_TAR).write_bytes(tampered)
    with pytest.raises((UserError, ValueError)):
        list(iter_samples(tmp_path / "to", split="train"))
    del folder


def test_failed_verification_leaves_nothing_load_split_trusts(tmp_path: Path, release_builds) -> None:
    folder = store_from(release_builds[1], tmp_path / "target")
    (folder / VALID_PQ).write_bytes(b"tampered")
    with pytest.raises(UserError, match="sha256 differs"):
        download(str(tmp_path / "target"), tmp_path / "to")
    assert not (tmp_path / "to" / VALID_PQ).exists()
    with pytest.raises(UserError):
        load_split(tmp_path / "to", split="validation", cache_dir=tmp_path / "cache")
    assert not list((tmp_path / "to").rglob("*.partial"))


def test_download_into_a_file_is_a_user_error(tmp_path: Path, release_builds) -> None:
    store_from(release_builds[0], tmp_path / "target")
    (tmp_path / "to").write_text("a file")
    user_error_or_value_error(lambda: download(str(tmp_path / "target"), tmp_path / "to"))


# -- huge declared size --------------------------------------------------------------------------------------------------


def test_huge_declared_member_size(tmp_path: Path, release_builds) -> None:
    """A header that declares 1 TB followed by a few bytes: a clean error, not a hang, MemoryError or traceback."""
    out = tmp_path / "out"
    (out / "media").mkdir(parents=True)
    shutil.copyfile(release_builds[1] / "manifest.json", out / "manifest.json")
    info = tarfile.TarInfo(f"{K}.json")
    info.size = 10**12
    (out / TRAIN_TAR).write_bytes(info.tobuf(tarfile.PAX_FORMAT) + b"{}" + b"\0" * 2046)
    user_error_or_value_error(lambda: list(iter_samples(out, split="train")))


# -- the token -----------------------------------------------------------------------------------------------------------


def _hub_release(monkeypatch, tmp_path, release_builds):
    from tests.hub_loopback import hub_server, online_hub
    from tests.test_download import TOKEN, build_files, seed

    ctx = hub_server(TOKEN)
    hub = ctx.__enter__()
    online_hub(monkeypatch, hub, home=tmp_path / "hf-home")
    seed(hub, [("1.0.0", build_files(release_builds[0]))])
    return ctx, hub, TOKEN


@pytest.mark.parametrize("route,status", [("resolve", 500), ("resolve", 401), ("resolve", 403), ("refs", 500), ("cdn", 404)])
def test_token_not_in_errors_when_the_hub_echoes_it(monkeypatch, tmp_path: Path, release_builds, route: str, status: int) -> None:
    """A proxy / hostile endpoint that echoes the Authorization header in its error body."""
    from tests.test_download import REPO

    ctx, hub, token = _hub_release(monkeypatch, tmp_path, release_builds)
    try:
        monkeypatch.setenv("HF_TOKEN", token)
        hub.fail_next(route, status, message=f"denied for Authorization: Bearer {token}", times=20)
        with pytest.raises(UserError) as e:
            download(REPO, tmp_path / "to", endpoint=hub.url)
        assert token not in str(e.value), str(e.value)
        leaked = [p for p in tmp_path.rglob("*") if p.is_file() and "hf-home" not in p.parts and token.encode() in p.read_bytes()]
        assert not leaked
    finally:
        ctx.__exit__(None, None, None)


@pytest.mark.parametrize("bad_char", ["\x01", "\x7f", "\x00"])
def test_token_with_a_control_character_is_not_printed(monkeypatch, tmp_path: Path, release_builds, bad_char: str) -> None:
    """A token pasted with a stray control character: the HTTP library refuses the header, quoting it."""
    from tests.test_download import REPO

    ctx, hub, token = _hub_release(monkeypatch, tmp_path, release_builds)
    try:
        bad = token[:10] + bad_char + token[10:]
        try:
            download(REPO, tmp_path / "to", endpoint=hub.url, token=bad)
        except UserError as e:
            assert token[10:] not in str(e), str(e)
        except BaseException as e:  # noqa: BLE001
            pytest.fail(f"{type(e).__name__} (a traceback): {e!s:.300}")
        if "\x00" in bad:
            return  # an environment variable cannot hold a NUL: only the token= argument can
        monkeypatch.setenv("HF_TOKEN", bad)
        import contextlib
        import sys

        from emer_builder.cli.main import main

        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(err):
            try:
                main(["download", REPO, "--to", str(tmp_path / "to2"), "--endpoint", hub.url])
            except SystemExit:
                pass
        assert token[10:] not in err.getvalue(), err.getvalue()[-500:]
        del sys
    finally:
        ctx.__exit__(None, None, None)


# -- sources that are not plain files of the declared size -----------------------------------------------------------------

_RUN = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing us
resource.setrlimit(resource.RLIMIT_FSIZE, (20 << 20, 20 << 20))  # this probe never fills the disk
from emer_builder.release.download import download
try:
    download(sys.argv[1], sys.argv[2])
except Exception as e:
    print(type(e).__name__, str(e)[:400])
"""


def _run_download(target: Path, to: Path, timeout: float):
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    return subprocess.run([sys.executable, "-c", _RUN, str(target), str(to)], cwd=root, capture_output=True, text=True, timeout=timeout)


def test_a_source_longer_than_its_declared_bytes_is_not_copied_past_them(tmp_path: Path, release_builds) -> None:
    """`failures.parquet -> /dev/zero` (or an object larger than the manifest says): the copy should stop once it
    exceeds the manifest's `bytes`, not stream until the disk is full (here: a 20 MB file-size limit)."""
    folder = store_from(release_builds[0], tmp_path / "target")
    (folder / "failures.parquet").unlink()
    (folder / "failures.parquet").symlink_to("/dev/zero")
    done = _run_download(tmp_path / "target", tmp_path / "to", timeout=120)
    assert "File too large" not in done.stdout, done.stdout


def test_a_fifo_in_a_folder_release_does_not_hang_the_download(tmp_path: Path, release_builds) -> None:
    import subprocess

    folder = store_from(release_builds[0], tmp_path / "target")
    (folder / "failures.parquet").unlink()
    os.mkfifo(folder / "failures.parquet")
    try:
        _run_download(tmp_path / "target", tmp_path / "to", timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail("download blocked on a FIFO of the release folder for 30 s")


def test_a_directory_where_a_release_file_should_be_is_a_user_error(tmp_path: Path, release_builds) -> None:
    folder = store_from(release_builds[0], tmp_path / "target")
    (folder / TRAIN_PQ).unlink()
    (folder / TRAIN_PQ).mkdir()
    with pytest.raises(UserError):
        download(str(tmp_path / "target"), tmp_path / "to")


def test_cli_download_of_a_nested_path_manifest_is_one_line(tmp_path: Path, release_builds, capsys) -> None:
    from emer_builder.cli.main import main

    folder = store_from(release_builds[0], tmp_path / "target")
    data = (folder / TRAIN_PQ).read_bytes()
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"][f"{TRAIN_PQ}/x.parquet"] = {"sha256": sha(data), "bytes": len(data)}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    try:
        code = main(["download", str(tmp_path / "target"), "--to", str(tmp_path / "to")])
    except BaseException as e:  # noqa: BLE001
        pytest.fail(f"`emer download` ended in a traceback: {type(e).__name__}: {e}")
    assert code == 2
