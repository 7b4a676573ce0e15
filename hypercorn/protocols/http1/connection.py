"""HTTP/1.1 server connection: keep-alive, pipelining, framing and deadlines.

Theory of operation
-------------------
Requests come in through an ``H1Parser`` (``parser.py``), one at a time; each becomes an
``AsgiHttpStream`` (``asgi_http.py``) that the driver runs the app for. Responses are
serialised by the ``ResponseWriter`` this class extends (``response.py``; the parser never
writes), so every parser shares the same response rules.
Effects go straight to the ``ConnectionSink`` (see ``protocols/connection.py``).

Rule 1 - one exchange at a time. A new request is parsed only after the previous response
is complete *and* the previous request was read to its end. Bytes of a pipelined request
that arrive while a response is outstanding stay in the parser (it reports ``PAUSED``) and
reading from the socket is paused until the response is done; responses therefore leave
in request order.

Rule 2 - never a truncated body that looks complete. If the response cannot be completed
(the app raised or returned early, or broke its own Content-Length) the connection is closed
without the terminating chunk or the missing bytes. Keep-alive survives only exchanges where
the request was fully read before the response head was written, so no request-body bytes
are ever mistaken for a new request.

Rule 3 - framing is chosen when the head is written (``response.py``).

Rule 4 - EOF after a complete request is a half-close (RFC 9112 9.6): the response still
goes out, then the connection closes. A client that left altogether sends the same FIN, so
the app's ``receive`` says ``http.disconnect`` from then on (``asgi_http`` rule 5; Go's
net/http cancels the request context likewise): an app that stops on it frees its work at
once, one that answers is read by a half-closed client. EOF anywhere else is the peer gone.

Deadlines (one at a time, plus the write deadline), reported by ``next_deadline``:

====================  ======================================  ==================================
phase                 deadline                                 on expiry
====================  ======================================  ==================================
IDLE (new conn)       accept + header_read_timeout             close
IDLE (keep-alive)     end of last response + keep_alive_timeout  close
IDLE, shutting down   shutdown + SHUTDOWN_IDLE_GRACE (if       close (a request arriving
                      earlier)                                 first: Connection: close)
HEAD                  first byte + header_read_timeout         408, close
BODY                  last body byte + read_timeout (reading,  408 (if no response yet), close
                      not waiting for 100-continue)
RESPONDING            none (the app takes the time it takes)   -
any, write blocked    last progress + write_timeout (the       abort
                      driver repeats ``write_paused`` as the
                      peer takes bytes)
====================  ======================================  ==================================

Once closed, a flush the peer does not read is the driver's to end (``write_watch.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import Any

from hypercorn.protocols.asgi_http import AsgiHttpStream, build_scope, host_allowed
from hypercorn.protocols.asgi_ws import AsgiWsStream, build_ws_scope
from hypercorn.protocols.connection import ConnectionSink, SwitchProtocol
from hypercorn.protocols.errors import RemoteProtocolError
from hypercorn.protocols.headers import DateCache
from hypercorn.protocols.http1.parser import (
    CLOSED,
    END_OF_MESSAGE,
    NEED_DATA,
    PAUSED,
    H1Parser,
    RequestHead,
)
from hypercorn.protocols.http1.response import ResponseWriter
from hypercorn.protocols.http2 import H2C_SWITCHING, PREFACE_START, accepts_h2c
from hypercorn.protocols.limits import ProtocolLimits
from hypercorn.protocols.ws_handshake import judge_handshake

__all__ = ["H1Connection", "H1Phase"]

# Seconds an idle connection stays open once a graceful stop began: the client may be
# sending its next request right now (a never-used connection its first), and closing would
# fail it on a client that never retries (nginx's upstream keepalive with a POST, httpx).
# What arrives is answered with ``Connection: close``; then the connection closes.
SHUTDOWN_IDLE_GRACE = 1.0


class H1Phase(Enum):
    IDLE = "idle"  # between requests
    HEAD = "head"  # part of a request head received
    BODY = "body"  # request body expected
    RESPONDING = "responding"  # request read; response outstanding
    CLOSED = "closed"


# Enum members as module globals: on Python 3.11 ``Enum.MEMBER`` goes through
# ``EnumType.__getattr__``, about ten times slower than a global read, and the hot path
# reads a dozen per request.
_PHASE_BODY = H1Phase.BODY
_PHASE_CLOSED = H1Phase.CLOSED
_PHASE_HEAD = H1Phase.HEAD
_PHASE_IDLE = H1Phase.IDLE
_PHASE_RESPONDING = H1Phase.RESPONDING

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_CRLF = b"\r\n"
_STREAM_ID = 1
_NO_LIMIT = 2**62
_SWITCHING_TO_WEBSOCKET = (
    b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n"
)


class H1Connection(ResponseWriter):
    """One HTTP/1.1 connection's protocol state. See the module docstring."""

    __slots__ = (
        "_body_limit",
        "_body_paused",
        "_client",
        "_eof",
        "_h2c_body",
        "_keep_alive_timeout",
        "_limits",
        "_opening",
        "_parser",
        "_phase",
        "_pipeline_paused",
        "_read_timeout",
        "_requests_left",
        "_root_path",
        "_scheme",
        "_server",
        "_server_names",
        "_shutting_down",
        "_sink",
        "_state",
        "_stream_class",
        "_tls",
        "_used",
        "_write_deadline",
        "_ws_stream_class",
        "deadline",
    )

    def __init__(
        self,
        *,
        sink: ConnectionSink,
        parser: H1Parser,
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
    ) -> None:
        self._sink = sink
        #: What requests become: a subclass may carry what the driver needs per request.
        self._stream_class = stream_class
        self._ws_stream_class = ws_stream_class
        super().__init__(sink, limits, dates)
        self._parser = parser
        self._limits = limits
        self._read_timeout = limits.read_timeout
        #: Requests this connection may still serve (Config ``keep_alive_max_requests``).
        self._requests_left = limits.h1_max_requests or _NO_LIMIT
        self._keep_alive_timeout = limits.keep_alive_timeout
        self._root_path = limits.root_path
        self._server_names = limits.server_names
        self._body_limit = limits.body_buffer_size
        self._client = client
        self._server = server
        self._scheme = "https" if ssl else "http"
        self._tls = tls
        self._state = state
        self._phase = _PHASE_IDLE
        #: The current phase's deadline (see the table above), public because the driver
        #: reads it after every core call; ``next_deadline`` adds the write deadline.
        self.deadline: float | None = now + limits.header_read_timeout
        self._write_deadline: float | None = None
        self._body_paused = False
        self._pipeline_paused = False
        self._shutting_down = False
        self._used = False
        #: The first bytes of a connection while they may still be the HTTP/2 preface.
        self._opening = b""
        #: The body of an ``Upgrade: h2c`` request being read before the switch.
        self._h2c_body: list[bytes] | None = None
        self._eof = False

    # -- driver side -----------------------------------------------------------------------

    @property
    def idle(self) -> bool:
        return self._stream is None and self._phase is _PHASE_IDLE

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def phase(self) -> H1Phase:
        return self._phase

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
        if data:
            if not self._used:
                opening = self._opening + data if self._opening else data
                if PREFACE_START.startswith(opening[:16]):
                    # HTTP/2 with prior knowledge (or the start of it: wait for more).
                    if len(opening) >= len(PREFACE_START):
                        self._switch_to_h2(opening, now)
                    else:
                        self._opening = opening
                    return
                self._opening = b""
                data = opening
                self._used = True
            phase = self._phase
            if phase is _PHASE_IDLE:
                # The usual case, one whole bodiless request in one read, skips the event
                # loop below (the parser also skips its END_OF_MESSAGE).
                head = self._parser.take_head(data)
                if head is not None:
                    self._start_request(head, now)
                    return
                self._phase = _PHASE_HEAD
                self.deadline = now + self._limits.header_read_timeout
            elif phase is _PHASE_BODY and self.deadline is not None:
                self.deadline = now + self._read_timeout  # type: ignore[operator]
        else:
            self._eof = True
        self._parser.feed(data)
        self._process(now)

    def handle_deadline(self, now: float) -> None:
        if self._closed:
            return
        write_deadline = self._write_deadline
        if write_deadline is not None and now >= write_deadline:
            self._closed = True
            self._phase = _PHASE_CLOSED
            self.deadline = self._write_deadline = None
            if self._stream is not None:
                self._stream.peer_closed()
            self._sink.abort()
            return
        deadline = self.deadline
        if deadline is None or now < deadline:
            return
        phase = self._phase
        if phase is _PHASE_HEAD or (phase is _PHASE_BODY and not self._response_started):
            self._write_error(408, now)
        self._close()

    def write_paused(self, now: float) -> None:
        if not self._closed:
            self._write_deadline = now + self._limits.write_timeout

    def write_resumed(self, now: float) -> None:
        self._write_deadline = None

    def start_shutdown(self, now: float) -> None:
        if self._closed:
            return
        self._shutting_down = True
        self._keep_alive = False
        if self._stream is None and self._phase is _PHASE_IDLE:
            # Idle (kept alive, or accepted just before the stop): its next request may be
            # on the way. Closing now would race it; answer it with Connection: close
            # instead, and close if nothing comes within the grace (or the keep-alive).
            grace = now + SHUTDOWN_IDLE_GRACE
            if self.deadline is None or grace < self.deadline:
                self.deadline = grace

    def connection_lost(self) -> None:
        self._held = None
        self._closed = True
        self._phase = _PHASE_CLOSED
        self.deadline = self._write_deadline = None
        if self._stream is not None:
            self._stream.peer_closed()

    # -- reading ---------------------------------------------------------------------------

    def _process(self, now: float) -> None:
        parser = self._parser
        while not self._closed:
            try:
                event = parser.next_event()
            except RemoteProtocolError as exc:
                self._protocol_error(exc, now)
                return
            # Most frequent first: NEED_DATA ends every call, a head starts most requests.
            if event is NEED_DATA:
                return
            event_type = type(event)
            if event_type is RequestHead:
                self._start_request(event, now)  # type: ignore[arg-type]
            elif event is END_OF_MESSAGE:
                if not self._request_done:  # (a bodiless request was completed at its head)
                    self._request_complete(now)
            elif event_type is bytes:
                stream = self._stream
                if stream is not None and not stream.disconnected:
                    stream.body_received(event)  # type: ignore[arg-type]
                    if stream.buffered > self._body_limit and not self._body_paused:
                        self._body_paused = True
                        stream.notify_on_read = True
                        self.deadline = None
                        if not self._pipeline_paused:
                            self._sink.pause_reading()
                elif self._h2c_body is not None:
                    self._h2c_body.append(event)  # type: ignore[arg-type]
            elif event is PAUSED:
                if not self._pipeline_paused:
                    self._pipeline_paused = True
                    if not self._body_paused:
                        self._sink.pause_reading()
                return
            elif event is CLOSED:
                stream = self._stream
                if self._phase is _PHASE_RESPONDING and isinstance(stream, AsgiHttpStream):
                    # Rule 4: a half-close. (A WebSocket handshake has no one to talk to.)
                    self._keep_alive = False
                    stream.peer_half_closed()
                    return
                self._peer_gone()
                return
            else:  # pragma: no cover
                raise AssertionError(f"unexpected parser event {event!r}")

    def _start_request(self, head: RequestHead, now: float) -> None:
        # Unpacked once: a named field read is a generic attribute lookup on 3.11.
        method, target, version, headers, keep_alive, expect_continue, has_body, upgrade = head
        if version != b"1.1" and version != b"1.0":
            self._protocol_error(
                RemoteProtocolError("unsupported HTTP version", status_hint=505), now
            )
            return
        if upgrade is not None:
            if method == b"GET" and b"websocket" in upgrade:
                self._start_websocket(head, now)
                return
            if (
                b"h2c" in upgrade
                and version == b"1.1"
                and self._scheme == "http"
                and not expect_continue
                and not self._shutting_down
                and accepts_h2c(headers, has_body, self._body_limit)
            ):
                self._start_h2c(head, has_body, now)
                return
        self._head = head
        left = self._requests_left - 1
        self._requests_left = left
        # (keep_alive_max_requests: the last request allowed here is answered with close.)
        self._keep_alive = keep_alive and left > 0 and not self._shutting_down
        self._request_done = False
        self._response_started = False
        self._continue_pending = expect_continue and has_body
        scope = build_scope(
            version,
            method,
            target,
            headers,
            self._scheme,
            self._client,
            self._server,
            self._root_path,
            self._state,
            self._tls,
        )
        stream = self._stream_class(self, scope, _STREAM_ID, now)
        self._stream = stream
        if has_body:
            self._phase = _PHASE_BODY
            if self._continue_pending:
                stream.notify_on_read = True
                self.deadline = None
            elif self._read_timeout is not None:
                self.deadline = now + self._read_timeout
            else:
                self.deadline = None
        else:
            self._phase = _PHASE_RESPONDING
            self.deadline = None
            # Complete already: the stream makes its one message when the app asks, rather
            # than on the parser's END_OF_MESSAGE (three calls fewer per bodiless request).
            self._request_done = True
            stream.end_unsent = True
        if self._server_names and not host_allowed(headers, self._server_names):
            stream.status = 404
            self._write_error(404, now)
            self._close()
            return
        self._sink.start_app(stream)

    def _start_websocket(self, head: RequestHead, now: float) -> None:
        """A WebSocket upgrade: its app answers it (``accept_websocket`` or a denial)."""
        _, target, version, headers, keep_alive, _, has_body, _ = head
        judged = judge_handshake(headers, http2=False)
        if has_body:
            judged = RemoteProtocolError("a WebSocket upgrade request with a body")
        if isinstance(judged, RemoteProtocolError):
            if judged.status_hint == 426:
                # RFC 6455 4.2.2: say which version we speak.
                self._write_error(426, now, b"sec-websocket-version: 13\r\n")
                self._close()
            else:
                self._protocol_error(judged, now)
            return
        self._head = head
        self._keep_alive = keep_alive and not self._shutting_down
        self._request_done = True
        self._response_started = False
        self._continue_pending = False
        limits = self._limits
        scope = build_ws_scope(
            version,
            target,
            headers,
            self._scheme == "https",
            self._client,
            self._server,
            self._root_path,
            self._state,
            self._tls,
            judged.subprotocols,
        )
        stream = self._ws_stream_class(
            self,
            scope,
            judged,
            _STREAM_ID,
            now,
            max_message_size=limits.websocket_max_message_size,
            deflate_allowed=limits.websocket_deflate,
        )
        self._stream = stream
        self._phase = _PHASE_RESPONDING
        self.deadline = None
        if self._server_names and not host_allowed(headers, self._server_names):
            stream.status = 404
            self._write_error(404, now)
            self._close()
            return
        self._sink.start_app(stream)

    def accept_websocket(
        self, stream: AsgiWsStream, headers: list[tuple[bytes, bytes]], now: float
    ) -> None:
        """The app accepted: answer 101 and hand the socket to the WebSocket session."""
        if stream is not self._stream or self._closed:
            return
        lines = [_SWITCHING_TO_WEBSOCKET]
        for name, value in headers:
            lines.append(b"%s: %s\r\n" % (name, value))
        lines.append(self._tail_for(now))
        self._write(b"".join(lines))
        stream.status = 101
        trailing, eof = self._parser.trailing_data
        # Done: from now on the session owns the socket (no peer_closed for the stream).
        self._closed = True
        self._phase = _PHASE_CLOSED
        self._stream = None
        self.deadline = self._write_deadline = None
        self._sink.switch(SwitchProtocol(to="websocket", stream=stream, trailing=trailing, eof=eof))

    def _start_h2c(self, head: RequestHead, has_body: bool, now: float) -> None:
        """``Upgrade: h2c``: read the body (its size is known and small, ``accepts_h2c``), then
        answer 101 and hand the socket to HTTP/2, where the request is stream 1."""
        self._head = head
        self._h2c_body = []
        self._request_done = False
        if not has_body:
            self._switch_to_h2(b"", now)
            return
        self._phase = _PHASE_BODY
        self.deadline = None if self._read_timeout is None else now + self._read_timeout

    def _switch_to_h2(self, opening: bytes, now: float) -> None:
        """Hand the connection to HTTP/2: an h2c upgrade (``_h2c_body`` set: answer 101) or
        the prior-knowledge preface (``opening``: the bytes so far, preface first)."""
        body = self._h2c_body
        head = self._head
        if body is not None:
            self._write(H2C_SWITCHING)
            trailing, eof = self._parser.trailing_data
        else:
            trailing, eof = opening, False
        self._closed = True
        self._phase = _PHASE_CLOSED
        self._h2c_body = None
        self.deadline = self._write_deadline = None
        self._sink.switch(
            SwitchProtocol(
                to="h2",
                request=head if body is not None else None,
                body=b"".join(body) if body else b"",
                trailing=trailing,
                eof=eof,
            )
        )

    def _request_complete(self, now: float) -> None:
        self._request_done = True
        self._continue_pending = False
        if self._phase is not _PHASE_CLOSED:
            self._phase = _PHASE_RESPONDING
            self.deadline = None
        stream = self._stream
        if stream is not None:
            stream.end_received()
        elif self._h2c_body is not None:
            self._switch_to_h2(b"", now)

    def _peer_gone(self) -> None:
        self._close()

    def _protocol_error(self, exc: RemoteProtocolError, now: float) -> None:
        if not self._eof and not self._response_started:
            self._write_error(exc.status_hint, now)
            if self._stream is not None:
                self._stream.status = exc.status_hint
        self._close()

    # -- closing ---------------------------------------------------------------------------

    def _close(self, linger: bool = True) -> None:
        if self._closed:
            return
        if self._held:  # (what the app sent goes before the close: Rule 4 of response.py)
            self.flush_held()
        self._closed = True
        self._phase = _PHASE_CLOSED
        self.deadline = self._write_deadline = None
        stream = self._stream
        if stream is not None:
            stream.peer_closed()
        self._sink.close(linger=linger)

    def abort_stream(self, stream: AsgiHttpStream, now: float) -> None:
        if stream is self._stream:
            self._close()

    def app_reading(self, stream: AsgiHttpStream, now: float) -> None:
        if stream is not self._stream or self._closed:
            return
        read_deadline = None if self._read_timeout is None else now + self._read_timeout
        if self._continue_pending:
            self._continue_pending = False
            if not self._response_started:
                self._write(_CONTINUE)
            if self._phase is _PHASE_BODY and not self._body_paused:
                self.deadline = read_deadline
        if self._body_paused:
            if stream.buffered <= self._body_limit // 2:
                self._body_paused = False
                if self._phase is _PHASE_BODY:
                    self.deadline = read_deadline
                if not self._pipeline_paused:
                    self._sink.resume_reading()
            else:
                stream.notify_on_read = True

    # -- recycling -------------------------------------------------------------------------

    def _response_complete(self, now: float) -> None:
        if not self._keep_alive or not self._request_done:
            # No lingering close when the client asked for the close itself (Connection:
            # close, or HTTP/1.0): it sends no further request (RFC 9112 9.6), so once its
            # request was read whole and nothing past it arrived, nothing is left for a close
            # to answer with a reset (nginx's lingering_close decides alike). Any other close
            # lingers: a body not read yet, bytes already pipelined, or a close of ours on a
            # connection the client meant to keep sending on.
            head = self._head
            self._close(
                not self._request_done
                or head is None
                or head[4]  # (keep_alive: [4] is cheaper than the name on 3.11)
                or bool(self._parser.trailing_data[0])
            )
            return
        # Next cycle (Rule 1).
        self._stream = None
        self._head = None
        self._response_started = False  # a bad pipelined request still gets its 4xx
        pending = self._parser.start_next_cycle()
        self._phase = _PHASE_IDLE
        self.deadline = now + self._keep_alive_timeout
        if self._pipeline_paused or self._body_paused:
            self._pipeline_paused = self._body_paused = False
            self._sink.resume_reading()
        if pending:
            self._process(now)
