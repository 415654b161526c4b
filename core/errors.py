"""Errors a user can fix (printed as one line by the CLI, never as a traceback) and per-clip errors."""


class UserError(Exception):
    """Bad input or arguments; the message says what to change."""


class ClipError(Exception):
    """A clip cannot become a record; the message is the reason shown in failures.parquet."""


class SchemaError(ValueError):
    """A record does not fit the schema."""


def one_line(e: BaseException, limit: int = 300) -> str:
    """An exception's message on one line (library errors span several), cut to `limit` characters."""
    return " ".join(str(e).split())[:limit]
