"""WebSockets over HTTP/3 (RFC 9220): an aioquic client's extended CONNECT, wsproto frames."""

from __future__ import annotations

from typing import Any

import pytest
from aioquic.h3.connection import Setting
from aioquic.h3.events import DataReceived
from wsproto.connection import Connection, ConnectionType
from wsproto.events import CloseConnection, TextMessage

from tests.support.h3pair import H3Client, H3Pair

pytestmark = pytest.mark.usefixtures("ws_framing")  # fast path and wsproto alike


class H3Ws:
    """One RFC 9220 WebSocket: the aioquic client's stream, wsproto's frames in its DATA."""

    def __init__(self, pair: H3Pair, path: str = "/ws", **headers: str) -> None:
        self.pair = pair
        client = pair.client
        assert isinstance(client, H3Client)
        self.client = client
        extra = [(":protocol", "websocket"), ("sec-websocket-version", "13")]
        extra += [(name.replace("_", "-"), value) for name, value in headers.items()]
        self.stream_id = client.request("CONNECT", path, headers=extra, end=False)
        self.ws = Connection(ConnectionType.CLIENT)
        self._seen = 0

    def app_send(self, message: dict[str, Any]) -> None:
        self.pair.app_send(self.stream_id, message)

    def receive(self) -> dict[str, Any] | None:
        return self.pair.receive(self.stream_id)

    def send(self, event: Any, end: bool = False) -> None:
        self.client.send_body(self.stream_id, self.ws.send(event), end)

    def events(self) -> list[Any]:
        for event in self.client.events[self._seen :]:
            if isinstance(event, DataReceived) and event.stream_id == self.stream_id:
                self.ws.receive_data(event.data or None if event.stream_ended else event.data)
        self._seen = len(self.client.events)
        return list(self.ws.events())


def test_connect_protocol_is_advertised() -> None:
    pair = H3Pair()
    assert pair.client is not None
    assert pair.client.h3.received_settings[Setting.ENABLE_CONNECT_PROTOCOL] == 1  # type: ignore[index]


def test_accept_echo_and_close() -> None:
    pair = H3Pair()
    ws = H3Ws(pair, "/chat?room=1", sec_websocket_protocol="one, two")
    scope = pair.stream(ws.stream_id).scope
    assert scope["type"] == "websocket"
    assert scope["http_version"] == "3"
    assert scope["scheme"] == "wss"
    assert scope["path"] == "/chat"
    assert scope["subprotocols"] == ["one", "two"]
    assert ws.receive() == {"type": "websocket.connect"}
    ws.app_send({"type": "websocket.accept", "subprotocol": "two"})
    headers = ws.client.response(ws.stream_id)[0]
    assert headers is not None
    assert headers[b":status"] == b"200"
    assert headers[b"sec-websocket-protocol"] == b"two"
    ws.send(TextMessage("hello"))
    assert ws.receive() == {"type": "websocket.receive", "text": "hello", "bytes": None}
    ws.app_send({"type": "websocket.send", "bytes": b"back"})
    assert [e.data for e in ws.events()] == [b"back"]
    ws.app_send({"type": "websocket.close", "code": 1000})
    (close,) = ws.events()
    assert isinstance(close, CloseConnection)
    assert close.code == 1000
    ws.send(close.response(), end=True)
    assert ws.receive() == {"type": "websocket.disconnect", "code": 1000, "reason": ""}
    assert pair.conn.idle


def test_data_before_accept_is_held_in_order() -> None:
    pair = H3Pair()
    ws = H3Ws(pair)
    ws.send(TextMessage("early"))
    assert ws.receive() == {"type": "websocket.connect"}
    ws.app_send({"type": "websocket.accept"})
    assert ws.receive() == {"type": "websocket.receive", "text": "early", "bytes": None}


def test_denial_is_an_http_response() -> None:
    pair = H3Pair()
    ws = H3Ws(pair)
    assert ws.receive() == {"type": "websocket.connect"}
    ws.app_send({"type": "websocket.http.response.start", "status": 403, "headers": []})
    ws.app_send({"type": "websocket.http.response.body", "body": b"no"})
    headers, body, ended = ws.client.response(ws.stream_id)
    assert headers is not None
    assert headers[b":status"] == b"403"
    assert (body, ended) == (b"no", True)


def test_a_bad_handshake_is_refused_without_an_app() -> None:
    pair = H3Pair()
    assert pair.client is not None
    stream_id = pair.client.request(
        "CONNECT", "/ws", headers=[(":protocol", "websocket")], end=False
    )
    assert not pair.sink.started
    headers = pair.client.response(stream_id)[0]
    assert headers is not None
    assert headers[b":status"] == b"426"
    other = pair.client.request("CONNECT", "/x", headers=[(":protocol", "h4x")], end=False)
    assert pair.client.response(other)[0][b":status"] == b"501"  # type: ignore[index]


def test_shutdown_sends_going_away() -> None:
    pair = H3Pair()
    ws = H3Ws(pair)
    ws.receive()
    ws.app_send({"type": "websocket.accept"})
    pair.conn.start_shutdown(pair.now)
    pair.transfer()
    (close,) = ws.events()
    assert isinstance(close, CloseConnection)
    assert close.code == 1001
