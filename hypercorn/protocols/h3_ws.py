"""WebSockets over HTTP/3 (RFC 9220): an extended CONNECT stream carries one WebSocket.

They are HTTP/2's (RFC 8441, ``h2_ws.py``, whose rules hold here) on QUIC streams, and
share its code: an extended CONNECT ``:protocol websocket`` (aioquic advertises
``SETTINGS_ENABLE_CONNECT_PROTOCOL``) becomes an ``AsgiWsStream``; ``websocket.accept``
answers ``:status 200`` and attaches a ``WsSession`` whose carrier is the stream
(``H3WsCarrier``): its bytes go out as DATA frames, the peer's DATA feeds it, its close is
the stream's FIN and its abort a reset. aioquic's windows do not wait for the app (see
``http3.py``), so data the session cannot take yet (its app is not receiving, or it came
before the accept) waits in the stream's ``early`` list, in order, until it can.
"""

from __future__ import annotations

from aioquic.h3.connection import ErrorCode

from hypercorn.protocols.asgi_http import host_allowed
from hypercorn.protocols.asgi_ws import AsgiWsStream
from hypercorn.protocols.h2_ws import (
    WsStreamState,
    accepted_head,
    open_session,
    refusal_head,
    sessions_deadline,
    sessions_handle_deadline,
    sessions_start_shutdown,
    websocket_stream,
)
from hypercorn.protocols.h3_streams import H3Stream, H3Streams


class H3WsCarrier:
    """A ``WsCarrier`` on one HTTP/3 stream."""

    __slots__ = ("_conn", "_record")

    def __init__(self, conn: H3WebSockets, record: H3Stream) -> None:
        self._conn = conn
        self._record = record

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

    def abort(self) -> None:
        if self._live():
            conn = self._conn
            record = self._record
            stream_id = record.asgi.stream_id
            conn._quic.reset_stream(stream_id, ErrorCode.H3_REQUEST_CANCELLED)
            if record.recv_open:
                conn._quic_stop(stream_id, ErrorCode.H3_REQUEST_CANCELLED)
            conn._streams.pop(stream_id, None)
            conn._forget(record)
            conn._flush(conn._now)

    def pause_reading(self) -> None:
        ws = self._record.ws
        assert ws is not None
        ws.paused = True

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
            conn._flush(now)  # (the windows reopen)


class H3WebSockets(H3Streams):
    """RFC 9220 for ``Http3Connection``; see the module docstring."""

    __slots__ = ()

    # -- hooks for the connection half ---------------------------------------------------------

    def _stream_opened(self) -> None:
        raise NotImplementedError

    def _ws_shutting_down(self) -> bool:
        raise NotImplementedError

    # -- opening ---------------------------------------------------------------------------------

    def _open_websocket(
        self,
        stream_id: int,
        path: bytes,
        headers: list[tuple[bytes, bytes]],
        end_stream: bool,
    ) -> None:
        asgi = websocket_stream(
            self,
            self._ws_stream_class,
            b"3",
            stream_id,
            path,
            headers,
            end_stream,
            scheme_secure=True,
            client=self._client,
            server=self._server,
            root_path=self._root_path,
            state=self._state,
            tls=self._tls,
            limits=self._limits,
            now=self._now,
        )
        if isinstance(asgi, int):
            assert self._h3 is not None
            self._h3.send_headers(stream_id, refusal_head(asgi), True)
            if not end_stream:
                self._quic_stop(stream_id, ErrorCode.H3_NO_ERROR)
            return
        record = H3Stream(asgi, True)
        record.ws = WsStreamState()
        self._streams[stream_id] = record
        self._stream_opened()
        if self._server_names and not host_allowed(headers, self._server_names):
            asgi.status = 404
            self.send_error(asgi, 404, self._now)
            return
        self._sink.start_app(asgi)

    def accept_websocket(
        self, stream: AsgiWsStream, headers: list[tuple[bytes, bytes]], now: float
    ) -> None:
        record = self._streams.get(stream.stream_id)
        if record is None or record.asgi is not stream or self._closing or record.ws is None:
            return
        self._now = now
        assert self._h3 is not None
        out = accepted_head(headers, self._dates, self._server_value, now, self._extra)
        self._h3.send_headers(stream.stream_id, out, False)
        record.head_sent = True
        self._ws_records[stream.stream_id] = record
        ws = record.ws
        open_session(
            ws,
            H3WsCarrier(self, record),
            stream,
            self._limits,
            now,
            self._set_deadline,
            eof=False,  # (an EOF that came is in ``early``, in order)
            shutting_down=self._ws_shutting_down(),
        )
        if record.held:
            self._release(record, record.held)  # (the session took what was held)
        self._flush(now)

    # -- the peer's side, our side ---------------------------------------------------------------

    def _ws_data(self, record: H3Stream, data: bytes, end_stream: bool) -> None:
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

    def _ws_send(self, record: H3Stream, data: bytes, end: bool) -> None:
        assert self._h3 is not None
        self._h3.send_data(record.asgi.stream_id, data, end)
        if end:
            self._response_complete(record)
        self._flush(self._now)
        if not end:
            self._check_backlog(record)

    def _ws_forget(self, record: H3Stream) -> None:
        ws = record.ws
        assert ws is not None
        self._ws_records.pop(record.asgi.stream_id, None)
        ws.early = []
        if ws.session is not None:
            ws.session.connection_lost()

    # -- deadlines and shutdown ----------------------------------------------------------------

    def _ws_deadline(self) -> float | None:
        return sessions_deadline(self._ws_records.values())

    def _ws_handle_deadline(self, now: float) -> None:
        sessions_handle_deadline(self._ws_records.values(), now)

    def _ws_start_shutdown(self, now: float) -> None:
        sessions_start_shutdown(self._ws_records.values(), now)
