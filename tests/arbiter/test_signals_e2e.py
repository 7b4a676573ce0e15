"""Real masters, real workers, real signals."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
from pathlib import Path

import h11
import pytest

from tests.support.procs import (
    LoadLoop,
    RequestFailed,
    http_get,
    pid_alive,
    running,
    wait_for,
)

pytestmark = pytest.mark.slow

FAST = ["--graceful-timeout", "2", "-t", "5"]


def test_term_lets_an_inflight_request_finish_then_exits_zero(
    app_dir: Path, bound_socket: socket.socket, worker_args: list[str]
) -> None:
    with running(
        [*worker_args, "-w", "2", *FAST, "app:app"], cwd=app_dir, sock=bound_socket
    ) as server:
        server.wait_ready()
        result: list[object] = []

        def slow_request() -> None:
            try:
                result.append(http_get(server.port, "/slow?1.0"))
            except OSError as exc:
                result.append(exc)

        thread = threading.Thread(target=slow_request, daemon=True)
        thread.start()
        # (Not _inflight: with two workers, another connection's answer proves nothing.)
        wait_for(lambda: (app_dir / "slow_started").exists(), 5, "request in flight")
        server.signal(signal.SIGTERM)
        assert server.notify is not None
        server.notify.wait_for("STOPPING=1")
        thread.join(10)
        assert result == [(200, result[0][1])]  # type: ignore[index]
        assert server.wait_exit(10) == 0


def _slow_request_in_flight(port: int) -> socket.socket:
    """A raw connection whose 30 s request the server has accepted; the caller closes it."""
    client = socket.create_connection(("127.0.0.1", port))
    client.sendall(b"GET /slow?30 HTTP/1.1\r\nhost: x\r\n\r\n")
    wait_for(lambda: _inflight(port), 5, "request in flight")
    return client


def _inflight(port: int) -> bool:
    # The slow request is accepted by now if a second connection is accepted too.
    status, _ = http_get(port, "/")
    return status == 200


def test_request_longer_than_graceful_timeout_does_not_delay_exit(
    app_dir: Path, bound_socket: socket.socket
) -> None:
    args = ["-w", "1", "--graceful-timeout", "0.5", "app:app"]
    with running(args, cwd=app_dir, sock=bound_socket) as server:
        server.wait_ready()
        client = _slow_request_in_flight(server.port)
        started = time.monotonic()
        server.signal(signal.SIGTERM)
        assert server.wait_exit(10) == 0
        # graceful_timeout + the master's kill grace, with room for a loaded CI box
        assert time.monotonic() - started < 4.0
        client.close()


def test_second_sigint_stops_at_once(
    app_dir: Path, bound_socket: socket.socket, worker_args: list[str]
) -> None:
    args = [*worker_args, "-w", "1", "--graceful-timeout", "20", "app:app"]
    with running(args, cwd=app_dir, sock=bound_socket) as server:
        server.wait_ready()
        client = _slow_request_in_flight(server.port)
        started = time.monotonic()
        server.signal(signal.SIGINT)
        assert server.notify is not None
        server.notify.wait_for("STOPPING=1")
        server.signal(signal.SIGINT)
        assert server.wait_exit(10) == 0
        assert time.monotonic() - started < 5.0
        client.close()


def test_quit_stops_quickly(
    app_dir: Path, bound_socket: socket.socket, worker_args: list[str]
) -> None:
    args = [*worker_args, "-w", "2", "--graceful-timeout", "20", "app:app"]
    with running(args, cwd=app_dir, sock=bound_socket) as server:
        server.wait_ready()
        client = _slow_request_in_flight(server.port)
        started = time.monotonic()
        server.signal(signal.SIGQUIT)
        assert server.wait_exit(10) == 0
        assert time.monotonic() - started < 5.0
        client.close()


@pytest.mark.parametrize("sig", [signal.SIGUSR1, signal.SIGHUP])
def test_rolling_restart_under_load_fails_no_request(
    app_dir: Path, bound_socket: socket.socket, sig: signal.Signals, worker_args: list[str]
) -> None:
    with running(
        [*worker_args, "-w", "2", *FAST, "app:app"], cwd=app_dir, sock=bound_socket
    ) as server:
        old = server.wait_ready()
        assert len(old) == 2
        assert server.notify is not None
        with LoadLoop(server.port, threads=4) as load:
            wait_for(lambda: load.result.ok >= 50, 10, "load before the restart")
            server.signal(sig)
            server.notify.wait_for("RELOADING=1")
            server.notify.wait_for("READY=1")
            new = server.wait_workers(lambda pids: len(pids) == 2 and not pids & old)
            served = load.result.ok
            wait_for(lambda: load.result.ok >= served + 50, 10, "load after the restart")
            result = load.stop()
        _check_no_failures(result.failures)
        assert result.pids & new, "the new workers served requests"
        assert result.pids & old, "the old workers served requests"
        assert server.workers() == new


def _check_no_failures(failures: list[str]) -> None:
    assert failures == []


def test_killed_worker_is_replaced(app_dir: Path, bound_socket: socket.socket) -> None:
    with running(["-w", "2", *FAST, "app:app"], cwd=app_dir, sock=bound_socket) as server:
        old = server.wait_ready()
        victim = min(old)
        server_workers = old - {victim}
        os.kill(victim, signal.SIGKILL)
        new = server.wait_workers(lambda pids: len(pids) == 2 and victim not in pids)
        assert server_workers < new
        assert http_get(server.port)[0] == 200


def test_worker_killed_mid_request_loses_only_that_request(
    app_dir: Path, bound_socket: socket.socket
) -> None:
    """The master owns the listener, so connections queued while the only worker is dead are
    served by its replacement; the one request in flight on the killed worker is all we lose."""
    with running(["-w", "1", *FAST, "app:app"], cwd=app_dir, sock=bound_socket) as server:
        (victim,) = server.wait_ready()
        outcome: list[object] = []

        def doomed_request() -> None:
            try:
                outcome.append(http_get(server.port, "/slow?30"))
            except (OSError, RequestFailed, h11.ProtocolError) as exc:
                outcome.append(exc)

        doomed = threading.Thread(target=doomed_request, daemon=True)
        doomed.start()
        wait_for(lambda: _inflight(server.port), 5, "request in flight")
        os.kill(victim, signal.SIGKILL)
        doomed.join(10)
        # Sent while no worker exists: they wait in the master's listen queue, not lost.
        answers: list[object] = []

        def queued_request() -> None:
            try:
                answers.append(http_get(server.port, "/")[0])
            except (OSError, RequestFailed, h11.ProtocolError) as exc:
                answers.append(exc)

        queued = [threading.Thread(target=queued_request, daemon=True) for _ in range(20)]
        for thread in queued:
            thread.start()
        new = server.wait_workers(lambda pids: len(pids) == 1 and victim not in pids)
        for thread in queued:
            thread.join(15)
        assert len(outcome) == 1
        assert not isinstance(outcome[0], tuple), "the in-flight request cannot have succeeded"
        assert answers == [200] * 20
        assert http_get(server.port, "/")[1].split()[0] == str(min(new))


def test_hung_worker_dumps_its_stack_and_is_replaced(
    app_dir: Path, bound_socket: socket.socket, worker_args: list[str]
) -> None:
    args = [*worker_args, "-w", "1", "-t", "1", "--graceful-timeout", "1", "app:app"]
    with running(args, cwd=app_dir, sock=bound_socket) as server:
        (old,) = server.wait_ready()
        client = socket.create_connection(("127.0.0.1", server.port))
        client.sendall(b"GET /block?30 HTTP/1.1\r\nhost: x\r\n\r\n")
        (_new,) = server.wait_workers(lambda pids: len(pids) == 1 and old not in pids, 15)
        assert not pid_alive(old)
        # faulthandler's dump names the line of the app that blocked the event loop.
        err = wait_for(lambda: 'app.py", line' in server.stderr() and server.stderr(), 5, "dump")
        assert "timed out" in err
        assert "in _run_app" in err
        assert http_get(server.port)[0] == 200
        client.close()


def test_app_that_fails_to_import_halts_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "broken.py").write_text("import does_not_exist_anywhere\n")
    with running(["-w", "3", "-b", "127.0.0.1:0", "broken:app"], cwd=tmp_path) as server:
        started = time.monotonic()
        code = server.wait_exit(15)
        assert time.monotonic() - started < 10
        assert code == 4
        err = server.stderr()
        lines = [line for line in err.splitlines() if "does_not_exist_anywhere" in line]
        assert len(lines) == 1, err
        assert "Traceback" not in err


def test_lifespan_startup_failure_halts_with_boot_error(
    tmp_path: Path, worker_args: list[str]
) -> None:
    (tmp_path / "badstart.py").write_text(
        "async def app(scope, receive, send):\n"
        "    if scope['type'] == 'lifespan':\n"
        "        await receive()\n"
        "        await send({'type': 'lifespan.startup.failed', 'message': 'db is down'})\n"
    )
    with running(
        [*worker_args, "-w", "2", "-b", "127.0.0.1:0", "badstart:app"], cwd=tmp_path
    ) as server:
        assert server.wait_exit(15) == 3
        err = server.stderr()
        assert len([line for line in err.splitlines() if "db is down" in line]) == 1, err


RAISES_IN_STARTUP = (
    "async def app(scope, receive, send):\n"
    "    if scope['type'] == 'lifespan':\n"
    "        await receive()\n"
    "        raise ConnectionError('cannot reach the database')\n"
    "    await send({'type': 'http.response.start', 'status': 200, 'headers': []})\n"
    "    await send({'type': 'http.response.body', 'body': b'served'})\n"
)


def test_app_raising_in_lifespan_startup_is_served(
    tmp_path: Path, bound_socket: socket.socket
) -> None:
    # ASGI lifespan spec: "the server must continue but not send any lifespan events".
    (tmp_path / "raises.py").write_text(RAISES_IN_STARTUP)
    with running(["-w", "2", *FAST, "raises:app"], cwd=tmp_path, sock=bound_socket) as server:
        server.wait_ready()
        assert http_get(server.port) == (200, "served")
        server.signal(signal.SIGTERM)
        assert server.wait_exit(15) == 0
        err = server.stderr()
        warnings = [line for line in err.splitlines() if "[WARNING]" in line]
        assert len(warnings) == 2, err  # one line per worker, nothing else
        assert all("cannot reach the database" in line for line in warnings), err
        assert "Traceback" not in err


def test_lifespan_on_makes_a_raising_startup_a_boot_error(tmp_path: Path) -> None:
    (tmp_path / "raises.py").write_text(RAISES_IN_STARTUP)
    args = ["-w", "2", "--lifespan", "on", "-b", "127.0.0.1:0", "raises:app"]
    with running(args, cwd=tmp_path) as server:
        assert server.wait_exit(15) == 3
        err = server.stderr()
        lines = [line for line in err.splitlines() if "lifespan startup failed" in line]
        assert len(lines) == 1, err
        assert "cannot reach the database" in lines[0]


def test_ttin_and_ttou_change_the_worker_count(app_dir: Path, bound_socket: socket.socket) -> None:
    with running(["-w", "2", *FAST, "app:app"], cwd=app_dir, sock=bound_socket) as server:
        first = server.wait_ready()
        server.signal(signal.SIGTTIN)
        three = server.wait_workers(lambda pids: len(pids) == 3)
        assert first < three
        server.signal(signal.SIGTTOU)
        two = server.wait_workers(lambda pids: len(pids) == 2)
        oldest = min(first, key=lambda pid: pid)  # pids grow: the lowest is the oldest here
        assert oldest not in two
        server.signal(signal.SIGTTOU)
        server.wait_workers(lambda pids: len(pids) == 1)
        server.signal(signal.SIGTTOU)  # never below one
        assert http_get(server.port)[0] == 200
        assert len(server.workers()) == 1


def test_killed_master_takes_its_workers_down_and_frees_the_port(
    app_dir: Path, bound_socket: socket.socket
) -> None:
    with running(["-w", "2", *FAST, "app:app"], cwd=app_dir, sock=bound_socket) as server:
        workers = server.wait_ready()
        server.signal(signal.SIGKILL)
        server.wait_exit(5)
        wait_for(lambda: not any(pid_alive(p) for p in workers), 10, "workers to exit")

        def refused() -> bool:
            try:
                socket.create_connection(("127.0.0.1", server.port), timeout=1).close()
            except ConnectionRefusedError:
                return True
            return False

        wait_for(refused, 5, "the port to be released")


def test_usr2_upgrades_the_master_without_closing_the_port(
    app_dir: Path, bound_socket: socket.socket
) -> None:
    pid_file = app_dir / "hc.pid"
    args = ["-w", "2", *FAST, "--pid", str(pid_file), "app:app"]
    with running(args, cwd=app_dir, sock=bound_socket) as server:
        old_workers = server.wait_ready()
        assert pid_file.read_text().strip() == str(server.pid)
        with LoadLoop(server.port, threads=2) as load:
            wait_for(lambda: load.result.ok >= 20, 10, "load before the upgrade")
            server.signal(signal.SIGUSR2)
            server.wait_exit(20)  # the old master retires once the new one is ready
            new_master = int(wait_for(lambda: pid_file.read_text().strip(), 5, "pid file"))
            assert new_master != server.pid
            server.adopt(new_master)  # killed at teardown if the test fails
            assert pid_alive(new_master)
            served = load.result.ok
            wait_for(lambda: load.result.ok >= served + 20, 10, "load after the upgrade")
            result = load.stop()
        _check_no_failures(result.failures)
        try:
            assert not any(pid_alive(p) for p in old_workers)
            assert http_get(server.port)[0] == 200
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(new_master, signal.SIGTERM)
        wait_for(lambda: not pid_alive(new_master), 10, "new master to stop")
        assert not pid_file.exists()


def test_hup_rereads_the_config_file_and_keeps_the_old_one_when_bad(
    app_dir: Path, bound_socket: socket.socket
) -> None:
    conf = app_dir / "hypercorn.toml"
    conf.write_text("workers = 2\ngraceful_timeout = 1.0\n")
    with running(["-c", str(conf), "app:app"], cwd=app_dir, sock=bound_socket) as server:
        assert server.notify is not None
        old = server.wait_ready()
        assert len(old) == 2
        conf.write_text("workers = 3\ngraceful_timeout = 1.0\n")
        server.signal(signal.SIGHUP)
        server.notify.wait_for("RELOADING=1")
        server.notify.wait_for("READY=1")
        new = server.wait_workers(lambda pids: len(pids) == 3 and not pids & old)
        assert "SIGTTIN" not in server.stderr()  # no signal was sent: the file changed
        assert "workers: 3 (was 2)" in server.stderr()

        conf.write_text("workers = 'many'\n")
        server.signal(signal.SIGHUP)
        server.notify.wait_for("READY=1")  # still rolls, with the old configuration
        server.wait_workers(lambda pids: len(pids) == 3 and not pids & new)
        errors = [line for line in server.stderr().splitlines() if "not reloaded" in line]
        assert len(errors) == 1
        assert "workers" in errors[0]
        assert http_get(server.port)[0] == 200


def test_max_requests_recycles_workers_without_failures(
    app_dir: Path, bound_socket: socket.socket, worker_args: list[str]
) -> None:
    args = [*worker_args, "-w", "1", "--max-requests", "5", *FAST, "app:app"]
    with running(args, cwd=app_dir, sock=bound_socket) as server:
        server.wait_ready()
        pids: set[int] = set()

        def served_by_three() -> bool:
            status, body = http_get(server.port)
            assert status == 200
            pids.add(int(body.split()[0]))
            return len(pids) >= 3

        # A worker past 5 requests serves on until its replacement is READY.
        wait_for(served_by_three, 20, "three generations of workers")
        assert "asks to be replaced" in server.stderr()
