"""``hypercorn.asyncio.serve``: serve an app on the caller's asyncio (or uvloop) event loop."""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from hypercorn.config import Config
    from hypercorn.typing import Framework

__all__ = ["serve"]


async def serve(
    app: Framework | object,
    config: Config,
    *,
    shutdown_trigger: Callable[..., Awaitable[object]] | None = None,
    mode: Literal["asgi", "wsgi"] | None = None,
) -> None:
    """Serve an ASGI or WSGI application on the running event loop until shut down.

    Usable as ``asyncio.run(serve(app, config))`` (also after ``uvloop.install()``). The
    listening sockets come from ``config.create_sockets()`` (``bind``, ``insecure_bind``,
    ``quic_bind``; ``fd://N`` adopts an already bound socket) and are closed on return.

    Arguments:
        app: The ASGI (3 or 2) or WSGI application.
        config: A Hypercorn configuration. Settings about processes and the loop
            (``workers``, ``worker_class``) have no effect here.
        shutdown_trigger: Awaited by the server; when it returns the server shuts down
            gracefully. Without one, SIGINT/SIGTERM stop gracefully and SIGQUIT fast. Pass
            ``lambda: asyncio.Future()`` for no signal handling at all.
        mode: "asgi" or "wsgi" to skip detection of the application's kind.
    """
    from hypercorn.workers import current_backend
    from hypercorn.workers.asyncio_backend import AsyncioBackend
    from hypercorn.workers.serve import serve as worker_serve

    if config.workers != 1:
        warnings.warn("The config `workers` has no effect when using serve", Warning, stacklevel=2)

    loop = asyncio.get_running_loop()
    name = "uvloop" if type(loop).__module__.split(".")[0] == "uvloop" else "asyncio"
    backend = current_backend(name)
    sockets = config.create_sockets()
    try:
        await worker_serve(
            app, config, backend, sockets, shutdown_trigger=shutdown_trigger, mode=mode
        )
    finally:
        for sock in (*sockets.secure_sockets, *sockets.insecure_sockets, *sockets.quic_sockets):
            sock.close()
        if isinstance(backend, AsyncioBackend):  # (the caller's loop may end next)
            await backend.close_lingering()
