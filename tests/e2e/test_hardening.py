"""Responses the app cannot break, and logs a client cannot forge: real bytes, real sockets.

Every test talks raw HTTP/1.1 to ``serve()`` on 127.0.0.1 (the ``run_server`` fixture), so
what is asserted is exactly what a client or an operator tailing the log would see.
"""

from __future__ import annotations

import logging
import re
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import h11
import pytest

from tests.e2e.conftest import RunningServer

Scope = dict[str, Any]
RunServer = Callable[..., RunningServer]
DEADLINE = 10.0


# -- helpers -----------------------------------------------------------------------------------


def exchange(server: RunningServer, data: bytes, timeout: float = DEADLINE) -> tuple[bytes, str]:
    """Send ``data`` on a fresh connection, read until the server ends it.

    Returns (every byte received, how it ended: "eof" or "reset"). Fails on a timeout: every
    case here must end with the server closing the connection.
    """
    out = bytearray()
    with server.connect(timeout=timeout) as sock:
        sock.sendall(data)
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                return bytes(out), "reset"
            except TimeoutError:
                raise AssertionError(
                    f"server kept the connection open; got {bytes(out)!r}"
                ) from None
            if not chunk:
                return bytes(out), "eof"
            out += chunk


def read_until(sock: socket.socket, marker: bytes, timeout: float = DEADLINE) -> bytes:
    deadline = time.monotonic() + timeout
    out = bytearray()
    while marker not in out:
        sock.settimeout(max(deadline - time.monotonic(), 0.001))
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before {marker!r}; got {bytes(out)!r}"
        out += chunk
    return bytes(out)


def split_head(data: bytes) -> tuple[int, dict[bytes, bytes], bytes]:
    """(status, lower-cased headers, everything after the head) of the first response."""
    head, sep, rest = data.partition(b"\r\n\r\n")
    assert sep, f"no complete response head in {data!r}"
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ")[1])
    headers: dict[bytes, bytes] = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, rest


def log_lines(path: Path) -> list[bytes]:
    if not path.exists():
        return []
    return path.read_bytes().splitlines(keepends=True)


def wait_for_lines(path: Path, count: int, timeout: float = DEADLINE) -> list[bytes]:
    deadline = time.monotonic() + timeout
    while True:
        lines = log_lines(path)
        if len(lines) >= count:
            return lines
        assert time.monotonic() < deadline, f"expected {count} log lines, have {lines!r}"
        time.sleep(0.005)


#: Bytes that must never reach a log file raw: C0 controls except LF (line end) and HTAB
#: (traceback indentation only), DEL, and C1 controls as UTF-8 (U+0080-U+009F).
_RAW_CONTROL = re.compile(rb"[\x00-\x08\x0b-\x1f\x7f]|\xc2[\x80-\x9f]")


def assert_no_raw_controls(path: Path) -> None:
    data = path.read_bytes()
    match = _RAW_CONTROL.search(data)
    assert match is None, f"raw control byte {match[0]!r} in {path.name}: {data!r}"


@pytest.fixture(autouse=True)
def _close_log_files(tmp_path: Path) -> Iterator[None]:
    """Serving with errorlog/accesslog files installs handlers on the global loggers."""
    yield
    for name in ("hypercorn.error", "hypercorn.access"):
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            filename = getattr(handler, "baseFilename", "")
            if filename.startswith(str(tmp_path)):
                logger.removeHandler(handler)
                handler.close()


# -- responses the app cannot break ------------------------------------------------------------

BAD_HEADERS = {
    "cr-in-value": (b"x-evil", b"v\rSet-Cookie: pwned=1"),
    "lf-in-value": (b"x-evil", b"v\nSet-Cookie: pwned=1"),
    "crlf-in-value": (b"x-evil", b"v\r\nSet-Cookie: pwned=1"),
    "nul-in-value": (b"x-evil", b"v\x00pwned"),
    "crlf-in-name": (b"x-evil\r\nSet-Cookie: pwned=1\r\nx-b", b"v"),
    "lf-in-name": (b"x-evil\nSet-Cookie", b"pwned=1"),
    "nul-in-name": (b"x-evil\x00pwned", b"v"),
    "colon-in-name": (b"x-evil: pwned\r\nx", b"v"),
    # A name that is no token injects a line without any CR/LF (issue 10, item 3).
    "colon-space-in-name": (b"x-evil: pwned", b"v"),
    "colon-in-name-only": (b"x-evil:pwned", b"v"),
    "space-in-name": (b"x-evil pwned", b"v"),
    "tab-in-name": (b"x-evil\tpwned", b"v"),
    "control-in-name": (b"x-evil\x01pwned", b"v"),
    "non-ascii-name": (b"x-evil-caf\xc3\xa9-pwned", b"v"),
}


@pytest.mark.parametrize("header", BAD_HEADERS.values(), ids=list(BAD_HEADERS))
@pytest.mark.parametrize("streaming", [False, True], ids=["whole-body", "streamed-body"])
def test_app_header_with_cr_lf_nul_is_refused_with_500_and_one_log_line(
    run_server: RunServer, tmp_path: Path, header: tuple[bytes, bytes], streaming: bool
) -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/plain"), header],
            }
        )
        await send({"type": "http.response.body", "body": b"pwned-body", "more_body": streaming})
        if streaming:
            await send({"type": "http.response.body", "body": b"more"})

    errorlog = tmp_path / "error.log"
    # lifespan off: the app ignores lifespan, which would add its own warning line.
    server = run_server(app, errorlog=str(errorlog), lifespan="off")
    # The refused response is a 500 on a connection that stays usable: the second request
    # on it (with Connection: close, so the exchange ends) is answered too.
    request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    last = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    data, _ = exchange(server, request + last)

    status, headers, rest = split_head(data)
    assert status == 500
    assert headers[b"content-length"] == b"0"
    assert b"connection" not in headers
    assert split_head(rest)[0] == 500  # the next request on the same connection
    assert b"pwned" not in data
    assert b"x-evil" not in data.lower()
    lines = wait_for_lines(errorlog, 2)
    assert len(lines) == 2, f"expected one error-log line each, got {b''.join(lines).decode()}"
    assert all(b"x-evil" in line for line in lines)
    assert_no_raw_controls(errorlog)


WSGI_BAD_HEADERS = {
    "colon-space-in-name": ("X-Evil: pwned", "v"),
    "colon-in-name": ("X-Evil:pwned", "v"),
    "space-in-name": ("X-Evil pwned", "v"),
    "crlf-in-name": ("X-Evil\r\nSet-Cookie: pwned=1", "v"),
    "non-ascii-name": ("X-Evil-caf\u00e9", "v"),
    "crlf-in-value": ("X-Evil", "v\r\nSet-Cookie: pwned=1"),
    "nul-in-value": ("X-Evil", "v\x00pwned"),
}


@pytest.mark.parametrize("header", WSGI_BAD_HEADERS.values(), ids=list(WSGI_BAD_HEADERS))
def test_wsgi_start_response_header_that_is_unsafe_is_refused_with_500(
    run_server: RunServer, tmp_path: Path, header: tuple[str, str]
) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain"), header])
        return [b"pwned-body"]

    errorlog = tmp_path / "error.log"
    server = run_server(app, errorlog=str(errorlog))
    request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    last = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    data, _ = exchange(server, request + last)

    status, headers, rest = split_head(data)
    assert status == 500
    assert b"connection" not in headers
    assert split_head(rest[int(headers[b"content-length"]) :])[0] == 500  # same connection
    assert b"pwned" not in data
    assert b"x-evil" not in data.lower()
    lines = wait_for_lines(errorlog, 2)
    assert all(b"X-Evil" in line for line in lines), b"".join(lines).decode()
    assert_no_raw_controls(errorlog)


async def _no_body_app(scope: Scope, receive: Any, send: Any) -> None:
    """Sends a body on every path, including the ones that must not have one."""
    if scope["type"] != "http":
        return
    path = scope["path"]
    if path == "/next":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"NEXT"})
        return
    status = int(path.split("/")[1])
    declared = b"declared" in scope["query_string"]
    headers = [(b"content-length", b"22")] if declared else []
    await send({"type": "http.response.start", "status": status, "headers": headers})
    if b"stream" in scope["query_string"]:
        await send({"type": "http.response.body", "body": b"SMUGGLED-", "more_body": True})
        await send({"type": "http.response.body", "body": b"RESPONSE-BODY", "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    else:
        await send({"type": "http.response.body", "body": b"SMUGGLED-RESPONSE-BODY"})


@pytest.mark.parametrize(
    ("method", "target"),
    [
        ("HEAD", "/200"),
        ("HEAD", "/200?stream"),
        ("HEAD", "/200?declared"),
        ("HEAD", "/200?declared+stream"),
        ("GET", "/204"),
        ("GET", "/204?stream"),
        ("GET", "/204?declared"),
        ("GET", "/304"),
        ("GET", "/304?stream"),
        ("GET", "/304?declared"),
        ("HEAD", "/304?stream"),
    ],
)
def test_no_body_on_head_204_304_even_if_the_app_sends_one(
    run_server: RunServer, method: str, target: str
) -> None:
    server = run_server(_no_body_app)
    with server.connect() as sock:
        sock.sendall(f"{method} {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        # The second request goes out only after the first head arrived: any body bytes the
        # server wrongly wrote would sit in front of the second response.
        first = read_until(sock, b"\r\n\r\n")
        sock.sendall(b"GET /next HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        rest = bytearray()
        while chunk := sock.recv(65536):
            rest += chunk
    data = first + bytes(rest)
    status, headers, after_head = split_head(data)
    assert status == int(target[1:4])
    assert b"SMUGGLED" not in data
    if status == 204:  # RFC 9110 §8.6 and RFC 9112 §6.1: MUST NOT
        assert b"content-length" not in headers
        assert b"transfer-encoding" not in headers
    assert after_head.startswith(b"HTTP/1.1 200 "), f"stray bytes after the head: {data!r}"
    next_status, _, next_body = split_head(after_head)
    assert (next_status, next_body) == (200, b"NEXT")


CL_VIOLATIONS = {
    # (declared length, body messages)
    "short-whole": (10, [b"12345"]),
    "short-streamed": (10, [b"12", b"345"]),
    "short-streamed-empty-end": (10, [b"12345", b""]),
    "long-whole": (3, [b"12345"]),
    "long-streamed": (3, [b"12", b"345"]),
    # The declared bytes were all sent before the app overshot: the client has a correct
    # body; what must not happen is the extra byte or a reused connection.
    "long-after-exact": (3, [b"123", b"4"]),
    "zero-declared-body-sent": (0, [b"x"]),
}


@pytest.mark.parametrize("case", CL_VIOLATIONS.values(), ids=list(CL_VIOLATIONS))
def test_violated_content_length_closes_without_a_complete_looking_response(
    run_server: RunServer, case: tuple[int, list[bytes]]
) -> None:
    declared, pieces = case

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", str(declared).encode())],
            }
        )
        for index, piece in enumerate(pieces):
            more = index < len(pieces) - 1
            await send({"type": "http.response.body", "body": piece, "more_body": more})

    server = run_server(app)
    # A pipelined second request: if the server kept the connection, its answer would follow.
    data, _ = exchange(
        server,
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /second HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    assert data.count(b"HTTP/1.1 ") == 1, f"the connection was reused: {data!r}"
    status, headers, body = split_head(data)
    if status == 500:  # refused before the head left: an honest, complete error response
        assert body == b""
        return
    assert status == 200
    assert headers[b"content-length"] == str(declared).encode()
    assert len(body) <= declared, f"more bytes than declared reached the client: {body!r}"
    if len(body) == declared:
        assert pieces[0] == body, "a complete-looking body that is not the app's declared bytes"
        return
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method="GET", target="/", headers=[("host", "x")]))
    client.send(h11.EndOfMessage())
    client.receive_data(data)
    client.receive_data(b"")
    with pytest.raises(h11.RemoteProtocolError, match="without sending complete"):
        for _ in range(10):
            if type(client.next_event()) in (h11.EndOfMessage, h11.ConnectionClosed):
                break


# -- logs that cannot be forged ----------------------------------------------------------------

FORGED = b"[2030-01-01 00:00:00 +0000] [1] [INFO] forged"
FORGED_ENCODED = b"%5B2030-01-01%2000:00:00%20+0000%5D%20%5B1%5D%20%5BINFO%5D%20forged"

#: Requests carrying control characters in every place a client controls. Each is accepted
#: or refused by the parser (a 4xx is fine); whatever is served must be logged escaped.
HOSTILE_REQUESTS = [
    b"GET /a%1b[31mred%1b[0m HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /b%0d%0a" + FORGED_ENCODED + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /c%0a" + FORGED_ENCODED + b"?q=%0d%0a%1b%00%7f%c2%9b HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /d%00%07%08%7f HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /e HTTP/1.1\r\nHost: x\r\nUser-Agent: ua\x9b31m\x85" + FORGED + b"\r\n\r\n",
    b"GET /f HTTP/1.1\r\nHost: x\r\nReferer: http://r/\x9b2J\x90\x9d\r\nX-Forged: \x84\r\n\r\n",
    b"GET /g HTTP/1.1\r\nHost: x\r\nUser-Agent: ua\x1b[2J\x1b]0;owned\x07\r\n\r\n",
    b"GET /h HTTP/1.1\r\nHost: x\r\nReferer: r\x1b[31m\x7f\r\n\r\n",
    b"GET /i\x1b[31m HTTP/1.1\r\nHost: x\r\n\r\n",
]

ACCESS_FORMAT = (
    '%(h)s "%(r)s" "%(R)s" %(U)s %(Uq)s q=%(q)s %(m)s %(s)s "%(f)s" "%(a)s" "%({x-forged}i)s"'
)


def test_access_log_escapes_control_characters_from_requests(
    run_server: RunServer, tmp_path: Path
) -> None:
    served: list[str] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        served.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    accesslog = tmp_path / "access.log"
    server = run_server(app, accesslog=str(accesslog), access_log_format=ACCESS_FORMAT)
    for request in HOSTILE_REQUESTS:
        exchange(server, request[:-2] + b"Connection: close\r\n\r\n")
    assert len(served) >= 4, f"too few hostile requests were served to prove anything: {served}"
    lines = wait_for_lines(accesslog, len(served))
    assert len(lines) == len(served), b"".join(lines).decode(errors="replace")
    assert_no_raw_controls(accesslog)
    text = accesslog.read_bytes()
    assert not any(line.startswith(FORGED[:12]) for line in lines)
    assert b"\\x1b[31mred" in text
    assert b"\\x0d\\x0a[2030-01-01" in text
    if "/e" in served:
        assert b"ua\\x9b31m\\x85[2030-01-01" in text


def test_error_log_escapes_control_characters_from_requests(
    run_server: RunServer, tmp_path: Path
) -> None:
    """An app error quoting client data (a common framework habit) reaches the error log
    through the server's "Error in ASGI Framework" record: it must not forge lines there."""
    served: list[str] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        served.append(scope["path"])
        headers = dict(scope["headers"])
        agent = headers.get(b"user-agent", b"").decode("latin-1")
        query = scope["query_string"].decode("latin-1")
        raise LookupError(f"no route for {scope['path']}?{query} (agent {agent})")

    errorlog = tmp_path / "error.log"
    server = run_server(app, errorlog=str(errorlog))
    for request in HOSTILE_REQUESTS:
        data, _ = exchange(server, request[:-2] + b"Connection: close\r\n\r\n")
        assert data.startswith((b"HTTP/1.1 500 ", b"HTTP/1.1 400 ")), data
    assert len(served) >= 4, f"too few hostile requests were served to prove anything: {served}"

    def records() -> list[bytes]:
        return [line for line in log_lines(errorlog) if b"Error in ASGI Framework" in line]

    deadline = time.monotonic() + DEADLINE
    while len(records()) < len(served):
        assert time.monotonic() < deadline, errorlog.read_bytes()
        time.sleep(0.005)
    assert_no_raw_controls(errorlog)
    lines = log_lines(errorlog)
    forged = [line for line in lines if line.startswith(FORGED[:12])]
    assert not forged, f"a client forged error-log lines: {forged}"
    assert b"\\x1b[31mred" in errorlog.read_bytes()


def test_access_log_response_header_atoms(run_server: RunServer, tmp_path: Path) -> None:
    """``%({name}o)s`` reads the headers the app answered with, through a real server."""

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        headers = [(b"content-type", b"text/x-probe"), (b"x-trace", b"t-42")]
        await send({"type": "http.response.start", "status": 201, "headers": headers})
        await send({"type": "http.response.body", "body": b"ok"})

    accesslog = tmp_path / "access.log"
    fmt = '%(s)s "%({content-type}o)s" "%({x-trace}o)s" "%({absent}o)s"'
    server = run_server(app, accesslog=str(accesslog), access_log_format=fmt)
    exchange(server, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    (line,) = wait_for_lines(accesslog, 1)
    assert line.strip().endswith(b'201 "text/x-probe" "t-42" "-"'), line
