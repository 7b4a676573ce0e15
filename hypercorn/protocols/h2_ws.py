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

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from hypercorn.protocols.asgi_http import host_allowed
from hypercorn.protocols.asgi_ws import AsgiWsStream, build_ws_scope
from hypercorn.protocols.errors import RemoteProtocolError
from hypercorn.protocols.h2_engine import CANCEL
from hypercorn.protocols.h2_headers import error_head, response_head
from hypercorn.protocols.h2_streams import H2Streams, Stream
from hypercorn.protocols.ws import WsSession
from hypercorn.protocols.ws_handshake import judge_handshake

if TYPE_CHECKING:
    from hypercorn.protocols.asgi_ws import WsHttpWire
    from hypercorn.protocols.headers import DateCache
    from hypercorn.protocols.limits import ProtocolLimits
    from hypercorn.protocols.ws import WsCarrier


class WsStreamState:
    """The WebSocket side of one HTTP/2 stream record (``Stream.ws``)."""

    __slots__ = ("early", "paused", "session", "unread")

    def __init__(self) -> None:
        self.session: WsSession | None = None
        #: DATA that came before the accept, fed to the session after it.
        self.early: list[bytes] = []
        #: The session paused reading: credit is held back (``unread`` bytes).
        self.paused = False
        self.unread = 0


class H2WsCarrier:
    """A ``WsCarrier`` on one HTTP/2 stream (rule 2)."""

    __slots__ = ("_conn", "_record")

    def __init__(self, conn: H2WebSockets, record: Stream) -> None:
        self._conn = conn
        self._record = record

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

    def abort(self) -> None:
        if self._live():
            conn = self._conn
            record = self._record
            conn._engine.reset_stream(record.asgi.stream_id, CANCEL)
            conn._streams.pop(record.asgi.stream_id, None)
            conn._forget(record)
            conn._flush()

    def pause_reading(self) -> None:
        ws = self._record.ws
        assert ws is not None
        ws.paused = True

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

    __slots__ = ("_ws_records", "_ws_stream_class")

    def _init_websockets(self, ws_stream_class: type[AsgiWsStream]) -> None:
        self._ws_stream_class = ws_stream_class
        #: The WebSocket streams with a session, by stream id (their deadlines, shutdown).
        self._ws_records: dict[int, Stream] = {}

    # -- opening -------------------------------------------------------------------------

    def _open_websocket(
        self,
        stream_id: int,
        path: bytes,
        headers: list[tuple[bytes, bytes]],
        end_stream: bool,
        *,
        scheme_secure: bool,
        client: tuple[str, int] | None,
        server: tuple[str, int | None] | None,
        root_path: str,
        state: dict[str, Any] | None,
        tls: Mapping[str, Any] | None,
        server_names: tuple[str, ...],
    ) -> None:
        asgi = websocket_stream(
            self,
            self._ws_stream_class,
            b"2",
            stream_id,
            path,
            headers,
            end_stream,
            scheme_secure=scheme_secure,
            client=client,
            server=server,
            root_path=root_path,
            state=state,
            tls=tls,
            limits=self._limits,
            now=self._now,
        )
        if isinstance(asgi, int):
            self._engine.send_headers(stream_id, refusal_head(asgi), True)
            if not end_stream:
                self._engine.reset_stream(stream_id, 0)  # (NO_ERROR: we are done with it)
            return
        record = Stream(asgi, True)
        record.ws = WsStreamState()
        self._streams[stream_id] = record
        self._stream_opened()
        if server_names and not host_allowed(headers, server_names):
            asgi.status = 404
            self.send_error(asgi, 404, self._now)
            return
        self._sink.start_app(asgi)

    def accept_websocket(
        self, stream: AsgiWsStream, headers: list[tuple[bytes, bytes]], now: float
    ) -> None:
        record = self._streams.get(stream.stream_id)
        if record is None or record.asgi is not stream or self._closed or record.ws is None:
            return
        self._now = now
        out = accepted_head(headers, self._dates, self._server_value, now)
        self._engine.send_headers(stream.stream_id, out, False)
        record.head_sent = True
        self._ws_records[stream.stream_id] = record
        open_session(
            record.ws,
            H2WsCarrier(self, record),
            stream,
            self._limits,
            now,
            self._set_deadline,
            eof=not record.recv_open,
            shutting_down=self._ws_shutting_down(),
        )
        self._set_deadline()
        self._flush()

    # -- the peer's side ---------------------------------------------------------------------

    def _ws_data(self, record: Stream, data: bytes, flow_length: int, end_stream: bool) -> None:
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

    def _credit(self, record: Stream, amount: int) -> None:
        self._conn_debt += amount
        if record.recv_open:
            record.stream_debt += amount
        self._return_windows(record)

    def _ws_forget(self, record: Stream) -> None:
        """``record`` left the table (``_forget``): its session is over (rule 2)."""
        ws = record.ws
        assert ws is not None
        self._ws_records.pop(record.asgi.stream_id, None)
        if ws.unread:
            self._conn_debt += ws.unread
            ws.unread = 0
        if ws.session is not None:
            ws.session.connection_lost()

    # -- deadlines and shutdown (rule 3) ------------------------------------------------------

    def _ws_deadline(self) -> float | None:
        return sessions_deadline(self._ws_records.values())

    def _ws_handle_deadline(self, now: float) -> None:
        sessions_handle_deadline(self._ws_records.values(), now)

    def _ws_start_shutdown(self, now: float) -> None:
        sessions_start_shutdown(self._ws_records.values(), now)

    # -- hooks for the connection half --------------------------------------------------------

    def _stream_opened(self) -> None:
        raise NotImplementedError

    def _ws_shutting_down(self) -> bool:
        raise NotImplementedError


def is_websocket_connect(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    """The ``:protocol`` of an extended CONNECT (RFC 8441), or None."""
    for name, value in headers:
        if name[:1] != b":":
            return None  # (pseudo-headers come first)
        if name == b":protocol":
            return value
    return None


# -- shared with HTTP/3 (RFC 9220, ``h3_streams.py``) ----------------------------------------


class _WsRecord(Protocol):
    @property
    def ws(self) -> WsStreamState | None: ...


def websocket_stream(
    wire: WsHttpWire,
    stream_class: type[AsgiWsStream],
    http_version: bytes,
    stream_id: int,
    path: bytes,
    headers: list[tuple[bytes, bytes]],
    end_stream: bool,
    *,
    scheme_secure: bool,
    client: tuple[str, int] | None,
    server: tuple[str, int | None] | None,
    root_path: str,
    state: dict[str, Any] | None,
    tls: Mapping[str, Any] | None,
    limits: ProtocolLimits,
    now: float,
) -> AsgiWsStream | int:
    """The ASGI WebSocket for an extended CONNECT ``:protocol websocket`` request, or the
    status refusing it (a bad handshake, or a request without a stream to tunnel on)."""
    judged = judge_handshake(headers, http2=True)
    if isinstance(judged, RemoteProtocolError) or end_stream:
        return judged.status_hint if isinstance(judged, RemoteProtocolError) else 400
    scope = build_ws_scope(
        http_version,
        path,
        headers,
        scheme_secure,
        client,
        server,
        root_path,
        state,
        tls,
        judged.subprotocols,
    )
    return stream_class(
        wire,
        scope,
        judged,
        stream_id,
        now,
        max_message_size=limits.websocket_max_message_size,
        deflate_allowed=limits.websocket_deflate,
        http2=True,
    )


def refusal_head(status: int) -> list[tuple[bytes, bytes]]:
    """The response head refusing a WebSocket extended CONNECT with ``status``."""
    head = error_head(status, None, None, 0.0)
    if status == 426:
        head.append((b"sec-websocket-version", b"13"))
    return head


def sessions_deadline(records: Iterable[_WsRecord]) -> float | None:
    """The earliest deadline of the sessions of ``records`` (rule 3)."""
    earliest: float | None = None
    for record in records:
        session = record.ws.session  # type: ignore[union-attr]
        deadline = session.deadline if session is not None else None
        if deadline is not None and (earliest is None or deadline < earliest):
            earliest = deadline
    return earliest


def sessions_handle_deadline(records: Iterable[_WsRecord], now: float) -> None:
    for record in list(records):
        session = record.ws.session  # type: ignore[union-attr]
        if session is not None and session.deadline is not None and now >= session.deadline:
            session.handle_deadline(now)


def accepted_head(
    headers: list[tuple[bytes, bytes]],
    dates: DateCache | None,
    server_value: bytes | None,
    now: float,
    extra: tuple[tuple[bytes, bytes], ...] = (),
) -> list[tuple[bytes, bytes]]:
    """The ``:status 200`` head accepting a WebSocket with the handshake's ``headers``."""
    return response_head(200, headers, dates, server_value, extra, now)[0]


def open_session(
    ws: WsStreamState,
    carrier: WsCarrier,
    stream: AsgiWsStream,
    limits: ProtocolLimits,
    now: float,
    on_deadline: Callable[[], object],
    *,
    eof: bool,
    shutting_down: bool,
) -> WsSession:
    """The session of an accepted WebSocket stream, fed what arrived before the accept."""
    stream.status = 200
    session = WsSession(
        carrier=carrier, stream=stream, limits=limits, now=now, on_deadline=on_deadline
    )
    ws.session = session
    early, ws.early = ws.early, []
    for data in early:
        session.receive_data(data, now)
    if eof:
        session.receive_data(b"", now)
    if shutting_down:
        session.start_shutdown(now)
    return session


def sessions_start_shutdown(records: Iterable[_WsRecord], now: float) -> None:
    """A graceful shutdown: 1001 to every session of ``records``."""
    for record in list(records):
        session = record.ws.session  # type: ignore[union-attr]
        if session is not None:
            session.start_shutdown(now)
