"""Soak: 100k requests through one worker process; its memory and descriptors must level off.

The server is a real ``python -m hypercorn -w 0`` process (so /proc/<pid> is the worker's
alone). Client threads pipeline keep-alive requests on raw sockets and reconnect every
``PER_CONNECTION`` requests, so connection setup and teardown are soaked too. RSS and the
open-descriptor count are sampled after the warm-up (20k requests) and at the end.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from tests.support.procs import HypercornProcess, http_get, wait_for, write_app

TOTAL = 100_000
WARM_UP = 20_000
THREADS = 4
PIPELINE = 50
PER_CONNECTION = 1_000
TIME_BUDGET = 60.0
#: Allowed RSS growth between warm-up and the end: allocator noise, not a per-request leak
#: (a leak of even 64 bytes per request would be 5 MB here).
RSS_TOLERANCE_KB = 4096

BODY = b"soak-body-0123456789"
APP = textwrap.dedent(
    f'''
    BODY = {BODY!r}
    HEADERS = [(b"content-type", b"text/plain"), (b"content-length", b"{len(BODY)}")]


    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        await send({{"type": "http.response.start", "status": 200, "headers": HEADERS}})
        await send({{"type": "http.response.body", "body": BODY}})
    '''
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/<pid>"),
]


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as file:
        for line in file:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class Clients:
    """THREADS raw-socket clients sharing a request budget."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.done = 0
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._budget = TOTAL
        self._deadline = time.monotonic() + TIME_BUDGET
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(THREADS)]

    def _take(self) -> int:
        with self._lock:
            batch = min(PIPELINE, self._budget)
            self._budget -= batch
            return batch

    def _run(self) -> None:
        request = b"GET /soak HTTP/1.1\r\nHost: x\r\n\r\n"
        sock: socket.socket | None = None
        on_this_connection = 0
        try:
            while time.monotonic() < self._deadline:
                batch = self._take()
                if not batch:
                    return
                if sock is None or on_this_connection >= PER_CONNECTION:
                    if sock is not None:
                        sock.close()
                    sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
                    on_this_connection = 0
                sock.sendall(request * batch)
                seen = 0
                tail = b""
                while seen < batch:
                    chunk = sock.recv(262144)
                    if not chunk:
                        raise ConnectionError("server closed a keep-alive connection")
                    data = tail + chunk
                    seen += data.count(BODY)
                    tail = data[-(len(BODY) - 1) :]
                on_this_connection += batch
                with self._lock:
                    self.done += batch
        except Exception as exc:
            with self._lock:
                self.errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            if sock is not None:
                sock.close()


def test_soak_100k_requests_memory_and_fds_level_off(
    tmp_path: Path, bound_socket: socket.socket
) -> None:
    write_app(tmp_path, source=APP)
    port = bound_socket.getsockname()[1]
    proc = HypercornProcess(["-w", "0", "app:app"], cwd=tmp_path, sock=bound_socket, notify=False)
    try:

        def serves() -> bool:
            with contextlib.suppress(OSError):
                return http_get(port, "/", timeout=2.0)[0] == 200
            return False

        wait_for(serves, 20.0, "the server to answer")
        clients = Clients(port)
        start = time.monotonic()
        for thread in clients.threads:
            thread.start()
        wait_for(lambda: clients.done >= WARM_UP or clients.errors, TIME_BUDGET, "the warm-up")
        assert not clients.errors, clients.errors
        warm = (rss_kb(proc.pid), fd_count(proc.pid), clients.done)
        for thread in clients.threads:
            thread.join(max(start + TIME_BUDGET + 5 - time.monotonic(), 0.1))
        elapsed = time.monotonic() - start
        assert not clients.errors, clients.errors
        assert clients.done == TOTAL, f"only {clients.done} requests in {elapsed:.1f}s"
        end = (rss_kb(proc.pid), fd_count(proc.pid))
        # The clients closed their sockets: give the server a bounded moment to see the FINs.
        wait_for(lambda: fd_count(proc.pid) <= warm[1], 5.0, "descriptors to be released")
        settled_fds = fd_count(proc.pid)
        report = (
            f"{TOTAL} requests in {elapsed:.1f}s ({TOTAL / elapsed:.0f}/s); "
            f"RSS {warm[0]} kB at {warm[2]} -> {end[0]} kB at {TOTAL}; "
            f"fds {warm[1]} -> {end[1]} (settled {settled_fds})"
        )
        print(report)
        assert end[0] - warm[0] <= RSS_TOLERANCE_KB, report
        assert end[1] <= warm[1] + THREADS, report
        assert proc.proc.poll() is None, proc.stderr()
    finally:
        proc.close()
