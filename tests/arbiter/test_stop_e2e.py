"""Stopping and rolling, as the operator sees it: group signals, refused connections, and how
many workers a rolling restart holds. Real masters, real workers, real signals."""

from __future__ import annotations

import signal
import socket
import threading
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
        slow: list[threading.Thread] = []

        def linger() -> None:
            # A request that keeps an old worker draining for a while.
            for _ in range(4):
                thread = threading.Thread(
                    target=http_get, args=(server.port, "/slow?2.5"), daemon=True
                )
                thread.start()
                slow.append(thread)

        with WorkerCensus(server.pid) as census, LoadLoop(server.port, threads=4) as load:
            wait_for(lambda: census.samples, 5, "the first census")
            linger()
            if trigger == "SIGUSR1":
                server.signal(signal.SIGUSR1)
                server.notify.wait_for("RELOADING=1")
                server.notify.wait_for("READY=1", 30)
                server.wait_workers(lambda pids: len(pids) == 2 and not pids & first, 30)
            else:
                seen = first.copy()

                def recycled() -> bool:
                    seen.update(load.result.pids)
                    if len(seen) < 6:
                        linger()  # keep some requests lingering on the current workers
                        return False
                    return True

                wait_for(recycled, 40, "two recycles of each slot", interval=0.3)
            result = load.stop()
        for thread in slow:
            thread.join(10)
    assert result.failures == []
    assert census.most_alive <= 3, census.samples
    assert census.fewest_serving >= 2, census.samples
