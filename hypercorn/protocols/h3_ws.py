"""WebSockets over HTTP/3 (RFC 9220): an extended CONNECT stream carries one WebSocket.

They are HTTP/2's (RFC 8441, ``h2_ws.py``, whose rules hold here) on QUIC streams, and
share its code (``multiplexed.py``): an extended CONNECT ``:protocol websocket`` (aioquic
advertises ``SETTINGS_ENABLE_CONNECT_PROTOCOL``) becomes an ``AsgiWsStream``; ``websocket.accept``
answers ``:status 200`` and attaches a ``WsSession`` whose carrier is the stream
(``H3WsCarrier``): its bytes go out as DATA frames, the peer's DATA feeds it, its close is
the stream's FIN and its abort a reset. aioquic's windows do not wait for the app (see
``http3.py``), so data the session cannot take yet (its app is not receiving, or it came
before the accept) waits in the stream's ``early`` list, in order, until it can.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hypercorn.protocols.h3_streams import H3Streams
from hypercorn.protocols.multiplexed_ws import StreamCarrier, accepted_head

if TYPE_CHECKING:
    from hypercorn.protocols.asgi_ws import AsgiWsStream
    from hypercorn.protocols.multiplexed import StreamRecord


class H3WsCarrier(StreamCarrier["H3WebSockets"]):
    """A ``WsCarrier`` on one HTTP/3 stream."""

    __slots__ = ()

    def _live(self) -> bool:
        conn = self._conn
        record = self._record
        return not conn._closing and conn._streams.get(record.asgi.stream_id) is record

    def write(self, data: bytes) -> None:
        if self._live():
            self._conn._ws_send(self._record, data, False)

    def close(self) -> None:
        if self._live():
            self._conn._ws_send(self._record, b"", True)

    def resume_reading(self) -> None:
        ws = self._record.ws
        assert ws is not None
        ws.paused = False
        conn = self._conn
        if ws.early and ws.session is not None and self._live():
            held, ws.early = ws.early, []
            now = conn._now
            for data in held:
                conn._release(self._record, len(data))
                ws.session.receive_data(data, now)
            conn._flush_at(now)  # (the windows reopen)


class H3WebSockets(H3Streams):
    """RFC 9220 for ``Http3Connection``; see the module docstring."""

    __slots__ = ()

    def accept_websocket(
        self, stream: AsgiWsStream, headers: list[tuple[bytes, bytes]], now: float
    ) -> None:
        record = self._live(stream)
        if record is None or record.ws is None:
            return
        self._now = now
        out = accepted_head(headers, self._dates, self._server_value, now, self._extra)
        self._send_headers(stream.stream_id, out, False)
        record.head_sent = True
        # (An EOF that came is in ``early``, in order.)
        self._open_session(record, H3WsCarrier(self, record), now, eof=False)
        if record.held:
            self._release(record, record.held)  # (the session took what was held)
        self._flush_at(now)

    # -- the peer's side, our side ---------------------------------------------------------------

    def _ws_data(self, record: StreamRecord, data: bytes, end_stream: bool) -> None:
        ws = record.ws
        assert ws is not None
        if end_stream:
            record.recv_open = False
        session = ws.session
        if session is None or ws.paused or ws.early:
            # Held, in order, until the session can take it; b"" is the peer's end.
            if data:
                ws.early.append(data)
                self._hold(record, len(data))
            if end_stream:
                ws.early.append(b"")
            return
        if data:
            session.receive_data(data, self._now)
        if end_stream:
            session.receive_data(b"", self._now)

    def _ws_send(self, record: StreamRecord, data: bytes, end: bool) -> None:
        assert self._h3 is not None
        self._h3.send_data(record.asgi.stream_id, data, end)
        if end:
            self._response_complete(record)
        self._flush_at(self._now)
        if not end:
            self._check_backlog(record)

    def _ws_forget(self, record: StreamRecord) -> None:
        ws = record.ws
        assert ws is not None
        self._ws_records.pop(record.asgi.stream_id, None)
        ws.early = []
        if ws.session is not None:
            ws.session.connection_lost()
