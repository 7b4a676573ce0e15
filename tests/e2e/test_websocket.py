"""WebSockets end to end: the ``websockets`` client library, Starlette endpoints and raw frames
against ``serve()`` on a real socket (asyncio, uvloop and trio workers).

Each test runs the server in a background thread (``tests.e2e.conftest``) and drives the
clients with ``asyncio.run`` in the test's thread.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.e2e.conftest import RunningServer
from tests.support.apps import handle_lifespan, loop_sleep

pytestmark = pytest.mark.usefixtures("ws_framing")  # fast path and wsproto alike

TIMEOUT = 10.0
Scope = dict[str, Any]


@pytest.fixture
def run_server(
    run_server: Callable[..., RunningServer],
) -> Callable[..., RunningServer]:
    """The e2e ``run_server``, with the apps below given lifespan support."""

    def factory(app: Any, **settings: Any) -> RunningServer:
        async def with_lifespan(scope: Scope, receive: Any, send: Any) -> None:
            if scope["type"] == "lifespan":
                await handle_lifespan(receive, send)
            else:
                await app(scope, receive, send)

        return run_server(with_lifespan, **settings)

    return factory


def ws_url(server: RunningServer, path: str = "/ws") -> str:
    return f"ws://{server.host}:{server.port}{path}"


def run(coro: Awaitable[Any]) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(coro, TIMEOUT)

    return asyncio.run(bounded())


async def echo(scope: Scope, receive: Any, send: Any) -> None:
    """Echoes every message; accepts the client's first subprotocol."""
    if scope["type"] != "websocket":
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    assert (await receive())["type"] == "websocket.connect"
    subprotocols = scope["subprotocols"]
    await send(
        {"type": "websocket.accept", "subprotocol": subprotocols[0] if subprotocols else None}
    )
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") == "close please":
            await send({"type": "websocket.close", "code": 4321, "reason": "as asked"})
            continue
        await send({"type": "websocket.send", "bytes": message["bytes"], "text": message["text"]})


# -- the ASGI messages --------------------------------------------------------------------


@pytest.mark.parametrize("compression", ["deflate", None])
def test_echo_text_binary_and_one_mebibyte(
    run_server: Callable[..., RunningServer], compression: str | None
) -> None:
    server = run_server(echo)

    async def client() -> None:
        async with connect(ws_url(server), compression=compression, max_size=None) as ws:
            assert (ws.response.headers.get("sec-websocket-extensions") is not None) is (
                compression is not None
            )
            await ws.send("hello")
            assert await ws.recv() == "hello"
            await ws.send(b"\x00\x01\xff")
            assert await ws.recv() == b"\x00\x01\xff"
            big = os.urandom(1 << 20)
            await ws.send(big)
            assert await ws.recv() == big
            text = "é" * (1 << 19)
            await ws.send(text)
            assert await ws.recv() == text

    run(client())


def test_subprotocol_is_negotiated(run_server: Callable[..., RunningServer]) -> None:
    server = run_server(echo)

    async def client() -> None:
        async with connect(ws_url(server), subprotocols=["v2.chat", "v1.chat"]) as ws:  # type: ignore[list-item]
            assert ws.subprotocol == "v2.chat"

    run(client())


def test_client_close_reaches_the_app(run_server: Callable[..., RunningServer]) -> None:
    seen: list[dict[str, Any]] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        seen.append(await receive())

    server = run_server(app)

    async def client() -> None:
        async with connect(ws_url(server)) as ws:
            await ws.close(code=4000, reason="leaving")
            assert ws.close_code == 4000  # the server echoed it

    run(client())
    server.stop()
    assert seen == [{"type": "websocket.disconnect", "code": 4000, "reason": "leaving"}]


def test_server_close_reaches_the_client(run_server: Callable[..., RunningServer]) -> None:
    server = run_server(echo)

    async def client() -> None:
        async with connect(ws_url(server)) as ws:
            await ws.send("close please")
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd is not None
            assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4321, "as asked")

    run(client())


async def _status_of(url: str) -> tuple[int, bytes]:
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url):
            pass
    response = refused.value.response
    return response.status_code, response.body or b""


def test_denial_response(run_server: Callable[..., RunningServer]) -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        assert "websocket.http.response" in scope["extensions"]
        await receive()
        await send(
            {
                "type": "websocket.http.response.start",
                "status": 401,
                "headers": [(b"content-type", b"text/plain")],
            }
        )
        await send({"type": "websocket.http.response.body", "body": b"who ", "more_body": True})
        await send({"type": "websocket.http.response.body", "body": b"are you?"})

    server = run_server(app)
    assert run(_status_of(ws_url(server))) == (401, b"who are you?")


def test_close_before_accept_is_403(run_server: Callable[..., RunningServer]) -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.close"})

    server = run_server(app)
    assert run(_status_of(ws_url(server)))[0] == 403


def test_returning_without_accepting_is_500_logged_once(
    run_server: Callable[..., RunningServer], caplog: pytest.LogCaptureFixture
) -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await receive()

    server = run_server(app)
    with caplog.at_level(logging.ERROR, logger="hypercorn.error"):
        assert run(_status_of(ws_url(server)))[0] == 500
        server.stop()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert "without accepting" in errors[0].getMessage()


def test_raising_before_accepting_is_500_logged_once(
    run_server: Callable[..., RunningServer], caplog: pytest.LogCaptureFixture
) -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        raise RuntimeError("boom")

    server = run_server(app)
    with caplog.at_level(logging.ERROR, logger="hypercorn.error"):
        assert run(_status_of(ws_url(server)))[0] == 500
        server.stop()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert errors[0].exc_info is not None


def test_returning_after_accepting_closes_1011_logged_once(
    run_server: Callable[..., RunningServer], caplog: pytest.LogCaptureFixture
) -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})

    server = run_server(app)

    async def client() -> None:
        async with connect(ws_url(server)) as ws:
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == 1011

    with caplog.at_level(logging.ERROR, logger="hypercorn.error"):
        run(client())
        server.stop()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert "1011" in errors[0].getMessage()


def test_send_after_the_client_left_raises_oserror(
    run_server: Callable[..., RunningServer],
) -> None:
    """ASGI 2.4: an app that sends forever stops, because send() raises an OSError."""
    outcome: list[BaseException] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        try:
            while True:
                await send({"type": "websocket.send", "text": "tick"})
                await loop_sleep(0.001)
        except OSError as exc:
            outcome.append(exc)

    server = run_server(app)

    async def client() -> None:
        async with connect(ws_url(server)) as ws:
            assert await ws.recv() == "tick"

    run(client())
    server.stop()  # returns only once every app has finished
    assert len(outcome) == 1
    assert isinstance(outcome[0], OSError)


def test_hundred_concurrent_clients(run_server: Callable[..., RunningServer]) -> None:
    server = run_server(echo)

    async def one(index: int) -> None:
        async with connect(ws_url(server)) as ws:
            for round_ in range(5):
                await ws.send(f"{index}:{round_}")
                assert await ws.recv() == f"{index}:{round_}"

    async def clients() -> None:
        await asyncio.gather(*(one(index) for index in range(100)))

    run(clients())


# -- Starlette -------------------------------------------------------------------------------


def starlette_app() -> Any:
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import WebSocketRoute
    from starlette.websockets import WebSocket, WebSocketDisconnect

    async def echo_endpoint(websocket: WebSocket) -> None:
        await websocket.accept(
            subprotocol="chat" if "chat" in websocket.scope["subprotocols"] else None
        )
        try:
            while True:
                text = await websocket.receive_text()
                if text == "bye":
                    await websocket.close(code=4002, reason="see you")
                    return
                await websocket.send_text(text.upper())
        except WebSocketDisconnect:
            pass

    async def denied(websocket: WebSocket) -> None:
        await websocket.send_denial_response(PlainTextResponse("nope", status_code=418))

    async def json_echo(websocket: WebSocket) -> None:
        await websocket.accept()
        data = await websocket.receive_json()
        await websocket.send_json({"got": data})
        await websocket.close()

    return Starlette(
        routes=[
            WebSocketRoute("/ws", echo_endpoint),
            WebSocketRoute("/denied", denied),
            WebSocketRoute("/json", json_echo),
        ]
    )


def test_starlette_endpoints(run_server: Callable[..., RunningServer]) -> None:
    pytest.importorskip("starlette")
    server = run_server(starlette_app())

    async def client() -> None:
        async with connect(ws_url(server), subprotocols=["chat"]) as ws:  # type: ignore[list-item]
            assert ws.subprotocol == "chat"
            await ws.send("shout")
            assert await ws.recv() == "SHOUT"
            await ws.send("bye")
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd is not None
            assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4002, "see you")
        async with connect(ws_url(server, "/json")) as ws:
            await ws.send('{"a": 1}')
            assert await ws.recv() == '{"got":{"a":1}}'
        assert await _status_of(ws_url(server, "/denied")) == (418, b"nope")

    run(client())


# -- hostile input ---------------------------------------------------------------------------


def _raw_handshake(server: RunningServer) -> socket.socket:
    sock = server.connect()
    sock.sendall(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        assert chunk, "closed during the handshake"
        head += chunk
    assert head.startswith(b"HTTP/1.1 101 ")
    return sock


def _masked(
    opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0, mask: bool = True
) -> bytes:
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    if len(payload) < 126:
        head = bytes((first, (0x80 if mask else 0) | len(payload)))
    else:
        head = bytes((first, (0x80 if mask else 0) | 126)) + struct.pack("!H", len(payload))
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def _close_code_from(sock: socket.socket) -> int | None:
    """Read until EOF; the code of the server's close frame (None if it sent none)."""
    data = b""
    sock.settimeout(TIMEOUT)
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    while len(data) >= 2:
        opcode, length = data[0] & 0x0F, data[1] & 0x7F
        offset = 2
        if length == 126:
            (length,) = struct.unpack("!H", data[2:4])
            offset = 4
        payload, data = data[offset : offset + length], data[offset + length :]
        if opcode == 0x8:
            return int(struct.unpack("!H", payload[:2])[0]) if len(payload) >= 2 else 1005
    return None


HOSTILE = {
    "unmasked": (_masked(0x1, b"hi", mask=False), 1002),
    "reserved-bits": (_masked(0x1, b"hi", rsv=0b011), 1002),
    "bad-opcode": (_masked(0x5, b"hi"), 1002),
    "fragmented-ping": (_masked(0x9, b"hi", fin=False), 1002),
    "oversized-ping": (_masked(0x9, b"p" * 126), 1002),
    "invalid-utf8": (_masked(0x1, b"\xc3\x28"), 1007),
    "too-big": (_masked(0x2, b"b" * 2000), 1009),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_frames_get_their_close_code_and_others_are_unaffected(
    run_server: Callable[..., RunningServer], case: str
) -> None:
    server = run_server(echo, websocket_max_message_size=1000)
    data, code = HOSTILE[case]

    async def scenario() -> None:
        async with connect(ws_url(server)) as bystander:
            await bystander.send("before")
            assert await bystander.recv() == "before"
            loop = asyncio.get_running_loop()

            def hostile() -> int | None:
                with _raw_handshake(server) as sock:
                    sock.sendall(data)
                    return _close_code_from(sock)

            assert await loop.run_in_executor(None, hostile) == code
            await bystander.send("after")
            assert await bystander.recv() == "after"

    run(scenario())


def test_upgrade_without_websocket_version_13_is_426(
    run_server: Callable[..., RunningServer],
) -> None:
    server = run_server(echo)
    with server.connect() as sock:
        sock.sendall(
            b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 7\r\n\r\n"
        )
        sock.settimeout(TIMEOUT)
        head = sock.recv(4096)
    assert head.startswith(b"HTTP/1.1 426 ")
    assert b"sec-websocket-version: 13\r\n" in head


# -- back-pressure ---------------------------------------------------------------------------


def test_a_client_that_does_not_read_makes_send_wait(
    run_server: Callable[..., RunningServer],
) -> None:
    """The app's send() parks while the client does not read: what it managed to send is
    bounded by the socket buffers, not by what it wanted to send (200 MiB)."""
    sent: list[int] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        chunk = b"x" * (1 << 20)
        try:
            for index in range(200):
                await send({"type": "websocket.send", "bytes": chunk})
                sent.append(index)
        except OSError:
            pass

    server = run_server(app, write_timeout=60.0)
    with _raw_handshake(server):
        deadline = time.monotonic() + 5.0
        previous = -1
        # Wait until the app stops making progress (it parked in send()).
        while time.monotonic() < deadline:
            time.sleep(0.2)
            if len(sent) == previous:
                break
            previous = len(sent)
        assert len(sent) < 64, f"{len(sent)} MiB sent to a client that does not read"
    server.stop()


def test_an_app_that_does_not_receive_stops_the_server_reading(
    run_server: Callable[..., RunningServer],
) -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        while True:  # never receives again; ends when the client leaves (send raises)
            await loop_sleep(0.05)
            await send({"type": "websocket.send", "text": "."})

    server = run_server(app)
    frame = _masked(0x2, b"y" * 60000)
    written = 0
    with _raw_handshake(server) as sock:
        sock.settimeout(1.0)
        try:
            while written < 256 << 20:
                sock.sendall(frame)
                written += len(frame)
        except TimeoutError:
            pass
    assert written < 64 << 20, f"the server read {written} bytes for an app that never receives"
    server.stop()


# -- shutdown --------------------------------------------------------------------------------


def test_graceful_stop_closes_open_websockets_with_1001(
    run_server: Callable[..., RunningServer],
) -> None:
    server = run_server(echo, graceful_timeout=30.0)
    codes: list[int | None] = []

    async def scenario() -> None:
        clients: list[ClientConnection] = []
        for _ in range(10):
            ws = await connect(ws_url(server))
            await ws.send("hi")
            assert await ws.recv() == "hi"
            clients.append(ws)
        loop = asyncio.get_running_loop()
        started = loop.time()
        stopping = loop.run_in_executor(None, server.stop)
        for ws in clients:
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
            codes.append(closed.value.rcvd.code if closed.value.rcvd else None)
        await stopping
        # The worker stopped as soon as the last WebSocket closed, long before the timeout.
        assert loop.time() - started < 10.0

    run(scenario())
    assert codes == [1001] * 10
