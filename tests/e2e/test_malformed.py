"""Request smuggling, end to end: raw bytes on a real socket, for every HTTP/1.1 parser stack.

Each case is one connection carrying an ambiguous request with a second request hidden where
a lenient parser would find it. The server must answer the status the strict front door
names (``hypercorn/protocols/http1/judge.py``), close the connection, never hand the hidden
request to the app, and keep serving another client's keep-alive connection on the same
worker. The parser-level corpus and fuzzing live in ``tests/protocols``; this file proves the
same verdicts reach the wire.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any

import pytest

from hypercorn.protocols.http1.selection import httptools_available
from tests.e2e.conftest import RunningServer

Scope = dict[str, Any]
RunServer = Callable[..., RunningServer]
DEADLINE = 5.0

SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
SMUGGLED_BODY = SMUGGLED + b"GET /smuggled2 HTTP/1.1\r\nHost: x\r\n\r\n"

#: name -> (bytes on the wire, expected status)
CASES: dict[str, tuple[bytes, int]] = {
    "cl-then-te": (
        b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
        400,
    ),
    "te-then-cl": (
        b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Length: 60\r\n\r\n0\r\n\r\n" + SMUGGLED,
        400,
    ),
    "duplicate-cl": (
        b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: 36\r\n\r\n"
        + SMUGGLED,
        400,
    ),
    "cl-list": (
        b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 0, 36\r\n\r\n" + SMUGGLED,
        400,
    ),
    "cl-with-sign": (
        b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: +36\r\n\r\n" + SMUGGLED,
        400,
    ),
    "te-not-ending-in-chunked": (
        b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n"
        b"0\r\n\r\n" + SMUGGLED,
        400,
    ),
    "te-obfuscated-value": (
        b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
        400,
    ),
    "te-space-before-colon": (
        b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
        400,
    ),
    "te-obs-fold": (
        b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n chunked\r\n\r\n"
        b"0\r\n\r\n" + SMUGGLED,
        400,
    ),
    "te-on-http10": (
        b"POST /a HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
        400,
    ),
    "chunk-size-overflow": (
        # 2**64 + 0x25: a 64-bit parser wraps it to 37 and finds the hidden request after it.
        b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"10000000000000025\r\n" + b"x" * 37 + b"\r\n0\r\n\r\n" + SMUGGLED,
        400,
    ),
    "chunk-size-bare-lf": (
        b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\nabc\r\n0\r\n\r\n" + SMUGGLED,
        400,
    ),
    "chunk-data-overrun": (
        b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"2\r\nabc\r\n0\r\n\r\n" + SMUGGLED,
        400,
    ),
    "bare-lf-in-head": (
        b"POST /a HTTP/1.1\r\nHost: x\nContent-Length: 36\r\n\r\n" + SMUGGLED,
        400,
    ),
    "bare-cr-in-head": (
        b"POST /a HTTP/1.1\r\nHost: x\rContent-Length: 36\r\n\r\n" + SMUGGLED,
        400,
    ),
    "nul-in-header-value": (
        b"POST /a HTTP/1.1\r\nHost: x\r\nX-Pad: a\x00b\r\nContent-Length: 0\r\n\r\n" + SMUGGLED,
        400,
    ),
}

PARSERS = [
    "h11",
    pytest.param(
        "httptools",
        marks=pytest.mark.skipif(not httptools_available(), reason="httptools is not installed"),
    ),
]


def make_app(seen: list[str]) -> Callable[..., Any]:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        seen.append(scope["path"])
        while True:
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body"):
                break
        body = scope["path"].encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})

    return app


def read_response(sock: socket.socket) -> bytes:
    """One Content-Length framed response from a keep-alive connection."""
    out = bytearray()
    deadline = time.monotonic() + DEADLINE
    while True:
        head_end = out.find(b"\r\n\r\n")
        if head_end != -1:
            head = bytes(out[:head_end]).lower()
            length = int(head.split(b"content-length:")[1].split(b"\r\n")[0])
            if len(out) >= head_end + 4 + length:
                return bytes(out)
        sock.settimeout(max(deadline - time.monotonic(), 0.001))
        chunk = sock.recv(65536)
        assert chunk, f"closed mid-response: {bytes(out)!r}"
        out += chunk


def read_until_closed(sock: socket.socket) -> tuple[bytes, str]:
    out = bytearray()
    sock.settimeout(DEADLINE)
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return bytes(out), "reset"
        except TimeoutError:
            raise AssertionError(f"connection left open; got {bytes(out)!r}") from None
        if not chunk:
            return bytes(out), "eof"
        out += chunk


@pytest.mark.parametrize("parser", PARSERS)
@pytest.mark.parametrize("case", CASES.values(), ids=list(CASES))
def test_smuggling_attempt_is_refused_and_isolated(
    run_server: RunServer, parser: str, case: tuple[bytes, int]
) -> None:
    attack, status = case
    seen: list[str] = []
    server = run_server(make_app(seen), http1_parser=parser, keep_alive_timeout=30.0)
    with server.connect() as bystander:
        bystander.sendall(b"GET /before HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(bystander).endswith(b"/before")

        with server.connect() as attacker:
            attacker.sendall(attack)
            data, ended = read_until_closed(attacker)
        assert data.startswith(b"HTTP/1.1 %d " % status), data
        assert data.count(b"HTTP/1.1 ") == 1, f"more than one response: {data!r}"
        assert b"connection: close" in data.lower()
        assert ended == "eof", "the error response must be followed by a clean close"
        assert not any(path.startswith("/smuggled") for path in seen), seen

        bystander.sendall(b"GET /after HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(bystander).endswith(b"/after")
    assert not any(path.startswith("/smuggled") for path in seen), seen


@pytest.mark.parametrize("parser", PARSERS)
def test_byte_by_byte_attack_gets_the_same_verdict(run_server: RunServer, parser: str) -> None:
    """TCP segmentation must not change the verdict: the classic CL.TE head, one byte per
    segment (only the head: bytes sent after the server closed would draw a reset)."""
    attack, status = CASES["cl-then-te"]
    attack = attack[: attack.index(b"\r\n\r\n") + 4]
    seen: list[str] = []
    server = run_server(make_app(seen), http1_parser=parser)
    with server.connect() as attacker:
        attacker.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for index in range(len(attack)):
            try:
                attacker.send(attack[index : index + 1])
            except (BrokenPipeError, ConnectionResetError):
                break
        data, _ = read_until_closed(attacker)
    assert data.startswith(b"HTTP/1.1 %d " % status), data
    assert seen == []
