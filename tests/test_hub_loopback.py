"""The real huggingface_hub client against the loopback Hub: what our publish/download code will rely on.

Each test starts its own server (cheap) and calls `online_hub` because conftest.py makes the session offline.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import httpx2
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from huggingface_hub import CommitOperationAdd, CommitOperationCopy, CommitOperationDelete, HfApi, constants, hf_hub_download, snapshot_download
from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled, RepositoryNotFoundError, RevisionNotFoundError

from tests.hub_loopback import HubLoopback, hub_server, online_hub

TOKEN = "hf_loopbackSECRETtoken0123456789"
REPO = "emer/demo-emotions"


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    with hub_server(TOKEN) as server:
        online_hub(monkeypatch, server, home=tmp_path / "hf-home")
        yield server


@pytest.fixture
def api(hub: HubLoopback) -> HfApi:
    return HfApi(endpoint=hub.url, token=hub.token)


def make_folder(root: Path, seed: int = 0) -> dict[str, bytes]:
    """A small dataset folder: text files, a >1 KB binary, a real parquet, a README card. Returns path -> bytes."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "data").mkdir(exist_ok=True)
    pq.write_table(pa.table({"key": [f"clip-{i}" for i in range(50)], "label": ["happy", "sad"] * 25, "seed": [seed] * 50}), root / "data" / "train.parquet")
    (root / "README.md").write_text(f"---\nlicense: cc-by-4.0\npretty_name: EMER demo\n---\n# EMER demo (build {seed})\n")
    (root / "notes.txt").write_text(f"build {seed}\n")
    (root / "shards").mkdir(exist_ok=True)
    (root / "shards" / "000000.bin").write_bytes(bytes((i * 7 + seed) % 256 for i in range(4096)))
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def downloaded(local_dir: Path) -> dict[str, bytes]:
    return {p.relative_to(local_dir).as_posix(): p.read_bytes() for p in local_dir.rglob("*") if p.is_file() and ".cache" not in p.parts}


def test_create_repo_public_and_private(hub: HubLoopback, api: HfApi) -> None:
    url = api.create_repo(REPO, repo_type="dataset")
    assert (url.repo_id, url.repo_type, url.endpoint) == (REPO, "dataset", hub.url)
    api.create_repo("emer/hidden", repo_type="dataset", private=True)
    with pytest.raises(HfHubHTTPError) as exc:
        api.create_repo(REPO, repo_type="dataset")
    assert exc.value.response.status_code == 409
    assert api.create_repo(REPO, repo_type="dataset", exist_ok=True).repo_id == REPO
    assert api.whoami()["name"] == hub.user

    anonymous = HfApi(endpoint=hub.url, token=False)
    assert anonymous.dataset_info(REPO).private is False
    assert anonymous.list_repo_files(REPO, repo_type="dataset") == [".gitattributes"]  # the Hub's "initial commit"
    with pytest.raises(RepositoryNotFoundError):
        anonymous.dataset_info("emer/hidden")
    assert not anonymous.repo_exists("emer/hidden", repo_type="dataset")
    assert not anonymous.file_exists("emer/hidden", ".gitattributes", repo_type="dataset")
    with pytest.raises(RepositoryNotFoundError):
        snapshot_download("emer/hidden", repo_type="dataset", token=False, endpoint=hub.url)
    assert api.dataset_info("emer/hidden").private is True
    assert api.file_exists("emer/hidden", ".gitattributes", repo_type="dataset")

    with pytest.raises(ValueError, match="Invalid metadata in README.md"):  # validate-yaml refuses a broken card before any upload
        api.upload_file(path_or_fileobj=b"---\nlicense: [\n---\n# card\n", path_in_repo="README.md", repo_id=REPO, repo_type="dataset")

    with pytest.raises(HfHubHTTPError) as exc:  # writes need the token
        anonymous.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=REPO, repo_type="dataset")
    assert exc.value.response.status_code == 401
    with pytest.raises(HfHubHTTPError) as exc:  # a wrong token is refused even on a public read, like the Hub
        HfApi(endpoint=hub.url, token="hf_wrong").dataset_info(REPO)
    assert exc.value.response.status_code == 401


def test_publish_tag_download_round_trip(hub: HubLoopback, api: HfApi, tmp_path: Path) -> None:
    api.create_repo(REPO, repo_type="dataset")
    v1 = make_folder(tmp_path / "v1", seed=1)
    commit = api.upload_folder(repo_id=REPO, repo_type="dataset", folder_path=tmp_path / "v1", commit_message="EMER build 1")
    assert len(commit.oid) == 40 and commit.oid == hub.resolve(REPO)

    stored = hub.files(REPO)
    assert {p for p, f in stored.items() if f.lfs} == {"data/train.parquet", "shards/000000.bin"}  # suffix / size rule
    assert all(stored[p].data == v1[p] for p in v1)
    assert hub.lfs_upload_count == 2 and sorted(hub.lfs_uploaded_oids) == sorted(stored[p].sha256 for p in ("data/train.parquet", "shards/000000.bin"))

    api.create_tag(REPO, repo_type="dataset", tag="v1.0.0", revision=commit.oid)
    with pytest.raises(HfHubHTTPError) as exc:
        api.create_tag(REPO, repo_type="dataset", tag="v1.0.0")
    assert exc.value.response.status_code == 409
    refs = api.list_repo_refs(REPO, repo_type="dataset")
    assert [(t.name, t.target_commit) for t in refs.tags] == [("v1.0.0", commit.oid)]
    assert [(b.name, b.target_commit) for b in refs.branches] == [("main", commit.oid)]

    # A second build moves main; the tag keeps serving the old bytes.
    v2 = make_folder(tmp_path / "v2", seed=2)
    commit2 = api.upload_folder(repo_id=REPO, repo_type="dataset", folder_path=tmp_path / "v2", commit_message="EMER build 2")
    assert commit2.oid != commit.oid and v2["data/train.parquet"] != v1["data/train.parquet"]

    allow = ["data/*", "README.md"]
    out = Path(snapshot_download(REPO, repo_type="dataset", revision="v1.0.0", allow_patterns=allow, local_dir=tmp_path / "dl1", endpoint=hub.url))
    assert downloaded(out) == {p: v1[p] for p in ("data/train.parquet", "README.md")}
    assert pq.read_table(out / "data" / "train.parquet").column("seed").to_pylist() == [1] * 50
    out2 = Path(snapshot_download(REPO, repo_type="dataset", allow_patterns=allow, local_dir=tmp_path / "dl2"))  # endpoint from constants
    assert downloaded(out2) == {p: v2[p] for p in ("data/train.parquet", "README.md")}
    cached = hf_hub_download(REPO, "shards/000000.bin", repo_type="dataset", revision="v1.0.0", cache_dir=tmp_path / "cache")
    assert Path(cached).read_bytes() == v1["shards/000000.bin"] and commit.oid in cached

    # The token went only to the Hub origin, in the Authorization header: never to the CDN or the signed upload URL.
    assert hub.token_leaks() == []
    for r in hub.requests:
        sent = r.header("Authorization")
        if r.route in ("cdn", "lfs_upload"):
            assert sent is None, (r.route, r.path)
        elif sent is not None:
            assert sent == f"Bearer {TOKEN}" and r.host == f"127.0.0.1:{hub.port}"
    assert {r.host for r in hub.requests_for("cdn")} == {f"localhost:{hub.port}"}
    heads = [r for r in hub.requests_for("resolve") if r.method == "HEAD"]
    assert heads and all(r.status in (200, 302) for r in heads)


def test_reupload_identical_content_uploads_nothing(hub: HubLoopback, api: HfApi, tmp_path: Path) -> None:
    api.create_repo(REPO, repo_type="dataset")
    make_folder(tmp_path / "v1", seed=1)
    first = api.upload_folder(repo_id=REPO, repo_type="dataset", folder_path=tmp_path / "v1")
    uploads, uploaded = hub.lfs_upload_count, hub.lfs_uploaded_bytes
    assert uploads == 2

    # Same folder again: the client sees identical remote oids and commits nothing.
    again = api.upload_folder(repo_id=REPO, repo_type="dataset", folder_path=tmp_path / "v1")
    assert again.oid == first.oid == hub.resolve(REPO)
    # Same LFS content under a new name: the batch answers "already stored", so there is a commit but no PUT.
    parquet = (tmp_path / "v1" / "data" / "train.parquet").read_bytes()
    copy = api.create_commit(REPO, repo_type="dataset", operations=[CommitOperationAdd("data/copy.parquet", parquet)], commit_message="copy")
    assert copy.oid != first.oid and hub.read_file(REPO, "data/copy.parquet") == parquet
    assert (hub.lfs_upload_count, hub.lfs_uploaded_bytes) == (uploads, uploaded)
    assert [len(r.json()["objects"][0].get("actions", {})) for r in hub.requests_for("lfs_batch")][-1] == 0


def test_parent_commit_race_gets_412(hub: HubLoopback, api: HfApi) -> None:
    api.create_repo(REPO, repo_type="dataset")
    head = api.dataset_info(REPO).sha
    other = HfApi(endpoint=hub.url, token=hub.token)
    api.create_commit(REPO, repo_type="dataset", operations=[CommitOperationAdd("a.txt", b"first")], commit_message="a", parent_commit=head)
    with pytest.raises(HfHubHTTPError) as exc:
        other.create_commit(REPO, repo_type="dataset", operations=[CommitOperationAdd("b.txt", b"second")], commit_message="b", parent_commit=head)
    assert exc.value.response.status_code == 412
    assert hub.list_paths(REPO) == [".gitattributes", "a.txt"]

    # A racing publisher that commits while our commit request is in flight (hook runs before it is handled).
    head = hub.resolve(REPO)
    hub.on("commit", lambda _req: other.upload_file(path_or_fileobj=b"racer", path_in_repo="racer.txt", repo_id=REPO, repo_type="dataset"))
    with pytest.raises(HfHubHTTPError) as exc:
        api.create_commit(REPO, repo_type="dataset", operations=[CommitOperationAdd("c.txt", b"late")], commit_message="c", parent_commit=head)
    assert exc.value.response.status_code == 412 and not hub.hook_errors
    assert hub.list_paths(REPO) == [".gitattributes", "a.txt", "racer.txt"]


def test_interrupted_publish_faults(hub: HubLoopback, api: HfApi) -> None:
    api.create_repo(REPO, repo_type="dataset")
    commit = api.create_commit(REPO, repo_type="dataset", operations=[CommitOperationAdd("a.txt", b"one")], commit_message="one")

    hub.fail_next("tag", status=500)  # the publisher dies between commit and tag: commit there, no tag
    with pytest.raises(HfHubHTTPError) as exc:
        api.create_tag(REPO, repo_type="dataset", tag="v1.0.0", revision=commit.oid)
    assert exc.value.response.status_code == 500 and hub.repo(REPO).tags == {}
    api.create_tag(REPO, repo_type="dataset", tag="v1.0.0", revision=commit.oid)  # a re-run completes it

    hub.fail_next("commit", status=500, after=True)  # applied, but the answer is lost
    with pytest.raises(HfHubHTTPError):
        api.create_commit(REPO, repo_type="dataset", operations=[CommitOperationAdd("b.txt", b"two")], commit_message="two")
    assert hub.read_file(REPO, "b.txt") == b"two"

    hub.drop_next("commit")  # connection closed, nothing applied
    head = hub.resolve(REPO)
    with pytest.raises(httpx2.RemoteProtocolError):
        api.create_commit(REPO, repo_type="dataset", operations=[CommitOperationAdd("c.txt", b"three")], commit_message="three")
    assert hub.resolve(REPO) == head and hub.requests_for("commit")[-1].status is None

    hold = hub.hold_next("tag")  # park the tag request: a test can kill a publisher subprocess here
    worker = threading.Thread(target=api.create_tag, kwargs={"repo_id": REPO, "repo_type": "dataset", "tag": "v2.0.0"})
    worker.start()
    assert hold.wait(5) and "v2.0.0" not in hub.repo(REPO).tags
    hold.release()
    worker.join(5)
    assert hub.repo(REPO).tags["v2.0.0"] == head

    api.delete_tag(REPO, repo_type="dataset", tag="v2.0.0")
    with pytest.raises(RevisionNotFoundError):
        api.dataset_info(REPO, revision="v2.0.0")


def test_resumed_download_uses_range(hub: HubLoopback, api: HfApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    api.create_repo(REPO, repo_type="dataset")
    blob = os.urandom(200_000)
    api.upload_file(path_or_fileobj=blob, path_in_repo="shards/big.tar", repo_id=REPO, repo_type="dataset")
    # The client keeps only whole chunks of constants.DOWNLOAD_CHUNK_SIZE (10 MiB) when a body breaks: shrink it so
    # the resume is visible on a small file; the connection then dies after three chunks.
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 16 * 1024)
    hub.cut_next_download(3 * 16 * 1024)
    path = hf_hub_download(REPO, "shards/big.tar", repo_type="dataset", cache_dir=tmp_path / "cache", endpoint=hub.url)
    assert Path(path).read_bytes() == blob
    gets = [r for r in hub.requests_for("cdn") if r.method == "GET"]
    assert [(r.header("Range"), r.status) for r in gets] == [(None, 200), (f"bytes={3 * 16 * 1024}-", 206)]


def test_tree_pagination_paths_info_and_deletes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with hub_server(TOKEN, tree_page_size=3, cdn_host=None) as hub:
        online_hub(monkeypatch, hub, home=tmp_path / "hf-home")
        api = HfApi(endpoint=hub.url, token=hub.token)
        api.create_repo(REPO, repo_type="dataset")
        ops = [CommitOperationAdd(f"split/part-{i}.txt", f"row {i}\n".encode()) for i in range(8)]
        api.create_commit(REPO, repo_type="dataset", operations=ops, commit_message="eight parts")
        files = api.list_repo_files(REPO, repo_type="dataset")
        assert files == [".gitattributes"] + [f"split/part-{i}.txt" for i in range(8)]
        assert len(hub.requests_for("tree")) == 4  # 10 entries (the folder included) in pages of 3, linked by `Link: rel=next`

        infos = api.get_paths_info(REPO, ["split", "split/part-3.txt", "missing.txt"], repo_type="dataset")
        assert [(type(i).__name__, i.path) for i in infos] == [("RepoFolder", "split"), ("RepoFile", "split/part-3.txt")]

        api.create_commit(
            REPO,
            repo_type="dataset",
            operations=[CommitOperationDelete("split/part-0.txt"), CommitOperationCopy("split/part-1.txt", "copy.txt")],
            commit_message="delete and copy",
        )
        assert hub.list_paths(REPO) == [".gitattributes", "copy.txt"] + [f"split/part-{i}.txt" for i in range(1, 8)]
        api.delete_folder("split", repo_id=REPO, repo_type="dataset")
        assert hub.list_paths(REPO) == [".gitattributes", "copy.txt"]
        assert [c.title for c in api.list_repo_commits(REPO, repo_type="dataset")] == [
            "Delete folder split with huggingface_hub",
            "delete and copy",
            "eight parts",
            "initial commit",
        ]


def test_offline_constant_is_read_at_import(hub: HubLoopback, api: HfApi, monkeypatch: pytest.MonkeyPatch) -> None:
    """Why online_hub patches `constants`: the env var alone changes nothing once huggingface_hub is imported."""
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(OfflineModeIsEnabled):
        api.whoami()
    assert hub.requests == []
