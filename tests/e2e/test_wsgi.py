"""WSGI applications behind the real server: what PEP 3333 and the environ promise on the wire."""

from __future__ import annotations

import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.e2e.conftest import RunningServer

RunServer = Callable[..., RunningServer]
DEADLINE = 10.0


def read_all(sock: socket.socket, initial: bytes = b"") -> bytes:
    """Read until the server ends the connection (EOF or reset); fail after DEADLINE."""
    out = bytearray(initial)
    sock.settimeout(DEADLINE)
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return bytes(out)
        except TimeoutError:
            raise AssertionError(
                f"the server kept the connection open; got {bytes(out)!r}"
            ) from None
        if not chunk:
            return bytes(out)
        out += chunk


def read_until(sock: socket.socket, marker: bytes) -> bytes:
    deadline = time.monotonic() + DEADLINE
    out = bytearray()
    while marker not in out:
        sock.settimeout(max(deadline - time.monotonic(), 0.01))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            raise AssertionError(f"{marker!r} never arrived; got {bytes(out)!r}") from None
        assert chunk, f"connection ended before {marker!r}; got {bytes(out)!r}"
        out += chunk
    return bytes(out)


# -- start_response(..., exc_info) after the body began (PEP 3333) ---------------------------


class LateError:
    """Yields a chunk, then hits an error and calls start_response with exc_info.

    The first non-empty chunk commits the headers (PEP 3333: they are "sent" from the
    application's point of view), so start_response must re-raise, whenever the server
    happens to put the bytes on the wire. ``gate`` (when given) holds the error until the
    client has received the first chunk: the streaming path. Without it, the error comes at
    once, before the server's streaming timer: the one-hop path, where the race was.
    """

    def __init__(self, gate: threading.Event | None) -> None:
        self.gate = gate
        self.outcomes: list[str] = []

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"first-chunk"
        if self.gate is not None:
            assert self.gate.wait(DEADLINE)
        try:
            raise ValueError("late failure")
        except ValueError:
            try:
                start_response("500 Internal Server Error", [], sys.exc_info())
            except ValueError:
                self.outcomes.append("re-raised")
                raise
            self.outcomes.append("replaced the committed response")
        yield b"error-page"


@pytest.mark.parametrize("path", ["one-hop", "streaming"])
def test_exc_info_after_the_first_chunk_reraises_whatever_the_timing(
    run_server: RunServer, path: str
) -> None:
    rounds = 20 if path == "one-hop" else 3
    gate = threading.Event() if path == "streaming" else None
    app = LateError(gate)
    server = run_server(app)
    for _ in range(rounds):
        if gate is not None:
            gate.clear()
        with server.connect() as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            if gate is not None:
                received = read_until(sock, b"first-chunk")
                gate.set()
                data = read_all(sock, received)
            else:
                data = read_all(sock)
        # The committed 200 and its first chunk, then the connection ends without the
        # chunked terminator: the client can tell the body is incomplete.
        assert data.startswith(b"HTTP/1.1 200 "), data
        assert b"first-chunk" in data
        assert b"error-page" not in data
        assert b" 500 " not in data
        assert not data.endswith(b"0\r\n\r\n"), data
    assert app.outcomes == ["re-raised"] * rounds


# -- header names with underscores (security) -------------------------------------------------


def environ_headers(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    lines = sorted(f"{k}={v}" for k, v in environ.items() if k.startswith("HTTP_X_"))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return ["\n".join(lines).encode("latin-1")]


SPOOF = (
    b"GET / HTTP/1.1\r\nHost: x\r\n"
    b"X-Auth-User: proxy\r\nX_Auth_User: attacker\r\nX_Only_Underscore: attacker\r\n"
    b"X-Dashed-Header: kept\r\nConnection: close\r\n\r\n"
)


def body_of(response: bytes) -> bytes:
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), response
    return body


def test_wsgi_environ_drops_header_names_with_underscores(run_server: RunServer) -> None:
    server = run_server(environ_headers)
    with server.connect() as sock:
        sock.sendall(SPOOF)
        body = body_of(read_all(sock))
    assert body.decode().splitlines() == [
        "HTTP_X_AUTH_USER=proxy",
        "HTTP_X_DASHED_HEADER=kept",
    ]


def test_header_map_dangerous_maps_them_like_the_dashed_ones(run_server: RunServer) -> None:
    server = run_server(environ_headers, header_map="dangerous")
    with server.connect() as sock:
        sock.sendall(SPOOF)
        body = body_of(read_all(sock))
    assert body.decode().splitlines() == [
        "HTTP_X_AUTH_USER=proxy,attacker",
        "HTTP_X_DASHED_HEADER=kept",
        "HTTP_X_ONLY_UNDERSCORE=attacker",
    ]


def test_header_map_refuse_answers_400_without_calling_the_app(run_server: RunServer) -> None:
    called: list[bool] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        called.append(True)
        return environ_headers(environ, start_response)

    server = run_server(app, header_map="refuse")
    with server.connect() as sock:
        sock.sendall(SPOOF)
        response = read_all(sock)
    assert response.startswith(b"HTTP/1.1 400 "), response
    assert called == []
    with server.connect() as sock:  # a request without such names is served as usual
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Dashed: ok\r\nConnection: close\r\n\r\n")
        assert body_of(read_all(sock)) == b"HTTP_X_DASHED=ok"
    assert called == [True]


def test_asgi_apps_get_header_names_as_sent(run_server: RunServer) -> None:
    seen: list[list[tuple[bytes, bytes]]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        seen.append(list(scope["headers"]))
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    server = run_server(app, lifespan="off")
    with server.connect() as sock:
        sock.sendall(SPOOF)
        assert read_all(sock).startswith(b"HTTP/1.1 204 ")
    names = [name for name, _ in seen[0]]
    assert names.count(b"x_auth_user") == 1
    assert b"x-auth-user" in names
    assert b"x_only_underscore" in names
