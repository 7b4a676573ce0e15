"""A WebSocket after its handshake: RFC 6455 framing on wsproto, limits, pings, closing.

Theory of operation
-------------------
One ``WsSession`` per accepted WebSocket. It sits between its ``AsgiWsStream`` (the ASGI
state machine, ``asgi_ws.py``) and a *carrier*, the byte stream under it: the whole socket
after an HTTP/1.1 upgrade (the carrier is the driver's sink, and the session is the
connection's ``ServerConnection``), or one HTTP/2 stream's DATA (RFC 8441; the carrier is
that stream). Frames are parsed and built by ``wsproto``'s frame protocol, with two
extensions of ours: the negotiated permessage-deflate inflating with a bound
(``ws_handshake.BoundedDeflate``) and ``MessageLimit``.

States (``WsState``)::

    OPEN --we send close (app, shutdown)--> CLOSING --peer's close / timeout--> CLOSED
      \\--peer's close (echoed), protocol error, EOF, dead peer, lost-------------> CLOSED

Rules:

1. The peer's close is echoed with its code and the socket closed at once (the server closes
   TCP first, RFC 6455 7.1.1). A close of ours waits ``CLOSE_TIMEOUT`` for the answer.
2. Bad input fails the WebSocket (RFC 6455 7.1.7): our close frame with the code wsproto or
   our extensions chose (1002 protocol error: unmasked frame, reserved bit, bad opcode,
   fragmented or oversized control frame, bad close frame; 1007 invalid UTF-8 or bad deflate
   data; 1009 a message over ``websocket_max_message_size``), then the socket closes. The
   app's ``websocket.disconnect`` carries that code; otherwise it carries the code of the
   peer's close frame, or 1006 when the socket ended without one.
3. Back-pressure, outbound: writes go to the carrier, whose owner parks the app's ``send()``
   while the peer does not read (and aborts after ``write_timeout``). Inbound: once the app
   has ``websocket_queue_size`` messages or ``body_buffer_size`` bytes waiting, reading stops
   until it has taken half of them.
4. With ``websocket_ping_interval`` set, a ping goes out every interval; a peer that has not
   answered the previous ping by the next is dropped (1006 to the app).
5. Once the app closed, or the server started closing, the peer's data messages are dropped.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from typing import TYPE_CHECKING, Protocol

from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage
from wsproto.extensions import Extension
from wsproto.frame_protocol import CloseReason, Opcode, RsvBits

from hypercorn.protocols.asgi_ws import ABNORMAL_CLOSURE
from hypercorn.protocols.ws_fast import frame_message, take_frames

if TYPE_CHECKING:
    from wsproto.frame_protocol import FrameDecoder, FrameProtocol

    from hypercorn.protocols.asgi_ws import AsgiWsStream
    from hypercorn.protocols.limits import ProtocolLimits

#: Seconds our close frame waits for the peer's before the socket is closed anyway.
CLOSE_TIMEOUT = 5.0
GOING_AWAY = 1001

_NO_RSV = RsvBits(False, False, False)


class WsCarrier(Protocol):
    """The bytes under a WebSocket (the driver's sink for HTTP/1.1; an HTTP/2 stream)."""

    def write(self, data: bytes) -> None: ...

    def close(self) -> None:
        """Flush, then end the byte stream (the socket, or END_STREAM). Idempotent."""

    def abort(self) -> None:
        """Drop it now (a peer that does not read, or a dead one)."""

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


class WsState(Enum):
    OPEN = "open"
    CLOSING = "closing"  # our close frame is out; waiting for the peer's
    CLOSED = "closed"


_OPEN = WsState.OPEN
_CLOSING = WsState.CLOSING
_CLOSED = WsState.CLOSED
_REMOTE_CLOSING = ConnectionState.REMOTE_CLOSING
_WS_OPEN = ConnectionState.OPEN


class MessageLimit(Extension):
    """Fails a message whose payload passes ``limit`` bytes with 1009 (always on, never
    negotiated). Uncompressed frames are judged by their header, before their payload is
    read; compressed ones as they inflate (after the deflate extension, which bounds its own
    output)."""

    name = "hypercorn-message-limit"

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._size = 0
        self._control = False

    def enabled(self) -> bool:
        return True

    def offer(self) -> bool:  # pragma: no cover (never offered: server side only)
        return False

    def frame_inbound_header(
        self,
        proto: FrameDecoder | FrameProtocol,
        opcode: Opcode,
        rsv: RsvBits,
        payload_length: int,
    ) -> CloseReason | RsvBits:
        self._control = opcode.iscontrol()
        if not self._control:
            if opcode is not Opcode.CONTINUATION:
                self._size = 0
            if not rsv.rsv1 and self._size + payload_length > self._limit:
                return CloseReason.MESSAGE_TOO_BIG
        return _NO_RSV

    def frame_inbound_payload_data(
        self, proto: FrameDecoder | FrameProtocol, data: bytes
    ) -> bytes | CloseReason:
        if not self._control:
            self._size += len(data)
            if self._size > self._limit:
                return CloseReason.MESSAGE_TOO_BIG
        return data


#: Reasons sent with the close frames of failures our extensions raise (wsproto says only
#: "error in extension").
_REASONS = {
    CloseReason.MESSAGE_TOO_BIG: "message too big",
    CloseReason.INVALID_FRAME_PAYLOAD_DATA: "invalid frame payload data",
}


class WsSession:
    """One WebSocket after its handshake. See the module docstring."""

    __slots__ = (
        "_awaiting_pong",
        "_carrier",
        "_close_by",
        "_conn",
        "_fast",
        "_limit",
        "_on_deadline",
        "_parts",
        "_paused",
        "_ping_at",
        "_ping_interval",
        "_queue_bytes",
        "_queue_size",
        "_reference_idle",
        "_state",
        "_stream",
        "_write",
        "_write_by",
        "_write_timeout",
        "deadline",
    )

    def __init__(
        self,
        *,
        carrier: WsCarrier,
        stream: AsgiWsStream,
        limits: ProtocolLimits,
        now: float,
        on_deadline: Callable[[], object] | None = None,
    ) -> None:
        self._carrier = carrier
        #: Told when ``deadline`` moved outside a call from the connection (an HTTP/2
        #: connection keeps one deadline for all its sessions).
        self._on_deadline = on_deadline
        self._write = carrier.write
        self._stream = stream
        extensions: list[Extension] = []
        if stream.extension is not None:
            extensions.append(stream.extension)
        extensions.append(MessageLimit(limits.websocket_max_message_size))
        self._conn = Connection(ConnectionType.SERVER, extensions)
        #: ``ws_fast`` reads and writes the common data frames (not under compression).
        self._fast = limits.websocket_fast_path and stream.extension is None
        self._limit = limits.websocket_max_message_size
        #: wsproto holds no part of a frame or message (checked after each time it reads).
        self._reference_idle = True
        self._state = _OPEN
        self._parts: list[str | bytes] = []
        self._paused = False
        self._queue_size = limits.websocket_queue_size
        self._queue_bytes = limits.body_buffer_size
        self._write_timeout = limits.write_timeout
        self._ping_interval = limits.websocket_ping_interval
        self._awaiting_pong = False
        self._ping_at = None if self._ping_interval is None else now + self._ping_interval
        self._close_by: float | None = None
        self._write_by: float | None = None
        #: The earliest of the ping and close deadlines (the driver reads it after each call;
        #: ``next_deadline`` adds the write deadline).
        self.deadline: float | None = self._ping_at
        stream.attach(self)

    # -- ServerConnection (HTTP/1.1: the session is the connection) ------------------------

    @property
    def idle(self) -> bool:
        return self._state is _CLOSED

    @property
    def closed(self) -> bool:
        return self._state is _CLOSED

    @property
    def state(self) -> WsState:
        return self._state

    def next_deadline(self) -> float | None:
        deadline = self.deadline
        write_by = self._write_by
        if write_by is None or (deadline is not None and deadline <= write_by):
            return deadline
        return write_by

    def receive_data(self, data: bytes, now: float) -> None:
        if self._state is _CLOSED:
            return
        if not data:
            # The byte stream ended without a close frame (RFC 6455 7.1.5: 1006).
            self._finish(ABNORMAL_CLOSURE, "", close=True)
            return
        conn = self._conn
        stream = self._stream
        if self._fast and self._reference_idle and self._state is _OPEN and not self._parts:
            messages, used = take_frames(data, self._limit)
            for message in messages:
                stream.message_received(message)
            if used == len(data):
                self._check_queue()
                return
            data = data[used:]
        conn.receive_data(data)
        if self._fast:
            self._reference_idle = False
        for event in conn.events():
            etype = type(event)
            if etype is TextMessage or etype is BytesMessage:
                if self._state is not _OPEN:
                    continue  # rule 5
                parts = self._parts
                if event.message_finished and not parts:  # type: ignore[attr-defined]
                    stream.message_received(event.data)  # type: ignore[attr-defined]
                    continue
                parts.append(event.data)  # type: ignore[attr-defined]
                if event.message_finished:  # type: ignore[attr-defined]
                    self._parts = []
                    if etype is TextMessage:
                        stream.message_received("".join(parts))  # type: ignore[arg-type]
                    else:
                        stream.message_received(b"".join(parts))  # type: ignore[arg-type]
            elif etype is Ping:
                if conn.state is _WS_OPEN:
                    self._write(bytes(conn.send(event.response())))  # type: ignore[attr-defined]
            elif etype is Pong:
                self._awaiting_pong = False
            elif etype is CloseConnection:
                self._close_received(event, now)  # type: ignore[arg-type]
                return
        if self._fast:
            self._reference_idle = _wsproto_idle(conn)
        self._check_queue()

    def _check_queue(self) -> None:
        """Rule 3, inbound: stop reading while the app has too much waiting."""
        stream = self._stream
        if (
            not self._paused
            and (stream.queued >= self._queue_size or stream.buffered >= self._queue_bytes)
            and self._state is _OPEN
        ):
            self._paused = True
            stream.notify_on_read = True
            self._carrier.pause_reading()

    def _close_received(self, event: CloseConnection, now: float) -> None:
        conn = self._conn
        code = event.code
        reason = event.reason or ""
        state = conn.state
        if state is _WS_OPEN:
            # wsproto (or an extension of ours) failed a frame: rule 2.
            reason = _REASONS.get(code, reason)  # type: ignore[call-overload]
            self._write(bytes(conn.send(CloseConnection(code=code, reason=reason))))
        elif state is _REMOTE_CLOSING:
            self._write(bytes(conn.send(event.response())))
        # (else CLOSED: the peer answered our close.)
        self._finish(int(code), reason, close=True)

    def _finish(self, code: int, reason: str, *, close: bool) -> None:
        self._state = _CLOSED
        self.deadline = self._close_by = self._ping_at = self._write_by = None
        if close:
            self._carrier.close()
        else:
            self._carrier.abort()
        self._stream.peer_closed(code, reason)

    def handle_deadline(self, now: float) -> None:
        if self._state is _CLOSED:
            return
        write_by = self._write_by
        if write_by is not None and now >= write_by:
            self._finish(ABNORMAL_CLOSURE, "", close=False)  # the peer stopped reading
            return
        close_by = self._close_by
        if close_by is not None and now >= close_by:
            self._finish(ABNORMAL_CLOSURE, "", close=True)  # no answer to our close
            return
        ping_at = self._ping_at
        if ping_at is not None and now >= ping_at:
            if self._awaiting_pong:
                self._finish(ABNORMAL_CLOSURE, "", close=False)  # rule 4: a dead peer
                return
            if self._state is _OPEN:
                self._awaiting_pong = True
                self._write(bytes(self._conn.send(Ping())))
                self._ping_at = now + self._ping_interval  # type: ignore[operator]
            else:
                self._ping_at = None
        self._set_deadline()

    def _set_deadline(self) -> None:
        ping_at = self._ping_at
        close_by = self._close_by
        if ping_at is None or (close_by is not None and close_by < ping_at):
            self.deadline = close_by
        else:
            self.deadline = ping_at
        if self._on_deadline is not None:
            self._on_deadline()

    def write_paused(self, now: float) -> None:
        if self._state is not _CLOSED:
            self._write_by = now + self._write_timeout

    def write_resumed(self, now: float) -> None:
        self._write_by = None

    def start_shutdown(self, now: float) -> None:
        """Close with 1001 (going away): clients reconnect elsewhere."""
        if self._state is _OPEN:
            self._stream.closing()
            self._send_close(GOING_AWAY, "", now)

    def connection_lost(self) -> None:
        if self._state is not _CLOSED:
            self._state = _CLOSED
            self.deadline = self._close_by = self._ping_at = self._write_by = None
            self._stream.peer_closed(ABNORMAL_CLOSURE, "")

    # -- WsSessionWire (called by the stream for the app) ----------------------------------

    def send_message(self, data: bytes | str, now: float) -> None:
        if self._state is _OPEN:
            if self._fast:
                self._write(frame_message(data))
                return
            event = TextMessage(data=data) if type(data) is str else BytesMessage(data=data)  # type: ignore[arg-type]
            self._write(bytes(self._conn.send(event)))

    def close(self, code: int, reason: str, now: float) -> None:
        if self._state is _OPEN:
            self._send_close(code, reason, now)

    def _send_close(self, code: int, reason: str, now: float) -> None:
        self._write(bytes(self._conn.send(CloseConnection(code=code, reason=reason or None))))
        self._state = _CLOSING
        self._close_by = now + CLOSE_TIMEOUT
        self._set_deadline()
        if self._paused:
            # Rule 5: nothing the peer sends now reaches the app; read on to find its close.
            self._paused = False
            self._carrier.resume_reading()

    def app_reading(self, now: float) -> None:
        stream = self._stream
        if not self._paused:
            return
        if stream.queued <= self._queue_size // 2 and stream.buffered <= self._queue_bytes // 2:
            self._paused = False
            self._carrier.resume_reading()
        else:
            stream.notify_on_read = True


def _wsproto_idle(conn: Connection) -> bool:
    """wsproto holds no part of a frame or message (reads its private state: wsproto is
    pinned by the test suites that run both paths)."""
    proto = conn._proto
    decoder = proto._frame_decoder
    return (
        decoder.header is None
        and not decoder.buffer.buffer
        and proto._message_decoder.opcode is None
    )
