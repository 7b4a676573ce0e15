"""Behind nginx (Debian's package, started per test on loopback with its own config in a temp
dir: ``tests/support/nginx.py``): HTTP/1.1 and WebSockets over a TCP and a unix socket
upstream, what ``ProxyFixMiddleware`` and the PROXY protocol make of what nginx sends, and a
rolling restart that loses no request. Skipped, with the reason, without nginx."""

from __future__ import annotations

import json
import signal
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect as ws_connect

from hypercorn.middleware import ProxyFixMiddleware
from tests.e2e.conftest import RunningServer, start_server
from tests.support.apps import where_app
from tests.support.certs import Certs
from tests.support.nginx import address, running_nginx, skip_reason
from tests.support.procs import LoadLoop, running, wait_for, write_app

DEADLINE = 10.0

PROXY_HEADERS = """
        proxy_http_version 1.1;
        proxy_set_header Host $host;
        proxy_set_header Upgrade $http_upgrade;
        proxy_set_header Connection $connection_upgrade;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto $scheme;
"""
# "upgrade" for a WebSocket handshake, else "" (which keeps upstream connections alive).
UPGRADE_MAP = "map $http_upgrade $connection_upgrade { default upgrade; '' ''; }"


@pytest.fixture
def loopback() -> Iterator[Callable[[], socket.socket]]:
    """``loopback()``: a new listening socket on 127.0.0.1, port 0, for nginx to inherit."""
    made: list[socket.socket] = []

    def listen() -> socket.socket:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        made.append(sock)
        return sock

    yield listen
    for sock in made:
        sock.close()


def unix_listener(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.listen(128)
    return sock


@pytest.fixture
def backend(bound_socket: socket.socket, tmp_path: Path) -> Iterator[tuple[Any, Path]]:
    """``start(app, **settings)`` serving on the TCP ``bound_socket`` and a unix socket."""
    path = tmp_path / "backend.sock"
    unix = unix_listener(path)
    started: list[RunningServer] = []

    def start(app: Any, **settings: Any) -> RunningServer:
        server = start_server(app, bound_socket, also=[unix], **settings)
        started.append(server)
        return server

    yield start, path
    for server in started:
        server.stop()
    unix.close()


def test_http_and_websockets_over_tcp_and_unix(
    backend: tuple[Any, Path], loopback: Callable[[], socket.socket], certs: Certs, tmp_path: Path
) -> None:
    if reason := skip_reason():
        pytest.skip(reason)
    start, path = backend
    server = start(ProxyFixMiddleware(where_app, trusted_hops=1))
    front = loopback()
    port = front.getsockname()[1]
    http = f"""
    {UPGRADE_MAP}
    upstream over_tcp {{ server {server.host}:{server.port}; keepalive 4; }}
    upstream over_unix {{ server unix:{path}; keepalive 4; }}
    server {{
        listen {address(front)} ssl;
        ssl_certificate {certs.cert};
        ssl_certificate_key {certs.key};
        location /tcp/ {{ proxy_pass http://over_tcp/; {PROXY_HEADERS} }}
        location /unix/ {{ proxy_pass http://over_unix/; {PROXY_HEADERS} }}
    }}
    """
    context = certs.client_context()
    with (
        running_nginx(tmp_path, [front], http=http),
        httpx.Client(verify=context, timeout=DEADLINE) as client,
    ):
        for upstream, server_address in (
            ("tcp", [server.host, server.port]),
            ("unix", [str(path), None]),
        ):
            seen = client.get(f"https://127.0.0.1:{port}/{upstream}/page?x=1").json()
            # ProxyFix: the client and scheme nginx sent (X-Forwarded-For/-Proto), over
            # a plain connection from nginx.
            assert seen["client"] == ["127.0.0.1", 0], seen
            assert seen["scheme"] == "https"
            assert (seen["path"], seen["server"]) == ("/page", server_address)
            with ws_connect(
                f"wss://127.0.0.1:{port}/{upstream}/feed", ssl=context, open_timeout=DEADLINE
            ) as ws:
                seen = json.loads(ws.recv(timeout=DEADLINE))
                assert (seen["type"], seen["scheme"], seen["client"]) == (
                    "websocket",
                    "wss",
                    ["127.0.0.1", 0],
                )
                assert seen["server"] == server_address
                for text in ("one", "two" * 50_000):
                    ws.send(text)
                    assert ws.recv(timeout=DEADLINE) == text


def test_proxy_protocol_from_nginx(
    backend: tuple[Any, Path], loopback: Callable[[], socket.socket], tmp_path: Path
) -> None:
    if reason := skip_reason(stream=True):
        pytest.skip(reason)
    start, path = backend
    server = start(where_app, proxy_protocol=True)
    over_tcp, over_unix = loopback(), loopback()
    stream = f"""
    server {{ listen {address(over_tcp)}; proxy_pass {server.host}:{server.port};
              proxy_protocol on; }}
    server {{ listen {address(over_unix)}; proxy_pass unix:{path}; proxy_protocol on; }}
    """
    fronts = [over_tcp.getsockname(), over_unix.getsockname()]
    with running_nginx(tmp_path, [over_tcp, over_unix], stream=stream):
        for front in fronts:
            with socket.create_connection(front, timeout=DEADLINE) as sock:
                sock.sendall(b"GET /p HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
                answer = b""
                while chunk := sock.recv(65536):
                    answer += chunk
                seen = json.loads(answer.partition(b"\r\n\r\n")[2])
                # The client nginx saw, port included: this test's own socket.
                assert seen["client"] == list(sock.getsockname()), seen
            sock = socket.create_connection(front, timeout=DEADLINE)
            with ws_connect(f"ws://{front[0]}:{front[1]}/", sock=sock) as ws:
                assert json.loads(ws.recv(timeout=DEADLINE))["client"] == list(sock.getsockname())


@pytest.mark.slow
def test_rolling_restart_behind_nginx_loses_nothing(
    bound_socket: socket.socket, loopback: Callable[[], socket.socket], tmp_path: Path
) -> None:
    if reason := skip_reason():
        pytest.skip(reason)
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    write_app(app_dir)
    backend_port = bound_socket.getsockname()[1]
    front = loopback()
    front_port = front.getsockname()[1]
    http = f"""
    upstream app {{ server 127.0.0.1:{backend_port}; keepalive 16; }}
    server {{
        listen {address(front)};
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
    """
    args = ["-w", "2", "--graceful-timeout", "5", "-t", "10", "app:app"]
    with (
        running(args, cwd=app_dir, sock=bound_socket) as server,
        running_nginx(tmp_path, [front], http=http),
    ):
        old = server.wait_ready()
        assert server.notify is not None
        # Clients that never retry: nginx keeps their connections; a request lost between
        # nginx and a retiring worker would show as a 502.
        with LoadLoop(front_port, threads=4, retry=False) as load:
            wait_for(lambda: load.result.ok >= 50, 15, "load through nginx")
            server.signal(signal.SIGUSR1)
            server.notify.wait_for("RELOADING=1")
            server.notify.wait_for("READY=1")
            new = server.wait_workers(lambda pids: len(pids) == 2 and not pids & old)
            served = load.result.ok
            wait_for(lambda: load.result.ok >= served + 50, 15, "load after the restart")
            result = load.stop()
    assert not result.failures, result.failures[:5]
    assert result.pids & old, "the old workers served requests"
    assert result.pids & new, "the new workers served requests"
