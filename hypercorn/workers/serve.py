"""Serving one worker's listeners on one event loop (written once, against ``Backend``).

``serve()`` is the whole life of a worker's loop:

1. wrap the app (ASGI 3 / ASGI 2 / WSGI) and run lifespan startup (failure: ``BootError``);
2. accept on every listener (``Backend.serve``), one ``ConnectionDriver`` per connection;
   report ready and beat from inside the loop (``WorkerHooks``);
3. on a stop request - signal, ``shutdown_trigger``, ``max_requests`` (without an arbiter;
   under one the worker asks for a replacement and serves on until it is stopped) or a beat
   answering False - stop accepting and close the listeners, let in-flight requests finish
   within ``graceful_timeout`` (answering them with ``Connection: close``; an idle keep-alive
   connection stays open a short grace, so a request its client is sending right now is
   answered, with ``Connection: close``, rather than reset), then abort what is left and run
   lifespan shutdown. A fast stop (SIGQUIT) skips the wait.
"""

from __future__ import annotations

import logging
import random
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from hypercorn.errors import BootError
from hypercorn.logging import reopen_log_files
from hypercorn.workers.backend import Listener, ServeOptions
from hypercorn.workers.driver import WorkerContext, limits_from_config

if TYPE_CHECKING:
    from hypercorn.arbiter.sockets import Sockets
    from hypercorn.config import Config
    from hypercorn.protocols.proxy import ProxyPolicy
    from hypercorn.workers.backend import AsyncEvent, Backend
    from hypercorn.workers.quic import QuicServer

_logger = logging.getLogger("hypercorn.error")

#: How long aborted connections and cancelled apps get to wind down after graceful_timeout.
_ABORT_GRACE = 1.0
#: Wall-clock offset refresh for the Date header when no hooks set a beat interval.
_CLOCK_REFRESH = 10.0


def _no_op() -> None:
    return None


@dataclass
class WorkerHooks:
    """How a worker process talks to its arbiter; every callback runs inside the event loop."""

    #: After app load, lifespan startup and listening.
    on_ready: Callable[[], None]
    #: Called every ``beat_interval`` from inside the loop; returning False asks for a
    #: graceful stop.
    on_beat: Callable[[], bool]
    beat_interval: float = 1.0
    #: When a graceful stop begins.
    on_stopping: Callable[[], None] = _no_op
    #: ``max_requests`` reached: ask the arbiter for a replacement and keep serving until it
    #: stops this worker (None: stop gracefully at once, as without an arbiter).
    on_retire: Callable[[], None] | None = None
    #: After the drain, just before the app's lifespan shutdown runs (if it does).
    on_lifespan_shutdown: Callable[[], None] = _no_op
    #: SIGUSR1: reopen the log files (None: the config's logger reopens its own).
    on_reopen_logs: Callable[[], None] | None = None
    #: Log "Running on ..." as a server on its own does (the arbiter announces its workers).
    announce: bool = False
    #: With each beat and at the end, the worker's metrics (``RequestMetrics.snapshot``);
    #: None when the master wants none.
    on_metrics: Callable[[bytes], None] | None = None


class _Stopper:
    """Collects stop requests from signals, the trigger, beats and max_requests."""

    def __init__(self, backend: Backend) -> None:
        self.event = backend.event()
        self.fast = False

    def graceful(self) -> None:
        self.event.set()

    def immediate(self) -> None:
        self.fast = True
        self.event.set()


async def serve(
    app: object,
    config: Config,
    backend: Backend,
    sockets: Sockets,
    *,
    shutdown_trigger: Callable[[], Awaitable[object]] | None = None,
    mode: Literal["asgi", "wsgi"] | None = None,
    hooks: WorkerHooks | None = None,
    stop_event: AsyncEvent | None = None,
) -> None:
    """Serve ``app`` on ``sockets`` until shut down; see the module docstring.

    ``shutdown_trigger is None`` installs SIGTERM/SIGINT (graceful) and SIGQUIT (fast)
    handlers for the duration (upstream semantics). Setting ``stop_event`` also stops
    gracefully, whichever of the two is in use. The stream listeners are closed when the stop
    begins (closing them again is harmless).
    """
    from hypercorn.apps import wrap_app
    from hypercorn.workers.lifespan import Lifespan, LifespanFailure
    from hypercorn.workers.metrics import worker_metrics

    if sockets.quic_sockets and not config._quic_addresses:
        # (Under the arbiter the sockets were made without Config.create_sockets.)
        config.set_quic_addresses(sockets.quic_sockets)
    asgi_app = wrap_app(app, config, backend, mode)
    lifespan = Lifespan(asgi_app, config, backend)
    try:
        await lifespan.startup()
    except LifespanFailure as exc:
        raise BootError(str(exc)) from exc

    stopper = _Stopper(backend)
    on_request = None
    if config.max_requests:
        limit = config.max_requests + random.randint(0, max(config.max_requests_jitter, 0))

        retire = hooks.on_retire if hooks is not None else None

        def on_request() -> None:
            nonlocal limit
            if ctx.requests >= limit and not stopper.event.is_set():
                if retire is None:
                    _logger.info("Maximum requests (%d) reached; stopping gracefully", limit)
                    stopper.graceful()
                    return
                # The arbiter starts a replacement and stops us once it is READY, so the
                # number of serving workers never drops: ask once, serve on meanwhile.
                _logger.info("Maximum requests (%d) reached; asking to be replaced", limit)
                limit = sys.maxsize
                retire()

    report = hooks.on_metrics if hooks is not None else None
    metrics = worker_metrics(config, backend, master_reports=report is not None)
    ctx = WorkerContext(
        app=asgi_app,
        backend=backend,
        limits=limits_from_config(config),
        parser_kind=config.http1_parser,
        state=lifespan.state,
        access_log=config.log,
        on_request=on_request,
        # (The metrics' observer calls the access log itself.)
        on_done=metrics.observer if metrics is not None else None,
    )
    if metrics is not None:
        metrics.context = ctx
    listeners = _listeners(config, sockets)
    if hooks is None or hooks.announce:
        # Serving on its own (-w 0, hypercorn.asyncio/trio.serve): announce, as upstream does,
        # now that the app has started and the certificate loaded. Under an arbiter the
        # master announces once every worker is ready.
        from hypercorn.arbiter.sockets import running_messages

        for message in running_messages(sockets):
            await config.log.info(message)
    installed: list[int] = []
    if shutdown_trigger is None:
        reopen = hooks.on_reopen_logs if hooks is not None else None
        handlers = (
            (signal.SIGTERM, stopper.graceful),
            (signal.SIGINT, stopper.graceful),
            (getattr(signal, "SIGQUIT", None), stopper.immediate),
            # logrotate's postrotate: new files for the moved ones (gunicorn's USR1).
            (getattr(signal, "SIGUSR1", None), reopen or (lambda: reopen_log_files(config.log))),
        )
        for signum, handler in handlers:
            if signum is None:
                continue
            try:
                backend.add_signal_handler(signum, handler)
            except (NotImplementedError, RuntimeError, ValueError):
                continue  # not the main thread, or no signals here: the caller stops us
            installed.append(signum)
    else:
        backend.spawn(_await_trigger, shutdown_trigger, stopper)
    if stop_event is not None:
        backend.spawn(_await_trigger, stop_event.wait, stopper)
    on_beat = None if metrics is None else lambda: metrics.periodic(report)
    backend.spawn(_beat, ctx, stopper, hooks, on_beat)

    options = ServeOptions(
        max_connections=config.max_connections,
        ssl_handshake_timeout=config.ssl_handshake_timeout,
        proxy=_proxy_policy(config),
    )
    quic: list[QuicServer] = []
    try:
        if sockets.quic_sockets:
            try:
                from hypercorn.workers.quic import open_quic
            except ImportError as exc:
                raise BootError(
                    f"quic_bind: HTTP/3 needs aioquic ({exc}): pip install 'hypercorn[h3]'"
                ) from None
            quic = await open_quic(ctx, config, backend, sockets.quic_sockets)
        for listener in listeners:
            _listen_when_ready(listener.sock, config.backlog)
        if hooks is not None:
            hooks.on_ready()
        await backend.serve(listeners, ctx.on_connection, stopper.event, options)
        # Our copy of each listener goes now: once every process that holds one has closed
        # it, the kernel refuses new connections instead of queueing them for nobody.
        for listener in listeners:
            listener.sock.close()
        # QUIC connections drain on their sockets, which stay open; new ones are refused.
        for server in quic:
            server.stop_accepting()
        if hooks is not None:
            hooks.on_stopping()
        if not stopper.fast:
            ctx.start_shutdown()
            if not await ctx.wait_idle(config.graceful_timeout):
                _logger.warning(
                    "Graceful timeout (%gs) expired; aborting %d connection(s)",
                    config.graceful_timeout,
                    len(ctx.connections),
                )
        ctx.abort_all()
        await ctx.wait_idle(_ABORT_GRACE)
    finally:
        for server in quic:
            server.close()
        for signum in installed:
            backend.remove_signal_handler(signum)
        stopper.event.set()  # ends the beat loop
        if metrics is not None:
            metrics.close(report)
        if hooks is not None and lifespan.will_shut_down:
            hooks.on_lifespan_shutdown()  # (the arbiter's kill deadline makes room for it)
        await lifespan.shutdown()


def _listeners(config: Config, sockets: Sockets) -> list[Listener]:
    listeners = [Listener(sock) for sock in sockets.insecure_sockets]
    if sockets.secure_sockets:
        context = config.create_ssl_context()
        listeners.extend(Listener(sock, context) for sock in sockets.secure_sockets)
    return listeners


def _proxy_policy(config: Config) -> ProxyPolicy | None:
    if not config.proxy_protocol:
        return None
    from hypercorn.protocols.proxy import ProxyPolicy

    return ProxyPolicy.from_strings(config.proxy_allow_ips, config.header_read_timeout)


def _listen_when_ready(sock: socket.socket, backlog: int) -> None:
    """A per-slot SO_REUSEPORT listener comes bound but not listening, so the kernel hands
    it no connection while this worker boots: listen now."""
    if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        sock.listen(backlog)


async def _await_trigger(trigger: Callable[[], Awaitable[object]], stopper: _Stopper) -> None:
    try:
        await trigger()
    except Exception:
        _logger.exception("shutdown_trigger raised; shutting down")
    stopper.graceful()


async def _beat(
    ctx: WorkerContext,
    stopper: _Stopper,
    hooks: WorkerHooks | None,
    on_beat: Callable[[], None] | None,
) -> None:
    interval = hooks.beat_interval if hooks is not None else _CLOCK_REFRESH
    if on_beat is not None:
        interval = min(interval, 1.0)  # (statsd's gauges, when serving alone)
    backend = ctx.backend
    while not await backend.wait_event(stopper.event, interval):
        ctx.refresh_clock()
        if hooks is not None and not hooks.on_beat():
            stopper.graceful()
        if on_beat is not None:
            on_beat()


def run_worker_loop(
    app: object,
    config: Config,
    sockets: Sockets,
    *,
    worker_class: str,
    shutdown_trigger: Callable[[], Awaitable[object]] | None = None,
    mode: Literal["asgi", "wsgi"] | None = None,
    hooks: WorkerHooks | None = None,
) -> None:
    """Create the event loop for ``worker_class`` and run ``serve(...)`` in it to completion."""
    from hypercorn.workers import run_with_backend

    async def main(backend: Backend) -> None:
        await serve(
            app,
            config,
            backend,
            sockets,
            shutdown_trigger=shutdown_trigger,
            mode=mode,
            hooks=hooks,
        )

    run_with_backend(worker_class, main)
