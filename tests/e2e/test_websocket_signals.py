"""Open WebSockets across a graceful stop and a rolling restart: real master, real workers,
real signals, ``websockets`` clients. Every client gets 1001 (going away), none hangs, and a
worker exits as soon as its last WebSocket closed (well inside ``graceful_timeout``)."""

from __future__ import annotations

import asyncio
import signal
import socket
import textwrap
import time
from pathlib import Path

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.support.procs import running, wait_for

pytestmark = pytest.mark.slow

APP = textwrap.dedent(
    """
    import os


    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] == "http":
            body = str(os.getpid()).encode()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": body})
            return
        await receive()
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            await send({"type": "websocket.send", "text": f"{os.getpid()} {message['text']}"})
    """
)

CLIENTS = 20
#: Far longer than the test allows itself: a stop that waits for it has failed.
GRACEFUL = "60"


@pytest.fixture
def ws_app_dir(tmp_path: Path) -> Path:
    (tmp_path / "wsapp.py").write_text(APP)
    return tmp_path


async def _open(port: int, count: int) -> list[ClientConnection]:
    clients = []
    for index in range(count):
        ws = await connect(f"ws://127.0.0.1:{port}/ws", open_timeout=10)
        await ws.send(str(index))
        assert (await ws.recv()).endswith(f" {index}")
        clients.append(ws)
    return clients


async def _close_codes(clients: list[ClientConnection], timeout: float) -> list[int | None]:
    async def code(ws: ClientConnection) -> int | None:
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
        return closed.value.rcvd.code if closed.value.rcvd is not None else None

    return list(await asyncio.wait_for(asyncio.gather(*(code(ws) for ws in clients)), timeout))


def test_sigterm_closes_open_websockets_with_1001_and_exits_at_once(
    ws_app_dir: Path, bound_socket: socket.socket
) -> None:
    args = ["-w", "2", "--graceful-timeout", GRACEFUL, "wsapp:app"]
    with running(args, cwd=ws_app_dir, sock=bound_socket) as server:
        server.wait_ready()

        async def scenario() -> list[int | None]:
            clients = await _open(server.port, CLIENTS)
            server.signal(signal.SIGTERM)
            return await _close_codes(clients, 10.0)

        started = time.monotonic()
        assert asyncio.run(scenario()) == [1001] * CLIENTS
        assert server.wait_exit(10) == 0
        assert time.monotonic() - started < 10.0  # not the 60 s graceful timeout


def test_sigusr1_closes_open_websockets_with_1001_and_they_reconnect(
    ws_app_dir: Path, bound_socket: socket.socket
) -> None:
    args = ["-w", "2", "--graceful-timeout", GRACEFUL, "-t", "30", "wsapp:app"]
    with running(args, cwd=ws_app_dir, sock=bound_socket) as server:
        old = server.wait_ready()

        async def scenario() -> None:
            clients = await _open(server.port, CLIENTS)
            server.signal(signal.SIGUSR1)
            assert await _close_codes(clients, 20.0) == [1001] * CLIENTS
            # Wait for the new generation, then every client reconnects to a new worker.
            wait_for(lambda: not (old & server.workers()), 20, "old workers gone")
            again = await _open(server.port, CLIENTS)
            for ws in again:
                await ws.send("pid?")
                pid = int((await ws.recv()).split()[0])
                assert pid not in old
                await ws.close()

        asyncio.run(scenario())
        server.signal(signal.SIGTERM)
        assert server.wait_exit(10) == 0
