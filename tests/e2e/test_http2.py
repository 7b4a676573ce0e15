"""HTTP/2 end to end: real sockets, real clients (httpx over TLS, raw h2 in cleartext)."""

from __future__ import annotations

import asyncio
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.settings
import httpx
import pytest

from tests.e2e.conftest import RunningServer, start_server
from tests.support.certs import Certs
from tests.support.h2socket import connect, h2_get

trustme = pytest.importorskip("trustme")

#: Every test runs on every HTTP/2 engine (Config h2_engine).
pytestmark = pytest.mark.usefixtures("every_h2_engine")


Scope = dict[str, Any]


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


# -- cleartext: prior knowledge and the h2c upgrade ----------------------------------------------


@pytest.fixture
def plain_server(bound_socket: socket.socket, worker_class: str) -> Iterator[RunningServer]:
    server = start_server(echo_app, bound_socket, worker_class=worker_class)
    yield server
    server.stop()


def test_prior_knowledge(plain_server: RunningServer) -> None:
    status, body = h2_get(plain_server.host, plain_server.port, None, "/pk")
    assert status == 200
    assert body.startswith(b"2 http GET /pk tls=False")


def test_small_client_window_parks_only_that_stream(
    bound_socket: socket.socket, worker_class: str
) -> None:
    """A client window of 100 octets: the 200 KB response goes out as the client opens it,
    through the driver's send_blocked wait, while a second stream is answered at once."""

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b"z" * 200_000 if scope["path"] == "/big" else b"small"
        await send({"type": "http.response.start", "status": 200})
        for start in range(0, len(body), 50_000):
            await send(
                {
                    "type": "http.response.body",
                    "body": body[start : start + 50_000],
                    "more_body": True,
                }
            )
        await send({"type": "http.response.body", "body": b""})

    server = start_server(app, bound_socket, worker_class=worker_class)
    try:
        sock = connect(server.host, server.port, None)
        config = h2.config.H2Configuration(client_side=True, header_encoding=None)
        conn = h2.connection.H2Connection(config=config)
        conn.local_settings = h2.settings.Settings(
            client=True, initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 100}
        )
        conn.initiate_connection()
        for path in (b"/big", b"/small"):
            conn.send_headers(
                conn.get_next_available_stream_id(),
                [
                    (b":method", b"GET"),
                    (b":path", path),
                    (b":scheme", b"http"),
                    (b":authority", b"x"),
                ],
                end_stream=True,
            )
        sock.sendall(conn.data_to_send())
        bodies = {1: b"", 3: b""}
        ended: list[int] = []
        while len(ended) < 2:
            data = sock.recv(65536)
            assert data, "closed early"
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.DataReceived):
                    bodies[event.stream_id] += event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.StreamEnded):
                    ended.append(event.stream_id)
            sock.sendall(conn.data_to_send())
        sock.close()
        assert ended[0] == 3  # the small one did not wait behind the big one
        assert bodies == {1: b"z" * 200_000, 3: b"small"}
    finally:
        server.stop()


# -- real clients ----------------------------------------------------------------------------------


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (.ci/run installs it with apt-get as root)")
    return path


def _run(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)


def test_curl_prior_knowledge(plain_server: RunningServer) -> None:
    curl = _tool("curl")
    done = _run(
        curl, "-sS", "--http2-prior-knowledge", "-w", "\\n%{http_version}", plain_server.url + "/c"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == "2 http GET /c tls=False len=0"
    assert done.stdout.splitlines()[-1] == "2"


@pytest.mark.parametrize("data", [None, "a=1&b=2"])
def test_curl_h2c_upgrade(plain_server: RunningServer, data: str | None) -> None:
    curl = _tool("curl")
    args = [curl, "-sS", "--http2", "-w", "\\n%{http_version}", plain_server.url + "/up"]
    if data is not None:
        args[2:2] = ["--data", data]
    done = _run(*args)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    method = "GET" if data is None else "POST"
    assert lines[0] == f"2 http {method} /up tls=False len={len(data or '')}"
    if data is not None:
        assert lines[1] == data  # the upgrading request's body, answered on stream 1
    assert lines[-1] == "2"


def test_curl_http2_over_tls(tls_server: RunningServer, certs: Certs, tmp_path: Path) -> None:
    curl = _tool("curl")
    ca = tmp_path / "ca.pem"
    certs.ca.cert_pem.write_to_path(ca)
    done = _run(
        curl,
        "-sS",
        "--http2",
        "--cacert",
        str(ca),
        "-w",
        "\\n%{http_version}",
        tls_server.url + "/t",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == "2 https GET /t tls=True len=0"
    assert done.stdout.splitlines()[-1] == "2"


def _h2load_ok(output: str, total: int) -> None:
    match = re.search(
        r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed", output
    )
    assert match is not None, output
    assert [int(g) for g in match.groups()] == [total, total, total, 0], output


def test_h2load_cleartext(plain_server: RunningServer) -> None:
    h2load = _tool("h2load")
    done = _run(h2load, "-n", "2000", "-c", "4", "-m", "10", plain_server.url + "/")
    assert done.returncode == 0, done.stderr
    _h2load_ok(done.stdout, 2000)


def test_h2load_over_tls(tls_server: RunningServer) -> None:
    h2load = _tool("h2load")
    done = _run(h2load, "-n", "1000", "-c", "2", "-m", "10", tls_server.url + "/")
    assert done.returncode == 0, done.stderr
    _h2load_ok(done.stdout, 1000)


def test_behind_nghttpx(plain_server: RunningServer, tmp_path: Path) -> None:
    """nghttpx as an HTTP/2 reverse proxy in front (its frontend on a Unix socket, so no port
    is guessed), speaking h2 with prior knowledge to us."""
    nghttpx = _tool("nghttpx")
    curl = _tool("curl")
    front = tmp_path / "front.sock"
    log = tmp_path / "nghttpx.log"
    with (
        open(log, "wb") as stderr,
        subprocess.Popen(
            [
                nghttpx,
                f"--frontend=unix:{front};no-tls",
                f"--backend={plain_server.host},{plain_server.port};;proto=h2",
                "--workers=1",
                "--log-level=WARN",
                f"--pid-file={tmp_path / 'nghttpx.pid'}",
                "--conf=/dev/null",
            ],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        ) as proxy,
    ):
        try:
            deadline = time.monotonic() + 15
            while not front.exists():
                assert proxy.poll() is None, log.read_text()
                assert time.monotonic() < deadline, "nghttpx did not start"
                time.sleep(0.05)  # (polling for the proxy's socket file, bounded above)
            for index in range(3):
                done = _run(
                    curl,
                    "-sS",
                    "--http2-prior-knowledge",
                    "--unix-socket",
                    str(front),
                    f"http://proxied/n{index}",
                    "--data",
                    "x" * 1000,
                )
                assert done.returncode == 0, done.stderr
                assert done.stdout.splitlines()[0] == f"2 http POST /n{index} tls=False len=1000"
        finally:
            proxy.terminate()
            proxy.wait(10)


@pytest.mark.parametrize("version", ["--http1.1", "--http2-prior-knowledge"])
def test_curl_sees_early_hints(
    bound_socket: socket.socket, worker_class: str, version: str
) -> None:
    curl = _tool("curl")

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        assert "http.response.early_hint" in scope["extensions"]
        await send(
            {"type": "http.response.early_hint", "links": [b"</s.css>; rel=preload; as=style"]}
        )
        await send({"type": "http.response.start", "status": 200})
        await send({"type": "http.response.body", "body": b"page"})

    server = start_server(app, bound_socket, worker_class=worker_class)
    try:
        done = _run(curl, "-sS", "-i", version, server.url + "/")
        assert done.returncode == 0, done.stderr
        heads = [line for line in done.stdout.splitlines() if line.startswith("HTTP/")]
        assert [h.split()[1] for h in heads] == ["103", "200"]
        assert "link: </s.css>; rel=preload; as=style" in done.stdout.lower()
        assert done.stdout.endswith("page")
    finally:
        server.stop()
