"""Stopping and rolling, as the operator sees it: group signals, refused connections, and how
many workers a rolling restart holds. Real masters, real workers, real signals."""

from __future__ import annotations

import signal
import socket
import threading
import time
from pathlib import Path

import pytest

from tests.support.procs import (
    LoadLoop,
    WorkerCensus,
    http_get,
    running,
    wait_for,
)

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("trigger", ["SIGUSR1", "max_requests"])
def test_rolling_restart_holds_at_most_one_extra_worker(
    app_dir: Path, bound_socket: socket.socket, trigger: str
) -> None:
    """-w 2: never more than 3 workers alive, never fewer than 2 serving, no failed request,
    while old workers take their time to drain."""
    pytest.importorskip("setproctitle")
    args = ["-w", "2", "--graceful-timeout", "5", "-t", "5"]
    if trigger == "max_requests":
        args += ["--max-requests", "60"]
    with running([*args, "app:app"], cwd=app_dir, sock=bound_socket) as server:
        assert server.notify is not None
        first = server.wait_ready()
        lingering: list[object] = []
        threads: list[threading.Thread] = []

        def linger() -> None:
            # Requests that keep the current workers busy, so old ones drain for a while.
            threads.extend(_slow_request(server.port, 2.5, lingering) for _ in range(4))

        with WorkerCensus(server.pid) as census, LoadLoop(server.port, threads=4) as load:
            wait_for(lambda: census.samples, 5, "the first census")
            linger()
            if trigger == "SIGUSR1":
                server.signal(signal.SIGUSR1)
                server.notify.wait_for("RELOADING=1")
                server.notify.wait_for("READY=1", 30)
                server.wait_workers(lambda pids: len(pids) == 2 and not pids & first, 30)
            else:
                replaced = 0

                def recycled() -> bool:
                    nonlocal replaced
                    count = server.stderr().count("ready; stopping worker")
                    if count > replaced:
                        replaced = count
                        linger()
                    return count >= 3

                wait_for(recycled, 40, "three recycles", interval=0.05)
            result = load.stop()
        for thread in threads:
            thread.join(10)
    err = server.stderr()
    assert result.failures == [], err
    assert all(isinstance(r, tuple) and r[0] == 200 for r in lingering), lingering
    most = census.explain(lambda sample: sample[0])
    assert census.most_alive <= 3, f"{most}\nmaster's stderr:\n{err}"
    fewest = census.explain(lambda sample: -sample[1])
    assert census.fewest_serving >= 2, f"{fewest}\nmaster's stderr:\n{err}"


def _started_slow_requests(app_dir: Path) -> int:
    try:
        return len((app_dir / "slow_started").read_text().split())
    except FileNotFoundError:
        return 0


def _slow_request(port: int, seconds: float, into: list[object]) -> threading.Thread:
    def run() -> None:
        try:
            into.append(http_get(port, f"/slow?{seconds}"))
        except Exception as exc:  # cut by a kill: whatever the client says
            into.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_group_signal_is_one_graceful_stop(
    app_dir: Path, bound_socket: socket.socket, sig: signal.Signals
) -> None:
    """Ctrl-C in a terminal (or systemd's default KillMode) signals the master and every
    worker at once: no replacement worker, no warning, the request in flight completes."""
    args = ["-w", "2", "--graceful-timeout", "10", "app:app"]
    with running(args, cwd=app_dir, sock=bound_socket, new_session=True) as server:
        first = server.wait_ready()
        result: list[object] = []
        with WorkerCensus(server.pid, interval=0.002) as census:
            thread = _slow_request(server.port, 1.5, result)
            wait_for(lambda: _started_slow_requests(app_dir), 5, "the slow request in flight")
            server.signal_group(sig)
            assert server.wait_exit(15) == 0
        thread.join(5)
        err = server.stderr()
    assert census.pids == first, err
    assert len(result) == 1
    assert result[0][0] == 200, result  # type: ignore[index]
    assert "WARNING" not in err, err
    assert "replacement" not in err, err


def test_second_group_sigint_stops_at_once(app_dir: Path, bound_socket: socket.socket) -> None:
    args = ["-w", "2", "--graceful-timeout", "20", "app:app"]
    with running(args, cwd=app_dir, sock=bound_socket, new_session=True) as server:
        first = server.wait_ready()
        result: list[object] = []
        with WorkerCensus(server.pid, interval=0.002) as census:
            _slow_request(server.port, 30, result)
            wait_for(lambda: _started_slow_requests(app_dir), 5, "the slow request in flight")
            started = time.monotonic()
            server.signal_group(signal.SIGINT)
            assert server.notify is not None
            server.notify.wait_for("STOPPING=1")
            server.signal_group(signal.SIGINT)
            assert server.wait_exit(10) == 0
        assert time.monotonic() - started < 5.0
    assert census.pids == first


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
    except ConnectionRefusedError:
        return True
    except OSError:
        return False
    return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stopping_server_refuses_new_connections_at_once(
    app_dir: Path, bound_socket: socket.socket, sig: signal.Signals
) -> None:
    """From the stop on, connections are refused (a load balancer sees it at once), and the
    request in flight still completes within graceful_timeout."""
    args = ["-w", "2", "--graceful-timeout", "10", "app:app"]
    with running(args, cwd=app_dir, sock=bound_socket) as server:
        server.wait_ready()
        result: list[object] = []
        thread = _slow_request(server.port, 2.0, result)
        wait_for(lambda: _started_slow_requests(app_dir), 5, "the slow request in flight")
        server.signal(sig)
        wait_for(lambda: _refused(server.port), 0.5, "connections to be refused", 0.01)
        thread.join(10)
        assert server.wait_exit(10) == 0
    assert len(result) == 1
    assert result[0][0] == 200, result  # type: ignore[index]
