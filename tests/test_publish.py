"""`emer publish`: small real builds (`release_builds`, written without Beam by tests/release_fixtures.py), the real
huggingface_hub client, the loopback Hub (tests/hub_loopback.py).

What must hold: one commit then one tag per version, tags never moved, versions increase by at least the bump the
schema change requires, an interrupted publish leaves no tag and its re-run uploads nothing twice, a racing
publisher makes ours fail loudly, dry runs write nothing, the token appears nowhere, a corrupted build is never
published, and a directory target gives the same guarantees.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import urllib.request
import uuid
from pathlib import Path

import datasets
import fsspec
import pytest
import yaml
from emer_builder.core.errors import UserError
from emer_builder.release.download import load_split
from emer_builder.release.publish import check_bump, is_hub_repo, parse_version, publish, required_bump, schema_changes
from huggingface_hub import HfApi, hf_hub_download, snapshot_download

from tests.hub_loopback import HubLoopback, hub_server, online_hub

TOKEN = "hf_publishSECRETtoken0123456789"
REPO = "emer/emotions"
REAL_HUB_TOKEN = os.environ.get("HF_TOKEN")  # read before online_hub removes it: the real-Hub test uses it


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    with hub_server(TOKEN) as server:
        online_hub(monkeypatch, server, home=tmp_path / "hf-home")
        yield server


def to_hub(hub: HubLoopback, out: Path, version: str, **kwargs):
    return publish(out, REPO, version, endpoint=hub.url, token=hub.token, **kwargs)


def build_files(out: Path) -> dict[str, bytes]:
    """The files a release must carry byte for byte: those the manifest lists, and the manifest."""
    manifest = json.loads((out / "manifest.json").read_text())
    return {path: (out / path).read_bytes() for path in [*manifest["files"], "manifest.json"]}


def front_matter(card: str) -> dict:
    return yaml.safe_load(card.split("\n---\n", 1)[0].removeprefix("---\n"))


def edited_copy(out: Path, where: Path, edit) -> Path:
    """A copy of a build whose manifest went through `edit` (the data files keep their sha256)."""
    shutil.copytree(out, where)
    manifest = json.loads((where / "manifest.json").read_text())
    edit(manifest)
    (where / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return where


@pytest.mark.slow
def test_two_versions_on_the_hub(hub: HubLoopback, release_builds, capsys, caplog, tmp_path: Path) -> None:
    caplog.set_level(logging.DEBUG)
    v1, v2 = release_builds
    first = to_hub(hub, v1, "1.0.0", private=True)
    print(first.text())
    assert hub.repo(REPO).private and first.required_bump is None
    for path, data in build_files(v1).items():
        assert Path(hf_hub_download(REPO, path, repo_type="dataset", revision="v1.0.0", token=hub.token)).read_bytes() == data, path

    second = to_hub(hub, v2, "1.1.0")
    print(second.text())
    assert hub.resolve(REPO, "v1.1.0") == hub.resolve(REPO, "main") == second.commit
    assert [c.title for c in hub.repo(REPO).history(second.commit)] == ["Release v1.1.0", "Release v1.0.0", "initial commit"]
    assert hub.resolve(REPO, "v1.0.0") == first.commit and len(hub.requests_for("commit")) == 2
    assert {p: hub.read_file(REPO, p, "v1.1.0") for p in build_files(v2)} == build_files(v2)

    releases = json.loads(hub.read_file(REPO, "releases.json", "v1.1.0"))
    new, old = releases
    manifest2 = json.loads((v2 / "manifest.json").read_text())
    assert (new["version"], new["previous"], new["required_bump"], old["version"], old["previous"]) == ("1.1.0", "1.0.0", "patch", "1.0.0", None)
    assert new["counts"] == manifest2["splits"] and new["removed"] == {}
    assert [(c["count"], c["examples"]) for c in new["added"].values()] == [(1, ["no_face_dog"])]
    assert new["schema_changes"] == {"added": [], "removed": [], "changed": []}
    assert json.loads(hub.read_file(REPO, "releases.json", "v1.0.0")) == [old]

    card = hub.read_file(REPO, "README.md", "v1.1.0").decode()
    request = urllib.request.Request(f"{hub.url}/api/validate-yaml", json.dumps({"content": card, "repoType": "dataset"}).encode(), method="POST")
    with urllib.request.urlopen(request) as answer:
        assert json.load(answer) == {"errors": [], "warnings": []}
    meta = front_matter(card)
    assert meta["license"] == "other" and meta["language"] == ["en"] and [c["config_name"] for c in meta["configs"]] == ["default", "media"]
    assert "### v1.1.0" in card and "### v1.0.0" in card and "`no_face_dog`" in card and "| `faces.crops[].box.x` |" in card
    assert f'load_split("{REPO}", version="1.1.0"' in card and f"emer download {REPO} --version 1.1.0" in card

    # the card's configs and features load the release as it is stored
    local = Path(snapshot_download(REPO, repo_type="dataset", revision="v1.1.0", local_dir=tmp_path / "snapshot", token=hub.token))
    rows = datasets.load_dataset(str(local))
    assert {split: rows[split].num_rows for split in rows} == manifest2["splits"]
    split, count = next(iter(manifest2["splits"].items()))
    assert load_split(REPO, version="1.1.0", split=split, endpoint=hub.url, cache_dir=tmp_path / "releases", token=hub.token).num_rows == count

    for version, reason in (("1.0.0", "already exists; tags are never moved"), ("1.1.0", "already exists"), ("0.9.0", "lower than the latest version v1.1.0")):
        with pytest.raises(UserError, match=reason):
            to_hub(hub, v2, version)
    assert sorted(hub.repo(REPO).tags) == ["v1.0.0", "v1.1.0"] and len(hub.requests_for("commit")) == 2

    captured = capsys.readouterr()
    published_text = [card, hub.read_file(REPO, "releases.json").decode(), hub.read_file(REPO, "manifest.json").decode()]
    assert all(TOKEN not in text for text in [captured.out, captured.err, caplog.text, *published_text])
    assert hub.token_leaks() == []


def test_dry_run_writes_nothing(hub: HubLoopback, release_builds) -> None:
    v1, v2 = release_builds
    fresh = to_hub(hub, v1, "1.0.0", dry_run=True)
    assert REPO not in {repo_id for _, repo_id in hub.repos}, "a dry run must not create the repo"
    to_hub(hub, v1, "1.0.0")
    hub.clear_requests()
    dry = to_hub(hub, v2, "1.1.0", dry_run=True)
    assert {r.method for r in hub.requests} <= {"GET", "HEAD"} and sorted(hub.repo(REPO).tags) == ["v1.0.0"]
    text = dry.text()
    for path, data in build_files(v2).items():
        assert f"{len(data):,} B" in text and path in text
    assert "would publish v1.1.0" in text and "required bump: patch" in text and "--- README.md ---" in text and "### v1.1.0" in text
    assert "no_face_dog" in text and dry.card in text and fresh.required_bump is None


def test_schema_change_needs_the_bump_it_requires(hub: HubLoopback, release_builds, tmp_path: Path) -> None:
    v1, v2 = release_builds
    to_hub(hub, v1, "1.0.0")
    dropped = edited_copy(v2, tmp_path / "dropped", lambda m: m["fields"].pop("media.fps"))
    for version in ("1.1.0", "1.0.1"):
        with pytest.raises(UserError, match="a major bump is required, e.g. v2.0.0"):
            to_hub(hub, dropped, version)
    released = to_hub(hub, dropped, "2.0.0")
    assert released.entry["schema_changes"]["removed"] == ["media.fps"] and released.required_bump == "major"

    grown = edited_copy(v2, tmp_path / "grown", lambda m: m["fields"].update({"media.fps": "double", "media.rotation": "int32"}))
    with pytest.raises(UserError, match="a minor bump is required, e.g. v2.1.0"):
        to_hub(hub, grown, "2.0.1")
    entry = to_hub(hub, grown, "2.1.0").entry
    assert entry["schema_changes"] == {"added": ["media.fps", "media.rotation"], "removed": [], "changed": []} and entry["required_bump"] == "minor"


def test_files_gone_from_the_build_are_deleted_by_the_next_version(hub: HubLoopback, release_builds, tmp_path: Path) -> None:
    extra = b"a shard of a split that later shrank\n"

    def add_file(manifest: dict) -> None:
        manifest["files"]["media/extra-00000-of-00001.tar"] = {"sha256": hashlib.sha256(extra).hexdigest(), "bytes": len(extra)}

    bigger = edited_copy(release_builds[0], tmp_path / "bigger", add_file)
    (bigger / "media" / "extra-00000-of-00001.tar").write_bytes(extra)
    to_hub(hub, bigger, "1.0.0")
    smaller = to_hub(hub, release_builds[0], "1.0.1")
    assert smaller.deleted == ["media/extra-00000-of-00001.tar"] and "media/extra-00000-of-00001.tar" not in hub.list_paths(REPO, "v1.0.1")
    assert hub.read_file(REPO, "media/extra-00000-of-00001.tar", "v1.0.0") == extra
    assert {f.path for f in smaller.files if f.present} >= set(build_files(release_builds[0])) - {"manifest.json"}


def test_interrupted_between_commit_and_tag_is_finished_by_a_rerun(hub: HubLoopback, release_builds) -> None:
    v1, _ = release_builds
    hub.fail_next("tag", 500)
    with pytest.raises(UserError, match="creating the tag v1.0.0 failed .*re-run"):
        to_hub(hub, v1, "1.0.0")
    assert hub.repo(REPO).tags == {}
    uploads, head = hub.lfs_upload_count, hub.resolve(REPO)
    rerun = to_hub(hub, v1, "1.0.0")
    assert rerun.resumed and rerun.commit == head == hub.resolve(REPO, "v1.0.0") == hub.resolve(REPO)
    assert hub.lfs_upload_count == uploads and len(hub.requests_for("commit")) == 1
    assert [c.title for c in hub.repo(REPO).history(head)].count("Release v1.0.0") == 1


def test_a_failed_commit_leaves_no_tag_and_its_rerun_uploads_nothing_twice(hub: HubLoopback, release_builds) -> None:
    v1, _ = release_builds
    hub.fail_next("commit", 400)
    with pytest.raises(UserError, match="no tag was made: re-run"):
        to_hub(hub, v1, "1.0.0")
    uploads = hub.lfs_upload_count
    assert uploads > 0 and hub.repo(REPO).tags == {}
    to_hub(hub, v1, "1.0.0")
    assert hub.lfs_upload_count == uploads and list(hub.repo(REPO).tags) == ["v1.0.0"]


def test_a_racing_commit_makes_the_publish_fail_clearly(hub: HubLoopback, release_builds) -> None:
    v1, v2 = release_builds
    to_hub(hub, v1, "1.0.0")
    rival = HfApi(endpoint=hub.url, token=hub.token)
    hub.on("commit", lambda request: rival.upload_file(path_or_fileobj=b"someone else\n", path_in_repo="NOTES.md", repo_id=REPO, repo_type="dataset"))
    with pytest.raises(UserError, match=r"the repo emer/emotions changed while publishing \(another publisher\?\)"):
        to_hub(hub, v2, "1.1.0")
    assert hub.hook_errors == [] and hub.list_paths(REPO).count("NOTES.md") == 1 and list(hub.repo(REPO).tags) == ["v1.0.0"]
    assert to_hub(hub, v2, "1.1.0").commit == hub.resolve(REPO, "v1.1.0")


def test_a_tampered_build_is_refused_before_any_request(hub: HubLoopback, release_builds, tmp_path: Path) -> None:
    tampered = tmp_path / "tampered"
    shutil.copytree(release_builds[0], tampered)
    shard = tampered / "media" / "train-00000-of-00001.tar"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01
    shard.write_bytes(bytes(data))
    with pytest.raises(UserError, match="media/train-00000-of-00001.tar does not match its sha256"):
        to_hub(hub, tampered, "1.0.0")
    assert hub.requests == []


def test_a_build_holding_the_token_is_refused(hub: HubLoopback, release_builds, tmp_path: Path) -> None:
    leaky = edited_copy(release_builds[0], tmp_path / "leaky", lambda m: m.update(videos_dir=f"/data/{TOKEN}/videos"))
    with pytest.raises(UserError, match="manifest.json holds your Hugging Face token") as refused:
        to_hub(hub, leaky, "1.0.0")
    assert TOKEN not in str(refused.value) and hub.requests_for("commit") == []


def test_directory_target_round_trip_and_resume(hub: HubLoopback, release_builds, tmp_path: Path) -> None:
    v1, v2 = release_builds
    target = tmp_path / "releases"
    publish(v1, str(target), "1.0.0")
    second = publish(v2, str(target), "1.1.0")
    assert sorted(p.name for p in target.iterdir()) == ["README.md", "releases.json", "v1.0.0", "v1.1.0"]
    for out, version in ((v1, "v1.0.0"), (v2, "v1.1.0")):
        stored = {p.relative_to(target / version).as_posix() for p in (target / version).rglob("*") if p.is_file()}
        assert stored == {*build_files(out), "README.md", "releases.json", "media/README.md"}
        assert {path: (target / version / path).read_bytes() for path in build_files(out)} == build_files(out)
    assert [e["version"] for e in json.loads((target / "releases.json").read_text())] == ["1.1.0", "1.0.0"]
    assert (target / "README.md").read_text() == (target / "v1.1.0" / "README.md").read_text() == second.card
    split, count = next(iter(json.loads((v2 / "manifest.json").read_text())["splits"].items()))
    assert load_split(str(target), version="1.1.0", split=split, config="media", cache_dir=tmp_path / "downloads").num_rows == count
    with pytest.raises(UserError, match="v1.0.0 already exists"):
        publish(v2, str(target), "1.0.0")
    with pytest.raises(UserError, match="apply to Hub repos"):
        publish(v2, str(target), "1.2.0", private=True)

    # interrupted while copying: a staging folder with one good file and one cut short
    resumed = tmp_path / "resumed"
    staging = resumed / ".incomplete-v1.0.0"
    (staging / "data").mkdir(parents=True)
    (staging / "media").mkdir()
    shutil.copyfile(v1 / "data" / "train-00000-of-00001.parquet", staging / "data" / "train-00000-of-00001.parquet")
    (staging / "media" / "train-00000-of-00001.tar").write_bytes((v1 / "media" / "train-00000-of-00001.tar").read_bytes()[:1000])
    result = publish(v1, str(resumed), "1.0.0")
    present = {f.path for f in result.files if f.present}
    assert result.resumed and present == {"data/train-00000-of-00001.parquet"} and not staging.exists()
    assert {path: (resumed / "v1.0.0" / path).read_bytes() for path in build_files(v1)} == build_files(v1)

    # interrupted after the move, before releases.json: the unlisted folder is finished, nothing copied again
    (resumed / "releases.json").unlink()
    again = publish(v1, str(resumed), "1.0.0")
    assert again.resumed and all(f.present for f in again.files if f.path in build_files(v1))
    assert [e["version"] for e in json.loads((resumed / "releases.json").read_text())] == ["1.0.0"]
    assert hub.requests == [], "a directory target never talks to the Hub"


def test_fsspec_url_target(hub: HubLoopback, release_builds) -> None:
    root = f"memory://emer-{uuid.uuid4().hex}"
    publish(release_builds[0], root, "1.0.0")
    dry = publish(release_builds[1], root, "1.1.0", dry_run=True)
    fs, path = fsspec.core.url_to_fs(root)
    try:
        assert sorted(p.rsplit("/", 1)[1] for p in fs.ls(path, detail=False)) == ["README.md", "releases.json", "v1.0.0"]
        assert fs.cat_file(f"{path}/v1.0.0/manifest.json") == (release_builds[0] / "manifest.json").read_bytes()
        assert dry.dry_run and "would publish v1.1.0" in dry.text()
    finally:
        fs.rm(path, recursive=True)


def test_version_rules() -> None:
    assert parse_version("1.2.3") == parse_version("v1.2.3") == (1, 2, 3)
    for bad in ("1.2", "01.2.3", "1.2.3-rc1", "latest"):
        with pytest.raises(UserError, match="not semantic"):
            parse_version(bad)
    fields = {"a": "string", "b": "float"}
    assert required_bump(schema_changes(fields, fields)) == "patch"
    assert required_bump(schema_changes(fields, {**fields, "c": "int32"})) == "minor"
    assert required_bump(schema_changes(fields, {"a": "string"})) == "major"
    assert required_bump(schema_changes(fields, {"a": "string", "b": "double"})) == "major"
    check_bump((1, 4, 2), (2, 0, 0), "major")
    check_bump((1, 4, 2), (1, 5, 0), "minor")
    check_bump((1, 4, 2), (1, 4, 3), "patch")
    with pytest.raises(UserError, match="a major bump is required, e.g. v2.0.0, not v1.5.0"):
        check_bump((1, 4, 2), (1, 5, 0), "major")
    assert is_hub_repo("emer/emotions") and not is_hub_repo("./emer/emotions") and not is_hub_repo("s3://bucket/emer") and not is_hub_repo("/srv/emer")
    with pytest.raises(UserError, match="give ORG/NAME"):
        is_hub_repo("emotions")


@pytest.mark.skipif(not REAL_HUB_TOKEN, reason="set HF_TOKEN to publish to a private temporary repo on huggingface.co")
def test_publish_to_the_real_hub(monkeypatch: pytest.MonkeyPatch, release_builds, tmp_path: Path) -> None:
    online_hub(monkeypatch, home=tmp_path / "hf-home")  # no loopback: the real endpoint, the token passed explicitly
    api = HfApi(token=REAL_HUB_TOKEN)
    repo = f"{api.whoami()['name']}/emer-publish-test-{uuid.uuid4().hex[:8]}"
    try:
        result = publish(release_builds[0], repo, "1.0.0", private=True, token=REAL_HUB_TOKEN)
        tags = {t.name: t.target_commit for t in api.list_repo_refs(repo, repo_type="dataset").tags}
        assert tags == {"v1.0.0": result.commit} and api.repo_info(repo, repo_type="dataset").private
        assert REAL_HUB_TOKEN not in result.text() + result.card
    finally:
        api.delete_repo(repo, repo_type="dataset", missing_ok=True)
