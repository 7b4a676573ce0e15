"""The ``--pid`` file: written atomically, refused while another live process holds it, and
removed on exit only if it still names us (after a SIGUSR2 upgrade it names the new master).
"""

from __future__ import annotations

import contextlib
import os
import tempfile

from hypercorn.errors import BootError

__all__ = ["check_pidfile", "read_pid", "remove_pidfile", "write_pidfile"]


def read_pid(path: str) -> int | None:
    try:
        with open(path) as file:
            text = file.read().strip()
    except (FileNotFoundError, IsADirectoryError):
        return None
    except OSError as exc:
        raise BootError(f"cannot read the pid file {path}: {exc.strerror}") from None
    try:
        return int(text)
    except ValueError:
        return None  # garbage: treat as stale


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def check_pidfile(path: str, *, allowed: tuple[int, ...] = ()) -> None:
    """Raise ``BootError`` if ``path`` names a live process other than us or ``allowed``."""
    pid = read_pid(path)
    if pid is None or pid == os.getpid() or pid in allowed:
        return
    if _alive(pid):
        raise BootError(f"the pid file {path} is held by running process {pid}")


def write_pidfile(path: str, pid: int | None = None) -> None:
    """Write our pid to ``path`` via a temporary file and ``rename`` (never half-written)."""
    directory = os.path.dirname(os.path.abspath(path))
    pid = os.getpid() if pid is None else pid
    try:
        fd, temp = tempfile.mkstemp(prefix=".hypercorn-pid-", dir=directory)
    except OSError as exc:
        raise BootError(f"cannot write the pid file {path}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "w") as file:
            file.write(f"{pid}\n")
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise BootError(f"cannot write the pid file {path}: {exc.strerror}") from None


def remove_pidfile(path: str, pid: int | None = None) -> None:
    """Remove ``path`` if it still holds ``pid`` (default: ours)."""
    pid = os.getpid() if pid is None else pid
    try:
        if read_pid(path) == pid:
            os.unlink(path)
    except (OSError, BootError):
        pass
