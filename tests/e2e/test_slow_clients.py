"""Every slow client is bounded: head, body, keep-alive idle and write deadlines, slowloris.

Small timeouts keep the suite fast; every wait polls with a deadline. Lower bounds use 80%
of the configured timeout (loop timers may fire a hair early), upper bounds a generous slack
for a loaded CI machine.
"""

from __future__ import annotations

import selectors
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.e2e.conftest import RunningServer

Scope = dict[str, Any]
RunServer = Callable[..., RunningServer]
SLACK = 2.0
TIMEOUT = 0.5


def read_to_end(sock: socket.socket, timeout: float) -> tuple[bytes, float]:
    """Everything until the server ends the connection, and when (monotonic) it did."""
    sock.settimeout(timeout)
    out = bytearray()
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return bytes(out), time.monotonic()
        except TimeoutError:
            raise AssertionError(f"still open after {timeout}s; got {bytes(out)!r}") from None
        if not chunk:
            return bytes(out), time.monotonic()
        out += chunk


def get(server: RunningServer, path: str = "/", timeout: float = 5.0) -> bytes:
    with server.connect(timeout=timeout) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data, _ = read_to_end(sock, timeout)
    return data


async def hello(scope: Scope, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"hello"})


def assert_bounded(elapsed: float, timeout: float) -> None:
    assert timeout * 0.8 <= elapsed <= timeout + SLACK, f"closed after {elapsed:.3f}s"


# -- head, body and keep-alive deadlines -------------------------------------------------------


def test_partial_head_gets_408_after_header_read_timeout(run_server: RunServer) -> None:
    server = run_server(hello, header_read_timeout=TIMEOUT)
    with server.connect() as sock:
        start = time.monotonic()
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        data, closed_at = read_to_end(sock, TIMEOUT + SLACK)
    assert data.startswith(b"HTTP/1.1 408 ")
    assert_bounded(closed_at - start, TIMEOUT)


def test_silent_connection_is_closed_after_header_read_timeout(run_server: RunServer) -> None:
    server = run_server(hello, header_read_timeout=TIMEOUT)
    with server.connect() as sock:
        start = time.monotonic()
        data, closed_at = read_to_end(sock, TIMEOUT + SLACK)
    assert data == b"" or data.startswith(b"HTTP/1.1 408 ")
    assert_bounded(closed_at - start, TIMEOUT)


def test_dribbled_head_is_bounded_by_the_whole_head_deadline(run_server: RunServer) -> None:
    """A byte every 50 ms keeps a per-read timer alive forever; the head deadline is total."""
    server = run_server(hello, header_read_timeout=TIMEOUT)
    with server.connect() as sock:
        sock.settimeout(0.05)
        sock.sendall(b"G")
        start = time.monotonic()
        payload = iter(b"ET / HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 10_000)
        data = bytearray()
        closed_at = None
        while closed_at is None:
            assert time.monotonic() - start < TIMEOUT + SLACK, "dribbling kept it open"
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                try:
                    sock.send(bytes([next(payload)]))
                except (BrokenPipeError, ConnectionResetError):
                    closed_at = time.monotonic()
                continue
            except ConnectionResetError:
                closed_at = time.monotonic()
                continue
            if not chunk:
                closed_at = time.monotonic()
            data += chunk
    assert data.startswith(b"HTTP/1.1 408 ")
    assert_bounded(closed_at - start, TIMEOUT)


def test_stalled_body_gets_408_after_read_timeout_and_app_sees_disconnect(
    run_server: RunServer,
) -> None:
    seen: list[dict[str, Any]] = []
    finished = threading.Event()

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        try:
            while True:
                message = await receive()
                seen.append(message)
                if message["type"] == "http.disconnect" or not message.get("more_body"):
                    return
        finally:
            finished.set()

    server = run_server(app, read_timeout=TIMEOUT, header_read_timeout=10.0)
    with server.connect() as sock:
        start = time.monotonic()
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab")
        data, closed_at = read_to_end(sock, TIMEOUT + SLACK)
    assert data.startswith(b"HTTP/1.1 408 ")
    assert_bounded(closed_at - start, TIMEOUT)
    assert finished.wait(SLACK)
    assert seen[-1]["type"] == "http.disconnect"
    assert b"".join(m.get("body", b"") for m in seen) == b"ab"


def test_idle_keep_alive_connection_is_closed_after_keep_alive_timeout(
    run_server: RunServer,
) -> None:
    server = run_server(hello, keep_alive_timeout=TIMEOUT)
    with server.connect() as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        response = bytearray()
        while not response.endswith(b"hello"):
            chunk = sock.recv(65536)
            assert chunk, "closed before the response"
            response += chunk
        start = time.monotonic()
        rest, closed_at = read_to_end(sock, TIMEOUT + SLACK)
    assert response.startswith(b"HTTP/1.1 200 ")
    assert rest == b""
    assert_bounded(closed_at - start, TIMEOUT)


# -- write deadline ----------------------------------------------------------------------------


def _server_side_established(server_port: int, client_port: int) -> bool:
    """Whether the server's end of the connection is still ESTABLISHED (Linux /proc)."""
    local = f"0100007F:{server_port:04X}"
    remote = f"0100007F:{client_port:04X}"
    with open("/proc/net/tcp") as file:
        for line in file.readlines()[1:]:
            fields = line.split()
            if fields[1] == local and fields[2] == remote and fields[3] == "01":
                return True
    return False


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/net/tcp")
def test_client_that_stops_reading_is_dropped_after_write_timeout(
    run_server: RunServer,
) -> None:
    """An endless stream (server-sent events style) to a client that stopped reading: after
    write_timeout the connection is aborted, the app's send fails (ASGI 2.4: an OSError), and
    the worker keeps serving everyone else."""
    give_up = threading.Event()
    app_ended = threading.Event()
    outcome: list[str] = []
    started_at: list[float] = []
    hard_stop = time.monotonic() + 8.0  # never spin past the test, whatever the server does

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] != "/stream":
            await hello(scope, receive, send)
            return
        chunk = b"e" * 65536
        started_at.append(time.monotonic())
        try:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            while not give_up.is_set() and time.monotonic() < hard_stop:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            outcome.append("send never failed")
        except OSError as exc:
            outcome.append(f"send raised {type(exc).__name__}")
        finally:
            app_ended.set()

    server = run_server(app, write_timeout=TIMEOUT)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect((server.host, server.port))
        client_port = sock.getsockname()[1]
        sock.sendall(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        deadline = time.monotonic() + TIMEOUT + SLACK
        while _server_side_established(server.port, client_port):
            assert time.monotonic() < deadline, "a client that never reads is kept forever"
            time.sleep(0.01)
        dropped_at = time.monotonic()
        assert started_at
        assert dropped_at - started_at[0] >= TIMEOUT * 0.8
        # The worker is not busy with the dead stream: another client is answered promptly.
        before = time.monotonic()
        answer = get(server, timeout=SLACK)
        assert answer.startswith(b"HTTP/1.1 200 ")
        assert time.monotonic() - before < 1.0
        assert app_ended.wait(SLACK), "the app still streams into a dropped connection"
        assert outcome, "the app never finished"
        assert outcome[0].startswith("send raised"), outcome
    finally:
        give_up.set()
        sock.close()


# -- slowloris ---------------------------------------------------------------------------------

SLOWLORIS = 300


def test_slowloris_does_not_starve_normal_clients(run_server: RunServer) -> None:
    head_timeout = 3.0
    server = run_server(hello, header_read_timeout=head_timeout)
    lorises: list[socket.socket] = []
    stop = threading.Event()
    dead: set[socket.socket] = set()
    lock = threading.Lock()

    def dribble() -> None:
        while not stop.is_set():
            for sock in lorises:
                with lock:
                    if sock in dead:
                        continue
                try:
                    sock.send(b"a")
                except OSError:
                    with lock:
                        dead.add(sock)
            stop.wait(0.05)

    dribbler = threading.Thread(target=dribble, daemon=True)
    try:
        start = time.monotonic()
        for _ in range(SLOWLORIS):
            sock = server.connect()
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            lorises.append(sock)
        dribbler.start()
        latencies = []
        for index in range(30):
            before = time.monotonic()
            answer = get(server, f"/normal/{index}", timeout=SLACK)
            latencies.append(time.monotonic() - before)
            assert answer.startswith(b"HTTP/1.1 200 "), answer
        assert time.monotonic() - start < head_timeout, "too slow to test during the attack"
        assert max(latencies) < 1.0, f"normal clients waited {max(latencies):.3f}s"

        # Every slowloris connection is cut at the head deadline, although it keeps sending.
        selector = selectors.DefaultSelector()
        for sock in lorises:
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ, bytearray())
        open_count = len(lorises)
        deadline = start + head_timeout + SLACK + 2.0
        while open_count:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"{open_count} slowloris connections outlived the deadline"
            for key, _ in selector.select(remaining):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                try:
                    chunk = sock.recv(65536)
                except BlockingIOError:
                    continue
                except ConnectionResetError:
                    chunk = b""
                if chunk:
                    key.data.extend(chunk)
                    continue
                selector.unregister(sock)
                open_count -= 1
                assert key.data == b"" or key.data.startswith(b"HTTP/1.1 408 "), key.data
        assert time.monotonic() - start >= head_timeout * 0.8
        selector.close()
    finally:
        stop.set()
        if dribbler.is_alive():
            dribbler.join(5)
        for sock in lorises:
            sock.close()


@pytest.mark.parametrize("count", [50])
def test_server_answers_after_slow_clients_are_gone(run_server: RunServer, count: int) -> None:
    """After a wave of timed-out heads the worker holds no leftovers and serves normally."""
    server = run_server(hello, header_read_timeout=TIMEOUT)
    socks = [server.connect() for _ in range(count)]
    try:
        for sock in socks:
            sock.sendall(b"GET / HTTP/1.1\r\n")
        for sock in socks:
            data, _ = read_to_end(sock, TIMEOUT + SLACK)
            assert data.startswith(b"HTTP/1.1 408 ")
    finally:
        for sock in socks:
            sock.close()
    assert get(server).startswith(b"HTTP/1.1 200 ")
