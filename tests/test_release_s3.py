"""`emer publish` / `emer download` on object storage: a REAL S3-compatible server (moto_server, started here on
loopback), reached through s3fs exactly as a user's `s3://` URL is, with `AWS_ENDPOINT_URL` pointing at it.

What must hold on a store without rename: a version's files go up first and `releases.json` is written last, so a
publish killed at any point leaves no visible version, and re-running it finishes the job without sending a file
twice (a leftover `.incomplete-vX.Y.Z/` of older emer-builders is used and removed); downloads verify every file;
a missing bucket, an unreachable endpoint or an unknown scheme is one clear error before any work.

Kills are real: the publisher runs as a subprocess whose requests pass through `S3Gate`, a loopback HTTP
proxy in front of moto that records every request and can park one until the test has killed the publisher.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import datasets
import pyarrow.parquet as pq
import pytest
from emer_builder.cli.main import main
from emer_builder.core.errors import UserError
from emer_builder.release.download import download, load_split
from emer_builder.release.publish import publish

ROOT = Path(__file__).resolve().parents[1]
MOTO_SERVER = Path(sys.executable).parent / "moto_server"
BUILD_FILES = (
    "data/train-00000-of-00001.parquet",
    "data/validation-00000-of-00001.parquet",
    "failures.parquet",
    "media/train-00000-of-00001.tar",
    "media/validation-00000-of-00001.tar",
    "manifest.json",
)
# a real S3 server and real builds: `make test` and CI run these, `make test-fast` leaves them out
pytestmark = [pytest.mark.skipif(not MOTO_SERVER.exists(), reason=f"{MOTO_SERVER} not installed (pip install -e '.[dev]')"), pytest.mark.slow]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


@pytest.fixture(scope="module")
def moto_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto_server on a free loopback port for this module; stopped (and waited for) at teardown."""
    port = free_port()
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "wb")
    proc = subprocess.Popen([str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            with urllib.request.urlopen(f"{url}/moto-api/", timeout=1):
                return True
        except OSError:
            return False

    try:
        assert wait_until(up, 30), "moto_server did not start"
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


@dataclass
class Recorded:
    method: str
    path: str
    copied: bool = False  # a copy on the store's side (x-amz-copy-source): no bytes sent


class S3Gate:
    """A loopback HTTP proxy in front of moto_server: records requests; `hold(match)` parks the first request whose
    `METHOD path` contains `match` until `release()` (by then the test has usually killed its sender)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.removeprefix("http://")
        self.requests: list[Recorded] = []
        self._held: tuple[str, threading.Event, threading.Event] | None = None
        self._before: tuple[str, Callable[[], None]] | None = None
        gate = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall per request

            def do_request(self) -> None:
                gate.forward(self)

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = do_request

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def hold(self, match: str) -> threading.Event:
        """Park the next request matching `match`; the returned event is set once it arrived."""
        arrived = threading.Event()
        self._held = (match, arrived, threading.Event())
        return arrived

    def before(self, match: str, fn: Callable[[], None]) -> None:
        """Run `fn` just before the next request matching `match` is forwarded (another client acting meanwhile)."""
        self._before = (match, fn)

    def release(self) -> None:
        if self._held:
            self._held[2].set()

    def puts(self) -> list[str]:
        return [r.path.split("?")[0] for r in self.requests if r.method == "PUT"]

    def forward(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        self.requests.append(Recorded(handler.command, handler.path, "x-amz-copy-source" in {k.lower() for k in handler.headers}))
        before = self._before
        if before and before[0] in f"{handler.command} {handler.path}":
            self._before = None
            before[1]()
        held = self._held
        if held and held[0] in f"{handler.command} {handler.path}":
            self._held = None
            held[1].set()
            held[2].wait(60)
            handler.close_connection = True  # never forwarded: what a publisher killed at this point leaves
            return
        upstream = http.client.HTTPConnection(self.upstream, timeout=60)
        headers = {k: v for k, v in handler.headers.items() if k.lower() not in ("connection", "keep-alive")}
        upstream.request(handler.command, handler.path, body=body, headers=headers)
        answer = upstream.getresponse()
        data = answer.read()
        handler.send_response(answer.status)
        for key, value in answer.getheaders():
            if key.lower() not in ("connection", "transfer-encoding", "content-length", "server", "date"):
                handler.send_header(key, value)
        # a HEAD answer states the object's length without a body
        handler.send_header("Content-Length", answer.getheader("Content-Length", "0") if handler.command == "HEAD" else str(len(data)))
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(data)
        upstream.close()

    def close(self) -> None:
        self.release()
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Bucket:
    fs: object  # the s3fs filesystem the tests inspect the server with
    name: str
    target: str  # s3://bucket/releases: where the releases go
    gate: S3Gate

    def keys(self) -> list[str]:
        self.fs.invalidate_cache()
        return sorted(p.removeprefix(f"{self.name}/") for p in self.fs.find(self.name))

    def read(self, key: str) -> bytes:
        return self.fs.cat_file(f"{self.name}/{key}")

    def index(self) -> list[str]:
        return [e["version"] for e in json.loads(self.read("releases/releases.json"))]


@pytest.fixture
def s3(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Bucket]:
    """A fresh bucket on moto, the AWS_* variables a user would set, and the gate in front of the server."""
    import s3fs

    gate = S3Gate(moto_url)
    for name, value in {
        "AWS_ENDPOINT_URL": gate.url,
        "AWS_ACCESS_KEY_ID": "emer-test",
        "AWS_SECRET_ACCESS_KEY": "emer-test-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    s3fs.S3FileSystem.clear_instance_cache()  # an instance made for another test's endpoint must not be reused
    fs = s3fs.S3FileSystem(skip_instance_cache=True, endpoint_url=moto_url)  # the tests' own view: straight to moto
    name = f"emer-{uuid.uuid4().hex[:12]}"
    fs.mkdir(name)
    try:
        yield Bucket(fs, name, f"s3://{name}/releases", gate)
    finally:
        gate.close()
        s3fs.S3FileSystem.clear_instance_cache()


def build_files(out: Path) -> dict[str, bytes]:
    return {path: (out / path).read_bytes() for path in BUILD_FILES}


def publisher(out: Path, target: str, version: str) -> subprocess.Popen[bytes]:
    """`emer publish` in its own process (to be killed), with the test's AWS_* environment."""
    cmd = [sys.executable, "-m", "emer_builder.cli.main", "publish", str(out), "--repo", target, "--version", version]
    return subprocess.Popen(cmd, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def kill_at(s3: Bucket, proc: subprocess.Popen[bytes], match: str) -> None:
    """Wait until the publisher's request matching `match` is parked at the gate, then SIGKILL the publisher."""
    arrived = s3.gate.hold(match).wait(90)
    proc.send_signal(signal.SIGKILL)
    out, err = proc.communicate(timeout=30)
    s3.gate.release()
    assert arrived, f"the publisher never sent {match!r}: {out.decode()} {err.decode()}"


def test_two_versions_round_trip_through_s3(
    s3: Bucket, release_builds: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    v1, v2 = release_builds
    dry = publish(v1, s3.target, "1.0.0", dry_run=True)
    assert "would publish v1.0.0" in dry.text() and s3.keys() == [] and {r.method for r in s3.gate.requests} <= {"GET", "HEAD"}

    assert main(["publish", str(v1), "--repo", s3.target, "--version", "1.0.0"]) == 0
    assert f"published v1.0.0 to {s3.target}/v1.0.0 (first release)" in capsys.readouterr().out
    second = publish(v2, s3.target, "1.1.0")
    generated = {"README.md", "releases.json", "media/README.md"}
    assert s3.keys() == sorted(
        ["releases/README.md", "releases/releases.json"] + [f"releases/{v}/{p}" for v in ("v1.0.0", "v1.1.0") for p in (*BUILD_FILES, *generated)]
    )
    for out, version in ((v1, "v1.0.0"), (v2, "v1.1.0")):
        assert {p: s3.read(f"releases/{version}/{p}") for p in BUILD_FILES} == build_files(out)
    assert s3.index() == ["1.1.0", "1.0.0"] and json.loads(s3.read("releases/v1.1.0/releases.json"))[1]["version"] == "1.0.0"
    assert s3.read("releases/README.md").decode() == second.card and f'load_split("{s3.target}", version="1.1.0"' in second.card
    assert [(c["count"], c["examples"]) for c in second.entry["added"].values()] == [(1, ["no_face_dog"])]

    with pytest.raises(UserError, match="v1.1.0 already exists"):
        publish(v2, s3.target, "1.1.0")

    # the card's own loading code, run as written: `datasets` reads the Parquet tables straight from the bucket
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)  # conftest keeps datasets offline; this is no hub
    code = second.card.split("```python\n", 1)[1].split("```", 1)[0]
    scope: dict[str, Any] = {}
    exec(code, scope)
    assert {split: scope["rows"][split]["key"] for split in scope["rows"]} == {"train": ["sample_00000870"], "validation": ["jesper_intro", "no_face_dog"]}

    assert main(["download", s3.target, "--version", "1.0.0", "--to", str(tmp_path / "v1")]) == 0
    assert "3 files verified against manifest.json" in capsys.readouterr().out
    assert {p: (tmp_path / "v1" / p).read_bytes() for p in BUILD_FILES if not p.startswith("media/")} == {
        p: d for p, d in build_files(v1).items() if not p.startswith("media/")
    }
    rows = load_split(s3.target, split="validation", cache_dir=tmp_path / "cache")  # the latest: 1.1.0
    assert sorted(rows["key"]) == ["jesper_intro", "no_face_dog"]
    assert rows.to_list() == pq.read_table(v2 / "data" / "validation-00000-of-00001.parquet").to_pylist()

    # a damaged object in the store is refused by name and never left on disk
    s3.fs.pipe_file(f"{s3.name}/releases/v1.1.0/data/train-00000-of-00001.parquet", b"not the parquet the manifest describes")
    with pytest.raises(UserError, match=r"data/train-00000-of-00001.parquet: sha256 differs from the release manifest even after fetching it again"):
        download(s3.target, tmp_path / "damaged")
    assert not (tmp_path / "damaged" / "data" / "train-00000-of-00001.parquet").exists()


def test_killed_before_the_index_no_version_is_visible_and_a_rerun_finishes(s3: Bucket, release_builds: tuple[Path, Path], tmp_path: Path) -> None:
    v1, v2 = release_builds
    publish(v1, s3.target, "1.0.0")
    card_before = s3.read("releases/README.md")

    proc = publisher(v2, s3.target, "1.1.0")
    kill_at(s3, proc, f"PUT /{s3.name}/releases/releases.json.tmp")  # every file is up, the index not yet written
    assert all(f"releases/v1.1.0/{p}" in s3.keys() for p in BUILD_FILES)  # the files are there ...
    assert s3.index() == ["1.0.0"] and s3.read("releases/README.md") == card_before  # ... but nothing says so
    with pytest.raises(UserError, match=r"has no release '1.1.0'; available: 1.0.0"):
        download(s3.target, tmp_path / "early", version="1.1.0")
    assert download(s3.target, tmp_path / "latest").version == "1.0.0"

    s3.gate.requests.clear()
    rerun = publish(v2, s3.target, "1.1.0")
    assert rerun.resumed and {f.path for f in rerun.files if f.present} == set(BUILD_FILES)
    sent = [p.split("/releases/", 1)[1] for p in s3.gate.puts()]
    assert not set(sent) & {f"v1.1.0/{p}" for p in BUILD_FILES}, sent  # nothing uploaded twice
    assert s3.index() == ["1.1.0", "1.0.0"] and s3.read("releases/README.md").decode() == rerun.card
    got = download(s3.target, tmp_path / "v2", version="1.1.0", config="media")
    assert (
        got.verified == 2
        and (tmp_path / "v2" / "media/validation-00000-of-00001.tar").read_bytes() == (v2 / "media/validation-00000-of-00001.tar").read_bytes()
    )


def test_killed_mid_upload_the_rerun_sends_only_the_rest_and_cleans_up(s3: Bucket, release_builds: tuple[Path, Path], tmp_path: Path) -> None:
    v1, _ = release_builds
    # what earlier emer-builders left on S3 when their recursive move failed: a staging folder with a good copy of one file
    good = "data/train-00000-of-00001.parquet"
    s3.fs.pipe_file(f"{s3.name}/releases/.incomplete-v1.0.0/{good}", (v1 / good).read_bytes())
    s3.fs.pipe_file(f"{s3.name}/releases/.incomplete-v1.0.0/manifest.json", b"{}")  # a copy cut short: not reused

    proc = publisher(v1, s3.target, "1.0.0")
    kill_at(s3, proc, f"PUT /{s3.name}/releases/v1.0.0/media/train-00000-of-00001.tar")
    uploaded = {k.removeprefix("releases/v1.0.0/") for k in s3.keys() if k.startswith("releases/v1.0.0/")}
    assert uploaded == {good, "data/validation-00000-of-00001.parquet", "failures.parquet"}  # the files before the kill
    assert "releases/releases.json" not in s3.keys()
    with pytest.raises(UserError, match="has no releases.json"):
        download(s3.target, tmp_path / "early")

    s3.gate.requests.clear()
    rerun = publish(v1, s3.target, "1.0.0")
    assert rerun.resumed and {f.path for f in rerun.files if f.present} == uploaded
    sent = {p.split("/releases/v1.0.0/", 1)[1] for p in s3.gate.puts() if "/releases/v1.0.0/" in p}
    assert sent == {"media/train-00000-of-00001.tar", "media/validation-00000-of-00001.tar", "manifest.json", "README.md", "releases.json", "media/README.md"}
    assert not [k for k in s3.keys() if ".incomplete-" in k or k.endswith(".tmp")]
    assert {p: s3.read(f"releases/v1.0.0/{p}") for p in BUILD_FILES} == build_files(v1) and s3.index() == ["1.0.0"]


def test_a_publisher_racing_on_the_index_makes_ours_fail_clearly(s3: Bucket, release_builds: tuple[Path, Path]) -> None:
    v1, v2 = release_builds
    publish(v1, s3.target, "1.0.0")
    rival = json.dumps([{"version": "1.0.5"}, *json.loads(s3.read("releases/releases.json"))]).encode()
    # another publisher writes the index while our files go up
    s3.gate.before(f"PUT /{s3.name}/releases/v1.1.0/manifest.json", lambda: s3.fs.pipe_file(f"{s3.name}/releases/releases.json", rival))
    with pytest.raises(UserError, match=r"releases.json changed while publishing \(another publisher\?\); v1.1.0 is uploaded but not published"):
        publish(v2, s3.target, "1.1.0")
    assert s3.read("releases/releases.json") == rival  # theirs is kept, ours not written over it


def test_bad_targets_fail_before_any_work(s3: Bucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    never_read = "/nonexistent/build"  # the target is checked first: the build is not even looked at
    with pytest.raises(UserError, match=r"s3://no-such-bucket-emer does not exist: create the bucket"):
        publish(never_read, "s3://no-such-bucket-emer/releases", "1.0.0")
    with pytest.raises(UserError, match=r"unsupported URL scheme \(Protocol not known: nosuch\)"):
        publish(never_read, "nosuch://bucket/releases", "1.0.0")
    with pytest.raises(UserError, match=r"is read-only \(http://\)"):
        publish(never_read, "http://127.0.0.1:9/releases", "1.0.0")

    import s3fs

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # botocore's own retries would take seconds
    s3fs.S3FileSystem.clear_instance_cache()
    assert main(["publish", never_read, "--repo", s3.target, "--version", "1.0.0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"emer: error: cannot publish to {s3.target}: the endpoint is unreachable") and err.count("\n") == 1
    assert main(["download", s3.target, "--to", str(tmp_path / "unused")]) == 2
    assert "the endpoint is unreachable" in capsys.readouterr().err
    assert s3.keys() == []


def test_clip_cache_on_s3(s3: Bucket, tmp_path: Path) -> None:
    """The per-clip cache on an object store: entries, input hashes and build records are objects."""
    from emer_builder.transforms.clip_cache import ClipCache

    cache = ClipCache(f"s3://{s3.name}/cache")
    video = tmp_path / "v.mp4"
    video.write_bytes(b"not really a video, but bytes to hash")
    sha = cache.input_sha256(str(video))
    assert sha == hashlib.sha256(video.read_bytes()).hexdigest() and cache.input_sha256(str(video)) == sha
    cache.put("ab" * 32, {"f0": 0.1, "nan": float("nan")}, {"flac": b"\x00" * 10})
    group, media = cache.get("ab" * 32)
    assert group["f0"] == 0.1 and group["nan"] != group["nan"] and media == {"flac": b"\x00" * 10}
    assert cache.get("cd" * 32) is None
    assert any(k.startswith("cache/entries/ab/") and k.endswith(".tar") for k in s3.keys())
    assert not any(".tmp-" in k for k in s3.keys())  # entries are moved into place
    cache.record_use(["ab" * 32], "first")
    cache.put("cd" * 32, {"v": 1}, {})
    cache.record_use(["cd" * 32], "second")
    assert cache.stats(1)["entries"] == 2 and cache.stats(1)["unused_entries"] == 1
    assert cache.prune(1)["entries"] == 1 and cache.get("ab" * 32) is None and cache.get("cd" * 32) == ({"v": 1}, {})


@pytest.mark.slow
def test_a_build_resumes_from_a_cache_on_s3(s3: Bucket, demo_videos: Path, tmp_path: Path) -> None:
    from emer_builder.core.config import config_from_dict
    from emer_builder.pipelines.build import build

    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("jesper_intro.avi", "no_face_dog.mp4"):
        (videos / name).write_bytes((demo_videos / name).read_bytes())
    config = config_from_dict({"transcript": {"model": "tiny.en"}, "cache": {"dir": f"s3://{s3.name}/cache"}})
    first = build(videos, tmp_path / "a", config, workers=1, show_progress=False)
    again = build(videos, tmp_path / "b", config, workers=1, show_progress=False)
    assert first.stage_runs["faces"] == 2 and again.stage_runs == {"decode": 0, "transcript": 0, "faces": 0, "acoustics": 0, "video": 0}
    files = sorted(p.relative_to(tmp_path / "a").as_posix() for p in (tmp_path / "a").rglob("*") if p.is_file() and p.name not in ("build.json", ".emer-lock", "report.html"))
    assert files and all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files)


@pytest.mark.slow
def test_a_build_reads_videos_from_s3_and_writes_out_to_s3(s3: Bucket, demo_videos: Path, tmp_path: Path) -> None:
    """VIDEOS_DIR and OUT as s3:// URLs: the same bytes as a local build, a no-op rerun, the leftovers of a
    build cut off before its manifest removed, and a held lock refused."""
    from emer_builder.core.config import config_from_dict
    from emer_builder.pipelines.build import build

    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("jesper_intro.avi", "no_face_dog.mp4"):
        (videos / name).write_bytes((demo_videos / name).read_bytes())
        s3.fs.pipe_file(f"{s3.name}/in/{name}", (demo_videos / name).read_bytes())
    s3.fs.pipe_file(f"{s3.name}/in/notes.txt", b"not a video")
    config = config_from_dict({"transcript": {"model": "tiny.en"}, "cache": {"enabled": False}})
    local = build(videos, tmp_path / "local", config, workers=1, show_progress=False)
    s3.gate.requests.clear()
    stored = build(f"s3://{s3.name}/in", f"s3://{s3.name}/out", config, workers=1, show_progress=False)
    assert stored.records == local.records == 2 and stored.skipped_files == ["notes.txt"] and stored.out == f"s3://{s3.name}/out"
    keys = {k.removeprefix("out/") for k in s3.keys() if k.startswith("out/")}
    assert "manifest.json" in keys and ".emer-lock" not in keys and not any(k.startswith(".emer") for k in keys)
    shards = sorted(p.relative_to(tmp_path / "local").as_posix() for p in (tmp_path / "local").rglob("*") if p.parent.name in ("data", "media"))
    assert shards and {s for s in shards} <= keys
    assert all(s3.fs.cat_file(f"{s3.name}/out/{s}") == (tmp_path / "local" / s).read_bytes() for s in shards)  # same bytes as a local build
    manifest = json.loads(s3.fs.cat_file(f"{s3.name}/out/manifest.json"))
    assert manifest["videos_dir"] == f"s3://{s3.name}/in" and set(manifest["files"]) <= keys
    assert manifest["files"] == json.loads((tmp_path / "local" / "manifest.json").read_text())["files"]
    # the workers wrote the shards, their scratch files and their progress to a staging prefix on the store;
    # the driver sent no shard's bytes: each reached its place by a copy on the store's side
    staged = [r.path.split("?")[0] for r in s3.gate.requests if r.method == "PUT" and "/out/.emer-staging-" in r.path and not r.copied]
    assert {p.split("/.emer-staging-", 1)[1].split("/", 1)[1].split("/")[0] for p in staged} >= {"media", "data", ".media", ".shards", ".progress"}
    placed = {r.path.split("?")[0].split("/out/", 1)[1] for r in s3.gate.requests if r.method == "PUT" and "/out/.emer" not in r.path and ("/out/media/" in r.path or "/out/data/" in r.path)}
    assert placed == set(shards) and all(r.copied for r in s3.gate.requests if r.method == "PUT" and "/out/media/" in r.path and r.path.split("?")[0].endswith(".tar"))

    s3.fs.pipe_file(f"{s3.name}/out/.emer-staging-gone-1/media/train-00000-of-00001.tar", b"left by a killed build")
    again = build(f"s3://{s3.name}/in", f"s3://{s3.name}/out", config, workers=1, show_progress=False)
    assert again.up_to_date and again.records == 2
    s3.fs.invalidate_cache()
    assert not [k for k in s3.keys() if k.startswith("out/.emer")]  # a dead build's staging prefix is removed

    s3.fs.rm_file(f"{s3.name}/out/manifest.json")  # a build cut off mid-upload: no manifest, partial files
    s3.fs.pipe_file(f"{s3.name}/out/data/train-99999-of-99999.parquet", b"partial")
    rebuilt = build(f"s3://{s3.name}/in", f"s3://{s3.name}/out", config, workers=1, show_progress=False)
    assert not rebuilt.up_to_date and rebuilt.records == 2
    s3.fs.invalidate_cache()
    assert "data/train-99999-of-99999.parquet" not in {k.removeprefix("out/") for k in s3.keys()}

    s3.fs.pipe_file(f"{s3.name}/out/.emer-lock", b"pid 1 on elsewhere since 2026-12-04 00:00:00")
    with pytest.raises(UserError, match=r"is locked by another build \(pid 1 on elsewhere"):
        build(f"s3://{s3.name}/in", f"s3://{s3.name}/out", config, workers=1, show_progress=False)
    with pytest.raises(UserError, match="the bucket no-such-bucket-here does not exist"):
        build(f"s3://{s3.name}/in", "s3://no-such-bucket-here/out", config, workers=1, show_progress=False)


def test_dask_workers_write_an_out_url_themselves(s3: Bucket, dask_cluster: str, demo_videos: Path, tmp_path: Path) -> None:
    """Inputs and OUT on the store, stages on two Dask worker processes (started after the store's variables
    are set): the workers write the shards under the staging prefix, the summary still counts every stage
    (its figures travel with the clips, not through files on the driver's disk), and the bytes equal a
    local build's."""
    from emer_builder.core.config import config_from_dict
    from emer_builder.pipelines.build import build

    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("jesper_intro.avi", "no_face_dog.mp4"):
        (videos / name).write_bytes((demo_videos / name).read_bytes())
        s3.fs.pipe_file(f"{s3.name}/in/{name}", (demo_videos / name).read_bytes())
    config = config_from_dict({"transcript": {"model": "tiny.en"}, "cache": {"enabled": False}})
    local = build(videos, tmp_path / "local", config, workers=1, show_progress=False)
    s3.gate.requests.clear()
    dask_args = ["--runner=DaskRunner", f"--dask_client_address={dask_cluster}", "--dask_partition_size=1"]
    stored = build(f"s3://{s3.name}/in", f"s3://{s3.name}/out", config, beam_args=dask_args, show_progress=False)
    assert stored.records == local.records == 2
    assert stored.stage_runs == local.stage_runs == {"decode": 2, "transcript": 2, "faces": 2, "acoustics": 2, "video": 2}
    assert set(stored.stage_seconds) == set(local.stage_seconds) and all(t["wall_s"] > 0 for t in stored.stage_seconds.values())
    staged = {r.path.split("?")[0].split("/.emer-staging-", 1)[1].split("/", 1)[1] for r in s3.gate.requests if r.method == "PUT" and "/out/.emer-staging-" in r.path}
    assert {p for p in staged if p.startswith("media/")} == {p.relative_to(tmp_path / "local").as_posix() for p in (tmp_path / "local" / "media").glob("*.tar")}
    for rel in json.loads((tmp_path / "local" / "manifest.json").read_text())["files"]:
        assert s3.fs.cat_file(f"{s3.name}/out/{rel}") == (tmp_path / "local" / rel).read_bytes(), rel


def test_bad_build_locations_fail_before_any_work(s3: Bucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown scheme, a missing bucket or an unreachable endpoint as VIDEOS_DIR or --out: one line, exit 2,
    and no local folder named after the URL."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "videos").mkdir()
    cases = [
        (["build", "nosuch://bucket/videos", "--out", "o"], "VIDEOS_DIR nosuch://bucket/videos: unsupported URL scheme"),
        (["build", "videos", "--out", "nosuch://bucket/o"], "--out nosuch://bucket/o: unsupported URL scheme"),
        (["build", "videos", "--out", "s3://no-such-bucket-emer/o"], "the bucket no-such-bucket-emer does not exist"),
        (["build", "s3://no-such-bucket-emer/videos", "--out", "o"], "could not read s3://no-such-bucket-emer/videos: The specified bucket does not exist"),
    ]
    for argv, expected in cases:
        assert main([*argv, "--quiet"]) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("emer: error: ") and expected in err and err.count("\n") == 1, err
    import s3fs

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    s3fs.S3FileSystem.clear_instance_cache()
    assert main(["build", "videos", "--out", f"s3://{s3.name}/o", "--quiet"]) == 2
    assert "the endpoint is unreachable" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["videos"]  # nothing written locally, no ./s3: folder
