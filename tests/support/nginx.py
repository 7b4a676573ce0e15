"""nginx (Debian's package) in front of the server under test, on loopback, for e2e tests.

nginx gets its listening sockets from the test, bound to port 0 and passed as inherited
sockets (the ``NGINX`` environment variable it uses for binary upgrades), so there is no port
race; the config names them by address. Everything else lives in a temp directory: config,
pid file, logs and temp paths. Readiness is nginx's own "start worker process" log line,
waited for with a deadline. The master is stopped by pid at the end (its workers go with it).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.support.procs import children_of, wait_for

NGINX = shutil.which("nginx") or next(
    (path for path in ("/usr/sbin/nginx",) if os.access(path, os.X_OK)), None
)
STREAM_MODULE = Path("/usr/lib/nginx/modules/ngx_stream_module.so")
READY_TIMEOUT = 15.0


def skip_reason(*, stream: bool = False) -> str | None:
    """Why nginx cannot run here (None: it can)."""
    if NGINX is None:
        return "nginx is not installed (.ci/run installs Debian's nginx with apt-get)"
    if stream and not STREAM_MODULE.exists():
        return "nginx's stream module is missing (Debian's libnginx-mod-stream)"
    return None


def address(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"{host}:{port}"


@dataclass
class Nginx:
    process: subprocess.Popen[bytes]
    directory: Path

    def log(self) -> str:
        path = self.directory / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""


@contextlib.contextmanager
def running_nginx(
    directory: Path, listeners: Sequence[socket.socket], *, http: str = "", stream: str = ""
) -> Iterator[Nginx]:
    """nginx with ``http`` and ``stream`` as the bodies of those blocks, inheriting
    ``listeners`` (closed here once nginx has them)."""
    assert NGINX is not None
    d = directory
    temp_paths = "\n".join(
        f"    {kind}_temp_path {d}/temp-{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    config = f"""
{f"load_module {STREAM_MODULE};" if stream else ""}
daemon off;
{"user root;" if os.geteuid() == 0 else ""}
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 512; }}
http {{
    access_log off;
{temp_paths}
{http}
}}
{f"stream {{ {stream} }}" if stream else ""}
"""
    (d / "nginx.conf").write_text(config)
    fds = [sock.fileno() for sock in listeners]
    process = subprocess.Popen(
        [NGINX, "-p", str(d), "-c", str(d / "nginx.conf"), "-e", str(d / "error.log")],
        env={**os.environ, "NGINX": "".join(f"{fd};" for fd in fds)},
        pass_fds=fds,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    for sock in listeners:
        sock.close()
    nginx = Nginx(process, d)
    workers: set[int] = set()

    def started() -> bool:
        assert process.poll() is None, f"nginx exited:\n{nginx.log()}"
        workers.update(children_of(process.pid))
        return "start worker process" in nginx.log()

    try:
        wait_for(started, READY_TIMEOUT, "nginx to start")
        yield nginx
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGQUIT)  # graceful: workers finish, then exit
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            for pid in {process.pid, *workers, *children_of(process.pid)}:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            process.wait(5)
