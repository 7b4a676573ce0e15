"""HTTP/3 under the arbiter: ``-w 2 --quic-bind``, every request on a fresh QUIC connection.

Each worker slot reads its own SO_REUSEPORT UDP socket (``sockets.quic_slot_clone``), so a
connection's datagrams keep reaching the worker that holds it; a rolling restart's old
worker says GOAWAY and closes its connections, and a client retries on a new connection
what the server did not serve (``tests/support/h3client.py``).
"""

from __future__ import annotations

import asyncio
import signal
import socket
import threading
from pathlib import Path

import pytest

from tests.support.procs import running

pytest.importorskip("aioquic")
trustme = pytest.importorskip("trustme")

from tests.support.h3client import Response, fetch_retrying  # noqa: E402

FAST = ["--graceful-timeout", "5", "-t", "10"]
REQUESTS = 200


def udp_socket() -> socket.socket:
    """A bound UDP socket for ``--quic-bind fd://N`` (SO_REUSEPORT: the slots clone it)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


async def fresh_connections(
    port: int,
    cafile: str,
    count: int,
    concurrency: int = 8,
    until: threading.Event | None = None,
    most: int = 2000,
) -> list[tuple[Response, int]]:
    """GETs, each on a new QUIC connection, ``concurrency`` at a time: ``count`` of them, or
    with ``until`` at least ``count`` and on until it is set (at most ``most``)."""
    results: list[tuple[Response, int]] = []
    started = 0

    def more() -> bool:
        if started >= most:
            return False
        if started < count:
            return True
        return until is not None and not until.is_set()

    async def worker() -> None:
        nonlocal started
        while more():
            started += 1
            results.append(await fetch_retrying(port, cafile, {"path": "/"}, timeout=15.0))

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return results


@pytest.mark.slow
def test_two_workers_serve_http3_across_a_rolling_restart(
    app_dir: Path, bound_socket: socket.socket, worker_args: list[str]
) -> None:
    ca = trustme.CA()
    issued = ca.issue_cert("localhost", "127.0.0.1")
    issued.cert_chain_pems[0].write_to_path(app_dir / "cert.pem")
    issued.private_key_pem.write_to_path(app_dir / "key.pem")
    ca.cert_pem.write_to_path(app_dir / "ca.pem")
    cafile = str(app_dir / "ca.pem")
    udp = udp_socket()
    port = udp.getsockname()[1]
    args = [
        *worker_args,
        "-w",
        "2",
        *FAST,
        "--certfile",
        "cert.pem",
        "--keyfile",
        "key.pem",
        "--quic-bind",
        f"fd://{udp.fileno()}",
        "app:app",
    ]
    with running(args, cwd=app_dir, sock=bound_socket, pass_fds=(udp.fileno(),)) as server:
        udp.close()  # (the master holds it now)
        first = server.wait_ready()
        results = asyncio.run(fresh_connections(port, cafile, REQUESTS))
        assert [r.status for r, _ in results] == [200] * REQUESTS
        served_by = {int(r.body.split()[0]) for r, _ in results}
        assert served_by == first, "both workers serve HTTP/3, each on its own socket"

        # Again, while a USR1 replaces both workers: a load that runs until the roll is done.
        rolled: list[tuple[Response, int]] = []
        errors: list[BaseException] = []
        done = threading.Event()

        def load() -> None:
            try:
                rolled.extend(asyncio.run(fresh_connections(port, cafile, REQUESTS, 4, done)))
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=load, name="h3-load")
        thread.start()
        assert server.notify is not None
        server.signal(signal.SIGUSR1)
        server.notify.wait_for("RELOADING=1")
        server.notify.wait_for("READY=1", timeout=30)
        second = server.wait_workers(lambda pids: len(pids) == 2 and not pids & first)
        done.set()
        thread.join(60)
        assert not thread.is_alive()
        assert errors == []
        assert len(rolled) >= REQUESTS
        assert all(r.status == 200 for r, _ in rolled)
        pids = {int(r.body.split()[0]) for r, _ in rolled}
        assert pids & first, "the old workers served during the roll"
        assert pids & second, "the new workers served during the roll"
        after = asyncio.run(fresh_connections(port, cafile, 20))
        assert {int(r.body.split()[0]) for r, _ in after} <= second
        retried = sum(attempts > 1 for _, attempts in rolled)
        print(f"{len(rolled)} requests across the roll, {retried} sent again")
