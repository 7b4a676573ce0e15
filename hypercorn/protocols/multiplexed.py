"""What HTTP/2 and HTTP/3 connections share: many ASGI streams on one connection.

``MultiplexedStreams`` is the base of ``H2Streams`` (``h2_streams.py``) and ``H3Streams``
(``h3_streams.py``). It holds the stream table and the scope's facts, turns a request (or an
extended CONNECT, RFC 8441 / RFC 9220) into a stream, and keeps the rules the two protocols
state alike:

* a stream leaves the table when its response is complete and its request was read to the
  end, or either side reset it; a response completed while the request is still coming asks
  the peer to stop sending it (``_stop_request``);
* a stream whose app waits for its data to go out (``_blocked``) is reset after
  ``write_timeout``;
* the connection's one deadline is the earliest of idle, the shutdown PING, stalled streams
  and the WebSocket sessions' own; a graceful shutdown sends every WebSocket 1001.

What differs - frames, windows and flow control, error codes, how a stream is reset - is
each protocol's, behind the hooks below. The paths every request takes (``send_head``,
``send_body``, the peer's DATA, ``app_reading``) are written out in each protocol's module:
a hook call there would cost every request. The WebSocket pieces of a stream are in
``multiplexed_ws.py``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from hypercorn.protocols.asgi_http import AsgiHttpStream, build_scope, host_allowed
from hypercorn.protocols.asgi_ws import AsgiWsStream, build_ws_scope
from hypercorn.protocols.errors import AppProtocolError, RemoteProtocolError
from hypercorn.protocols.h2_guard import STREAM_WINDOW
from hypercorn.protocols.h2_headers import error_head, response_facts, status_bytes, trailer_block
from hypercorn.protocols.multiplexed_ws import WsStreamState, refusal_head
from hypercorn.protocols.ws import WsSession
from hypercorn.protocols.ws_handshake import judge_handshake

if TYPE_CHECKING:
    from hypercorn.protocols.connection import ConnectionSink
    from hypercorn.protocols.headers import DateCache
    from hypercorn.protocols.limits import ProtocolLimits
    from hypercorn.protocols.ws import WsCarrier

_INFINITY = float("inf")


class StreamRecord:
    """The wire's state for one stream, beside its ASGI stream.

    One class for both protocols (a subclass per protocol would cost a ``super().__init__``
    call per stream): the HTTP/2 fields (inbound windows, and the body its windows hold
    back) stay at their start values on HTTP/3, whose QUIC layer keeps those itself.
    """

    __slots__ = (
        "asgi",
        "blocked_since",
        "head_sent",
        "held",
        "no_body",
        "pending",
        "pending_end",
        "pending_trailers",
        "recv_open",
        "recv_window",
        "remaining",
        "response_done",
        "stream_debt",
        "trailers",
        "ws",
    )

    def __init__(self, asgi: AsgiHttpStream | AsgiWsStream, recv_open: bool) -> None:
        self.asgi = asgi
        #: A WebSocket's state (RFC 8441 / RFC 9220), or None for an HTTP exchange.
        self.ws: WsStreamState | None = None
        #: The request (or the peer's side of a WebSocket) is still coming.
        self.recv_open = recv_open
        #: Body bytes handed to the app and not read by it yet (inbound flow control).
        self.held = 0
        #: Since when the app waits for the stream's data to go out (in ``_blocked``).
        self.blocked_since: float | None = None
        self.head_sent = False
        self.response_done = False
        #: Bytes the app's Content-Length still promises, or None.
        self.remaining: int | None = None
        #: HEAD, 204 or 304: no DATA whatever the app sends.
        self.no_body = False
        #: HTTP/2: what the peer may still send on this stream, and what we owe it.
        self.recv_window = STREAM_WINDOW
        self.stream_debt = 0
        #: HTTP/2: response body the windows did not let go yet (one app message at most).
        self.pending = b""
        self.pending_end = False
        self.pending_trailers: list[tuple[bytes, bytes]] | None = None
        #: HTTP/3: the request's trailers, until its end (HTTP/2's engine hands both over
        #: in one event).
        self.trailers: list[tuple[bytes, bytes]] | None = None


class MultiplexedStreams:
    """The stream table of an HTTP/2 or HTTP/3 connection; see the module docstring."""

    __slots__ = (
        "_blocked",
        "_client",
        "_closed",
        "_dates",
        "_draining",
        "_extra",
        "_http_version",
        "_idle_at",
        "_keep_alive_timeout",
        "_limits",
        "_now",
        "_offers_push",
        "_ping_at",
        "_root_path",
        "_scheme",
        "_server",
        "_server_names",
        "_server_value",
        "_shutting_down",
        "_sink",
        "_stall_at",
        "_state",
        "_stream_class",
        "_streams",
        "_tls",
        "_ws_records",
        "_ws_stream_class",
        "deadline",
    )

    #: Interim (1xx) responses can be sent.
    _SENDS_INTERIM: ClassVar[bool]
    #: The stream error codes of an app's failure, and of a stream given up on (its app
    #: stalled, or its WebSocket aborted).
    _INTERNAL_ERROR: ClassVar[int]
    _CANCEL: ClassVar[int]

    def __init__(
        self,
        sink: ConnectionSink,
        limits: ProtocolLimits,
        dates: DateCache,
        *,
        http_version: bytes,
        push: bool,
        client: tuple[str, int] | None,
        server: tuple[str, int | None] | None,
        scheme: str,
        tls: Mapping[str, Any] | None,
        state: dict[str, Any] | None,
        server_value: bytes | None,
        stream_class: type[AsgiHttpStream],
        ws_stream_class: type[AsgiWsStream],
        now: float,
    ) -> None:
        self._sink = sink
        self._limits = limits
        self._dates: DateCache | None = dates if limits.include_date_header else None
        self._server_value = server_value
        self._extra = limits.extra_headers
        #: The scope's facts, the same for every stream of the connection. (The version and
        #: push are read per stream: instance attributes, as Python 3.11 reads class
        #: constants through an instance slower.)
        self._http_version = http_version
        #: Requests may push (HTTP/2 server push): their scope offers ``http.response.push``.
        self._offers_push = push
        self._client = client
        self._server = server
        self._scheme = scheme
        self._tls = tls
        self._state = state
        self._root_path = limits.root_path
        self._server_names = limits.server_names
        #: What requests become: a subclass may carry what the driver needs per request.
        self._stream_class = stream_class
        self._ws_stream_class = ws_stream_class
        self._keep_alive_timeout = limits.keep_alive_timeout
        self._streams: dict[int, StreamRecord] = {}
        #: Streams whose apps wait for their data to go out (``blocked_since`` is set).
        self._blocked: dict[int, StreamRecord] = {}
        #: WebSocket streams with a session (their deadlines, shutdown).
        self._ws_records: dict[int, StreamRecord] = {}
        self._now = now
        self._closed = False
        #: A graceful shutdown started (``start_shutdown``).
        self._shutting_down = False
        #: The final GOAWAY is out (or the peer sent one): close when the last stream is done.
        self._draining = False
        #: The preface (or handshake) and the first request must come within
        #: header_read_timeout; later, the keep-alive timeout of a connection with no stream.
        self._idle_at: float | None = now + limits.header_read_timeout
        #: The first GOAWAY's PING is out: the second GOAWAY is due by then.
        self._ping_at: float | None = None
        self._stall_at: float | None = None
        #: The earliest of the deadlines (``_set_deadline``), public because the driver
        #: reads it after every core call.
        self.deadline: float | None = self._idle_at

    if TYPE_CHECKING:
        # The rest of StreamWire and WsHttpWire, written out by each protocol (hot paths).
        def send_head(self, *args: Any, **kwargs: Any) -> None: ...
        def send_body(self, *args: Any, **kwargs: Any) -> None: ...
        def send_push(self, *args: Any, **kwargs: Any) -> None: ...
        def app_reading(self, *args: Any, **kwargs: Any) -> None: ...
        def accept_websocket(self, *args: Any, **kwargs: Any) -> None: ...

    # -- hooks for each protocol ---------------------------------------------------------

    def _send_headers(self, stream_id: int, headers: list[tuple[bytes, bytes]], end: bool) -> None:
        raise NotImplementedError

    def _send_trailers(self, record: StreamRecord, block: list[tuple[bytes, bytes]]) -> None:
        """End the response with the trailer ``block`` (or an empty DATA when it is empty)."""
        raise NotImplementedError

    def _reset(self, stream_id: int, recv_open: bool, error_code: int) -> None:
        """Reset the stream both ways (the peer's side only while ``recv_open``)."""
        raise NotImplementedError

    def _stop_request(self, stream_id: int) -> None:
        """The response is complete, the request still coming: ask the peer to stop."""
        raise NotImplementedError

    def _flush_at(self, now: float) -> None:
        """Send what the calls before queued."""
        raise NotImplementedError

    def _forget(self, record: StreamRecord) -> None:
        """``record`` left the table: release what it held and tell its app."""
        raise NotImplementedError

    def _ws_forget(self, record: StreamRecord) -> None:
        """A WebSocket stream left the table: its session is over."""
        raise NotImplementedError

    def _stream_opened(self) -> None:
        raise NotImplementedError

    def _final_goaway(self) -> None:
        raise NotImplementedError

    def _close_if_done(self) -> None:
        raise NotImplementedError

    # -- driver side -----------------------------------------------------------------------

    @property
    def idle(self) -> bool:
        return not self._streams

    @property
    def closed(self) -> bool:
        return self._closed

    # -- opening -------------------------------------------------------------------------

    def _open_stream(
        self,
        stream_id: int,
        method: bytes,
        path: bytes,
        headers: list[tuple[bytes, bytes]],
        end_stream: bool,
    ) -> StreamRecord:
        scope = build_scope(
            self._http_version,
            method,
            path,
            headers,
            self._scheme,
            self._client,
            self._server,
            self._root_path,
            self._state,
            self._tls,
        )
        if self._offers_push:
            scope["extensions"]["http.response.push"] = {}
        asgi = self._stream_class(self, scope, stream_id, self._now)
        record = StreamRecord(asgi, not end_stream)
        record.no_body = method == b"HEAD"
        self._streams[stream_id] = record
        self._stream_opened()
        if end_stream:
            asgi.end_unsent = True
        if self._server_names and not host_allowed(headers, self._server_names):
            asgi.status = 404
            self.send_error(asgi, 404, self._now)
            return record
        self._sink.start_app(asgi)
        return record

    def _open_websocket(
        self,
        stream_id: int,
        path: bytes,
        headers: list[tuple[bytes, bytes]],
        end_stream: bool,
    ) -> None:
        """An extended CONNECT ``:protocol websocket``: an ``AsgiWsStream``, or a refusal (a
        bad handshake, or a request without a stream to tunnel on)."""
        judged = judge_handshake(headers, http2=True)
        if isinstance(judged, RemoteProtocolError) or end_stream:
            status = judged.status_hint if isinstance(judged, RemoteProtocolError) else 400
            self._refuse(stream_id, refusal_head(status), end_stream)
            return
        scope = build_ws_scope(
            self._http_version,
            path,
            headers,
            self._scheme == "https",
            self._client,
            self._server,
            self._root_path,
            self._state,
            self._tls,
            judged.subprotocols,
        )
        limits = self._limits
        asgi = self._ws_stream_class(
            self,
            scope,
            judged,
            stream_id,
            self._now,
            max_message_size=limits.websocket_max_message_size,
            deflate_allowed=limits.websocket_deflate,
            http2=True,
        )
        record = StreamRecord(asgi, True)
        record.ws = WsStreamState()
        self._streams[stream_id] = record
        self._stream_opened()
        if self._server_names and not host_allowed(headers, self._server_names):
            asgi.status = 404
            self.send_error(asgi, 404, self._now)
            return
        self._sink.start_app(asgi)

    def _refuse(self, stream_id: int, head: list[tuple[bytes, bytes]], end_stream: bool) -> None:
        """A complete response ``head`` for a request no app sees."""
        self._send_headers(stream_id, head, True)
        if not end_stream:
            self._stop_request(stream_id)

    # -- writing (the cold parts of StreamWire) ---------------------------------------------

    def _live(self, stream: AsgiHttpStream | AsgiWsStream) -> StreamRecord | None:
        """``stream``'s record, while it is in the table and the connection serves it."""
        record = self._streams.get(stream.stream_id)
        if record is None or record.asgi is not stream or self._closed:
            return None
        return record

    def send_error(self, stream: AsgiHttpStream | AsgiWsStream, status: int, now: float) -> None:
        record = self._live(stream)
        if record is None:
            return
        if record.head_sent:
            self.abort_stream(stream, now)
            return
        head = error_head(status, self._dates, self._server_value, now)
        self._send_headers(stream.stream_id, head, True)
        self._response_complete(record)
        self._flush_at(now)

    def send_trailers(
        self, stream: AsgiHttpStream, headers: Iterable[tuple[bytes, bytes]], now: float
    ) -> None:
        record = self._live(stream)
        if record is None:
            return
        self._now = now
        if record.remaining:
            raise AppProtocolError("response body shorter than its content-length")
        self._send_trailers(record, trailer_block(headers))
        self._flush_at(now)

    def send_informational(
        self, stream: AsgiHttpStream, status: int, headers: list[tuple[bytes, bytes]], now: float
    ) -> None:
        record = self._live(stream)
        if record is None or record.head_sent or not self._SENDS_INTERIM:
            return
        block = response_facts(headers)[0]
        self._send_headers(stream.stream_id, [(b":status", status_bytes(status)), *block], False)
        self._flush_at(now)

    def abort_stream(self, stream: AsgiHttpStream | AsgiWsStream, now: float) -> None:
        record = self._live(stream)
        if record is None:
            return
        record.response_done = True
        self._cancel(record, self._INTERNAL_ERROR)
        self._flush_at(now)

    # -- stream lifecycle ---------------------------------------------------------------------

    def _response_complete(self, record: StreamRecord) -> None:
        record.response_done = True
        self._stream_done(record)

    def _stream_done(self, record: StreamRecord) -> None:
        stream_id = record.asgi.stream_id
        if self._streams.pop(stream_id, None) is None:
            return
        if record.recv_open:
            self._stop_request(stream_id)
        self._forget(record)

    def _cancel(self, record: StreamRecord, error_code: int) -> None:
        """Reset ``record``'s stream with ``error_code`` and take it out of the table."""
        stream_id = record.asgi.stream_id
        self._reset(stream_id, record.recv_open, error_code)
        self._streams.pop(stream_id, None)
        self._forget(record)

    def _all_streams_done(self) -> None:
        """The last stream left the table."""
        if self._draining:
            self._close_if_done()
            return
        self._idle_at = self._now + self._keep_alive_timeout
        self._set_deadline()

    def _drop_streams(self) -> None:
        """The connection is over: every app learns it."""
        streams = list(self._streams.values())
        self._streams.clear()
        self._blocked.clear()
        for record in streams:
            if record.ws is not None:
                self._ws_forget(record)
            record.asgi.peer_closed()

    # -- deadlines -----------------------------------------------------------------------------

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
        for record in list(self._blocked.values()):
            since = record.blocked_since
            if since is not None and since <= limit:
                self._cancel(record, self._CANCEL)
        self._refresh_stall()

    def _handle_stream_deadlines(self, now: float) -> None:
        """The shutdown PING's, stalled streams' and WebSocket sessions' deadlines."""
        if self._ping_at is not None and now >= self._ping_at:
            self._final_goaway()
        if self._stall_at is not None and now >= self._stall_at:
            self._reset_stalled(now)
        if self._ws_records:
            for record in list(self._ws_records.values()):
                session = _session(record)
                if session is not None and session.deadline is not None and now >= session.deadline:
                    session.handle_deadline(now)

    def _set_deadline(self) -> None:
        deadline = self._idle_at
        ws_deadline = self._ws_deadline() if self._ws_records else None
        for candidate in (self._ping_at, self._stall_at, ws_deadline):
            if candidate is not None and (deadline is None or candidate < deadline):
                deadline = candidate
        self.deadline = deadline

    # -- WebSocket sessions ----------------------------------------------------------------

    def _open_session(
        self, record: StreamRecord, carrier: WsCarrier, now: float, eof: bool
    ) -> None:
        """The accepted WebSocket's session, fed what arrived before the accept."""
        ws = record.ws
        assert ws is not None
        stream = record.asgi
        assert isinstance(stream, AsgiWsStream)
        self._ws_records[stream.stream_id] = record
        stream.status = 200
        session = WsSession(
            carrier=carrier,
            stream=stream,
            limits=self._limits,
            now=now,
            on_deadline=self._set_deadline,
        )
        ws.session = session
        early, ws.early = ws.early, []
        for data in early:
            session.receive_data(data, now)
        if eof:
            session.receive_data(b"", now)
        if self._shutting_down:
            session.start_shutdown(now)

    def _ws_deadline(self) -> float | None:
        earliest: float | None = None
        for record in self._ws_records.values():
            session = _session(record)
            deadline = session.deadline if session is not None else None
            if deadline is not None and (earliest is None or deadline < earliest):
                earliest = deadline
        return earliest

    def _ws_start_shutdown(self, now: float) -> None:
        """A graceful shutdown: 1001 to every WebSocket session."""
        for record in list(self._ws_records.values()):
            session = _session(record)
            if session is not None:
                session.start_shutdown(now)


def _session(record: StreamRecord) -> WsSession | None:
    ws = record.ws
    return ws.session if ws is not None else None
