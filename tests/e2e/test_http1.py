"""HTTP/1.1 end to end: serve() on a real loop, httpx and raw sockets on 127.0.0.1."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

import h11
import httpx
import pytest

from tests.e2e.conftest import RunningServer, start_server
from tests.support.apps import loop_sleep
from tests.support.linger import linger_for, reset_by_server
from tests.support.pairs import parse_responses

Scope = dict[str, Any]
RunServer = Callable[..., RunningServer]
DEADLINE = 10.0


async def echo_app(scope: Scope, receive: Any, send: Any) -> None:
    """Echoes method, path and body; reports the client address in a header."""
    if scope["type"] != "http":
        return
    body = bytearray()
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    client = f"{scope['client'][0]}:{scope['client'][1]}".encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"x-client", client)],
        }
    )
    await send(
        {
            "type": "http.response.body",
            "body": scope["method"].encode() + b" " + scope["path"].encode() + b" " + bytes(body),
        }
    )


def read_response(sock: socket.socket, method: str = "GET") -> tuple[h11.Response, bytes, bool]:
    """(response, body, server closed the connection) from a raw socket."""
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method=method, target="/", headers=[("host", "x")]))
    client.send(h11.EndOfMessage())
    response = None
    body = bytearray()
    closed = False
    while True:
        event = client.next_event()
        if event is h11.NEED_DATA:
            data = sock.recv(65536)
            closed = closed or not data
            client.receive_data(data)
            continue
        if isinstance(event, h11.Response):
            response = event
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
            break
    assert response is not None
    return response, bytes(body), closed


def recv_all(sock: socket.socket) -> bytes:
    out = bytearray()
    while chunk := sock.recv(65536):
        out += chunk
    return bytes(out)


def wait_for(condition: Callable[[], bool], timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


# -- the common path ---------------------------------------------------------------------------


def test_keep_alive_reuses_the_connection(run_server: RunServer) -> None:
    server = run_server(echo_app)
    with httpx.Client() as client:
        first = client.get(server.url + "/one")
        second = client.post(server.url + "/two", content=b"payload")
    assert first.status_code == 200
    assert first.text == "GET /one "
    assert second.text == "POST /two payload"
    assert first.headers["x-client"] == second.headers["x-client"]
    assert first.headers["server"] == "hypercorn-h11"
    assert "date" in first.headers


def test_pipelining_answers_in_order(run_server: RunServer) -> None:
    server = run_server(echo_app)
    with server.connect() as sock:
        sock.sendall(
            b"".join(b"GET /%d HTTP/1.1\r\nHost: x\r\n\r\n" % index for index in range(5))
            + b"GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        responses = parse_responses(recv_all(sock))
    bodies = [b"".join(bytes(e.data) for e in r if isinstance(e, h11.Data)) for r in responses]
    assert bodies == [b"GET /%d " % index for index in range(5)] + [b"GET /last "]


# -- closing: lingering only where the client may still be sending (RFC 9112 9.6) -------------


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"GET /a HTTP/1.0\r\n\r\n",
        b"POST /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 2\r\n\r\nhi",
    ],
    ids=["close", "http10", "close-with-body"],
)
def test_a_close_the_client_asked_for_does_not_linger(
    run_server: RunServer, monkeypatch: pytest.MonkeyPatch, request_bytes: bytes
) -> None:
    """The whole response, then the server's socket is closed at once: what the client
    sends after the server's FIN is answered with a reset, not discarded for the linger."""
    linger_for(monkeypatch, 60.0)
    server = run_server(echo_app)
    with server.connect() as sock:
        sock.sendall(request_bytes)
        (events,) = parse_responses(recv_all(sock))
        assert b"".join(bytes(e.data) for e in events if isinstance(e, h11.Data)).startswith(
            request_bytes[:7].replace(b" HTTP", b"")
        )
        assert reset_by_server(sock)


def test_a_request_pipelined_behind_connection_close_is_not_reset(
    run_server: RunServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client that pipelines past its own ``Connection: close`` (against RFC 9112 9.6)
    still gets the answer to it and a lingering close, not a reset."""
    linger_for(monkeypatch, 60.0)
    server = run_server(echo_app)
    with server.connect() as sock:
        sock.sendall(
            b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        (events,) = parse_responses(recv_all(sock))
        assert b"".join(bytes(e.data) for e in events if isinstance(e, h11.Data)) == b"GET /a "
        assert not reset_by_server(sock)


def test_a_response_before_the_body_was_read_lingers(
    run_server: RunServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An app that answers a ``Connection: close`` request without reading its body: the
    rest of the body is still on its way, so the close lingers."""
    linger_for(monkeypatch, 60.0)

    async def early(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"early"})

    server = run_server(early)
    with server.connect() as sock:
        sock.sendall(
            b"POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 100\r\n\r\nab"
        )
        (events,) = parse_responses(recv_all(sock))
        assert b"".join(bytes(e.data) for e in events if isinstance(e, h11.Data)) == b"early"
        assert not reset_by_server(sock)


def test_chunked_request_and_streamed_response(run_server: RunServer) -> None:
    async def stream_back(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        while True:
            message = await receive()
            if message.get("body"):
                await send(
                    {
                        "type": "http.response.body",
                        "body": message["body"].upper(),
                        "more_body": True,
                    }
                )
            if not message.get("more_body"):
                break
        await send({"type": "http.response.body", "body": b"!"})

    server = run_server(stream_back)

    def parts() -> Any:
        yield b"abc"
        yield b"def"

    with httpx.Client() as client:
        response = client.post(server.url, content=parts())
    assert response.headers["transfer-encoding"] == "chunked"
    assert response.content == b"ABCDEF!"


def test_expect_100_continue(run_server: RunServer) -> None:
    server = run_server(echo_app)
    with server.connect() as sock:
        sock.sendall(
            b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
        )
        interim = b""
        while b"\r\n\r\n" not in interim:
            interim += sock.recv(100)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"hello")
        response, body, _ = read_response(sock, "POST")
    assert response.status_code == 200
    assert body == b"POST /up hello"


def test_head_has_no_body(run_server: RunServer) -> None:
    server = run_server(echo_app)
    with httpx.Client() as client:
        response = client.head(server.url + "/h")
        after = client.get(server.url + "/after")  # the connection is still in sync
    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["content-length"] == str(len(b"HEAD /h "))
    assert after.text == "GET /after "


def test_streaming_to_a_slow_reader_does_not_buffer_everything(run_server: RunServer) -> None:
    chunk = b"z" * (100 * 1024)
    total_chunks = 300  # 30 MB: far more than kernel buffers plus our high-water mark
    sent: list[int] = []

    async def big(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for _ in range(total_chunks):
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            sent.append(1)
        await send({"type": "http.response.body", "body": b""})

    server = run_server(big)
    with server.connect(timeout=30) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        wait_for(lambda: len(sent) > 0)
        time.sleep(0.3)  # let the app run ahead as far as back-pressure allows
        stalled_at = len(sent)
        assert stalled_at < total_chunks, "the app was never made to wait for the reader"
        data = recv_all(sock)
    assert len(sent) == total_chunks
    assert data.count(chunk[:1]) >= total_chunks * len(chunk)


def test_a_piece_sent_before_a_pause_is_on_the_wire_during_the_pause(
    run_server: RunServer,
) -> None:
    """Pieces of one step are written together (response.py Rule 4), but one the app sent
    before it waits must not wait with it: the app goes on only once the client read it."""
    read = threading.Event()

    async def ticks(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for tick in (b"one", b"two"):
            await send({"type": "http.response.body", "body": tick, "more_body": True})
            while not read.is_set():  # (the client's side, in another thread)
                await loop_sleep(0.005)
            read.clear()
        await send({"type": "http.response.body", "body": b""})

    server = run_server(ticks)
    with server.connect(timeout=DEADLINE) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        client = h11.Connection(h11.CLIENT)
        client.send(h11.Request(method="GET", target="/", headers=[("host", "x")]))
        client.send(h11.EndOfMessage())
        seen = []
        while True:
            event = client.next_event()
            if event is h11.NEED_DATA:
                client.receive_data(sock.recv(65536))  # (times out if a tick is held)
            elif isinstance(event, h11.Data):
                seen.append(bytes(event.data))
                read.set()
            elif isinstance(event, h11.EndOfMessage):
                break
    assert seen == [b"one", b"two"]


def test_disconnect_is_delivered(run_server: RunServer) -> None:
    seen: list[str] = []

    async def waits(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while True:
            message = await receive()
            seen.append(message["type"])
            if message["type"] == "http.disconnect":
                return

    server = run_server(waits)
    with server.connect() as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        wait_for(lambda: seen == ["http.request"])
    wait_for(lambda: seen == ["http.request", "http.disconnect"])


# -- bad input and failures --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"NOT HTTP AT ALL\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n", 400),
        (
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n",
            400,
        ),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n", 431),
    ],
)
def test_malformed_gets_status_close_and_worker_keeps_serving(
    run_server: RunServer, raw: bytes, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    server = run_server(echo_app)
    with server.connect() as sock:
        try:
            sock.sendall(raw)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may answer and close before the whole request was sent
        data = recv_all(sock)
    assert data.startswith(b"HTTP/1.1 %d " % status)
    assert b"connection: close\r\n" in data.lower()
    with httpx.Client() as client:
        assert client.get(server.url + "/fine").text == "GET /fine "
    assert not [r for r in caplog.records if r.exc_info], "bad input logged a traceback"


def test_app_raising_before_start_gives_500(run_server: RunServer) -> None:
    async def broken(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        raise RuntimeError("before start")

    server = run_server(broken)
    with httpx.Client() as client:
        response = client.get(server.url)
    assert response.status_code == 500


def test_app_raising_after_start_truncates_visibly(run_server: RunServer) -> None:
    async def broken(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        raise RuntimeError("after start")

    server = run_server(broken)
    with httpx.Client() as client, pytest.raises(httpx.RemoteProtocolError):
        client.get(server.url)


def test_curl(run_server: RunServer) -> None:
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    server = run_server(echo_app)
    result = subprocess.run(
        [curl, "-sS", "--data-binary", "from-curl", server.url + "/c"],
        capture_output=True,
        timeout=DEADLINE,
        check=True,
    )
    assert result.stdout == b"POST /c from-curl"


# -- TLS and serve() lifecycle -----------------------------------------------------------------


def test_tls(bound_socket: socket.socket, tmp_path: Any, worker_class: str) -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert_path = tmp_path / "cert.pem"
    key_path = tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(cert_path)
    cert.private_key_pem.write_to_path(key_path)

    async def scheme(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": scope["scheme"].encode()})

    server = start_server(
        scheme,
        bound_socket,
        worker_class=worker_class,
        secure=True,
        certfile=str(cert_path),
        keyfile=str(key_path),
    )
    try:
        context = ssl.create_default_context()
        ca.configure_trust(context)
        with httpx.Client(verify=context) as client:
            response = client.get(server.url)
        assert response.text == "https"
    finally:
        server.stop()


def test_graceful_shutdown_finishes_in_flight_request(run_server: RunServer) -> None:
    gate = threading.Event()
    started: list[bool] = []

    async def slow(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        started.append(True)
        while not gate.is_set():
            await loop_sleep()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"finished"})

    server = run_server(slow, graceful_timeout=10.0)
    with server.connect() as busy, server.connect() as idle:
        busy.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        wait_for(lambda: bool(started))
        stopper = threading.Thread(target=server.stop)
        stopper.start()
        assert recv_all(idle) == b""  # the idle keep-alive connection is closed at once
        gate.set()
        response, body, _ = read_response(busy)
        stopper.join(DEADLINE)
    assert body == b"finished"
    assert response.headers
    assert (b"connection", b"close") in list(response.headers)


def test_max_requests_stops_the_worker(bound_socket: socket.socket, worker_class: str) -> None:
    server = start_server(echo_app, bound_socket, worker_class=worker_class, max_requests=2)
    with httpx.Client() as client:
        client.get(server.url)
        client.get(server.url)
    server.thread.join(DEADLINE)
    assert not server.thread.is_alive()


@pytest.mark.parametrize("parser", ["h11", "httptools"])
@pytest.mark.parametrize("raw", [False, True])
def test_h11_pass_raw_headers_keeps_wire_case(
    run_server: RunServer, parser: str, raw: bool
) -> None:
    seen: list[list[tuple[bytes, bytes]]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        seen.append(list(scope["headers"]))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    server = run_server(app, h11_pass_raw_headers=raw, http1_parser=parser)
    with socket.create_connection((server.host, server.port), timeout=5) as sock:
        # A leading empty line is allowed before the request line (RFC 9112 2.2).
        sock.sendall(
            b"\r\nGET / HTTP/1.1\r\nHOST: x\r\nX-Mixed-Case: v\r\nConnection: close\r\n\r\n"
        )
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200 ")
    names = [name for name, _ in seen[0]]
    if raw:
        assert names == [b"HOST", b"X-Mixed-Case", b"Connection"]
    else:
        assert names == [b"host", b"x-mixed-case", b"connection"]
