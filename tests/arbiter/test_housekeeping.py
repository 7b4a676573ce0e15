"""Pid file, daemon mode, --reload, the heartbeat channel, process titles."""

from __future__ import annotations

import gc
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from hypercorn.arbiter.pidfile import check_pidfile, read_pid, remove_pidfile, write_pidfile
from hypercorn.errors import BootError
from hypercorn.workers.heartbeat import (
    Message,
    MessageDecoder,
    MessageKind,
    WorkerChannel,
    encode,
)
from hypercorn.workers.process import _WORKER_GEN0
from tests.support.procs import APP_SOURCE, http_get, pid_alive, running, wait_for

# ------------------------------------------------------------------------------ heartbeat


def test_decoder_handles_split_frames() -> None:
    stream = (
        encode(MessageKind.READY)
        + encode(MessageKind.BEAT)
        + encode(MessageKind.FAILED, "cannot import 'app:app': ünïcode")
        + encode(MessageKind.STOPPING)
        + encode(MessageKind.RETIRE)
        + encode(MessageKind.SHUTDOWN)
    )
    decoder = MessageDecoder()
    messages: list[Message] = []
    for index in range(len(stream)):
        messages += decoder.feed(stream[index : index + 1])
    assert messages == [
        Message(MessageKind.READY),
        Message(MessageKind.BEAT),
        Message(MessageKind.FAILED, "cannot import 'app:app': ünïcode"),
        Message(MessageKind.STOPPING),
        Message(MessageKind.RETIRE),
        Message(MessageKind.SHUTDOWN),
    ]


def test_channel_reports_a_dead_master() -> None:
    read_fd, write_fd = os.pipe()
    channel = WorkerChannel(write_fd, os.getppid())
    assert channel.beat()
    assert os.read(read_fd, 10) == b"B"
    os.close(read_fd)
    assert not channel.beat()  # EPIPE: the master is gone
    assert not channel.master_alive()


def test_channel_notices_a_changed_parent() -> None:
    read_fd, write_fd = os.pipe()
    channel = WorkerChannel(write_fd, os.getppid() + 1)
    assert not channel.beat()
    channel.close()
    os.close(read_fd)


def test_channel_never_blocks_on_a_full_pipe() -> None:
    read_fd, write_fd = os.pipe()
    channel = WorkerChannel(write_fd, os.getppid())
    for _ in range(100_000):  # far beyond the pipe's capacity
        assert channel.beat()
    channel.close()
    os.close(read_fd)


# ------------------------------------------------------------------------------ pid file


def test_pidfile_written_atomically_and_removed_only_when_ours(tmp_path: Path) -> None:
    path = tmp_path / "hc.pid"
    write_pidfile(str(path))
    assert read_pid(str(path)) == os.getpid()
    assert [p.name for p in tmp_path.iterdir()] == ["hc.pid"]  # no temp file left behind
    write_pidfile(str(path), pid=os.getppid())
    remove_pidfile(str(path))
    assert path.exists()  # names someone else
    write_pidfile(str(path))
    remove_pidfile(str(path))
    assert not path.exists()


def test_pidfile_held_by_a_live_process_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "hc.pid"
    path.write_text(f"{os.getppid()}\n")
    with pytest.raises(BootError, match=f"held by running process {os.getppid()}"):
        check_pidfile(str(path))
    check_pidfile(str(path), allowed=(os.getppid(),))


def test_stale_or_garbage_pidfile_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "hc.pid"
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    path.write_text(f"{child.pid}\n")
    check_pidfile(str(path))
    path.write_text("garbage")
    check_pidfile(str(path))


@pytest.mark.slow
def test_pidfile_appears_and_disappears(app_dir: Path, bound_socket: socket.socket) -> None:
    pid_file = app_dir / "run" / "hc.pid"
    pid_file.parent.mkdir()
    args = ["-w", "1", "--pid", str(pid_file), "app:app"]
    with running(args, cwd=app_dir, sock=bound_socket) as server:
        server.wait_ready()
        assert pid_file.read_text().strip() == str(server.pid)
        # A second server with the same pid file is refused.
        second = subprocess.run(
            [
                sys.executable,
                "-m",
                "hypercorn",
                "-b",
                "127.0.0.1:0",
                "--pid",
                str(pid_file),
                "app:app",
            ],
            cwd=app_dir,
            capture_output=True,
            text=True,
            timeout=20,
        )
        assert second.returncode == 3
        assert f"held by running process {server.pid}" in second.stderr
        server.signal(signal.SIGTERM)
        assert server.wait_exit() == 0
        assert not pid_file.exists()


# ------------------------------------------------------------------------------ daemon


@pytest.mark.slow
def test_daemon_detaches_and_reports_readiness(app_dir: Path, bound_socket: socket.socket) -> None:
    pid_file = app_dir / "hc.pid"
    log_file = app_dir / "error.log"
    port = bound_socket.getsockname()[1]
    fd = bound_socket.fileno()
    launcher = subprocess.run(
        [
            sys.executable,
            "-m",
            "hypercorn",
            "-D",
            "-w",
            "1",
            "-b",
            f"fd://{fd}",
            "--pid",
            str(pid_file),
            "--error-logfile",
            str(log_file),
            "app:app",
        ],
        cwd=app_dir,
        pass_fds=(fd,),
        capture_output=True,
        text=True,
        timeout=20,
    )
    bound_socket.close()
    # The launcher returned only once the daemon was READY.
    assert launcher.returncode == 0, launcher.stderr
    daemon = read_pid(str(pid_file))
    assert daemon is not None
    try:
        assert pid_alive(daemon)
        # A new session (not ours), and not its leader: it can never regain a terminal.
        assert os.getsid(daemon) not in (os.getsid(0), daemon)
        assert http_get(port)[0] == 200
        assert "Running on" in log_file.read_text()
    finally:
        os.kill(daemon, signal.SIGTERM)
    wait_for(lambda: not pid_alive(daemon), 10, "daemon to stop")
    wait_for(lambda: not pid_file.exists(), 5, "pid file removal")


@pytest.mark.slow
def test_daemon_boot_failure_reaches_the_launcher(tmp_path: Path) -> None:
    (tmp_path / "broken.py").write_text("raise RuntimeError('boom at import')\n")
    launcher = subprocess.run(
        [sys.executable, "-m", "hypercorn", "-D", "-b", "127.0.0.1:0", "broken:app"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert launcher.returncode == 4
    assert "boom at import" in launcher.stderr
    assert len(launcher.stderr.strip().splitlines()) == 1


# ------------------------------------------------------------------------------ --reload


@pytest.mark.slow
def test_reload_swaps_workers_and_survives_a_syntax_error(
    app_dir: Path, bound_socket: socket.socket
) -> None:
    port = bound_socket.getsockname()[1]
    app_file = app_dir / "app.py"
    args = ["-w", "2", "--reload", "--graceful-timeout", "1", "app:app"]
    with running(args, cwd=app_dir, sock=bound_socket) as server:
        first = server.wait_ready()
        assert http_get(port)[1].endswith("v1")
        assert server.notify is not None

        app_file.write_text(APP_SOURCE.replace('VERSION = "v1"', 'VERSION = "v2"'))
        server.notify.wait_for("RELOADING=1")
        server.notify.wait_for("READY=1")
        second = server.wait_workers(lambda pids: len(pids) == 2 and not pids & first)
        assert http_get(port)[1].endswith("v2")

        app_file.write_text(APP_SOURCE + "\ndef broken(:\n")
        ready = server.notify.wait_for("READY=1")  # the roll ends: aborted
        assert "rolling restart failed" in ready
        assert server.workers() == second  # the old workers keep serving
        assert http_get(port)[1].endswith("v2")
        err = server.stderr()
        assert "rolling restart aborted" in err
        assert "SyntaxError" in err or "invalid syntax" in err

        app_file.write_text(APP_SOURCE.replace('VERSION = "v1"', 'VERSION = "v3"'))
        server.notify.wait_for("READY=1")
        server.wait_workers(lambda pids: len(pids) == 2 and not pids & second)
        assert http_get(port)[1].endswith("v3")


# ------------------------------------------------------------------------------ titles


@pytest.mark.slow
def test_process_titles(app_dir: Path, bound_socket: socket.socket) -> None:
    pytest.importorskip("setproctitle")
    (app_dir / "boot_delay").write_text("0.5")
    args = ["-w", "1", "--graceful-timeout", "10", "app:app"]
    with running(args, cwd=app_dir, sock=bound_socket) as server:
        (booting,) = server.wait_workers(lambda pids: len(pids) == 1)
        wait_for(lambda: "(booting)" in _cmdline(booting), 5, "the booting title")
        assert _cmdline(booting) == "hypercorn: worker [app:app] (booting)"
        (worker,) = server.wait_ready()
        assert _cmdline(server.pid) == "hypercorn: master [app:app]"
        assert _cmdline(worker) == "hypercorn: worker [app:app]"
        client = socket.create_connection(("127.0.0.1", server.port))
        client.sendall(b"GET /slow?30 HTTP/1.1\r\nhost: x\r\n\r\n")
        assert http_get(server.port)[0] == 200  # the slow request is in flight by now
        server.signal(signal.SIGTERM)
        wait_for(lambda: "(draining)" in _cmdline(worker), 5, "the draining title")
        assert _cmdline(worker) == "hypercorn: worker [app:app] (draining)"
        client.close()


def _cmdline(pid: int) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as file:
        return file.read().split(b"\0")[0].decode().strip()


# ------------------------------------------------------------------------------ --preload


PRELOAD_APP = """
import gc
import os

with open("imported-by.txt", "a") as file:
    file.write(f"{os.getpid()}\\n")

async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        return
    body = f"{os.getpid()} {os.getuid()}".encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})
"""


@pytest.mark.slow
def test_preload_imports_once_in_the_master(tmp_path: Path, bound_socket: socket.socket) -> None:
    (tmp_path / "pre.py").write_text(PRELOAD_APP)
    with running(["-w", "2", "--preload", "pre:app"], cwd=tmp_path, sock=bound_socket) as server:
        server.wait_ready()
        assert (tmp_path / "imported-by.txt").read_text().split() == [str(server.pid)]
        assert http_get(server.port)[0] == 200


@pytest.mark.slow
def test_preload_failure_is_reported_by_the_master(tmp_path: Path) -> None:
    (tmp_path / "bad.py").write_text("raise ImportError('no such thing')\n")
    with running(["-w", "2", "--preload", "-b", "127.0.0.1:0", "bad:app"], cwd=tmp_path) as server:
        assert server.wait_exit() == 4
        err = server.stderr()
        assert len([line for line in err.splitlines() if "no such thing" in line]) == 1, err


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")
def test_workers_drop_privileges(tmp_path: Path, bound_socket: socket.socket) -> None:
    import pwd

    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no 'nobody' user")
    (tmp_path / "pre.py").write_text(PRELOAD_APP)
    args = ["-w", "1", "--preload", "--worker-user", str(nobody.pw_uid)]
    args += ["--worker-group", str(nobody.pw_gid)]
    with running([*args, "pre:app"], cwd=tmp_path, sock=bound_socket) as server:
        (worker,) = server.wait_ready()
        status, body = http_get(server.port)
        assert status == 200
        assert body.split() == [str(worker), str(nobody.pw_uid)]
        assert _cmdline(server.pid).startswith("hypercorn: master")


def test_workers_settle_the_collector_when_ready(
    app_dir: Path, bound_socket: socket.socket
) -> None:
    """Modules and the app are moved out of the collector's sight once a worker is ready
    (full collections would walk them for nothing, once every few thousand requests), and
    young collections run less often than CPython's default of every 700 objects."""
    port = bound_socket.getsockname()[1]
    with running(["-w", "1", "app:app"], cwd=app_dir, sock=bound_socket) as server:
        server.wait_ready()
        status, body = http_get(port, "/gc")
    assert status == 200
    frozen, gen0 = map(int, body.split())
    assert frozen > 1000
    assert gen0 == _WORKER_GEN0 > 700


# 700 is CPython's default young threshold up to 3.12, 2000 in 3.13: an app that sets the
# other version's default made a choice as much as one that sets 500.
@pytest.mark.parametrize("threshold", [500, 2000 if gc.get_threshold()[0] == 700 else 700])
def test_an_app_that_set_its_own_gc_threshold_keeps_it(
    app_dir: Path, bound_socket: socket.socket, threshold: int
) -> None:
    (app_dir / "gcapp.py").write_text(
        f"import gc\ngc.set_threshold({threshold})\nfrom app import app\n"
    )
    port = bound_socket.getsockname()[1]
    with running(["-w", "1", "gcapp:app"], cwd=app_dir, sock=bound_socket) as server:
        server.wait_ready()
        status, body = http_get(port, "/gc")
    assert status == 200
    assert body.split()[1] == str(threshold)
