"""An operator's fault drill: real masters and workers, real signals, loopback only.

Each test reproduces one outage, leak or loss of work that the arbiter used to cause.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

import pytest

from tests.support.procs import cpu_seconds, running

pytestmark = pytest.mark.slow

FAST = ["--graceful-timeout", "2", "-t", "5"]


def test_master_stays_idle_after_a_worker_dies_while_its_replacement_boots(
    app_dir: Path, bound_socket: socket.socket
) -> None:
    """USR1, then the old worker of the slot being replaced dies (OOM kill, heartbeat) before
    its replacement is ready: the roll completes and the master goes back to sleep."""
    with running(["-w", "1", *FAST, "app:app"], cwd=app_dir, sock=bound_socket) as server:
        assert server.notify is not None
        (old,) = server.wait_ready()
        (app_dir / "boot_delay").write_text("1.0")
        server.signal(signal.SIGUSR1)
        server.notify.wait_for("RELOADING=1")
        server.wait_workers(lambda pids: len(pids) == 2)  # the replacement is booting
        os.kill(old, signal.SIGKILL)
        server.notify.wait_for("READY=1")  # the roll completed
        (new,) = server.wait_workers(lambda pids: len(pids) == 1 and old not in pids)
        before = cpu_seconds(server.pid)
        time.sleep(3.0)  # a measurement window, not synchronisation
        used = cpu_seconds(server.pid) - before
        assert used < 0.3, f"the master used {used:.2f}s of CPU in 3s while idle"
        assert server.workers() == {new}
