"""sd_notify against a fake NOTIFY_SOCKET, in-process and from a real master."""

from __future__ import annotations

import signal
import socket
from pathlib import Path

import pytest

from hypercorn.arbiter import systemd
from tests.support.procs import NotifyListener, running


def test_notify_to_an_abstract_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    listener = NotifyListener()
    try:
        monkeypatch.setenv("NOTIFY_SOCKET", listener.name)
        assert systemd.notify("READY=1\nSTATUS=serving")
        assert listener.wait_for("READY=1", 2) == "READY=1\nSTATUS=serving"
    finally:
        listener.close()


def test_notify_to_a_path_socket(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(2)
    try:
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        assert systemd.notify("RELOADING=1")
        lines = sock.recv(1024).decode().split("\n")
        assert lines[0] == "RELOADING=1"
        # Type=notify-reload requires the monotonic timestamp with RELOADING=1.
        assert lines[1].startswith("MONOTONIC_USEC=")
        assert int(lines[1].split("=")[1]) > 0
    finally:
        sock.close()


def test_notify_without_systemd_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert not systemd.notify("READY=1")
    monkeypatch.setenv("NOTIFY_SOCKET", "/nonexistent/notify")
    assert not systemd.notify("READY=1")  # a broken socket never takes the server down


def test_listen_fds_checks_listen_pid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LISTEN_FDS", "1")
    monkeypatch.setenv("LISTEN_PID", "1")
    assert systemd.listen_fds() is None
    monkeypatch.delenv("LISTEN_PID")
    assert systemd.listen_fds() is None


@pytest.mark.slow
def test_master_notifies_ready_then_stopping(app_dir: Path, bound_socket: socket.socket) -> None:
    with running(["-w", "2", "app:app"], cwd=app_dir, sock=bound_socket) as server:
        assert server.notify is not None
        ready = server.notify.wait_for("READY=1")
        assert "STATUS=serving with 2 workers" in ready
        server.signal(signal.SIGTERM)
        assert "STOPPING=1" in server.notify.wait_for("STOPPING=1")
        assert server.wait_exit() == 0
