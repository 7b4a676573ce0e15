"""In-memory WebSocket pairs: a real ``wsproto`` client against our HTTP/1.1 connection.

``WsPair`` extends ``H1Pair``: the client is a ``wsproto.WSConnection(CLIENT)``, whose
handshake is written by h11, so the server sees what a real client sends. When the app
accepts, the HTTP/1.1 connection hands over through ``sink.switch`` and the pair does what
the driver does: it builds the ``WsSession`` with the same sink as its carrier, feeds it the
trailing bytes, and from then on feeds it the client's bytes (still cut by ``split``).

``frame`` builds raw client frames by hand (masked or not, any bits), for hostile input.
"""

from __future__ import annotations

import os
import struct
from typing import Any

from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Event, Request
from wsproto.extensions import Extension
from wsproto.utilities import LocalProtocolError

from hypercorn.protocols.asgi_ws import AsgiWsStream
from hypercorn.protocols.connection import SwitchProtocol
from hypercorn.protocols.limits import ProtocolLimits
from hypercorn.protocols.ws import WsSession
from tests.support.pairs import H1Pair


def frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    mask: bool = True,
    length: int | None = None,
) -> bytes:
    """One raw client frame. ``rsv`` is the three reserved bits (0-7); ``length`` forces the
    declared payload length."""
    declared = len(payload) if length is None else length
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    mask_bit = 0x80 if mask else 0
    if declared < 126:
        head = bytes((first, mask_bit | declared))
    elif declared < 65536:
        head = bytes((first, mask_bit | 126)) + struct.pack("!H", declared)
    else:
        head = bytes((first, mask_bit | 127)) + struct.pack("!Q", declared)
    if not mask:
        return head + payload
    key = os.urandom(4)
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return head + key + masked


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return struct.pack("!H", code) + reason


class WsPair(H1Pair):
    """A wsproto client talking to H1Connection, then WsSession, in memory."""

    def __init__(self, limits: ProtocolLimits | None = None, **kwargs: Any) -> None:
        super().__init__(limits, **kwargs)
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.session: WsSession | None = None
        self.sink.on_switch = self._switch
        self._ws_read = 0
        self._eof_told = False

    def _switch(self, switch: SwitchProtocol) -> None:
        assert switch.to == "websocket"
        assert switch.stream is not None
        self.session = WsSession(
            carrier=self.sink, stream=switch.stream, limits=self.limits, now=self.now
        )
        self.server = self.session  # type: ignore[assignment]
        if self.sink.reading_paused:  # (the driver resumes reading for the next protocol)
            self.sink.resume_reading()
        if switch.trailing:
            self.session.receive_data(switch.trailing, self.now)
        if switch.eof:
            self.session.receive_data(b"", self.now)

    # -- client ------------------------------------------------------------------------------

    def handshake(
        self,
        target: str = "/ws",
        *,
        subprotocols: list[str] | None = None,
        extensions: list[Extension] | None = None,
        extra_headers: list[tuple[bytes, bytes]] | None = None,
        then: bytes = b"",
    ) -> AsgiWsStream:
        """The client's upgrade request (and ``then`` in the same write); returns the stream
        the server started."""
        data = self.ws.send(
            Request(
                host="example.com",
                target=target,
                subprotocols=subprotocols or [],
                extensions=extensions or [],
                extra_headers=extra_headers or [],
            )
        )
        self.feed(data + then)
        stream = self.stream
        assert isinstance(stream, AsgiWsStream)
        return stream

    def connect(self, **kwargs: Any) -> AsgiWsStream:
        """Handshake, and the app accepts (``accept`` keys from ``kwargs``)."""
        accept = {"type": "websocket.accept", **kwargs.pop("accept", {})}
        stream = self.handshake(**kwargs)
        assert self.receive() == {"type": "websocket.connect"}
        self.app_send(accept)
        events = self.events()
        assert isinstance(events[0], AcceptConnection), events
        return stream

    def send_ws(self, event: Event) -> None:
        self.feed(self.ws.send(event))

    def events(self) -> list[Any]:
        """What the client made of everything the server wrote since last time."""
        data = bytes(self.sink.out[self._ws_read :])
        self._ws_read = len(self.sink.out)
        events: list[Any] = []
        try:
            if data:
                self.ws.receive_data(data)
            events.extend(self.ws.events())
            if self.sink.closed and not self._eof_told:
                self._eof_told = True
                self.ws.receive_data(None)
        except LocalProtocolError:
            pass  # (already closed on the client's side)
        events.extend(self.ws.events())
        return events

    def raw_output(self) -> bytes:
        """Server bytes since last time, without the wsproto client reading them."""
        data = bytes(self.sink.out[self._ws_read :])
        self._ws_read = len(self.sink.out)
        return data

    def receive_all(self, stream: Any = None) -> list[dict[str, Any]]:  # type: ignore[override]
        messages = []
        while True:
            message = self.receive(stream)
            if message is None:
                return messages
            messages.append(message)
            if message["type"] == "websocket.disconnect":
                return messages
