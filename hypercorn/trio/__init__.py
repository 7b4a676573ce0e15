"""``hypercorn.trio.serve``: serve an app inside the caller's trio program."""

from __future__ import annotations

import warnings
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Literal

import trio

if TYPE_CHECKING:
    from hypercorn.config import Config
    from hypercorn.typing import Framework

__all__ = ["serve"]


async def serve(
    app: Framework | object,
    config: Config,
    *,
    shutdown_trigger: Callable[..., Awaitable[object]] | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
    mode: Literal["asgi", "wsgi"] | None = None,
) -> None:
    """Serve an ASGI or WSGI application on the running trio loop until shut down.

    Usable as ``trio.run(serve, app, config)``, or started in a nursery: ``await
    nursery.start(serve, app, config)`` returns once the server listens, with the list of
    the addresses it serves (``["http://127.0.0.1:8000"]``). The listening sockets come from
    ``config.create_sockets()`` and are closed on return.

    Stopping is always graceful (in-flight requests finish within ``graceful_timeout``, then
    lifespan shutdown runs): when ``shutdown_trigger`` returns, on SIGINT/SIGTERM when there
    is no trigger, or when the surrounding cancel scope is cancelled. In the last case the
    cancellation is re-raised once the server has stopped.

    Arguments:
        app: The ASGI (3 or 2) or WSGI application.
        config: A Hypercorn configuration. Settings about processes and the loop
            (``workers``, ``worker_class``) have no effect here.
        shutdown_trigger: Awaited by the server; when it returns the server shuts down
            gracefully. Without one, SIGINT/SIGTERM stop gracefully and SIGQUIT fast. Pass
            ``trio.sleep_forever`` for no signal handling at all.
        task_status: Given by ``nursery.start``; told the served addresses once listening.
        mode: "asgi" or "wsgi" to skip detection of the application's kind.
    """
    from hypercorn.arbiter.sockets import describe
    from hypercorn.workers import trio_backend
    from hypercorn.workers.serve import WorkerHooks
    from hypercorn.workers.serve import serve as worker_serve

    if config.workers != 1:
        warnings.warn("The config `workers` has no effect when using serve", Warning, stacklevel=2)

    sockets = config.create_sockets()
    binds = [f"https://{describe(sock)}" for sock in sockets.secure_sockets]
    binds += [f"http://{describe(sock)}" for sock in sockets.insecure_sockets]
    stop = trio.Event()
    hooks = WorkerHooks(
        on_ready=lambda: task_status.started(binds),
        on_beat=lambda: True,
        beat_interval=10.0,
        announce=True,
    )
    error: BaseException | None = None
    try:
        async with trio.open_nursery() as outer:
            # An outer cancellation reaches this task (unshielded), which turns it into a
            # graceful stop of the server below (shielded, so that it can finish).
            outer.start_soon(_stop_when_cancelled, stop)
            with trio.CancelScope(shield=True):
                try:
                    async with trio_backend.open_backend() as backend:
                        await worker_serve(
                            app,
                            config,
                            backend,
                            sockets,
                            shutdown_trigger=shutdown_trigger,
                            mode=mode,
                            hooks=hooks,
                            stop_event=stop,
                        )
                except BaseException as exc:
                    # Raised below, outside the nursery: it would wrap it in a group.
                    error = exc
            outer.cancel_scope.cancel()
    finally:
        for sock in (*sockets.secure_sockets, *sockets.insecure_sockets, *sockets.quic_sockets):
            sock.close()
    if error is not None:
        raise error


async def _stop_when_cancelled(stop: trio.Event) -> None:
    try:
        await trio.sleep_forever()
    finally:
        stop.set()
