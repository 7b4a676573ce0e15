"""The trio backend's connections: transports and the accept loop (see ``trio_backend.py``).

A plain TCP or Unix connection bypasses trio's stream layer. One task per connection waits
with ``trio.lowlevel.wait_readable`` and hands each ``recv`` to the driver's
``data_received``; ``write`` sends at once on the non-blocking socket, and only what the
kernel does not take waits in a buffer that a writer task (started on demand) flushes. A TLS
connection is a ``trio.SSLStream`` with a reader task and a writer task. Either way the socket
is closed through trio (``notify_closing``), which wakes every task waiting on it, and the
reader task then reports ``connection_lost``.
"""

from __future__ import annotations

import logging
import socket
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from hypercorn.protocols.proxy import ProxyHeaderError
from hypercorn.workers.backend import (
    ACCEPT_EXHAUSTION,
    EXHAUSTION_BACKOFF,
    ConnectionHandler,
    ConnectionInfo,
    ExceptionMapping,
    ExhaustionLog,
    Listener,
    OnConnection,
    ServeOptions,
    TransportClosed,
    TransportTimeout,
    map_exceptions,
    peer_address,
    tls_connection_info,
)
from hypercorn.workers.proxy_header import close_refused, read_proxy_header

if TYPE_CHECKING:
    from hypercorn.workers.trio_backend import TrioBackend

_logger = logging.getLogger("hypercorn.error")

#: Connections accepted in a row before the accept loop lets other tasks run.
_ACCEPT_BATCH = 64
_READ_SIZE = 256 * 1024
#: Seconds a closed connection keeps discarding what the peer still sends (see _Transport).
_LINGER = 2.0

EXCEPTIONS: ExceptionMapping = {
    trio.TooSlowError: TransportTimeout,
    TimeoutError: TransportTimeout,
    trio.BrokenResourceError: TransportClosed,
    trio.ClosedResourceError: TransportClosed,
    ssl.SSLError: TransportClosed,
    OSError: TransportClosed,
}
#: What a reader or writer task sees when its connection goes.
_GONE = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)


async def _wait_readable(sock: socket.socket, deadline: float) -> None:
    with trio.fail_at(deadline):
        await trio.lowlevel.wait_readable(sock)


class _Transport:
    """What the plain-socket and TLS transports share: state, flow control, closing, loss.

    Closing (``close``): the reader stops handing data to the handler and discards it; once
    every byte is written, the write side is shut (FIN), the handler hears
    ``connection_lost``, and the reader keeps discarding until the peer closes too or
    ``_LINGER`` seconds pass. Closing with unread input at once would make the kernel answer
    with a reset, which can destroy the last response (a GOAWAY, a ``Connection: close``
    answer) before the peer reads it (RFC 9112 9.6's lingering close; asyncio's TLS close
    gets the same from the TLS shutdown). ``abort`` closes the socket at once.
    """

    def __init__(
        self, backend: TrioBackend, info: ConnectionInfo, options: ServeOptions, acceptor: Acceptor
    ) -> None:
        self._backend = backend
        self._info = info
        self._high = options.write_high_water
        self._low = options.write_low_water
        self._acceptor = acceptor
        self._handler: ConnectionHandler | None = None
        self._buffer: list[bytes] = []
        #: Unsent bytes: those in ``_buffer`` and, on TLS, those being sent.
        self._buffered = 0
        self._closing = False
        #: The handler heard ``connection_lost``.
        self._lost = False
        #: Everything was written and the write side is shut: lingering.
        self._write_shut = False
        self._peer_eof = False
        self._reading_paused = False
        self._resume: trio.Event | None = None
        self._drained: trio.Event | None = None
        #: Set once the socket is closed.
        self._closed = trio.Event()
        #: The reader's main loop; cancelled when the write side is shut (see ``_linger``).
        self._reading: trio.CancelScope | None = None
        self.writing_paused = False
        self.raw_write: Callable[[bytes], None] = self.write

    @property
    def info(self) -> ConnectionInfo:
        return self._info

    @property
    def is_closing(self) -> bool:
        return self._closing

    def write(self, data: bytes) -> None:
        raise NotImplementedError

    async def drain(self) -> None:
        if self._closing:
            raise TransportClosed("connection closed")
        if not self.writing_paused:
            return
        if self._drained is None:
            self._drained = trio.Event()
        await self._drained.wait()
        if self._lost:
            raise TransportClosed("connection lost")

    def pause_reading(self) -> None:
        self._reading_paused = True

    def resume_reading(self) -> None:
        self._reading_paused = False
        self._wake_reader()

    def _wake_reader(self) -> None:
        if self._resume is not None:
            self._resume.set()
            self._resume = None

    def close(self) -> None:
        if not self._closing:
            self._closing = True
            self._wake_reader()  # (a paused reader starts discarding)
            if not self._buffered:
                self._finish_writes()
            # else: the writer calls _finish_writes once the buffer is flushed.

    def abort(self) -> None:
        self._closing = True
        self._buffer.clear()
        self._buffered = 0
        self._shut()

    def _finish_writes(self) -> None:
        """Everything is written after ``close``: shut the write side, then linger."""
        if self._closed.is_set() or self._write_shut:
            return
        if self._peer_eof:
            self._shut()  # (the peer closed its side already: nothing to linger for)
            return
        try:
            self._shutdown_write()
        except OSError:
            self._shut()
            return
        self._write_shut = True
        if self._reading is not None:
            self._reading.cancel()  # the reader reports the loss, then lingers

    def _shut(self) -> None:
        """Close the socket now and wake the reader wherever it waits."""
        self._close_socket()
        self._closed.set()
        self._wake_reader()

    def _shutdown_write(self) -> None:
        raise NotImplementedError

    def _close_socket(self) -> None:
        """Close the socket through trio, waking tasks blocked on it. Idempotent."""
        raise NotImplementedError

    async def _receive(self) -> bytes | bytearray:
        """The next bytes from the peer, b"" at EOF (raises one of ``_GONE``)."""
        raise NotImplementedError

    def _buffered_more(self) -> None:
        if not self.writing_paused and self._buffered > self._high:
            self.writing_paused = True
            self._call("write_paused")

    def _flushed_some(self) -> None:
        if self.writing_paused and self._buffered <= self._low:
            self.writing_paused = False
            if self._drained is not None:
                self._drained.set()
                self._drained = None
            self._call("write_resumed")

    def _call(self, method: str, *args: object) -> None:
        """Call a handler method; one that raises is a bug: log it and drop the connection."""
        if self._handler is not None:
            try:
                getattr(self._handler, method)(*args)
            except Exception:
                _logger.exception("Error in the connection handler (%s)", method)
                self.abort()

    async def _wait_resumed(self) -> None:
        self._resume = trio.Event()
        await self._resume.wait()

    async def _eof(self) -> bool:
        """The peer closed its side: tell the handler (unless closing) and wait for our side
        to close. False: stop reading."""
        self._peer_eof = True
        if not self._closing:
            self._call("eof_received")
        if self._write_shut:
            return False
        await self._closed.wait()  # (close() or abort() ends it: see _finish_writes)
        return False

    async def _stalled(self) -> bool:
        """In the main loop while closing or paused; False: stop reading."""
        if not self._closing:
            await self._wait_resumed()
            return True
        if self._closed.is_set():
            return False
        data = await self._receive()  # discarded: the handler is done with input
        return bool(data) or await self._eof()

    async def _linger(self) -> None:
        """After the write side is shut: tell the handler, discard input for a while."""
        self._report_lost()
        with trio.move_on_after(_LINGER):
            while not self._closed.is_set() and await self._receive():
                pass

    def _report_lost(self) -> None:
        if self._lost:
            return
        self._lost = True
        if self._drained is not None:
            self._drained.set()
            self._drained = None
        handler, self._handler = self._handler, None
        if handler is not None:
            try:
                handler.connection_lost()
            except Exception:
                _logger.exception("Error in the connection handler (connection_lost)")

    def _end(self) -> None:
        """The end of the reader task: the connection is gone for good."""
        self._closing = True
        self._buffer.clear()
        self._buffered = 0
        self._shut()
        self._report_lost()
        self._acceptor.lost()


class _SocketTransport(_Transport):
    """A plain TCP or Unix connection, driven straight from its non-blocking socket."""

    def __init__(
        self,
        backend: TrioBackend,
        sock: socket.socket,
        info: ConnectionInfo,
        options: ServeOptions,
        acceptor: Acceptor,
    ) -> None:
        super().__init__(backend, info, options, acceptor)
        self._sock = sock
        self._send = sock.send
        self._writing = False

    def write(self, data: bytes) -> None:
        if self._closing:
            return
        if self._buffer:
            self._buffer.append(data)
            self._buffered += len(data)
            self._buffered_more()
            return
        try:
            sent = self._send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self.abort()  # the reader task sees the closed socket and reports the loss
            return
        if sent < len(data):
            self._buffer.append(data[sent:])
            self._buffered = len(data) - sent
            if not self._writing:
                self._writing = True
                self._backend._start_soon(self._flush, name="hypercorn-writer")
            self._buffered_more()

    async def _flush(self) -> None:
        sock = self._sock
        buffer = self._buffer
        try:
            while buffer:
                await trio.lowlevel.wait_writable(sock)
                data = buffer[0] if len(buffer) == 1 else b"".join(buffer)
                try:
                    sent = sock.send(data)
                except (BlockingIOError, InterruptedError):
                    continue
                buffer.clear()
                if sent < len(data):
                    buffer.append(data[sent:])
                self._buffered -= sent
                self._flushed_some()
        except _GONE:
            self.abort()
            return
        finally:
            self._writing = False
        if self._closing:
            self._finish_writes()

    def _shutdown_write(self) -> None:
        self._sock.shutdown(socket.SHUT_WR)

    def _close_socket(self) -> None:
        sock = self._sock
        if sock.fileno() != -1:
            trio.lowlevel.notify_closing(sock)
            sock.close()

    async def _receive(self) -> bytes | bytearray:
        while True:
            if self._sock.fileno() == -1:
                raise trio.ClosedResourceError("the socket is closed")
            await trio.lowlevel.wait_readable(self._sock)
            try:
                return self._sock.recv(_READ_SIZE)
            except (BlockingIOError, InterruptedError):
                continue

    async def run(self) -> None:
        """The connection's task: read until the connection is gone, then report it lost."""
        sock = self._sock
        recv = sock.recv
        wait_readable = trio.lowlevel.wait_readable
        assert self._handler is not None
        data_received = self._handler.data_received
        try:
            with trio.CancelScope() as self._reading:
                while not self._write_shut:
                    if self._closing or self._reading_paused:
                        if not await self._stalled():
                            break
                        continue
                    await wait_readable(sock)
                    # (mypy narrows the flags across the await, but other tasks may set them.)
                    if self._closing or self._reading_paused:
                        continue  # type: ignore[unreachable]
                    try:
                        data = recv(_READ_SIZE)
                    except (BlockingIOError, InterruptedError):
                        continue
                    if not data:
                        await self._eof()
                        break
                    try:
                        data_received(data)
                    except Exception:
                        _logger.exception("Error in the connection handler (data_received)")
                        self.abort()
            if self._write_shut:
                await self._linger()
        except _GONE:
            pass
        finally:
            self._end()


class _TLSTransport(_Transport):
    """A TLS connection over ``trio.SSLStream``: a reader task and a writer task."""

    def __init__(
        self,
        backend: TrioBackend,
        stream: trio.SSLStream[trio.SocketStream],
        info: ConnectionInfo,
        options: ServeOptions,
        acceptor: Acceptor,
    ) -> None:
        super().__init__(backend, info, options, acceptor)
        self._stream = stream
        self._wake: trio.Event | None = None

    def write(self, data: bytes) -> None:
        if self._closing:
            return
        self._buffer.append(data)
        self._buffered += len(data)
        self._wake_writer()
        self._buffered_more()

    def close(self) -> None:
        super().close()
        self._wake_writer()

    def _wake_writer(self) -> None:
        if self._wake is not None:
            self._wake.set()
            self._wake = None

    def _shutdown_write(self) -> None:
        self._stream.transport_stream.socket.shutdown(socket.SHUT_WR)

    def _close_socket(self) -> None:
        self._stream.transport_stream.socket.close()  # (trio's close notifies waiters)
        self._wake_writer()

    async def _receive(self) -> bytes | bytearray:
        return await self._stream.receive_some(_READ_SIZE)

    async def _write_loop(self) -> None:
        buffer = self._buffer
        try:
            while not self._closed.is_set():
                if not buffer:
                    if self._closing:
                        self._finish_writes()
                        return
                    self._wake = trio.Event()
                    await self._wake.wait()
                    continue
                data = buffer[0] if len(buffer) == 1 else b"".join(buffer)
                buffer.clear()
                await self._stream.send_all(data)
                # (``_buffered`` counts ``data`` while it is being sent: see ``close``.)
                self._buffered = max(0, self._buffered - len(data))
                self._flushed_some()
        except _GONE:
            self.abort()

    async def run(self) -> None:
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._write_loop)
                try:
                    await self._read_loop()
                finally:
                    if not self._write_shut:
                        self.abort()  # (ends the writer if the reader ended first)
                    self._wake_writer()
        finally:
            self._end()

    async def _read_loop(self) -> None:
        try:
            with trio.CancelScope() as self._reading:
                while not self._write_shut:
                    if self._closing or self._reading_paused:
                        if not await self._stalled():
                            break
                        continue
                    data = await self._receive()
                    if not data:
                        await self._eof()
                        break
                    if not self._closing:
                        self._call("data_received", bytes(data))  # (bytes: no copy)
            if self._write_shut:
                await self._linger()
        except _GONE:
            return


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
