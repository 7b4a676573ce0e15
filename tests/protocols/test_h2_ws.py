"""WebSockets over HTTP/2 (RFC 8441), in memory: an h2 client opens an extended CONNECT and
a wsproto frame-level client speaks WebSocket inside the stream's DATA. The same ASGI
messages, limits and close codes as over HTTP/1.1, and the other streams of the connection
are served meanwhile."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import h2.events
import h2.settings
import pytest
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, TextMessage
from wsproto.extensions import PerMessageDeflate

from hypercorn.protocols.asgi_ws import AsgiWsStream
from hypercorn.protocols.errors import AppProtocolError
from hypercorn.protocols.limits import ProtocolLimits
from hypercorn.protocols.ws import CLOSE_TIMEOUT
from tests.support.h2pair import ENGINES, H2Pair, every_engine
from tests.support.pairs import SPLITS
from tests.support.wspair import frame


@pytest.fixture(autouse=True, params=sorted(ENGINES))
def _engine(request: pytest.FixtureRequest) -> Iterator[str]:
    """Every test here runs on every HTTP/2 engine."""
    yield from every_engine(request)


pytestmark = pytest.mark.usefixtures("ws_framing")  # fast path and wsproto alike


@pytest.fixture(params=SPLITS)
def split(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class H2Ws:
    """One RFC 8441 WebSocket on an ``H2Pair``: the h2 client's stream, wsproto's frames."""

    def __init__(
        self,
        pair: H2Pair,
        path: str = "/ws",
        *,
        headers: list[tuple[str, str]] | None = None,
        deflate: bool = False,
    ) -> None:
        self.pair = pair
        extra = [(":protocol", "websocket"), ("sec-websocket-version", "13")]
        if deflate:
            extra.append(("sec-websocket-extensions", "permessage-deflate"))
        self.stream_id = pair.request("CONNECT", path, headers=extra + (headers or []), end=False)
        self._deflate = deflate
        self.ws: Connection | None = None
        self.ended = False
        self.reset: int | None = None
        self._seen = 0

    @property
    def stream(self) -> AsgiWsStream:
        stream = self.pair.stream(self.stream_id)
        assert isinstance(stream, AsgiWsStream)
        return stream

    def receive(self) -> dict[str, Any] | None:
        return self.stream.receive_nowait(self.pair.now)

    def receive_all(self) -> list[dict[str, Any]]:
        messages = []
        while (message := self.receive()) is not None:
            messages.append(message)
            if message["type"] == "websocket.disconnect":
                break
        return messages

    def app_send(self, message: dict[str, Any]) -> None:
        self.stream.app_send(message, self.pair.now)

    def accept(self, **message: Any) -> dict[bytes, bytes]:
        assert self.receive() == {"type": "websocket.connect"}
        self.app_send({"type": "websocket.accept", **message})
        headers = self.response_headers()
        assert headers is not None
        assert headers[b":status"] == b"200"
        extensions = []
        if b"sec-websocket-extensions" in headers:
            offer = PerMessageDeflate()
            offer.finalize(headers[b"sec-websocket-extensions"].decode())
            extensions.append(offer)
        self.ws = Connection(ConnectionType.CLIENT, extensions)
        return headers

    def response_headers(self) -> dict[bytes, bytes] | None:
        return self.pair.response(self.stream_id)[0]

    def send(self, event: Any) -> None:
        assert self.ws is not None
        self.pair.send_body(self.stream_id, self.ws.send(event))

    def send_raw(self, data: bytes, end: bool = False) -> None:
        self.pair.send_body(self.stream_id, data, end)

    def events(self) -> list[Any]:
        """What wsproto makes of the server's DATA on the stream since last time."""
        assert self.ws is not None
        self.pair.client_events()
        new = self.pair.events[self._seen :]
        self._seen = len(self.pair.events)
        for event in new:
            if getattr(event, "stream_id", None) != self.stream_id:
                continue
            if isinstance(event, h2.events.DataReceived):
                self.pair.client.acknowledge_received_data(
                    event.flow_controlled_length, self.stream_id
                )
                if event.data:
                    self.ws.receive_data(event.data)
            elif isinstance(event, h2.events.StreamEnded):
                self.ended = True
            elif isinstance(event, h2.events.StreamReset):
                self.reset = event.error_code
        self.pair.flush()
        return list(self.ws.events())


def connected(split: str = "whole", **limits: Any) -> tuple[H2Pair, H2Ws]:
    pair = H2Pair(ProtocolLimits(**limits), split=split)
    ws = H2Ws(pair)
    ws.accept()
    return pair, ws


def test_enable_connect_protocol_is_advertised() -> None:
    pair = H2Pair()
    assert pair.client.remote_settings.enable_connect_protocol == 1


def test_scope_accept_and_echo(split: str) -> None:
    pair = H2Pair(split=split)
    ws = H2Ws(pair, "/chat?room=1", headers=[("sec-websocket-protocol", "one, two")])
    scope = ws.stream.scope
    assert scope["type"] == "websocket"
    assert scope["http_version"] == "2"
    assert scope["scheme"] == "ws"
    assert scope["path"] == "/chat"
    assert scope["query_string"] == b"room=1"
    assert scope["subprotocols"] == ["one", "two"]
    assert scope["headers"][0] == (b"host", b"example.com")
    headers = ws.accept(subprotocol="two", headers=[(b"x-extra", b"1")])
    assert headers[b"sec-websocket-protocol"] == b"two"
    assert headers[b"x-extra"] == b"1"
    assert b"sec-websocket-accept" not in headers
    assert ws.stream.status == 200
    ws.send(TextMessage(data="héllo"))
    ws.send(BytesMessage(data=b"\x00\x01"))
    assert ws.receive_all() == [
        {"type": "websocket.receive", "bytes": None, "text": "héllo"},
        {"type": "websocket.receive", "bytes": b"\x00\x01", "text": None},
    ]
    ws.app_send({"type": "websocket.send", "text": "back"})
    ws.app_send({"type": "websocket.send", "bytes": b"raw"})
    assert [e.data for e in ws.events()] == ["back", b"raw"]


def test_http_streams_beside_a_websocket() -> None:
    pair, ws = connected()
    other = pair.request("GET", "/plain")
    pair.respond(other, body=b"ok")
    headers, body, ended = pair.response(other)
    assert headers is not None
    assert (body, ended) == (b"ok", True)
    ws.send(TextMessage(data="still here"))
    assert ws.receive()["text"] == "still here"  # type: ignore[index]


def test_client_close_is_echoed_and_ends_the_stream(split: str) -> None:
    pair, ws = connected(split)
    ws.send(CloseConnection(code=4000, reason="bye"))
    assert ws.receive_all() == [{"type": "websocket.disconnect", "code": 4000, "reason": "bye"}]
    (close,) = ws.events()
    assert isinstance(close, CloseConnection)
    assert close.code == 4000
    assert ws.ended
    assert not pair.sink.closed  # the connection lives on
    assert ws.stream_id not in pair.server._streams


def test_app_close_waits_for_the_answer() -> None:
    _pair, ws = connected()
    ws.app_send({"type": "websocket.close", "code": 4001, "reason": "done"})
    (close,) = ws.events()
    assert (close.code, close.reason) == (4001, "done")
    assert not ws.ended
    ws.send(close.response())
    ws.events()
    assert ws.ended
    assert ws.receive_all()[-1] == {"type": "websocket.disconnect", "code": 4001, "reason": "done"}


def test_app_close_times_out() -> None:
    pair, ws = connected()
    ws.app_send({"type": "websocket.close"})
    pair.advance(CLOSE_TIMEOUT + 0.1)
    assert ws.receive_all()[-1]["code"] == 1006
    ws.events()
    assert ws.ended


def test_denial_response() -> None:
    pair = H2Pair()
    ws = H2Ws(pair)
    ws.receive()
    ws.app_send({"type": "websocket.http.response.start", "status": 401, "headers": []})
    ws.app_send({"type": "websocket.http.response.body", "body": b"nope"})
    headers, body, ended = pair.response(ws.stream_id)
    assert headers is not None
    assert headers[b":status"] == b"401"
    assert (body, ended) == (b"nope", True)


def test_a_2xx_denial_is_an_app_error_answered_500() -> None:
    pair = H2Pair()
    ws = H2Ws(pair)
    ws.receive()
    with pytest.raises(AppProtocolError):
        ws.app_send({"type": "websocket.http.response.start", "status": 204, "headers": []})
    headers = ws.response_headers()
    assert headers is not None
    assert headers[b":status"] == b"500"


def test_close_before_accept_is_403() -> None:
    pair = H2Pair()
    ws = H2Ws(pair)
    ws.receive()
    ws.app_send({"type": "websocket.close"})
    headers = ws.response_headers()
    assert headers is not None
    assert headers[b":status"] == b"403"


def test_app_returning_after_accept_closes_1011() -> None:
    pair, ws = connected()
    assert ws.stream.app_finished(pair.now) is not None
    (close,) = ws.events()
    assert close.code == 1011


@pytest.mark.parametrize(
    ("headers", "status"),
    [([("sec-websocket-version", "8")], 426)],
)
def test_bad_version_is_refused(headers: list[tuple[str, str]], status: int) -> None:
    pair = H2Pair()
    stream_id = pair.request(
        "CONNECT", "/ws", headers=[(":protocol", "websocket"), *headers], end=False
    )
    response = pair.response(stream_id)[0]
    assert response is not None
    assert response[b":status"] == str(status).encode()
    assert response[b"sec-websocket-version"] == b"13"
    assert not pair.sink.started


def test_other_protocols_are_not_implemented() -> None:
    pair = H2Pair()
    stream_id = pair.request("CONNECT", "/x", headers=[(":protocol", "webtransport")], end=False)
    response = pair.response(stream_id)[0]
    assert response is not None
    assert response[b":status"] == b"501"
    assert not pair.sink.started


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (frame(0x1, b"unmasked", mask=False), 1002),
        (frame(0x1, b"\xff"), 1007),
        (frame(0x2, b"x" * 200), 1009),
    ],
)
def test_bad_frames_close_with_their_code(data: bytes, code: int) -> None:
    _pair, ws = connected(websocket_max_message_size=100)
    ws.send_raw(data)
    (close,) = ws.events()
    assert close.code == code
    assert ws.ended
    assert ws.receive_all()[-1]["code"] == code


def test_stream_reset_by_the_client_disconnects_the_app() -> None:
    pair, ws = connected()
    pair.client.reset_stream(ws.stream_id)
    pair.flush()
    assert ws.receive_all()[-1] == {"type": "websocket.disconnect", "code": 1006, "reason": ""}
    assert ws.stream.disconnected


def test_end_stream_without_close_is_1006() -> None:
    _pair, ws = connected()
    ws.send_raw(b"", end=True)
    assert ws.receive_all()[-1]["code"] == 1006


def test_data_before_the_accept_is_kept() -> None:
    pair = H2Pair()
    ws = H2Ws(pair)
    ws.send_raw(frame(0x1, b"eager"))
    ws.accept()
    assert ws.receive_all()[-1] == {"type": "websocket.receive", "bytes": None, "text": "eager"}


def test_deflate_over_http2() -> None:
    pair = H2Pair()
    ws = H2Ws(pair, deflate=True)
    headers = ws.accept()
    assert headers[b"sec-websocket-extensions"] == b"permessage-deflate"
    text = "squeeze " * 500
    ws.send(TextMessage(data=text))
    assert ws.receive()["text"] == text  # type: ignore[index]
    ws.app_send({"type": "websocket.send", "text": text})
    assert [e.data for e in ws.events()] == [text]


def test_pings_and_a_dead_peer() -> None:
    pair, ws = connected(websocket_ping_interval=10.0)
    pair.advance(10.1)
    (ping,) = ws.events()
    assert isinstance(ping, Ping)
    ws.send(ping.response())
    pair.advance(10.0)
    assert isinstance(ws.events()[0], Ping)
    pair.advance(10.0)  # unanswered
    ws.events()
    assert ws.reset is not None
    assert ws.receive_all()[-1]["code"] == 1006
    assert not pair.sink.closed


def test_an_app_that_does_not_receive_closes_the_stream_window() -> None:
    pair, ws = connected(websocket_queue_size=2)
    chunk = frame(0x2, b"z" * 10_000)
    for _ in range(3):
        ws.send_raw(chunk)
    assert ws.stream.queued == 3
    window = pair.client.local_flow_control_window(ws.stream_id)
    for _ in range(10):  # the server returns no credit while the app is behind
        if pair.client.local_flow_control_window(ws.stream_id) < len(chunk):
            break
        ws.send_raw(chunk)
    assert pair.client.local_flow_control_window(ws.stream_id) < window
    before = pair.client.local_flow_control_window(ws.stream_id)
    ws.receive_all()
    pair.client_events()
    assert pair.client.local_flow_control_window(ws.stream_id) > before


def test_send_waits_on_a_closed_window() -> None:
    pair = H2Pair(client_settings={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 100})
    ws = H2Ws(pair)
    ws.accept()
    ws.app_send({"type": "websocket.send", "bytes": b"b" * 1000})
    assert ws.stream.send_blocked
    pair.client.increment_flow_control_window(10_000, ws.stream_id)
    pair.flush()
    assert not ws.stream.send_blocked
    assert [len(e.data) for e in ws.events()] == [1000]


def test_shutdown_closes_websockets_with_1001_then_the_connection() -> None:
    pair, ws = connected()
    pair.server.start_shutdown(pair.now)
    events = ws.events()
    assert events[0].code == 1001
    assert ws.stream.disconnected
    assert any(isinstance(e, h2.events.ConnectionTerminated) for e in pair.events)
    assert not pair.sink.closed  # the WebSocket is still closing
    ws.send(events[0].response())
    ws.events()
    pair.advance(3.0)  # the GOAWAY's PING round
    assert ws.receive_all()[-1] == {"type": "websocket.disconnect", "code": 1001, "reason": ""}
    assert pair.sink.closed


def test_connection_lost_disconnects_every_websocket() -> None:
    pair, ws = connected()
    pair.server.connection_lost()
    assert ws.receive_all()[-1]["code"] == 1006
