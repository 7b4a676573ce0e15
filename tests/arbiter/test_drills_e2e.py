"""An operator's fault drill: real masters and workers, real signals, loopback only.

Each test reproduces one outage, leak or loss of work that the arbiter used to cause.
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.procs import (
    HypercornProcess,
    LoadLoop,
    children_of,
    cpu_seconds,
    http_get,
    pid_alive,
    running,
    wait_for,
)

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


@pytest.fixture
def unix_path() -> Iterator[str]:
    """A short unix socket path (sun_path holds 108 bytes; pytest's tmp paths are long)."""
    directory = tempfile.mkdtemp(prefix="hc-", dir="/tmp")
    try:
        yield os.path.join(directory, "app.sock")
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _new_master(server: HypercornProcess) -> int:
    found = re.search(r"new master (\d+) started", server.stderr())
    return int(found.group(1)) if found else 0


def test_failed_upgrade_keeps_the_unix_socket(app_dir: Path, unix_path: str) -> None:
    """-b unix:PATH, the app breaks, USR2: the old master keeps serving on PATH."""
    with running(["-w", "1", *FAST, "-b", f"unix:{unix_path}", "app:app"], cwd=app_dir) as server:
        server.wait_ready()
        assert http_get(unix_path)[0] == 200
        (app_dir / "broken").write_text("")
        server.signal(signal.SIGUSR2)
        wait_for(lambda: "upgrade failed" in server.stderr(), 20, "the upgrade to fail")
        assert os.path.exists(unix_path), server.stderr()
        assert http_get(unix_path)[0] == 200
        server.signal(signal.SIGTERM)
        assert server.wait_exit(10) == 0
    assert not os.path.exists(unix_path)  # its owner removes it on the way out


def test_stopping_the_old_master_during_an_upgrade_keeps_the_unix_socket(
    app_dir: Path, unix_path: str
) -> None:
    """USR2, then TERM to the old master while the new one boots: the new one serves PATH."""
    args = ["-w", "1", *FAST, "-b", f"unix:{unix_path}", "app:app"]
    with running(args, cwd=app_dir) as server:
        assert server.notify is not None
        server.wait_ready()
        (app_dir / "boot_delay").write_text("1.0")
        server.signal(signal.SIGUSR2)
        new_master = wait_for(lambda: _new_master(server), 10, "the new master")
        server.adopt(new_master)
        server.signal(signal.SIGTERM)
        assert server.wait_exit(10) == 0
        server.notify.wait_for("READY=1", 20)  # the new master's workers booted
        assert os.path.exists(unix_path), server.stderr()
        status, body = http_get(unix_path)
        assert status == 200
        assert int(body.split()[0]) in children_of(new_master)
        os.kill(new_master, signal.SIGTERM)
        wait_for(lambda: not pid_alive(new_master), 10, "the new master to stop")
    assert not os.path.exists(unix_path)  # the new master owned it at the end


# ------------------------------------------------------------------------------ --reuse-port


def _every_fresh_connection_answered(server: HypercornProcess, port: int, count: int = 60) -> None:
    """``count`` fresh connections, one after another, each answered within a second."""
    slow = []
    for index in range(count):
        try:
            status, _ = http_get(port, timeout=1.0)
        except OSError as exc:
            slow.append(f"#{index}: {exc!r}")
        else:
            assert status == 200
    # (Which connection failed, how, and what the master logged around it: a reset and a
    # timeout have different causes.)
    assert slow == [], (
        f"{len(slow)} of {count} connections waited for a dead slot: {slow}\n"
        f"workers now: {server.workers()}; stderr:\n{server.stderr()}"
    )


def _reuse_port_server(app_dir: Path, bound_socket: socket.socket, *extra: str) -> list[str]:
    port = bound_socket.getsockname()[1]
    bound_socket.close()  # the server binds the port itself, with SO_REUSEPORT
    return ["--reuse-port", "-b", f"127.0.0.1:{port}", *FAST, *extra, "app:app"]


def test_reuse_port_ttou_leaves_no_listener_without_a_worker(
    app_dir: Path, bound_socket: socket.socket
) -> None:
    port = bound_socket.getsockname()[1]
    args = _reuse_port_server(app_dir, bound_socket, "-w", "3")
    with running(args, cwd=app_dir) as server:
        server.wait_ready()
        _every_fresh_connection_answered(server, port, 10)
        server.signal(signal.SIGTTOU)  # the oldest worker goes: slot 0, the master's own socket
        server.wait_workers(lambda pids: len(pids) == 2)
        _every_fresh_connection_answered(server, port)


def test_reuse_port_hup_with_fewer_workers_leaves_no_listener_without_a_worker(
    app_dir: Path, bound_socket: socket.socket
) -> None:
    port = bound_socket.getsockname()[1]
    conf = app_dir / "hypercorn.toml"
    conf.write_text("workers = 3\n")
    args = _reuse_port_server(app_dir, bound_socket, "-c", str(conf))
    with running(args, cwd=app_dir) as server:
        assert server.notify is not None
        first = server.wait_ready()
        conf.write_text("workers = 2\n")
        server.signal(signal.SIGHUP)
        server.notify.wait_for("READY=1", 30)
        server.wait_workers(lambda pids: len(pids) == 2 and not pids & first, 30)
        _every_fresh_connection_answered(server, port)


def test_reuse_port_slot_in_crash_backoff_holds_no_connections(
    app_dir: Path, bound_socket: socket.socket
) -> None:
    port = bound_socket.getsockname()[1]
    args = _reuse_port_server(app_dir, bound_socket, "-w", "3")
    with running(args, cwd=app_dir) as server:
        workers = server.wait_ready()
        (app_dir / "lifespan_fail").write_text("")  # replacements cannot start
        os.kill(min(workers), signal.SIGKILL)
        wait_for(lambda: server.stderr().count("retrying in") >= 2, 15, "the slot to back off")
        _every_fresh_connection_answered(server, port)


# ------------------------------------------------------------------------------ lifespan


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1])
def test_a_slow_lifespan_shutdown_completes_with_default_timeouts(
    app_dir: Path, bound_socket: socket.socket, sig: signal.Signals
) -> None:
    """A shutdown hook that takes 6 s (flushing a queue, closing a pool) is not SIGKILLed at
    graceful_timeout (3 s) + 1 s: shutdown_timeout (60 s) covers it."""
    (app_dir / "shutdown_delay").write_text("6")
    with running(["-w", "1", "app:app"], cwd=app_dir, sock=bound_socket) as server:
        assert server.notify is not None
        (old,) = server.wait_ready()
        server.signal(sig)
        if sig == signal.SIGTERM:
            assert server.wait_exit(20) == 0
        else:
            server.notify.wait_for("READY=1", 20)
            wait_for(lambda: not pid_alive(old), 20, "the old worker to exit")
        done = (
            (app_dir / "shutdown_done").read_text().split()
            if (app_dir / "shutdown_done").exists()
            else []
        )
        assert done == [str(old)], server.stderr()
        assert "did not stop in time" not in server.stderr()


# ------------------------------------------------------------------------------ log rotation


def test_usr1_reopens_the_log_files_in_every_process(
    app_dir: Path, bound_socket: socket.socket
) -> None:
    """logrotate's routine: mv the logs away, kill -USR1. Every process (master, the old
    workers still serving, the new ones) writes to the new files from then on."""
    access, error = app_dir / "access.log", app_dir / "error.log"
    args = [
        "-w", "2", *FAST,
        "--access-logfile", str(access), "--error-logfile", str(error),
        "--access-logformat", "%(p)s %(U)s",
        "app:app",
    ]  # fmt: skip
    with running(args, cwd=app_dir, sock=bound_socket) as server:
        assert server.notify is not None
        old = server.wait_ready()
        assert http_get(server.port, "/before")[0] == 200
        wait_for(lambda: "/before" in access.read_text(), 5, "the first access line")
        access.rename(app_dir / "access.log.1")
        error.rename(app_dir / "error.log.1")
        (app_dir / "boot_delay").write_text("1.5")  # the old workers serve on for a while
        server.signal(signal.SIGUSR1)
        counter = iter(range(10_000))

        def old_worker_logs_to_the_new_file() -> tuple[int, int] | None:
            index = next(counter)
            path = f"/during-{index}"
            pid = int(http_get(server.port, path)[1].split()[0])
            if pid not in old:
                return None
            found = access.exists() and f"<{pid}> {path}" in access.read_text()
            return (pid, index) if found else None

        reopened_pid, reopened_at = wait_for(
            old_worker_logs_to_the_new_file, 1.5, "an old worker's line in access.log"
        )
        server.notify.wait_for("READY=1", 20)
        new = server.wait_workers(lambda pids: len(pids) == 2 and not pids & old, 20)
        (pid,) = {int(http_get(server.port, "/after")[1].split()[0])}
        assert pid in new
        wait_for(lambda: f"<{pid}> /after" in access.read_text(), 5, "a new worker's line")
        assert "rolling restart complete" in error.read_text()  # the master's own line
    rotated = (app_dir / "access.log.1").read_text() + (app_dir / "error.log.1").read_text()
    # (A line written before a worker handled its USR1 may still reach the old file.)
    pattern = rf"<{reopened_pid}> /during-(\d+)"
    assert [n for n in re.findall(pattern, rotated) if int(n) > reopened_at] == []
    assert "/after" not in rotated
    assert "rolling restart" not in rotated


def test_usr1_reopens_the_log_files_without_an_arbiter(
    app_dir: Path, bound_socket: socket.socket
) -> None:
    access = app_dir / "access.log"
    args = ["-w", "0", "--access-logfile", str(access), "--access-logformat", "%(U)s", "app:app"]
    with running(args, cwd=app_dir, sock=bound_socket, notify=False) as server:
        wait_for(lambda: _answers(server.port), 10, "the server to answer")
        access.rename(app_dir / "access.log.1")
        server.signal(signal.SIGUSR1)
        wait_for(lambda: access.exists(), 5, "the new access.log")
        assert http_get(server.port, "/after")[0] == 200
        wait_for(lambda: "/after" in access.read_text(), 5, "the line in the new file")
        assert pid_alive(server.pid)  # USR1 did not end it


def _answers(port: int) -> bool:
    try:
        return http_get(port, timeout=1)[0] == 200
    except OSError:
        return False


# ------------------------------------------------------------------------------ core dumps


@pytest.fixture
def core_dumps_enabled() -> Iterator[None]:
    """``ulimit -c unlimited`` for the server started by the test (children inherit it)."""
    before = resource.getrlimit(resource.RLIMIT_CORE)
    try:
        resource.setrlimit(resource.RLIMIT_CORE, (before[1], before[1]))
    except (ValueError, OSError) as exc:
        pytest.skip(f"cannot raise the core file size limit: {exc}")
    if resource.getrlimit(resource.RLIMIT_CORE)[0] == 0:
        pytest.skip("the hard core file size limit is 0")
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_CORE, before)


def _core_files(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if p.name == "core" or p.name.startswith("core.")]


def test_hung_worker_dumps_its_stack_but_no_core(
    app_dir: Path, bound_socket: socket.socket, core_dumps_enabled: None
) -> None:
    with open("/proc/sys/kernel/core_pattern") as file:
        pattern = file.read().strip()
    args = ["-w", "1", "-t", "1", "--graceful-timeout", "1", "app:app"]
    with running(args, cwd=app_dir, sock=bound_socket) as server:
        (hung,) = server.wait_ready()
        client = socket.create_connection(("127.0.0.1", server.port))
        client.sendall(b"GET /block?30 HTTP/1.1\r\nhost: x\r\n\r\n")
        server.wait_workers(lambda pids: len(pids) == 1 and hung not in pids, 15)
        err = wait_for(
            lambda: f"worker {hung} " in server.stderr().split("timed out")[-1] and server.stderr(),
            5,
            "the hung worker's exit line",
        )
        client.close()
    assert 'app.py", line' in err  # the stack was dumped
    exit_line = next(
        line for line in err.split("timed out")[-1].splitlines() if f"worker {hung} " in line
    )
    assert "signal 6" not in exit_line, exit_line  # SIGABRT's default action dumps core
    assert "core dumped" not in exit_line, exit_line
    if not pattern.startswith("|"):
        assert _core_files(app_dir) == []


def test_lifespan_failure_after_readiness_is_retried_not_fatal(
    app_dir: Path, bound_socket: socket.socket
) -> None:
    """Exit status 3 means "fix the configuration" at first boot only: once the server has
    served, a replacement that cannot start (the database is down) is retried with back-off
    and reported, and the server recovers when the database does."""
    with running(["-w", "2", *FAST, "app:app"], cwd=app_dir, sock=bound_socket) as server:
        assert server.notify is not None
        first = server.wait_ready()
        (app_dir / "lifespan_fail").write_text("")
        for victim in first:  # the worst case: no worker left serving
            os.kill(victim, signal.SIGKILL)
        wait_for(lambda: server.stderr().count("db is down") >= 4, 20, "retries")
        assert server.proc.poll() is None, server.stderr()  # the master keeps running
        assert _status_says(server, "db is down")  # systemctl status shows why
        (app_dir / "lifespan_fail").unlink()  # the database is back
        wait_for(lambda: _answers(server.port), 40, "the server to serve again")
        assert server.proc.poll() is None


def _status_says(server: HypercornProcess, text: str) -> bool:
    """Whether an sd_notify STATUS= line received so far contains ``text``."""
    notify = server.notify
    assert notify is not None
    notify.sock.setblocking(False)
    try:
        while True:
            notify.messages.append(notify.sock.recv(4096).decode())
    except BlockingIOError:
        pass
    finally:
        notify.sock.setblocking(True)
    lines = [line for message in notify.messages for line in message.split("\n")]
    return any(line.startswith("STATUS=") and text in line for line in lines)


# ------------------------------------------------------------------------------ cosmetics


@pytest.mark.parametrize("sig", [signal.SIGUSR1, signal.SIGHUP])
def test_a_restart_asked_for_while_booting_runs_once_ready(
    app_dir: Path, bound_socket: socket.socket, sig: signal.Signals
) -> None:
    (app_dir / "boot_delay").write_text("1.0")
    with running(["-w", "1", *FAST, "app:app"], cwd=app_dir, sock=bound_socket) as server:
        assert server.notify is not None
        (booting,) = server.wait_workers(lambda pids: len(pids) == 1)
        server.signal(sig)
        server.notify.wait_for("READY=1")  # the first boot
        server.notify.wait_for("RELOADING=1")  # then the restart asked for
        server.notify.wait_for("READY=1", 20)
        server.wait_workers(lambda pids: len(pids) == 1 and booting not in pids, 20)
        assert "will run once" in server.stderr()


# ------------------------------------------------------------------------------ keep-alive


def test_keep_alive_clients_lose_no_request_across_max_requests_recycles(
    app_dir: Path, bound_socket: socket.socket
) -> None:
    """Two keep-alive clients that never retry, 20 recycles: zero failed requests."""
    args = ["-w", "1", "--max-requests", "100", *FAST, "app:app"]
    with running(args, cwd=app_dir, sock=bound_socket) as server:
        server.wait_ready()
        with _keep_alive_clients(server.port) as load:
            wait_for(
                lambda: server.stderr().count("ready; stopping worker") >= 20,
                90,
                "20 recycles",
                interval=0.1,
            )
            result = load.stop()
    assert result.ok > 2000
    assert result.failures == [], f"{len(result.failures)} of {result.ok}: {result.failures[:5]}"


def test_keep_alive_clients_lose_no_request_across_usr1(
    app_dir: Path, bound_socket: socket.socket
) -> None:
    with running(["-w", "2", *FAST, "app:app"], cwd=app_dir, sock=bound_socket) as server:
        assert server.notify is not None
        workers = server.wait_ready()
        with _keep_alive_clients(server.port) as load:
            for _ in range(4):
                wait_for(lambda: load.result.ok > 0, 10, "requests")
                server.signal(signal.SIGUSR1)
                server.notify.wait_for("RELOADING=1")
                server.notify.wait_for("READY=1", 30)
                old = workers
                workers = server.wait_workers(lambda p, old=old: len(p) == 2 and not p & old, 30)
            result = load.stop()
    assert result.failures == [], f"{len(result.failures)} of {result.ok}: {result.failures[:5]}"


def _keep_alive_clients(port: int) -> LoadLoop:
    """Two keep-alive clients that never retry a request."""
    return LoadLoop(port, threads=2, max_requests=200_000, fresh=False, retry=False, seconds=120)
