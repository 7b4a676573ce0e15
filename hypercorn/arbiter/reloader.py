"""``--reload``: watch source files in a thread; wake the master via a pipe.

Change notifications come from watchfiles when it is installed (the ``reload`` extra);
without it a thread polls modification times every ``POLL_INTERVAL`` seconds (uvicorn's
StatReload), so ``--reload`` needs nothing extra, as upstream's does. Either way the thread
only collects changed paths and writes one byte to a pipe that the master's selector
watches, so a slow file system never blocks the master loop. Python sources (and the
configuration file, when there is one) count as changes; caches, VCS, virtualenv and other
hidden directories are ignored.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["POLL_INTERVAL", "Reloader"]

_SOURCE_SUFFIXES = (".py", ".pyx", ".pyd", ".so")
#: Directories never descended into when polling (hidden ones, starting with ".", neither).
_SKIP_DIRS = frozenset({"__pycache__", "node_modules", "site-packages"})
#: Seconds between two scans when polling.
POLL_INTERVAL = 0.5

_Snapshot = dict[str, tuple[int, int]]


class Reloader:
    """Watches ``directories`` (recursively) and ``extra_files``.

    ``use_watchfiles=None`` uses watchfiles when it imports, else polls; True or False forces
    one or the other. Directories that do not exist are left out (see ``missing``).
    """

    def __init__(
        self,
        directories: Sequence[str],
        extra_files: Iterable[str] = (),
        *,
        use_watchfiles: bool | None = None,
    ) -> None:
        self._watchfiles: Any = None
        if use_watchfiles is not False:
            try:
                import watchfiles
            except ImportError:
                if use_watchfiles:
                    raise
            else:
                self._watchfiles = watchfiles
        wanted = _unique(os.path.abspath(d) for d in directories)
        #: Directories asked for that do not exist (the caller may warn about them).
        self.missing = [d for d in wanted if not os.path.isdir(d)]
        self._directories = [d for d in wanted if os.path.isdir(d)]
        self._directories = [
            d
            for d in self._directories
            if not any(d != o and _within(d, o) for o in self._directories)
        ]
        self._extra = {os.path.abspath(f) for f in extra_files}
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._read_fd, False)
        os.set_blocking(self._write_fd, False)
        self._lock = threading.Lock()
        self._changed: list[str] = []
        #: Set when the watcher thread died; the runner logs it once.
        self.error: str | None = None
        self._stop = threading.Event()
        target = self._watch if self._watchfiles is not None else self._poll
        self._thread = threading.Thread(target=target, name="hypercorn-reloader", daemon=True)
        self._ignore = self._watchfiles.DefaultFilter() if self._watchfiles is not None else None
        # Polling compares against the state at construction, so an edit made between now
        # and the thread's first scan is not lost.
        self._snapshot: _Snapshot = {} if self._watchfiles is not None else self._scan()

    @property
    def mechanism(self) -> str:
        """``"watchfiles"`` or ``"polling"``."""
        return "watchfiles" if self._watchfiles is not None else "polling"

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

    def _report(self, paths: Iterable[str]) -> None:
        with self._lock:
            self._changed.extend(paths)
        with contextlib.suppress(OSError):
            os.write(self._write_fd, b"!")

    # -- watchfiles ---------------------------------------------------------------------------

    def _accept(self, change: object, path: str) -> bool:
        path = os.path.abspath(path)
        if path in self._extra:
            return True
        if not path.endswith(_SOURCE_SUFFIXES) or not self._ignore(change, path):  # type: ignore[misc]
            return False
        # The places polling never descends into are ignored here too.
        root = next((d for d in self._directories if _within(path, d)), None)
        if root is None:
            return False
        parent = os.path.dirname(path)
        parts = os.path.relpath(parent, root).split(os.sep) if parent != root else []
        if any(part.startswith(".") or part in _SKIP_DIRS for part in parts):
            return False
        while _within(parent, root):
            if os.path.exists(os.path.join(parent, "pyvenv.cfg")):
                return False
            if parent == root:
                break
            parent = os.path.dirname(parent)
        return True

    def _watch(self) -> None:
        # watchfiles watches directories; an extra file is seen through its parent (editors
        # often replace a file by renaming, which a watch on the file itself would miss).
        paths = list(self._directories)
        for path in sorted(self._extra):
            parent = os.path.dirname(path)
            if not any(_within(parent, d) for d in paths) and os.path.isdir(parent):
                paths.append(parent)
        try:
            for changes in self._watchfiles.watch(
                *paths,
                watch_filter=self._accept,
                stop_event=self._stop,
                raise_interrupt=False,
                rust_timeout=500,
                yield_on_timeout=False,
            ):
                self._report(path for _, path in changes)
        except Exception as exc:  # a dead watcher must not take the master down
            self.error = f"file watching stopped: {type(exc).__name__}: {exc}"
            self._report(())

    # -- polling ------------------------------------------------------------------------------

    def _scan(self) -> _Snapshot:
        found: _Snapshot = {}
        for directory in self._directories:
            _scan_tree(directory, found)
        for path in self._extra:
            _stat_into(path, found)
        return found

    def _poll(self) -> None:
        try:
            while not self._stop.wait(POLL_INTERVAL):
                current = self._scan()
                previous, self._snapshot = self._snapshot, current
                if current != previous:
                    keys = current.keys() | previous.keys()
                    self._report(k for k in keys if current.get(k) != previous.get(k))
        except Exception as exc:  # a dead watcher must not take the master down
            self.error = f"file polling stopped: {type(exc).__name__}: {exc}"
            self._report(())


def _scan_tree(directory: str, found: _Snapshot) -> None:
    try:
        entries = list(os.scandir(directory))
    except OSError:  # removed or unreadable meanwhile
        return
    if any(entry.name == "pyvenv.cfg" for entry in entries):
        return  # a virtual environment
    for entry in entries:
        name = entry.name
        try:
            if entry.is_dir(follow_symlinks=False):
                if not name.startswith(".") and name not in _SKIP_DIRS:
                    _scan_tree(entry.path, found)
            elif name.endswith(_SOURCE_SUFFIXES):
                info = entry.stat()
                found[entry.path] = (info.st_mtime_ns, info.st_size)
        except OSError:
            continue


def _stat_into(path: str, found: _Snapshot) -> None:
    try:
        info = os.stat(path)
    except OSError:
        return
    found[path] = (info.st_mtime_ns, info.st_size)


def _unique(paths: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(paths))


def _within(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip(os.sep) + os.sep)
