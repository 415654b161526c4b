"""A loopback Hugging Face Hub: a real HTTP server on 127.0.0.1 that the unmodified `huggingface_hub` client talks to.

Why: the Hub cannot be reached from here, and mocking `HfApi` would test nothing of the real publish/download
path. This server speaks the routes huggingface_hub 2.x calls (read from its source, not guessed) for
`create_repo`, `create_commit`/`upload_folder` (validate-yaml, preupload, LFS batch + PUT + verify, NDJSON commit),
`create_tag`/`delete_tag`, branches, `list_repo_refs`, `list_repo_commits`, `repo_info`/`dataset_info`,
`list_repo_tree`/`list_repo_files` (paginated with a `Link` header), `get_paths_info`, `file_exists`,
`hf_hub_download`/`snapshot_download` (HEAD/GET resolve with ETag, X-Repo-Commit, X-Linked-Etag/-Size, Range) and
`whoami`. It keeps real, content-addressed file bytes and git-like commits (40-hex shas, parents, branch heads,
tags) in memory, records every request, counts LFS uploads, and injects faults on demand.

Use from a test (the `online_hub` call is required, see below)::

    from huggingface_hub import HfApi
    from tests.hub_loopback import hub_server, online_hub

    def test_publish(monkeypatch, tmp_path):
        with hub_server("hf_test_token") as hub:
            online_hub(monkeypatch, hub, home=tmp_path / "hf")
            api = HfApi(endpoint=hub.url, token=hub.token)
            api.create_repo("emer/demo", repo_type="dataset")
            ...
            assert hub.lfs_upload_count == 3 and not hub.token_leaks()

Why `online_hub(monkeypatch, hub)`: tests/conftest.py sets HF_HUB_OFFLINE=1, and huggingface_hub reads its
environment ONCE, at import, into `huggingface_hub.constants`; changing os.environ later changes nothing. It
monkeypatches (undone after the test):

- `constants.HF_HUB_OFFLINE = False` (else every request raises OfflineModeIsEnabled; env var removed too);
- `constants.HF_HUB_DISABLE_XET = True`: hf_xet is installed, and with it the client uploads through the Xet
  protocol (which this server does not speak) and `upload_folder` becomes a multi-commit pipeline;
- `constants.HF_HUB_DISABLE_TELEMETRY = True`: otherwise building the User-Agent fetches
  `https://huggingface.co/api/agent-harnesses` once per process;
- HF_HOME / HF_HUB_CACHE / HF_TOKEN_PATH into `home`, HF_TOKEN removed: no cache or token leaks in from `~`;
- `constants.ENDPOINT` (and HF_ENDPOINT for subprocesses) -> `hub.url`, so code that does not pass
  `endpoint=` still reaches the loopback and never huggingface.co.

Behaviour worth knowing (mirrors the Hub): repo ids must be `namespace/name`; a new repo has an "initial commit"
holding `.gitattributes`; preupload sends a file to LFS when it is larger than `lfs_threshold` bytes, has an
LFS suffix (.parquet, .tar, ...) or looks binary (a NUL byte in its first 512 bytes); a commit whose
`parentCommit` is not the branch head gets 412; creating an existing tag gets 409; a bad token gets 401
everywhere; a private repo read without the token gets 401 RepoNotFound (RepositoryNotFoundError). LFS files
are served by a 302 to a signed "CDN" URL on another origin (`http://localhost:<port>`, like the Hub's CDN),
so the client must drop the token there; pass `cdn_host=None` to serve them directly.

Fault hooks (route names are in ROUTES): `fail_next(route, status)` answers an error (with `after=True` the
operation is applied first: the response is "lost"), `drop_next(route)` closes the connection without an
answer, `cut_next_download(n)` sends only n body bytes of the next file GET (the client resumes with Range),
`hold_next(route)` parks the request until the test releases it (to kill a publisher between commit and tag),
`on(route, fn)` runs fn(request) just before the request is handled (e.g. a racing commit from another client).
Note: the client retries 408/429/5xx and dropped connections with 1 s, 2 s, ... back-off on preupload, LFS
batch/PUT/verify and tree pages (not on commit, tag, repo_info or resolve HEAD), so use a 4xx there or expect the
retry. A broken download body is resumed with `Range` only from the last whole chunk of
`constants.DOWNLOAD_CHUNK_SIZE` (10 MiB); below that the client silently restarts from byte 0.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import importlib
import json
import secrets
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote

import pytest
import yaml

ROUTES = (
    "whoami",
    "validate_yaml",
    "create_repo",
    "delete_repo",
    "settings",
    "info",
    "tree",
    "paths_info",
    "refs",
    "commits",
    "preupload",
    "commit",
    "tag",
    "delete_tag",
    "branch",
    "delete_branch",
    "lfs_batch",
    "lfs_upload",
    "lfs_verify",
    "resolve",
    "cdn",
    "agent_harnesses",
    "unknown",
)
LFS_SUFFIXES = (
    ".parquet", ".arrow", ".tar", ".gz", ".tgz", ".zip", ".zst", ".7z", ".bin", ".npy", ".npz", ".pt", ".pth", ".pkl",
    ".safetensors", ".onnx", ".h5", ".wav", ".mp3", ".flac", ".ogg", ".mp4", ".avi", ".mkv", ".webm", ".mov", ".jpg",
    ".jpeg", ".png", ".webp",
)  # fmt: skip
REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
URL_PREFIXES = {"model": "", "dataset": "datasets/", "space": "spaces/"}
GITATTRIBUTES = "".join(f"*{suffix} filter=lfs diff=lfs merge=lfs -text\n" for suffix in LFS_SUFFIXES).encode()


def _now() -> str:
    """The Hub's date format, which huggingface_hub.utils.parse_datetime expects."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def git_blob_oid(data: bytes) -> str:
    """The git object id of a blob, as the Hub (and `huggingface_hub.utils.sha.git_hash`) computes it."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


@dataclass(frozen=True)
class StoredFile:
    """One file of a commit: its bytes and the ids the Hub reports for it."""

    size: int
    sha256: str
    git_oid: str  # of the content for a regular file, of the LFS pointer for an LFS file (like git)
    lfs: bool
    data: bytes = field(repr=False)

    @classmethod
    def make(cls, data: bytes, lfs: bool) -> StoredFile:
        sha = hashlib.sha256(data).hexdigest()
        return cls(len(data), sha, git_blob_oid(lfs_pointer(sha, len(data)) if lfs else data), lfs, data)

    @property
    def etag(self) -> str:
        """What the Hub sends as (linked) ETag: sha256 for LFS files, the git blob id otherwise."""
        return self.sha256 if self.lfs else self.git_oid

    def entry(self, path: str) -> dict[str, Any]:
        """The tree / paths-info JSON of this file."""
        out: dict[str, Any] = {"type": "file", "oid": self.git_oid, "size": self.size, "path": path}
        if self.lfs:
            out["lfs"] = {"oid": self.sha256, "size": self.size, "pointerSize": len(lfs_pointer(self.sha256, self.size))}
        return out


@dataclass(frozen=True)
class Commit:
    sha: str
    parents: tuple[str, ...]
    files: dict[str, StoredFile]  # never mutated once committed
    title: str
    message: str
    author: str
    date: str


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool
    created_at: str
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    commits: dict[str, Commit] = field(default_factory=dict)
    lfs_objects: dict[str, bytes] = field(default_factory=dict)  # sha256 -> bytes, uploaded through the LFS batch API

    def resolve(self, revision: str) -> str | None:
        """Branch, tag, refs/heads/x, refs/tags/x or full commit sha -> commit sha."""
        if revision.startswith("refs/heads/"):
            return self.branches.get(revision[len("refs/heads/") :])
        if revision.startswith("refs/tags/"):
            return self.tags.get(revision[len("refs/tags/") :])
        if revision in self.branches:
            return self.branches[revision]
        if revision in self.tags:
            return self.tags[revision]
        return revision if revision in self.commits else None

    def history(self, sha: str) -> list[Commit]:
        """First-parent history, newest first."""
        out = []
        while sha:
            commit = self.commits[sha]
            out.append(commit)
            sha = commit.parents[0] if commit.parents else ""
        return out


@dataclass
class Recorded:
    """One request as the server saw it."""

    method: str
    path: str  # raw, with the query string
    route: str
    headers: list[tuple[str, str]]
    body: bytes
    host: str
    status: int | None = None  # None: the connection was dropped

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)

    def json(self) -> Any:
        return json.loads(self.body)


class Hold:
    """A request parked by `hold_next` until the test releases it."""

    def __init__(self) -> None:
        self.arrived = threading.Event()
        self._released = threading.Event()
        self.status: int | None = None

    def wait(self, timeout: float = 10.0) -> bool:
        """Wait until the held request has arrived."""
        return self.arrived.wait(timeout)

    def release(self, status: int | None = None) -> None:
        """Let the request go on (or answer `status` instead of handling it)."""
        self.status = status
        self._released.set()


@dataclass
class _Fault:
    route: str
    kind: str  # status | drop | hold | call | cut
    times: int
    status: int = 500
    message: str = ""
    after: bool = False
    hold: Hold | None = None
    fn: Callable[[Recorded], None] | None = None
    cut_after: int = 0


@dataclass
class _Resp:
    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)


class _HubError(Exception):
    """Raised by route handlers; becomes an error response shaped like the Hub's."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message)
        self.resp = _json_resp({"error": message}, status)
        self.resp.headers.append(("X-Error-Message", message))
        if code:
            self.resp.headers.append(("X-Error-Code", code))
        self.resp.headers.extend(headers or [])


def _json_resp(obj: Any, status: int = 200, headers: list[tuple[str, str]] | None = None) -> _Resp:
    return _Resp(status, json.dumps(obj).encode(), [("Content-Type", "application/json; charset=utf-8"), *(headers or [])])


@dataclass
class _Req:
    method: str
    segs: list[str]
    raw_path: str
    query: dict[str, list[str]]
    headers: Any  # email.message.Message
    body: bytes
    authed: bool

    def json(self) -> Any:
        try:
            return json.loads(self.body or b"{}")
        except ValueError as e:
            raise _HubError(400, f"invalid JSON body: {e}") from e

    def flag(self, name: str) -> bool:
        return (self.query.get(name) or [""])[0].lower() in ("1", "true")


class HubLoopback:
    """The server and its in-memory repos. Start with `start()` or `with`; `url` is the endpoint for HfApi."""

    def __init__(
        self,
        token: str = "hf_loopback_token",
        *,
        user: str = "loopback-user",
        lfs_threshold: int = 1024,
        lfs_suffixes: tuple[str, ...] = LFS_SUFFIXES,
        cdn_host: str | None = "localhost",
        tree_page_size: int = 1000,
    ) -> None:
        self.token = token
        self.user = user
        self.lfs_threshold = lfs_threshold
        self.lfs_suffixes = tuple(s.lower() for s in lfs_suffixes)
        self.cdn_host = cdn_host
        self.tree_page_size = tree_page_size
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lfs_upload_count = 0  # PUTs of LFS content received (whatever their outcome)
        self.lfs_uploaded_bytes = 0
        self.lfs_uploaded_oids: list[str] = []  # sha256 of each LFS object stored by a PUT, in order
        self._secret = secrets.token_bytes(16)
        self._lock = threading.RLock()
        self._faults: list[_Fault] = []
        self.hook_errors: list[Exception] = []  # exceptions raised by `on(...)` hooks
        self._holds: list[Hold] = []
        self._requests: list[Recorded] = []
        self._connections: set[Any] = set()
        self._counter = 0
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------------------------------------

    def start(self) -> HubLoopback:
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        httpd.daemon_threads = True
        httpd.hub = self  # type: ignore[attr-defined]
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), name="hub-loopback", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        for hold in list(self._holds):
            hold.release()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            for conn in list(self._connections):  # kept-alive client connections would keep their threads alive
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self._httpd = None

    def __enter__(self) -> HubLoopback:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def port(self) -> int:
        assert self._httpd is not None, "server not started"
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        """The endpoint to give HfApi / hf_hub_download / snapshot_download."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def cdn_url(self) -> str:
        """Origin of the signed LFS download links (another origin than `url` unless cdn_host is None)."""
        return f"http://{self.cdn_host}:{self.port}" if self.cdn_host else self.url

    # -- inspection ----------------------------------------------------------------------------------------------------

    @property
    def requests(self) -> list[Recorded]:
        with self._lock:
            return list(self._requests)

    def requests_for(self, route: str) -> list[Recorded]:
        return [r for r in self.requests if r.route == route]

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    def token_leaks(self) -> list[str]:
        """Every place the token was seen other than an `Authorization: Bearer` header (empty list: no leak)."""
        leaks = []
        needle = self.token.encode()
        for r in self.requests:
            if self.token in r.path or self.token in unquote(r.path):
                leaks.append(f"{r.method} {r.path}: in the path")
            if needle in r.body:
                leaks.append(f"{r.method} {r.path}: in the body")
            for name, value in r.headers:
                if self.token in value and not (name.lower() == "authorization" and value == f"Bearer {self.token}"):
                    leaks.append(f"{r.method} {r.path}: in header {name}")
        return leaks

    def repo(self, repo_id: str, repo_type: str = "dataset") -> Repo:
        return self.repos[(repo_type, repo_id)]

    def resolve(self, repo_id: str, revision: str = "main", repo_type: str = "dataset") -> str:
        sha = self.repo(repo_id, repo_type).resolve(revision)
        if sha is None:
            raise KeyError(revision)
        return sha

    def files(self, repo_id: str, revision: str = "main", repo_type: str = "dataset") -> dict[str, StoredFile]:
        with self._lock:
            return dict(self.repo(repo_id, repo_type).commits[self.resolve(repo_id, revision, repo_type)].files)

    def list_paths(self, repo_id: str, revision: str = "main", repo_type: str = "dataset") -> list[str]:
        return sorted(self.files(repo_id, revision, repo_type))

    def read_file(self, repo_id: str, path: str, revision: str = "main", repo_type: str = "dataset") -> bytes:
        return self.files(repo_id, revision, repo_type)[path].data

    def create_repo(self, repo_id: str, repo_type: str = "dataset", private: bool = False) -> Repo:
        """Seed a repo directly (same result as the create route: an initial commit with .gitattributes)."""
        with self._lock:
            if (repo_type, repo_id) in self.repos:
                raise ValueError(f"{repo_type} {repo_id} exists")
            repo = Repo(repo_type, repo_id, private, _now())
            self.repos[(repo_type, repo_id)] = repo
            self._new_commit(repo, "main", {".gitattributes": StoredFile.make(GITATTRIBUTES, lfs=False)}, "initial commit", "", "system", ())
            return repo

    # -- fault injection -----------------------------------------------------------------------------------------------

    def _add_fault(self, fault: _Fault) -> None:
        if fault.route not in ROUTES:
            raise ValueError(f"unknown route {fault.route!r}; one of {ROUTES}")
        with self._lock:
            self._faults.append(fault)

    def fail_next(self, route: str, status: int = 500, *, times: int = 1, message: str | None = None, after: bool = False) -> None:
        """Answer the next `times` requests of `route` with `status`; after=True applies the operation first (lost response)."""
        self._add_fault(_Fault(route, "status", times, status, message or f"injected failure ({status}) on {route}", after))

    def drop_next(self, route: str, *, times: int = 1, after: bool = False) -> None:
        """Close the connection of the next `times` requests of `route` without answering (after=True: applied first)."""
        self._add_fault(_Fault(route, "drop", times, after=after))

    def cut_next_download(self, after_bytes: int, *, times: int = 1) -> None:
        """The next `times` file GETs (resolve or cdn) announce the full length but send only `after_bytes`, then close.

        The client resumes with `Range: bytes=<n>-` where n counts only whole chunks of constants.DOWNLOAD_CHUNK_SIZE
        it received (shrink that constant with monkeypatch to see a resume on small files)."""
        self._add_fault(_Fault("resolve", "cut", times, cut_after=after_bytes))

    def hold_next(self, route: str) -> Hold:
        """Park the next request of `route` until `release()` (e.g. to kill a publisher between commit and tag)."""
        hold = Hold()
        self._holds.append(hold)
        self._add_fault(_Fault(route, "hold", 1, hold=hold))
        return hold

    def on(self, route: str, fn: Callable[[Recorded], None], *, times: int = 1) -> None:
        """Run fn(request) just before the next `times` requests of `route` are handled (no lock held: fn may call the server)."""
        self._add_fault(_Fault(route, "call", times, fn=fn))

    def _take_fault(self, route: str, kinds: tuple[str, ...]) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.kind in kinds and (fault.route == route or (fault.kind == "cut" and route in ("resolve", "cdn"))):
                    fault.times -= 1
                    if fault.times <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    # -- internals -----------------------------------------------------------------------------------------------------

    def _sign(self, text: str) -> str:
        return hmac.new(self._secret, text.encode(), hashlib.sha256).hexdigest()

    def _repo_url(self, repo: Repo) -> str:
        return f"{self.url}/{URL_PREFIXES[repo.repo_type]}{repo.repo_id}"

    def _new_commit(self, repo: Repo, branch: str, files: dict[str, StoredFile], title: str, message: str, author: str, parents: tuple[str, ...]) -> str:
        """Store a commit and move the branch head; the sha hashes a git-like commit object (tree, parents, author, time)."""
        self._counter += 1
        tree = hashlib.sha1("".join(f"{p}\0{f.git_oid}\n" for p, f in sorted(files.items())).encode()).hexdigest()
        date = _now()
        text = f"tree {tree}\n" + "".join(f"parent {p}\n" for p in parents) + f"author {author} {date} #{self._counter}\n\n{title}\n\n{message}"
        sha = hashlib.sha1(b"commit %d\0" % len(text.encode()) + text.encode()).hexdigest()
        repo.commits[sha] = Commit(sha, parents, files, title, message, author, date)
        repo.branches[branch] = sha
        return sha

    def _is_lfs(self, path: str, size: int, sample: bytes) -> bool:
        return size > self.lfs_threshold or path.lower().endswith(self.lfs_suffixes) or b"\0" in sample

    def _find_lfs_object(self, oid: str) -> bytes | None:
        for repo in self.repos.values():
            if oid in repo.lfs_objects:
                return repo.lfs_objects[oid]
        return None

    # -- routing ---------------------------------------------------------------------------------------------------------

    def _route(self, method: str, segs: list[str]) -> tuple[str, Callable[..., _Resp], tuple[Any, ...]]:
        """(route name, handler, handler args) for a request; handlers take (req, *args)."""
        if segs[:1] == ["api"]:
            rest = segs[1:]
            simple = {
                ("GET", "whoami-v2"): ("whoami", self._whoami),
                ("POST", "validate-yaml"): ("validate_yaml", self._validate_yaml),
                ("GET", "agent-harnesses"): ("agent_harnesses", lambda req: _json_resp({"standardEnvVars": [], "harnesses": {}})),
                ("POST", "repos/create"): ("create_repo", self._create_repo),
                ("DELETE", "repos/delete"): ("delete_repo", self._delete_repo),
            }
            if (method, "/".join(rest)) in simple:
                name, fn = simple[(method, "/".join(rest))]
                return name, fn, ()
            if len(rest) >= 3 and rest[0] in REPO_TYPES:
                key = (REPO_TYPES[rest[0]], f"{rest[1]}/{rest[2]}")
                action, args = (rest[3] if len(rest) > 3 else ""), rest[4:]
                table: dict[tuple[str, str], tuple[str, Callable[..., _Resp]]] = {
                    ("GET", ""): ("info", self._info),
                    ("GET", "revision"): ("info", self._info),
                    ("GET", "tree"): ("tree", self._tree),
                    ("POST", "paths-info"): ("paths_info", self._paths_info),
                    ("GET", "refs"): ("refs", self._refs),
                    ("GET", "commits"): ("commits", self._commits),
                    ("POST", "preupload"): ("preupload", self._preupload),
                    ("POST", "commit"): ("commit", self._commit),
                    ("POST", "tag"): ("tag", self._tag),
                    ("DELETE", "tag"): ("delete_tag", self._delete_tag),
                    ("POST", "branch"): ("branch", self._branch),
                    ("DELETE", "branch"): ("delete_branch", self._delete_branch),
                    ("PUT", "settings"): ("settings", self._settings),
                }
                if (method, action) in table:
                    name, fn = table[(method, action)]
                    return name, fn, (key, args)
            return "unknown", self._unknown, ()
        if segs[:1] == ["lfs-upload"] and method == "PUT" and len(segs) == 5:
            return "lfs_upload", self._lfs_upload, (segs[1:],)
        if segs[:1] == ["cdn-lfs"] and method in ("GET", "HEAD") and len(segs) == 2:
            return "cdn", self._cdn, (segs[1],)
        repo_type, rest = ("dataset", segs[1:]) if segs[:1] == ["datasets"] else ("space", segs[1:]) if segs[:1] == ["spaces"] else ("model", segs)
        if len(rest) == 6 and rest[1].endswith(".git") and rest[2:5] == ["info", "lfs", "objects"] and method == "POST":
            key = (repo_type, f"{rest[0]}/{rest[1][:-4]}")
            if rest[5] == "batch":
                return "lfs_batch", self._lfs_batch, (key,)
            if rest[5] == "verify":
                return "lfs_verify", self._lfs_verify, (key,)
        if len(rest) >= 5 and rest[2] == "resolve" and method in ("GET", "HEAD"):
            return "resolve", self._resolve, ((repo_type, f"{rest[0]}/{rest[1]}"), rest[3], "/".join(rest[4:]))
        return "unknown", self._unknown, ()

    def _handle(self, handler: _Handler) -> None:
        """Read, record, apply faults, route, answer: one request."""
        body = handler.read_body()
        raw_path, _, query = handler.path.partition("?")
        segs = [unquote(s) for s in raw_path.split("/")[1:]]
        route, fn, args = self._route(handler.command, segs)
        record = Recorded(handler.command, handler.path, route, list(handler.headers.items()), body, handler.headers.get("Host", ""))
        with self._lock:
            self._requests.append(record)
        auth = handler.headers.get("Authorization")
        req = _Req(handler.command, segs, raw_path, parse_qs(query), handler.headers, body, auth == f"Bearer {self.token}")

        def run() -> _Resp:
            if auth is not None and not req.authed and route not in ("lfs_upload", "cdn"):
                return _HubError(401, "Invalid credentials in Authorization header").resp
            try:
                with self._lock:
                    return fn(req, *args)
            except _HubError as e:
                return e.resp

        fault = self._take_fault(route, ("status", "drop", "hold", "call"))
        if fault is not None and fault.kind == "call" and fault.fn is not None:
            try:
                fault.fn(record)
            except Exception as e:  # surfaced through hook_errors: a test's hook must not kill the handler thread
                self.hook_errors.append(e)
        if fault is not None and fault.kind == "hold" and fault.hold is not None:
            fault.hold.arrived.set()
            fault.hold._released.wait(120)
            if fault.hold.status is not None:
                fault = _Fault(route, "status", 1, fault.hold.status, f"held request answered {fault.hold.status}")
        if fault is not None and fault.kind in ("status", "drop"):
            if fault.after:
                run()
            if fault.kind == "drop":
                handler.close_connection = True
                return
            resp = _HubError(fault.status, fault.message).resp
        else:
            resp = run()
        cut = None
        if handler.command == "GET" and resp.status in (200, 206):
            cut_fault = self._take_fault(route, ("cut",))
            cut = cut_fault.cut_after if cut_fault is not None else None
        record.status = resp.status
        handler.send(resp, cut)

    # -- auth helpers ----------------------------------------------------------------------------------------------------

    def _readable(self, req: _Req, key: tuple[str, str]) -> Repo:
        """The repo if this request may read it; like the Hub, a missing or hidden repo is RepoNotFound (401 when anonymous)."""
        repo = self.repos.get(key)
        if repo is None or (repo.private and not req.authed):
            raise _HubError(401 if not req.authed else 404, "Repository not found", "RepoNotFound")
        return repo

    def _writable(self, req: _Req, key: tuple[str, str]) -> Repo:
        if not req.authed:
            raise _HubError(401, "You must be authenticated (Authorization: Bearer <token>) to write")
        repo = self.repos.get(key)
        if repo is None:
            raise _HubError(404, "Repository not found", "RepoNotFound")
        return repo

    def _commit_at(self, repo: Repo, revision: str) -> Commit:
        sha = repo.resolve(revision)
        if sha is None:
            raise _HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return repo.commits[sha]

    # -- route handlers (called with the lock held) ------------------------------------------------------------------

    def _unknown(self, req: _Req) -> _Resp:
        raise _HubError(404, f"the loopback hub does not serve {req.method} {req.raw_path}")

    def _whoami(self, req: _Req) -> _Resp:
        if not req.authed:
            raise _HubError(401, "Invalid credentials in Authorization header")
        auth = {"type": "access_token", "accessToken": {"displayName": "loopback", "role": "write", "createdAt": "2024-01-01T00:00:00.000Z"}}
        return _json_resp({"type": "user", "id": "0" * 24, "name": self.user, "fullname": self.user, "email": None, "orgs": [], "isPro": False, "auth": auth})

    def _validate_yaml(self, req: _Req) -> _Resp:
        content = req.json().get("content", "")
        meta, error = _front_matter(content)
        if error:
            return _json_resp({"errors": [{"message": error}], "warnings": []}, 400)
        warnings = [] if meta else [{"message": "empty or missing yaml metadata in repo card"}]
        return _json_resp({"errors": [], "warnings": warnings})

    def _create_repo(self, req: _Req) -> _Resp:
        if not req.authed:
            raise _HubError(401, "You must be authenticated to create a repo")
        payload = req.json()
        repo_type = payload.get("type") or "model"
        if repo_type not in URL_PREFIXES or not payload.get("name"):
            raise _HubError(400, f"bad repo type or name: {payload}")
        repo_id = f"{payload.get('organization') or self.user}/{payload['name']}"
        private = payload.get("visibility", "private" if payload.get("private") else "public") == "private"
        if (repo_type, repo_id) in self.repos:
            err = _HubError(409, f"You already created this {repo_type} repo")
            err.resp.body = json.dumps({"error": str(err), "url": self._repo_url(self.repos[(repo_type, repo_id)])}).encode()
            raise err  # create_repo(exist_ok=True) reads `url` from this 409 body, like the Hub sends it
        repo = self.create_repo(repo_id, repo_type, private)
        return _json_resp({"url": self._repo_url(repo), "name": repo_id, "id": "0" * 24})

    def _delete_repo(self, req: _Req) -> _Resp:
        payload = req.json()
        key = (payload.get("type") or "model", f"{payload.get('organization') or self.user}/{payload.get('name')}")
        self._writable(req, key)
        del self.repos[key]
        return _Resp(200)

    def _settings(self, req: _Req, key: tuple[str, str], args: list[str]) -> _Resp:
        repo = self._writable(req, key)
        payload = req.json()
        if "visibility" in payload:
            repo.private = payload["visibility"] == "private"
        if "private" in payload:
            repo.private = bool(payload["private"])
        return _json_resp({})

    def _info(self, req: _Req, key: tuple[str, str], args: list[str]) -> _Resp:
        repo = self._readable(req, key)
        commit = self._commit_at(repo, args[0] if args else "main")
        blobs = req.flag("blobs")
        siblings = []
        for path, f in sorted(commit.files.items()):
            sibling: dict[str, Any] = {"rfilename": path}
            if blobs:
                sibling.update(size=f.size, blobId=f.git_oid)
                if f.lfs:
                    sibling["lfs"] = {"size": f.size, "sha256": f.sha256, "pointerSize": len(lfs_pointer(f.sha256, f.size))}
            siblings.append(sibling)
        info: dict[str, Any] = {
            "_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24],
            "id": repo.repo_id,
            "author": repo.repo_id.split("/")[0],
            "sha": commit.sha,
            "private": repo.private,
            "gated": False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "createdAt": repo.created_at,
            "lastModified": commit.date,
            "siblings": siblings,
            "usedStorage": sum(f.size for f in commit.files.values()),
        }
        if "README.md" in commit.files:
            meta, _ = _front_matter(commit.files["README.md"].data.decode("utf-8", "replace"))
            if meta:
                info["cardData"] = meta
        if repo.repo_type == "model":
            info["modelId"] = repo.repo_id
        return _json_resp(info)

    def _entries(self, repo: Repo, commit: Commit, base: str, recursive: bool, expand: bool) -> list[dict[str, Any]] | None:
        """Tree entries under `base` (None: no such path); directories get a git-like tree id."""
        base = base.strip("/")
        files = commit.files
        if base in files:
            return [self._expanded(repo, commit, base, files[base].entry(base), expand)]
        prefix = f"{base}/" if base else ""
        under = {p: f for p, f in files.items() if p.startswith(prefix)}
        if base and not under:
            return None
        dirs: set[str] = set()
        for path in under:
            parts = path[len(prefix) :].split("/")[:-1]
            for i in range(1, len(parts) + 1):
                dirs.add(prefix + "/".join(parts[:i]))
        out = []
        for path in sorted(dirs | set(under)):
            if not recursive and "/" in path[len(prefix) :]:
                continue
            if path in under:
                entry = under[path].entry(path)
            else:
                inside = sorted((p, f.git_oid) for p, f in under.items() if p.startswith(path + "/"))
                entry = {"type": "directory", "oid": hashlib.sha1(repr(inside).encode()).hexdigest(), "size": 0, "path": path}
            out.append(self._expanded(repo, commit, path, entry, expand))
        return out

    def _expanded(self, repo: Repo, commit: Commit, path: str, entry: dict[str, Any], expand: bool) -> dict[str, Any]:
        """Add `lastCommit` (the newest first-parent commit that changed `path`) when the client asks expand=True."""
        if not expand:
            return entry
        history = repo.history(commit.sha)
        last = history[-1]

        def state(c: Commit) -> list[tuple[str, str]]:
            return sorted((p, f.git_oid) for p, f in c.files.items() if p == path or p.startswith(path + "/"))

        for newer, older in zip(history, history[1:], strict=False):
            if state(newer) != state(older):
                last = newer
                break
        entry["lastCommit"] = {"id": last.sha, "title": last.title, "date": last.date}
        return entry

    def _tree(self, req: _Req, key: tuple[str, str], args: list[str]) -> _Resp:
        repo = self._readable(req, key)
        if not args:
            raise _HubError(400, "missing revision")
        commit = self._commit_at(repo, args[0])
        recursive, expand = req.flag("recursive"), req.flag("expand")
        entries = self._entries(repo, commit, "/".join(args[1:]), recursive, expand)
        if entries is None:
            raise _HubError(404, f"Entry not found: {'/'.join(args[1:])}", "EntryNotFound", [("X-Repo-Commit", commit.sha)])
        page_size = min(self.tree_page_size, 50) if expand else self.tree_page_size
        start = int((req.query.get("cursor") or ["0"])[0])
        headers = [("X-Repo-Commit", commit.sha)]
        if start + page_size < len(entries):
            nxt = f"{self.url}{req.raw_path}?recursive={str(recursive).lower()}&expand={str(expand).lower()}&cursor={start + page_size}"
            headers.append(("Link", f'<{nxt}>; rel="next"'))
        return _json_resp(entries[start : start + page_size], headers=headers)

    def _paths_info(self, req: _Req, key: tuple[str, str], args: list[str]) -> _Resp:
        repo = self._readable(req, key)
        commit = self._commit_at(repo, args[0] if args else "main")
        form = parse_qs(req.body.decode())
        expand = (form.get("expand") or [""])[0].lower() == "true"
        out = []
        for path in form.get("paths", []):
            path = path.strip("/")
            if path in commit.files:
                out.append(self._expanded(repo, commit, path, commit.files[path].entry(path), expand))
            elif any(p.startswith(path + "/") for p in commit.files):
                out.extend(e for e in (self._entries(repo, commit, "/".join(path.split("/")[:-1]), False, expand) or []) if e["path"] == path)
        return _json_resp(out)

    def _refs(self, req: _Req, key: tuple[str, str], args: list[str]) -> _Resp:
        repo = self._readable(req, key)
        branches = [{"name": n, "ref": f"refs/heads/{n}", "targetCommit": s} for n, s in sorted(repo.branches.items())]
        tags = [{"name": n, "ref": f"refs/tags/{n}", "targetCommit": s} for n, s in sorted(repo.tags.items())]
        return _json_resp({"branches": branches, "converts": [], "tags": tags, "pullRequests": []})

    def _commits(self, req: _Req, key: tuple[str, str], args: list[str]) -> _Resp:
        repo = self._readable(req, key)
        commit = self._commit_at(repo, args[0] if args else "main")
        items = [
            {"id": c.sha, "title": c.title, "message": c.message, "authors": [{"user": c.author, "avatar": None}], "date": c.date}
            for c in repo.history(commit.sha)
        ]
        return _json_resp(items)

    def _preupload(self, req: _Req, key: tuple[str, str], args: list[str]) -> _Resp:
        repo = self._writable(req, key)
        if req.flag("create_pr"):
            raise _HubError(400, "create_pr is not supported by the loopback hub")
        commit = self._commit_at(repo, args[0] if args else "main")
        out = []
        for item in req.json().get("files", []):
            path, size = item["path"], int(item["size"])
            sample = base64.b64decode(item.get("sample", ""))
            existing = commit.files.get(path)
            oid = (existing.sha256 if existing.lfs else existing.git_oid) if existing else None
            mode = "lfs" if self._is_lfs(path, size, sample) else "regular"
            out.append({"path": path, "uploadMode": mode, "shouldIgnore": False, "oid": oid})
        return _json_resp({"files": out, "commitOid": commit.sha})

    def _commit(self, req: _Req, key: tuple[str, str], args: list[str]) -> _Resp:
        repo = self._writable(req, key)
        if req.flag("create_pr"):
            raise _HubError(400, "create_pr is not supported by the loopback hub")
        revision = args[0] if args else "main"
        branch = revision[len("refs/heads/") :] if revision.startswith("refs/heads/") else revision
        if branch not in repo.branches:
            if repo.resolve(revision) is not None:
                raise _HubError(400, f"Invalid rev id: {revision} is not a branch; commits go to branches")
            raise _HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        try:
            lines = [json.loads(line) for line in req.body.splitlines() if line.strip()]
        except ValueError as e:
            raise _HubError(400, f"invalid NDJSON: {e}") from e
        header = next((line["value"] for line in lines if line.get("key") == "header"), None)
        if header is None:
            raise _HubError(400, "the first NDJSON line must be the commit header")
        head = repo.branches[branch]
        parent = header.get("parentCommit")
        if parent is not None and parent != head:
            raise _HubError(412, "A commit has happened since. Please refresh and try again.")
        files = dict(repo.commits[head].files)
        for line in lines:
            op, value = line.get("key"), line.get("value") or {}
            path = str(value.get("path", "")).strip("/")
            if op == "header":
                continue
            if op == "file":
                if value.get("encoding", "base64") != "base64":
                    raise _HubError(400, f"unsupported encoding {value.get('encoding')}")
                files[path] = StoredFile.make(base64.b64decode(value.get("content", "")), lfs=False)
            elif op == "lfsFile":
                data = repo.lfs_objects.get(value.get("oid", ""))
                if data is None or ("size" in value and int(value["size"]) != len(data)):
                    raise _HubError(400, f"Your push was rejected because an LFS pointer pointed to a file that does not exist ({path})")
                files[path] = StoredFile.make(data, lfs=True)
            elif op == "deletedFile":
                if path not in files:
                    raise _HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                del files[path]
            elif op == "deletedFolder":
                gone = [p for p in files if p.startswith(path + "/")]
                if not gone:
                    raise _HubError(404, f"A folder with this name doesn't exist: {path}", "EntryNotFound")
                for p in gone:
                    del files[p]
            else:
                raise _HubError(400, f"unknown commit operation {op!r}")
        sha = self._new_commit(repo, branch, files, header.get("summary", ""), header.get("description", ""), self.user, (head,))
        url = f"{self._repo_url(repo)}/commit/{sha}"
        return _json_resp({"success": True, "commitOid": sha, "commitUrl": url, "hookOutput": "", "pullRequestUrl": None})

    def _tag(self, req: _Req, key: tuple[str, str], args: list[str]) -> _Resp:
        repo = self._writable(req, key)
        commit = self._commit_at(repo, args[0] if args else "main")
        tag = str(req.json().get("tag", ""))
        if not tag or tag.startswith("refs/") or any(c in tag for c in " ~^:?*[\\"):
            raise _HubError(400, f"Invalid tag name {tag!r}")
        if tag in repo.tags:
            raise _HubError(409, f"Tag reference refs/tags/{tag} already exists")
        repo.tags[tag] = commit.sha
        return _json_resp({"name": tag, "ref": f"refs/tags/{tag}", "targetCommit": commit.sha})

    def _delete_tag(self, req: _Req, key: tuple[str, str], args: list[str]) -> _Resp:
        repo = self._writable(req, key)
        tag = args[0] if args else ""
        if tag not in repo.tags:
            raise _HubError(404, f"Invalid rev id: {tag}", "RevisionNotFound")
        del repo.tags[tag]
        return _Resp(200)

    def _branch(self, req: _Req, key: tuple[str, str], args: list[str]) -> _Resp:
        repo = self._writable(req, key)
        branch = args[0] if args else ""
        if branch in repo.branches:
            raise _HubError(409, f"Reference refs/heads/{branch} already exists")
        repo.branches[branch] = self._commit_at(repo, req.json().get("startingPoint") or "main").sha
        return _json_resp({})

    def _delete_branch(self, req: _Req, key: tuple[str, str], args: list[str]) -> _Resp:
        repo = self._writable(req, key)
        branch = args[0] if args else ""
        if branch == "main":
            raise _HubError(403, "Cannot delete the default branch")
        if branch not in repo.branches:
            raise _HubError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
        del repo.branches[branch]
        return _Resp(200)

    def _lfs_batch(self, req: _Req, key: tuple[str, str]) -> _Resp:
        repo = self._writable(req, key)
        payload = req.json()
        if payload.get("operation") != "upload":
            raise _HubError(400, "only the upload operation is supported by the loopback hub")
        objects = []
        for obj in payload.get("objects", []):
            oid, size = str(obj["oid"]), int(obj["size"])
            item: dict[str, Any] = {"oid": oid, "size": size, "authenticated": True}
            if oid not in repo.lfs_objects:  # already stored objects get no actions: the client skips their upload
                target = f"{repo.repo_type}/{repo.repo_id}/{oid}"
                item["actions"] = {
                    "upload": {"href": f"{self.url}/lfs-upload/{target}?size={size}&sig={self._sign(target)}", "expires_in": 3600},
                    "verify": {"href": f"{self._repo_url(repo)}.git/info/lfs/objects/verify", "expires_in": 3600},
                }
            objects.append(item)
        return _json_resp({"transfer": "basic", "objects": objects, "hash_algo": "sha256"})

    def _lfs_upload(self, req: _Req, parts: list[str]) -> _Resp:
        """PUT of the bytes to a signed URL (no Authorization, like the Hub's S3 links); checks sha256 and size."""
        repo_type, ns, name, oid = parts
        self.lfs_upload_count += 1
        self.lfs_uploaded_bytes += len(req.body)
        target = f"{repo_type}/{ns}/{name}/{oid}"
        if not hmac.compare_digest((req.query.get("sig") or [""])[0], self._sign(target)):
            raise _HubError(403, "bad signature")
        repo = self.repos.get((repo_type, f"{ns}/{name}"))
        if repo is None:
            raise _HubError(404, "Repository not found", "RepoNotFound")
        if hashlib.sha256(req.body).hexdigest() != oid:
            raise _HubError(400, f"sha256 of the uploaded content does not match the oid {oid}")
        if (req.query.get("size") or [str(len(req.body))])[0] != str(len(req.body)):
            raise _HubError(400, "size of the uploaded content does not match")
        repo.lfs_objects[oid] = req.body
        self.lfs_uploaded_oids.append(oid)
        return _Resp(200, headers=[("ETag", f'"{hashlib.md5(req.body).hexdigest()}"')])

    def _lfs_verify(self, req: _Req, key: tuple[str, str]) -> _Resp:
        repo = self._writable(req, key)
        payload = req.json()
        data = repo.lfs_objects.get(str(payload.get("oid")))
        if data is None or len(data) != int(payload.get("size", -1)):
            raise _HubError(404, f"LFS object {payload.get('oid')} not found")
        return _json_resp({})

    def _resolve(self, req: _Req, key: tuple[str, str], revision: str, path: str) -> _Resp:
        repo = self._readable(req, key)
        commit = self._commit_at(repo, revision)
        f = commit.files.get(path)
        if f is None:
            raise _HubError(404, f"Entry not found: {path}", "EntryNotFound", [("X-Repo-Commit", commit.sha)])
        headers = [("X-Repo-Commit", commit.sha), ("ETag", f'"{f.etag}"')]
        if f.lfs:
            headers += [("X-Linked-Etag", f'"{f.sha256}"'), ("X-Linked-Size", str(f.size))]
            if self.cdn_host:
                location = f"{self.cdn_url}/cdn-lfs/{f.sha256}?sig={self._sign(f.sha256)}"
                return _Resp(302, b"", headers + [("Location", location)])
        return _ranged(req, f.data, headers)

    def _cdn(self, req: _Req, oid: str) -> _Resp:
        if not hmac.compare_digest((req.query.get("sig") or [""])[0], self._sign(oid)):
            raise _HubError(403, "bad or missing signature")
        data = self._find_lfs_object(oid)
        if data is None:
            raise _HubError(404, "no such object")
        return _ranged(req, data, [("ETag", f'"{oid}"')])


def _ranged(req: _Req, data: bytes, headers: list[tuple[str, str]]) -> _Resp:
    """200 with the whole content, or 206/416 for a `Range: bytes=a-b` request (how the client resumes downloads)."""
    headers = [*headers, ("Accept-Ranges", "bytes"), ("Content-Type", "application/octet-stream")]
    spec = req.headers.get("Range")
    if not spec:
        return _Resp(200, data, headers)
    total = len(data)
    try:
        unit, _, rng = spec.partition("=")
        start_s, _, end_s = rng.strip().partition("-")
        if unit.strip() != "bytes" or "," in rng:
            raise ValueError(spec)
        if start_s == "":
            start, end = max(total - int(end_s), 0), total - 1
        else:
            start, end = int(start_s), (min(int(end_s), total - 1) if end_s else total - 1)
        if start > end or start >= total:
            raise ValueError(spec)
    except ValueError:
        return _Resp(416, b"", [*headers, ("Content-Range", f"bytes */{total}")])
    return _Resp(206, data[start : end + 1], [*headers, ("Content-Range", f"bytes {start}-{end}/{total}")])


def _front_matter(content: str) -> tuple[dict[str, Any] | None, str | None]:
    """(metadata, error) of a README's YAML front matter, like the Hub's validate-yaml."""
    if not content.startswith("---"):
        return None, None
    end = content.find("\n---", 3)
    if end < 0:
        return None, "the YAML front matter is not closed by ---"
    try:
        meta = yaml.safe_load(content[3:end])
    except yaml.YAMLError as e:
        return None, f"Invalid YAML in README.md metadata: {e}"
    if meta is None:
        return None, None
    if not isinstance(meta, dict):
        return None, "README.md metadata must be a YAML mapping"
    return meta, None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like the client's pooled connections expect
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall per request
    server_version = "hub-loopback/1"

    def setup(self) -> None:
        super().setup()
        self.server.hub._connections.add(self.connection)  # type: ignore[attr-defined]

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.hub._connections.discard(self.connection)  # type: ignore[attr-defined]

    def read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def send(self, resp: _Resp, cut: int | None) -> None:
        self.send_response(resp.status)
        names = {k.lower() for k, _ in resp.headers}
        for k, v in resp.headers:
            self.send_header(k, v)
        if "content-length" not in names:
            self.send_header("Content-Length", str(len(resp.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(resp.body if cut is None else resp.body[:cut])
        if cut is not None:
            self.close_connection = True

    def _dispatch(self) -> None:
        self.server.hub._handle(self)  # type: ignore[attr-defined]

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _dispatch

    def log_message(self, format: str, *args: Any) -> None:  # quiet: requests are recorded instead
        pass


@contextmanager
def hub_server(token: str = "hf_loopback_token", **kwargs: Any) -> Iterator[HubLoopback]:
    """A started HubLoopback (kwargs: user, lfs_threshold, lfs_suffixes, cdn_host, tree_page_size), closed on exit."""
    with HubLoopback(token, **kwargs) as hub:
        yield hub


def online_hub(monkeypatch: pytest.MonkeyPatch, hub: HubLoopback | None = None, *, home: Path | None = None) -> Path:
    """Make the in-process huggingface_hub client usable against the loopback (see the module docstring); returns HF_HOME."""
    from huggingface_hub import constants
    from huggingface_hub.utils import _detect_agent

    home = Path(home) if home is not None else Path(tempfile.mkdtemp(prefix="hub-loopback-home-"))
    home.mkdir(parents=True, exist_ok=True)
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(var, raising=False)
    env = {
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "HF_HOME": str(home),
        "HF_HUB_CACHE": str(home / "hub"),
    }
    if hub is not None:
        env["HF_ENDPOINT"] = hub.url
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    patches: dict[str, Any] = {
        "HF_HUB_OFFLINE": False,
        "HF_HUB_DISABLE_XET": True,
        "HF_HUB_DISABLE_TELEMETRY": True,
        "HF_HOME": str(home),
        "HF_HUB_CACHE": str(home / "hub"),
        "HF_TOKEN_PATH": str(home / "token"),
        "HF_STORED_TOKENS_PATH": str(home / "stored_tokens"),
    }
    if hub is not None:
        patches["ENDPOINT"] = hub.url
        patches["HUGGINGFACE_CO_URL_TEMPLATE"] = hub.url + "/{repo_id}/resolve/{revision}/{filename}"
    for name, value in patches.items():
        monkeypatch.setattr(constants, name, value)
    monkeypatch.setattr(_detect_agent, "_registry", {"standardEnvVars": [], "harnesses": {}})
    monkeypatch.setattr(importlib.import_module("huggingface_hub.utils.tqdm"), "HF_HUB_DISABLE_PROGRESS_BARS", True)  # the name `utils.tqdm` is the class
    return home


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll `predicate` (e.g. "the tag request has arrived") until true or timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


__all__ = ["HubLoopback", "Hold", "Recorded", "StoredFile", "Commit", "Repo", "ROUTES", "hub_server", "online_hub", "wait_until", "git_blob_oid"]
