"""HTTP/3 server connection: ASGI streams over one QUIC connection (aioquic).

Theory of operation
-------------------
``Http3Connection`` is one client's QUIC connection (an aioquic ``QuicConnection``, with
aioquic's ``H3Connection`` for the HTTP/3 framing and QPACK). Like ``H2Connection`` it is a
``ServerConnection`` for the driver (one deadline, ``start_shutdown``, ``connection_lost``)
and the ``StreamWire`` of its streams: every request is one ``AsgiHttpStream``, every
WebSocket (RFC 9220 extended CONNECT, ``h3_ws.py``) one ``AsgiWsStream``, the same state
machines as on HTTP/1.1 and HTTP/2. Datagrams come from the ``QuicEndpoint`` (``quic.py``)
that routes them here and leave through it; the driver never sees bytes.

Rule 1 - time. aioquic speaks ``now`` in, ``get_timer()`` out; the connection's one
``deadline`` is the earliest of aioquic's timer and its own (idle, GOAWAY, stalled streams,
WebSocket pings). Every call that may have queued frames ends with ``_flush_at(now)``: the
datagrams go out, and the deadline is recomputed.

Rule 2 - back-pressure, both ways. Outbound, aioquic takes any amount of stream data; a stream whose
unsent bytes pass ``SEND_HIGH_WATER`` is marked ``send_blocked``, so the driver parks that
app alone until the peer's windows and the congestion window let it drain below
``SEND_LOW_WATER`` (checked after each flush). A stream blocked for ``write_timeout`` is
reset. Inbound, the windows open as the apps read (``quic.ServerQuicConnection``): an app
that does not read holds back its own stream (``STREAM_WINDOW``), and takes at most that
of the connection's larger window (``CONNECTION_WINDOW``).

Rule 3 - a stream leaves the table when its response is complete and its request was read
to the end (or either side reset it). A response completed while the request is still
coming is followed by STOP_SENDING(H3_NO_ERROR) (RFC 9114 section 4.1).

Rule 4 - shutdown is two GOAWAYs (RFC 9114 section 5.2), as on HTTP/2: the first names the
largest stream id and goes with a PING; when the PING is acknowledged (or after
``GOAWAY_PING_TIMEOUT``) the second names the first stream not served, and later requests
are rejected (H3_REQUEST_REJECTED, which clients may retry). The connection closes
(CONNECTION_CLOSE, H3_NO_ERROR) once its last stream is done, and ends when aioquic's
closing period does (``sink.close()``); the endpoint then forgets it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from aioquic.buffer import encode_uint_var
from aioquic.h3.connection import H3_ALPN, ErrorCode, FrameType, H3Connection, encode_frame
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import (
    ConnectionIdIssued,
    ConnectionIdRetired,
    ConnectionTerminated,
    HandshakeCompleted,
    PingAcknowledged,
    ProtocolNegotiated,
    StopSendingReceived,
    StreamReset,
)

from hypercorn.protocols.asgi_http import AsgiHttpStream
from hypercorn.protocols.asgi_ws import AsgiWsStream
from hypercorn.protocols.connection import ConnectionSink
from hypercorn.protocols.h2_guard import RESET_BURST, RESET_RATE, LeakyBucket
from hypercorn.protocols.h2_headers import (
    split_request_head,
    status_bytes,
)
from hypercorn.protocols.h3_ws import H3WebSockets
from hypercorn.protocols.headers import DateCache
from hypercorn.protocols.http2 import GOAWAY_PING_TIMEOUT
from hypercorn.protocols.limits import ProtocolLimits
from hypercorn.protocols.multiplexed import StreamRecord
from hypercorn.protocols.multiplexed_ws import is_websocket_connect

if TYPE_CHECKING:
    from hypercorn.protocols.quic import Address, EndpointConnection, QuicEndpoint

#: The largest client-initiated bidirectional stream id (the first GOAWAY names it).
MAX_REQUEST_STREAM_ID = 2**62 - 4
_SHUTDOWN_PING = 0x6863  # ("hc")


class Http3Connection(H3WebSockets):
    """One HTTP/3 connection's protocol state. See the module docstring."""

    __slots__ = (
        "_handshaken",
        "_highest",
        "_last_stream",
        "_linger_at",
        "_requests",
        "_resets",
        "_route",
        "_routes",
        "_send",
    )

    def __init__(
        self,
        *,
        quic: QuicConnection,
        routes: QuicEndpoint,
        sink: ConnectionSink,
        route: EndpointConnection | None = None,
        limits: ProtocolLimits,
        dates: DateCache,
        client: tuple[str, int] | None,
        server: tuple[str, int | None] | None,
        tls: Mapping[str, Any] | None,
        state: dict[str, Any] | None,
        now: float,
        stream_class: type[AsgiHttpStream] = AsgiHttpStream,
        ws_stream_class: type[AsgiWsStream] = AsgiWsStream,
    ) -> None:
        super().__init__(
            sink,
            limits,
            dates,
            http_version=b"3",
            push=False,
            client=client,
            server=server,
            tls=tls,
            scheme="https",
            state=state,
            server_value=limits.h3_server_header,
            stream_class=stream_class,
            ws_stream_class=ws_stream_class,
            now=now,
        )
        self._init_quic(quic)
        self._routes = routes
        #: What the endpoint routes our connection IDs to (ourselves, or the driver's link
        #: in front of us).
        self._route: EndpointConnection = route or self
        self._send = routes.send_datagram
        #: The TLS handshake completed (the client's address is validated).
        self._handshaken = False
        #: Requests on streams from this id on are rejected (the final GOAWAY's id).
        self._last_stream = MAX_REQUEST_STREAM_ID + 4
        self._highest = -4
        self._requests = 0
        self._resets = LeakyBucket(RESET_BURST, RESET_RATE, now)
        #: Draining with no stream left, waiting for the last responses to be delivered.
        self._linger_at: float | None = None

    # -- driver side -----------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        return self.deadline

    def receive_data(self, data: bytes, now: float) -> None:
        """(Datagrams come through ``receive_datagram``; a QUIC connection has no bytes.)"""

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        if self._closed:
            return
        self._now = now
        quic = self._quic
        quic.receive_datagram(data, addr, now)
        self._process()
        if quic._close_event is not None and not self._closing:
            # The peer closed: aioquic drains quietly until its ConnectionTerminated, but
            # the apps learn it now (aioquic has no event for the start of draining).
            self._closing = True
            self._idle_at = self._ping_at = self._stall_at = self._linger_at = None
            self._drop_streams()
        if self._linger_at is not None:
            self._close_if_done()  # (an acknowledgement may have delivered the last response)
        self._flush_at(now)

    def handle_deadline(self, now: float) -> None:
        if self._closed:
            return
        self._now = now
        quic = self._quic
        timer = quic.get_timer()
        if timer is not None and now >= timer:
            quic.handle_timer(now)
            self._process()
            if self.closed:  # (the closing period ended)
                return
        if not self._closing:
            self._handle_stream_deadlines(now)
            if self._linger_at is not None and now >= self._linger_at:
                self._close()  # (the peer did not take the last responses in write_timeout)
            elif self._idle_at is not None and now >= self._idle_at and not self._streams:
                if not self._handshaken:
                    # No handshake in header_read_timeout: forget it without a word (the
                    # address may be spoofed, and aioquic's CONNECTION_CLOSE would not
                    # respect the amplification limit).
                    self._terminated()
                    return
                self._idle_at = None  # (once: the close may wait for acknowledgements)
                self._goaway(self._highest + 4)
                self._draining = True
                self._close_if_done()
        self._flush_at(now)

    def write_paused(self, now: float) -> None:
        """(The UDP socket's buffer is the endpoint's: apps wait on it in ``send``.)"""

    def write_resumed(self, now: float) -> None:
        pass

    def start_shutdown(self, now: float) -> None:
        if self._closed or self._closing or self._shutting_down:
            return
        self._now = now
        self._shutting_down = True
        if self._ws_records:
            self._ws_start_shutdown(now)  # (1001 to every WebSocket)
        if not self._handshaken:
            # A client mid-handshake learns at once, and tries again elsewhere (a silent
            # drop would leave it waiting for its idle timeout).
            self._close()
        elif not self._draining:
            self._goaway(MAX_REQUEST_STREAM_ID)
            self._quic.send_ping(_SHUTDOWN_PING)
            self._ping_at = now + GOAWAY_PING_TIMEOUT
        else:
            self._close_if_done()
        self._flush_at(now)

    def connection_lost(self) -> None:
        """The driver is done with us (it aborted, or we asked it to close)."""
        if self._closed:
            return
        if not self._closing:
            # Aborted (graceful_timeout ran out): one CONNECTION_CLOSE, best effort.
            self._quic.close(error_code=ErrorCode.H3_NO_ERROR, reason_phrase="shutting down")
            self._send_datagrams(self._now)
        self._closed = True
        self.deadline = None
        self._routes.forget(self._route)
        self._drop_streams()

    # -- QUIC and HTTP/3 events ----------------------------------------------------------------

    def _process(self) -> None:
        quic = self._quic
        routes = self._routes
        event = quic.next_event()
        while event is not None:
            if isinstance(event, ConnectionIdIssued):
                routes.add_cid(event.connection_id, self._route)
            elif isinstance(event, ConnectionIdRetired):
                routes.remove_cid(event.connection_id)
            elif isinstance(event, ConnectionTerminated):
                self._terminated()
                return
            elif isinstance(event, HandshakeCompleted):
                self._handshaken = True
            elif isinstance(event, ProtocolNegotiated):
                if event.alpn_protocol in H3_ALPN and self._h3 is None:
                    self._h3 = H3Connection(quic)
            elif isinstance(event, StreamReset):
                self._stream_reset(event.stream_id, False)
            elif isinstance(event, StopSendingReceived):
                self._stream_reset(event.stream_id, True)
            elif (
                isinstance(event, PingAcknowledged)
                and event.uid == _SHUTDOWN_PING
                and self._ping_at is not None
            ):
                self._final_goaway()
            h3 = self._h3
            if h3 is not None:
                for h3_event in h3.handle_event(event):
                    if isinstance(h3_event, DataReceived):
                        self._data_received(h3_event)
                    elif isinstance(h3_event, HeadersReceived):
                        self._headers_received(h3_event)
            event = quic.next_event()

    def _headers_received(self, event: HeadersReceived) -> None:
        stream_id = event.stream_id
        record = self._streams.get(stream_id)
        if record is not None:
            # Request trailers (aioquic checked they come after the head and carry no
            # pseudo-headers); they reach the app with the end of the body.
            record.trailers = list(event.headers)
            if event.stream_ended:
                self._request_ended(record)
            return
        if event.push_id is not None or stream_id % 4 != 0:
            return
        if stream_id > self._highest:
            self._highest = stream_id
        if self._closing:
            return
        if stream_id >= self._last_stream:
            self._reject(stream_id)
            return
        self._request_received(stream_id, event.headers, event.stream_ended)

    def _request_received(
        self, stream_id: int, headers: list[tuple[bytes, bytes]], end_stream: bool
    ) -> None:
        method, path, asgi_headers = split_request_head(headers)
        asgi_headers = _join_cookies(asgi_headers)
        protocol = is_websocket_connect(headers) if method == b"CONNECT" else None
        if protocol is not None and protocol != b"websocket":
            # An extended CONNECT for a protocol we do not speak (RFC 9220, RFC 8441 4).
            self._answer(stream_id, 501, end_stream)
        elif protocol is not None:
            self._open_websocket(stream_id, path, asgi_headers, end_stream)
        elif not path and method != b"CONNECT":
            self._answer(stream_id, 400, end_stream)  # (RFC 9114 4.3.1: :path is required)
        else:
            self._open_stream(stream_id, method, path, asgi_headers, end_stream)
        self._requests += 1
        max_streams = self._limits.h2_max_streams
        if max_streams is not None and self._requests >= max_streams and not self._draining:
            # keep_alive_max_requests: this stream is the last one served here.
            self._draining = True
            self._last_stream = stream_id + 4
            self._goaway(stream_id + 4)

    def _data_received(self, event: DataReceived) -> None:
        record = self._streams.get(event.stream_id)
        if record is None or not record.recv_open:
            return
        if record.ws is not None:
            self._ws_data(record, event.data, event.stream_ended)
            return
        asgi = record.asgi
        data = event.data
        if data and not asgi.disconnected:
            asgi.body_received(data)
            self._hold(record, len(data))
            asgi.notify_on_read = True
        if event.stream_ended:
            self._request_ended(record)

    def _request_ended(self, record: StreamRecord) -> None:
        record.recv_open = False
        asgi = record.asgi
        if isinstance(asgi, AsgiHttpStream):
            asgi.end_received(record.trailers)
        elif record.ws is not None:
            self._ws_data(record, b"", True)
            return
        if record.response_done:
            self._stream_done(record)

    def _stream_reset(self, stream_id: int, stop_reading: bool) -> None:
        """The peer reset the stream, or asked us to stop sending on it (``stop_reading``:
        then we stop reading the request too; after a reset nothing more comes anyway)."""
        if self._closing:
            return
        record = self._streams.pop(stream_id, None)
        if record is None:
            return
        if not record.response_done and self._resets.add(1, self._now):
            # Rapid reset (CVE-2023-44487): the client makes us start work it abandons.
            self._streams[stream_id] = record  # (dropped with the others)
            self._close(ErrorCode.H3_EXCESSIVE_LOAD, "too many reset streams")
            return
        if record.recv_open and stop_reading:
            self._quic_stop(stream_id, ErrorCode.H3_REQUEST_CANCELLED)
        self._forget(record)

    # -- streams -------------------------------------------------------------------------------

    def _stream_opened(self) -> None:
        self._idle_at = None

    def _answer(self, stream_id: int, status: int, end_stream: bool) -> None:
        """A response of ``status`` with no body, for a request no app sees."""
        self._refuse(
            stream_id, [(b":status", status_bytes(status)), (b"content-length", b"0")], end_stream
        )

    def _reject(self, stream_id: int) -> None:
        """A request after the final GOAWAY: not served, safe to retry elsewhere."""
        self._quic.reset_stream(stream_id, ErrorCode.H3_REQUEST_REJECTED)
        self._quic_stop(stream_id, ErrorCode.H3_REQUEST_REJECTED)

    # -- shutdown and closing (Rule 4) ---------------------------------------------------------

    def _goaway(self, stream_id: int) -> None:
        h3 = self._h3
        control = getattr(h3, "_local_control_stream_id", None)
        if h3 is None or control is None:
            return
        # (aioquic's H3Connection has no GOAWAY of its own: the frame on our control stream.)
        self._quic.send_stream_data(
            control, encode_frame(FrameType.GOAWAY, encode_uint_var(max(stream_id, 0)))
        )

    def _final_goaway(self) -> None:
        self._ping_at = None
        last = self._highest + 4
        if last < self._last_stream:
            self._last_stream = last
        self._draining = True
        self._goaway(self._last_stream)
        self._set_deadline()
        self._close_if_done()

    def _close_if_done(self) -> None:
        """Close once draining, with no stream left and every response delivered: closing
        drops what aioquic has not sent (or not seen acknowledged) yet."""
        if not self._draining or self._streams or self._ping_at is not None or self._closing:
            return
        if self._undelivered():
            if self._linger_at is None:
                self._linger_at = self._now + self._limits.write_timeout
                self._set_deadline()
            return
        self._close()

    def _close(self, error_code: int = ErrorCode.H3_NO_ERROR, reason: str = "") -> None:
        """CONNECTION_CLOSE; the connection ends when aioquic's closing period does."""
        if self._closing or self._closed:
            return
        self._closing = True
        self._idle_at = self._ping_at = self._stall_at = self._linger_at = None
        self._quic.close(error_code=error_code, reason_phrase=reason)
        self._drop_streams()
        self._set_deadline()

    def _terminated(self) -> None:
        """aioquic says the connection is over (closed, timed out, or the peer closed it)."""
        self._closing = self._closed = True
        self.deadline = self._idle_at = self._ping_at = self._stall_at = self._linger_at = None
        self._routes.forget(self._route)
        self._drop_streams()
        self._sink.close()

    # -- datagrams out and the deadline (Rule 1) -----------------------------------------------

    def _flush_at(self, now: float) -> None:
        if self._closed:
            return
        self._send_datagrams(now)
        if self._blocked:
            self._release_drained()
        self._set_deadline()

    def _send_datagrams(self, now: float) -> None:
        send = self._send
        for data, addr in self._quic.datagrams_to_send(now):
            send(data, addr)

    def _set_deadline(self) -> None:
        if self._closed:
            self.deadline = None
            return
        super()._set_deadline()  # (idle, GOAWAY, stalled streams, WebSockets)
        deadline = self.deadline
        for candidate in (self._quic.get_timer(), self._linger_at):
            if candidate is not None and (deadline is None or candidate < deadline):
                deadline = candidate
        self.deadline = deadline


def _join_cookies(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """One ``cookie`` field, as HTTP/1.1 has it: HTTP/3 may split it (RFC 9114 4.2.1)."""
    cookies = [value for name, value in headers if name == b"cookie"]
    if len(cookies) < 2:
        return headers
    joined = [(name, value) for name, value in headers if name != b"cookie"]
    joined.append((b"cookie", b"; ".join(cookies)))
    return joined
