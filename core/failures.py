"""Failure rows: what failures.parquet holds for each input that did not become a record."""

from __future__ import annotations

from emer_builder.core.errors import ClipError, SchemaError

FAILURES_FILE = "failures.parquet"  # one per build, beside data/
FAILURE_COLUMNS = ("key", "source_path", "stage", "error_class", "message")


def failure_row(key: str, source_path: str, stage: str, error: BaseException) -> dict[str, str]:
    """Our own errors keep their message; anything else is prefixed with its class (a library's words)."""
    message = str(error) if isinstance(error, (ClipError, SchemaError)) else f"{type(error).__name__}: {error}"
    return {"key": key, "source_path": source_path, "stage": stage, "error_class": type(error).__name__, "message": message[:2000]}
