"""WebSockets over HTTP/2 (RFC 8441) end to end: a client built from h2 (prior-knowledge
h2c) and wsproto's frame layer, on a real socket, against ``serve()``; an HTTP request on
another stream of the same connection meanwhile, and a graceful stop that sends 1001."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import h2.config
import h2.connection
import h2.events
import pytest
from wsproto.connection import Connection, ConnectionType
from wsproto.events import CloseConnection, Event, TextMessage

from tests.e2e.conftest import RunningServer
from tests.support.apps import handle_lifespan

pytestmark = pytest.mark.usefixtures("ws_framing")  # fast path and wsproto alike

TIMEOUT = 10.0


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await handle_lifespan(receive, send)
        return
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": scope["http_version"].encode()})
        return
    await receive()
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        await send({"type": "websocket.send", "text": f"{scope['http_version']}:{message['text']}"})


class H2WsClient:
    """A blocking RFC 8441 client: h2 for the connection, wsproto for the frames."""

    def __init__(self, server: RunningServer) -> None:
        self.sock = server.connect(TIMEOUT)
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        self.h2.initiate_connection()
        self.sock.sendall(self.h2.data_to_send())
        self.events: list[Any] = []
        self.ws: dict[int, Connection] = {}
        self.frames: dict[int, list[Event]] = {}
        self.bodies: dict[int, bytes] = {}
        self.closed = False
        self._buffer = b""
        self._pump_until(lambda: self.h2.remote_settings.enable_connect_protocol == 1)

    def _pump_until(self, done: Callable[[], bool]) -> None:
        deadline = time.monotonic() + TIMEOUT
        while not done():
            assert time.monotonic() < deadline, "timed out"
            data = self.sock.recv(65536)
            if not data:
                self.closed = True
                return
            for event in self._receive(data):
                self.events.append(event)
                stream_id = getattr(event, "stream_id", 0)
                if isinstance(event, h2.events.DataReceived):
                    self.h2.acknowledge_received_data(event.flow_controlled_length, stream_id)
                    if stream_id in self.ws:
                        if event.data:
                            self.ws[stream_id].receive_data(event.data)
                            self.frames[stream_id].extend(self.ws[stream_id].events())
                    else:
                        self.bodies[stream_id] = self.bodies.get(stream_id, b"") + event.data
            out = self.h2.data_to_send()
            if out:
                self.sock.sendall(out)

    def _receive(self, data: bytes) -> list[Any]:
        """h2's events, frame by frame: a graceful GOAWAY leaves the open streams running
        (RFC 9113 section 6.8), which h2's client state machine does not model."""
        self._buffer += data
        events: list[Any] = []
        while len(self._buffer) >= 9:
            end = 9 + int.from_bytes(self._buffer[:3], "big")
            if len(self._buffer) < end:
                break
            frame, self._buffer = self._buffer[:end], self._buffer[end:]
            for event in self.h2.receive_data(frame):
                events.append(event)
                if isinstance(event, h2.events.ConnectionTerminated) and not event.error_code:
                    self.h2.state_machine.state = h2.connection.ConnectionState.CLIENT_OPEN
        return events

    def websocket(self, path: str = "/ws") -> int:
        stream_id = self.h2.get_next_available_stream_id()
        self.h2.send_headers(
            stream_id,
            [
                (b":method", b"CONNECT"),
                (b":protocol", b"websocket"),
                (b":scheme", b"http"),
                (b":path", path.encode()),
                (b":authority", b"localhost"),
                (b"sec-websocket-version", b"13"),
            ],
        )
        self.sock.sendall(self.h2.data_to_send())
        self._pump_until(lambda: self._status(stream_id) is not None)
        assert self._status(stream_id) == b"200"
        self.ws[stream_id] = Connection(ConnectionType.CLIENT)
        self.frames[stream_id] = []
        return stream_id

    def get(self, path: str = "/") -> bytes:
        stream_id = self.h2.get_next_available_stream_id()
        self.h2.send_headers(
            stream_id,
            [
                (b":method", b"GET"),
                (b":scheme", b"http"),
                (b":path", path.encode()),
                (b":authority", b"localhost"),
            ],
            end_stream=True,
        )
        self.sock.sendall(self.h2.data_to_send())
        self._pump_until(lambda: self._ended(stream_id))
        return self.bodies.get(stream_id, b"")

    def _status(self, stream_id: int) -> bytes | None:
        for event in self.events:
            if isinstance(event, h2.events.ResponseReceived) and event.stream_id == stream_id:
                return dict(event.headers)[b":status"]
        return None

    def _ended(self, stream_id: int) -> bool:
        return any(
            isinstance(e, h2.events.StreamEnded) and e.stream_id == stream_id for e in self.events
        )

    def send(self, stream_id: int, event: Event) -> None:
        self.h2.send_data(stream_id, self.ws[stream_id].send(event))
        self.sock.sendall(self.h2.data_to_send())

    def next_frame(self, stream_id: int) -> Event:
        self._pump_until(lambda: bool(self.frames[stream_id]) or self.closed)
        return self.frames[stream_id].pop(0)


def test_rfc8441_echo_beside_http(run_server: Callable[..., RunningServer]) -> None:
    server = run_server(app)
    client = H2WsClient(server)
    first = client.websocket()
    second = client.websocket()
    for round_ in range(3):
        client.send(first, TextMessage(data=f"a{round_}"))
        client.send(second, TextMessage(data=f"b{round_}"))
        assert client.next_frame(first).data == f"2:a{round_}"  # type: ignore[attr-defined]
        assert client.next_frame(second).data == f"2:b{round_}"  # type: ignore[attr-defined]
        assert client.get() == b"2"
    client.send(first, CloseConnection(code=1000))
    close = client.next_frame(first)
    assert isinstance(close, CloseConnection)
    assert close.code == 1000
    client.sock.close()


def test_rfc8441_graceful_stop_sends_1001(run_server: Callable[..., RunningServer]) -> None:
    server = run_server(app, graceful_timeout=30.0)
    client = H2WsClient(server)
    stream_id = client.websocket()
    client.send(stream_id, TextMessage(data="hi"))
    assert client.next_frame(stream_id).data == "2:hi"  # type: ignore[attr-defined]
    started = time.monotonic()
    stopper = threading.Thread(target=server.stop)
    stopper.start()
    close = client.next_frame(stream_id)
    assert isinstance(close, CloseConnection)
    assert close.code == 1001
    client.send(stream_id, close.response())
    stopper.join(TIMEOUT)
    assert not stopper.is_alive()
    assert time.monotonic() - started < TIMEOUT
    client.sock.close()
