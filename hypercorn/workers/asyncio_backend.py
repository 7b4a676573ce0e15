"""The asyncio implementation of the per-loop contract (``backend.py``); uvloop reuses it.

Connections are ``asyncio_transport_backend.StreamProtocol`` (the hot path). Accepting is our own
loop on ``add_reader`` rather than ``loop.create_server``, for two things ``create_server``
cannot do: stop accepting at ``max_connections``, and back off quietly (one log line a second
at most) on EMFILE.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import socket
import ssl
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from hypercorn.protocols.proxy import ProxyHeaderError
from hypercorn.workers.asyncio_transport_backend import StreamProtocol as _StreamProtocol
from hypercorn.workers.backend import (
    ACCEPT_EXHAUSTION,
    EXHAUSTION_BACKOFF,
    BackendName,
    DatagramSocket,
    ExceptionMapping,
    ExhaustionLog,
    Listener,
    OnConnection,
    OnDatagrams,
    ServeOptions,
    TaskStarter,
    TransportClosed,
    TransportTimeout,
    map_exceptions,
    peer_address,
)
from hypercorn.workers.proxy_header import close_refused, read_proxy_header

if TYPE_CHECKING:
    from typing_extensions import TypeVarTuple, Unpack

    from hypercorn.workers.backend import AsyncEvent

    Ts = TypeVarTuple("Ts")

T = TypeVar("T")

_logger = logging.getLogger("hypercorn.error")

EXCEPTIONS: ExceptionMapping = {
    asyncio.TimeoutError: TransportTimeout,
    TimeoutError: TransportTimeout,
    ConnectionError: TransportClosed,
    ssl.SSLError: TransportClosed,
    OSError: TransportClosed,
}


class _Event:
    """The contract's one-shot event, lighter than ``asyncio.Event`` (no loop lookup per
    wait, no deque, no waiter removal): an app waiting in ``receive()`` makes one per wait,
    which is one per message on a WebSocket. Each waiter awaits a future of its own, so a
    cancelled waiter cancels only its own; ``set`` skips the futures that are done."""

    __slots__ = ("_loop", "_set", "_waiters")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._set = False
        self._waiters: list[asyncio.Future[bool]] | None = None

    def set(self) -> None:
        if not self._set:
            self._set = True
            waiters = self._waiters
            if waiters is not None:
                for future in waiters:
                    if not future.done():
                        future.set_result(True)

    def is_set(self) -> bool:
        return self._set

    async def wait(self) -> bool:
        if self._set:
            return True
        future: asyncio.Future[bool] = self._loop.create_future()
        waiters = self._waiters
        if waiters is None:
            self._waiters = [future]
        else:
            waiters.append(future)
        return await future


_TASK_NAME = "hypercorn-request"


class AsyncioBackend:
    """``Backend`` on the running asyncio (or uvloop) event loop."""

    def __init__(self, name: BackendName = "asyncio") -> None:
        self._name: BackendName = name
        self._loop = asyncio.get_running_loop()
        self._tasks: set[asyncio.Task[Any]] = set()
        #: Closed connections still discarding the peer's input (see _StreamProtocol).
        self._lingering: set[_StreamProtocol] = set()
        self.now = self._loop.time  # type: ignore[method-assign]
        # The loop's own, bound once (no frame of ours per timer: one per connection).
        self.call_at = self._loop.call_at  # type: ignore[method-assign,assignment]
        self.call_soon = self._loop.call_soon  # type: ignore[method-assign,assignment]
        #: The last ``task_starter()`` and the task factory it was made for.
        self._starter: tuple[object, TaskStarter] | None = None

    @property
    def name(self) -> BackendName:
        return self._name

    def now(self) -> float:  # replaced per instance by the loop's bound ``time``
        return self._loop.time()

    def event(self) -> AsyncEvent:
        return _Event(self._loop)

    def task_starter(self) -> TaskStarter:
        # No done callback and no set: the caller holds the task (one per request, so the
        # bookkeeping would cost a loop callback each). Built directly with a fixed name
        # (an unnamed Task formats "Task-<n>", and create_task adds a layer), through a
        # partial: a C-level callable, no Python frame per request.
        # (Asked once per connection: made again only when the task factory changed.)
        loop = self._loop
        factory = loop.get_task_factory()
        made = self._starter
        if made is not None and made[0] is factory:
            return made[1]
        if factory is not None:
            starter = TaskStarter(loop.create_task, True)  # (a factory may start eagerly)
        else:
            # Lazily, on every version: 3.12's eager_start (the app answering inside
            # data_received) measured slower on 3.12 and 3.13, uvloop and asyncio alike
            # (keep-alive hello 0.86x, unique heads 0.61x, WSGI 0.69x of a lazy start).
            start = functools.partial(asyncio.Task, loop=loop, name=_TASK_NAME)
            starter = TaskStarter(start, False)
        self._starter = (factory, starter)
        return starter

    def spawn(
        self, fn: Callable[[Unpack[Ts]], Awaitable[object]], *args: Unpack[Ts]
    ) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = self._loop.create_task(fn(*args))  # type: ignore[arg-type]
        if not task.done():
            self._tasks.add(task)
            task.add_done_callback(self._task_done)
        else:
            self._task_done(task)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            _logger.error("Unhandled error in a worker task", exc_info=task.exception())

    def call_at(self, deadline: float, fn: Callable[[], object]) -> asyncio.TimerHandle:
        return self._loop.call_at(deadline, fn)

    def call_soon(self, fn: Callable[[], object]) -> None:
        self._loop.call_soon(fn)

    def call_soon_threadsafe(self, fn: Callable[[], object]) -> None:
        self._loop.call_soon_threadsafe(fn)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def wait_event(self, event: AsyncEvent, timeout: float | None) -> bool:
        if event.is_set():
            return True
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except asyncio.TimeoutError:
            return event.is_set()
        return True

    async def run_sync(self, fn: Callable[[Unpack[Ts]], T], *args: Unpack[Ts]) -> T:
        context = contextvars.copy_context()
        call = functools.partial(context.run, fn, *args)
        return await self._loop.run_in_executor(None, call)

    def add_signal_handler(self, signum: int, fn: Callable[[], object]) -> None:
        self._loop.add_signal_handler(signum, fn)

    def remove_signal_handler(self, signum: int) -> None:
        self._loop.remove_signal_handler(signum)

    async def open_datagrams(
        self, sock: socket.socket, on_datagrams: OnDatagrams
    ) -> DatagramSocket:
        loop = self._loop
        fd = sock.fileno()
        transport: DatagramSocket

        def write_ready() -> None:
            transport.write_ready()
            if not transport.wants_write:
                loop.remove_writer(fd)

        def close() -> None:
            loop.remove_reader(fd)
            loop.remove_writer(fd)

        transport = DatagramSocket(
            sock,
            on_datagrams,
            event=self.event,
            wake_writer=lambda: loop.add_writer(fd, write_ready),
            on_close=close,
        )
        loop.add_reader(fd, transport.read_ready)
        return transport

    async def serve(
        self,
        listeners: Sequence[Listener],
        on_connection: OnConnection,
        stop: AsyncEvent,
        options: ServeOptions,
    ) -> None:
        acceptor = _Acceptor(self._loop, listeners, on_connection, options, self._lingering)
        acceptor.start()
        try:
            await stop.wait()
        finally:
            acceptor.stop()
        # A socket accepted just before the stop may still be in its handshake task: let
        # it reach on_connection, or the caller's graceful shutdown would not see it.
        await acceptor.settle()

    async def close_lingering(self) -> None:
        """Close the connections still lingering after their close (the loop is about to end:
        their handlers are done with them already)."""
        lingering = self._lingering
        for protocol in list(lingering):
            protocol.abort()
        for _ in range(8):  # (a loop pass or two lets each transport close and report it)
            if not lingering:
                return
            await asyncio.sleep(0)


_AF_UNIX = getattr(socket, "AF_UNIX", None)
_WILDCARDS = ("0.0.0.0", "::")


class _AcceptedTCP(socket.socket):
    """An accepted TCP socket whose ``family`` and ``type`` are plain class attributes.

    The loop reads both when it wraps the socket (uvloop three times), and ``socket.socket``
    makes each an enum through a Python property: a few thousand instructions per
    connection. Subclasses fix the family (one per address family, see ``_accepted_class``).
    It is still a ``socket.socket``, so uvloop detaches it (rather than closing its fd a
    second time) when the transport closes.
    """

    __slots__ = ()
    type = socket.SOCK_STREAM


_ACCEPTED: dict[int, type[_AcceptedTCP]] = {}


def _accepted_class(family: int) -> type[_AcceptedTCP]:
    cls = _ACCEPTED.get(family)
    if cls is None:
        name = f"_Accepted{socket.AddressFamily(family).name}"
        cls = _ACCEPTED[family] = type(name, (_AcceptedTCP,), {"__slots__": (), "family": family})
    return cls


class _Acceptor:
    """Accept loop over ``add_reader`` with max_connections and EMFILE back-off."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        listeners: Sequence[Listener],
        on_connection: OnConnection,
        options: ServeOptions,
        lingering: set[_StreamProtocol],
    ) -> None:
        self._loop = loop
        self._lingering = lingering
        self._listeners = listeners
        self._on_connection = on_connection
        self._options = options
        self._open = 0
        self._reading = False
        self._stopped = False
        self._retry: asyncio.TimerHandle | None = None
        self._exhaustion = ExhaustionLog()
        self._handshakes: set[asyncio.Task[None]] = set()
        #: Plain connections between accept and ``connection_made`` (see ``_setup``).
        self._setting_up = 0
        #: Per listening socket: its address, if connections cannot reach another.
        self._servers: dict[socket.socket, tuple[tuple[str, int] | None]] = {}

    def start(self) -> None:
        for listener in self._listeners:
            listener.sock.setblocking(False)
        self._set_reading(True)

    def stop(self) -> None:
        self._stopped = True
        self._set_reading(False)
        if self._retry is not None:
            self._retry.cancel()

    async def settle(self) -> None:
        """Wait for the handshakes in flight (each is bounded: a plain connection takes a
        loop pass or two, TLS at most ``ssl_handshake_timeout``)."""
        while self._handshakes or self._setting_up:
            if self._handshakes:
                await asyncio.wait(list(self._handshakes))
            else:
                await asyncio.sleep(0)  # (connection_made is a loop callback away)

    def _set_reading(self, on: bool) -> None:
        if on == self._reading:
            return
        self._reading = on
        for listener in self._listeners:
            if on:
                self._loop.add_reader(listener.sock.fileno(), self._accept, listener)
            else:
                self._loop.remove_reader(listener.sock.fileno())

    def _can_accept(self) -> bool:
        limit = self._options.max_connections
        return not self._stopped and (limit is None or self._open < limit)

    def _accept(self, listener: Listener) -> None:
        sock = listener.sock
        family = sock.family
        if family == _AF_UNIX:
            self._accept_sockets(listener)
            return
        # The C accept (no socket object, no enum conversions), wrapped in a socket whose
        # family is a class attribute; the server address is the listener's own unless it
        # listens on every address.
        accept = sock._accept  # type: ignore[attr-defined]
        make = _accepted_class(family)
        server = self._servers.get(sock)
        if server is None:
            bound = peer_address(sock.getsockname())
            server = self._servers[sock] = (
                None if bound is None or bound[0] in _WILDCARDS else bound,
            )
        ssl_context = listener.ssl_context
        plain = ssl_context is None and self._options.proxy is None
        limit = self._options.max_connections
        for _ in range(128):
            if self._stopped or (limit is not None and self._open >= limit):
                self._set_reading(False)
                return
            try:
                fd, addr = accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in ACCEPT_EXHAUSTION:
                    self._exhausted(exc)
                    return
                # ECONNABORTED and friends: that one connection is gone; keep accepting.
                continue
            conn = make(family, socket.SOCK_STREAM, 0, fd)
            if not plain:
                # (Read before the loop wraps it. The loop makes a plain one non-blocking
                # itself: asyncio's transport setup, libuv's uv_tcp_open.)
                conn.setblocking(False)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._open += 1
            protocol = _StreamProtocol(
                self._loop,
                self._on_connection,
                self._options,
                self._lost,
                not plain,
                self._lingering,
            )
            protocol._peer = (peer_address(addr), server[0])
            if plain:
                self._setup(conn, protocol)
            else:
                self._start_handshake(conn, ssl_context, protocol)

    def _accept_sockets(self, listener: Listener) -> None:
        """``_accept`` for Unix sockets: socket objects, a task per connection."""
        for _ in range(128):
            if not self._can_accept():
                self._set_reading(False)
                return
            try:
                conn, _addr = listener.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in ACCEPT_EXHAUSTION:
                    self._exhausted(exc)
                    return
                continue  # (that one connection is gone)
            conn.setblocking(False)
            self._open += 1
            ssl_context = listener.ssl_context
            protocol = _StreamProtocol(
                self._loop,
                self._on_connection,
                self._options,
                self._lost,
                ssl_context is not None,
                self._lingering,
            )
            self._start_handshake(conn, ssl_context, protocol)

    def _exhausted(self, exc: OSError) -> None:
        self._exhaustion.report(self._loop.time(), exc)
        self._set_reading(False)
        self._retry = self._loop.call_later(EXHAUSTION_BACKOFF, self._resume)

    def _resume(self) -> None:
        self._retry = None
        if self._can_accept():
            self._set_reading(True)

    def _lost(self) -> None:
        self._open -= 1
        if not self._reading and self._retry is None and self._can_accept():
            self._set_reading(True)

    def _start_handshake(
        self,
        conn: socket.socket,
        ssl_context: ssl.SSLContext | None,
        protocol: _StreamProtocol,
    ) -> None:
        task = self._loop.create_task(self._handshake(conn, ssl_context, protocol))
        self._handshakes.add(task)
        task.add_done_callback(self._handshakes.discard)

    def _setup(self, conn: socket.socket, protocol: _StreamProtocol) -> None:
        """A plain connection (no TLS, no PROXY header): the loop's ``connect_accepted_socket``
        run by hand rather than in a task. It makes the transport at once and then only
        waits for ``connection_made`` (a loop callback), so a task per connection (its
        creation, two steps, a frame of ours) would cost more than all the rest of the
        setup. Its wait is resumed from the waiter's done callback."""
        setup = self._loop.connect_accepted_socket(lambda: protocol, conn)
        self._setting_up += 1
        self._step(setup, conn, None)

    def _step(self, setup: Any, conn: socket.socket, _waited: object) -> None:
        try:
            waiter = setup.send(None)
        except StopIteration:
            self._setting_up -= 1
            return
        except Exception as exc:
            # (As _handshake: the connection went before connection_made.)
            self._setting_up -= 1
            _logger.debug("Connection failed during setup: %s", exc)
            conn.close()
            self._lost()
            return
        if waiter is None:  # (a bare yield: resume on the next loop pass)
            self._loop.call_soon(self._step, setup, conn, None)
        else:
            waiter.add_done_callback(functools.partial(self._step, setup, conn))

    async def _handshake(
        self, conn: socket.socket, ssl_context: ssl.SSLContext | None, protocol: _StreamProtocol
    ) -> None:
        try:
            with map_exceptions(EXCEPTIONS):
                proxy = self._options.proxy
                if proxy is not None:
                    deadline = self._loop.time() + proxy.timeout
                    protocol.proxied = await read_proxy_header(
                        conn, proxy, self._wait_readable, deadline
                    )
                await self._loop.connect_accepted_socket(
                    lambda: protocol,
                    conn,
                    ssl=ssl_context,
                    ssl_handshake_timeout=(
                        self._options.ssl_handshake_timeout if ssl_context is not None else None
                    ),
                )
        except ProxyHeaderError as exc:
            _logger.debug("Connection refused: %s", exc)
            close_refused(conn)
            self._lost()
        except (TransportClosed, TransportTimeout) as exc:
            _logger.debug("Connection failed during setup: %s", exc)
            conn.close()
            self._lost()

    async def _wait_readable(self, sock: socket.socket, deadline: float) -> None:
        loop = self._loop
        waiter = loop.create_future()

        def ready() -> None:
            if not waiter.done():
                waiter.set_result(None)

        def late() -> None:
            if not waiter.done():
                waiter.set_exception(TransportTimeout("the PROXY header took too long"))

        fd = sock.fileno()
        loop.add_reader(fd, ready)
        timer = loop.call_at(deadline, late)
        try:
            await waiter
        finally:
            timer.cancel()
            loop.remove_reader(fd)


def run(
    main: Callable[[Any], Awaitable[T]],
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
    name: BackendName = "asyncio",
) -> T:
    """Run ``main(backend)`` on a new event loop made by ``loop_factory``."""

    async def _main() -> T:
        backend = AsyncioBackend(name)
        try:
            return await main(backend)
        finally:
            await backend.close_lingering()

    if sys.version_info >= (3, 11):
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            return runner.run(_main())
    else:  # (an ``else``: mypy checks each version's branch, and flags code after a return)
        # What ``asyncio.Runner`` does on 3.11+ (3.10's ``asyncio.run`` takes no loop
        # factory): tasks still pending when ``main`` returns are cancelled and awaited while
        # the loop runs, so their ``finally`` blocks run there, not at garbage collection
        # ("Task was destroyed but it is pending!").
        loop = loop_factory() if loop_factory is not None else asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            return loop.run_until_complete(_main())
        finally:
            try:
                _cancel_all_tasks(loop)
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.run_until_complete(loop.shutdown_default_executor())
            finally:
                asyncio.set_event_loop(None)
                loop.close()


def _cancel_all_tasks(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel the loop's pending tasks and wait for them (``asyncio.run``'s own step)."""
    tasks = asyncio.all_tasks(loop)
    if not tasks:
        return
    for task in tasks:
        task.cancel()
    loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
    for task in tasks:
        if not task.cancelled() and task.exception() is not None:
            loop.call_exception_handler(
                {
                    "message": "unhandled exception during shutdown",
                    "exception": task.exception(),
                    "task": task,
                }
            )
