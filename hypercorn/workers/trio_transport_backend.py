"""The trio backend's transports (the accept loop is in ``trio_backend.py``).

A plain TCP or Unix connection bypasses trio's stream layer. One task per connection waits
with ``trio.lowlevel.wait_readable`` and hands each ``recv`` to the driver's
``data_received``; ``write`` sends at once on the non-blocking socket, and only what the
kernel does not take waits in a buffer that a writer task (started on demand) flushes. A TLS
connection is a ``trio.SSLStream`` with a reader task and a writer task. Either way the socket
is closed through trio (``notify_closing``), which wakes every task waiting on it, and the
reader task then reports ``connection_lost``.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import trio

from hypercorn.workers.backend import (
    ConnectionHandler,
    ConnectionInfo,
    DatagramSocket,
    ExceptionMapping,
    OnDatagrams,
    ServeOptions,
    TransportClosed,
    TransportTimeout,
    tcp_bytes_acked,
)

if TYPE_CHECKING:
    from hypercorn.workers.trio_backend import Acceptor, TrioBackend

_logger = logging.getLogger("hypercorn.error")

_READ_SIZE = 256 * 1024
#: Bytes a TLS writer hands ``send_all`` at a time: ``write_buffer_size`` falls per piece,
#: so a slow reader of a large response shows progress (``workers/write_watch.py``).
_SEND_PIECE = 256 * 1024
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


class _Transport:
    """What the plain-socket and TLS transports share: state, flow control, closing, loss.

    Closing (``close``): the reader stops handing data to the handler and discards it; once
    every byte is written, the write side is shut (FIN), the handler hears
    ``connection_lost``, and the reader keeps discarding until the peer closes too or
    ``_LINGER`` seconds pass. Closing with unread input at once would make the kernel answer
    with a reset, which can destroy the last response (a GOAWAY, a ``Connection: close``
    answer) before the peer reads it (RFC 9112 9.6's lingering close; asyncio's TLS close
    gets the same from the TLS shutdown). ``close(linger=False)`` closes the socket once
    every byte is written (see ``Transport``). ``abort`` closes the socket at once.
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
        self._buffer: list[bytes | memoryview] = []
        #: Unsent bytes: those in ``_buffer`` and, on TLS, those being sent.
        self._buffered = 0
        self._closing = False
        #: The handler heard ``connection_lost``.
        self._lost = False
        #: Everything was written and the write side is shut: lingering.
        self._write_shut = False
        self._peer_eof = False
        #: False after ``close(linger=False)``: the socket closes once flushed.
        self._lingers = True
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

    def raw_writelines(self, parts: Sequence[bytes]) -> None:
        """(No vectored send here: joined, see ``Transport.raw_writelines``.)"""
        self.write(b"".join(parts))

    @property
    def is_closing(self) -> bool:
        return self._closing

    @property
    def write_buffer_size(self) -> int:
        return self._buffered

    @property
    def write_progress(self) -> int:
        acked = tcp_bytes_acked(self._socket())
        return -self._buffered if acked is None else acked

    def _socket(self) -> socket.socket | trio.socket.SocketType:
        raise NotImplementedError

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

    def close(self, *, linger: bool = True) -> None:
        if not self._closing:
            self._closing = True
            self._lingers = linger
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
        if self._peer_eof or not self._lingers:
            # Nothing to linger for: the peer closed its side already, or said it sends
            # nothing more (``Transport``).
            self._shut()
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
                    # (A view: a slow reader of a large body costs no copy per send.)
                    buffer.append(memoryview(data)[sent:])
                self._buffered -= sent
                self._flushed_some()
        except _GONE:
            self.abort()
            return
        finally:
            self._writing = False
        if self._closing:
            self._finish_writes()

    def _socket(self) -> socket.socket:
        return self._sock

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

    def close(self, *, linger: bool = True) -> None:
        super().close(linger=linger)
        self._wake_writer()

    def _wake_writer(self) -> None:
        if self._wake is not None:
            self._wake.set()
            self._wake = None

    def _socket(self) -> trio.socket.SocketType:
        return self._stream.transport_stream.socket

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
                view = memoryview(data)
                for start in range(0, len(data), _SEND_PIECE):
                    piece = view[start : start + _SEND_PIECE]
                    await self._stream.send_all(piece)
                    # (``_buffered`` counts a piece while it is being sent: see ``close``.)
                    self._buffered = max(0, self._buffered - len(piece))
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


# -- UDP (QUIC) ------------------------------------------------------------------------------


def open_datagrams(
    backend: TrioBackend, sock: socket.socket, on_datagrams: OnDatagrams
) -> DatagramSocket:
    """``Backend.open_datagrams``: a reader task and a writer task on the raw socket."""
    writable = _Wakeup()

    def close() -> None:
        trio.lowlevel.notify_closing(sock)  # (wakes both tasks: they end)

    transport = DatagramSocket(
        sock, on_datagrams, event=backend.event, wake_writer=writable.set, on_close=close
    )
    backend._start_soon(_read_datagrams, transport, name="hypercorn-udp-reader")
    backend._start_soon(_write_datagrams, transport, writable, name="hypercorn-udp-writer")
    return transport


class _Wakeup:
    """A reusable wake-up for one waiting task (``trio.Event`` is one-shot)."""

    def __init__(self) -> None:
        self._event = trio.Event()

    def set(self) -> None:
        self._event.set()

    async def wait(self) -> None:
        await self._event.wait()
        self._event = trio.Event()


async def _read_datagrams(transport: DatagramSocket) -> None:
    sock = transport.sock
    with contextlib.suppress(trio.ClosedResourceError, OSError):
        while not transport.closed:
            await trio.lowlevel.wait_readable(sock)
            transport.read_ready()


async def _write_datagrams(transport: DatagramSocket, writable: _Wakeup) -> None:
    sock = transport.sock
    with contextlib.suppress(trio.ClosedResourceError, OSError):
        while not transport.closed:
            await writable.wait()
            while transport.wants_write and not transport.closed:
                await trio.lowlevel.wait_writable(sock)
                transport.write_ready()
