"""Rolling restarts under HTTP/2 load: zero failed requests, and every stream that was in
flight when a GOAWAY came completes (RFC 9113 section 6.8; see tests/support/h2graceful.py
for why the client is built here)."""

from __future__ import annotations

import signal
import socket
import ssl
from pathlib import Path

import pytest

from tests.support.h2graceful import GracefulLoad
from tests.support.procs import running, wait_for

trustme = pytest.importorskip("trustme")

FAST = ["--graceful-timeout", "5", "-t", "10"]


@pytest.mark.slow
def test_usr1_restarts_fail_no_http2_stream(
    app_dir: Path, bound_socket: socket.socket, worker_args: list[str]
) -> None:
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1")
    issued.cert_chain_pems[0].write_to_path(app_dir / "cert.pem")
    issued.private_key_pem.write_to_path(app_dir / "key.pem")
    context = ssl.create_default_context()
    ca.configure_trust(context)
    context.set_alpn_protocols(["h2"])
    args = [
        *worker_args,
        "-w",
        "2",
        *FAST,
        "--certfile",
        "cert.pem",
        "--keyfile",
        "key.pem",
        "app:app",
    ]
    with running(args, cwd=app_dir, sock=bound_socket) as server:
        generations = [server.wait_ready()]
        assert server.notify is not None
        load = GracefulLoad("127.0.0.1", server.port, context, clients=3, path="/slow?0.02")
        with load:
            wait_for(lambda: load.result.ok >= 50, 20, "load before the restarts")
            for _ in range(3):
                server.signal(signal.SIGUSR1)
                server.notify.wait_for("RELOADING=1")
                server.notify.wait_for("READY=1", timeout=30)
                old = generations[-1]
                generations.append(
                    server.wait_workers(lambda pids, old=old: len(pids) == 2 and not pids & old)
                )
                served = load.result.ok
                wait_for(lambda served=served: load.result.ok >= served + 50, 20, "load after")
            result = load.stop()
        assert result.failures == []
        assert result.goaways >= 3, "the old workers said GOAWAY to the clients"
        assert result.finished_after_goaway > 0, "streams in flight at GOAWAY completed"
        pids = {int(body.split()[0]) for body in result.bodies}
        assert all(pids & generation for generation in generations)
