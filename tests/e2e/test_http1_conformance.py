"""ASGI and HTTP/1.1 conformance found by black-box probing (issue 10, item 9): one reproducer
per finding, each on a real socket against every worker class.

* a ``receive()`` pending when the response completes gets ``http.disconnect``;
* ``write_timeout`` counts time without write progress, in every state, closing included;
* ``keep_alive_max_requests`` closes an HTTP/1.1 connection after that many requests;
* a half-closed client (``SHUT_WR`` after a complete request) still gets its response;
* an app's ``transfer-encoding`` the server cannot honour is a 500;
* an app's own ``connection: close`` is sent once.
"""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Callable
from typing import Any

import anyio
import pytest

from tests.e2e.conftest import RunningServer
from tests.e2e.test_http1 import wait_for
from tests.e2e.test_slow_clients import _server_side_established, read_to_end
from tests.support.certs import Certs
from tests.support.h2socket import h2_get

Scope = dict[str, Any]
RunServer = Callable[..., RunningServer]
DEADLINE = 10.0


def read_response(sock: socket.socket, timeout: float = DEADLINE) -> tuple[bytes, bytes]:
    """(head, body) of one Content-Length response, reading no further than its end."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed before a whole head: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "closed inside a body"
        body += chunk
    assert len(body) == length, "more bytes than one response"
    return head, body


def header_lines(head: bytes, name: bytes) -> list[bytes]:
    return [line for line in head.split(b"\r\n") if line.lower().startswith(name + b":")]


GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


async def hello(scope: Scope, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"hello"})


# -- a pending receive() ---------------------------------------------------------------------


def watching_app(seen: list[str], lifespan: list[str] | None = None) -> Any:
    """Starlette-style: a task waits in receive() (a disconnect watcher) while another
    answers; the app ends when both do. ``seen`` gets what the watcher received."""

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan" and lifespan is not None:
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            lifespan.append("shutdown")
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            return
        await receive()  # the (bodiless) request

        async def respond() -> None:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"done"})

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(respond)  # (scheduled: the watcher below waits first)
            seen.append((await receive())["type"])

    return app


def test_a_pending_receive_gets_disconnect_when_the_response_completes(
    run_server: RunServer,
) -> None:
    """The waiting receive() returns http.disconnect once the response is complete (ASGI:
    "if receive is called after a response has been sent"), so the app ends; the kept-alive
    connection serves the next request. Before: the watcher waited for good."""
    seen: list[str] = []
    server = run_server(watching_app(seen))
    with server.connect() as sock:
        sock.sendall(GET)
        assert read_response(sock)[1] == b"done"
        # (The bytes are out before the woken app records what it got.)
        wait_for(lambda: len(seen) == 1)
        sock.sendall(GET)
        assert read_response(sock)[1] == b"done"
        wait_for(lambda: len(seen) == 2)
    assert seen == ["http.disconnect", "http.disconnect"]


def test_a_pending_receive_gets_disconnect_on_http2(run_server: RunServer) -> None:
    seen: list[str] = []
    server = run_server(watching_app(seen))
    assert h2_get(server.host, server.port, None) == (200, b"done")
    wait_for(lambda: bool(seen))
    assert seen == ["http.disconnect"]


def test_a_graceful_stop_does_not_wait_for_a_finished_requests_watcher(
    run_server: RunServer,
) -> None:
    """Before: the watcher of a request answered on a still-open keep-alive connection kept
    the app running, so a graceful stop waited graceful_timeout (then the worker was
    killed and lifespan shutdown never ran)."""
    seen: list[str] = []
    lifespan: list[str] = []
    server = run_server(watching_app(seen, lifespan), graceful_timeout=60.0)
    with server.connect() as sock:
        sock.sendall(GET)
        assert read_response(sock)[1] == b"done"
        started = time.monotonic()
        server.stop(timeout=DEADLINE)  # (the idle connection is closed within its grace)
    assert time.monotonic() - started < DEADLINE
    assert seen == ["http.disconnect"]
    assert lifespan == ["shutdown"]


# -- write_timeout ---------------------------------------------------------------------------

WRITE_TIMEOUT = 1.0
BIG = 16 * 1024 * 1024


async def big_body_app(scope: Scope, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    headers = [(b"content-length", b"%d" % BIG)]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"b" * BIG})  # one send: all buffered


@pytest.mark.parametrize(
    ("tls", "close"),
    [(False, False), (False, True), (True, True)],
    ids=["kept-alive", "closing", "tls-closing"],
)
def test_write_timeout_spares_a_client_that_reads_slowly_but_steadily(
    run_server: RunServer, certs: Certs, tls: bool, close: bool
) -> None:
    """16 MiB in one message to a client reading about 6 MB/s: the buffer stays above its
    high-water mark for longer than write_timeout but keeps draining, so the response
    completes (write_timeout is time *without progress*), also while the connection closes
    after it and over TLS. Before: cut off write_timeout after the buffer filled."""
    settings: dict[str, Any] = {}
    if tls:
        settings.update(secure=True, certfile=str(certs.cert), keyfile=str(certs.key))
    server = run_server(big_body_app, write_timeout=WRITE_TIMEOUT, **settings)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 128 * 1024)
    sock.connect((server.host, server.port))
    if tls:
        sock = certs.client_context().wrap_socket(sock, server_hostname=server.host)
    with sock:
        sock.sendall(
            b"GET / HTTP/1.1\r\nHost: x\r\n" + (b"Connection: close\r\n" * close) + b"\r\n"
        )
        sock.settimeout(DEADLINE)
        received = 0
        started = time.monotonic()
        while received < BIG:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += len(chunk)
            # The client's own pace, about 6 MB/s (TLS hands out 16 KiB records): a slow
            # reader, never a stalled one.
            time.sleep(0.01 * len(chunk) / 65536)
        elapsed = time.monotonic() - started
    assert received >= BIG, f"cut off after {received} bytes and {elapsed:.1f}s"
    assert elapsed > WRITE_TIMEOUT  # (the case the old rule got wrong)


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/net/tcp")
@pytest.mark.parametrize(
    ("closing", "tls"),
    [("connection-close", False), ("keep-alive-expiry", False), ("connection-close", True)],
    ids=["connection-close", "keep-alive-expiry", "tls-connection-close"],
)
def test_write_timeout_holds_while_the_connection_closes(
    run_server: RunServer, certs: Certs, closing: str, tls: bool
) -> None:
    """The response is complete and the connection closing (the client asked for close, or
    the keep-alive idle time ran out during the flush), but the client reads nothing: the
    connection and its buffered body are dropped write_timeout after the last progress.
    Before: the core's write deadline ended with the core, and the flush waited for good."""
    settings: dict[str, Any] = {}
    if tls:
        settings.update(secure=True, certfile=str(certs.cert), keyfile=str(certs.key))
    server = run_server(
        big_body_app, write_timeout=WRITE_TIMEOUT, keep_alive_timeout=0.2, **settings
    )
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((server.host, server.port))
    client_port = sock.getsockname()[1]
    if tls:
        sock = certs.client_context().wrap_socket(sock, server_hostname=server.host)
    with sock:
        close = b"Connection: close\r\n" if closing == "connection-close" else b""
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n" + close + b"\r\n")
        sent = time.monotonic()
        deadline = sent + WRITE_TIMEOUT + 5.0
        while _server_side_established(server.port, client_port):
            assert time.monotonic() < deadline, "a closing connection keeps its buffer forever"
            time.sleep(0.02)
        assert time.monotonic() - sent >= WRITE_TIMEOUT * 0.8


# -- keep_alive_max_requests -----------------------------------------------------------------


def test_keep_alive_max_requests_closes_after_that_many(run_server: RunServer) -> None:
    server = run_server(hello, keep_alive_max_requests=3)
    with server.connect() as sock:
        for number in (1, 2, 3):
            sock.sendall(GET)
            head, body = read_response(sock)
            assert body == b"hello"
            closes = header_lines(head, b"connection")
            assert closes == ([b"connection: close"] if number == 3 else []), number
        rest, _ = read_to_end(sock, DEADLINE)
    assert rest == b""


# -- half-closed clients ---------------------------------------------------------------------

POST = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"


@pytest.mark.parametrize(
    ("requests", "bodies"),
    [(GET, [b"hello"]), (POST, [b"hello"]), (GET + POST, [b"hello", b"hello"])],
    ids=["get", "post", "pipelined"],
)
def test_a_half_closed_client_gets_its_response(
    run_server: RunServer, requests: bytes, bodies: list[bytes]
) -> None:
    """RFC 9112 9.6: a client may shut down its sending side after complete requests; the
    server still answers them (here the app takes longer than one read), then closes.
    Before: the FIN was taken for a disconnect and nothing was answered."""

    async def slow(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        await anyio.sleep(0.3)  # the app's own work, longer than one read
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body or b"hello"})

    server = run_server(slow)
    with server.connect() as sock:
        sock.sendall(requests)
        sock.shutdown(socket.SHUT_WR)
        data, _ = read_to_end(sock, DEADLINE)
    responses = data.split(b"HTTP/1.1 ")[1:]
    assert [response.partition(b"\r\n\r\n")[2] for response in responses] == bodies, data
    assert all(response.startswith(b"200 ") for response in responses)
    last_head = responses[-1].partition(b"\r\n\r\n")[0]
    assert header_lines(last_head, b"connection") == [b"connection: close"]


# -- headers the app may not set -------------------------------------------------------------


UNHONOURABLE_CODINGS = [
    [(b"transfer-encoding", b"gzip")],
    [(b"transfer-encoding", b"gzip, chunked")],
    [(b"transfer-encoding", b"identity")],
    [(b"transfer-encoding", b"chunked, gzip")],
    [(b"transfer-encoding", b"chunked"), (b"Transfer-Encoding", b"chunked")],  # (twice)
]


def answering(headers: list[tuple[bytes, bytes]], body: bytes = b"\x1f\x8bnot-really-gzip") -> Any:
    """An app answering 200 with ``headers`` and ``body`` in one message."""

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


@pytest.mark.parametrize("headers", UNHONOURABLE_CODINGS)
def test_a_transfer_encoding_the_server_cannot_honour_is_a_500(
    run_server: RunServer, headers: list[tuple[bytes, bytes]]
) -> None:
    """Before: the coding was dropped and the body went out as identity under a 200."""
    server = run_server(answering(headers))
    with server.connect() as sock:
        for _ in range(2):  # (the connection stays healthy for the next request)
            sock.sendall(GET)
            head, body = read_response(sock)
            assert head.startswith(b"HTTP/1.1 500 ")
            assert body == b""
            assert header_lines(head, b"transfer-encoding") == []


@pytest.mark.parametrize("headers", UNHONOURABLE_CODINGS[:1])
def test_a_transfer_encoding_the_server_cannot_honour_is_a_500_on_http2(
    run_server: RunServer, headers: list[tuple[bytes, bytes]]
) -> None:
    server = run_server(answering(headers))
    assert h2_get(server.host, server.port, None) == (500, b"")


def test_an_apps_transfer_encoding_chunked_is_honoured(run_server: RunServer) -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        headers = [(b"transfer-encoding", b"Chunked")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"part", "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    server = run_server(app)
    with server.connect() as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data, _ = read_to_end(sock, DEADLINE)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert header_lines(head, b"transfer-encoding") == [b"transfer-encoding: chunked"]
    assert body == b"4\r\npart\r\n0\r\n\r\n"


@pytest.mark.parametrize(
    ("value", "request_close"),
    [(b"close", False), (b"Close", False), (b"keep-alive, close", False), (b"keep-alive", True)],
)
def test_an_apps_own_connection_header_gives_one_connection_close(
    run_server: RunServer, value: bytes, request_close: bool
) -> None:
    """The app asks to close (or says keep-alive on a connection the client closes): the
    head carries exactly one ``connection: close`` (before: the app's line and ours)."""

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        headers = [(b"x-before", b"1"), (b"Connection", value), (b"x-after", b"2")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"bye", "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    server = run_server(app)
    with server.connect() as sock:
        sock.sendall(
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" if request_close else GET
        )
        data, _ = read_to_end(sock, DEADLINE)
    head = data.partition(b"\r\n\r\n")[0]
    assert head.startswith(b"HTTP/1.1 200 ")
    assert header_lines(head, b"connection") == [b"connection: close"], head
    assert header_lines(head, b"x-before") == [b"x-before: 1"]
    assert header_lines(head, b"x-after") == [b"x-after: 2"]


def test_an_apps_connection_keep_alive_passes_on_a_kept_alive_response(
    run_server: RunServer,
) -> None:
    headers = [(b"connection", b"keep-alive"), (b"content-length", b"2")]
    server = run_server(answering(headers, b"ok"))
    with server.connect() as sock:
        for _ in range(2):
            sock.sendall(GET)
            head, body = read_response(sock)
            assert body == b"ok"
            assert header_lines(head, b"connection") == [b"connection: keep-alive"]
