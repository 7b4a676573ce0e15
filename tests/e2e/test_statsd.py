"""statsd: a real UDP listener receives the lines a real server sends (workers, no master)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from hypercorn.statsd import MAX_DATAGRAM, StatsdClient
from tests.e2e.conftest import RunningServer

DEADLINE = 10.0


class UdpListener:
    """A statsd server stand-in: collects metric lines from datagrams on 127.0.0.1."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.datagrams: list[bytes] = []
        self.lines: list[str] = []

    def receive_until(self, done: Any, timeout: float = DEADLINE) -> list[str]:
        """Read datagrams until ``done(lines)`` is true; fails after ``timeout``."""
        deadline = time.monotonic() + timeout
        while not done(self.lines):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out; lines so far: {self.lines}")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            self.datagrams.append(data)
            self.lines.extend(data.decode().split("\n"))
        return self.lines

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def statsd() -> Iterator[UdpListener]:
    listener = UdpListener()
    yield listener
    listener.close()


def total(lines: list[str], name: str, kind: str = "c") -> int:
    """The sum of the counter ``name``'s values (``name:value|c...``)."""
    values = 0
    for line in lines:
        metric, _, rest = line.partition(":")
        value, _, tail = rest.partition("|")
        if metric == name and tail.split("|")[0] == kind:
            values += int(value)
    return values


async def app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    if scope["path"] == "/boom":
        raise RuntimeError("boom")
    status = 404 if scope["path"] == "/missing" else 200
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def test_client_formats_prefix_and_tags_and_packs_datagrams(statsd: UdpListener) -> None:
    client = StatsdClient(statsd.address, "app", "env:test,team:web")
    lines = [client.line(f"hypercorn.request.status.{200 + i}", i, "c") for i in range(100)]
    client.send(lines)
    client.close()
    received = statsd.receive_until(lambda got: len(got) >= 100)
    assert received == lines
    assert lines[1] == "app.hypercorn.request.status.201:1|c|#env:test,team:web"
    assert len(statsd.datagrams) > 1  # 100 lines do not fit one datagram...
    assert all(len(data) <= MAX_DATAGRAM for data in statsd.datagrams)  # ...nor exceed one


def test_client_drops_what_nobody_receives() -> None:
    # A port nobody listens on: ECONNREFUSED comes back on a later send; neither raises.
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    address = f"127.0.0.1:{probe.getsockname()[1]}"
    probe.close()
    client = StatsdClient(address)
    for _ in range(3):
        client.send(["hypercorn.requests:1|c"])
    client.close()
    client.send(["hypercorn.requests:1|c"])  # closed: a no-op
    assert client.dropped >= 1


def test_requests_statuses_durations_and_gauges_arrive(
    run_server: Any, statsd: UdpListener
) -> None:
    server: RunningServer = run_server(
        app,
        statsd_host=statsd.address,
        statsd_prefix="web",
        dogstatsd_tags="env:test",
    )
    with httpx.Client(base_url=server.url, timeout=DEADLINE) as client:
        # (The 500 closes its connection: the last requests open the one the gauge sees.)
        statuses = [client.get("/boom").status_code, client.get("/missing").status_code]
        statuses += [client.get("/").status_code for _ in range(5)]
        assert statuses == [500, 404] + [200] * 5
        # The keep-alive connection is still open: the gauge (sent with each beat) sees it.
        lines = statsd.receive_until(
            lambda got: (
                total(got, "web.hypercorn.requests") >= 7
                and any(line.startswith("web.hypercorn.connections.open:1|g") for line in got)
            )
        )
    assert all(line.endswith("|#env:test") for line in lines)
    assert total(lines, "web.hypercorn.requests") == 7
    assert total(lines, "web.hypercorn.request.status.200") == 5
    assert total(lines, "web.hypercorn.request.status.404") == 1
    assert total(lines, "web.hypercorn.request.status.500") == 1
    assert total(lines, "web.hypercorn.request.status_class.2xx") == 5
    assert total(lines, "web.hypercorn.request.status_class.4xx") == 1
    assert total(lines, "web.hypercorn.request.status_class.5xx") == 1
    durations = [line for line in lines if line.startswith("web.hypercorn.request.duration:")]
    assert len(durations) == 7
    assert all(0 <= float(line.split(":")[1].split("|")[0]) < DEADLINE * 1000 for line in durations)
    assert all(line.split("|")[1] == "ms" for line in durations)
    # upstream's hypercorn.log.<level>: the app's exception was logged once.
    statsd.receive_until(lambda got: total(got, "web.hypercorn.log.exception") >= 1)
    server.stop()
    assert total(statsd.lines, "web.hypercorn.requests") == 7


async def ws_app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "websocket":
        return
    while True:
        message = await receive()
        if message["type"] == "websocket.connect":
            await send({"type": "websocket.accept"})
        elif message["type"] == "websocket.receive":
            await send({"type": "websocket.send", "text": message.get("text")})
        else:
            return


def test_open_websockets_are_a_gauge_and_count_once_they_end(
    run_server: Any, statsd: UdpListener
) -> None:
    from websockets.sync.client import connect

    server: RunningServer = run_server(ws_app, statsd_host=statsd.address)
    with connect(f"ws://{server.host}:{server.port}/") as ws:
        ws.send("hi")
        assert ws.recv(timeout=DEADLINE) == "hi"
        statsd.receive_until(lambda got: "hypercorn.websockets.open:1|g" in got)
    lines = statsd.receive_until(lambda got: total(got, "hypercorn.requests") == 1)
    assert total(lines, "hypercorn.request.status.101") == 1  # (the handshake's answer)
    statsd.receive_until(
        lambda got: got[-2:] == ["hypercorn.connections.open:0|g", "hypercorn.websockets.open:0|g"]
    )
