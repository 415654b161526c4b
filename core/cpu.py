"""CPU clocks that stay honest when stages run on several threads of one process.

The process-wide clock (`os.times`) counts every thread: with two worker threads, each stage would
also count what the other thread did meanwhile. So a stage's CPU is read from the thread that runs
it (`thread_cpu`), plus what that thread is owed from elsewhere:
- the child processes it ran and waited for (ffmpeg, ffprobe): each child's own rusage, collected
  exactly by `os.wait4` when this thread reaps it (`run_child`, `Child`);
- the threads a library started for a model that this thread alone calls (CTranslate2 runs Whisper
  in its own worker thread): their CPU while this thread's call runs (`LibraryThreads`).
Each CPU second is counted for at most one thread, so the stages' sum never exceeds the process's
(`process_cpu`); what no stage claims (the runner, the driver, model loads, other library threads)
is the difference.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_owed = threading.local()  # CPU seconds this thread is owed: its children's and its libraries' threads'


def _add_owed(seconds: float) -> None:
    _owed.seconds = getattr(_owed, "seconds", 0.0) + seconds


def thread_cpu() -> float:
    """CPU seconds of the calling thread, plus those of the children it reaped and of the library
    threads that worked for its calls; differences of it time one stage on one thread."""
    return time.thread_time() + getattr(_owed, "seconds", 0.0)


def process_times() -> tuple[float, float]:
    """(this process's own CPU seconds, those of the children it waited for), user + system."""
    t = os.times()
    return t.user + t.system, t.children_user + t.children_system


def process_cpu() -> float:
    """CPU seconds of the whole process: every thread, and every child waited for."""
    own, children = process_times()
    return own + children


class Child(subprocess.Popen):
    """A child process whose CPU goes to the thread that waits for it: `wait` (and so `communicate`,
    `with`) reaps it with `os.wait4`, which gives that child's own rusage (Popen's waitpid does not)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._reaping = threading.Lock()  # one reaper at a time (a timer thread may kill and poll while another waits)
        super().__init__(*args, **kwargs)

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            self._reap(timeout)
        return self.returncode

    def poll(self) -> int | None:
        if self.returncode is None:
            self._reap(None, poll=True)
        return self.returncode

    def _reap(self, timeout: float | None, poll: bool = False) -> None:
        """Reap the child (for ever, at most `timeout` s: then TimeoutExpired, or only if it has ended
        with `poll`) and charge its CPU to this thread."""
        deadline = None if timeout is None else time.monotonic() + timeout
        blocking, delay = not poll and deadline is None, 0.0005
        while True:
            if self._reaping.acquire(blocking):
                try:
                    if self.returncode is not None or self._reaped(blocking):
                        return
                finally:
                    self._reaping.release()
            if poll:
                return
            left = deadline - time.monotonic()  # type: ignore[operator]
            if left <= 0:
                raise subprocess.TimeoutExpired(self.args, timeout)  # type: ignore[arg-type]
            time.sleep(min(delay, left))
            delay = min(delay * 2, 0.05)

    def _reaped(self, blocking: bool) -> bool:
        """One os.wait4: whether the child is gone (its exit status and CPU taken)."""
        try:
            pid, status, usage = os.wait4(self.pid, 0 if blocking else os.WNOHANG)
        except ChildProcessError:  # reaped elsewhere (SIGCHLD ignored): nothing to charge
            self.returncode = 0
            return True
        if not pid:
            return False
        self.returncode = os.waitstatus_to_exitcode(status)
        _add_owed(usage.ru_utime + usage.ru_stime)
        return True


def run_child(args: list[str], timeout_s: float | None, stdout: Any = subprocess.PIPE, stderr: Any = subprocess.PIPE, text: bool = False) -> subprocess.CompletedProcess:
    """`subprocess.run(args, stdin=DEVNULL, ...)` whose child's CPU goes to the calling thread's clock.
    Raises what `subprocess.run` raises: TimeoutExpired (the child killed and reaped), FileNotFoundError."""
    with Child(args, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr, text=text) as proc:
        try:
            out, err = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def _tids() -> set[int]:
    """This process's thread ids (Linux); empty elsewhere, where no library thread can be told apart."""
    try:
        return {int(t) for t in os.listdir("/proc/self/task")}
    except OSError:
        return set()


def _tid_cpu(tid: int) -> float | None:
    """CPU seconds of thread `tid` of this process (Linux: its per-thread CPU clock); None once it ended."""
    try:
        return time.clock_gettime((~tid << 3) | 6)  # the kernel's CPUCLOCK_SCHED clock of one thread (MAKE_THREAD_CPUCLOCK)
    except OSError:
        return None


_claimed: set[int] = set()  # threads owned by some LibraryThreads: each by one owner only
_claiming = threading.Lock()
_loading = threading.RLock()  # one load window at a time: a model loading on another thread cannot take this one's threads


class LibraryThreads:
    """The threads a library starts for one model (CTranslate2 starts its workers when the model
    loads), and their CPU charged to whichever thread calls that model.

    Exact as long as each thread's CPU is charged once: a thread is claimed by one owner only, loads on
    two threads take turns (two models loading at once would each see the other's new threads, and the
    first to finish would own both: the other's calls charged nothing, their CPU left outside every
    stage), and the owner's calls never overlap (`charged` holds a lock), so a window of the library
    threads' CPU belongs to one call. A thread another part of the program started during the load is claimed too: its CPU
    is then charged to this model's calls while they run (misplaced, never counted twice)."""

    def __init__(self) -> None:
        self.tids: frozenset[int] = frozenset()
        self._calls = threading.Lock()

    @contextmanager
    def started(self) -> Iterator[None]:
        """Around the model's load: the threads that appear meanwhile become this model's. Loads on
        other threads wait meanwhile (the same thread may nest windows)."""
        with _loading:
            before = _tids()
            try:
                yield
            finally:
                python = {t.native_id for t in threading.enumerate()}  # Python threads (the runner's) are never a library's
                with _claiming:
                    new = _tids() - before - python - _claimed
                    _claimed.update(new)
                self.tids = self.tids | frozenset(new)

    @contextmanager
    def charged(self) -> Iterator[None]:
        """Around one call into the model: its threads' CPU meanwhile goes to the calling thread's clock."""
        with self._calls:
            python = {t.native_id for t in threading.enumerate()}  # a reused thread id now running Python code is no longer ours
            before = {t: _tid_cpu(t) for t in self.tids - python}
            try:
                yield
            finally:
                spent = 0.0
                for tid, start in before.items():
                    end = _tid_cpu(tid)
                    if start is not None and end is not None:
                        spent += max(0.0, end - start)
                _add_owed(spent)

    def __getstate__(self) -> dict[str, Any]:
        return {}  # threads and locks are this process's: a copy elsewhere owns nothing yet

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.tids, self._calls = frozenset(), threading.Lock()

