"""HTTP/3 streams on one QUIC connection: the stream table, the StreamWire side, back-pressure.

``H3Streams`` is the half of ``Http3Connection`` (``http3.py``) that its streams see: it
writes their responses through aioquic's ``H3Connection`` (``StreamWire``), parks the apps
of streams whose data aioquic has not sent yet (Rule 2 of ``http3.py``) and takes streams
out of the table (Rule 3). The WebSockets (``h3_ws.py``) and the connection half add the
rest. Header blocks are checked and shaped by ``h2_headers`` (RFC 9114 section 4.2 asks
what RFC 9113 section 8.2 does).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from aioquic.h3 import connection as h3_connection
from aioquic.h3.connection import ErrorCode, H3Connection
from aioquic.quic.connection import QuicConnection

from hypercorn.protocols.asgi_http import AsgiHttpStream
from hypercorn.protocols.asgi_ws import AsgiWsStream
from hypercorn.protocols.connection import ConnectionSink
from hypercorn.protocols.errors import AppProtocolError
from hypercorn.protocols.h2_headers import (
    body_remaining,
    error_head,
    response_facts,
    response_head,
    status_bytes,
    trailer_block,
)
from hypercorn.protocols.h2_ws import WsStreamState
from hypercorn.protocols.headers import DateCache
from hypercorn.protocols.limits import ProtocolLimits
from hypercorn.protocols.quic import ServerQuicConnection

#: Unsent bytes a stream may have queued in aioquic before its app waits (Rule 2 of
#: ``http3.py``), and the level it must drain to before the app goes on.
SEND_HIGH_WATER = 256 * 1024
SEND_LOW_WATER = 64 * 1024
_NO_BODY_STATUSES = frozenset((204, 304))
_INFINITY = float("inf")
#: aioquic sends interim (1xx) responses as such since it knows them.
_INTERIM_OK = hasattr(h3_connection, "is_interim_response")


class H3Stream:
    """The wire's state for one request stream, beside its ASGI stream."""

    __slots__ = (
        "asgi",
        "blocked_since",
        "head_sent",
        "held",
        "no_body",
        "recv_open",
        "remaining",
        "response_done",
        "trailers",
        "ws",
    )

    def __init__(self, asgi: AsgiHttpStream | AsgiWsStream, recv_open: bool) -> None:
        self.asgi = asgi
        #: A WebSocket's state (RFC 9220), or None for an HTTP exchange.
        self.ws: WsStreamState | None = None
        #: The request (or the peer's side of a WebSocket) is still coming.
        self.recv_open = recv_open
        #: Bytes received on the stream that its app has not read yet (inbound flow control).
        self.held = 0
        #: The request's trailers, until its end.
        self.trailers: list[tuple[bytes, bytes]] | None = None
        #: Since when the app waits for aioquic to send what the stream queued.
        self.blocked_since: float | None = None
        self.head_sent = False
        self.response_done = False
        #: Bytes the app's Content-Length still promises, or None.
        self.remaining: int | None = None
        #: HEAD, 204 or 304: no DATA whatever the app sends.
        self.no_body = False


class H3Streams:
    """The stream table of an HTTP/3 connection (see the module docstring);
    ``Http3Connection`` completes it."""

    __slots__ = (
        "_blocked",
        "_client",
        "_closed",
        "_closing",
        "_dates",
        "_extra",
        "_h3",
        "_held",
        "_limits",
        "_now",
        "_quic",
        "_root_path",
        "_server",
        "_server_names",
        "_server_value",
        "_sink",
        "_stall_at",
        "_state",
        "_streams",
        "_tls",
        "_ws_records",
        "_ws_stream_class",
    )

    def __init__(
        self,
        quic: QuicConnection,
        sink: ConnectionSink,
        limits: ProtocolLimits,
        dates: DateCache,
        *,
        client: tuple[str, int] | None,
        server: tuple[str, int | None] | None,
        tls: Mapping[str, Any] | None,
        state: dict[str, Any] | None,
        ws_stream_class: type[AsgiWsStream],
        now: float,
    ) -> None:
        self._quic = quic
        #: The scope's facts, the same for every stream of the connection.
        self._client = client
        self._server = server
        self._tls = tls
        self._state = state
        self._root_path = limits.root_path
        self._server_names = limits.server_names
        #: Made once the handshake chose ``h3`` (``ProtocolNegotiated``).
        self._h3: H3Connection | None = None
        self._sink = sink
        self._limits = limits
        self._dates: DateCache | None = dates if limits.include_date_header else None
        self._server_value = limits.h3_server_header
        self._extra = limits.extra_headers
        self._ws_stream_class = ws_stream_class
        self._streams: dict[int, H3Stream] = {}
        #: The streams' ``held`` bytes, all together.
        self._held = 0
        if isinstance(quic, ServerQuicConnection):
            # Windows open as the apps read (ServerQuicConnection).
            quic.unread = self._unread
            quic.unread_total = self._unread_total
        #: Streams whose apps wait for aioquic to send what they queued (Rule 2).
        self._blocked: dict[int, H3Stream] = {}
        #: WebSocket streams with a session (their deadlines, shutdown).
        self._ws_records: dict[int, H3Stream] = {}
        self._stall_at: float | None = None
        self._now = now
        self._closing = False
        self._closed = False

    # -- hooks for the connection half ---------------------------------------------------------

    def _flush(self, now: float) -> None:
        raise NotImplementedError

    def _set_deadline(self) -> None:
        raise NotImplementedError

    def _all_streams_done(self) -> None:
        raise NotImplementedError

    def _quic_stop(self, stream_id: int, error_code: int) -> None:
        raise NotImplementedError

    def _ws_forget(self, record: H3Stream) -> None:
        raise NotImplementedError

    # -- back-pressure (Rule 2) ----------------------------------------------------------------

    def _unsent(self, stream_id: int) -> int:
        """Bytes queued on the stream that aioquic has not sent yet."""
        # (aioquic has no public accessor for a stream's send buffer.)
        stream = self._quic._streams.get(stream_id)
        if stream is None:
            return 0
        sender = stream.sender
        return int(sender._buffer_stop - sender.highest_offset)

    def _undelivered(self) -> bool:
        """Some response data (or its end) is not acknowledged by the peer yet."""
        return any(
            not stream.sender.is_finished
            for stream_id, stream in self._quic._streams.items()
            if stream_id % 4 == 0  # (request streams; our control streams never finish)
        )

    def _check_backlog(self, record: H3Stream) -> None:
        """After a flush: the app waits if its stream's backlog passed the high-water mark."""
        stream_id = record.asgi.stream_id
        if (
            not record.response_done
            and self._streams.get(stream_id) is record
            and self._unsent(stream_id) > SEND_HIGH_WATER
        ):
            record.asgi.send_blocked = True
            if record.blocked_since is None:
                record.blocked_since = self._now
                self._blocked[stream_id] = record
                self._refresh_stall()

    def _release_drained(self) -> None:
        for stream_id, record in list(self._blocked.items()):
            if self._unsent(stream_id) <= SEND_LOW_WATER:
                self._unblock(record)

    def _unblock(self, record: H3Stream) -> None:
        if self._blocked.pop(record.asgi.stream_id, None) is not None:
            record.blocked_since = None
            self._refresh_stall()
        if record.asgi.send_blocked:
            record.asgi.release_send()

    def _refresh_stall(self) -> None:
        earliest = _INFINITY
        for record in self._blocked.values():
            since = record.blocked_since
            if since is not None and since < earliest:
                earliest = since
        self._stall_at = None if earliest == _INFINITY else earliest + self._limits.write_timeout
        self._set_deadline()

    def _reset_stalled(self, now: float) -> None:
        """A peer that never lets a stream's data go loses the stream after write_timeout."""
        limit = now - self._limits.write_timeout
        for stream_id, record in list(self._blocked.items()):
            since = record.blocked_since
            if since is not None and since <= limit:
                self._quic.reset_stream(stream_id, ErrorCode.H3_REQUEST_CANCELLED)
                if record.recv_open:
                    self._quic_stop(stream_id, ErrorCode.H3_REQUEST_CANCELLED)
                self._streams.pop(stream_id, None)
                self._forget(record)
        self._refresh_stall()

    # -- inbound flow control -----------------------------------------------------------------

    def _unread(self, stream_id: int) -> int:
        record = self._streams.get(stream_id)
        return record.held if record is not None else 0

    def _unread_total(self) -> int:
        return self._held

    def _hold(self, record: H3Stream, size: int) -> None:
        record.held += size
        self._held += size

    def _release(self, record: H3Stream, size: int) -> None:
        record.held -= size
        self._held -= size

    def app_reading(self, stream: AsgiHttpStream, now: float) -> None:
        record = self._live(stream)
        if record is None:
            return
        read = record.held - stream.buffered
        if read > 0:
            self._release(record, read)
            self._now = now
            self._flush(now)  # (aioquic widens the windows the app's reading allows)
        if stream.buffered:
            stream.notify_on_read = True

    def _forget(self, record: H3Stream) -> None:
        """``record`` left the table: release its app and tell it."""
        if record.held:
            self._release(record, record.held)  # (nobody will read it)
        record.recv_open = False
        self._unblock(record)
        if record.ws is not None:
            self._ws_forget(record)
        if not record.response_done:
            record.asgi.peer_closed()
        if not self._streams:
            self._all_streams_done()

    # -- writing (StreamWire) ------------------------------------------------------------------

    def send_head(
        self,
        stream: AsgiHttpStream | AsgiWsStream,
        status: int,
        headers: Iterable[tuple[bytes, bytes]],
        body: bytes,
        end: bool,
        now: float,
    ) -> None:
        record = self._live(stream)
        if record is None:
            return
        self._now = now
        out, content_length = response_head(
            status, headers, self._dates, self._server_value, self._extra, now
        )
        if status in _NO_BODY_STATUSES:
            record.no_body = True
        record.remaining = None if record.no_body else content_length
        record.head_sent = True
        h3 = self._h3
        assert h3 is not None
        if record.no_body or (end and not body):
            h3.send_headers(stream.stream_id, out, end)
            if end:
                self._response_complete(record)
        else:
            h3.send_headers(stream.stream_id, out, False)
            self._send_body(record, body, end)
        self._flush(now)
        self._check_backlog(record)

    def send_body(
        self, stream: AsgiHttpStream | AsgiWsStream, data: bytes, end: bool, now: float
    ) -> None:
        record = self._live(stream)
        if record is None:
            return
        self._now = now
        self._send_body(record, data, end)
        self._flush(now)
        self._check_backlog(record)

    def _send_body(self, record: H3Stream, data: bytes, end: bool) -> None:
        # (A body that breaks its Content-Length raises; the stream's cleanup resets it.)
        record.remaining = body_remaining(record.remaining, len(data), end)
        if record.no_body:
            data = b""
        if data or end:
            assert self._h3 is not None
            self._h3.send_data(record.asgi.stream_id, data, end)
        if end:
            self._response_complete(record)

    def send_trailers(
        self, stream: AsgiHttpStream, headers: Iterable[tuple[bytes, bytes]], now: float
    ) -> None:
        record = self._live(stream)
        if record is None:
            return
        self._now = now
        if record.remaining:
            raise AppProtocolError("response body shorter than its content-length")
        block = trailer_block(headers)
        h3 = self._h3
        assert h3 is not None
        if block:
            h3.send_headers(stream.stream_id, block, True)
        else:
            h3.send_data(stream.stream_id, b"", True)
        self._response_complete(record)
        self._flush(now)

    def send_error(self, stream: AsgiHttpStream | AsgiWsStream, status: int, now: float) -> None:
        record = self._live(stream)
        if record is None:
            return
        if record.head_sent:
            self.abort_stream(stream, now)
            return
        head = error_head(status, self._dates, self._server_value, now)
        assert self._h3 is not None
        self._h3.send_headers(stream.stream_id, head, True)
        self._response_complete(record)
        self._flush(now)

    def send_informational(
        self, stream: AsgiHttpStream, status: int, headers: list[tuple[bytes, bytes]], now: float
    ) -> None:
        record = self._live(stream)
        if record is None or record.head_sent or not _INTERIM_OK:
            return
        block, _, _, _ = response_facts(headers)
        assert self._h3 is not None
        self._h3.send_headers(stream.stream_id, [(b":status", status_bytes(status)), *block])
        self._flush(now)

    def send_push(
        self, stream: AsgiHttpStream, path: str, headers: list[tuple[bytes, bytes]], now: float
    ) -> None:
        """(No server push on HTTP/3: browsers never supported it.)"""

    def abort_stream(self, stream: AsgiHttpStream | AsgiWsStream, now: float) -> None:
        record = self._live(stream)
        if record is None:
            return
        stream_id = stream.stream_id
        self._quic.reset_stream(stream_id, ErrorCode.H3_INTERNAL_ERROR)
        if record.recv_open:
            self._quic_stop(stream_id, ErrorCode.H3_INTERNAL_ERROR)
        record.response_done = True
        self._streams.pop(stream_id, None)
        self._forget(record)
        self._flush(now)

    def _live(self, stream: AsgiHttpStream | AsgiWsStream) -> H3Stream | None:
        record = self._streams.get(stream.stream_id)
        if record is None or record.asgi is not stream or self._closing or self._closed:
            return None
        return record

    # -- stream lifecycle (Rule 3 of ``http3.py``) ----------------------------------------------

    def _response_complete(self, record: H3Stream) -> None:
        record.response_done = True
        self._stream_done(record)

    def _stream_done(self, record: H3Stream) -> None:
        stream_id = record.asgi.stream_id
        if self._streams.pop(stream_id, None) is None:
            return
        if record.recv_open:
            # Complete response, request still coming: ask the client to stop.
            self._quic_stop(stream_id, ErrorCode.H3_NO_ERROR)
        self._forget(record)
