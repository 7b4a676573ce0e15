"""``--reload``: watch source files with watchfiles in a thread; wake the master via a pipe.

The thread only collects changed paths and writes one byte to a pipe that the master's
selector watches, so a slow file system never blocks the master loop. Python sources (and
the configuration file, when there is one) count as changes; caches, VCS and virtualenv
directories are ignored.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterable, Sequence

from hypercorn.errors import BootError

__all__ = ["Reloader"]

_SOURCE_SUFFIXES = (".py", ".pyx", ".pyd", ".so")


class Reloader:
    def __init__(self, directories: Sequence[str], extra_files: Iterable[str] = ()) -> None:
        try:
            import watchfiles
        except ImportError:
            raise BootError(
                "--reload needs the watchfiles package: pip install 'hypercorn[reload]'"
            ) from None
        self._watchfiles = watchfiles
        self._directories = [os.path.abspath(d) for d in directories]
        self._extra = {os.path.abspath(f) for f in extra_files}
        for path in self._extra:
            parent = os.path.dirname(path)
            if not any(_within(parent, d) for d in self._directories):
                self._directories.append(parent)
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._read_fd, False)
        os.set_blocking(self._write_fd, False)
        self._lock = threading.Lock()
        self._changed: list[str] = []
        #: Set when the watcher thread died; the runner logs it once.
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="hypercorn-reloader", daemon=True)
        self._ignore = watchfiles.DefaultFilter()

    @property
    def directories(self) -> list[str]:
        return list(self._directories)

    @property
    def extra_files(self) -> set[str]:
        return set(self._extra)

    def start(self) -> None:
        self._thread.start()

    def fileno(self) -> int:
        return self._read_fd

    @property
    def fds(self) -> tuple[int, int]:
        return self._read_fd, self._write_fd

    def drain(self) -> tuple[str, ...]:
        """Paths changed since the last call (possibly empty on a spurious wake-up)."""
        with contextlib.suppress(BlockingIOError, InterruptedError):
            while os.read(self._read_fd, 4096):
                pass
        with self._lock:
            changed, self._changed = self._changed, []
        return tuple(sorted(set(changed)))

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2.0)
        for fd in (self._read_fd, self._write_fd):
            with contextlib.suppress(OSError):
                os.close(fd)

    def _accept(self, change: object, path: str) -> bool:
        if os.path.abspath(path) in self._extra:
            return True
        return path.endswith(_SOURCE_SUFFIXES) and self._ignore(change, path)  # type: ignore[arg-type]

    def _watch(self) -> None:
        try:
            for changes in self._watchfiles.watch(
                *self._directories,
                watch_filter=self._accept,
                stop_event=self._stop,
                raise_interrupt=False,
                rust_timeout=500,
                yield_on_timeout=False,
            ):
                with self._lock:
                    self._changed.extend(path for _, path in changes)
                with contextlib.suppress(OSError):
                    os.write(self._write_fd, b"!")
        except Exception as exc:  # a dead watcher must not take the master down
            self.error = f"file watching stopped: {type(exc).__name__}: {exc}"
            with contextlib.suppress(OSError):
                os.write(self._write_fd, b"!")


def _within(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip(os.sep) + os.sep)
