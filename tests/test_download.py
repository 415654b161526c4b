"""`emer download`, `load_split` and `iter_samples` against the loopback Hub (the real huggingface_hub client) and
against a directory laid out like `emer publish` writes one.

The Hub repo is seeded here with the real client (one commit per release with every build file, then a `vX.Y.Z`
tag), so these tests do not depend on `emer publish`.
"""

from __future__ import annotations

import io
import json
import logging
import shutil
import subprocess
import sys
import tarfile
import threading
from pathlib import Path
from urllib.parse import unquote

import cv2
import datasets
import numpy as np
import pyarrow.parquet as pq
import pytest
from emer_builder.core.errors import UserError
from emer_builder.release.download import check_shard, download, iter_samples, load_split
from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, constants

from tests.hub_loopback import HubLoopback, hub_server, online_hub, wait_until

TOKEN = "hf_downloadSECRETtoken0123456789"
REPO = "emer/demo-release"
ROOT = Path(__file__).resolve().parents[1]
TRAIN, VALID = "data/train-00000-of-00001.parquet", "data/validation-00000-of-00001.parquet"


def build_files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def downloaded(to: Path) -> dict[str, bytes]:
    """What a download left for users: everything but huggingface_hub's `.cache` bookkeeping."""
    return {p.relative_to(to).as_posix(): p.read_bytes() for p in sorted(to.rglob("*")) if p.is_file() and ".cache" not in p.relative_to(to).parts}


def default_config(files: dict[str, bytes]) -> dict[str, bytes]:
    return {p: d for p, d in files.items() if p.startswith("data/") or p in ("failures.parquet", "manifest.json", "README.md", "releases.json")}


def seed(hub: HubLoopback, releases: list[tuple[str, dict[str, bytes]]], repo: str = REPO, private: bool = False) -> None:
    """One commit per release with all its files plus releases.json (newest first), tagged vX.Y.Z."""
    api = HfApi(endpoint=hub.url, token=hub.token)
    api.create_repo(repo, repo_type="dataset", private=private, exist_ok=True)
    published = sorted(hub.repo(repo).tags, reverse=True)
    previous = set(hub.files(repo))
    for version, files in releases:
        published.insert(0, f"v{version}")
        files = {**files, "releases.json": json.dumps([{"version": v[1:]} for v in published]).encode()}
        ops = [CommitOperationAdd(p, d) for p, d in files.items()] + [CommitOperationDelete(p) for p in sorted(previous - set(files) - {".gitattributes"})]
        api.create_commit(repo, ops, commit_message=f"v{version}", repo_type="dataset")
        api.create_tag(repo, tag=f"v{version}", repo_type="dataset")
        previous = set(files)


def requested(hub: HubLoopback, version: str = "v1.1.0") -> list[str]:
    """Files whose content was asked for (resolve HEAD/GET, CDN GET by sha256), in order, with repeats."""
    by_sha = {f.sha256: p for p, f in hub.files(REPO, version).items()}
    out = []
    for r in hub.requests:
        if r.route == "resolve":
            out.append(unquote(r.path.split("?")[0]).split("/resolve/", 1)[1].split("/", 1)[1])
        elif r.route == "cdn" and r.method == "GET":
            out.append(by_sha.get(r.path.split("/cdn-lfs/")[1].split("?")[0], "?"))
    return out


@pytest.fixture
def builds(release_builds: tuple[Path, Path]) -> tuple[dict[str, bytes], dict[str, bytes]]:
    return build_files(release_builds[0]), build_files(release_builds[1])


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, builds: tuple[dict[str, bytes], dict[str, bytes]]):
    with hub_server(TOKEN) as server:
        online_hub(monkeypatch, server, home=tmp_path / "hf-home")
        seed(server, [("1.0.0", builds[0]), ("1.1.0", builds[1])])
        server.clear_requests()
        yield server


def test_download_gives_the_release_byte_for_byte(hub: HubLoopback, tmp_path: Path, builds) -> None:
    v1, v2 = builds
    result = download(REPO, tmp_path / "v1", version="1.0.0", endpoint=hub.url)
    got = downloaded(tmp_path / "v1")
    assert json.loads(got.pop("releases.json")) == [{"version": "1.0.0"}]
    assert got == default_config(v1)
    assert (result.version, result.verified, result.present) == ("1.0.0", 3, ())
    assert result.fetched == ("data/train-00000-of-00001.parquet", "data/validation-00000-of-00001.parquet", "failures.parquet")
    assert result.bytes_fetched == sum(len(v1[p]) for p in result.fetched)
    assert "v1.0.0" in result.text() and "3 files fetched" in result.text() and "3 files verified" in result.text()

    latest = download(REPO, tmp_path / "latest", endpoint=hub.url)  # no version: the highest tag
    assert latest.version == "1.1.0"
    got = downloaded(tmp_path / "latest")
    assert json.loads(got.pop("releases.json")) == [{"version": "1.1.0"}, {"version": "1.0.0"}]
    assert got == default_config(v2)

    hub.clear_requests()
    again = download(REPO, tmp_path / "latest", version="v1.1.0", endpoint=hub.url)  # nothing to fetch: only the manifest is read
    assert (again.fetched, again.present, again.verified) == ((), latest.fetched, 3)
    assert set(requested(hub)) == {"manifest.json"}

    with pytest.raises(UserError, match=r"already holds another release"):
        download(REPO, tmp_path / "v1", version="1.1.0", endpoint=hub.url)
    with pytest.raises(UserError, match=r"no release '2\.0\.0'; available: 1\.1\.0, 1\.0\.0"):
        download(REPO, tmp_path / "x", version="2.0.0", endpoint=hub.url)
    with pytest.raises(UserError, match=r"no split 'test' in this release; its splits: train, validation"):
        download(REPO, tmp_path / "x", splits=["test"], endpoint=hub.url)
    with pytest.raises(UserError, match="unknown config 'audio'"):
        download(REPO, tmp_path / "x", config="audio", endpoint=hub.url)


def test_split_and_media_config_fetch_only_those_files(hub: HubLoopback, tmp_path: Path, builds) -> None:
    result = download(REPO, tmp_path / "to", splits=["validation"], config="media", endpoint=hub.url)
    tar = "media/validation-00000-of-00001.tar"
    assert set(downloaded(tmp_path / "to")) == {"manifest.json", "README.md", "releases.json", "media/README.md", tar}
    assert downloaded(tmp_path / "to")[tar] == builds[1][tar]
    assert (result.fetched, result.verified) == ((tar,), 1)
    asked = requested(hub)
    assert set(asked) == {"manifest.json", "README.md", "releases.json", "media/README.md", tar}
    assert asked.count(tar) == 2  # its HEAD and its GET, nothing else of the 9 files of the release


def test_tampered_release_is_refused_naming_the_file(hub: HubLoopback, tmp_path: Path, builds) -> None:
    v1 = builds[0]
    broken = bytearray(v1[TRAIN])
    broken[len(broken) // 2] ^= 0xFF
    seed(hub, [("1.0.1", {**v1, TRAIN: bytes(broken)})])  # the v1 manifest with a changed file
    hub.clear_requests()
    with pytest.raises(UserError, match=rf"{TRAIN}: sha256 differs from the release manifest even after fetching it again"):
        download(REPO, tmp_path / "to", version="1.0.1", endpoint=hub.url)
    assert not (tmp_path / "to" / TRAIN).exists()  # the bad copy is not left for anyone to read
    assert requested(hub, "v1.0.1").count(TRAIN) == 4  # fetched, then fetched once more (HEAD + GET each)


def test_a_corrupted_local_copy_is_fetched_again(hub: HubLoopback, tmp_path: Path, builds) -> None:
    download(REPO, tmp_path / "to", version="1.0.0", endpoint=hub.url)
    path = tmp_path / "to" / VALID
    path.write_bytes(path.read_bytes()[:-1] + b"\0")  # bit rot; huggingface_hub's own metadata still says "up to date"
    result = download(REPO, tmp_path / "to", version="1.0.0", endpoint=hub.url)
    assert result.redownloaded == (VALID,) and result.fetched == (VALID,)
    assert path.read_bytes() == builds[0][VALID]
    assert "fetched again after a checksum mismatch: " + VALID in result.text()


def test_a_cut_transfer_resumes_with_range_in_the_same_run(hub: HubLoopback, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, builds) -> None:
    download(REPO, tmp_path / "to", endpoint=hub.url)
    (tmp_path / "to" / TRAIN).unlink()  # the one file the next run fetches
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 256)  # the client resumes from whole chunks only
    hub.on("resolve", lambda r: hub.cut_next_download(700) if r.path.endswith(TRAIN) else None, times=100)  # its HEAD: cut its GET
    hub.clear_requests()
    result = download(REPO, tmp_path / "to", endpoint=hub.url)
    ranges = [r.header("Range") for r in hub.requests_for("cdn") if r.header("Range")]
    assert ranges == ["bytes=512-"]
    assert result.fetched == (TRAIN,) and result.verified == 3 and (tmp_path / "to" / TRAIN).read_bytes() == builds[1][TRAIN]


def test_a_killed_download_resumes_on_rerun(hub: HubLoopback, tmp_path: Path, builds) -> None:
    to = tmp_path / "to"
    parked, arrived = threading.Event(), threading.Event()
    target = hub.files(REPO, "v1.1.0")[VALID].sha256

    def park(request) -> None:  # holds the first transfer of one file until the downloader is dead
        if target in request.path and not arrived.is_set():
            arrived.set()
            parked.wait(30)

    hub.on("cdn", park, times=1000)
    code = f"from emer_builder.release.download import download; download({REPO!r}, {str(to)!r}, endpoint={hub.url!r})"
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert arrived.wait(60), "the downloader never asked for the parked file"
        done = [to / p for p in (TRAIN, "failures.parquet", "README.md", "releases.json")]
        done += [to / ".cache" / "huggingface" / "download" / f"{p.relative_to(to)}.metadata" for p in done]
        assert wait_until(lambda: all(p.is_file() for p in done), 30)
    finally:
        proc.kill()
        proc.wait()
        parked.set()
    assert not (to / VALID).exists()

    hub.clear_requests()
    result = download(REPO, to, endpoint=hub.url)
    assert result.fetched == (VALID,) and set(result.present) == {TRAIN, "failures.parquet"} and result.verified == 3
    assert set(requested(hub)) == {"manifest.json", VALID}
    got = downloaded(to)
    assert got.pop("releases.json") and got == default_config(builds[1])


@pytest.mark.parametrize("bad", ["../x", "/etc/passwd", "data/../../x", "notes/x.txt", "data\\..\\x", "data/./x.parquet", "data//x.parquet", "media/", "C:/x"])
def test_unsafe_manifest_paths_are_refused(tmp_path: Path, builds, bad: str) -> None:
    target = tmp_path / "target"
    manifest = json.loads(builds[0]["manifest.json"])
    manifest["files"][bad] = {"sha256": "0" * 64, "bytes": 1}
    (target / "v1.0.0").mkdir(parents=True)
    (target / "v1.0.0" / "manifest.json").write_text(json.dumps(manifest))
    (target / "releases.json").write_text(json.dumps([{"version": "1.0.0"}]))
    with pytest.raises(UserError, match="unsafe path"):
        download(str(target), tmp_path / "to")
    assert not (tmp_path / "to").exists() and not (tmp_path / "x").exists()


def test_unsafe_manifest_on_the_hub_fetches_nothing(hub: HubLoopback, tmp_path: Path, builds) -> None:
    manifest = json.loads(builds[0]["manifest.json"])
    manifest["files"]["../x"] = manifest["files"].pop(TRAIN)
    seed(hub, [("1.0.2", {**builds[0], "manifest.json": json.dumps(manifest).encode()})])
    hub.clear_requests()
    with pytest.raises(UserError, match=r"unsafe path '\.\./x'"):
        download(REPO, tmp_path / "sub" / "to", version="1.0.2", endpoint=hub.url)
    assert set(requested(hub, "v1.0.2")) == {"manifest.json"} and not (tmp_path / "sub" / "x").exists()


def test_load_split_gives_the_split_as_a_dataset(hub: HubLoopback, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, builds) -> None:
    keys = json.loads(builds[1]["manifest.json"])["keys"]
    rows = load_split(REPO, split="validation", endpoint=hub.url, cache_dir=tmp_path / "cache")
    assert isinstance(rows, datasets.Dataset) and sorted(rows["key"]) == keys["validation"]
    assert rows.to_list() == pq.read_table(io.BytesIO(builds[1][VALID])).to_pylist()

    monkeypatch.setenv("EMER_HOME", str(tmp_path / "emer-home"))  # the default place: $EMER_HOME/releases/<repo>/<version>
    media = load_split(REPO, version="1.0.0", split="train", config="media", endpoint=hub.url)
    assert isinstance(media, datasets.Dataset) and media["__key__"] == json.loads(builds[0]["manifest.json"])["keys"]["train"]
    assert media.features["flac"] == datasets.Value("binary") and isinstance(media.features["face_000.jpg"], datasets.Image)
    assert media[0]["json"]["key"] == media[0]["__key__"] and media[0]["flac"][:4] == b"fLaC"
    (release,) = (tmp_path / "emer-home" / "releases").glob("emer_demo-release-*/1.0.0")
    assert (release / "media" / "train-00000-of-00001.tar").is_file()


def test_iter_samples_matches_the_parquet_rows(hub: HubLoopback, tmp_path: Path, release_builds: tuple[Path, Path]) -> None:
    out = release_builds[1]  # a local build folder is read directly
    rows = {r["key"]: r for r in pq.read_table(out / VALID).to_pylist()}
    samples = list(iter_samples(out, split="validation"))
    assert [s["__key__"] for s in samples] == sorted(rows)
    for sample in samples:
        row = rows[sample["__key__"]]
        assert sample["json"] == row and sample["flac"][:4] == b"fLaC"
        assert len(sample["faces"]) == len(row["faces"]["crops"])
        for jpeg in sample["faces"]:
            image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
            assert image is not None and image.shape[2] == 3
    assert sum(len(s["faces"]) for s in samples) > 0

    from_hub = list(iter_samples(REPO, split="train", endpoint=hub.url, cache_dir=tmp_path / "cache"))
    assert [s["__key__"] for s in from_hub] == json.loads((out / "manifest.json").read_text())["keys"]["train"]


def _tar(path: Path, members: list[tarfile.TarInfo]) -> None:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for info in members:
            tar.addfile(info, io.BytesIO(b"{}") if info.isreg() else None)


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, link, 2 if kind == tarfile.REGTYPE else 0
    return info


@pytest.mark.parametrize(
    ("split", "members", "message"),
    [
        ("train", [_member("../evil.json")], r"member '\.\./evil\.json' is not named \{key\}\.\{suffix\}"),
        ("train", [_member("/abs.json")], r"member '/abs\.json' is not named"),
        ("train", [_member("stranger.json")], r"key 'stranger' is not one of the manifest's keys"),
        ("train", [_member("jesper_intro.json")], r"key 'jesper_intro' is not one of the manifest's keys"),  # a key of another split
        ("train", [_member("sample_00000870.json", tarfile.SYMTYPE, "/etc/passwd")], r"'sample_00000870\.json' is a link"),
        ("train", [_member("sample_00000870.json", tarfile.CHRTYPE)], r"is a device or special file"),
        ("train", [_member("sample_00000870.json"), _member("sample_00000870.pyd")], r"suffix 'pyd' is not one the builder \(or a plug-in stage\) writes"),
        ("train", [_member("sample_00000870.json"), _member("sample_00000870.json")], r"repeats a member"),
        ("train", [_member("sample_00000870.flac")], r"sample 'sample_00000870' has no json member"),
        ("validation", [_member("jesper_intro.json"), _member("no_face_dog.json"), _member("jesper_intro.flac")], r"splits sample 'jesper_intro'"),
    ],
)
def test_bad_tar_members_raise(tmp_path: Path, release_builds: tuple[Path, Path], split: str, members: list[tarfile.TarInfo], message: str) -> None:
    out = tmp_path / "out"  # a local folder whose shard is not the manifest's: refused by its sha256, and its members by check_shard
    (out / "media").mkdir(parents=True)
    shutil.copyfile(release_builds[1] / "manifest.json", out / "manifest.json")
    shard = out / "media" / f"{split}-00000-of-00001.tar"
    _tar(shard, members)
    with pytest.raises(UserError, match=f"{split}-00000-of-00001.tar differ from the sha256"):
        list(iter_samples(out, split=split, cache_dir=tmp_path / "cache"))
    with pytest.raises(ValueError, match=message) as exc:
        check_shard(shard, set(json.loads((out / "manifest.json").read_text())["keys"][split]))
    assert f"{split}-00000-of-00001.tar" in str(exc.value)


def test_directory_target_downloads_and_verifies(tmp_path: Path, release_builds: tuple[Path, Path], builds) -> None:
    target = tmp_path / "target"
    shutil.copytree(release_builds[0], target / "v1.0.0")
    (target / "releases.json").write_text(json.dumps([{"version": "1.0.0"}]))
    result = download(str(target), tmp_path / "to")
    assert (result.version, result.verified, len(result.fetched)) == ("1.0.0", 3, 3)
    assert downloaded(tmp_path / "to") == default_config(builds[0])
    assert download(str(target), tmp_path / "to").fetched == ()  # resume: verified copies are kept

    media = download(f"file://{target}", tmp_path / "media", splits=["train"], config="media")
    assert set(downloaded(tmp_path / "media")) == {"manifest.json", "README.md", "media/README.md", "media/train-00000-of-00001.tar"}
    assert media.verified == 1

    (target / "v1.0.0" / VALID).write_bytes(b"not the parquet the manifest describes")
    with pytest.raises(UserError, match=rf"{VALID}: sha256 differs"):
        download(str(target), tmp_path / "fresh")
    with pytest.raises(UserError, match="no releases.json"):
        download(str(tmp_path / "to"), tmp_path / "x")


def test_token_never_printed_logged_or_written(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, builds, capsys, caplog) -> None:
    from emer_builder.cli.main import main

    with hub_server(TOKEN) as hub:
        online_hub(monkeypatch, hub, home=tmp_path / "hf-home")
        seed(hub, [("1.0.0", builds[0])], private=True)
        with pytest.raises(UserError, match="not found .*token"):
            download(REPO, tmp_path / "anon", endpoint=hub.url, token=False)
        monkeypatch.setenv("HF_TOKEN", TOKEN)
        monkeypatch.setenv("EMER_LOG_LEVEL", "DEBUG")
        caplog.set_level(logging.DEBUG)
        assert main(["download", REPO, "--to", str(tmp_path / "to"), "--endpoint", hub.url]) == 0
        out = capsys.readouterr()
        assert "3 files verified" in out.out
        assert TOKEN not in out.out + out.err + caplog.text
        assert not [p for p in (tmp_path / "to").rglob("*") if p.is_file() and TOKEN.encode() in p.read_bytes()]
        assert hub.token_leaks() == []
        assert all(r.header("Authorization") is None for r in hub.requests_for("cdn"))  # the CDN origin never sees it


def test_a_failed_transfer_is_a_user_error_and_a_rerun_finishes(hub: HubLoopback, tmp_path: Path, builds) -> None:
    download(REPO, tmp_path / "to", endpoint=hub.url)
    (tmp_path / "to" / VALID).unlink()
    failed: list[str] = []

    def fail_once(request) -> None:  # the HEAD of that file: its GET from the CDN gets a 500
        if request.path.endswith(VALID) and not failed:
            failed.append(request.path)
            hub.fail_next("cdn", 500)

    hub.on("resolve", fail_once, times=100)
    with pytest.raises(UserError, match=r"download from emer/demo-release failed .*run the same command again to resume"):
        download(REPO, tmp_path / "to", endpoint=hub.url)
    result = download(REPO, tmp_path / "to", endpoint=hub.url)
    assert result.fetched == (VALID,) and (tmp_path / "to" / VALID).read_bytes() == builds[1][VALID]


def test_load_split_reads_a_local_build_where_it_is_after_checking_it(tmp_path: Path, release_builds: tuple[Path, Path]) -> None:
    """The first thing a user loads is their own build: `load_split(OUT, ...)` works on it like on a
    release (both configs), writes nothing into it, and refuses a shard changed since the build."""
    out = tmp_path / "out"
    shutil.copytree(release_builds[1], out)
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    manifest = json.loads((out / "manifest.json").read_text())
    rows = load_split(out, split="validation", cache_dir=tmp_path / "cache")
    assert isinstance(rows, datasets.Dataset) and sorted(rows["key"]) == manifest["keys"]["validation"]
    assert rows.to_list() == pq.read_table(out / VALID).to_pylist()
    media = load_split(str(out), split="train", config="media", cache_dir=tmp_path / "cache")
    assert media["__key__"] == manifest["keys"]["train"] and media[0]["flac"][:4] == b"fLaC" and media[0]["json"]["key"] == media[0]["__key__"]
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before  # nothing written into the build

    shard = out / "media" / "train-00000-of-00001.tar"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte, same size
    shard.write_bytes(bytes(data))
    with pytest.raises(UserError, match=r"media/train-00000-of-00001.tar differ from the sha256 in its manifest.json \(changed since the build\)"):
        load_split(out, split="train", config="media", cache_dir=tmp_path / "cache")
    with pytest.raises(UserError, match=r"no split 'nope' in this release"):
        load_split(out, split="nope", cache_dir=tmp_path / "cache")
