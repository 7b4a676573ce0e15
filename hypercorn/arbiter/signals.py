"""Master signal handling: handlers only queue (a byte on a wakeup pipe), never act or log.

``signal.set_wakeup_fd`` makes the interpreter's C-level handler write each signal number to
a non-blocking pipe that the runner's selector watches; the Python-level handler is a no-op.
The runner drains the pipe and turns numbers into observations, in arrival order. SIGCHLD
only wakes the loop, which then reaps with ``waitpid(WNOHANG)``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import warnings
from types import FrameType

from hypercorn.arbiter.messages import Sig

__all__ = [
    "MASTER_SIGNALS",
    "SignalQueue",
    "fork_blocking_signals",
    "reset_worker_signals",
    "take_reopen_request",
    "to_signal",
]

MASTER_SIGNALS: dict[int, Sig] = {
    signal.SIGTERM: Sig.TERM,
    signal.SIGINT: Sig.INT,
    signal.SIGQUIT: Sig.QUIT,
    signal.SIGHUP: Sig.HUP,
    signal.SIGUSR1: Sig.USR1,
    signal.SIGUSR2: Sig.USR2,
    signal.SIGTTIN: Sig.TTIN,
    signal.SIGTTOU: Sig.TTOU,
}

_BY_NAME = {sig: signal.Signals[f"SIG{sig.value}"] for sig in Sig}

# Worker-side: signals that mean something to the master only. A worker treats them as
# no-ops (a Python handler, so exec'd children of the app get default dispositions back).
_WORKER_IGNORED = (
    signal.SIGHUP,
    signal.SIGUSR2,
    signal.SIGTTIN,
    signal.SIGTTOU,
    signal.SIGWINCH,
)


def to_signal(sig: Sig) -> signal.Signals:
    return _BY_NAME[sig]


def _queue_only(signum: int, frame: FrameType | None) -> None:
    # The C handler already wrote ``signum`` to the wakeup fd; nothing else may happen here.
    return None


class SignalQueue:
    """Installs the master's handlers and owns the wakeup pipe (``fileno()`` for selectors)."""

    def __init__(self) -> None:
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._read_fd, False)
        os.set_blocking(self._write_fd, False)
        self._previous: dict[int, object] = {}
        self._previous_wakeup = signal.set_wakeup_fd(self._write_fd, warn_on_full_buffer=False)
        for signum in (*MASTER_SIGNALS, signal.SIGCHLD):
            self._previous[signum] = signal.signal(signum, _queue_only)

    def fileno(self) -> int:
        return self._read_fd

    @property
    def fds(self) -> tuple[int, int]:
        return self._read_fd, self._write_fd

    def drain(self) -> list[int]:
        """Signal numbers received since the last drain, oldest first."""
        data = bytearray()
        while True:
            try:
                chunk = os.read(self._read_fd, 4096)
            except (BlockingIOError, InterruptedError):
                break
            if not chunk:
                break
            data += chunk
        return list(data)

    def close(self) -> None:
        for signum, previous in self._previous.items():
            with contextlib.suppress(ValueError, TypeError, OSError):
                signal.signal(signum, previous)  # type: ignore[arg-type]
        with contextlib.suppress(ValueError):
            signal.set_wakeup_fd(self._previous_wakeup)
        for fd in (self._read_fd, self._write_fd):
            with contextlib.suppress(OSError):
                os.close(fd)


_reopen_requested = False


def _remember_reopen(signum: int, frame: FrameType | None) -> None:
    global _reopen_requested
    _reopen_requested = True


def take_reopen_request() -> bool:
    """Whether SIGUSR1 (reopen the log files) arrived while the worker was booting."""
    global _reopen_requested
    requested, _reopen_requested = _reopen_requested, False
    return requested


def reset_worker_signals() -> None:
    """In a freshly forked worker: no wakeup fd, default TERM/INT/QUIT/CHLD (serve() installs
    its own once the loop runs), no-ops for the master-only signals, and SIGUSR1 (reopen the
    log files) remembered until the worker can act on it."""
    with contextlib.suppress(ValueError):
        signal.set_wakeup_fd(-1)
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGCHLD):
        signal.signal(signum, signal.SIG_DFL)
    for signum in _WORKER_IGNORED:
        signal.signal(signum, _queue_only)
    signal.signal(signal.SIGUSR1, _remember_reopen)


_FORK_BLOCKED = {*MASTER_SIGNALS, signal.SIGCHLD}


def fork_blocking_signals() -> tuple[int, set[int | signal.Signals]]:
    """``fork()`` with the master's signals blocked, so no signal reaches a child while it
    still has the master's handlers and wakeup fd (it would wake the *master*). The child
    gets 0, no wakeup fd, and must restore the returned mask itself."""
    sys.stdout.flush()
    sys.stderr.flush()
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, _FORK_BLOCKED)
    try:
        with warnings.catch_warnings():
            # 3.12+ warns about fork() with threads; the reloader's thread holds no lock
            # a child needs.
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
    except BaseException:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        raise
    if pid == 0:
        signal.set_wakeup_fd(-1)
    else:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    return pid, mask
