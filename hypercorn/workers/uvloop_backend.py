"""uvloop: the asyncio backend on a uvloop event loop (uvicorn's ``loops/uvloop.py`` idea)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from hypercorn.workers import asyncio_backend

T = TypeVar("T")


def run(main: Callable[[Any], Awaitable[T]]) -> T:
    """Run ``main(backend)`` on a fresh uvloop loop."""
    try:
        import uvloop
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError(
            "the uvloop worker class needs uvloop: pip install 'hypercorn[uvloop]'"
        ) from exc
    return asyncio_backend.run(main, loop_factory=uvloop.new_event_loop, name="uvloop")
