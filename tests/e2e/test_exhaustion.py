"""Resource exhaustion: thousands of idle connections, EMFILE in the accept loop, and the
per-worker connection limit. Real sockets on 127.0.0.1; the EMFILE case runs the server in
its own process with a lowered RLIMIT_NOFILE so the test process keeps its descriptors."""

from __future__ import annotations

import contextlib
import os
import resource
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import RunningServer
from tests.support.procs import HypercornProcess, http_get, wait_for, write_app

Scope = dict[str, Any]
RunServer = Callable[..., RunningServer]
IDLE_CONNECTIONS = 2000

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="uses /proc and prlimit")


async def hello(scope: Scope, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"hello"})


def request(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """One keep-alive GET on ``sock``; returns the raw response (Content-Length framed)."""
    sock.settimeout(timeout)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    out = bytearray()
    length = None
    while length is None or len(out) < length:
        chunk = sock.recv(65536)
        assert chunk, f"closed mid-response: {bytes(out)!r}"
        out += chunk
        head_end = out.find(b"\r\n\r\n")
        if length is None and head_end != -1:
            head = bytes(out[:head_end]).lower()
            value = head.split(b"content-length:")[1].split(b"\r\n")[0]
            length = head_end + 4 + int(value)
    return bytes(out)


@pytest.fixture
def enough_descriptors() -> Iterator[None]:
    """Room for the idle clients and the server's ends of them in this one process."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = IDLE_CONNECTIONS * 2 + 512
    if soft < wanted:
        if hard != resource.RLIM_INFINITY and hard < wanted:
            pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {wanted}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.usefixtures("enough_descriptors")
def test_thousands_of_idle_connections_do_not_block_a_new_request(
    run_server: RunServer, bound_socket: socket.socket
) -> None:
    bound_socket.listen(4096)  # the connect burst must not overflow the kernel queue
    server = run_server(hello, header_read_timeout=60.0)
    idle: list[socket.socket] = []
    try:
        start = time.monotonic()
        for _ in range(IDLE_CONNECTIONS):
            idle.append(server.connect())
        opened = time.monotonic() - start
        before = time.monotonic()
        with server.connect() as fresh:
            answer = request(fresh)
        latency = time.monotonic() - before
        assert answer.startswith(b"HTTP/1.1 200 ")
        assert latency < 2.0, f"a new request waited {latency:.3f}s behind idle connections"
        # The idle ones were really accepted and held: the first and the last still work.
        assert request(idle[0]).startswith(b"HTTP/1.1 200 ")
        assert request(idle[-1]).startswith(b"HTTP/1.1 200 ")
        assert opened < 30
    finally:
        for sock in idle:
            sock.close()


def test_max_connections_holds_and_frees_slots(run_server: RunServer) -> None:
    limit = 5
    server = run_server(hello, max_connections=limit, keep_alive_timeout=30.0)
    held = [server.connect() for _ in range(limit)]
    waiting = server.connect()
    try:
        for sock in held:
            assert request(sock).startswith(b"HTTP/1.1 200 ")
        waiting.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        waiting.settimeout(0.5)
        with pytest.raises(TimeoutError):
            data = waiting.recv(65536)
            pytest.fail(f"connection {limit + 1} was served over the limit: {data!r}")
        for sock in held:  # the held ones are still served
            assert request(sock).startswith(b"HTTP/1.1 200 ")
        held.pop().close()
        waiting.settimeout(5.0)
        data = bytearray()
        while not data.endswith(b"hello"):
            chunk = waiting.recv(65536)
            assert chunk, "the waiting connection was dropped instead of served"
            data += chunk
        assert data.startswith(b"HTTP/1.1 200 ")
    finally:
        for sock in held:
            sock.close()
        waiting.close()


# -- EMFILE in the accept loop -----------------------------------------------------------------


def _fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _exhaustion_lines(path: Path) -> list[str]:
    if not path.exists():
        return []
    text = path.read_text(errors="replace")
    return [line for line in text.splitlines() if "accept" in line.lower()]


@pytest.mark.parametrize("worker_class", ["asyncio", "uvloop", "trio"])
def test_emfile_is_logged_once_and_the_server_recovers(
    tmp_path: Path, bound_socket: socket.socket, worker_class: str
) -> None:
    write_app(tmp_path)
    errorlog = tmp_path / "error.log"
    port = bound_socket.getsockname()[1]
    bound_socket.listen(512)
    proc = HypercornProcess(
        [
            "-w",
            "0",
            "-k",
            worker_class,
            "--header-read-timeout",
            "60",
            "--error-logfile",
            str(errorlog),
            "--log-level",
            "INFO",
            "app:app",
        ],
        cwd=tmp_path,
        sock=bound_socket,
        notify=False,
    )
    clients: list[socket.socket] = []
    try:

        def serves() -> bool:
            with contextlib.suppress(OSError):
                return http_get(port, "/", timeout=2.0)[0] == 200
            return False

        wait_for(serves, 20.0, "the server to answer")
        headroom = 16
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.prlimit(proc.pid, resource.RLIMIT_NOFILE, (_fd_count(proc.pid) + headroom, hard))

        for _ in range(headroom * 4):
            clients.append(socket.create_connection(("127.0.0.1", port), timeout=5.0))
        first = wait_for(lambda: _exhaustion_lines(errorlog), 10.0, "an EMFILE log line")
        assert len(first) == 1
        # The already-accepted connections are still served while accept() fails.
        assert request(clients[0]).startswith(b"HTTP/1.1 200 ")
        window_end = time.monotonic() + 1.5
        while time.monotonic() < window_end:  # watching for a flood, not synchronising
            assert len(_exhaustion_lines(errorlog)) <= 2, _exhaustion_lines(errorlog)
            time.sleep(0.05)
        assert proc.proc.poll() is None, f"server died:\n{proc.stderr()}"

        for sock in clients:
            sock.close()
        clients.clear()
        start = time.monotonic()
        wait_for(serves, 5.0, "the server to serve again after EMFILE")
        recovered = time.monotonic() - start
        assert recovered < 5.0
        assert len(_exhaustion_lines(errorlog)) <= 2 + int(time.monotonic() - start), (
            _exhaustion_lines(errorlog)
        )
        assert "Traceback" not in errorlog.read_text(errors="replace")
    finally:
        for sock in clients:
            sock.close()
        proc.close()
