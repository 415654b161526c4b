"""Errors a user can fix (printed as one line by the CLI, never as a traceback), per-clip errors, and
faults of the process (not of the input) that fail the build instead of dropping a good clip."""

from __future__ import annotations

import signal


class UserError(Exception):
    """Bad input or arguments; the message says what to change."""


class ClipError(Exception):
    """A clip cannot become a record; the message is the reason shown in failures.parquet."""


class SchemaError(ValueError):
    """A record does not fit the schema."""


class ProcessFault(Exception):
    """The process failed, not the input: a child killed by a signal (the OOM killer, a preempted or
    drained node, Ctrl-C reaching the process group), memory exhausted, a resource that timed out.
    Such a step is retried; it never becomes a failure row and is never cached."""


# Exceptions that say the machine or a resource failed, whatever the clip: retried like ProcessFault.
FAULTS: tuple[type[BaseException], ...] = (ProcessFault, MemoryError, TimeoutError, ConnectionError)
FAULT_MARK = "emer-process-fault:"  # starts the message of a BuildFault, so the driver finds it in a runner's wrapped error


class BuildFailed(Exception):
    """The build stopped for a reason outside the inputs; nothing was committed. `line` is what the CLI
    prints (exit status 1)."""

    def __init__(self, line: str):
        self.line = line
        super().__init__(line)


class BuildFault(BuildFailed):
    """A process fault that persisted through its retries: the build fails (non-zero exit, nothing
    committed) with one line naming the clip and the cause, so a good clip is never silently dropped.
    Its text starts with FAULT_MARK, so the driver finds it inside a runner's wrapped error."""

    def __init__(self, line: str):
        line = line.removeprefix(FAULT_MARK).strip()
        super().__init__(line)
        self.args = (f"{FAULT_MARK} {line}",)  # what pickling passes back to __init__, and str()

    @classmethod
    def after_tries(cls, source_path: str, step: str, cause: BaseException, tries: int) -> BuildFault:
        return cls(f"{source_path}: {step} failed {tries} times for a reason outside the file ({describe_fault(cause)}); nothing was committed, run the build again")


def describe_fault(e: BaseException) -> str:
    return one_line(e) if isinstance(e, ProcessFault) else f"{type(e).__name__}: {one_line(e) or 'no message'}"


def fault_in(e: BaseException) -> str | None:
    """The one line of a BuildFault raised in a worker, wherever the runner wrapped it (Beam re-raises a
    worker's error as a RuntimeError holding its text), else None."""
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, BuildFault):
            return e.line
        text = str(e)
        if FAULT_MARK in text:
            return text.split(FAULT_MARK, 1)[1].strip().splitlines()[0].strip()
        e = e.__cause__ or e.__context__
    return None


def exit_fault(returncode: int) -> str | None:
    """What a child's exit status says when it was stopped from outside rather than by its input: killed
    by a signal (negative status), or ffmpeg's own status 255 after it caught SIGINT or SIGTERM."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"killed by {name}"
    if returncode == 255:
        return "stopped by a signal (exit status 255)"
    return None


def one_line(e: BaseException, limit: int = 300) -> str:
    """An exception's message on one line (library errors span several), cut to `limit` characters."""
    return " ".join(str(e).split())[:limit]
