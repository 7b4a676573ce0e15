"""The connection driver: runs the protocol core on a ``Transport`` (written once, any loop).

One ``ConnectionDriver`` per accepted connection. It is the backend's ``ConnectionHandler``
(bytes in) and the core's ``ConnectionSink`` (effects out):

* ``data_received`` feeds the core synchronously (uvicorn's fast path), then starts the apps
  of any streams the core opened during that call and re-arms the connection's one timer.
* The core writes through the transport's bound ``write``; the ASGI ``send`` awaits
  ``drain`` only while the transport is above its high-water mark.
* Each request's app runs as a task from ``backend.task_starter()``; its ``receive`` takes messages
  from the stream's inbox and parks on a one-shot event only when the inbox is empty.
* A stream the core opens from inside an app's task (a pipelined request, once its
  predecessor's response completed) starts from the loop after that task yields, in the
  connection's context: apps of one connection never nest, and never share context variables.
* One timer per connection, re-armed lazily: it is moved only when the core's next deadline
  becomes *earlier* than the armed one; a timer that fires early (because the deadline
  moved later) just re-arms itself. Keep-alive traffic therefore costs no timer operations.
  A new connection's first deadline (the head's) is kept on one timer of the worker's
  (``WorkerContext._fresh``) until a deadline of its own comes earlier: a connection that
  sends its request at once and closes arms no timer at all.
* ``write_timeout`` is time without write progress, in every state (``write_watch.py``):
  while the transport is above its high-water mark, or the core has closed with bytes still
  unsent, a ``WriteWatch`` samples the transport's progress on the same timer.

``WorkerContext`` holds what all connections of a worker share (app, limits, Date cache,
lifespan state, loggers, counters) and is what ``serve()`` uses to shut connections down.
"""

from __future__ import annotations

import contextvars
import logging
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from hypercorn.protocols.asgi_http import AsgiHttpState, AsgiHttpStream
from hypercorn.protocols.asgi_ws import AsgiWsStream
from hypercorn.protocols.connection import ServerConnection, SwitchProtocol
from hypercorn.protocols.errors import AppProtocolError
from hypercorn.protocols.headers import DateCache
from hypercorn.protocols.http1.connection import H1Connection
from hypercorn.protocols.http1.selection import parser_factory
from hypercorn.protocols.http2 import H2Connection
from hypercorn.protocols.limits import ProtocolLimits
from hypercorn.protocols.ws import WsSession
from hypercorn.workers.backend import TransportClosed
from hypercorn.workers.write_watch import WriteWatch

if TYPE_CHECKING:
    from hypercorn.config import Config
    from hypercorn.typing import ASGIApp, Message
    from hypercorn.workers.backend import AsyncEvent, Backend, TimerHandle, Transport

_error_logger = logging.getLogger("hypercorn.error")
_RESPONSE_DONE = AsgiHttpState.CLOSED


def limits_from_config(config: Config) -> ProtocolLimits:
    """The frozen subset of ``config`` the protocol core needs."""
    extra = tuple(
        (name, value)
        for name, value in config.response_headers("h11")
        if name not in (b"date", b"server")
    )
    return ProtocolLimits(
        max_incomplete_size=config.h11_max_incomplete_size,
        max_request_line_size=config.h11_max_request_line_size,
        max_header_count=config.h11_max_header_count,
        keep_alive_timeout=config.keep_alive_timeout,
        header_read_timeout=config.header_read_timeout,
        read_timeout=config.read_timeout,
        write_timeout=config.write_timeout,
        root_path=config.root_path,
        server_names=tuple(config.server_names),
        include_date_header=config.include_date_header,
        server_header=b"hypercorn-h11" if config.include_server_header else None,
        extra_headers=extra,
        pass_raw_headers=config.h11_pass_raw_headers,
        h2_server_header=b"hypercorn-h2" if config.include_server_header else None,
        h3_server_header=b"hypercorn-h3" if config.include_server_header else None,
        h2_engine=config.h2_engine,
        h2_max_concurrent_streams=config.h2_max_concurrent_streams,
        h2_max_header_list_size=config.h2_max_header_list_size,
        h2_max_inbound_frame_size=config.h2_max_inbound_frame_size,
        h1_max_requests=config.keep_alive_max_requests,
        h2_max_streams=config.keep_alive_max_requests,
        websocket_max_message_size=config.websocket_max_message_size,
        websocket_ping_interval=config.websocket_ping_interval,
        websocket_queue_size=config.max_app_queue_size,
    )


#: What ``ConnectionSink.switch`` builds, by ``SwitchProtocol.to``: the next connection of a
#: driver whose core handed its socket over (it becomes the driver's core; the driver then
#: feeds it the trailing bytes).
SWITCHES: dict[str, Callable[[ConnectionDriver, SwitchProtocol], ServerConnection]] = {}


def _http2(driver: ConnectionDriver, switch: SwitchProtocol | None) -> ServerConnection:
    """An HTTP/2 connection for ``driver``: chosen by ALPN, or switched to from HTTP/1.1 (the
    prior-knowledge preface, or an ``Upgrade: h2c`` request that becomes stream 1)."""
    ctx = driver._ctx
    info = driver._transport.info
    return H2Connection(
        sink=driver,
        limits=ctx.limits,
        dates=ctx.dates,
        client=info.client,
        server=info.server,
        ssl=info.ssl,
        tls=info.tls,
        state=ctx.state,
        now=driver._backend.now(),
        stream_class=_AppStream,
        ws_stream_class=_AppWsStream,
        upgrade=switch if switch is not None and switch.request is not None else None,
    )


SWITCHES["h2"] = _http2


class ClientDisconnected(OSError):
    """Raised by the ASGI ``send`` once the client has gone (ASGI 2.4's server OSError)."""


class WorkerContext:
    """Everything the connections of one worker share. Built by ``serve()``."""

    def __init__(
        self,
        *,
        app: ASGIApp,
        backend: Backend,
        limits: ProtocolLimits,
        parser_kind: str = "auto",
        state: dict[str, Any] | None = None,
        access_log: Any = None,
        on_request: Callable[[], None] | None = None,
        on_done: Callable[[Any, float], None] | None = None,
    ) -> None:
        self.app = app
        self.backend = backend
        self.limits = limits
        self.parser_kind = parser_kind
        #: A new connection's HTTP/1.1 parser (the choosing done once per worker).
        self.make_parser = parser_factory(parser_kind, limits)
        self.state = state
        self.dates = DateCache()
        self.refresh_clock()
        #: ``on_done(stream, now)`` as each request's app finished (metrics, which call the
        #: access log too), else the access log's ``log_access`` if enabled, else None.
        if on_done is None and access_log is not None and access_log.access_enabled:
            from hypercorn.workers.metrics import access_observer

            on_done = access_observer(access_log)
        self.on_done = on_done
        #: Called when each request's app finished (max_requests accounting).
        self.on_request = on_request
        self.connections: set[ConnectionDriver] = set()
        self.running_apps = 0
        self.requests = 0
        #: Set by ``start_shutdown``: connections set up later start shut down.
        self.shutting_down = False
        self._idle_waiter: AsyncEvent | None = None
        #: New connections and the deadline their core set at setup (the head's), in setup
        #: order and so in deadline order. One timer serves them all (``_fresh_due``), not
        #: one armed and cancelled per connection: most send their request at once, and
        #: their timer would never fire. A driver leaves it when its connection is lost.
        self._fresh: dict[ConnectionDriver, float] = {}
        self._fresh_timer: TimerHandle | None = None
        #: What ``_fresh_timer`` was armed for, and the latest deadline in ``_fresh``.
        self._fresh_at = -math.inf
        self._fresh_last = -math.inf

    def _watch_fresh(self, driver: ConnectionDriver, deadline: float) -> bool:
        """Keep ``driver``'s first deadline on the shared timer; False when it is earlier
        than one already kept (the order would break: it needs a timer of its own)."""
        if deadline < self._fresh_last:
            return False
        self._fresh_last = deadline
        self._fresh[driver] = deadline
        if self._fresh_timer is None:
            self._fresh_at = deadline
            self._fresh_timer = self.backend.call_at(deadline, self._fresh_due)
        return True

    def _fresh_due(self) -> None:
        """The shared timer fired: each driver whose first deadline came runs its timer
        callback, if that deadline is still the one it waits for (it may have armed a timer
        of its own since); the timer is armed again for the next deadline."""
        self._fresh_timer = None
        # (Fired for ``_fresh_at``: that deadline has passed, however early the loop fired.)
        now = max(self.backend.now(), self._fresh_at)
        fresh = self._fresh
        due: list[tuple[ConnectionDriver, float]] = []
        for driver, deadline in fresh.items():
            if deadline > now:
                self._fresh_at = deadline
                self._fresh_timer = self.backend.call_at(deadline, self._fresh_due)
                break
            due.append((driver, deadline))
        for driver, deadline in due:
            del fresh[driver]
            if driver._timer is None and driver._timer_at == deadline:
                try:
                    driver._on_timer()
                except Exception:  # (one connection's bug must not stop the others' deadlines)
                    _error_logger.exception("Error in a connection's timer")

    def refresh_clock(self) -> None:
        """Re-measure wall clock minus loop clock (for the Date header)."""
        self.dates.wall_offset = time.time() - self.backend.now()

    def on_connection(self, transport: Transport) -> ConnectionDriver:
        """The backend's ``OnConnection``."""
        driver = ConnectionDriver(self, transport)
        if self.shutting_down:
            # Accepted before the stop, set up after it (a TLS handshake finishing late):
            # treated as every connection was when the shutdown began.
            driver.start_shutdown(self.backend.now())
        return driver

    # -- shutdown --------------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        return bool(self.connections) or self.running_apps > 0

    def _maybe_idle(self) -> None:
        waiter = self._idle_waiter
        if waiter is not None and not self.busy:
            self._idle_waiter = None
            waiter.set()

    def start_shutdown(self) -> None:
        """Every connection: finish its in-flight request (Connection: close), close if idle."""
        self.shutting_down = True
        now = self.backend.now()
        for driver in list(self.connections):
            driver.start_shutdown(now)

    async def wait_idle(self, timeout: float | None) -> bool:
        """Wait until no connection is open and no app runs; False on timeout."""
        if not self.busy:
            return True
        waiter = self._idle_waiter
        if waiter is None:
            waiter = self._idle_waiter = self.backend.event()
        return await self.backend.wait_event(waiter, timeout)

    def abort_all(self) -> None:
        """Close every connection now and cancel every running app."""
        for driver in list(self.connections):
            driver.abort_all()


class ConnectionDriver:
    """Runs one connection's protocol core. See the module docstring."""

    __slots__ = (
        "_backend",
        "_context",
        "_core",
        "_ctx",
        "_deferred",
        "_eager",
        "_now",
        "_pending",
        "_start_task",
        "_streams",
        "_timer",
        "_timer_at",
        "_transport",
        "_watch",
        "call_soon",
        "write",
        "writelines",
    )

    def __init__(
        self,
        ctx: WorkerContext,
        transport: Transport,
        core: Callable[[ConnectionDriver], ServerConnection] | None = None,
    ) -> None:
        self._ctx = ctx
        self._backend = backend = ctx.backend
        #: The loop's clock, bound once. Callables stored in attributes are called through a
        #: local (``now = self._now; now()``): on 3.11 ``self._now()`` is a generic lookup.
        self._now = backend.now
        self._transport = transport
        #: The sink's ``write`` is the transport's raw one, bound once (no extra call per
        #: write): the core never writes after it closed, aborted or saw the connection lost.
        self.write = transport.raw_write
        self.writelines = transport.raw_writelines
        #: The sink's ``call_soon`` is the loop's (the core flushes held bytes from it).
        self.call_soon = backend.call_soon
        self._pending: list[_AppStream | _AppWsStream] = []
        #: A start of the pending apps is scheduled on the loop (see ``_after_app``).
        self._deferred = False
        #: The context the connection was set up in (no app's): pending apps started from
        #: the loop start from a copy of it, not of the app context that queued them.
        self._context = contextvars.copy_context()
        #: How app tasks start, and whether one may run before the starter returns (decided
        #: per connection: an app may install a task factory at startup).
        self._start_task, self._eager = backend.task_starter()
        self._streams: set[AsgiHttpStream | AsgiWsStream] = set()
        self._timer: TimerHandle | None = None
        self._timer_at: float | None = None
        #: Made when writing first pauses (or the core closes with bytes unsent); dropped
        #: when writing resumes while the core is open.
        self._watch: WriteWatch | None = None
        info = transport.info
        self._core: ServerConnection
        if core is not None:
            self._core = core(self)  # (a QUIC connection, built by ``workers/quic.py``)
        elif info.alpn_protocol == "h2":
            self._core = _http2(self, None)
        else:
            self._core = H1Connection(
                sink=self,
                parser=ctx.make_parser(),
                limits=ctx.limits,
                dates=ctx.dates,
                client=info.client,
                server=info.server,
                ssl=info.ssl,
                tls=info.tls,
                state=ctx.state,
                now=backend.now(),
                stream_class=_AppStream,
                ws_stream_class=_AppWsStream,
            )
        ctx.connections.add(self)
        if self._pending:
            self._start_pending()
        deadline = self._core.deadline
        if deadline is not None:
            if ctx._watch_fresh(self, deadline):
                self._timer_at = deadline  # (armed, on the worker's timer)
            else:
                self._arm(deadline)

    @property
    def core(self) -> ServerConnection:
        return self._core

    # -- ConnectionHandler (called by the backend) -------------------------------------------

    def data_received(self, data: bytes) -> None:
        now = self._now
        core = self._core
        core.receive_data(data, now())
        # (A request being answered has no deadline: the usual read needs no driver pass.)
        if self._pending or core.deadline is not None:
            self._after_core()

    def core_fed(self) -> None:
        """The core was called from outside ``data_received`` (the QUIC endpoint routed it a
        datagram): start the apps it queued, re-arm the timer."""
        self._after_core()

    def eof_received(self) -> None:
        self._core.receive_data(b"", self._backend.now())
        self._after_core()

    def connection_lost(self) -> None:
        self._core.connection_lost()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = None
        self._watch = None
        self._pending.clear()
        ctx = self._ctx
        ctx.connections.discard(self)
        ctx._fresh.pop(self, None)
        ctx._maybe_idle()

    def write_paused(self) -> None:
        # (Called from inside a write, which may be an app's ``send``.)
        now = self._backend.now()
        self._core.write_paused(now)
        self._watch_writes(now)
        self._after_app()
        self._arm_earliest()

    def write_resumed(self) -> None:
        watch = self._watch
        if watch is not None and not watch.closing:
            self._watch = None
        self._core.write_resumed(self._backend.now())

    # -- ConnectionSink (called by the core) -------------------------------------------------

    def close(self, *, linger: bool = True) -> None:
        transport = self._transport
        transport.close(linger=linger)
        if transport.write_buffer_size or transport.info.ssl:
            # The core is done, the flush is not: a peer that reads nothing must not keep
            # the rest here for good (write_timeout holds while closing too). (asyncio's TLS
            # may hold bytes its write_buffer_size does not count.)
            self._watch_writes(self._backend.now()).closing = True
            self._arm_earliest()

    def abort(self) -> None:
        self._transport.abort()

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def start_app(self, stream: AsgiHttpStream | AsgiWsStream) -> None:
        if TYPE_CHECKING:
            # (the core makes them: stream_class, ws_stream_class)
            assert isinstance(stream, (_AppStream, _AppWsStream))
        stream._driver = self
        if self._eager or self._streams:
            # Queued, to start after the core call returns: a task that may run at once must
            # not re-enter the core, and while an app of this connection runs, this call may
            # come from inside it (a pipelined request whose predecessor's response just
            # completed), where ``_after_app`` starts it from the loop instead.
            self._pending.append(stream)
        else:
            self._streams.add(stream)
            start_task = self._start_task
            stream.task = start_task(self._run_app(stream))

    def switch(self, switch: SwitchProtocol) -> None:
        build = SWITCHES.get(switch.to)
        if build is None:  # pragma: no cover (a core asking for a protocol nobody serves)
            _error_logger.error("cannot switch a connection to %r", switch.to)
            self._core.connection_lost()
            self._transport.abort()
            return
        self._core = core = build(self, switch)
        # The old core may have paused reading (bytes past its last request): the new one
        # starts reading, and pauses again itself if it must.
        self._transport.resume_reading()
        now = self._backend.now()
        if switch.trailing:
            core.receive_data(switch.trailing, now)
        if switch.eof:
            core.receive_data(b"", now)
        # (Apps of streams the new core opened, e.g. the h2c upgrade's stream 1, start now;
        # from the loop if an app is alive: a pipelined upgrade switches inside its send.)
        if self._streams:
            self._after_app()
        else:
            self._after_core()
        self._arm_earliest()

    # -- shutdown ----------------------------------------------------------------------------

    def start_shutdown(self, now: float) -> None:
        self._core.start_shutdown(now)
        self._after_core()

    def abort_all(self) -> None:
        for stream in list(self._streams):
            task = stream.task
            if task is not None:
                task.cancel()  # type: ignore[attr-defined]
        # The core must not write again (``raw_write``): it sees the connection as lost now.
        self._core.connection_lost()
        self._transport.abort()

    # -- plumbing ----------------------------------------------------------------------------

    def _after_core(self) -> None:
        """After a core call made outside any app's task: start the queued apps, re-arm."""
        if self._pending:
            self._start_pending()
        # The phase deadline only: the write deadline moves only in ``write_paused``, which
        # checks it (one attribute read here instead of a call, after every core call).
        deadline = self._core.deadline
        if deadline is not None:
            armed = self._timer_at
            if armed is None or deadline < armed:
                self._arm(deadline)

    def _after_app(self) -> None:
        """``_after_core`` for a core call made from inside an app's task (``receive``,
        ``send``, the app's end): queued apps start from the loop, once this task yields.
        Started here, a pipelined request's app would run inside its predecessor's ``send``
        where tasks start eagerly (a task factory), one level deeper per request
        (RecursionError after a few hundred), and would inherit the predecessor's context
        variables everywhere."""
        if self._pending and not self._deferred:
            self._deferred = True
            self._backend.call_soon(self._start_deferred)
        # (The deadline part of ``_after_core``, inline: this runs twice per request.)
        deadline = self._core.deadline
        if deadline is not None:
            armed = self._timer_at
            if armed is None or deadline < armed:
                self._arm(deadline)

    def _start_deferred(self) -> None:
        self._deferred = False
        if self._pending:
            self._context.run(self._after_core)

    def _watch_writes(self, now: float) -> WriteWatch:
        """Start (or restart) the write watch: progress is counted from ``now``."""
        watch = self._watch
        if watch is None:
            watch = self._watch = WriteWatch(self._transport, self._ctx.limits.write_timeout, now)
        else:
            watch.restart(now)
        return watch

    def _arm_earliest(self) -> None:
        deadline = self._core.next_deadline()
        watch = self._watch
        if watch is not None and (deadline is None or watch.due < deadline):
            deadline = watch.due
        if deadline is not None:
            armed = self._timer_at
            if armed is None or deadline < armed:
                self._arm(deadline)

    def _arm(self, deadline: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = self._backend.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        fired_for = self._timer_at
        self._timer = None
        self._timer_at = None
        # Loops may fire a timer a hair early (clock resolution): it fired *for* its
        # deadline, so that deadline has passed.
        now = self._backend.now()
        if fired_for is not None and fired_for > now:
            now = fired_for
        core = self._core
        watch = self._watch
        if watch is not None:
            # Sampled on every firing, before the core's deadline is judged: progress since
            # the last sample moves the core's write deadline first.
            if watch.sample(now):
                if not watch.closing:
                    core.write_paused(now)
            elif watch.closing and watch.stalled(now):
                self._watch = None
                self._transport.abort()  # (connection_lost follows)
                return
        deadline = core.next_deadline()
        if deadline is not None and deadline <= now:
            core.handle_deadline(now)
        self._after_core()
        self._arm_earliest()

    def _start_pending(self) -> None:
        pending = self._pending
        self._pending = []
        start_task = self._start_task
        for stream in pending:
            if stream.disconnected:
                continue
            self._streams.add(stream)
            task = start_task(self._run_app(stream))
            if not stream.app_done:  # (an eager start may have finished it already)
                stream.task = task

    async def _run_app(self, stream: _AppStream | _AppWsStream) -> None:
        ctx = self._ctx
        now = self._now
        app = ctx.app

        # Counted here, not at spawn: a task cancelled before it ever ran never gets here.
        ctx.running_apps += 1
        returned = False
        try:
            await app(stream.scope, stream.receive, stream.send)
            returned = True
        except ClientDisconnected:
            _error_logger.debug("app stopped: the client disconnected")
        except AppProtocolError as exc:
            # The app broke the ASGI rules (e.g. CR/LF in a header); the core already answered
            # 500 or closed. One line says what, a traceback would only repeat it.
            _error_logger.error("ASGI app error: %s", exc)
        except Exception:
            _error_logger.exception("Error in ASGI Framework")
        finally:
            if stream.state is _RESPONSE_DONE:
                # The usual end: ``send`` already ran the driver after the response.
                stream.app_done = True
                stream.waiter = None
            else:
                problem = stream.app_finished(now())
                if problem is not None and returned:
                    # (An app that raised was logged above: once is enough.)
                    _error_logger.error(problem)
                self._after_app()
            stream.task = None  # break the stream <-> task cycle: no GC work per request
            self._streams.discard(stream)
            ctx.running_apps -= 1
            ctx.requests += 1
            on_done = ctx.on_done
            if on_done is not None:
                on_done(stream, now())
            if ctx.on_request is not None:
                ctx.on_request()
            if ctx._idle_waiter is not None:
                ctx._maybe_idle()


async def _receive(self: _AppStream | _AppWsStream) -> Message:
    """The ASGI ``receive`` of the driver's streams (HTTP and WebSocket alike)."""
    driver = self._driver
    now = driver._now
    message = self.receive_nowait(now())
    driver._after_app()
    while message is None:
        event = driver._backend.event()
        self.waiter = event.set
        await event.wait()
        message = self.receive_nowait(now())
        driver._after_app()
    return message


class _AppStream(AsgiHttpStream):
    """The driver's streams: the request's ASGI ``receive`` and ``send`` are bound methods
    of the stream itself (the core makes them, see ``stream_class``), so a request costs no
    further object for them."""

    __slots__ = ("_driver",)
    _driver: ConnectionDriver

    receive = _receive

    async def send(self, message: Message) -> None:
        if self.disconnected:
            # ASGI 2.4: a send on a closed connection raises an OSError, so an app that
            # streams forever notices instead of spinning on the loop.
            raise ClientDisconnected("the client has gone away")
        driver = self._driver
        now = driver._now
        try:
            self.app_send(message, now())
        except AppProtocolError:
            # The core answered (a refused head's 500 may have recycled the connection and
            # started a pipelined request): carry that out before the app hears of it.
            driver._after_app()
            raise
        # A driver pass only when the send started a pipelined request's app or moved the
        # deadline before the armed timer (a completed response's keep-alive; QUIC's
        # retransmission timer after any send): one attribute compare otherwise.
        if driver._pending:
            driver._after_app()
        else:
            deadline = driver._core.deadline
            if deadline is not None:
                armed = driver._timer_at
                if armed is None or deadline < armed:
                    driver._after_app()
        if self.send_blocked:
            # An HTTP/2 window is closed: only this app waits for the peer to open it (the
            # wire keeps the message and releases us when it went, or the stream is gone).
            driver._after_app()
            event = driver._backend.event()
            self.send_waiter = event.set
            await event.wait()
        transport = driver._transport
        if transport.writing_paused:
            try:
                await transport.drain()
            except TransportClosed:
                pass  # the core already told the stream; later sends are dropped


class _AppWsStream(AsgiWsStream):
    """The driver's WebSocket streams (see ``_AppStream``)."""

    __slots__ = ("_driver",)
    _driver: ConnectionDriver

    receive = _receive

    async def send(self, message: Message) -> None:
        if self.disconnected:
            # ASGI 2.4, as for HTTP: the peer left, or the server is closing the WebSocket.
            raise ClientDisconnected("the WebSocket is closed")
        driver = self._driver
        self.app_send(message, driver._now())
        driver._after_app()  # (an accept switched the core; a close armed a deadline)
        if self.send_blocked:
            # Over HTTP/2 the stream's window is closed: this app alone waits for it.
            event = driver._backend.event()
            self.send_waiter = event.set
            await event.wait()
        transport = driver._transport
        if transport.writing_paused:
            # The peer is not reading: the app waits here (the core aborts after
            # write_timeout, which ends the wait).
            try:
                await transport.drain()
            except TransportClosed:
                pass


def _websocket_session(driver: ConnectionDriver, switch: SwitchProtocol) -> ServerConnection:
    """``SWITCHES["websocket"]``: an accepted HTTP/1.1 upgrade becomes a WebSocket session
    whose carrier is the driver itself (write, close, abort, pause/resume reading)."""
    stream = switch.stream
    assert isinstance(stream, AsgiWsStream)
    now = driver._backend.now()
    session = WsSession(carrier=driver, stream=stream, limits=driver._ctx.limits, now=now)
    if driver._ctx.shutting_down:
        session.start_shutdown(now)
    return session


SWITCHES["websocket"] = _websocket_session
