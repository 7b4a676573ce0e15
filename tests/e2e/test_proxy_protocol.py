"""``--proxy-protocol`` through the real server: the scope's ``client`` is the one the PROXY
header names, over HTTP/1.1, HTTP/2 (TLS, the header before the handshake), WebSockets, WSGI
and a unix socket; every bad start closes the connection unanswered and the worker serves on.
(nginx sending ``proxy_protocol`` is in ``test_nginx.py``; the header parser's own cases are in
``tests/protocols/test_proxy.py``.)"""

from __future__ import annotations

import json
import socket
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import connect as ws_connect

from hypercorn.config import Config
from hypercorn.errors import ConfigError
from hypercorn.protocols.proxy import V2_SIGNATURE
from tests.e2e.conftest import RunningServer, start_server
from tests.support.apps import where_app
from tests.support.certs import Certs
from tests.support.h2socket import h2_get

V1 = b"PROXY TCP4 192.0.2.10 198.51.100.1 56324 443\r\n"
V1_CLIENT = ["192.0.2.10", 56324]
#: v2, PROXY over TCP6, from [2001:db8::7]:40000 to [2001:db8::1]:8443, with one TLV.
V2 = (
    V2_SIGNATURE
    + b"\x21\x21\x00\x29"
    + socket.inet_pton(socket.AF_INET6, "2001:db8::7")
    + socket.inet_pton(socket.AF_INET6, "2001:db8::1")
    + struct.pack("!HH", 40000, 8443)
    + b"\x05\x00\x02id"
)
V2_CLIENT = ["2001:db8::7", 40000]
DEADLINE = 10.0


def wsgi_where(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("content-type", "text/plain")])
    return [f"{environ['REMOTE_ADDR']} {environ['REMOTE_PORT']}".encode()]


def exchange(sock: socket.socket, preamble: bytes) -> bytes:
    """Send ``preamble`` and a GET (Connection: close); the whole answer, b"" when closed."""
    request = b"GET / HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n"
    sock.settimeout(DEADLINE)
    sock.sendall(preamble + request)
    answer = b""
    while chunk := sock.recv(65536):
        answer += chunk
    return answer


def body_of(answer: bytes) -> Any:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), answer
    return json.loads(body) if body.startswith(b"{") else body.decode()


@pytest.fixture
def proxied(run_server: Callable[..., RunningServer]) -> Callable[..., RunningServer]:
    def start(app: Any = where_app, **settings: Any) -> RunningServer:
        return run_server(app, proxy_protocol=True, **settings)

    return start


def test_v1_and_v2_over_http1(proxied: Callable[..., RunningServer]) -> None:
    server = proxied()
    for header, client, server_address in (
        (V1, V1_CLIENT, ["198.51.100.1", 443]),
        (V2, V2_CLIENT, ["2001:db8::1", 8443]),
    ):
        with server.connect() as sock:
            seen = body_of(exchange(sock, header))
        assert (seen["client"], seen["server"]) == (client, server_address)
        assert seen["scheme"] == "http"
    # HTTP/2 with prior knowledge (h2c) after the header.
    status, body = h2_get(server.host, server.port, None, preamble=V1, timeout=DEADLINE)
    assert (status, json.loads(body)["client"]) == (200, V1_CLIENT)
    # LOCAL (the proxy's own health check): the real connection's addresses.
    local = V2_SIGNATURE + b"\x20\x00\x00\x00"
    with server.connect() as sock:
        assert body_of(exchange(sock, local))["client"] == list(sock.getsockname())


def test_tls_http2_and_http1_after_the_header(
    run_server: Callable[..., RunningServer], certs: Certs
) -> None:
    server = run_server(where_app, secure=True, proxy_protocol=True, **certs.server_settings)
    status, body = h2_get(
        server.host, server.port, certs.client_context(["h2"]), preamble=V2, timeout=DEADLINE
    )
    assert status == 200
    assert json.loads(body)["client"] == V2_CLIENT
    assert json.loads(body)["scheme"] == "https"

    raw = socket.create_connection((server.host, server.port), timeout=DEADLINE)
    raw.sendall(V1)
    with certs.client_context(["http/1.1"]).wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        assert body_of(exchange(tls, b""))["client"] == V1_CLIENT


def test_header_in_pieces_then_tls(run_server: Callable[..., RunningServer], certs: Certs) -> None:
    """A header that arrives a few bytes at a time (the server waits for the rest, reading
    none of what follows), then the TLS handshake on the same socket."""
    server = run_server(where_app, secure=True, proxy_protocol=True, **certs.server_settings)
    for header, client in ((V1, V1_CLIENT), (V2, V2_CLIENT)):
        raw = socket.create_connection((server.host, server.port), timeout=DEADLINE)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for at in range(0, len(header), 5):
            raw.sendall(header[at : at + 5])
        context = certs.client_context(["http/1.1"])
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            assert body_of(exchange(tls, b""))["client"] == client


def test_websocket(proxied: Callable[..., RunningServer]) -> None:
    server = proxied()
    sock = server.connect()
    sock.sendall(V2)
    with ws_connect(f"ws://{server.host}:{server.port}/", sock=sock) as ws:
        seen = json.loads(ws.recv(timeout=DEADLINE))
        ws.send("after the header")
        assert ws.recv(timeout=DEADLINE) == "after the header"
    assert seen["client"] == V2_CLIENT
    assert seen["scheme"] == "ws"


def test_wsgi_remote_addr(proxied: Callable[..., RunningServer]) -> None:
    server = proxied(wsgi_where)
    with server.connect() as sock:
        assert body_of(exchange(sock, V1)) == "192.0.2.10 56324"


def test_unix_socket(tmp_path: Path, worker_class: str) -> None:
    path = str(tmp_path / "proxied.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(16)
    config = Config()
    config.proxy_protocol = True
    config.proxy_allow_ips = ["10.9.9.9"]  # (a unix socket peer is trusted whatever this says)
    server = start_server(where_app, listener, worker_class=worker_class, config=config)
    try:
        for header, client in ((V1, V1_CLIENT), (V2, V2_CLIENT)):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.connect(path)
                assert body_of(exchange(sock, header))["client"] == client
    finally:
        server.stop()
        listener.close()


BAD_STARTS = {
    "no header": b"",
    "malformed": b"PROXY TCP4 1.2.3.4 nowhere 1 2\r\n",
    "oversized v2": V2_SIGNATURE + b"\x21\x11\xff\xff" + b"\0" * 1000,
    "v1 without CRLF": b"PROXY UNKNOWN " + b"x" * 200,
}


def test_bad_starts_are_closed_unanswered(proxied: Callable[..., RunningServer]) -> None:
    server = proxied()
    for name, start in BAD_STARTS.items():
        with server.connect() as sock:
            assert exchange(sock, start) == b"", name  # a FIN, not a reset: nothing is lost
    with server.connect() as sock:
        assert body_of(exchange(sock, V1))["client"] == V1_CLIENT  # still serving


def test_untrusted_source_is_closed(proxied: Callable[..., RunningServer]) -> None:
    server = proxied(proxy_allow_ips=["10.0.0.0/8", "2001:db8::/32"])
    with server.connect() as sock:
        assert exchange(sock, V1) == b""


def test_slow_header_times_out(proxied: Callable[..., RunningServer]) -> None:
    server = proxied(header_read_timeout=0.3)
    with server.connect() as sock:
        sock.sendall(V1[:10])
        sock.settimeout(DEADLINE)
        started = time.monotonic()
        assert sock.recv(1) == b""
        assert time.monotonic() - started < DEADLINE


def test_config_refuses_bad_allow_ips() -> None:
    config = Config()
    with pytest.raises(ConfigError, match=r"proxy_allow_ips: .*10\.0\.0\.300"):
        config.proxy_allow_ips = "127.0.0.1,10.0.0.300"
    config.proxy_allow_ips = " 127.0.0.1, 10.0.0.0/8 ,* "
    assert config.proxy_allow_ips == ["127.0.0.1", "10.0.0.0/8", "*"]
