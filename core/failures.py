"""Failure rows: what failures.parquet holds for each input that did not become a record; and the
retries that keep a fault of the process (not of the input) from ever becoming one."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import TypeVar

from emer_builder.core.errors import FAULTS, BuildFault, ClipError, SchemaError

FAILURES_FILE = "failures.parquet"  # one per build, beside data/
FAILURE_COLUMNS = ("key", "source_path", "stage", "error_class", "message")
FAULT_TRIES = 3  # a step that meets a process fault runs at most this often before the build fails
FAULT_BACKOFF_S = 0.5  # waited before the second try, doubled before each later one

T = TypeVar("T")


def failure_row(key: str, source_path: str, stage: str, error: BaseException) -> dict[str, str]:
    """Our own errors keep their message; anything else is prefixed with its class (a library's words)."""
    message = str(error) if isinstance(error, (ClipError, SchemaError)) else f"{type(error).__name__}: {error}"
    return {"key": key, "source_path": source_path, "stage": stage, "error_class": type(error).__name__, "message": message[:2000]}


def retry_faults(work: Callable[[], T], source_path: str, step: str, tries: int = FAULT_TRIES, backoff_s: float = FAULT_BACKOFF_S) -> T:
    """`work()`, run again after a process fault (a killed child, MemoryError, a timed-out resource);
    a fault that persists raises BuildFault, which fails the build. Errors of the input pass through."""
    for attempt in range(1, tries + 1):
        try:
            return work()
        except FAULTS as e:
            if attempt == tries:
                raise BuildFault.after_tries(source_path, step, e, tries) from e
            gc.collect()  # after a MemoryError: what the failed try held
            time.sleep(backoff_s * 2 ** (attempt - 1))
    raise AssertionError("unreachable")
