"""Listeners: binds, fd inheritance, systemd socket activation, SO_REUSEPORT, bind errors."""

from __future__ import annotations

import os
import signal
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from hypercorn.arbiter.sockets import (
    Sockets,
    all_sockets,
    close_sockets,
    create_listeners,
    create_sockets,
    describe,
    reuse_port_clone,
    upgrade_env,
)
from hypercorn.config import Config
from hypercorn.errors import BootError
from tests.support.procs import http_get, running, wait_for


@pytest.fixture
def config() -> Iterator[Config]:
    config = Config()
    config.bind = ["127.0.0.1:0"]
    return config


def test_binds_ipv4_listening_nonblocking(config: Config) -> None:
    sockets = create_sockets(config)
    try:
        (sock,) = sockets.insecure_sockets
        assert sockets.secure_sockets == []
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
        assert not sock.getblocking()
        assert describe(sock).startswith("127.0.0.1:")
        # Without --reuse-port nobody else may share the port.
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 0
    finally:
        close_sockets(sockets)


def test_binds_ipv6(config: Config) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    config.bind = ["[::1]:0"]
    try:
        sockets = create_sockets(config)
    except BootError as exc:
        pytest.skip(f"IPv6 loopback unavailable: {exc}")
    try:
        (sock,) = sockets.insecure_sockets
        assert sock.family == socket.AF_INET6
        assert describe(sock).startswith("[::1]:")
    finally:
        close_sockets(sockets)


def test_port_in_use_is_one_line_naming_the_address(config: Config) -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    config.bind = [f"127.0.0.1:{port}"]
    try:
        with pytest.raises(BootError) as info:
            create_sockets(config)
    finally:
        holder.close()
    assert str(info.value) == f"cannot bind to 127.0.0.1:{port}: address already in use"


@pytest.mark.parametrize(
    ("bind", "reason"),
    [
        ("192.0.2.1:0", "address not available on this host"),  # TEST-NET-1, not ours
        ("unix:/nonexistent-dir/hc.sock", "no such file or directory"),
        ("127.0.0.1:http-alt", "is not a port number"),
    ],
)
def test_bind_errors_name_the_address(config: Config, bind: str, reason: str) -> None:
    config.bind = [bind]
    with pytest.raises(BootError) as info:
        create_sockets(config)
    message = str(info.value)
    assert bind in message
    assert reason in message
    assert "\n" not in message


def test_privileged_port_without_permission(config: Config) -> None:
    if os.geteuid() == 0:
        pytest.skip("root may bind low ports")
    config.bind = ["127.0.0.1:1"]
    with pytest.raises(BootError, match="permission denied"):
        create_sockets(config)


def test_unix_socket_with_umask_and_stale_file(config: Config, tmp_path: Path) -> None:
    path = tmp_path / "hc.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # a leftover file nobody listens on
    config.bind = [f"unix:{path}"]
    config.umask = 0o077
    listeners = create_listeners(config)
    try:
        (_sock,) = listeners.base.insecure_sockets
        assert listeners.unix_paths == [str(path)]
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o700
        client = socket.socket(socket.AF_UNIX)
        client.connect(str(path))
        client.close()
    finally:
        close_sockets(listeners.base)


def test_unix_socket_in_use_is_refused(config: Config, tmp_path: Path) -> None:
    path = tmp_path / "busy.sock"
    live = socket.socket(socket.AF_UNIX)
    live.bind(str(path))
    live.listen()
    config.bind = [f"unix:{path}"]
    try:
        with pytest.raises(BootError, match="address already in use"):
            create_sockets(config)
    finally:
        live.close()


def test_unix_path_that_is_not_a_socket_is_refused(config: Config, tmp_path: Path) -> None:
    path = tmp_path / "file"
    path.write_text("precious")
    config.bind = [f"unix:{path}"]
    with pytest.raises(BootError, match="not a socket"):
        create_sockets(config)
    assert path.read_text() == "precious"


def test_fd_bind_adopts_the_socket(config: Config, bound_socket: socket.socket) -> None:
    duplicate = bound_socket.dup()
    config.bind = [f"fd://{duplicate.fileno()}"]
    sockets = create_sockets(config)
    (sock,) = sockets.insecure_sockets
    assert sock.fileno() == duplicate.fileno()
    assert sock.getsockname() == bound_socket.getsockname()
    duplicate.detach()
    close_sockets(sockets)


def test_fd_bind_of_the_wrong_type_is_refused(config: Config) -> None:
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        config.bind = [f"fd://{udp.fileno()}"]
        with pytest.raises(BootError, match="expected a stream"):
            create_sockets(config)
    finally:
        udp.close()


def test_listen_fds_from_systemd(
    config: Config, bound_socket: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Put a copy of the socket at fd 3, where systemd puts the first one.
    saved = os.dup(3) if _fd_open(3) else None
    os.dup2(bound_socket.fileno(), 3)
    monkeypatch.setenv("LISTEN_PID", str(os.getpid()))
    monkeypatch.setenv("LISTEN_FDS", "1")
    monkeypatch.setenv("LISTEN_FDNAMES", "web")
    try:
        listeners = create_listeners(config)
        assert listeners.source == "systemd"
        (sock,) = listeners.base.insecure_sockets
        assert sock.fileno() == 3
        assert sock.getsockname() == bound_socket.getsockname()
        assert not os.get_inheritable(3)
        sock.detach()
        # Another process's LISTEN_PID: ignored, the binds apply.
        monkeypatch.setenv("LISTEN_PID", "1")
        other = create_listeners(config)
        assert other.source == "bind"
        close_sockets(other.base)
    finally:
        if saved is not None:
            os.dup2(saved, 3)
            os.close(saved)
        else:
            os.close(3)


def _fd_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def test_reuse_port_gives_each_slot_its_own_listener(config: Config) -> None:
    config.reuse_port = True
    base = create_sockets(config)
    clone = reuse_port_clone(base, config.backlog)
    try:
        (first,) = base.insecure_sockets
        (second,) = clone.insecure_sockets
        assert first is not second
        assert first.getsockname() == second.getsockname()
        assert second.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
    finally:
        close_sockets(base)
        close_sockets(clone)


def test_retiring_a_slot_swaps_its_listener_for_a_bound_idle_twin(config: Config) -> None:
    config.reuse_port = True
    listeners = create_listeners(config)
    (first,) = listeners.base.insecure_sockets
    address = first.getsockname()
    try:
        assert id(first) in listeners.retirable
        listeners.retire(0, config.backlog)
        (twin,) = listeners.base.insecure_sockets
        assert first.fileno() == -1  # closed
        assert twin.getsockname() == address  # still holds the port
        assert twin.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 0
        assert id(twin) in listeners.retirable
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(address, timeout=1)
    finally:
        close_sockets(listeners.base)


def test_fd_and_unix_listeners_are_never_retired(
    config: Config, bound_socket: socket.socket
) -> None:
    config.reuse_port = True
    config.bind = [f"fd://{bound_socket.fileno()}"]
    listeners = create_listeners(config)
    assert listeners.retirable == set()
    listeners.retire(0, config.backlog)
    assert listeners.base.insecure_sockets[0].fileno() == bound_socket.fileno()
    listeners.base.insecure_sockets[0].detach()


def test_sockets_without_reuse_port_are_shared_not_cloned(
    config: Config, bound_socket: socket.socket
) -> None:
    shared = Sockets(insecure_sockets=[bound_socket])
    clone = reuse_port_clone(shared, 10)
    assert clone.insecure_sockets[0] is bound_socket


def test_upgrade_env_round_trip(
    config: Config, bound_socket: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    value, fds = upgrade_env({0: Sockets(insecure_sockets=[bound_socket])}, {id(bound_socket)})
    assert fds == [bound_socket.fileno()]
    assert value.endswith(":r")
    duplicate = os.dup(bound_socket.fileno())
    value = value.replace(str(bound_socket.fileno()), str(duplicate))
    monkeypatch.setenv("HYPERCORN_FDS", value)
    monkeypatch.setenv("HYPERCORN_FDS_PID", str(os.getpid()))
    listeners = create_listeners(config)
    assert listeners.source == "upgrade"
    (sock,) = all_sockets(listeners.base)
    assert sock.getsockname() == bound_socket.getsockname()
    assert listeners.retirable == {id(sock)}
    assert "HYPERCORN_FDS" not in os.environ
    sock.close()


# ------------------------------------------------------------------------------ processes


@pytest.mark.slow
def test_socket_activation_end_to_end(app_dir: Path, bound_socket: socket.socket) -> None:
    port = bound_socket.getsockname()[1]
    with running(
        ["-w", "2", "app:app"], cwd=app_dir, sock=bound_socket, socket_activation=True
    ) as server:
        server.wait_ready()
        status, _ = http_get(port)
        assert status == 200
        assert "sockets from systemd" in server.stderr()


@pytest.mark.slow
def test_bind_failure_exits_with_one_line(app_dir: Path) -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        with running(["-w", "2", "-b", f"127.0.0.1:{port}", "app:app"], cwd=app_dir) as server:
            assert server.wait_exit(15) == 3
            err = server.stderr().strip()
    finally:
        holder.close()
    assert err == f"hypercorn: error: cannot bind to 127.0.0.1:{port}: address already in use"


@pytest.mark.slow
def test_reuse_port_workers_each_have_their_own_listener(
    app_dir: Path, bound_socket: socket.socket
) -> None:
    port = bound_socket.getsockname()[1]
    bound_socket.close()  # free the port; the server binds it itself with SO_REUSEPORT
    args = ["-w", "3", "--reuse-port", "-b", f"127.0.0.1:{port}", "app:app"]
    with running(args, cwd=app_dir) as server:
        workers = server.wait_ready()
        inodes = {pid: _listening_inodes(pid) for pid in workers}
        # Each worker holds exactly one listener, and no two share it.
        assert all(len(v) == 1 for v in inodes.values()), inodes
        assert len(set().union(*inodes.values())) == 3
        seen = {int(http_get(port)[1].split()[0]) for _ in range(60)}
        assert seen <= workers
        assert len(seen) >= 2
        # The dead worker's listener was retired (other slots serve): its replacement
        # listens on a fresh socket of its own once ready.
        victim = min(workers)
        os.kill(victim, signal.SIGKILL)
        after = server.wait_workers(lambda pids: len(pids) == 3 and victim not in pids)
        (replacement,) = after - workers
        fresh = wait_for(lambda: _listening_inodes(replacement), 10, "the replacement to listen")
        assert len(fresh) == 1
        assert not fresh & set().union(*inodes.values())


def _listening_inodes(pid: int) -> set[str]:
    listening = set()
    with open("/proc/net/tcp") as file:
        for line in file.readlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":  # LISTEN
                listening.add(fields[9])
    found = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:[") and target[8:-1] in listening:
            found.add(target[8:-1])
    return found
