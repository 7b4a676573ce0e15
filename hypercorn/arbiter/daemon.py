"""``--daemon``: double fork, new session, stdio away from the terminal.

The original process waits until the daemon reports READY (exit 0) or a boot failure (its
one-line reason on stderr, its exit status), so ``hypercorn -D app:app && echo ok`` means
what it says. Binding happens *before* daemonising, so a port in use is reported on the
terminal too.
"""

from __future__ import annotations

import contextlib
import os
import sys

__all__ = ["DaemonReporter", "daemonize"]


class DaemonReporter:
    """The daemon's end of the pipe to the process that started it."""

    def __init__(self, fd: int | None) -> None:
        self._fd = fd

    @property
    def fd(self) -> int | None:
        """Still open: forked workers must close their copy."""
        return self._fd

    def ready(self) -> None:
        self._send("0\n")

    def failed(self, code: int, reason: str) -> None:
        self._send(f"{code} {' '.join(reason.split())}\n")

    def _send(self, text: str) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            os.write(fd, text.encode("utf-8", "replace")[:4000])
        with contextlib.suppress(OSError):
            os.close(fd)


def daemonize(errorlog: str | None) -> DaemonReporter:
    """Detach. Returns in the daemon only; the original process exits with the outcome."""
    sys.stdout.flush()
    sys.stderr.flush()
    read_fd, write_fd = os.pipe()
    if os.fork() > 0:
        os.close(write_fd)
        _wait_for_daemon(read_fd)  # never returns
    os.close(read_fd)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    _redirect_stdio(errorlog)
    return DaemonReporter(write_fd)


def _wait_for_daemon(read_fd: int) -> None:
    chunks = []
    while True:
        try:
            chunk = os.read(read_fd, 4096)
        except InterruptedError:  # pragma: no cover - PEP 475 retries for us
            continue
        if not chunk:
            break
        chunks.append(chunk)
        if b"\n" in chunk:  # one line is the whole report; workers may hold the pipe open
            break
    text = b"".join(chunks).decode("utf-8", "replace").strip()
    code_text, _, reason = text.partition(" ")
    if code_text == "0":
        os._exit(0)
    if code_text.isdigit():
        print(f"hypercorn: error: {reason}", file=sys.stderr, flush=True)
        os._exit(int(code_text))
    print("hypercorn: error: the daemon exited before it was ready", file=sys.stderr, flush=True)
    os._exit(1)


def _redirect_stdio(errorlog: str | None) -> None:
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    target = devnull
    if errorlog and errorlog != "-":
        with contextlib.suppress(OSError):
            target = os.open(errorlog, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(target, 2)
    for fd in {devnull, target}:
        if fd > 2:
            os.close(fd)
