"""The release round trip through the `emer` command, as a user runs it, against the loopback Hub with the
real huggingface_hub client: publish 1.0.0, publish 1.1.0 from a bigger build (the first attempt killed
between commit and tag), download 1.0.0 byte for byte, refuse old versions, never show the token."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from emer_builder.cli.main import main

from tests.hub_loopback import hub_server, online_hub

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "hf_roundtrip_Secret_8c1d"
REPO = "emer-lab/demo-emer"


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file() and p.name != "README.md" and ".cache" not in p.parts}


@pytest.mark.slow
def test_publish_two_versions_and_download_the_first(release_builds, monkeypatch, tmp_path, capsys):
    v1, v2 = release_builds
    outputs = []
    with hub_server(TOKEN) as hub:
        online_hub(monkeypatch, hub, home=tmp_path / "hf")
        monkeypatch.setenv("HF_TOKEN", TOKEN)  # as a user would export it

        assert main(["publish", str(v1), "--repo", REPO, "--version", "1.0.0"]) == 0
        outputs.append(capsys.readouterr())

        # files a release does not own (added by hand, or by another tool) survive later releases
        from huggingface_hub import HfApi

        api = HfApi(endpoint=hub.url, token=TOKEN)
        api.upload_file(path_or_fileobj=b"our paper's notes\n", path_in_repo="paper/notes.md", repo_id=REPO, repo_type="dataset")
        # a tag that looks like a version but is not one of ours must not be taken for 1.1.0
        api.create_tag(REPO, tag="v1.01.0", revision="v1.0.0", repo_type="dataset")

        # 1.1.0: the publisher is killed while its tag request is in flight, after the commit landed
        hold = hub.hold_next("tag")
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen([sys.executable, "-m", "emer_builder.cli.main", "publish", str(v2), "--repo", REPO, "--version", "1.1.0"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert hold.wait(60), "the publisher never reached the tag request"
        proc.send_signal(signal.SIGKILL)
        killed_out, killed_err = proc.communicate()
        hold.release(status=500)
        repo = hub.repo(REPO)
        assert "v1.1.0" not in repo.tags and "v1.0.0" in repo.tags  # no tag for the interrupted version
        uploads_before = hub.lfs_upload_count

        assert main(["publish", str(v2), "--repo", REPO, "--version", "1.1.0"]) == 0  # the re-run finishes the job
        outputs.append(capsys.readouterr())
        assert "v1.1.0" in hub.repo(REPO).tags and hub.lfs_upload_count == uploads_before  # nothing uploaded twice
        assert hub.read_file(REPO, "paper/notes.md", "v1.1.0") == b"our paper's notes\n"

        for version in ("1.1.0", "1.0.0", "0.9.0"):  # existing or lower: refused, one line
            assert main(["publish", str(v2), "--repo", REPO, "--version", version]) == 2
            err = capsys.readouterr().err
            outputs.append(err)
            assert err.startswith("emer: error:") and err.count("\n") == 1

        first = tmp_path / "download-1.0.0"
        assert main(["download", REPO, "--version", "1.0.0", "--to", str(first)]) == 0
        outputs.append(capsys.readouterr())
        media = tmp_path / "download-1.0.0-media"
        assert main(["download", REPO, "--version", "1.0.0", "--config", "media", "--to", str(media)]) == 0
        outputs.append(capsys.readouterr())
        latest = tmp_path / "download-latest"
        assert main(["download", REPO, "--to", str(latest)]) == 0
        outputs.append(capsys.readouterr())
        leaks = hub.token_leaks()

    built = _files(v1)
    got = {**_files(first), **_files(media)}
    assert [r["version"] for r in json.loads(got.pop("releases.json"))] == ["1.0.0"]
    assert got == built  # every file of the 1.0.0 build (Parquet, tars, failures, manifest), byte for byte
    assert "data/" + sorted(p.name for p in (v2 / "data").glob("*.parquet"))[0] in _files(latest)
    assert (latest / "manifest.json").read_bytes() == (v2 / "manifest.json").read_bytes()
    card = (latest / "README.md").read_text()
    assert "1.1.0" in card and "1.0.0" in card and "no_face_dog" in card  # the changelog names the added key
    everything = "".join(str(o) for o in outputs) + killed_out.decode() + killed_err.decode() + card + (latest / "manifest.json").read_text()
    assert TOKEN not in everything and leaks == []


def test_a_tampered_download_is_repaired_or_refused(release_builds, monkeypatch, tmp_path, capsys):
    v1, _ = release_builds
    with hub_server(TOKEN) as hub:
        online_hub(monkeypatch, hub, home=tmp_path / "hf")
        monkeypatch.setenv("HF_TOKEN", TOKEN)
        assert main(["publish", str(v1), "--repo", REPO, "--version", "1.0.0"]) == 0
        to = tmp_path / "dl"
        assert main(["download", REPO, "--to", str(to)]) == 0
        capsys.readouterr()
        victim = sorted((to / "data").glob("*.parquet"))[0]
        data = bytearray(victim.read_bytes())
        data[len(data) // 2] ^= 0xFF
        victim.write_bytes(bytes(data))
        assert main(["download", REPO, "--to", str(to)]) == 0  # the damaged file is fetched again and verified
        out = capsys.readouterr().out
        assert victim.read_bytes() == (v1 / "data" / victim.name).read_bytes()
        assert f"fetched again after a checksum mismatch: data/{victim.name}" in out, out

        import emer_builder.release.download as download_module

        hashed = []
        monkeypatch.setattr(download_module, "sha256_file", lambda path: hashed.append(path) or "")
        assert main(["download", REPO, "--to", str(to)]) == 0  # verified before, not rewritten since: no hashing again
        assert hashed == [] and "verified against manifest.json" in capsys.readouterr().out


@pytest.mark.slow
def test_a_real_build_is_what_the_release_fixture_imitates(demo_videos, release_builds, tmp_path):
    """The release tests publish builds written without Beam (tests/release_fixtures.py). This full build of one
    demo clip checks that the imitation keeps the real shape (manifest keys, Parquet schema, tar members), and that
    a real build publishes to a directory and downloads back byte for byte."""
    import shutil

    import pyarrow.parquet as pq
    from emer_builder.core.config import config_from_dict
    from emer_builder.pipelines.build import build
    from emer_builder.release.download import download
    from emer_builder.release.publish import publish

    from tests.release_fixtures import CONFIG

    videos = tmp_path / "videos"
    videos.mkdir()
    shutil.copyfile(demo_videos / "sample_00000870.mp4", videos / "sample_00000870.mp4")
    out = tmp_path / "out"
    build(videos, out, config_from_dict(CONFIG), workers=1, show_progress=False)

    fixture = release_builds[0]
    real, imitated = (json.loads((o / "manifest.json").read_text()) for o in (out, fixture))
    assert set(real) == set(imitated) and real["fields"] == imitated["fields"] and real["keys"]["train"] == imitated["keys"]["train"]
    kinds = [{re.sub(r"^(data|media)/[a-z]+-", r"\1/", p) for p in m["files"]} for m in (real, imitated)]
    assert kinds[0] == kinds[1], kinds  # the same files, split names aside
    shard = "data/train-00000-of-00001.parquet"
    assert pq.read_schema(out / shard) == pq.read_schema(fixture / shard)
    members = [sorted(n.split(".", 1)[1] for n in tarfile.open(o / "media/train-00000-of-00001.tar").getnames()) for o in (out, fixture)]
    assert {"flac", "json", "face_000.jpg"} <= set(members[0]) and set(members[1]) <= set(members[0]) | {f"face_{i:03d}.jpg" for i in range(16)}

    publish(out, str(tmp_path / "releases"), "1.0.0")
    got = download(str(tmp_path / "releases"), tmp_path / "dl", config="media")
    assert got.verified == len([p for p in real["files"] if p.startswith("media/")])
    assert {p: (tmp_path / "dl" / p).read_bytes() for p in real["files"] if p.startswith("media/")} == {
        p: (out / p).read_bytes() for p in real["files"] if p.startswith("media/")
    }
