"""HTTP/3 streams on one QUIC connection: the StreamWire side, back-pressure.

``H3Streams`` is the half of ``Http3Connection`` (``http3.py``) that its streams see: on the
stream table HTTP/2 shares (``multiplexed.py``), it writes their responses through aioquic's
``H3Connection`` (``StreamWire``) and parks the apps of streams whose data aioquic has not
sent yet (Rule 2 of ``http3.py``). The WebSockets (``h3_ws.py``) and the connection half add the
rest. Header blocks are checked and shaped by ``h2_headers`` (RFC 9114 section 4.2 asks
what RFC 9113 section 8.2 does).
"""

from __future__ import annotations

from collections.abc import Iterable

from aioquic.h3 import connection as h3_connection
from aioquic.h3.connection import ErrorCode, H3Connection
from aioquic.quic.connection import QuicConnection

from hypercorn.protocols.asgi_http import AsgiHttpStream
from hypercorn.protocols.asgi_ws import AsgiWsStream
from hypercorn.protocols.h2_headers import body_remaining, response_head
from hypercorn.protocols.multiplexed import MultiplexedStreams, StreamRecord
from hypercorn.protocols.quic import ServerQuicConnection

#: Unsent bytes a stream may have queued in aioquic before its app waits (Rule 2 of
#: ``http3.py``), and the level it must drain to before the app goes on.
SEND_HIGH_WATER = 256 * 1024
SEND_LOW_WATER = 64 * 1024
_NO_BODY_STATUSES = frozenset((204, 304))
#: aioquic sends interim (1xx) responses as such since it knows them.
_INTERIM_OK = hasattr(h3_connection, "is_interim_response")


class H3Streams(MultiplexedStreams):
    """The writing side of an HTTP/3 connection (see the module docstring);
    ``Http3Connection`` completes it."""

    __slots__ = ("_closing", "_h3", "_held", "_quic")

    _SENDS_INTERIM = _INTERIM_OK
    _INTERNAL_ERROR = ErrorCode.H3_INTERNAL_ERROR
    _CANCEL = ErrorCode.H3_REQUEST_CANCELLED

    def _init_quic(self, quic: QuicConnection) -> None:
        """(Called by ``Http3Connection.__init__``, after the table's.)"""
        self._quic = quic
        #: Made once the handshake chose ``h3`` (``ProtocolNegotiated``).
        self._h3: H3Connection | None = None
        #: The streams' ``held`` bytes, all together.
        self._held = 0
        if isinstance(quic, ServerQuicConnection):
            # Windows open as the apps read (ServerQuicConnection).
            quic.unread = self._unread
            quic.unread_total = self._unread_total
        #: CONNECTION_CLOSE is out (or the peer's came): no more stream work.
        self._closing = False

    # -- hooks of MultiplexedStreams -----------------------------------------------------------

    def _send_headers(self, stream_id: int, headers: list[tuple[bytes, bytes]], end: bool) -> None:
        assert self._h3 is not None
        self._h3.send_headers(stream_id, headers, end)

    def _reset(self, stream_id: int, recv_open: bool, error_code: int) -> None:
        self._quic.reset_stream(stream_id, error_code)
        if recv_open:
            self._quic_stop(stream_id, error_code)

    def _stop_request(self, stream_id: int) -> None:
        self._quic_stop(stream_id, ErrorCode.H3_NO_ERROR)  # (Rule 3 of ``http3.py``)

    def _quic_stop(self, stream_id: int, error_code: int) -> None:
        try:
            self._quic.stop_stream(stream_id, error_code)
        except ValueError:
            pass  # (aioquic already forgot the stream: nothing more will be read)

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

    def _check_backlog(self, record: StreamRecord) -> None:
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

    def _unblock(self, record: StreamRecord) -> None:
        if self._blocked.pop(record.asgi.stream_id, None) is not None:
            record.blocked_since = None
            self._refresh_stall()
        if record.asgi.send_blocked:
            record.asgi.release_send()

    # -- inbound flow control -----------------------------------------------------------------

    def _unread(self, stream_id: int) -> int:
        record = self._streams.get(stream_id)
        return record.held if record is not None else 0

    def _unread_total(self) -> int:
        return self._held

    def _hold(self, record: StreamRecord, size: int) -> None:
        record.held += size
        self._held += size

    def _release(self, record: StreamRecord, size: int) -> None:
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
            self._flush_at(now)  # (aioquic widens the windows the app's reading allows)
        if stream.buffered:
            stream.notify_on_read = True

    def _forget(self, record: StreamRecord) -> None:
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
        self._flush_at(now)
        self._check_backlog(record)

    def send_body(
        self, stream: AsgiHttpStream | AsgiWsStream, data: bytes, end: bool, now: float
    ) -> None:
        record = self._live(stream)
        if record is None:
            return
        self._now = now
        self._send_body(record, data, end)
        self._flush_at(now)
        self._check_backlog(record)

    def _send_body(self, record: StreamRecord, data: bytes, end: bool) -> None:
        # (A body that breaks its Content-Length raises; the stream's cleanup resets it.)
        record.remaining = body_remaining(record.remaining, len(data), end)
        if record.no_body:
            data = b""
        if data or end:
            assert self._h3 is not None
            self._h3.send_data(record.asgi.stream_id, data, end)
        if end:
            self._response_complete(record)

    def _send_trailers(self, record: StreamRecord, block: list[tuple[bytes, bytes]]) -> None:
        h3 = self._h3
        assert h3 is not None
        if block:
            h3.send_headers(record.asgi.stream_id, block, True)
        else:
            h3.send_data(record.asgi.stream_id, b"", True)
        self._response_complete(record)

    def send_push(
        self, stream: AsgiHttpStream, path: str, headers: list[tuple[bytes, bytes]], now: float
    ) -> None:
        """(No server push on HTTP/3: browsers never supported it.)"""

    def _live(self, stream: AsgiHttpStream | AsgiWsStream) -> StreamRecord | None:
        # (MultiplexedStreams._live, and not closing: written out, it is on every send.)
        record = self._streams.get(stream.stream_id)
        if record is None or record.asgi is not stream or self._closing or self._closed:
            return None
        return record
