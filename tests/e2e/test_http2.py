"""HTTP/2 end to end: real sockets, real clients (httpx over TLS, raw h2 in cleartext)."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import RunningServer, start_server

trustme = pytest.importorskip("trustme")

Scope = dict[str, Any]


@dataclass
class Certs:
    ca: Any
    cert: Path
    key: Path

    def client_context(self, alpn: list[str] | None = None) -> ssl.SSLContext:
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        if alpn is not None:
            context.set_alpn_protocols(alpn)
        return context


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1", "localhost")
    folder = tmp_path_factory.mktemp("certs")
    cert, key = folder / "cert.pem", folder / "key.pem"
    issued.cert_chain_pems[0].write_to_path(cert)
    issued.private_key_pem.write_to_path(key)
    return Certs(ca, cert, key)


async def echo_app(scope: Scope, receive: Any, send: Any) -> None:
    """Answers with what it saw: version, scheme, tls, method, path and the request body."""
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    info = (
        f"{scope['http_version']} {scope['scheme']} {scope['method']} {scope['path']} "
        f"tls={'tls' in scope['extensions']} len={len(body)}"
    ).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": info + b"\n" + body})


@pytest.fixture
def tls_server(
    bound_socket: socket.socket, certs: Certs, worker_class: str
) -> Iterator[RunningServer]:
    server = start_server(
        echo_app,
        bound_socket,
        worker_class=worker_class,
        secure=True,
        certfile=str(certs.cert),
        keyfile=str(certs.key),
    )
    yield server
    server.stop()


def test_httpx_http2_over_tls(tls_server: RunningServer, certs: Certs) -> None:
    with httpx.Client(http2=True, verify=certs.client_context()) as client:
        response = client.get(tls_server.url + "/a?b=c")
        assert response.http_version == "HTTP/2"
        first = response.text.splitlines()[0]
        assert first == "2 https GET /a tls=True len=0"
        assert response.headers["server"] == "hypercorn-h2"
        payload = b"x" * 200_000  # (more than the stream and initial connection windows)
        response = client.post(tls_server.url + "/up", content=payload)
        head, _, body = response.content.partition(b"\n")
        assert head == b"2 https POST /up tls=True len=200000"
        assert body == payload


def test_many_concurrent_streams_on_one_connection(tls_server: RunningServer, certs: Certs) -> None:
    async def main() -> list[str]:
        async with httpx.AsyncClient(http2=True, verify=certs.client_context()) as client:
            responses = await asyncio.gather(
                *(client.get(f"{tls_server.url}/{index}") for index in range(50))
            )
            return [r.text.split()[3] for r in responses if r.http_version == "HTTP/2"]

    assert asyncio.run(main()) == [f"/{index}" for index in range(50)]


def test_alpn_falls_back_to_http11(tls_server: RunningServer, certs: Certs) -> None:
    with httpx.Client(http2=False, verify=certs.client_context()) as client:
        response = client.get(tls_server.url)
    assert response.http_version == "HTTP/1.1"
    assert response.text.startswith("1.1 https GET / tls=True")


def test_alpn_without_h2_serves_http11(
    bound_socket: socket.socket, certs: Certs, worker_class: str
) -> None:
    server = start_server(
        echo_app,
        bound_socket,
        worker_class=worker_class,
        secure=True,
        certfile=str(certs.cert),
        keyfile=str(certs.key),
        alpn_protocols=["http/1.1"],
    )
    try:
        with httpx.Client(http2=True, verify=certs.client_context()) as client:
            response = client.get(server.url)
        assert response.http_version == "HTTP/1.1"
    finally:
        server.stop()
