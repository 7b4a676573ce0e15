"""The trio implementation of the per-loop contract (``backend.py``): loop services and the
accept loop; the transports are in ``trio_transport_backend.py``.

Tasks: ``spawn`` runs each task under a cancel scope of its own (``TaskHandle.cancel``).
Request tasks (``task_starter``) would pay a new trio task and a cancel scope per request,
so they run on *runners* instead: long-lived tasks that each run one request coroutine at a
time, park in an idle pool between requests, and start every request in a fresh copy of the
starter's context (as a new task would). Cancelling a request cancels its runner, which then
ends.

Time: ``now()`` is ``time.perf_counter`` when trio runs on its system clock (whose time is
``perf_counter()`` plus a fixed offset: a call per reading saved), else trio's clock. Timers
share one task that sleeps until the earliest deadline.
"""

from __future__ import annotations

import contextlib
import contextvars
import heapq
import itertools
import logging
import math
import os
import signal
import socket
import ssl
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import trio

from hypercorn.protocols.proxy import ProxyHeaderError
from hypercorn.workers.backend import (
    ACCEPT_EXHAUSTION,
    EXHAUSTION_BACKOFF,
    BackendName,
    ConnectionInfo,
    DatagramSocket,
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
    tls_connection_info,
)
from hypercorn.workers.proxy_header import close_refused, read_proxy_header
from hypercorn.workers.trio_transport_backend import (
    EXCEPTIONS,
    _SocketTransport,
    _TLSTransport,
    _Transport,
    open_datagrams,
)

if TYPE_CHECKING:
    from typing_extensions import TypeVarTuple, Unpack

    from hypercorn.workers.backend import AsyncEvent

    Ts = TypeVarTuple("Ts")

T = TypeVar("T")

_logger = logging.getLogger("hypercorn.error")

#: Connections accepted in a row before the accept loop lets other tasks run.
_ACCEPT_BATCH = 64
#: Idle request runners kept for reuse (more would only hold memory).
_MAX_IDLE_RUNNERS = 256
#: Threads for ``run_sync`` (WSGI): as many as asyncio's default executor has, so that both
#: backends put the same back-pressure on WSGI applications.
_THREADS = min(32, (os.cpu_count() or 1) + 4)

#: The backend of the running ``open_backend`` (for ``current_backend("trio")``).
_CURRENT: contextvars.ContextVar[TrioBackend] = contextvars.ContextVar("hypercorn_trio_backend")


class _Task:
    """A ``TaskHandle`` for ``spawn``: the task runs inside ``scope``."""

    __slots__ = ("_done", "scope")

    def __init__(self) -> None:
        self.scope = trio.CancelScope()
        self._done = False

    def cancel(self) -> None:
        self.scope.cancel()

    def done(self) -> bool:
        return self._done


class _Request:
    """A ``TaskHandle`` for one request coroutine on a runner."""

    __slots__ = ("_done", "runner")

    def __init__(self, runner: _Runner) -> None:
        self.runner = runner
        self._done = False

    def cancel(self) -> None:
        if not self._done:
            self.runner.scope.cancel()

    def done(self) -> bool:
        return self._done


class _Runner:
    """A task that runs request coroutines one at a time (see the module docstring)."""

    __slots__ = ("job", "request", "scope", "task")

    def __init__(self) -> None:
        self.scope = trio.CancelScope()
        self.task: trio.lowlevel.Task | None = None
        self.job: Coroutine[Any, Any, object] | None = None
        self.request: _Request | None = None


class _Timer:
    """A ``TimerHandle``; ``cancel`` leaves it in the heap, marked (lazy deletion)."""

    __slots__ = ("fn", "timers")

    def __init__(self, fn: Callable[[], object], timers: _Timers) -> None:
        self.fn: Callable[[], object] | None = fn
        self.timers = timers

    def cancel(self) -> None:
        if self.fn is not None:
            self.fn = None
            self.timers.cancelled += 1


class _Timers:
    """Every ``call_at`` of one backend, fired in deadline order by one task."""

    def __init__(self, now: Callable[[], float], offset: float) -> None:
        self._now = now
        self._offset = offset  # trio's clock minus ours
        self._heap: list[tuple[float, int, _Timer]] = []
        self._seq = itertools.count()
        self._sleep: trio.CancelScope | None = None
        self.cancelled = 0

    def add(self, deadline: float, fn: Callable[[], object]) -> _Timer:
        timer = _Timer(fn, self)
        heapq.heappush(self._heap, (deadline, next(self._seq), timer))
        sleep = self._sleep
        if sleep is not None and deadline + self._offset < sleep.deadline:
            sleep.deadline = deadline + self._offset
        return timer

    async def run(self) -> None:
        heap = self._heap
        while True:
            now = self._now()
            # Take what is due first, then run it: a callback that arms a timer at a past
            # deadline gets it on the next pass, after trio has run I/O and other tasks
            # (asyncio's order), instead of spinning here.
            due = []
            while heap and heap[0][0] <= now:
                due.append(heapq.heappop(heap)[2])
            for timer in due:
                fn = timer.fn
                if fn is None:
                    self.cancelled -= 1
                    continue
                timer.fn = None
                try:
                    fn()
                except Exception:
                    _logger.exception("Error in a timer callback")
            if self.cancelled > 64 and self.cancelled * 2 > len(heap):
                heap[:] = [entry for entry in heap if entry[2].fn is not None]
                heapq.heapify(heap)
                self.cancelled = 0
            deadline = heap[0][0] + self._offset if heap else math.inf
            with trio.CancelScope(deadline=deadline) as self._sleep:
                await trio.sleep_forever()
            self._sleep = None


class TrioBackend:
    """``Backend`` on the running trio loop; tasks go to ``nursery`` (or are system tasks)."""

    def __init__(self, nursery: trio.Nursery | None = None) -> None:
        self._nursery = nursery
        self._token = trio.lowlevel.current_trio_token()
        clock = trio.lowlevel.current_clock()
        offset = getattr(clock, "offset", None)
        if type(clock).__name__ == "SystemClock" and isinstance(offset, float):
            self.now = time.perf_counter  # type: ignore[method-assign]
        else:
            self.now = trio.current_time  # type: ignore[method-assign]
            offset = 0.0
        self._timers = _Timers(self.now, offset)
        self._timers_started = False
        self._idle: list[_Runner] = []
        self._limiter = trio.CapacityLimiter(_THREADS)
        self._signals: dict[int, Any] = {}

    @property
    def name(self) -> BackendName:
        return "trio"

    def now(self) -> float:  # replaced per instance (see the module docstring)
        return trio.current_time()

    def event(self) -> AsyncEvent:
        return trio.Event()

    def _start_soon(
        self, fn: Callable[[Unpack[Ts]], Awaitable[object]], *args: Unpack[Ts], name: str
    ) -> None:
        if self._nursery is not None:
            self._nursery.start_soon(fn, *args, name=name)
        else:
            context = contextvars.copy_context()
            trio.lowlevel.spawn_system_task(fn, *args, name=name, context=context)

    # -- tasks ---------------------------------------------------------------------------------

    def task_starter(self) -> TaskStarter:
        # Never eager: a runner (or a new task) runs on a later loop pass.
        return TaskStarter(self._start_request, False)

    def _start_request(self, coro: Coroutine[Any, Any, object]) -> _Request:
        idle = self._idle
        if idle:
            runner = idle.pop()
            request = runner.request = _Request(runner)
            runner.job = coro
            task = runner.task
            assert task is not None
            # A runner reads its task's context at each step: the request's first step runs
            # in this fresh copy, as a new task's would.
            task.context = contextvars.copy_context()
            trio.lowlevel.reschedule(task)
            return request
        runner = _Runner()
        request = runner.request = _Request(runner)
        runner.job = coro
        self._start_soon(self._run_requests, runner, name="hypercorn-request")
        return request

    async def _run_requests(self, runner: _Runner) -> None:
        runner.task = trio.lowlevel.current_task()
        idle = self._idle

        def abort(_: object) -> trio.lowlevel.Abort:
            idle.remove(runner)  # cancelled while idle (the worker is stopping)
            return trio.lowlevel.Abort.SUCCEEDED

        with runner.scope:
            while True:
                coro, request = runner.job, runner.request
                runner.job = runner.request = None
                assert coro is not None
                assert request is not None
                try:
                    if runner.scope.cancel_called:
                        coro.close()  # cancelled before it started: it never runs
                    else:
                        await coro
                except Exception:  # the coroutine should catch its own: never kill the nursery
                    _logger.exception("Unhandled error in a request task")
                finally:
                    request._done = True
                if runner.scope.cancel_called or len(idle) >= _MAX_IDLE_RUNNERS:
                    return
                idle.append(runner)
                await trio.lowlevel.wait_task_rescheduled(abort)

    def spawn(self, fn: Callable[[Unpack[Ts]], Awaitable[object]], *args: Unpack[Ts]) -> _Task:
        task = _Task()
        name = getattr(fn, "__qualname__", None) or "hypercorn-task"
        self._start_soon(self._run_task, task, fn, args, name=name)
        return task

    @staticmethod
    async def _run_task(
        task: _Task, fn: Callable[..., Awaitable[object]], args: tuple[Any, ...]
    ) -> None:
        try:
            with task.scope:
                if not task.scope.cancel_called:
                    await fn(*args)
        except Exception:
            _logger.exception("Unhandled error in a worker task")
        finally:
            task._done = True

    # -- time, threads, signals ----------------------------------------------------------------

    def call_at(self, deadline: float, fn: Callable[[], object]) -> _Timer:
        if not self._timers_started:
            self._timers_started = True
            self._start_soon(self._timers.run, name="hypercorn-timers")
        return self._timers.add(deadline, fn)

    def call_soon(self, fn: Callable[[], object]) -> None:
        self.call_at(-math.inf, fn)

    def call_soon_threadsafe(self, fn: Callable[[], object]) -> None:
        with contextlib.suppress(trio.RunFinishedError):  # the loop is gone: nobody to tell
            self._token.run_sync_soon(_call_logged, fn)

    async def sleep(self, seconds: float) -> None:
        await trio.sleep(seconds)

    async def wait_event(self, event: AsyncEvent, timeout: float | None) -> bool:  # noqa: ASYNC109
        if timeout is None:
            await event.wait()
            return True
        with trio.move_on_after(timeout):
            await event.wait()
        return event.is_set()

    async def run_sync(self, fn: Callable[[Unpack[Ts]], T], *args: Unpack[Ts]) -> T:
        # abandon_on_cancel: a cancelled caller returns at once and the thread runs on (as the
        # contract says). trio runs the thread in a copy of the caller's context.
        return await trio.to_thread.run_sync(
            fn, *args, abandon_on_cancel=True, limiter=self._limiter
        )

    def add_signal_handler(self, signum: int, fn: Callable[[], object]) -> None:
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("signal handlers can only be installed from the main thread")
        token = self._token

        def handler(_signum: int, _frame: object) -> None:
            with contextlib.suppress(trio.RunFinishedError):  # only queue the call
                token.run_sync_soon(_call_logged, fn)

        previous = signal.signal(signum, handler)
        self._signals.setdefault(signum, previous)

    def remove_signal_handler(self, signum: int) -> None:
        if signum in self._signals:
            previous = self._signals.pop(signum)
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)

    # -- accepting -----------------------------------------------------------------------------

    async def open_datagrams(
        self, sock: socket.socket, on_datagrams: OnDatagrams
    ) -> DatagramSocket:
        return open_datagrams(self, sock, on_datagrams)

    async def serve(
        self,
        listeners: Sequence[Listener],
        on_connection: OnConnection,
        stop: AsyncEvent,
        options: ServeOptions,
    ) -> None:
        acceptor = Acceptor(self, on_connection, options)
        async with trio.open_nursery() as nursery:
            for listener in listeners:
                nursery.start_soon(acceptor.accept_loop, listener)
            await stop.wait()
            nursery.cancel_scope.cancel()
        # A socket accepted just before the stop may still be in its TLS handshake: let it
        # reach on_connection, or the caller's graceful shutdown would not see it.
        await acceptor.settle()


async def _wait_readable(sock: socket.socket, deadline: float) -> None:
    with trio.fail_at(deadline):
        await trio.lowlevel.wait_readable(sock)


class Acceptor:
    """The accept loops of one ``serve()`` call: max_connections, EMFILE back-off, TLS."""

    def __init__(
        self, backend: TrioBackend, on_connection: OnConnection, options: ServeOptions
    ) -> None:
        self._backend = backend
        self._on_connection = on_connection
        self._options = options
        self._open = 0
        self._slot_free: trio.Event | None = None
        self._exhaustion = ExhaustionLog()
        self._handshakes = 0
        self._settled: trio.Event | None = None

    def lost(self) -> None:
        self._open -= 1
        if self._slot_free is not None:
            self._slot_free.set()
            self._slot_free = None

    async def settle(self) -> None:
        """Wait for the TLS handshakes and PROXY header reads in flight (each bounded by
        ``ssl_handshake_timeout`` or the header's timeout)."""
        while self._handshakes:
            self._settled = trio.Event()
            await self._settled.wait()

    async def accept_loop(self, listener: Listener) -> None:
        sock = listener.sock
        sock.setblocking(False)
        limit = self._options.max_connections
        while True:
            await trio.lowlevel.wait_readable(sock)
            for _ in range(_ACCEPT_BATCH):
                while limit is not None and self._open >= limit:
                    self._slot_free = trio.Event()
                    await self._slot_free.wait()
                try:
                    conn, _addr = sock.accept()
                except (BlockingIOError, InterruptedError):
                    break
                except OSError as exc:
                    if exc.errno in ACCEPT_EXHAUSTION:
                        self._exhaustion.report(trio.current_time(), exc)
                        await trio.sleep(EXHAUSTION_BACKOFF)
                    break  # (else ECONNABORTED and friends: that one connection is gone)
                self._open += 1
                self._connect(conn, listener.ssl_context)
            else:
                await trio.lowlevel.checkpoint()  # a full batch: let the connections run

    def _connect(self, conn: socket.socket, ssl_context: ssl.SSLContext | None) -> None:
        conn.setblocking(False)
        try:
            if conn.family == getattr(socket, "AF_UNIX", None):
                client = None
                server: tuple[str, int | None] | None = (str(conn.getsockname()), None)
            else:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                client = peer_address(conn.getpeername())
                server = peer_address(conn.getsockname())
        except OSError:  # reset before we looked at it
            conn.close()
            self.lost()
            return
        backend = self._backend
        if self._options.proxy is not None:
            self._handshakes += 1
            backend._start_soon(
                self._proxied, conn, ssl_context, client, server, name="hypercorn-proxied"
            )
        elif ssl_context is not None:
            self._handshakes += 1
            backend._start_soon(self._tls, conn, ssl_context, client, server, name="hypercorn-tls")
        else:
            transport = self._plain(conn, client, server)
            if transport is not None:
                backend._start_soon(transport.run, name="hypercorn-connection")

    def _plain(
        self,
        conn: socket.socket,
        client: tuple[str, int] | None,
        server: tuple[str, int | None] | None,
    ) -> _SocketTransport | None:
        transport = _SocketTransport(
            self._backend, conn, ConnectionInfo(client=client, server=server), self._options, self
        )
        if self._hand_on(transport):
            return transport
        conn.close()
        self.lost()
        return None

    async def _proxied(
        self,
        conn: socket.socket,
        ssl_context: ssl.SSLContext | None,
        client: tuple[str, int] | None,
        server: tuple[str, int | None] | None,
    ) -> None:
        """Read the PROXY header, then go on as a TLS or plain connection."""
        proxy = self._options.proxy
        assert proxy is not None
        header = None
        try:
            deadline = trio.current_time() + proxy.timeout
            with map_exceptions(EXCEPTIONS):
                header = await read_proxy_header(conn, proxy, _wait_readable, deadline)
        except ProxyHeaderError as exc:
            _logger.debug("Connection refused: %s", exc)
            close_refused(conn)
        except (TransportClosed, TransportTimeout) as exc:
            _logger.debug("Connection failed during setup: %s", exc)
            conn.close()
        except BaseException:  # cancelled: the worker is going away
            conn.close()
            self.lost()
            self._handshake_done()
            raise
        if header is None:
            self.lost()
            self._handshake_done()
            return
        if header.client is not None:
            client, server = header.client, header.server
        if ssl_context is not None:
            await self._tls(conn, ssl_context, client, server)  # (it counts the handshake off)
            return
        self._handshake_done()
        transport = self._plain(conn, client, server)
        if transport is not None:
            await transport.run()

    def _handshake_done(self) -> None:
        self._handshakes -= 1
        if not self._handshakes and self._settled is not None:
            self._settled.set()

    def _hand_on(self, transport: _Transport) -> bool:
        try:
            transport._handler = self._on_connection(transport)
        except Exception:
            _logger.exception("Error setting up a connection")
            return False
        return True

    async def _tls(
        self,
        conn: socket.socket,
        ssl_context: ssl.SSLContext,
        client: tuple[str, int] | None,
        server: tuple[str, int | None] | None,
    ) -> None:
        stream = trio.SSLStream(
            trio.SocketStream(trio.socket.from_stdlib_socket(conn)),
            ssl_context,
            server_side=True,
            https_compatible=True,  # a peer's missing close_notify is a plain EOF
        )
        transport: _TLSTransport | None = None
        try:
            try:
                timeout = self._options.ssl_handshake_timeout
                with map_exceptions(EXCEPTIONS), trio.fail_after(timeout):
                    await stream.do_handshake()
            except (TransportClosed, TransportTimeout) as exc:
                _logger.debug("Connection failed during setup: %s", exc)
            else:
                info = tls_connection_info(stream, client, server)
                transport = _TLSTransport(self._backend, stream, info, self._options, self)
                if not self._hand_on(transport):
                    transport = None
        except BaseException:  # cancelled: the worker is going away
            stream.transport_stream.socket.close()
            self.lost()
            raise
        finally:
            self._handshake_done()
        if transport is None:
            stream.transport_stream.socket.close()
            self.lost()
            return
        await transport.run()


def _call_logged(fn: Callable[[], object]) -> None:
    try:
        fn()
    except Exception:  # one escaping here would end trio.run
        _logger.exception("Error in a callback")


@contextlib.asynccontextmanager
async def open_backend() -> AsyncIterator[TrioBackend]:
    """A ``TrioBackend`` whose tasks live in a nursery that is cancelled on exit.

    An exception from the body comes out as itself, not wrapped in an exception group (as
    trio's nursery would): callers tell ``BootError`` from ``AppLoadError`` by type.
    """
    error: BaseException | None = None
    async with trio.open_nursery() as nursery:
        backend = TrioBackend(nursery)
        token = _CURRENT.set(backend)
        try:
            yield backend
        except BaseException as exc:
            error = exc
        finally:
            _CURRENT.reset(token)
            nursery.cancel_scope.cancel()
    if error is not None:
        raise error


def current() -> TrioBackend:
    """The backend of the running ``open_backend``, else one that spawns system tasks."""
    backend = _CURRENT.get(None)
    return backend if backend is not None else TrioBackend()


def run(main: Callable[[Any], Awaitable[T]]) -> T:
    """Run ``main(backend)`` in a new ``trio.run``."""

    async def _main() -> T:
        async with open_backend() as backend:
            return await main(backend)

    return trio.run(_main)
