"""WebSockets over HTTP/2 (RFC 8441): an extended CONNECT stream carries one WebSocket.

``H2WebSockets`` is the part of ``H2Connection`` (``http2.py``) that serves them. The server
advertises ``SETTINGS_ENABLE_CONNECT_PROTOCOL``; a request ``:method CONNECT`` with
``:protocol websocket`` becomes an ``AsgiWsStream`` (the same ASGI state machine as over
HTTP/1.1). Its app answers like any other: a denial is an ordinary response on the stream
(not 2xx: that would open the tunnel), and ``websocket.accept`` sends ``:status 200`` and
attaches a ``WsSession`` whose carrier is the stream (``H2WsCarrier``): the session's bytes
go out as DATA within the peer's windows, and the peer's DATA feeds the session.

Rules, beside those of ``http2.py``:

1. Flow control: DATA taken from a WebSocket stream is credited back at once, unless the
   session paused reading (its app is not receiving); then the peer can send at most the
   stream window more, until the app catches up. DATA sent before the accept is held (within
   the window) and fed to the session after the ``200``.
2. The session's close ends the stream (END_STREAM after the close frame; the peer's
   END_STREAM without a close frame is the WebSocket's EOF, 1006); its abort, a dead peer or
   a peer that does not read, resets it (CANCEL). A stream the peer resets, or that the
   connection drops, ends the session (1006).
3. Each session keeps its own ping and close deadlines; the connection's one deadline is
   the earliest of its own and theirs. A graceful shutdown sends every WebSocket 1001 along
   with the GOAWAY, and the connection closes when the last stream is done.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hypercorn.protocols.h2_streams import H2Streams
from hypercorn.protocols.multiplexed_ws import StreamCarrier, accepted_head

if TYPE_CHECKING:
    from hypercorn.protocols.asgi_ws import AsgiWsStream
    from hypercorn.protocols.multiplexed import StreamRecord


class H2WsCarrier(StreamCarrier["H2WebSockets"]):
    """A ``WsCarrier`` on one HTTP/2 stream (rule 2)."""

    __slots__ = ()

    def _live(self) -> bool:
        record = self._record
        conn = self._conn
        return not conn._closed and conn._streams.get(record.asgi.stream_id) is record

    def write(self, data: bytes) -> None:
        if self._live():
            self._conn._send_body(self._record, data, False)
            self._conn._flush()

    def close(self) -> None:
        if self._live():
            self._conn._send_body(self._record, b"", True)
            self._conn._flush()

    def resume_reading(self) -> None:
        ws = self._record.ws
        assert ws is not None
        ws.paused = False
        if ws.unread and self._live():
            self._conn._credit(self._record, ws.unread)
            ws.unread = 0
            self._conn._flush()


class H2WebSockets(H2Streams):
    """RFC 8441 for ``H2Connection``; see the module docstring."""

    __slots__ = ()

    def accept_websocket(
        self, stream: AsgiWsStream, headers: list[tuple[bytes, bytes]], now: float
    ) -> None:
        record = self._live(stream)
        if record is None or record.ws is None:
            return
        self._now = now
        out = accepted_head(headers, self._dates, self._server_value, now)
        self._engine.send_headers(stream.stream_id, out, False)
        record.head_sent = True
        self._open_session(record, H2WsCarrier(self, record), now, eof=not record.recv_open)
        self._set_deadline()
        self._flush()

    # -- the peer's side ---------------------------------------------------------------------

    def _ws_data(
        self, record: StreamRecord, data: bytes, flow_length: int, end_stream: bool
    ) -> None:
        """DATA on a WebSocket stream (the connection window is already charged)."""
        ws = record.ws
        assert ws is not None
        record.recv_window -= flow_length
        session = ws.session
        if end_stream:
            record.recv_open = False
        if session is None:
            if data:
                ws.early.append(data)
            ws.unread += flow_length
            return
        if data:
            session.receive_data(data, self._now)
        if end_stream:
            session.receive_data(b"", self._now)
        if ws.paused:
            ws.unread += flow_length
        elif flow_length:
            self._credit(record, flow_length)
        self._set_deadline()

    def _credit(self, record: StreamRecord, amount: int) -> None:
        self._conn_debt += amount
        if record.recv_open:
            record.stream_debt += amount
        self._return_windows(record)

    def _ws_forget(self, record: StreamRecord) -> None:
        """``record`` left the table (``_forget``): its session is over (rule 2)."""
        ws = record.ws
        assert ws is not None
        self._ws_records.pop(record.asgi.stream_id, None)
        if ws.unread:
            self._conn_debt += ws.unread
            ws.unread = 0
        if ws.session is not None:
            ws.session.connection_lost()
