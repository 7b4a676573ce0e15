"""Upstream Hypercorn 0.18 command lines, served unchanged by this server (issue 12).

Each test runs an upstream-style command line and asserts upstream's documented outcome:
reload seen, a second instance on the same port, socket owner and the app's user, exit status
and one-line errors, the "Running on" line. Where upstream's behaviour is only known by
running it, the ``upstream`` fixture runs upstream Hypercorn 0.18 beside this server.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hypercorn.config import Config
from tests.compat.conftest import Upstream, hypercorn_cli
from tests.support.procs import APP_SOURCE, http_get, running, wait_for, write_app

# ------------------------------------------------------------------------------ --reload


@pytest.fixture
def without_watchfiles(tmp_path: Path) -> dict[str, str]:
    """Environment for a server that cannot import watchfiles (the ``reload`` extra)."""
    shadow = tmp_path / "no-watchfiles" / "watchfiles"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('watchfiles is not installed')\n")
    return {"PYTHONPATH": str(shadow.parent)}


@pytest.mark.slow
def test_reload_without_watchfiles_sees_an_app_outside_the_working_directory(
    tmp_path: Path, bound_socket: socket.socket, without_watchfiles: dict[str, str]
) -> None:
    """`cd X; hypercorn --reload /other/app.py:app` reloads on edits to /other/app.py, with
    no extra installed (item 4)."""
    other = tmp_path / "other"
    elsewhere = tmp_path / "elsewhere"
    other.mkdir()
    elsewhere.mkdir()
    app_file = write_app(other)
    args = ["--reload", "--graceful-timeout", "1", f"{app_file}:app"]
    with running(args, cwd=elsewhere, sock=bound_socket, env=without_watchfiles) as server:
        server.wait_ready()
        assert http_get(server.port)[1].endswith("v1")
        assert "polling" in server.stderr()
        assert server.notify is not None
        app_file.write_text(APP_SOURCE.replace('VERSION = "v1"', 'VERSION = "v2"'))
        server.notify.wait_for("RELOADING=1")
        # The old worker serves until the roll has replaced it (and a poll that caught the
        # file half-written rolls once more): wait, bounded, for the new code to answer.
        wait_for(lambda: http_get(server.port)[1].endswith("v2"), 30, "the edited app to serve")


# ------------------------------------------------------------------------------ SO_REUSEPORT


@pytest.mark.slow
def test_a_second_multi_worker_instance_binds_the_same_port(tmp_path: Path) -> None:
    """Upstream sets SO_REUSEPORT whenever workers > 1: a blue/green switch starts the new
    instance on the port the old one still serves, then stops the old one (item 3)."""
    write_app(tmp_path)
    # Reserve a port without listening on it: SO_REUSEPORT sockets of this user can join.
    placeholder = socket.socket()
    placeholder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    placeholder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    placeholder.bind(("127.0.0.1", 0))
    port = placeholder.getsockname()[1]
    args = ["-w", "2", "-b", f"127.0.0.1:{port}", "app:app"]
    try:
        with running(args, cwd=tmp_path) as blue:
            blue_workers = blue.wait_ready()
            with running(args, cwd=tmp_path) as green:
                green_workers = green.wait_ready()
                blue.signal(signal.SIGTERM)
                assert blue.wait_exit() == 0
                served_by = {int(http_get(port)[1].split()[0]) for _ in range(10)}
                assert served_by <= green_workers
            assert blue_workers
    finally:
        placeholder.close()


# ------------------------------------------------------------------------------ master checks


@pytest.fixture
def cert_pair(tmp_path: Path) -> tuple[Path, Path]:
    import trustme

    cert = trustme.CA().issue_cert("localhost")
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(certfile))
    cert.private_key_pem.write_to_path(str(keyfile))
    return certfile, keyfile


def _shadow(tmp_path: Path, package: str) -> dict[str, str]:
    """Environment in which ``import <package>`` fails as if it were not installed."""
    shadow = tmp_path / f"no-{package}" / package
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text(
        f'raise ModuleNotFoundError("No module named {package!r}", name={package!r})\n'
    )
    return {**os.environ, "PYTHONPATH": str(shadow.parent)}


MASTER_CHECKS = [
    (["--log-config", "/missing.ini"], "logconfig: cannot open '/missing.ini'"),
    (["--log-config", "json:/missing.json"], "logconfig: cannot open '/missing.json'"),
    (["--access-logfile", "/nodir/a.log"], "accesslog: cannot open '/nodir/a.log'"),
    (["--error-logfile", "/nodir/e.log"], "errorlog: cannot open '/nodir/e.log'"),
    (["-k", "uvloop"], "worker_class: the uvloop worker class needs the uvloop package"),
    (["-w", "0", "--reload"], "use_reloader: --reload needs workers"),
    (["-w", "0", "--metrics-bind", "127.0.0.1:0"], "metrics_bind: the master serves /metrics"),
    (["--metrics-bind", "127.0.0.1:0"], "metrics_bind: needs prometheus_client"),
    (["--statsd-host", "localhost"], "argument --statsd-host: expected host:port, got 'localhost'"),
]


@pytest.mark.parametrize(("flags", "message"), MASTER_CHECKS, ids=[m for _, m in MASTER_CHECKS])
def test_errors_that_would_show_in_workers_are_one_line_from_the_master(
    tmp_path: Path, flags: list[str], message: str
) -> None:
    """Checked before forking: one line naming the setting, exit 2, no worker started (item 6)."""
    write_app(tmp_path)
    env = None
    if "uvloop" in flags:
        env = _shadow(tmp_path, "uvloop")
    elif "needs prometheus_client" in message:
        env = _shadow(tmp_path, "prometheus_client")
    args = ["-w", "2", "-b", "127.0.0.1:0", *flags, "app:app"]
    result = hypercorn_cli(args, cwd=tmp_path, env=env)
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"hypercorn: error: {message}")


def test_trio_worker_class_is_accepted() -> None:
    """The master's check lets -k trio through now that its backend exists (with trio)."""
    pytest.importorskip("trio")
    from hypercorn.workers import unavailable_reason

    assert unavailable_reason("trio") is None


# ------------------------------------------------------------------------------ -u / -g

UID_APP = """
import os

async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        return
    body = f"{os.getuid()} {os.getgid()}".encode()
    headers = [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
"""

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown and setuid need root")


@pytest.fixture
def nobody() -> tuple[int, int]:
    import pwd

    try:
        entry = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no 'nobody' user")
    return entry.pw_uid, entry.pw_gid


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path: unix socket paths are limited to ~107 bytes."""
    path = Path(tempfile.mkdtemp(prefix="hc-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _unix_get(path: Path) -> str:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(str(path))
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    return body.decode()


def _serve_unix(command: list[str], cwd: Path, sock_path: Path) -> tuple[tuple[int, int], str]:
    """Start a server, wait (bounded) for its socket to answer; return (owner, app ids)."""
    log = cwd / f"{sock_path.stem}.log"
    with (
        log.open("wb") as err,
        subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=err) as proc,
    ):
        try:

            def answers() -> str | None:
                if proc.poll() is not None:
                    raise AssertionError(f"server exited: {log.read_text()}")
                try:
                    return _unix_get(sock_path)
                except OSError:
                    return None

            body = wait_for(answers, 20, f"{sock_path} to answer")
            info = sock_path.stat()
            return (info.st_uid, info.st_gid), body
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


@needs_root
@pytest.mark.slow
@pytest.mark.timeout(600)  # the first use of `upstream` may install it
def test_user_and_group_own_the_unix_socket_and_nothing_else(
    upstream: Upstream, short_dir: Path, nobody: tuple[int, int]
) -> None:
    """`-u/-g` chown the unix socket and leave the workers as they are, as upstream (item 1)."""
    (short_dir / "uidapp.py").write_text(UID_APP)
    uid, gid = nobody
    flags = ["-w", "1", "-u", str(uid), "-g", str(gid)]
    theirs = _serve_unix(
        [str(upstream.bin / "hypercorn"), *flags, "-b", f"unix:{short_dir}/up.sock", "uidapp:app"],
        short_dir,
        short_dir / "up.sock",
    )
    ours = _serve_unix(
        [
            sys.executable,
            "-m",
            "hypercorn",
            *flags,
            "-b",
            f"unix:{short_dir}/our.sock",
            "uidapp:app",
        ],
        short_dir,
        short_dir / "our.sock",
    )
    assert theirs == ((uid, gid), "0 0")
    assert ours == theirs


@needs_root
@pytest.mark.slow
def test_worker_user_drops_privileges_and_names_a_permission_failure(
    tmp_path: Path, nobody: tuple[int, int]
) -> None:
    """The explicit setting switches the workers; an app they cannot read is reported as a
    permission problem, not as a missing module."""
    private = tmp_path / "private"
    private.mkdir()
    private.chmod(0o700)
    (private / "uidapp.py").write_text(UID_APP)
    uid, _ = nobody
    result = hypercorn_cli(
        ["-w", "1", "-b", "127.0.0.1:0", "--worker-user", str(uid), "uidapp:app"], cwd=private
    )
    assert result.returncode == 4
    assert "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if "[INFO]" not in line]
    assert line == (
        f"hypercorn: error: cannot import 'uidapp:app': permission denied: {private} cannot be"
        f" read by user 'nobody' (uid {uid})"
    )


@needs_root
@pytest.mark.slow
def test_worker_user_serves_as_that_user(
    short_dir: Path, bound_socket: socket.socket, nobody: tuple[int, int]
) -> None:
    short_dir.chmod(0o755)  # readable by nobody, under the world-readable /tmp
    (short_dir / "uidapp.py").write_text(UID_APP)
    uid, gid = nobody
    args = ["-w", "1", "--worker-user", "nobody", "uidapp:app"]
    with running(args, cwd=short_dir, sock=bound_socket) as server:
        server.wait_ready()
        assert http_get(server.port)[1] == f"{uid} {gid}"


def test_worker_user_without_workers_is_refused(tmp_path: Path) -> None:
    write_app(tmp_path)
    result = hypercorn_cli(["-w", "0", "--worker-user", "nobody", "app:app"], cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "hypercorn: error: worker_user: switching the workers' user needs workers (-w 1 or more)"
    ]


# ------------------------------------------------------------------------------ Running on

LOGGER_CONF = """
from hypercorn.logging import Logger


class FileLogger(Logger):
    async def info(self, message, *args, **kwargs):
        with open("via-logger-class.txt", "a") as file:
            file.write(message % args + "\\n")
        await super().info(message, *args, **kwargs)


logger_class = FileLogger
"""


@pytest.mark.slow
@pytest.mark.parametrize("workers", ["0", "2"])
def test_running_on_goes_through_the_configured_logger_class(
    tmp_path: Path, bound_socket: socket.socket, workers: str
) -> None:
    """ "Running on ..." is logged with -w 0 too, through a custom logger_class's methods, as
    upstream logs it (item 8)."""
    write_app(tmp_path)
    (tmp_path / "conf.py").write_text(LOGGER_CONF)
    port = bound_socket.getsockname()[1]
    expected = f"Running on http://127.0.0.1:{port} (CTRL + C to quit)"
    args = ["-w", workers, "-c", "file:conf.py", "app:app"]
    with running(args, cwd=tmp_path, sock=bound_socket, notify=False) as server:
        wait_for(lambda: expected in server.stderr(), 20, "the Running on line")
        assert http_get(port)[0] == 200
        via_class = (tmp_path / "via-logger-class.txt").read_text().splitlines()
        assert expected in via_class
        assert server.stderr().count("Running on") == 1


def test_asyncio_serve_logs_running_on_after_startup() -> None:
    import asyncio

    from hypercorn.asyncio import serve
    from hypercorn.logging import Logger

    events: list[str] = []

    class ListLogger(Logger):
        async def info(self, message: str, *args: object, **kwargs: object) -> None:
            events.append(message % args)

    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.logger_class = ListLogger
    config.errorlog = None

    async def app(scope: dict[str, object], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await receive()
            events.append("startup")
            await send({"type": "lifespan.startup.complete"})
            await receive()
            await send({"type": "lifespan.shutdown.complete"})

    async def main() -> None:
        stop = asyncio.Event()

        async def watch() -> None:
            while not any(e.startswith("Running on") for e in events):
                await asyncio.sleep(0.01)
            stop.set()

        watcher = asyncio.ensure_future(watch())
        await asyncio.wait_for(serve(app, config, shutdown_trigger=stop.wait), 10)
        await watcher

    asyncio.run(main())
    assert events[0] == "startup"
    assert events[1].startswith("Running on http://127.0.0.1:")
    assert events[1].endswith(" (CTRL + C to quit)")


@pytest.mark.slow
def test_no_running_on_before_an_app_load_error(tmp_path: Path) -> None:
    (tmp_path / "broken.py").write_text("raise RuntimeError('boom at import')\n")
    for workers in ("0", "2"):
        result = hypercorn_cli(["-w", workers, "-b", "127.0.0.1:0", "broken:app"], cwd=tmp_path)
        assert result.returncode == 4
        assert "boom at import" in result.stderr
        assert "Running on" not in result.stderr


def test_no_running_on_before_a_certificate_error(
    tmp_path: Path, cert_pair: tuple[Path, Path]
) -> None:
    write_app(tmp_path)
    certfile, _ = cert_pair
    tls = ["--certfile", str(certfile), "--keyfile", str(certfile)]  # not a key
    for workers in ("0", "2"):
        result = hypercorn_cli(["-w", workers, "-b", "127.0.0.1:0", *tls, "app:app"], cwd=tmp_path)
        assert result.returncode == 3
        assert "cannot load TLS certificate" in result.stderr
        assert "Running on" not in result.stderr
