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
            from hypercorn.workers import trio_backend
        except ImportError as exc:
            raise ImportError(
                "the trio worker class needs trio: pip install 'hypercorn[trio]'"
            ) from exc
        return trio_backend.run(main)
    raise ValueError(f"unknown worker class {worker_class!r}; expected one of {WORKER_CLASSES}")


#: What each worker class needs installed (the extra that provides it).
_NEEDS = {"uvloop": ("uvloop", "uvloop"), "trio": ("trio", "trio")}


def unavailable_reason(worker_class: str) -> str | None:
    """Why ``worker_class`` cannot run in this install, or None when it can.

    Imports the class's backend module (and so its event loop package): the answer is what
    actually exists, so a worker class that lands later passes without changing this.
    """
    import importlib

    if worker_class not in WORKER_CLASSES:
        return f"unknown worker class {worker_class!r}; expected one of {WORKER_CLASSES}"
    module = f"hypercorn.workers.{worker_class}_backend"
    try:
        importlib.import_module(module)
        package, extra = _NEEDS.get(worker_class, ("", ""))
        if package:
            importlib.import_module(package)
    except ModuleNotFoundError as exc:
        if exc.name == module:
            return f"the {worker_class} worker class is not available in this build"
        package, extra = _NEEDS.get(worker_class, (exc.name or "", ""))
        hint = f": pip install 'hypercorn[{extra}]'" if extra else ""
        return f"the {worker_class} worker class needs the {exc.name} package{hint}"
    except ImportError as exc:
        return f"the {worker_class} worker class cannot be imported: {exc}"
    return None


def current_backend(worker_class: str = "asyncio") -> Backend:
    """The backend for the loop running in this thread (for serve() and the middleware).

    Must be called from inside that running loop.
    """
    if worker_class in ("asyncio", "uvloop"):
        from hypercorn.workers import asyncio_backend

        return asyncio_backend.AsyncioBackend(
            name="uvloop" if worker_class == "uvloop" else "asyncio"
        )
    if worker_class == "trio":
        from hypercorn.workers import trio_backend

        return trio_backend.current()
    raise ValueError(f"unknown worker class {worker_class!r}; expected one of {WORKER_CLASSES}")
