"""The whole per-loop contract: everything above this file is written once.

A *backend* adapts one event loop (asyncio, uvloop, trio) to the small vocabulary below. The
connection driver, lifespan, the WSGI bridge and ``serve()`` are written against these
Protocols only, so they never import ``asyncio`` or ``trio`` (``tests/test_layering.py``
enforces that). Every backend passes the same conformance suite,
``tests/workers/test_backend_conformance.py``.

Vocabulary
----------
``Backend``
    The loop-wide services: the monotonic clock, events, tasks, timers, threads, signals and
    the accept loop.
``Transport``
    One accepted connection as seen from above: non-blocking ``write``, ``drain`` for
    back-pressure, reading flow control and closing. Data flows *up* through a
    ``ConnectionHandler`` (implemented by the driver) whose methods the backend calls
    synchronously from the loop (``asyncio.Protocol.data_received`` on asyncio, a reader task
    on trio).
``TransportClosed`` / ``TransportTimeout``
    The only two exceptions the code above sees from a transport. Backends translate their
    native errors (``ConnectionResetError``, ``BrokenPipeError``, ``ssl.SSLError``,
    ``trio.BrokenResourceError``, ...) with ``map_exceptions`` and one table each (httpcore's
    idea); the native exception is kept as ``__cause__``.

Threading: every method here must be called from the loop's thread, except
``Backend.call_soon_threadsafe``.

Cancellation: ``TaskHandle.cancel()`` raises the loop's cancellation exception
(``asyncio.CancelledError`` / ``trio.Cancelled``) inside the task at its current ``await``.
Both derive from ``BaseException``, so code above that catches ``Exception`` (for example
around an ASGI app) never swallows a cancellation by accident.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
import struct
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, Protocol, TypeVar

if TYPE_CHECKING:
    import ssl

    from typing_extensions import TypeVarTuple, Unpack

    from hypercorn.protocols.proxy import ProxyPolicy

    Ts = TypeVarTuple("Ts")

T = TypeVar("T")

_logger = logging.getLogger("hypercorn.error")

BackendName = Literal["asyncio", "uvloop", "trio"]


class TransportClosed(Exception):
    """The connection is gone: the peer reset or closed it, or we closed it ourselves.

    Raised by ``Transport.drain`` when the connection is lost while (or before) waiting. The
    backend's native exception, if any, is ``__cause__``.
    """


class TransportTimeout(Exception):
    """A transport-level operation exceeded its deadline (for example the TLS handshake)."""


ExceptionMapping = Mapping[type[BaseException], type[Exception]]


@contextlib.contextmanager
def map_exceptions(mapping: ExceptionMapping) -> Iterator[None]:
    """Translate native exceptions into the contract's vocabulary.

    The first entry in ``mapping`` whose key matches (``isinstance``) wins, so put subclasses
    before their bases. Exceptions that match nothing propagate unchanged, as do
    ``BaseException``s that are not ``Exception``s (cancellation, ``KeyboardInterrupt``).
    """
    try:
        yield
    except Exception as exc:
        for native, ours in mapping.items():
            if isinstance(exc, native):
                raise ours(str(exc) or type(exc).__name__) from exc
        raise


# Not frozen, though never changed once built: one is built per connection, and a frozen
# dataclass sets each field through ``object.__setattr__`` (10k instructions per instance on
# 3.11, against 1k).
@dataclass(slots=True, kw_only=True)
class ConnectionInfo:
    """Facts about a connection fixed when it is accepted (after the TLS handshake, if any).
    Read-only by convention: nothing changes one after it is built.

    ``client`` / ``server`` use the ASGI scope's shapes: ``(host, port)`` for TCP. For a Unix
    socket ``client`` is ``None`` and ``server`` is ``(path, None)`` (upstream Hypercorn's
    shape).
    """

    client: tuple[str, int] | None
    server: tuple[str, int | None] | None
    #: True when the connection is TLS (scheme "https"/"wss").
    ssl: bool = False
    #: The ALPN protocol the TLS handshake selected ("h2", "http/1.1") or None.
    alpn_protocol: str | None = None
    #: The contents of the ASGI ``tls`` scope extension (``server_cert``,
    #: ``client_cert_chain``, ``tls_version``, ``cipher_suite``) or None without TLS.
    tls: Mapping[str, Any] | None = None


#: ``TCP_INFO`` (Linux), and where ``struct tcp_info`` keeps ``tcpi_bytes_acked`` (Linux 4.1+).
_TCP_INFO: int | None = getattr(socket, "TCP_INFO", None)
_BYTES_ACKED = struct.Struct("=Q")
_BYTES_ACKED_AT = 120
_TCP_INFO_SIZE = _BYTES_ACKED_AT + _BYTES_ACKED.size


def tcp_bytes_acked(sock: Any) -> int | None:
    """The bytes of ours the TCP peer acknowledged so far (Linux), or None where the kernel
    does not say (another system, a Unix socket, a closed socket). ``sock`` is a socket or
    anything with its ``getsockopt`` (asyncio's ``TransportSocket``, uvloop's)."""
    if _TCP_INFO is None or sock is None:
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, _TCP_INFO_SIZE)
    except OSError:
        return None
    if len(info) < _TCP_INFO_SIZE:
        return None
    acked: int = _BYTES_ACKED.unpack_from(info, _BYTES_ACKED_AT)[0]
    return acked


def peer_address(addr: Any) -> tuple[str, int] | None:
    """An ``(host, port)`` from a socket address, None for anything else (Unix sockets)."""
    if isinstance(addr, tuple) and len(addr) >= 2:
        return (str(addr[0]), int(addr[1]))
    return None


_TLS_VERSIONS = {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304, "TLSv1.1": 0x0302, "TLSv1": 0x0301}


def tls_connection_info(
    tls: Any, client: tuple[str, int] | None, server: tuple[str, int | None] | None
) -> ConnectionInfo:
    """``ConnectionInfo`` for a finished TLS handshake; ``tls`` is an ``ssl.SSLObject`` or
    anything with its ``selected_alpn_protocol()`` and ``version()`` (``trio.SSLStream``)."""
    return ConnectionInfo(
        client=client,
        server=server,
        ssl=True,
        alpn_protocol=tls.selected_alpn_protocol(),
        tls={
            "server_cert": None,
            "client_cert_chain": [],
            "client_cert_name": None,
            "client_cert_error": None,
            "tls_version": _TLS_VERSIONS.get(tls.version() or ""),
            "cipher_suite": None,
        },
    )


#: ``accept()`` errors meaning the process or the machine ran out of something: the accept
#: loop backs off for ``EXHAUSTION_BACKOFF`` seconds and tries again, never ends.
ACCEPT_EXHAUSTION = frozenset((errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM))
EXHAUSTION_BACKOFF = 0.1


def joined_writelines(write: Callable[[bytes], None]) -> Callable[[Sequence[bytes]], None]:
    """``Transport.raw_writelines`` for a transport without a vectored write."""

    def writelines(parts: Sequence[bytes]) -> None:
        write(b"".join(parts))

    return writelines


def each_written(write: Callable[[bytes], None]) -> Callable[[Sequence[bytes]], None]:
    """``Transport.raw_writelines`` as one ``write`` per buffer: nothing copied, and each
    ``write`` does whatever its transport does per write (checks its high-water mark)."""

    def writelines(parts: Sequence[bytes]) -> None:
        for part in parts:
            write(part)

    return writelines


class ExhaustionLog:
    """Says that accepting ran out of resources, at most once a second (no traceback)."""

    def __init__(self) -> None:
        self._last = float("-inf")

    def report(self, now: float, exc: OSError) -> None:
        if now - self._last >= 1.0:
            self._last = now
            _logger.error("Out of resources accepting connections (%s); backing off", exc.strerror)


class ConnectionHandler(Protocol):
    """The receiving side of one connection; implemented by the driver, called by the backend.

    Every method is called synchronously from the loop, never concurrently, and in this order:
    any number of ``data_received`` / ``write_paused`` / ``write_resumed``, then at most one
    ``eof_received``, then exactly one ``connection_lost`` (also after ``Transport.close()`` or
    ``abort()`` initiated by us). None of them may block or raise: an exception escaping
    them is a bug, and the backend aborts the connection and logs it.
    """

    def data_received(self, data: bytes) -> None:
        """Bytes arrived, in order. ``data`` is never empty."""

    def eof_received(self) -> None:
        """The peer closed its sending side (TCP FIN, TLS close_notify). No more data follows.

        The transport stays open for writing until ``close()``; over TLS a backend may close it
        right after this call.
        """

    def connection_lost(self) -> None:
        """The connection is closed for good: writes are now dropped and ``drain`` raises."""

    def write_paused(self) -> None:
        """The write buffer went above the high-water mark (the peer is not reading)."""

    def write_resumed(self) -> None:
        """The write buffer drained below the low-water mark."""


class Transport(Protocol):
    """One connection, as seen by the driver. Created by the backend, handed to ``on_connection``.

    Buffering: ``write`` never blocks and never raises; it appends to an unbounded buffer that
    the backend flushes as the socket allows. Back-pressure is cooperative: when the buffer is
    above the high-water mark ``writing_paused`` is True and ``drain()`` waits until it falls
    below the low-water mark. Producers (the ASGI ``send``) check ``writing_paused`` first and
    only ``await drain()`` when it is True, which keeps the common case free of awaits.

    Closing: ``close()`` flushes what is buffered, then closes; ``abort()`` drops the buffer and
    closes at once (used for a peer that stopped reading). Both are idempotent and safe after
    the peer went away; after either, ``write`` silently drops data and no more data reaches
    the handler. After ``close()`` a backend must not reset a peer that is still sending
    (the kernel does when a socket closes with input unread, which can destroy the last
    response): it shuts its write side once flushed, reports ``connection_lost``, and discards
    input for a bounded while (a lingering close; over TLS, asyncio's TLS shutdown does it).
    ``close(linger=False)`` skips the lingering: the socket closes once flushed. Only for a
    peer that said it sends nothing more and whose every byte was read (RFC 9112 9.6: a
    request with ``Connection: close``, read whole), where nothing can arrive to be reset.
    """

    @property
    def info(self) -> ConnectionInfo:
        """Addresses and TLS facts, fixed at accept time."""

    @property
    def writing_paused(self) -> bool:
        """True while the write buffer is above the high-water mark."""

    @property
    def is_closing(self) -> bool:
        """True once ``close``/``abort`` was called or the connection was lost."""

    @property
    def write_buffer_size(self) -> int:
        """Bytes written and not yet handed to the kernel, as far as the backend sees
        (asyncio's TLS layer hands its backlog to a TCP transport whose buffer it does not
        count), counted after ``close()`` too while they flush; 0 once aborted."""

    @property
    def write_progress(self) -> int:
        """A count that grows whenever the peer takes bytes we wrote, only ever compared with
        itself: ``tcp_bytes_acked`` where the kernel tells (it sees through every buffer on
        the way), else ``-write_buffer_size`` (which must then fall in steps much smaller
        than a large response: a backend sending in pieces counts each piece). The driver
        samples it for ``write_timeout``, time without progress (``write_watch.py``)."""

    def write(self, data: bytes) -> None:
        """Queue ``data`` for sending. Never blocks; dropped silently once closing."""

    @property
    def raw_write(self) -> Callable[[bytes], None]:
        """``write`` for a caller that never writes after ``close()``, ``abort()`` or the
        connection's loss (the driver's protocol core): it may skip the closing check, which
        saves a call per write on the hot path. Backends without a cheaper one give
        ``write``."""

    @property
    def raw_writelines(self) -> Callable[[Sequence[bytes]], None]:
        """``raw_write`` of several buffers at once, in order, as one write: vectored where
        the loop has it (uvloop's ``writelines`` is one ``writev``, nothing copied), else
        ``joined_writelines(raw_write)``. For a large body with a small frame header
        around it, which joining would copy."""

    async def drain(self) -> None:
        """Wait until the write buffer is below the low-water mark.

        Returns at once when it already is. Raises ``TransportClosed`` if the connection is
        lost before or while waiting. Safe to call from several tasks at once.
        """

    def pause_reading(self) -> None:
        """Stop calling ``data_received`` until ``resume_reading``. Idempotent."""

    def resume_reading(self) -> None:
        """Undo ``pause_reading``. Idempotent."""

    def close(self, *, linger: bool = True) -> None:
        """Flush the write buffer, then close; ``linger=False``: without lingering (see the
        class docstring). Idempotent (the first call decides)."""

    def abort(self) -> None:
        """Close now, discarding the write buffer. Idempotent."""


class AsyncEvent(Protocol):
    """A one-shot event (trio semantics: once set it stays set; there is no ``clear``)."""

    def set(self) -> None:
        """Wake every waiter, now and in future. Idempotent."""

    def is_set(self) -> bool: ...

    async def wait(self) -> object:
        """Return once the event is set (immediately if it already is)."""


class TaskHandle(Protocol):
    """A task started with ``Backend.spawn``."""

    def cancel(self) -> object:
        """Ask the task to stop: it sees the loop's cancellation at its current ``await``.
        Idempotent; a no-op once the task is done."""

    def done(self) -> bool: ...


class TimerHandle(Protocol):
    """A callback scheduled with ``Backend.call_at``."""

    def cancel(self) -> object:
        """Stop the callback from running. Idempotent; a no-op once it ran."""


@dataclass(frozen=True, slots=True)
class Listener:
    """A listening stream socket (TCP or Unix) and the TLS context for its connections."""

    sock: socket.socket
    ssl_context: ssl.SSLContext | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ServeOptions:
    """Accept-loop settings, taken from Config by ``serve()``."""

    #: Stop accepting while this many connections are open (None: no limit). Pending
    #: connections wait in the kernel backlog and are accepted as others close.
    max_connections: int | None = None
    #: Seconds a TLS handshake may take before the connection is dropped.
    ssl_handshake_timeout: float = 60.0
    #: Write-buffer marks for ``Transport.writing_paused`` (bytes).
    write_high_water: int = 64 * 1024
    write_low_water: int = 16 * 1024
    #: Every stream connection starts with a PROXY header from these sources (None: no
    #: header). The backend reads it with ``proxy_header.read_proxy_header`` before the TLS
    #: handshake and puts its addresses in ``ConnectionInfo``.
    proxy: ProxyPolicy | None = None


class TaskStarter(NamedTuple):
    """``Backend.task_starter()``: the per-request variant of ``spawn``, as cheap as the loop
    allows (it runs once per request).

    ``start(coro)`` runs the coroutine as if in a task of its own: concurrently with the
    caller, in a fresh copy of the caller's context, stopped alone by the handle's
    ``cancel`` (the coroutine never runs if cancelled before it started, unless it is
    ``eager``). Whether that is a new task is the backend's business: on asyncio it is (an
    ``asyncio.Task`` made by a C-level callable), trio reuses parked tasks (a new trio task
    and cancel scope per request would cost more). The caller keeps the handle (the loop may
    not), and the coroutine must catch its own exceptions: none is logged here.
    """

    start: Callable[[Coroutine[Any, Any, object]], TaskHandle]
    #: The coroutine may run up to its first suspension before ``start`` returns (a task
    #: factory installed on the asyncio loop, which may start eagerly); never on trio.
    eager: bool


#: Builds the handler for a freshly accepted connection; called synchronously by the backend.
OnConnection = Callable[[Transport], ConnectionHandler]


class DatagramHandler(Protocol):
    """The receiving side of a UDP socket (QUIC); implemented above the backend.

    ``datagram_received`` is called synchronously from the loop, once per datagram, in
    arrival order; it must not block or raise (an exception is logged and the datagram
    lost). ``addr`` is the sender's address as the socket gives it.
    """

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None: ...


class DatagramTransport(Protocol):
    """One bound UDP socket, as seen from above. Created by ``Backend.open_datagrams``.

    ``sendto`` never blocks and never raises: a datagram the kernel cannot take yet is
    queued; when the queue passes the high-water mark ``writing_paused`` is True and
    ``drain()`` waits for it to empty (producers check the flag first, as with
    ``Transport``). Errors sending to one peer (ICMP unreachable, a bad address) drop that
    datagram only. ``close()`` stops reading and drops what is queued; it is idempotent and
    closes the backend's copy of the socket.
    """

    @property
    def local_address(self) -> tuple[Any, ...]: ...

    @property
    def writing_paused(self) -> bool: ...

    def sendto(self, data: bytes, addr: tuple[Any, ...]) -> None: ...

    async def drain(self) -> None:
        """Wait until the send queue is empty; returns at once when closed."""

    def close(self) -> None: ...


#: Builds the handler for a UDP socket; called synchronously by ``open_datagrams``.
OnDatagrams = Callable[[DatagramTransport], DatagramHandler]


class DatagramSocket:
    """The loop-independent part of a ``DatagramTransport`` (both backends use it): a
    non-blocking UDP socket read and written directly, with a send queue.

    The backend calls ``read_ready`` when the socket is readable and ``write_ready`` when
    it is writable while ``wants_write``; ``wake_writer`` (the backend's) is called when the
    queue starts, and ``on_close`` when the transport closes.
    """

    #: Datagrams read in a row before the loop gets a turn.
    READ_BATCH = 64
    #: Datagrams queued before ``writing_paused`` (the kernel's buffer is full).
    QUEUE_HIGH_WATER = 1024

    def __init__(
        self,
        sock: socket.socket,
        on_datagrams: OnDatagrams,
        *,
        event: Callable[[], AsyncEvent],
        wake_writer: Callable[[], object],
        on_close: Callable[[], object],
    ) -> None:
        sock.setblocking(False)
        self.sock = sock
        self._event = event
        self._wake_writer = wake_writer
        self._on_close = on_close
        self._queue: deque[tuple[bytes, tuple[Any, ...]]] = deque()
        self._drained: AsyncEvent | None = None
        self.writing_paused = False
        self.closed = False
        self.local_address: tuple[Any, ...] = sock.getsockname()
        self._handler = on_datagrams(self)

    @property
    def wants_write(self) -> bool:
        return bool(self._queue)

    def sendto(self, data: bytes, addr: tuple[Any, ...]) -> None:
        if self.closed:
            return
        queue = self._queue
        if not queue:
            try:
                self.sock.sendto(data, addr)
                return
            except (BlockingIOError, InterruptedError):
                self._wake_writer()
            except OSError as exc:  # (that peer only: unreachable, bad address)
                _logger.debug("UDP send to %s failed: %s", addr, exc)
                return
        queue.append((data, addr))
        if len(queue) >= self.QUEUE_HIGH_WATER:
            self.writing_paused = True

    def write_ready(self) -> None:
        queue = self._queue
        sendto = self.sock.sendto
        while queue:
            data, addr = queue[0]
            try:
                sendto(data, addr)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                _logger.debug("UDP send to %s failed: %s", addr, exc)
            queue.popleft()
        self.writing_paused = False
        drained = self._drained
        if drained is not None:
            self._drained = None
            drained.set()

    async def drain(self) -> None:
        if not self._queue or self.closed:
            return
        drained = self._drained
        if drained is None:
            drained = self._drained = self._event()
        await drained.wait()

    def read_ready(self) -> None:
        recvfrom = self.sock.recvfrom
        received = self._handler.datagram_received
        for _ in range(self.READ_BATCH):
            try:
                data, addr = recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # (an ICMP error for an earlier send: nothing to read)
                _logger.debug("UDP receive failed: %s", exc)
                continue
            try:
                received(data, addr)
            except Exception:
                _logger.exception("Error handling a datagram")

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._queue.clear()
        self.writing_paused = False
        self._on_close()
        self.sock.close()
        drained = self._drained
        if drained is not None:
            self._drained = None
            drained.set()


class Backend(Protocol):
    """The loop-wide services. One instance per running event loop.

    Time: ``now()`` is the loop's monotonic clock, in seconds; every deadline passed to
    ``call_at`` and to the protocol core uses it.

    Tasks: ``spawn`` starts a task in the worker-wide group and returns immediately. ``fn``
    must handle its own exceptions: one that escapes is logged on ``hypercorn.error`` and
    otherwise ignored. Cancellation is not logged. ``task_starter`` gives the per-request
    variant without that bookkeeping.
    """

    @property
    def name(self) -> BackendName:
        """ "asyncio", "uvloop" or "trio"."""

    def now(self) -> float:
        """The loop's monotonic clock."""

    def event(self) -> AsyncEvent:
        """A new unset one-shot event."""

    def spawn(self, fn: Callable[[Unpack[Ts]], Awaitable[object]], *args: Unpack[Ts]) -> TaskHandle:
        """Start ``fn(*args)`` as a new task (see the class docstring)."""

    def task_starter(self) -> TaskStarter:
        """How per-request app coroutines start; fetched once per connection (see
        ``TaskStarter``)."""

    def call_at(self, deadline: float, fn: Callable[[], object]) -> TimerHandle:
        """Run ``fn()`` from the loop once ``now() >= deadline`` (at once if already due).

        Timers fire in deadline order; ``fn`` must not raise.
        """

    def call_soon(self, fn: Callable[[], object]) -> None:
        """Run ``fn()`` from the loop on its next iteration (same thread only)."""

    def call_soon_threadsafe(self, fn: Callable[[], object]) -> None:
        """Run ``fn()`` from the loop; the only method that may be called from other threads."""

    async def sleep(self, seconds: float) -> None: ...

    async def wait_event(self, event: AsyncEvent, timeout: float | None) -> bool:
        """Wait for ``event``; True if it is set, False if ``timeout`` seconds passed first."""

    async def run_sync(self, fn: Callable[[Unpack[Ts]], T], *args: Unpack[Ts]) -> T:
        """Run the blocking ``fn(*args)`` in the worker's thread pool and return its result.

        Exceptions from ``fn`` propagate. Cancelling the caller does not stop the thread.
        """

    def add_signal_handler(self, signum: int, fn: Callable[[], object]) -> None:
        """Run ``fn()`` from the loop (never inside the signal handler) when ``signum`` arrives.

        Main thread only. Replaces an earlier handler for the same signal.
        """

    def remove_signal_handler(self, signum: int) -> None:
        """Undo ``add_signal_handler``. Idempotent.

        asyncio restores the default disposition; trio the one the signal had before (the
        default, unless trio itself or the program had set one: trio's SIGINT handler).
        """

    async def open_datagrams(
        self, sock: socket.socket, on_datagrams: OnDatagrams
    ) -> DatagramTransport:
        """Start reading the bound UDP socket ``sock``: ``on_datagrams(transport)`` builds its
        handler, which then receives every datagram until ``transport.close()``. The socket
        now belongs to the transport (closing it closes the socket)."""

    async def serve(
        self,
        listeners: Sequence[Listener],
        on_connection: OnConnection,
        stop: AsyncEvent,
        options: ServeOptions,
    ) -> None:
        """Accept connections on every listener until ``stop`` is set, then stop accepting.

        For each accepted connection (after its TLS handshake, which must not block the
        accept loop) the backend builds a ``Transport`` and calls ``on_connection(transport)``
        once; the returned handler then receives that connection's data. Returns after the
        listeners stopped accepting and every connection accepted before that was handed to
        ``on_connection`` (or failed its handshake), so the caller's shutdown sees them all;
        connections stay open (the caller shuts them down). Listener sockets are not
        closed: they belong to the caller.

        Resource exhaustion while accepting (EMFILE/ENFILE/ENOBUFS/ENOMEM) never ends the
        loop: the backend logs it (at most about once a second), backs off briefly and tries
        again. A failed TLS handshake is logged at debug level and dropped.
        """
