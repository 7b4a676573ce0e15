"""HTTP/2 server connection: many ASGI streams on one connection, flow control, GOAWAY.

Theory of operation
-------------------
``H2Connection`` is a ``ServerConnection`` (the driver feeds it bytes and time) and the
``StreamWire`` of its streams (their app messages come back through it), exactly like
``H1Connection``. The wire itself - frames, HPACK, stream states, windows - is an *engine*
(``h2_engine.py``): ``H2LibEngine`` on the ``h2`` package is the reference. Every request
stream is one ``AsgiHttpStream`` (``asgi_http.py``), whose app the driver runs concurrently
with the others.

Rule 1 - flow control follows the app, both ways. Inbound, a stream's window (and the
connection's) is opened only as the app *reads* its body (``app_reading``), so an app that
does not read throttles its own stream only, and the worker never holds more than
``STREAM_WINDOW`` per stream and ``CONNECTION_WINDOW`` per connection of unread body.
Outbound, body data goes out as far as the peer's windows allow; the rest (at most one app
message) waits on the stream, which is marked ``send_blocked`` so the driver parks that app
alone until a WINDOW_UPDATE lets the data go (``release_send``).

Rule 2 - a stream leaves the table when its response is complete and its request was read
to the end (or either side reset it). A response completed while the request body is still
coming is followed by RST_STREAM(NO_ERROR) (RFC 9113 section 8.1).

Rule 3 - shutdown is two GOAWAYs (RFC 9113 section 6.8): the first names the largest stream
id and goes with a PING; when the PING comes back (or after ``GOAWAY_PING_TIMEOUT``) the
second names the last stream actually received, so streams the client opened while the
first was in flight are still served; later ones get REFUSED_STREAM, which clients retry.
The connection closes once its last stream is done. ``keep_alive_max_requests`` sends a
single GOAWAY naming the last stream it allows.

Deadlines (one ``deadline``, the earliest of these; the write deadline is added by
``next_deadline`` as on HTTP/1.1):

======================  =====================================  ===========================
state                   deadline                               on expiry
======================  =====================================  ===========================
before the preface      accept + header_read_timeout            close
no stream open          last stream done + keep_alive_timeout   GOAWAY(NO_ERROR), close
first GOAWAY sent       sent + GOAWAY_PING_TIMEOUT              second GOAWAY
a stream blocked        blocked since + write_timeout           RST_STREAM(CANCEL)
write buffer full       last progress + write_timeout           abort
======================  =====================================  ===========================
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from hypercorn.protocols.asgi_http import AsgiHttpStream
from hypercorn.protocols.asgi_ws import AsgiWsStream
from hypercorn.protocols.connection import ConnectionSink, SwitchProtocol
from hypercorn.protocols.h2_engine import (
    DEFAULT_WINDOW,
    ENHANCE_YOUR_CALM,
    MAX_STREAM_ID,
    NO_ERROR,
    PROTOCOL_ERROR,
    REFUSED_STREAM,
    H2Engine,
    H2LibEngine,
    decode_settings_header,
)
from hypercorn.protocols.h2_fast import H2FastEngine
from hypercorn.protocols.h2_guard import (
    CONNECTION_WINDOW,
    RESET_BURST,
    RESET_RATE,
    FrameCounter,
    LeakyBucket,
)
from hypercorn.protocols.h2_headers import response_facts, split_request_head
from hypercorn.protocols.h2_ws import H2WebSockets
from hypercorn.protocols.headers import DateCache
from hypercorn.protocols.limits import ProtocolLimits
from hypercorn.protocols.multiplexed import StreamRecord
from hypercorn.protocols.multiplexed_ws import is_websocket_connect

if TYPE_CHECKING:
    from hypercorn.protocols.http1.parser import RequestHead

#: Seconds the PING of a graceful shutdown may take before the second GOAWAY goes anyway.
GOAWAY_PING_TIMEOUT = 2.0
_SHUTDOWN_PING = b"hc-close"
_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#: The preface and the type octet of the frame after it.
_OPENING_SIZE = len(_PREFACE) + 4
_SETTINGS_TYPE = 0x4


class H2Connection(H2WebSockets):
    """One HTTP/2 connection's protocol state. See the module docstring."""

    __slots__ = (
        "_frames",
        "_highest",
        "_last_request",
        "_last_stream",
        "_opening",
        "_reading_paused",
        "_requests",
        "_resets",
        "_write_deadline",
    )

    def __init__(
        self,
        *,
        sink: ConnectionSink,
        limits: ProtocolLimits,
        dates: DateCache,
        client: tuple[str, int] | None,
        server: tuple[str, int | None] | None,
        ssl: bool,
        tls: Mapping[str, Any] | None,
        state: dict[str, Any] | None,
        now: float,
        stream_class: type[AsgiHttpStream] = AsgiHttpStream,
        ws_stream_class: type[AsgiWsStream] = AsgiWsStream,
        engine: H2Engine | None = None,
        upgrade: SwitchProtocol | None = None,
    ) -> None:
        super().__init__(
            sink,
            limits,
            dates,
            http_version=b"2",
            push=True,
            client=client,
            server=server,
            scheme="https" if ssl else "http",
            tls=tls,
            state=state,
            server_value=limits.h2_server_header,
            stream_class=stream_class,
            ws_stream_class=ws_stream_class,
            now=now,
        )
        self._init_wire(engine or make_engine(limits))
        #: Streams above this id are refused (set by the final GOAWAY).
        self._last_stream = MAX_STREAM_ID
        self._highest = 0
        self._requests = 0
        #: (headers, their split) of the last request head.
        self._last_request: tuple[object, tuple[bytes, bytes, list[tuple[bytes, bytes]]]] = (
            None,
            (b"", b"", []),
        )
        #: The client's opening bytes so far (preface, then a frame header), until checked.
        self._opening: bytes | None = b""
        self._reading_paused = False
        self._resets = LeakyBucket(RESET_BURST, RESET_RATE, now)
        self._frames = FrameCounter(0 if upgrade is not None and upgrade.request is None else 24)
        self._write_deadline: float | None = None
        engine = self._engine
        request = upgrade.request if upgrade is not None else None
        engine.initiate(None if request is None else upgrade_settings(request.headers))
        engine.open_window(0, CONNECTION_WINDOW - DEFAULT_WINDOW)
        if upgrade is not None and request is not None:
            self._upgraded_request(request, upgrade.body)
        self._flush()

    # -- driver side -----------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        deadline = self.deadline
        write_deadline = self._write_deadline
        if write_deadline is None:
            return deadline
        if deadline is None or write_deadline < deadline:
            return write_deadline
        return deadline

    def receive_data(self, data: bytes, now: float) -> None:
        if self._closed:
            return
        self._now = now
        if not data:
            self._close()  # EOF: nothing more can arrive, and no response can be asked for
            return
        opening = self._opening
        if opening is not None:
            # RFC 9113 section 3.4: the preface is followed by a SETTINGS frame.
            opening += data[: _OPENING_SIZE - len(opening)]
            if len(opening) < _OPENING_SIZE:
                self._opening = opening
            else:
                self._opening = None
                if opening[:24] == _PREFACE and opening[27] != _SETTINGS_TYPE:
                    self._connection_error(PROTOCOL_ERROR)
                    return
                self._idle_at = None if self._streams else now + self._keep_alive_timeout
                self._set_deadline()
        # Flood accounting (h2_guard) on the frame headers, before the engine spends work.
        if self._frames.feed(data, self._overhead, now):
            self._connection_error(ENHANCE_YOUR_CALM)
            return
        self._engine.receive_data(data, self)
        self._flush()

    def handle_deadline(self, now: float) -> None:
        if self._closed:
            return
        self._now = now
        write_deadline = self._write_deadline
        if write_deadline is not None and now >= write_deadline:
            self._close(abort=True)
            return
        self._handle_stream_deadlines(now)
        if self._idle_at is not None and now >= self._idle_at and not self._streams:
            if self._opening is None:
                self._engine.goaway(self._highest, NO_ERROR)
            self._close()
            return
        self._set_deadline()
        self._flush()

    def write_paused(self, now: float) -> None:
        if self._closed:
            return
        self._write_deadline = now + self._limits.write_timeout
        # Nothing more is read while the peer does not read: acknowledgements of its PINGs
        # and SETTINGS cannot pile up in the write buffer (h2_guard).
        if not self._reading_paused:
            self._reading_paused = True
            self._sink.pause_reading()

    def write_resumed(self, now: float) -> None:
        self._write_deadline = None
        if self._reading_paused and not self._closed:
            self._reading_paused = False
            self._sink.resume_reading()

    def start_shutdown(self, now: float) -> None:
        if self._closed or self._shutting_down:
            return
        self._now = now
        self._shutting_down = True
        if self._draining:
            self._close_if_done()
            return
        engine = self._engine
        engine.goaway(MAX_STREAM_ID, NO_ERROR)
        engine.ping(_SHUTDOWN_PING)
        if self._ws_records:
            self._ws_start_shutdown(now)  # (1001 to every WebSocket)
        self._ping_at = now + GOAWAY_PING_TIMEOUT
        self._set_deadline()
        self._flush()

    def connection_lost(self) -> None:
        self._closed = True
        self.deadline = self._write_deadline = None
        self._drop_streams()

    # -- events from the engine (H2Events) -------------------------------------------------

    def request_received(
        self, stream_id: int, headers: list[tuple[bytes, bytes]], end_stream: bool
    ) -> None:
        if stream_id > self._highest:
            self._highest = stream_id
        if self._closed:
            return
        if stream_id > self._last_stream:
            self._engine.reset_stream(stream_id, REFUSED_STREAM)
            return
        if len(self._streams) >= self._limits.h2_max_concurrent_streams:
            self._engine.reset_stream(stream_id, REFUSED_STREAM)
            return
        last = self._last_request
        if headers is last[0]:  # (an engine's memoised block: the same request again)
            method, path, template = last[1]
        else:
            split = split_request_head(headers)
            self._last_request = (headers, split)
            method, path, template = split
        asgi_headers = template.copy()  # (the app owns its scope's list)
        protocol = is_websocket_connect(headers) if method == b"CONNECT" else None
        if protocol is not None and protocol != b"websocket":
            # An extended CONNECT for a protocol we do not speak (RFC 8441 section 4).
            self._engine.send_headers(stream_id, [(b":status", b"501")], False)
            self._engine.reset_stream(stream_id, NO_ERROR)
        elif protocol is not None:
            self._open_websocket(stream_id, path, asgi_headers, end_stream)
        else:
            self._open_stream(stream_id, method, path, asgi_headers, end_stream)
        self._requests += 1
        max_streams = self._limits.h2_max_streams
        if max_streams is not None and self._requests >= max_streams and not self._draining:
            # keep_alive_max_requests: this stream is the last one served here.
            self._last_stream = stream_id
            self._draining = True
            self._engine.goaway(stream_id, NO_ERROR)

    def data_received(
        self, stream_id: int, data: bytes, flow_length: int, end_stream: bool
    ) -> None:
        if self._closed:
            return
        record = self._streams.get(stream_id)
        self._conn_window -= flow_length
        if record is None or not record.recv_open:
            self._conn_debt += flow_length  # nobody will read it
            self._return_windows(None)
            return
        if record.ws is not None:
            self._ws_data(record, data, flow_length, end_stream)
            return
        record.recv_window -= flow_length
        asgi = record.asgi
        padding = flow_length - len(data)
        if data:
            if asgi.disconnected:
                padding = flow_length
            else:
                asgi.body_received(data)
                record.held += len(data)
                asgi.notify_on_read = True
        if padding:
            self._conn_debt += padding
            record.stream_debt += padding
        if end_stream:
            record.recv_open = False
            asgi.end_received()
            if record.response_done:
                self._stream_done(record)
        self._return_windows(record)

    def trailers_received(self, stream_id: int, headers: list[tuple[bytes, bytes]]) -> None:
        if self._closed:
            return
        record = self._streams.get(stream_id)
        if record is None or not record.recv_open:
            return
        if record.ws is not None:
            self._ws_data(record, b"", 0, True)
            return
        record.recv_open = False
        asgi = record.asgi
        if isinstance(asgi, AsgiHttpStream):  # (WebSocket streams returned above)
            asgi.end_received(headers)
        if record.response_done:
            self._stream_done(record)

    def stream_reset(self, stream_id: int, error_code: int) -> None:
        if self._closed:
            return
        record = self._streams.pop(stream_id, None)
        if record is None:
            return
        if not record.response_done and self._resets.add(1, self._now):
            self._streams[stream_id] = record  # (dropped with the others)
            self._connection_error(ENHANCE_YOUR_CALM)
            return
        self._forget(record)

    def window_opened(self, stream_id: int) -> None:
        if self._closed:
            return
        if stream_id:
            record = self._streams.get(stream_id)
            if record is not None and record.asgi.send_blocked:
                self._send_pending(record)
            return
        for record in list(self._streams.values()):
            if record.asgi.send_blocked:
                self._send_pending(record)

    def ping_acked(self, data: bytes) -> None:
        if data == _SHUTDOWN_PING and self._ping_at is not None:
            self._final_goaway()

    def goaway_received(self, last_stream_id: int, error_code: int) -> None:
        if self._closed:
            return
        if error_code != NO_ERROR:
            self._close()
            return
        # The client opens no more streams; the ones it has finish.
        self._draining = True
        self._last_stream = min(self._last_stream, self._highest)
        self._close_if_done()

    def connection_error(self, error_code: int, message: str) -> None:
        self._flush()  # (the engine's GOAWAY)
        self._close()

    # -- streams -----------------------------------------------------------------------------

    def _stream_opened(self) -> None:
        self._idle_at = None
        self._set_deadline()

    def send_push(
        self, stream: AsgiHttpStream, path: str, headers: list[tuple[bytes, bytes]], now: float
    ) -> None:
        record = self._live(stream)
        if record is None or record.response_done or not self._engine.push_enabled:
            return
        self._push(record, path.encode(), response_facts(headers)[0], now)
        self._flush()

    def _push(
        self,
        record: StreamRecord,
        path: bytes,
        headers: tuple[tuple[bytes, bytes], ...],
        now: float,
    ) -> None:
        """Server push: PUSH_PROMISE of a GET for ``path`` on ``record``'s stream, then the
        promised stream runs the app like a request (RFC 9113 section 8.4)."""
        parent = record.asgi.scope
        authority = parent["headers"][0][1] if parent["headers"] else b""
        request = [
            (b":method", b"GET"),
            (b":path", path),
            (b":scheme", parent["scheme"].encode("ascii")),
            (b":authority", authority),
            *headers,
        ]
        promised = self._engine.push_stream(record.asgi.stream_id, request)
        if promised is None:
            return  # (the client refused pushes, or no stream id is left)
        pushed = self._open_stream(promised, b"GET", path, [(b"host", authority), *headers], True)
        pushed.asgi.scope["extensions"].pop("http.response.push", None)  # (no push of a push)

    def _upgraded_request(self, request: RequestHead, body: bytes) -> None:
        """Stream 1: the HTTP/1.1 request that asked for ``Upgrade: h2c``, body included."""
        self._highest = 1
        self._requests = 1
        headers = [(b"host", b"")]
        for name, value in request.headers:
            lname = name.lower()
            if lname == b"host":
                headers[0] = (b"host", value)
            elif lname not in _UPGRADE_HOP_HEADERS:
                headers.append((lname, value))
        record = self._open_stream(1, request.method, request.target, headers, not body)
        if body:
            record.recv_open = False
            record.asgi.body_received(body)
            record.asgi.end_received()

    # -- shutdown and closing ----------------------------------------------------------------

    def _final_goaway(self) -> None:
        self._ping_at = None
        self._last_stream = self._highest
        self._draining = True
        self._engine.goaway(self._highest, NO_ERROR)
        self._set_deadline()
        self._close_if_done()

    def _close_if_done(self) -> None:
        if self._draining and not self._streams and self._ping_at is None:
            self._close()

    def _connection_error(self, error_code: int) -> None:
        self._engine.goaway(self._highest, error_code)
        self._flush()
        self._close()

    def _close(self, abort: bool = False) -> None:
        if self._closed:
            return
        self._flush()
        self._closed = True
        self.deadline = self._write_deadline = None
        self._idle_at = self._ping_at = self._stall_at = None
        self._drop_streams()
        if abort:
            self._sink.abort()
        else:
            self._sink.close()


#: Fields of an upgrading HTTP/1.1 request that stay behind on HTTP/1.1.
_UPGRADE_HOP_HEADERS = frozenset(
    (
        b"connection",
        b"upgrade",
        b"http2-settings",
        b"keep-alive",
        b"proxy-connection",
        b"transfer-encoding",
        b"te",
        b"content-length",
    )
)


def upgrade_settings(headers: Iterable[tuple[bytes, bytes]]) -> bytes | None:
    """The decoded SETTINGS payload of the one ``HTTP2-Settings`` header of an ``Upgrade:
    h2c`` request, or None when there is not exactly one valid one (then no upgrade)."""
    found = [value for name, value in headers if name.lower() == b"http2-settings"]
    if len(found) != 1:
        return None
    return decode_settings_header(found[0])


#: The answer to an ``Upgrade: h2c`` request the server accepts (RFC 7540 section 3.2).
H2C_SWITCHING = b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: h2c\r\n\r\n"
#: The start of the HTTP/2 connection preface: an HTTP/1.1 connection that begins with it
#: speaks HTTP/2 with prior knowledge.
PREFACE_START = b"PRI * HTTP/2.0\r\n"


def accepts_h2c(headers: list[tuple[bytes, bytes]], has_body: bool, body_limit: int) -> bool:
    """Whether an HTTP/1.1 ``Upgrade: h2c`` request is switched to HTTP/2: it carries exactly
    one valid ``HTTP2-Settings``, and its body, if any, has a Content-Length of at most
    ``body_limit`` (buffered, then answered on stream 1). Otherwise it is served on HTTP/1.1,
    as RFC 7540 section 3.2 allows."""
    if upgrade_settings(headers) is None:
        return False
    if not has_body:
        return True
    for name, value in headers:
        if name.lower() == b"content-length":
            return value.isdigit() and int(value) <= body_limit
    return False  # (chunked: of unknown size)


def make_engine(limits: ProtocolLimits) -> H2Engine:
    """The engine Config ``h2_engine`` names: ``fast`` (``h2_fast.py``, what ``auto`` picks) or
    ``h2`` (``H2LibEngine``, the reference on the h2 package)."""
    engine = H2LibEngine if limits.h2_engine == "h2" else H2FastEngine
    return engine(
        max_concurrent_streams=limits.h2_max_concurrent_streams,
        max_header_list_size=limits.h2_max_header_list_size,
        max_inbound_frame_size=limits.h2_max_inbound_frame_size,
    )
