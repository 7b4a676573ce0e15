"""Prometheus and statsd from a real master with real workers: totals across restarts."""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.test_statsd import UdpListener, total
from tests.support.procs import http_get, running, wait_for

pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.slow

FAST = ["--graceful-timeout", "2", "-t", "5"]


@pytest.fixture
def metrics_socket() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    yield sock
    sock.close()


def fetch(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(request)
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``/metrics`` as {(sample name, sorted labels): value}."""
    response = fetch(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), head
    assert b"text/plain; version=0.0.4" in head
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def requests_total(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> float:
    return sum(v for (name, _), v in samples.items() if name == "hypercorn_requests_total")


def restarts(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], cause: str) -> float:
    return samples.get(("hypercorn_worker_restarts_total", (("cause", cause),)), 0.0)


def test_totals_survive_worker_restarts(
    app_dir: Path,
    bound_socket: socket.socket,
    metrics_socket: socket.socket,
    worker_args: list[str],
) -> None:
    statsd = UdpListener()
    port = metrics_socket.getsockname()[1]
    args = [
        *[*worker_args, "-w", "2", *FAST, "--metrics-bind", f"fd://{metrics_socket.fileno()}"],
        *["--statsd-host", statsd.address, "app:app"],
    ]
    try:
        with running(
            args, cwd=app_dir, sock=bound_socket, pass_fds=(metrics_socket.fileno(),)
        ) as server:
            metrics_socket.close()  # (the master holds it now)
            old = server.wait_ready()
            before = wait_for(
                lambda: (s := scrape(port))[("hypercorn_workers", ())] == 2 and s,
                20,
                "two workers in /metrics",
            )
            assert requests_total(before) == 0
            assert before[("hypercorn_connections_open", ())] == 0
            assert before[("hypercorn_request_duration_seconds_count", ())] == 0
            slots = {labels for name, labels in before if "heartbeat_age" in name}
            assert slots == {(("slot", "0"),), (("slot", "1"),)}
            assert all(0 <= v < 5 for (name, _), v in before.items() if "heartbeat_age" in name)

            served = {int(http_get(server.port)[1].split()[0]) for _ in range(20)}
            assert served <= old
            after = wait_for(
                lambda: (s := scrape(port)) and requests_total(s) == 20 and s,
                20,
                "20 requests in /metrics",
            )
            key = ("hypercorn_requests_total", (("method", "GET"), ("status", "2xx")))
            assert after[key] == 20
            assert after[("hypercorn_request_duration_seconds_count", ())] == 20
            assert after[("hypercorn_request_duration_seconds_bucket", (("le", "+Inf"),))] == 20

            # A crash: what the dead worker counted stays in the totals.
            victim = min(old)
            os.kill(victim, signal.SIGKILL)
            server.wait_workers(lambda pids: len(pids) == 2 and victim not in pids)
            crashed = wait_for(
                lambda: (s := scrape(port)) and restarts(s, "crash") == 1 and s,
                20,
                "the crash in /metrics",
            )
            assert requests_total(crashed) == 20

            # A rolling restart (USR1) replaces both, each reporting on its way out.
            current = server.workers()
            server.signal(signal.SIGUSR1)
            server.wait_workers(lambda pids: len(pids) == 2 and not pids & current)
            rolled = wait_for(
                lambda: (s := scrape(port)) and restarts(s, "reload") == 2 and s,
                20,
                "the rolling restart in /metrics",
            )
            assert requests_total(rolled) == 20
            assert restarts(rolled, "crash") == 1

            for _ in range(10):
                assert http_get(server.port)[0] == 200
            wait_for(lambda: requests_total(scrape(port)) == 30, 20, "30 requests in /metrics")

            # The endpoint answers only /metrics, and HEAD without a body.
            assert fetch(port, b"GET / HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 404 ")
            head = fetch(port, b"HEAD /metrics HTTP/1.1\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 ")
            assert head.endswith(b"\r\n\r\n")
            # Prometheus itself asks for OpenMetrics (prometheus_client's encoder answers).
            accept = b"Accept: application/openmetrics-text; version=1.0.0\r\n"
            scraped = fetch(port, b"GET /metrics HTTP/1.1\r\n" + accept + b"\r\n")
            assert b"Content-Type: application/openmetrics-text" in scraped
            assert scraped.endswith(b"# EOF\n")

            # statsd: the workers' counters and the master's restarts, by cause.
            lines = statsd.receive_until(
                lambda got: (
                    total(got, "hypercorn.requests") == 30
                    and total(got, "hypercorn.worker.restart.reload") == 2
                )
            )
            assert total(lines, "hypercorn.request.status_class.2xx") == 30
            assert total(lines, "hypercorn.worker.restart.crash") == 1
            assert any(line.startswith("hypercorn.workers:2|g") for line in lines)
    finally:
        statsd.close()
