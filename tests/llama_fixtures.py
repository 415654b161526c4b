"""The real LLM server as a pytest fixture (imported by conftest.py): one per test session (per xdist worker),
started on loopback and stopped at the end; skipped with the reason only where its packages are not installed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.llama_server import LlamaServer, missing


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    """llama.cpp serving SmolLM2-135M-Instruct (text only) with 2 slots, at `llama_server.base_url`, model id `smollm2`."""
    reason = missing()
    if reason:
        pytest.skip(reason)
    log: Path = tmp_path_factory.mktemp("llama") / "server.log"
    with LlamaServer(parallel=2, log_path=log) as server:
        yield server
