"""Worker registry: ``worker_class`` name → backend, imported lazily.

Nothing here imports an event loop at module import time, so ``import hypercorn.workers``
stays cheap and works without uvloop or trio installed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from hypercorn.workers.backend import Backend

T = TypeVar("T")

WORKER_CLASSES = ("asyncio", "uvloop", "trio")


def run_with_backend(worker_class: str, main: Callable[[Backend], Awaitable[T]]) -> T:
    """Create a fresh event loop for ``worker_class``, run ``main(backend)`` in it, return.

    Raises ``ValueError`` for an unknown name and ``ImportError`` (with the extra to install)
    when the loop's package is missing.
    """
    if worker_class == "asyncio":
        from hypercorn.workers import asyncio_backend

        return asyncio_backend.run(main)
    if worker_class == "uvloop":
        from hypercorn.workers import uvloop_backend

        return uvloop_backend.run(main)
    if worker_class == "trio":
        try:
            from hypercorn.workers import trio_backend  # type: ignore[attr-defined, unused-ignore]
        except ImportError as exc:
            raise ImportError("the trio worker class is not available in this build") from exc
        result: T = trio_backend.run(main)
        return result
    raise ValueError(f"unknown worker class {worker_class!r}; expected one of {WORKER_CLASSES}")


def current_backend(worker_class: str = "asyncio") -> Backend:
    """The backend for the loop running in this thread (for ``hypercorn.asyncio.serve``).

    Must be called from inside that running loop.
    """
    if worker_class in ("asyncio", "uvloop"):
        from hypercorn.workers import asyncio_backend

        return asyncio_backend.AsyncioBackend(
            name="uvloop" if worker_class == "uvloop" else "asyncio"
        )
    if worker_class == "trio":
        from hypercorn.workers import trio_backend  # type: ignore[attr-defined, unused-ignore]

        backend: Backend = trio_backend.TrioBackend()
        return backend
    raise ValueError(f"unknown worker class {worker_class!r}; expected one of {WORKER_CLASSES}")
