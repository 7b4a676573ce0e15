"""The asyncio (and uvloop) connection: an ``asyncio.Protocol`` below, our ``Transport`` above.

Hot path: ``StreamProtocol`` is both; its ``data_received`` is the handler's own (the
transport calls the driver with no frame of ours in between), and ``pause_writing`` /
``resume_writing`` drive ``drain`` (uvicorn's flow control). Closing lingers: see the class.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, cast

from hypercorn.workers.backend import (
    ConnectionHandler,
    ConnectionInfo,
    OnConnection,
    ServeOptions,
    TransportClosed,
    each_written,
    peer_address,
    tcp_bytes_acked,
    tls_connection_info,
)

if TYPE_CHECKING:
    from hypercorn.protocols.proxy import ProxyHeader

_logger = logging.getLogger("hypercorn.error")

#: A closed plain-TCP connection keeps discarding what the peer still sends for this long
#: after its last byte is written, or until this much was discarded (see StreamProtocol).
_LINGER = 2.0
_LINGER_BYTES = 1 << 20


def _pauseless_writelines() -> frozenset[object]:
    """The stdlib transports whose ``writelines`` never pauses the protocol.

    CPython 3.12 gave the selector socket transport its own ``writelines`` (one
    ``sendmsg``) that buffers without checking the high-water mark, so ``pause_writing``
    never comes and an app streaming to a slow reader fills memory, unnoticed by
    ``write_timeout``. Their ``write`` checks it: those transports get one per buffer.
    """
    from asyncio import selector_events

    own = getattr(selector_events, "_SelectorSocketTransport", None)
    found = getattr(own, "writelines", None)
    if found is None or found is asyncio.WriteTransport.writelines:
        return frozenset()
    return frozenset((found,))


_PAUSELESS_WRITELINES = _pauseless_writelines()

#: ``StreamProtocol.info`` until ``connection_made`` (shared: nothing changes it).
_NOT_CONNECTED = ConnectionInfo(client=None, server=None)


class StreamProtocol(asyncio.Protocol):
    """An accepted connection: asyncio Protocol below, our ``Transport`` above.

    Closing a plain-TCP connection lingers (RFC 9112 9.6): a socket closed with input unread
    makes the kernel answer with a reset, which can destroy the last response (a
    ``Connection: close`` answer to pipelined requests, a GOAWAY) before the peer reads it.
    So ``close`` stops handing input to the handler and discards it instead; asyncio shuts
    the write side once the buffer is flushed (``write_eof``), the handler then hears
    ``connection_lost``, and the socket closes when the peer closes its side or after
    ``_LINGER`` seconds (reading stops after ``_LINGER_BYTES``). A peer that already sent EOF
    sends nothing more: its connection closes at once (once flushed), as does a TLS one
    (asyncio's TLS shutdown keeps reading by itself) and one closed with ``linger=False``
    (the peer said it sends nothing more, see ``Transport``). ``abort`` closes at once. A
    lingering connection is in its backend's ``lingering`` set until it closes, so the
    backend can close what still lingers when its loop ends
    (``AsyncioBackend.close_lingering``).
    """

    __slots__ = (
        "_closing",
        "_discarded",
        "_drain_waiters",
        "_handler",
        "_info",
        "_linger_set",
        "_lingering",
        "_loop",
        "_on_connection",
        "_on_lost",
        "_options",
        "_peer",
        "_peer_eof",
        "_timer",
        "_tls",
        "_transport",
        "data_received",
        "proxied",
        "raw_write",
        "raw_writelines",
        "writing_paused",
    )
    #: The asyncio transport's own ``writelines``, set once connected (nothing writes
    #: before: see ``Transport.raw_writelines``).
    raw_writelines: Callable[[Sequence[bytes]], None]

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        on_connection: OnConnection,
        options: ServeOptions,
        on_lost: Callable[[], None],
        tls: bool,
        lingering: set[StreamProtocol] | None = None,
    ) -> None:
        self._loop = loop
        self._on_connection = on_connection
        self._options = options
        self._on_lost = on_lost
        self._tls = tls
        #: True while the write buffer is above the high-water mark (a plain attribute: the
        #: ASGI ``send`` reads it per message).
        self.writing_paused = False
        #: The asyncio transport's own ``write`` once connected (see ``Transport.raw_write``).
        self.raw_write: Callable[[bytes], None] = self.write
        self._closing = False
        self._peer_eof = False
        #: close() was called on a plain-TCP connection the peer may still send on.
        self._lingering = False
        self._linger_set = lingering
        self._discarded = 0
        self._timer: asyncio.TimerHandle | None = None
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._transport: asyncio.Transport | None = None
        self._handler: ConnectionHandler | None = None
        self._info = _NOT_CONNECTED
        #: The PROXY header read before the connection was made, if the listener wants one.
        self.proxied: ProxyHeader | None = None
        #: (client, server) as the accept loop knew them (server None: the listener is on
        #: every address), so connection_made need not ask the transport; else None.
        self._peer: tuple[tuple[str, int] | None, tuple[str, int | None] | None] | None = None
        #: The handler's own ``data_received`` once connected: the transport calls it with no
        #: frame of ours in between (uvloop caches the bound method: see connection_made).
        # (An attribute where asyncio.Protocol has a method: the transport calls either.)
        self.data_received: Callable[[bytes], None] = self._no_handler  # type: ignore[assignment]

    # -- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        self._transport = transport
        self.raw_write = write = transport.write
        if type(transport).writelines in _PAUSELESS_WRITELINES:
            self.raw_writelines = each_written(write)
        else:  # (uvloop: one writev; 3.11's and TLS transports join, then write.)
            self.raw_writelines = transport.writelines
        options = self._options
        transport.set_write_buffer_limits(options.write_high_water, options.write_low_water)
        known = self._peer
        client: tuple[str, int] | None
        server: tuple[str, int | None] | None
        if known is not None:
            client, server = known
            if server is None:  # (a listener on every address: the one this peer reached)
                server = peer_address(transport.get_extra_info("sockname"))
        else:
            sock = transport.get_extra_info("socket")
            family = sock.family if sock is not None else socket.AF_INET
            if family == getattr(socket, "AF_UNIX", None):
                client = None
                server = (str(transport.get_extra_info("sockname")), None)
            else:
                client = peer_address(transport.get_extra_info("peername"))
                server = peer_address(transport.get_extra_info("sockname"))
        proxied = self.proxied
        if proxied is not None and proxied.client is not None:
            client, server = proxied.client, proxied.server
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            self._info = tls_connection_info(ssl_object, client, server)
        else:
            self._info = ConnectionInfo(client=client, server=server)
        try:
            self._handler = handler = self._on_connection(self)
        except Exception:
            _logger.exception("Error setting up a connection")
            transport.abort()
            return
        self.data_received = handler.data_received
        # uvloop looked ``data_received`` up when the transport was made: look again.
        transport.set_protocol(self)

    def _no_handler(self, data: bytes) -> None:
        """``data_received`` without a handler (its setup failed, or it is gone): drop."""

    def eof_received(self) -> bool | None:
        self._peer_eof = True
        if self._lingering:
            return None  # (the peer is done too: asyncio closes the socket)
        if self._handler is not None:
            self._handler.eof_received()
        # Keep the write side open for the response unless TLS (asyncio can't half-close it).
        return None if self._tls else True

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._lingering and self._linger_set is not None:
            self._linger_set.discard(self)
        self._report_lost()
        self._on_lost()

    def _report_lost(self) -> None:
        """The handler hears ``connection_lost`` (once)."""
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_exception(TransportClosed("connection lost"))
        self._drain_waiters.clear()
        handler = self._handler
        self._handler = None
        if not self._lingering:  # (else it is _discard already)
            self.data_received = self._no_handler
        if handler is not None:
            handler.connection_lost()

    def pause_writing(self) -> None:
        self.writing_paused = True
        if self._handler is not None and not self._lingering:
            self._handler.write_paused()

    def resume_writing(self) -> None:
        self.writing_paused = False
        if self._lingering:
            self._flushed()
            return
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._drain_waiters.clear()
        if self._handler is not None:
            self._handler.write_resumed()

    # -- Transport -----------------------------------------------------------------------------

    @property
    def info(self) -> ConnectionInfo:
        return self._info

    @property
    def is_closing(self) -> bool:
        return self._closing

    @property
    def write_buffer_size(self) -> int:
        transport = self._transport
        return 0 if transport is None else transport.get_write_buffer_size()

    @property
    def write_progress(self) -> int:
        transport = self._transport
        if transport is None:
            return 0
        acked = tcp_bytes_acked(transport.get_extra_info("socket"))
        return -transport.get_write_buffer_size() if acked is None else acked

    def write(self, data: bytes) -> None:
        if not self._closing:
            self._transport.write(data)  # type: ignore[union-attr]

    async def drain(self) -> None:
        if self._closing:
            raise TransportClosed("connection closed")
        if not self.writing_paused:
            return
        waiter = self._loop.create_future()
        self._drain_waiters.append(waiter)
        await waiter

    def pause_reading(self) -> None:
        if not self._closing:
            self._transport.pause_reading()  # type: ignore[union-attr]

    def resume_reading(self) -> None:
        if not self._closing:
            self._transport.resume_reading()  # type: ignore[union-attr]

    def close(self, *, linger: bool = True) -> None:
        if self._closing:
            return
        self._closing = True
        transport = self._transport
        if transport is None:
            return
        if not linger or self._tls or self._peer_eof or transport.is_closing():
            transport.close()  # (flushes first; connection_lost follows)
            return
        # Linger (see the class docstring).
        self._lingering = True
        if self._linger_set is not None:
            self._linger_set.add(self)
        self.data_received = self._discard
        transport.set_protocol(self)  # (uvloop caches data_received)
        transport.resume_reading()
        transport.write_eof()
        if transport.get_write_buffer_size():
            # resume_writing (-> _flushed) once every byte is written.
            transport.set_write_buffer_limits(0)
        else:
            self._loop.call_soon(self._flushed)

    def _flushed(self) -> None:
        """Every byte is written and the write side shut: the handler is done with this
        connection; discard the peer's input for a bounded while."""
        transport = self._transport
        if self._timer is not None or transport is None or transport.is_closing():
            return
        self._report_lost()
        self._timer = self._loop.call_later(_LINGER, transport.close)

    def _discard(self, data: bytes) -> None:
        self._discarded += len(data)
        if self._discarded > _LINGER_BYTES:
            # Enough: stop reading, so the peer's window closes, but do not close before the
            # time is up (a close now would reset what the kernel still has to send).
            cast(asyncio.Transport, self._transport).pause_reading()

    def abort(self) -> None:
        self._closing = True
        if self._transport is not None:
            self._transport.abort()
