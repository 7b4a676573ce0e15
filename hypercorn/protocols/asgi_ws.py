"""The ASGI WebSocket stream: one WebSocket, over an HTTP/1.1 upgrade or an HTTP/2 stream.

Theory of operation
-------------------
An ``AsgiWsStream`` sits between the ASGI application and two wires, one after the other:

* during the handshake its *HTTP wire* (the HTTP/1.1 connection, or the HTTP/2 connection
  for an extended CONNECT, RFC 8441) answers the request: a denial response
  (``websocket.http.response.*``, the ASGI denial response extension), a 403 or 500
  (``send_error``), or the handshake's success (``accept_websocket``), after which the wire
  attaches a ``WsSession`` (``protocols/ws.py``);
* once accepted, the *session* frames the app's messages and feeds the stream the peer's.

States (``AsgiWsState``), as the app's messages move them::

    HANDSHAKE --accept--> CONNECTED --close--> CLOSED
        |  \\--close--> CLOSED (403)
        \\--http.response.start--> DENYING --body(more_body)--> DENIAL_BODY --body--> CLOSED
                                        \\--body--> CLOSED

Rules:

1. The first message the app receives is ``websocket.connect``; the handshake completes only
   on the app's answer (ASGI). ``websocket.close`` before ``websocket.accept`` is a 403.
2. Anything the app does wrong raises ``AppProtocolError`` out of ``app_send`` after the
   stream cleaned up: 500 before the denial head went out, the response aborted after, close
   1011 once connected. The stream is then CLOSED and later messages raise again.
3. An app that returns without finishing gets the same answer (500 / abort / 1011);
   ``app_finished`` returns the one line for the driver to log (only when the app returned:
   an app that raised is logged with its traceback, once).
4. ``websocket.disconnect`` comes once, when the WebSocket is over: the peer closed or went
   away, a protocol error failed it, or the close handshake the server or the app started
   completed (or timed out). ``disconnected`` is set as soon as the app can no longer send
   (including while the server's close handshake is under way): the driver then makes
   ``send()`` raise an OSError (ASGI 2.4), so an endless sender stops. Receiving after the
   disconnect returns it again.
5. Received messages wait in ``inbox``; the session counts them (``queued``, ``buffered``)
   and stops reading from the peer past its bound, asking to be told (``notify_on_read``)
   when the app receives again.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Mapping
from enum import Enum
from typing import TYPE_CHECKING, Any, Protocol

from hypercorn.protocols.asgi_http import ASGI_SPEC_VERSION, build_scope
from hypercorn.protocols.errors import AppProtocolError
from hypercorn.protocols.headers import check_status

if TYPE_CHECKING:
    from typing import TypeAlias

    from hypercorn.protocols.ws_handshake import BoundedDeflate, WsHandshake

Message: TypeAlias = "dict[str, Any]"

#: Close codes an endpoint may send (RFC 6455 7.4.1/7.4.2; 1012-1014 are IANA-registered).
_SENDABLE_CODES = frozenset(
    (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014)
)
#: The WebSocket ended without a close frame (RFC 6455 7.1.5); never sent on the wire.
ABNORMAL_CLOSURE = 1006
INTERNAL_ERROR = 1011


def sendable_close_code(code: object) -> bool:
    return type(code) is int and (code in _SENDABLE_CODES or 3000 <= code <= 4999)


class AsgiWsState(Enum):
    HANDSHAKE = "handshake"  # websocket.connect delivered; waiting for the app's answer
    DENYING = "denying"  # http.response.start received, head not written yet
    DENIAL_BODY = "denial-body"  # denial head written, body streaming
    CONNECTED = "connected"  # accepted: messages flow
    CLOSED = "closed"  # the app closed, was refused further messages, or the denial ended


_HANDSHAKE = AsgiWsState.HANDSHAKE
_DENYING = AsgiWsState.DENYING
_DENIAL_BODY = AsgiWsState.DENIAL_BODY
_CONNECTED = AsgiWsState.CONNECTED
_CLOSED = AsgiWsState.CLOSED


class WsHttpWire(Protocol):
    """What the stream needs from its HTTP wire during the handshake. Synchronous.

    ``send_head`` / ``send_body`` / ``send_error`` / ``abort_stream`` are the HTTP stream's
    (``asgi_http.StreamWire``): a denial response is an ordinary HTTP response.
    """

    def send_head(
        self,
        stream: Any,
        status: int,
        headers: Iterable[tuple[bytes, bytes]],
        body: bytes,
        end: bool,
        now: float,
    ) -> None: ...

    def send_body(self, stream: Any, data: bytes, end: bool, now: float) -> None: ...

    def send_error(self, stream: Any, status: int, now: float) -> None: ...

    def abort_stream(self, stream: Any, now: float) -> None: ...

    def accept_websocket(
        self, stream: AsgiWsStream, headers: list[tuple[bytes, bytes]], now: float
    ) -> None:
        """Complete the handshake with the WebSocket ``headers`` (``WsHandshake.accept``)
        and attach a session to ``stream`` (``attach``); sets ``stream.status``."""


class WsSessionWire(Protocol):
    """What the stream needs from its WebSocket session once accepted (``ws.WsSession``)."""

    def send_message(self, data: bytes | str, now: float) -> None: ...

    def close(self, code: int, reason: str, now: float) -> None: ...

    def app_reading(self, now: float) -> None:
        """The app called ``receive()`` while ``stream.notify_on_read`` was set."""


class AsgiWsStream:
    """One ASGI WebSocket. See the module docstring."""

    __slots__ = (
        "_final",
        "_headers",
        "_session",
        "_status",
        "_wire",
        "app_done",
        "buffered",
        "deflate_allowed",
        "disconnected",
        "extension",
        "handshake",
        "head_written",
        "http2",
        "inbox",
        "max_message_size",
        "notify_on_read",
        "queued",
        "scope",
        "send_blocked",
        "send_waiter",
        "start_time",
        "state",
        "status",
        "stream_id",
        "task",
        "waiter",
    )

    #: (What the HTTP/1.1 wire reads from its streams' responses: a denial has no trailers.)
    trailers_expected = False

    def __init__(
        self,
        wire: WsHttpWire,
        scope: dict[str, Any],
        handshake: WsHandshake,
        stream_id: int,
        now: float,
        *,
        max_message_size: int,
        deflate_allowed: bool = True,
        http2: bool = False,
    ) -> None:
        self._wire = wire
        self.scope = scope
        self.handshake = handshake
        self.stream_id = stream_id
        self.start_time = now
        self.max_message_size = max_message_size
        self.deflate_allowed = deflate_allowed
        #: Over HTTP/2 (RFC 8441) a 2xx answer opens the tunnel: no denial may use one.
        self.http2 = http2
        #: The wire could not send all of the app's last message (an HTTP/2 window is
        #: closed): the driver parks the app until ``release_send``.
        self.send_blocked = False
        self.send_waiter: Callable[[], object] | None = None
        self.state = _HANDSHAKE
        self.inbox: deque[Message] = deque(({"type": "websocket.connect"},))
        #: Called once when a message is queued; set by the driver while the app waits.
        self.waiter: Callable[[], object] | None = None
        #: Tell the session (``app_reading``) the next time the app receives.
        self.notify_on_read = False
        #: Data messages / their bytes queued in ``inbox`` (counted by the session).
        self.queued = 0
        self.buffered = 0
        #: The app can no longer send (rule 4); its ``websocket.disconnect`` may still come.
        self.disconnected = False
        self.head_written = False
        self.app_done = False
        #: The handshake's HTTP status, for the access log (101/200 accepted, else the
        #: denial's).
        self.status: int | None = None
        #: The negotiated permessage-deflate, set on accept.
        self.extension: BoundedDeflate | None = None
        #: The driver's handle on the app task, if any.
        self.task: object = None
        self._session: WsSessionWire | None = None
        self._final: Message | None = None  # the websocket.disconnect, once known
        self._status = 0
        self._headers: Iterable[tuple[bytes, bytes]] = ()

    # -- wire / session side ---------------------------------------------------------------

    def _push(self, message: Message) -> None:
        self.inbox.append(message)
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            waiter()

    def attach(self, session: WsSessionWire) -> None:
        """The wire completed the handshake; frames now go through ``session``."""
        self._session = session

    def message_received(self, data: str | bytes) -> None:
        """A whole data message arrived; dropped once the app closed."""
        if self._final is not None or self.state is _CLOSED:
            return
        self.queued += 1
        self.buffered += len(data)
        # Both keys, one None (ASGI allows it): apps reading message["bytes"] of a text
        # message get None rather than a KeyError, as with upstream Hypercorn.
        if type(data) is str:
            self._push({"type": "websocket.receive", "bytes": None, "text": data})
        else:
            self._push({"type": "websocket.receive", "bytes": data, "text": None})

    def body_received(self, data: bytes) -> None:
        """(HTTP/2 hands a WebSocket's DATA to its session, never here.)"""

    def end_received(self) -> None:
        """(The session sees the end of the peer's DATA.)"""

    def release_send(self) -> None:
        """The wire sent what blocked the app's ``send()`` (or gave up on it)."""
        self.send_blocked = False
        waiter = self.send_waiter
        if waiter is not None:
            self.send_waiter = None
            waiter()

    def closing(self) -> None:
        """The server started closing on its own (shutdown, ping timeout): no more sends."""
        self.disconnected = True

    def peer_closed(self, code: int = ABNORMAL_CLOSURE, reason: str = "") -> None:
        """The WebSocket (or the connection under it) is over: disconnect the app once."""
        self.disconnected = True
        if self.send_blocked:
            self.release_send()
        if self._final is None:
            self._final = {"type": "websocket.disconnect", "code": code, "reason": reason}
            self._push(self._final)

    # -- app side --------------------------------------------------------------------------

    def receive_nowait(self, now: float) -> Message | None:
        """The next message for the app's ``receive()``, or None if it must wait."""
        inbox = self.inbox
        message: Message | None
        if inbox:
            message = inbox.popleft()
            if message is not self._final and message["type"] == "websocket.receive":
                self.queued -= 1
                data = message["bytes"] if message["text"] is None else message["text"]
                self.buffered -= len(data)
        else:
            message = self._final
        if self.notify_on_read:
            self.notify_on_read = False
            if self._session is not None:
                self._session.app_reading(now)
        return message

    def app_send(self, message: Mapping[str, Any], now: float) -> None:
        """Carry out one message from the app's ``send()``; raises AppProtocolError."""
        try:
            mtype = message["type"]
            state = self.state
            if mtype == "websocket.send" and state is _CONNECTED:
                data = message.get("bytes")
                text = message.get("text")
                if data is not None:
                    if text is not None:
                        raise AppProtocolError("websocket.send with both bytes and text")
                    if type(data) is not bytes:
                        if not isinstance(data, (bytearray, memoryview)):
                            raise AppProtocolError(
                                f"websocket.send bytes must be bytes, got {type(data).__name__}"
                            )
                        data = bytes(data)
                    self._session.send_message(data, now)  # type: ignore[union-attr]
                elif type(text) is str:
                    self._session.send_message(text, now)  # type: ignore[union-attr]
                else:
                    raise AppProtocolError(
                        "websocket.send needs bytes or text"
                        if text is None
                        else f"websocket.send text must be str, got {type(text).__name__}"
                    )
            elif mtype == "websocket.accept":
                if state is not _HANDSHAKE:
                    raise AppProtocolError(f"unexpected {mtype!r} in state {state.value}")
                headers, self.extension = self.handshake.accept(
                    message.get("subprotocol"),
                    _header_list(message.get("headers") or ()),
                    self.max_message_size,
                    self.deflate_allowed,
                )
                self.state = _CONNECTED
                self._wire.accept_websocket(self, headers, now)
            elif mtype == "websocket.close":
                if state is _HANDSHAKE:
                    self.state = _CLOSED
                    self.status = 403
                    self._wire.send_error(self, 403, now)
                    return
                if state is not _CONNECTED:
                    raise AppProtocolError(f"unexpected {mtype!r} in state {state.value}")
                code = message.get("code", 1000)
                if code is None:
                    code = 1000
                reason = message.get("reason") or ""
                if not sendable_close_code(code):
                    raise AppProtocolError(f"websocket.close with invalid code {code!r}")
                if type(reason) is not str:
                    raise AppProtocolError("websocket.close reason must be str")
                self.state = _CLOSED
                self._session.close(code, reason, now)  # type: ignore[union-attr]
            elif mtype == "websocket.http.response.start":
                if state is not _HANDSHAKE:
                    raise AppProtocolError(f"unexpected {mtype!r} in state {state.value}")
                status = check_status(message["status"])
                if status < 200 or (self.http2 and status < 300):
                    raise AppProtocolError(f"denial response with status {status}")
                self._status = status
                self._headers = _header_list(message.get("headers") or ())
                self.state = _DENYING
            elif mtype == "websocket.http.response.body":
                if state is not _DENYING and state is not _DENIAL_BODY:
                    raise AppProtocolError(f"unexpected {mtype!r} in state {state.value}")
                body = message.get("body", b"")
                if type(body) is not bytes:
                    if not isinstance(body, (bytearray, memoryview)):
                        raise AppProtocolError(f"body must be bytes, got {type(body).__name__}")
                    body = bytes(body)
                end = not message.get("more_body", False)
                self.state = _CLOSED if end else _DENIAL_BODY
                if state is _DENYING:
                    self.status = self._status
                    self._wire.send_head(self, self._status, self._headers, body, end, now)
                    self.head_written = True
                else:
                    self._wire.send_body(self, body, end, now)
            else:
                raise AppProtocolError(f"unexpected {mtype!r} in state {state.value}")
        except AppProtocolError:
            self._fail(now)
            raise
        except (KeyError, TypeError, ValueError, UnicodeEncodeError) as exc:
            self._fail(now)
            raise AppProtocolError(f"malformed ASGI message {message!r}: {exc!r}") from exc

    def _fail(self, now: float) -> None:
        """Rule 2: end what the app started, as well as the state allows."""
        state = self.state
        self.state = _CLOSED
        if self.disconnected:
            return
        if state is _CONNECTED:
            self._session.close(INTERNAL_ERROR, "", now)  # type: ignore[union-attr]
        elif self.head_written:
            self._wire.abort_stream(self, now)
        elif state is _HANDSHAKE or state is _DENYING:
            self.status = 500
            self._wire.send_error(self, 500, now)

    def app_finished(self, now: float) -> str | None:
        """The app returned or raised: end what it left open (rule 3). Returns what to log
        if the app returned normally, or None when it finished properly."""
        self.app_done = True
        self.waiter = None
        state = self.state
        if self.disconnected or state is _CLOSED:
            return None
        self._fail(now)
        if state is _CONNECTED:
            return "ASGI app returned without closing the WebSocket; closed it with 1011"
        if state is _HANDSHAKE:
            return "ASGI app returned without accepting or closing the WebSocket; answered 500"
        return "ASGI app returned before completing its WebSocket denial response"

    @property
    def response_headers(self) -> Iterable[tuple[bytes, bytes]]:
        """The denial response's headers, for the access log."""
        return self._headers

    @property
    def response_length(self) -> int:
        return 0


def _header_list(headers: Iterable[Any]) -> list[tuple[bytes, bytes]]:
    result = []
    for pair in headers:
        name, value = pair
        result.append((name, value))
    return result


def build_ws_scope(
    http_version: bytes,
    target: bytes,
    headers: list[tuple[bytes, bytes]],
    secure: bool,
    client: tuple[str, int] | None,
    server: tuple[str, int | None] | None,
    root_path: str,
    state: dict[str, Any] | None,
    tls: Mapping[str, Any] | None,
    subprotocols: list[str],
) -> dict[str, Any]:
    """The ASGI WebSocket scope (the HTTP scope's fields, ``ws``/``wss``, no method)."""
    scope = build_scope(
        http_version,
        b"GET",
        target,
        headers,
        "wss" if secure else "ws",
        client,
        server,
        root_path,
        state,
        tls,
    )
    scope["type"] = "websocket"
    scope["asgi"] = {"version": "3.0", "spec_version": ASGI_SPEC_VERSION}
    del scope["method"]
    scope["subprotocols"] = subprotocols
    extensions = scope["extensions"]
    del extensions["http.response.trailers"]
    del extensions["http.response.early_hint"]
    extensions["websocket.http.response"] = {}
    return scope
