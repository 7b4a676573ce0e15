"""HTTP/3 end to end: aioquic's asyncio HTTP/3 client against ``serve()`` on real UDP.

The server runs on every backend (``worker_class``: uvloop, asyncio, trio); the client is
aioquic's own (``tests/support/h3client.py``). Certificates come from trustme.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import RunningServer, start_server
from tests.support.apps import loop_sleep, read_body

pytest.importorskip("aioquic")
trustme = pytest.importorskip("trustme")

from tests.support.h3client import Response, fetch  # noqa: E402


@dataclass
class Certs:
    ca: Any
    cert: Path
    key: Path
    cafile: Path


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    ca = trustme.CA()
    issued = ca.issue_cert("localhost", "127.0.0.1")
    folder = tmp_path_factory.mktemp("h3certs")
    cert, key, cafile = folder / "cert.pem", folder / "key.pem", folder / "ca.pem"
    issued.cert_chain_pems[0].write_to_path(cert)
    issued.private_key_pem.write_to_path(key)
    ca.cert_pem.write_to_path(cafile)
    return Certs(ca, cert, key, cafile)


@pytest.fixture
def udp_socket() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield sock
    finally:
        sock.close()


#: Set by the app when a /slow request is in it.
SLOW_STARTED = threading.Event()


async def h3_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    path = scope["path"]
    body = await read_body(receive)
    if path == "/slow":
        SLOW_STARTED.set()
        await loop_sleep(0.5)
    if path == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for index in range(5):
            await send(
                {"type": "http.response.body", "body": b"part%d;" % index, "more_body": True}
            )
            await loop_sleep()
        await send({"type": "http.response.body", "body": b""})
        return
    if path == "/trailers":
        start = {"type": "http.response.start", "status": 200, "headers": [], "trailers": True}
        await send(start)
        await send({"type": "http.response.body", "body": b"with trailers"})
        await send({"type": "http.response.trailers", "headers": [(b"x-digest", b"42")]})
        return
    text = f"{scope['http_version']} {scope['scheme']} {scope['method']} {path} len={len(body)}"
    headers = [(b"content-type", b"text/plain")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": text.encode() + b"\n" + body})


@pytest.fixture
def h3_server(
    bound_socket: socket.socket, udp_socket: socket.socket, certs: Certs, worker_class: str
) -> Iterator[RunningServer]:
    server = start_server(
        h3_app,
        bound_socket,
        worker_class=worker_class,
        secure=True,
        quic=udp_socket,
        certfile=str(certs.cert),
        keyfile=str(certs.key),
    )
    server.quic_port = udp_socket.getsockname()[1]  # type: ignore[attr-defined]
    yield server
    server.stop()


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_get_post_stream_and_trailers(h3_server: RunningServer, certs: Certs) -> None:
    port = h3_server.quic_port  # type: ignore[attr-defined]
    payload = b"x" * 300_000  # (more than a stream's initial window)
    get, post, stream, trailers = run(
        fetch(
            port,
            str(certs.cafile),
            [
                {"path": "/a?b=c"},
                {"method": "POST", "path": "/up", "chunks": [payload[:1000], payload[1000:]]},
                {"path": "/stream"},
                {"method": "POST", "path": "/trailers", "body": b"x", "trailers": [(b"x-t", b"1")]},
            ],
        )
    )
    assert get.status == 200
    assert get.body == b"3 https GET /a len=0\n"
    assert get.header(b"server") == b"hypercorn-h3"
    head, _, body = post.body.partition(b"\n")
    assert head == b"3 https POST /up len=300000"
    assert body == payload
    assert stream.body == b"part0;part1;part2;part3;part4;"
    assert trailers.body == b"with trailers"
    assert trailers.trailers == [(b"x-digest", b"42")]


def test_twenty_concurrent_streams(h3_server: RunningServer, certs: Certs) -> None:
    port = h3_server.quic_port  # type: ignore[attr-defined]
    responses: list[Response] = run(
        fetch(port, str(certs.cafile), [{"path": f"/{index}"} for index in range(20)])
    )
    assert [r.body.split()[3] for r in responses] == [f"/{index}".encode() for index in range(20)]


def test_tcp_responses_advertise_http3(h3_server: RunningServer, certs: Certs) -> None:
    port = h3_server.quic_port  # type: ignore[attr-defined]
    context = ssl.create_default_context()
    certs.ca.configure_trust(context)
    with httpx.Client(verify=context, http2=True) as client:
        response = client.get(h3_server.url + "/")
    assert response.headers["alt-svc"] == f'h3=":{port}"; ma=3600'


def test_garbage_datagrams_disturb_no_one(h3_server: RunningServer, certs: Certs) -> None:
    port = h3_server.quic_port  # type: ignore[attr-defined]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as noise:
        for size in (1, 40, 1200, 1500):
            noise.sendto(os.urandom(size), ("127.0.0.1", port))
        noise.sendto(b"\xc0\x00\x00\x00\x01\x08" + os.urandom(1300), ("127.0.0.1", port))
    (response,) = run(fetch(port, str(certs.cafile), [{"path": "/after-noise"}]))
    assert response.status == 200


def test_graceful_stop_finishes_the_request_in_flight(
    h3_server: RunningServer, certs: Certs
) -> None:
    port = h3_server.quic_port  # type: ignore[attr-defined]
    SLOW_STARTED.clear()
    stopper = threading.Thread(
        target=lambda: SLOW_STARTED.wait(10) and h3_server.stop(), name="stopper"
    )
    stopper.start()
    (response,) = run(fetch(port, str(certs.cafile), [{"path": "/slow"}]))
    stopper.join(15)
    assert not stopper.is_alive()
    assert response.status == 200
    assert response.body.startswith(b"3 https GET /slow")
