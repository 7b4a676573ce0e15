"""Benchmark this server against its peers, one server at a time, on loopback.

    python bench/run.py [--quick] [--only NAME,...] [--duration S] [--repeat N]
                        [--python 3.11,3.13]

Standard library only; the servers and load generators are driven through their command
lines. See bench/README.md for what each workload means and how to add one.

Every step is bounded: apt-get and pip have timeouts, a server must accept a connection before a
deadline, the load generator is killed if it overruns, and every process group this script
starts is killed when it ends, including on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import hashlib
import http.client
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PEERS_DIR = BENCH / ".peers"
RESULTS_DIR = BENCH / "results"
LOGS_DIR = RESULTS_DIR / "logs"
THIS_VENV = ROOT / ".venv"

sys.path.insert(0, str(ROOT))
from scripts.interpreters import find_python  # noqa: E402 (stdlib only, beside bench/)

#: The version of the interpreter running this script: peers' venvs for it keep the plain
#: names (bench/.peers/<peer>/); those for another version are bench/.peers/<peer>-py3.X/.
RUNNING = f"{sys.version_info[0]}.{sys.version_info[1]}"

# Pinning: the server gets core 0, the load generator (and this script) core 1. Changed by
# --server-cpu/--load-cpu (e.g. to keep the server off a core that something else occupies).
SERVER_CPUS = "0"
LOAD_CPUS = "1"
ALL_CPUS = "all"  # Workload.server_cpus value: the server core plus the load core

READY_TIMEOUT = 30.0  # seconds for a server to accept a TCP connection
STOP_TIMEOUT = 10.0  # seconds for a graceful stop before SIGKILL to the process group
APT_TIMEOUT = 600.0
PIP_TIMEOUT = 900.0

# --------------------------------------------------------------------------------------------
# Peers: one virtual environment each under bench/.peers/<name>/ (git-ignored), pinned versions.
# Upstream Hypercorn lives only in its own venv, never in the project's .venv.
# --------------------------------------------------------------------------------------------

PEERS: dict[str, tuple[str, ...]] = {
    "hypercorn": ("hypercorn==0.18.0", "uvloop==0.23.0", "trio==0.35.0"),
    "uvicorn": (
        "uvicorn==0.54.0",
        "h11==0.16.0",
        "httptools==0.9.0",
        "uvloop==0.23.0",
        "wsproto==1.3.2",
        "websockets==17.4",
    ),
    "granian": ("granian==2.8.7",),
    # uvicorn's HTTP/2 (--http zttp --http2) needs zttp, a compiled wheel: a venv of its own,
    # so a Python without a zttp wheel loses only this target, not uvicorn's HTTP/1.1 rows.
    "uvicorn-zttp": ("uvicorn==0.54.0", "zttp==0.0.35", "uvloop==0.23.0"),
    "gunicorn": ("gunicorn==27.0.1",),
}

# --------------------------------------------------------------------------------------------
# Workloads: the registry. A workload names an app in bench/apps.py, the protocol the server
# must speak, the load tool that drives it, and how processes are placed on cores.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    name: str
    description: str
    app: str  # "module:attr" in bench/ (PYTHONPATH=bench)
    kind: str  # "asgi" | "wsgi": which servers can run the app
    protocol: str = "h1"  # "h1" | "h2" | "ws": which servers speak it
    tls: bool = False  # https: the servers get bench/.tls/ certificate and key
    tool: str = "wrk"  # key into TOOLS
    path: str = "/"
    expect_body: int = 13  # bytes in a correct response body (checked before measuring)
    connections: int = 64
    extra_args: tuple[str, ...] = ()  # extra load-tool arguments
    workers: int = 1
    server_cpus: str | None = None  # None: SERVER_CPUS; ALL_CPUS: SERVER_CPUS + LOAD_CPUS
    load_cpus: str | None = None  # None: LOAD_CPUS
    default: bool = True
    baseline: str | None = None  # workload this one is compared to (e.g. -w 2 vs -w 1)


WORKLOADS: list[Workload] = [
    Workload(
        name="h1-keepalive",
        description="HTTP/1.1 keep-alive, 13-byte ASGI hello, wrk -t1 -c64",
        app="apps:hello",
        kind="asgi",
    ),
    Workload(
        name="h1-keepalive-unique",
        description=(
            "as h1-keepalive, every request with its own path, query, cookie and user agent "
            "(wrk -s unique_targets.lua): no head is seen twice"
        ),
        app="apps:hello",
        kind="asgi",
        extra_args=("-s", str(BENCH / "unique_targets.lua")),
    ),
    Workload(
        name="h1-close",
        description="HTTP/1.1 new connection per request (wrk -H 'Connection: close')",
        app="apps:hello",
        kind="asgi",
        extra_args=("-H", "Connection: close"),
    ),
    Workload(
        name="h1-stream-100k",
        description="HTTP/1.1 keep-alive, 100 KB ASGI response streamed in 10 KB chunks",
        app="apps:stream",
        kind="asgi",
        expect_body=102_400,
    ),
    Workload(
        name="wsgi-hello",
        description="HTTP/1.1 keep-alive, 13-byte WSGI hello",
        app="apps:wsgi_hello",
        kind="wsgi",
    ),
    Workload(
        name="h1-keepalive-w2",
        description=(
            "as h1-keepalive with 2 workers; server may use cores 0+1, wrk stays on core 1 "
            "(shares it with one worker)"
        ),
        app="apps:hello",
        kind="asgi",
        workers=2,
        server_cpus=ALL_CPUS,
        baseline="h1-keepalive",
    ),
    Workload(
        name="ws-echo",
        description=(
            "WebSocket echo, 64 connections, 32-byte text messages, each connection sends its "
            "next when the echo arrives (Node ws client, no compression); rate = echoes/s"
        ),
        app="apps:ws_echo",
        kind="asgi",
        protocol="ws",
        tool="ws-echo",
        path="/ws",
    ),
    Workload(
        name="h2c-hello",
        description=(
            "HTTP/2 cleartext with prior knowledge (h2c), 13-byte ASGI hello, rounds of "
            "h2load -t1 -c10 -m10 -n 40000 (4,000 streams per connection) for the duration; "
            "p50/p99 from h2load's per-request log"
        ),
        app="apps:hello",
        kind="asgi",
        protocol="h2",
        tool="h2load",
        connections=10,
        extra_args=("-m10",),
    ),
    Workload(
        name="h2-tls-hello",
        description="as h2c-hello over TLS, HTTP/2 chosen by ALPN (self-signed P-256 certificate)",
        app="apps:hello",
        kind="asgi",
        protocol="h2",
        tls=True,
        tool="h2load",
        connections=10,
        extra_args=("-m10",),
    ),
]

# --------------------------------------------------------------------------------------------
# Targets: the servers. command(app, port, workers) returns argv; argv[0] is resolved in the
# target's environment ("this" = the project's .venv, otherwise bench/.peers/<env>/).
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    name: str
    label: str
    env: str
    kinds: frozenset[str]
    command: Callable[[str, int, int], list[str]]
    protocols: frozenset[str] = frozenset({"h1"})
    workloads: frozenset[str] | None = None  # restrict to these workloads (None: all it can)
    default: bool = True
    #: A peer on the same event loop: the "same loop" table gives this target ÷ that one.
    versus: str | None = None
    #: Arguments appended for HTTP/2 workloads (e.g. granian's ``--http 2``).
    h2_args: tuple[str, ...] = ()
    #: (certificate flag, key flag) appended, with bench/.tls/'s files, for TLS workloads.
    tls_flags: tuple[str, str] = ("--certfile", "--keyfile")

    def supports(self, workload: Workload) -> bool:
        return (
            workload.kind in self.kinds
            and workload.protocol in self.protocols
            and (self.workloads is None or workload.name in self.workloads)
        )


def _hypercorn(worker_class: str) -> Callable[[str, int, int], list[str]]:
    def command(app: str, port: int, workers: int) -> list[str]:
        return [
            "hypercorn",
            "--worker-class",
            worker_class,
            "--workers",
            str(workers),
            "--bind",
            f"127.0.0.1:{port}",
            "--log-level",
            "warning",
            app,
        ]

    return command


def _uvicorn(http: str, loop: str) -> Callable[[str, int, int], list[str]]:
    def command(app: str, port: int, workers: int) -> list[str]:
        return [
            "uvicorn",
            "--http",
            http,
            "--loop",
            loop,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--log-level",
            "warning",
            "--no-access-log",
            app,
        ]

    return command


def _granian(interface: str) -> Callable[[str, int, int], list[str]]:
    def command(app: str, port: int, workers: int) -> list[str]:
        return [
            "granian",
            "--interface",
            interface,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--log-level",
            "warning",
            app,
        ]

    return command


def _uvicorn_ws(ws: str) -> Callable[[str, int, int], list[str]]:
    def command(app: str, port: int, workers: int) -> list[str]:
        return [*_uvicorn("httptools", "uvloop")(app, port, workers), "--ws", ws]

    return command


def _granian_any(app: str, port: int, workers: int) -> list[str]:
    interface = "wsgi" if app == "apps:wsgi_hello" else "asgi"
    return _granian(interface)(app, port, workers)


def _gunicorn_gthread(app: str, port: int, workers: int) -> list[str]:
    return [
        "gunicorn",
        "--worker-class",
        "gthread",
        "--threads",
        "4",
        "--workers",
        str(workers),
        "--bind",
        f"127.0.0.1:{port}",
        "--log-level",
        "warning",
        app,
    ]


def _raw_uvloop(app: str, port: int, workers: int) -> list[str]:
    return ["python", str(BENCH / "raw_uvloop.py"), str(port), str(workers)]


def _uvicorn_zttp(app: str, port: int, workers: int) -> list[str]:
    return [*_uvicorn("zttp", "uvloop")(app, port, workers), "--http2"]


def _this_h2_engine(app: str, port: int, workers: int) -> list[str]:
    return [*_hypercorn("uvloop")(app, port, workers), "--h2-engine", "h2"]


def _this_metrics(*flags: str) -> Callable[[str, int, int], list[str]]:
    """This server with metrics on: "this ÷ server" is then what they cost (issue 16)."""

    def command(app: str, port: int, workers: int) -> list[str]:
        return [*_hypercorn("uvloop")(app, port, workers), *flags]

    return command


ASGI_WSGI = frozenset({"asgi", "wsgi"})
H1_WS = frozenset({"h1", "ws"})
H1_WS_H2 = frozenset({"h1", "ws", "h2"})
#: keep_alive_max_requests lifted for this server and upstream Hypercorn alike: at its default
#: (1000) both send GOAWAY after 1000 streams, and h2load does not reconnect.
H2_CONFIG = ("--config", str(BENCH / "h2_config.toml"))
TARGETS: list[Target] = [
    Target(
        "this",
        "this server (uvloop)",
        "this",
        ASGI_WSGI,
        _hypercorn("uvloop"),
        protocols=H1_WS_H2,
        h2_args=H2_CONFIG,
    ),
    Target(
        "this-h2-engine",
        "this server (uvloop, --h2-engine h2)",
        "this",
        frozenset({"asgi"}),
        _this_h2_engine,
        protocols=frozenset({"h2"}),
        h2_args=H2_CONFIG,
        default=False,
    ),
    Target(
        "this-statsd",
        "this server (uvloop, --statsd-host)",
        "this",
        ASGI_WSGI,
        # (Nobody listens on 8125: the datagrams still leave, as to a real statsd.)
        _this_metrics("--statsd-host", "127.0.0.1:8125"),
        default=False,
    ),
    Target(
        "this-prometheus",
        "this server (uvloop, --metrics-bind)",
        "this",
        ASGI_WSGI,
        _this_metrics("--metrics-bind", "127.0.0.1:0"),
        default=False,
    ),
    Target(
        "this-asyncio",
        "this server (asyncio)",
        "this",
        ASGI_WSGI,
        _hypercorn("asyncio"),
        default=False,
    ),
    Target(
        "this-trio",
        "this server (trio)",
        "this",
        ASGI_WSGI,
        _hypercorn("trio"),
        default=False,
        versus="hypercorn-trio",
    ),
    Target(
        "hypercorn",
        "hypercorn 0.18 (uvloop)",
        "hypercorn",
        ASGI_WSGI,
        _hypercorn("uvloop"),
        protocols=H1_WS_H2,
        h2_args=H2_CONFIG,
    ),
    Target(
        "hypercorn-trio",
        "hypercorn 0.18 (trio)",
        "hypercorn",
        ASGI_WSGI,
        _hypercorn("trio"),
        default=False,
    ),
    Target(
        "uvicorn-h11",
        "uvicorn (h11, asyncio)",
        "uvicorn",
        frozenset({"asgi"}),
        _uvicorn("h11", "asyncio"),
    ),
    Target(
        "uvicorn-httptools",
        "uvicorn (httptools, uvloop)",
        "uvicorn",
        frozenset({"asgi"}),
        _uvicorn("httptools", "uvloop"),
    ),
    Target(
        "granian",
        "granian",
        "granian",
        ASGI_WSGI,
        _granian_any,
        protocols=H1_WS_H2,
        h2_args=("--http", "2"),
        tls_flags=("--ssl-certificate", "--ssl-keyfile"),
    ),
    Target(
        "uvicorn-zttp",
        "uvicorn (zttp --http2, uvloop)",
        "uvicorn-zttp",
        frozenset({"asgi"}),
        _uvicorn_zttp,
        protocols=frozenset({"h2"}),
        tls_flags=("--ssl-certfile", "--ssl-keyfile"),
    ),
    Target(
        "uvicorn-wsproto",
        "uvicorn (--ws wsproto, httptools, uvloop)",
        "uvicorn",
        frozenset({"asgi"}),
        _uvicorn_ws("wsproto"),
        protocols=frozenset({"ws"}),
    ),
    Target(
        "uvicorn-ws-sansio",
        "uvicorn (--ws websockets-sansio, httptools, uvloop)",
        "uvicorn",
        frozenset({"asgi"}),
        _uvicorn_ws("websockets-sansio"),
        protocols=frozenset({"ws"}),
    ),
    Target(
        "gunicorn-gthread",
        "gunicorn gthread (4 threads)",
        "gunicorn",
        frozenset({"wsgi"}),
        _gunicorn_gthread,
    ),
    Target(
        "raw-uvloop",
        "raw uvloop Protocol (ceiling, no parsing)",
        "this",
        frozenset({"asgi"}),
        _raw_uvloop,
        workloads=frozenset({"h1-keepalive", "h1-keepalive-w2"}),
        default=False,
    ),
]
THIS = "this"

# --------------------------------------------------------------------------------------------
# Process handling: every child runs in its own session (process group); all are killed on exit.
# --------------------------------------------------------------------------------------------

_LIVE: set[subprocess.Popen[bytes]] = set()
_LIVE_LOCK = threading.Lock()


def _spawn(argv: Sequence[str], **kwargs: object) -> subprocess.Popen[bytes]:
    proc: subprocess.Popen[bytes] = subprocess.Popen(list(argv), start_new_session=True, **kwargs)
    with _LIVE_LOCK:
        _LIVE.add(proc)
    return proc


def _killpg(proc: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _stop(proc: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM the group, wait (bounded), then SIGKILL whatever is left of the group."""
    if proc.poll() is None:
        _killpg(proc, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
    _killpg(proc, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)
    with _LIVE_LOCK:
        _LIVE.discard(proc)


def _kill_all() -> None:
    with _LIVE_LOCK:
        procs = list(_LIVE)
    for proc in procs:
        _killpg(proc, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
    with _LIVE_LOCK:
        _LIVE.clear()


def _run(argv: Sequence[str], timeout: float, **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Run to completion in its own process group; the whole group dies on timeout/Ctrl-C."""
    proc = _spawn(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kwargs)
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        _stop(proc, timeout=0)
    return subprocess.CompletedProcess(list(argv), proc.returncode, out.decode(errors="replace"))


def _on_signal(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


# --------------------------------------------------------------------------------------------
# Setup: load tools from apt, peers into their own venvs.
# --------------------------------------------------------------------------------------------

TOOL_PACKAGES = {
    "wrk": "wrk",
    "h2load": "nghttp2-client",
    "curl": "curl",
    "openssl": "openssl",
    "node": "nodejs",
    "npm": "npm",
}
_apt_updated = False


def ensure_tool(binary: str) -> str:
    global _apt_updated
    found = shutil.which(binary)
    if found:
        return found
    package = TOOL_PACKAGES[binary]
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    log(f"installing {package} with apt-get (for {binary})")
    if not _apt_updated:
        _run([*sudo, "apt-get", "update", "-q"], APT_TIMEOUT, env=env)
        _apt_updated = True
    result = _run([*sudo, "apt-get", "install", "-y", "-q", package], APT_TIMEOUT, env=env)
    found = shutil.which(binary)
    if not found:
        raise SetupError(f"could not install {package}: {result.stdout[-2000:]}")
    return found


class SetupError(Exception):
    pass


def venv_version(venv: Path) -> str | None:
    """ "3.11" for a venv made by CPython 3.11 (from its pyvenv.cfg), None if there is none."""
    with contextlib.suppress(OSError):
        for line in (venv / "pyvenv.cfg").read_text().splitlines():
            key, _, value = line.partition("=")
            if key.strip() in ("version", "version_info"):
                return ".".join(value.strip().split(".")[:2])
    return None


def env_dir(env: str, python: str) -> Path:
    """The venv of ``env`` ("this" or a PEERS key) for Python ``python`` ("3.13"): this server
    runs from the project's .venv when that is of the version asked for, else from a venv of
    its own with the project installed (editable) and the extras the rows use."""
    if env == THIS and venv_version(THIS_VENV) == python:
        return THIS_VENV
    if env != THIS and python == RUNNING:
        return PEERS_DIR / env
    return PEERS_DIR / f"{env}-py{python}"


def env_bin(env: str, python: str) -> Path:
    return env_dir(env, python) / "bin"


def _requirements(env: str) -> tuple[str, ...]:
    if env != THIS:
        return PEERS[env]
    # The project's dependencies are in pyproject.toml: the stamp changes when it does.
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()[:12]
    # (trio for this-trio; metrics for this-prometheus.)
    return ("-e", f"{ROOT}[fast,uvloop,trio,metrics]", f"# pyproject.toml {digest}")


def ensure_env(env: str, python: str, install: bool) -> dict[str, str]:
    """Create or reuse the venv of ``env`` for ``python``; return {distribution: version},
    with the interpreter's own version under "python"."""
    venv = env_dir(env, python)
    if venv == THIS_VENV:
        if not (venv / "bin" / "hypercorn").exists():
            raise SetupError("no .venv/bin/hypercorn: run `make .venv/.installed` first")
        return distribution_versions(venv / "bin" / "python", ["hypercorn"])
    requirements = _requirements(env)
    stamp = venv / ".bench-requirements"
    wanted = "\n".join(requirements) + "\n"
    python_exe = venv / "bin" / "python"
    if not (python_exe.exists() and stamp.exists() and stamp.read_text() == wanted):
        if not install:
            raise SetupError(f"venv {venv} missing or stale and --no-install given")
        if python == RUNNING:
            base: str | None = getattr(sys, "_base_executable", sys.executable)
        else:
            base = find_python(python)
        if base is None:
            raise SetupError(f"no Python {python} on PATH or under pyenv")
        log(f"creating {venv.relative_to(ROOT)} (Python {python}) with {' '.join(requirements)}")
        if venv.exists():
            shutil.rmtree(venv)
        result = _run([base, "-m", "venv", str(venv)], 120)
        if result.returncode:
            raise SetupError(f"venv creation failed for {env}: {result.stdout[-2000:]}")
        result = _run(
            [
                str(python_exe),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                *(r for r in requirements if not r.startswith("#")),
            ],
            PIP_TIMEOUT,
        )
        if result.returncode:
            raise SetupError(f"pip install failed for {env}: {result.stdout[-3000:]}")
        stamp.write_text(wanted)
    if env == THIS:
        return distribution_versions(python_exe, ["hypercorn"])
    return distribution_versions(python_exe, [r.split("==")[0] for r in requirements])


def distribution_versions(python: Path, names: Sequence[str]) -> dict[str, str]:
    code = (
        "import importlib.metadata as m, json, platform, sys\n"
        "out = {'python': platform.python_version()}\n"
        "for n in sys.argv[1:]:\n"
        "    try: out[n] = m.version(n)\n"
        "    except m.PackageNotFoundError: out[n] = 'missing'\n"
        "print(json.dumps(out))\n"
    )
    result = _run([str(python), "-c", code, *names], 60)
    try:
        return dict(json.loads(result.stdout.strip().splitlines()[-1]))
    except (ValueError, IndexError):
        return {}


# --------------------------------------------------------------------------------------------
# Measurement helpers: /proc sampling for RSS and CPU accounting.
# --------------------------------------------------------------------------------------------

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def _ppid_map() -> dict[int, int]:
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat[stat.rindex(")") + 2 :].split()[1])
    return parents


def process_tree(root: int) -> list[int]:
    parents = _ppid_map()
    tree = [root]
    i = 0
    while i < len(tree):
        tree.extend(pid for pid, ppid in parents.items() if ppid == tree[i])
        i += 1
    return tree


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def worker_pids(root: int) -> list[int]:
    """The processes that serve requests: the root's descendants, or the root if it has none.

    multiprocessing helper processes (resource tracker) are not workers."""
    tree = process_tree(root)
    workers = [
        pid
        for pid in tree[1:]
        if "resource_tracker" not in _cmdline(pid) and "semaphore_tracker" not in _cmdline(pid)
    ]
    return workers or [root]


def rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def cpu_seconds(pid: int) -> float:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def core_busy(cpu: str) -> float:
    """Process (user + nice + system) CPU seconds of one core since boot."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{cpu} "):
            user, nice, system = (int(v) for v in line.split()[1:4])
            return (user + nice + system) / CLK_TCK
    return 0.0


def machine_cpu() -> tuple[float, float, float]:
    """(process, irq, steal) CPU seconds summed over all cores since boot, from /proc/stat.

    Loopback traffic is processed in softirq context, which the kernel does not charge to the
    server or wrk, so it is kept apart from "other processes"."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = values[:8]
    return (user + nice + system) / CLK_TCK, (irq + softirq) / CLK_TCK, steal / CLK_TCK


CALIBRATION_CODE = (
    "import time\n"
    "best = None\n"
    "for _ in range(3):\n"
    "    t = time.perf_counter(); s = 0\n"
    "    for i in range(1_000_000): s += i\n"
    "    d = time.perf_counter() - t\n"
    "    best = d if best is None else min(best, d)\n"
    "print(best * 1000)\n"
)


def server_cpus(workload: Workload) -> str:
    if workload.server_cpus == ALL_CPUS:
        return f"{SERVER_CPUS},{LOAD_CPUS}"
    return workload.server_cpus or SERVER_CPUS


def load_cpus(workload: Workload) -> str:
    return workload.load_cpus or LOAD_CPUS


def calibrate(cpus: str) -> float | None:
    """Milliseconds for a fixed pure-Python loop on the server's core (lower is faster).

    These machines are virtual: the speed of a core drifts with load on the host, by 20% and
    more within minutes. Recording this next to every run shows when a slow run was a slow
    machine rather than a slow server."""
    cpu = cpus.split(",")[0]
    try:
        out = _run(["taskset", "-c", cpu, sys.executable, "-c", CALIBRATION_CODE], 30).stdout
        return round(float(out.strip().splitlines()[-1]), 1)
    except (subprocess.TimeoutExpired, ValueError, IndexError):
        return None


class Sampler(threading.Thread):
    """Samples worker RSS every 0.25 s while the load runs; keeps the largest sample."""

    def __init__(self, root: int) -> None:
        super().__init__(daemon=True)
        self.root = root
        self.stop_event = threading.Event()
        self.max_sum = 0
        self.per_worker: list[int] = []
        self.workers = 0
        self.total_tree = 0

    def sample(self) -> None:
        workers = worker_pids(self.root)
        values = [rss_bytes(pid) for pid in workers]
        if sum(values) >= self.max_sum:
            self.max_sum = sum(values)
            self.per_worker = values
            self.workers = len(workers)
            self.total_tree = sum(rss_bytes(pid) for pid in process_tree(self.root))

    def run(self) -> None:
        while not self.stop_event.wait(0.25):
            self.sample()


# --------------------------------------------------------------------------------------------
# Load tools. A tool is a function (workload, url, duration) -> LoadResult. Add h2load / a
# WebSocket echo client here and reference it from a Workload's `tool`.
# --------------------------------------------------------------------------------------------


@dataclass
class LoadResult:
    rate: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    requests: int = 0
    errors: int = 0
    error_detail: str = ""
    raw: str = ""


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def _ms(value: str, unit: str) -> float:
    return float(value) * _UNITS[unit]


def parse_wrk(out: str) -> LoadResult:
    result = LoadResult(raw=out)
    if m := re.search(r"Requests/sec:\s*([\d.]+)", out):
        result.rate = float(m.group(1))
    for pct, attr in (("50", "p50_ms"), ("99", "p99_ms")):
        if m := re.search(rf"^\s*{pct}(?:\.0+)?%\s+([\d.]+)(us|ms|s|m|h)\s*$", out, re.M):
            setattr(result, attr, _ms(m.group(1), m.group(2)))
    if m := re.search(r"(\d+) requests in", out):
        result.requests = int(m.group(1))
    details = []
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        counts = dict(
            zip(("connect", "read", "write", "timeout"), map(int, m.groups()), strict=True)
        )
        result.errors += sum(counts.values())
        details.extend(f"{k} {v}" for k, v in counts.items() if v)
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        result.errors += int(m.group(1))
        details.append(f"non-2xx {m.group(1)}")
    result.error_detail = ", ".join(details)
    return result


def run_wrk(workload: Workload, url: str, duration: float) -> LoadResult:
    wrk = ensure_tool("wrk")
    argv = [
        "taskset",
        "-c",
        load_cpus(workload),
        wrk,
        "-t1",
        f"-c{workload.connections}",
        f"-d{max(1, round(duration))}s",
        "--latency",
        *workload.extra_args,
        url,
    ]
    result = _run(argv, timeout=duration + 30)
    parsed = parse_wrk(result.stdout)
    if result.returncode and parsed.rate is None:
        parsed.error_detail = f"wrk exited {result.returncode}: {result.stdout[-500:]}"
    return parsed


NODE_DIR = BENCH / ".node"
#: The Node WebSocket client library, installed with npm into bench/.node/ (git-ignored).
NODE_WS = "ws@8.23.0"


def ensure_node_ws() -> str:
    node = shutil.which("node")
    if node is None:
        ensure_tool("node")  # (apt-get install nodejs npm when missing and allowed)
        node = shutil.which("node")
        if node is None:
            raise SetupError("node not found")
    stamp = NODE_DIR / ".installed"
    if not stamp.is_file() or stamp.read_text() != NODE_WS:
        NODE_DIR.mkdir(parents=True, exist_ok=True)
        npm = shutil.which("npm") or ensure_tool("npm")
        done = _run([npm, "install", "--no-save", "--prefix", str(NODE_DIR), NODE_WS], PIP_TIMEOUT)
        if done.returncode:
            raise SetupError(f"npm install {NODE_WS} failed: {done.stdout[-500:]}")
        stamp.write_text(NODE_WS)
    return node


def run_ws_echo(workload: Workload, url: str, duration: float) -> LoadResult:
    """bench/ws_echo.js: echoes per second over ``workload.connections`` WebSockets."""
    node = ensure_node_ws()
    ws_url = "ws" + url[len("http") :]
    argv = [
        "taskset",
        "-c",
        load_cpus(workload),
        node,
        str(BENCH / "ws_echo.js"),
        ws_url,
        str(workload.connections),
        str(max(1, round(duration))),
    ]
    env = dict(os.environ, NODE_PATH=str(NODE_DIR / "node_modules"))
    done = _run(argv, timeout=duration + 40, env=env)
    result = LoadResult(raw=done.stdout)
    try:
        data = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        result.error_detail = f"ws_echo.js exited {done.returncode}: {done.stdout[-500:]}"
        return result
    result.rate = data.get("rate")
    result.p50_ms = data.get("p50_ms")
    result.p99_ms = data.get("p99_ms")
    result.requests = int(data.get("echoes") or 0)
    result.errors = int(data.get("errors") or 0)
    if data.get("open", workload.connections) < workload.connections:
        result.error_detail = f"only {data.get('open')} of {workload.connections} connected"
    elif result.errors:
        result.error_detail = f"{result.errors} errors"
    return result


#: Requests per h2load run: with -c10, 4,000 streams per connection, under the 4,096 at which
#: uvicorn's zttp HTTP/2 resets (issue 13). Runs shorter than 10 s (warm-up, --quick) use
#: H2LOAD_ROUND_SHORT so that one round of the slowest server stays short.
H2LOAD_ROUND = 40_000
H2LOAD_ROUND_SHORT = 10_000
#: Seconds one h2load round may take before it is killed (40,000 requests at 500 req/s).
H2LOAD_ROUND_TIMEOUT = 80.0


def parse_h2load(out: str) -> tuple[LoadResult, float]:
    """One h2load run's summary and its elapsed seconds (0.0: no summary in ``out``);
    rate = succeeded requests / h2load's own elapsed time."""
    result = LoadResult(raw=out)
    m = re.search(r"finished in ([\d.]+)(us|ms|s|m|h), ([\d.]+) req/s", out)
    counts = re.search(
        r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, "
        r"(\d+) errored, (\d+) timeout",
        out,
    )
    if m is None or counts is None:
        return result, 0.0
    total, done, succeeded, failed, errored, timeout = map(int, counts.groups())
    elapsed_s = _ms(m.group(1), m.group(2)) / 1000
    result.requests = succeeded
    result.rate = succeeded / elapsed_s if elapsed_s > 0 else None
    result.errors = total - succeeded
    details = [f"{n} {k}" for k, n in (("failed", failed), ("errored", errored)) if n]
    details += [f"{n} timeout" for n in (timeout,) if n]
    if total > done:
        details.append(f"{total - done} not done")
    if status := re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out):
        non_2xx = sum(map(int, status.groups()[1:]))
        if non_2xx:
            details.append(f"non-2xx {non_2xx}")
    result.error_detail = ", ".join(details)
    return result, elapsed_s


def _latency_percentiles(logs: Sequence[Path]) -> tuple[float | None, float | None]:
    """p50/p99 in ms from h2load --log-file lines (start µs, status, µs to the response end)."""
    latencies = []
    for path in logs:
        with contextlib.suppress(OSError), path.open() as f:
            for line in f:
                fields = line.split("\t")
                if len(fields) >= 3:
                    latencies.append(int(fields[2]))
    if not latencies:
        return None, None
    latencies.sort()
    n = len(latencies)
    return latencies[n // 2] / 1000, latencies[min(n - 1, n * 99 // 100)] / 1000


def run_h2load(workload: Workload, url: str, duration: float) -> LoadResult:
    """Rounds of ``h2load -t1 -c<connections> <extra_args> -n <round>`` until ``duration`` has
    passed (at least one): each round opens new connections, so none carries more streams than
    a round gives it. The rate is the succeeded requests over h2load's summed elapsed times."""
    h2load = ensure_tool("h2load")
    per_round = H2LOAD_ROUND if duration >= 10 else H2LOAD_ROUND_SHORT
    total = LoadResult()
    elapsed_s = 0.0
    outputs = []
    with tempfile.TemporaryDirectory(prefix="bench-h2load-") as tmp:
        logs: list[Path] = []
        deadline = time.monotonic() + duration
        while not logs or time.monotonic() < deadline:
            logs.append(Path(tmp) / f"round-{len(logs)}.log")
            argv = [
                "taskset",
                "-c",
                load_cpus(workload),
                h2load,
                "-t1",
                f"-c{workload.connections}",
                *workload.extra_args,
                f"-n{per_round}",
                f"--log-file={logs[-1]}",
                url,
            ]
            done = _run(argv, timeout=H2LOAD_ROUND_TIMEOUT)
            outputs.append(done.stdout)
            one, one_elapsed = parse_h2load(done.stdout)
            if one.rate is None:
                total.error_detail = f"h2load exited {done.returncode}: {done.stdout[-500:]}"
                break
            elapsed_s += one_elapsed
            total.requests += one.requests
            total.errors += one.errors
            if one.error_detail:  # counted, as wrk's errors are; the first is kept to read
                total.error_detail = total.error_detail or f"round {len(logs)}: {one.error_detail}"
        total.raw = "\n".join(outputs)
        if total.requests and elapsed_s > 0 and one.rate is not None:
            total.rate = total.requests / elapsed_s
            total.p50_ms, total.p99_ms = _latency_percentiles(logs)
    return total


TOOLS: dict[str, Callable[[Workload, str, float], LoadResult]] = {
    "wrk": run_wrk,
    "ws-echo": run_ws_echo,
    "h2load": run_h2load,
}
TOOL_BINARIES = {"wrk": "wrk", "ws-echo": "node", "h2load": "h2load"}

# --------------------------------------------------------------------------------------------
# One run: start server pinned, wait, verify, warm up, measure, stop.
# --------------------------------------------------------------------------------------------


@dataclass
class RunResult:
    workload: str
    target: str
    label: str
    repeat: int
    python: str = RUNNING  # the server's interpreter, "3.13"
    ok: bool = False
    error: str = ""
    rate: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    requests: int = 0
    errors: int = 0
    error_detail: str = ""
    worker_rss_mb: float | None = None  # mean over workers of the peak sample
    workers_seen: int = 0
    tree_rss_mb: float | None = None  # all processes incl. master, at the same sample
    server_cpu: float | None = None  # server CPU seconds / wall seconds during measurement
    foreign_cpu: float | None = None  # other processes' CPU (cores) during measurement
    steal: float | None = None  # hypervisor steal (cores) during measurement
    irq: float | None = None  # irq + softirq (cores): mostly loopback packet processing
    foreign_on_server_core: float | None = None  # other processes on the server's core
    loadavg_before: str = ""
    calib_ms: list[float | None] = field(default_factory=list)  # before, after
    idle_waited: float = 0.0  # seconds spent waiting for other processes to go quiet
    attempts: int = 1
    argv: list[str] = field(default_factory=list)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(proc: subprocess.Popen[bytes], port: int, deadline: float) -> str | None:
    """Connect-retry until the port accepts; returns an error string or None."""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return f"server exited with {proc.returncode} before accepting connections"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return None
        except OSError:
            time.sleep(0.05)
    return f"server did not accept connections within {READY_TIMEOUT:.0f}s"


TLS_DIR = BENCH / ".tls"


def ensure_tls() -> tuple[Path, Path]:
    """A self-signed P-256 certificate for 127.0.0.1 in bench/.tls/ (git-ignored), made once
    with the openssl command line."""
    cert, key = TLS_DIR / "cert.pem", TLS_DIR / "key.pem"
    if cert.is_file() and key.is_file():
        return cert, key
    openssl = ensure_tool("openssl")
    TLS_DIR.mkdir(parents=True, exist_ok=True)
    done = _run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "3650",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        60,
    )
    if done.returncode or not cert.is_file():
        raise SetupError(f"openssl could not make a certificate: {done.stdout[-1000:]}")
    return cert, key


def verify_h2(port: int, workload: Workload) -> str | None:
    """One real HTTP/2 request with curl (prior knowledge, or ALPN over TLS): status 200, the
    expected body length, and HTTP/2 actually spoken."""
    curl = ensure_tool("curl")
    scheme, mode = ("https", "--http2") if workload.tls else ("http", "--http2-prior-knowledge")
    argv = [
        curl,
        "-sS",
        "-k",
        mode,
        "--max-time",
        "5",
        "-o",
        os.devnull,
        "-w",
        "%{http_code} %{size_download} %{http_version}",
        f"{scheme}://127.0.0.1:{port}{workload.path}",
    ]
    deadline = time.monotonic() + 10
    last = ""
    while time.monotonic() < deadline:
        out = _run(argv, timeout=10).stdout.strip()
        if out == f"200 {workload.expect_body} 2":
            return None
        last = f"curl {mode} GET {workload.path}: {out!r} (want '200 {workload.expect_body} 2')"
        time.sleep(0.2)
    return last


def verify(port: int, workload: Workload) -> str | None:
    """One real request before measuring: status 200 and the expected body length."""
    if workload.protocol == "h2":
        return verify_h2(port, workload)
    deadline = time.monotonic() + 10
    last = ""
    while time.monotonic() < deadline:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.request("GET", workload.path)
            response = conn.getresponse()
            body = response.read()
            if response.status == 200 and len(body) == workload.expect_body:
                return None
            last = f"GET {workload.path}: status {response.status}, {len(body)} body bytes"
        except (OSError, http.client.HTTPException) as exc:
            last = f"GET {workload.path}: {exc!r}"
        finally:
            conn.close()
        time.sleep(0.2)
    return last


def server_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PYTHONPATH"] = str(BENCH)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_one(
    workload: Workload,
    target: Target,
    python: str,
    repeat: int,
    duration: float,
    warmup: float,
) -> RunResult:
    result = RunResult(workload.name, target.name, target.label, repeat, python)
    argv = target.command(workload.app, port := free_port(), workload.workers)
    if workload.protocol == "h2":
        argv += target.h2_args
    if workload.tls:
        cert, key = ensure_tls()
        argv += [target.tls_flags[0], str(cert), target.tls_flags[1], str(key)]
    executable = env_bin(target.env, python) / argv[0]
    argv = ["taskset", "-c", server_cpus(workload), str(executable), *argv[1:]]
    result.argv = argv
    result.loadavg_before = Path("/proc/loadavg").read_text().strip()
    result.calib_ms.append(calibrate(SERVER_CPUS))
    LOGS_DIR.mkdir(parents=True, exist_ok=True)
    log_path = LOGS_DIR / f"{workload.name}--{target.name}--py{python}--{repeat}.log"
    with log_path.open("wb") as log_file:
        proc = _spawn(argv, cwd=BENCH, env=server_env(), stdout=log_file, stderr=subprocess.STDOUT)
        try:
            return _measure(proc, port, workload, result, duration, warmup)
        except subprocess.TimeoutExpired as exc:
            result.error = f"timed out: {' '.join(map(str, exc.cmd))}"
            return result
        finally:
            _stop(proc)
            result.calib_ms.append(calibrate(SERVER_CPUS))


def _measure(
    proc: subprocess.Popen[bytes],
    port: int,
    workload: Workload,
    result: RunResult,
    duration: float,
    warmup: float,
) -> RunResult:
    error = wait_ready(proc, port, time.monotonic() + READY_TIMEOUT)
    error = error or verify(port, workload)
    if error:
        result.error = error
        return result
    tool = TOOLS[workload.tool]
    url = f"{'https' if workload.tls else 'http'}://127.0.0.1:{port}{workload.path}"
    if warmup > 0:
        tool(workload, url, warmup)
    sampler = Sampler(proc.pid)
    sampler.sample()
    tree = process_tree(proc.pid)
    cpu_before = {pid: cpu_seconds(pid) for pid in tree}
    busy_before, irq_before, steal_before = machine_cpu()
    core_before = core_busy(SERVER_CPUS)
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    sampler.start()
    try:
        load = tool(workload, url, duration)
    finally:
        sampler.stop_event.set()
        sampler.join(timeout=5)
    wall = time.monotonic() - started
    busy_after, irq_after, steal_after = machine_cpu()
    core_after = core_busy(SERVER_CPUS)
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    server_cpu = sum(cpu_seconds(pid) - cpu_before.get(pid, 0.0) for pid in process_tree(proc.pid))
    tool_cpu = (children_after.ru_utime - children_before.ru_utime) + (
        children_after.ru_stime - children_before.ru_stime
    )
    result.server_cpu = server_cpu / wall
    result.foreign_cpu = max(0.0, (busy_after - busy_before) - server_cpu - tool_cpu) / wall
    result.steal = (steal_after - steal_before) / wall
    if server_cpus(workload) == SERVER_CPUS:  # the whole server is on that core
        result.foreign_on_server_core = max(0.0, core_after - core_before - server_cpu) / wall
    result.irq = (irq_after - irq_before) / wall
    result.rate, result.p50_ms, result.p99_ms = load.rate, load.p50_ms, load.p99_ms
    result.requests, result.errors = load.requests, load.errors
    result.error_detail = load.error_detail
    if sampler.workers:
        result.workers_seen = sampler.workers
        result.worker_rss_mb = sampler.max_sum / sampler.workers / 2**20
        result.tree_rss_mb = sampler.total_tree / 2**20
    if proc.poll() is not None:
        result.error = f"server exited with {proc.returncode} during the run"
    elif load.rate is None:
        result.error = load.error_detail or "no rate in load-tool output"
    else:
        result.ok = True
    return result


NOISE_LIMIT = 0.10  # cores used by other processes (plus steal) that marks a run as noisy


def _noise(result: RunResult) -> float:
    return (result.foreign_cpu or 0.0) + (result.steal or 0.0)


def wait_for_quiet(limit: float, deadline_s: float) -> float:
    """Wait (bounded) until the machine is idle: other users' CPU below `limit` cores for two
    consecutive 0.5 s windows. No server of ours is running here, so all busy time is theirs.
    Returns the seconds waited."""
    started = time.monotonic()
    quiet = 0
    while time.monotonic() - started < deadline_s and quiet < 2:
        busy0, _, steal0 = machine_cpu()
        time.sleep(0.5)
        busy1, _, steal1 = machine_cpu()
        quiet = quiet + 1 if (busy1 - busy0 + steal1 - steal0) / 0.5 < limit else 0
    return time.monotonic() - started


def measure_quietly(
    workload: Workload, target: Target, python: str, repeat: int, args: argparse.Namespace
) -> RunResult:
    """run_one, after waiting for an idle machine; a run disturbed by other processes is
    retried (at most args.retries times) and the least disturbed attempt is kept."""
    best: RunResult | None = None
    over_budget = time.monotonic() > args.deadline
    retries = 0 if over_budget else args.retries
    for attempt in range(1 + retries):
        idle_wait = 0.0 if time.monotonic() > args.deadline else args.idle_wait
        waited = wait_for_quiet(NOISE_LIMIT, idle_wait) if idle_wait > 0 else 0.0
        result = run_one(workload, target, python, repeat, args.duration, args.warmup)
        result.idle_waited = round(waited, 1)
        result.attempts = attempt + 1
        if best is None or (result.ok and (not best.ok or _noise(result) < _noise(best))):
            best = result
        if not result.ok or _noise(result) <= NOISE_LIMIT or attempt == retries:
            break
        noise = _noise(result)
        log(f"{workload.name} / {target.name} / {python}: others used {noise:.2f} cores; retrying")
    assert best is not None
    return best


# --------------------------------------------------------------------------------------------
# Reporting.
# --------------------------------------------------------------------------------------------


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass
class Cell:
    """Aggregate of the repeats of one (workload, target)."""

    workload: str
    target: str
    python: str
    label: str
    rate: float | None
    spread: float | None  # (max - min) / median over repeats, None with one repeat
    p50_ms: float | None
    p99_ms: float | None
    worker_rss_mb: float | None
    errors: int
    error: str
    noisy: bool
    per_cpu: float | None = None  # requests per server CPU-second (median over repeats)


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


#: (workload, server, python) -> its cell.
Cells = dict[tuple[str, str, str], Cell]


def aggregate(results: Sequence[RunResult]) -> Cells:
    grouped: dict[tuple[str, str, str], list[RunResult]] = {}
    for r in results:
        grouped.setdefault((r.workload, r.target, r.python), []).append(r)
    cells = {}
    for key, runs in grouped.items():
        good = [r for r in runs if r.ok]
        rates = [r.rate for r in good if r.rate is not None]
        rate = statistics.median(rates) if rates else None
        spread = (max(rates) - min(rates)) / rate if rate and len(rates) > 1 else None
        cells[key] = Cell(
            workload=key[0],
            target=key[1],
            python=key[2],
            label=runs[0].label,
            rate=rate,
            spread=spread,
            p50_ms=_median([r.p50_ms for r in good]),
            p99_ms=_median([r.p99_ms for r in good]),
            worker_rss_mb=_median([r.worker_rss_mb for r in good]),
            errors=sum(r.errors for r in good),
            error="; ".join(sorted({r.error for r in runs if r.error})),
            noisy=any(_noise(r) > NOISE_LIMIT for r in good),
            per_cpu=_median([r.rate / r.server_cpu for r in good if r.rate and r.server_cpu]),
        )
    return cells


def _fmt_rate(rate: float | None) -> str:
    return "—" if rate is None else f"{rate:,.0f}"


def _fmt_ms(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value * 1000:.0f} µs" if value < 1 else f"{value:.2f} ms"


def _fmt_ratio(a: float | None, b: float | None) -> str:
    return "—" if not a or not b else f"{a / b:.2f}x"


def render(
    cells: Cells,
    workloads: Sequence[Workload],
    targets: Sequence[Target],
    pythons: Sequence[str],
    meta: dict[str, object],
) -> str:
    """The Markdown report. Every comparison between servers is made on one interpreter; with
    several (``--python``), a table compares each server with itself across interpreters."""
    peers = meta["peers"]
    assert isinstance(peers, dict)
    lines = [
        f"# Benchmark results — {meta['date']}",
        "",
        *(["**Interrupted: partial results.**", ""] if meta.get("interrupted") else []),
        f"Commit `{meta['commit']}`; {meta['machine']}; servers on Python "
        f"{meta['python']}; {meta['wrk']}.",
        f"Duration {meta['duration']} s per run after {meta['warmup']} s warm-up, "
        f"{meta['repeat']} repeat(s); server on core {SERVER_CPUS}, load generator on core "
        f"{LOAD_CPUS} (see README for -w 2).",
        "",
        "Environments: " + ("; ".join(f"{k}: {v}" for k, v in peers.items()) or "none"),
    ]
    calib = meta.get("calibration_ms")
    if isinstance(calib, dict) and calib:
        lines += [
            "",
            f"Core speed (1M-iteration Python loop on the server core, before and after each "
            f"run): median {calib['median']:.0f} ms, range {calib['min']:.0f}-{calib['max']:.0f} "
            f"ms. A wide range means the host was busy and absolute rates drifted.",
        ]
    lines += [
        "",
        "| workload | server | python | req/s | p50 | p99 | worker RSS | errors | this ÷ server |",
        "|---|---|---|--:|--:|--:|--:|--:|--:|",
    ]
    notes: list[str] = []
    for w in workloads:
        for t in targets:
            for py in pythons:
                cell = cells.get((w.name, t.name, py))
                if cell is None:
                    continue
                this = cells.get((w.name, THIS, py))
                rate = _fmt_rate(cell.rate)
                if cell.spread is not None:
                    rate += f" ±{cell.spread * 50:.0f}%"
                if cell.noisy:
                    rate += " *"
                if cell.rate is None:
                    rate = "failed"
                    notes.append(f"- {w.name} / {t.name} / {py}: {cell.error}")
                rss = "—" if cell.worker_rss_mb is None else f"{cell.worker_rss_mb:.0f} MB"
                ratio = _fmt_ratio(this.rate if this else None, cell.rate)
                lines.append(
                    f"| {w.name} | {cell.label} | {py} | {rate} | {_fmt_ms(cell.p50_ms)} | "
                    f"{_fmt_ms(cell.p99_ms)} | {rss} | {cell.errors:,} | {ratio} |"
                )
    peer_targets = [t for t in targets if t.name != THIS]
    if any((w.name, THIS, py) in cells for w in workloads for py in pythons) and peer_targets:
        lines += ["", "This server's rate ÷ each peer's rate (on the same Python):", ""]
        lines.append("| peer | python | " + " | ".join(w.name for w in workloads) + " |")
        lines.append("|---|---|" + "--:|" * len(workloads))
        for t in peer_targets:
            for py in pythons:
                row = []
                for w in workloads:
                    this, peer = cells.get((w.name, THIS, py)), cells.get((w.name, t.name, py))
                    row.append(_fmt_ratio(this.rate if this else None, peer.rate if peer else None))
                if any(r != "—" for r in row):
                    lines.append(f"| {t.label} | {py} | " + " | ".join(row) + " |")
    pairs = [
        (t, v) for t in targets for v in targets if t.versus is not None and v.name == t.versus
    ]
    if pairs:
        lines += ["", "Same event loop: this server's rate ÷ the peer's (on the same Python):", ""]
        lines.append("| pair | python | " + " | ".join(w.name for w in workloads) + " |")
        lines.append("|---|---|" + "--:|" * len(workloads))
        for t, v in pairs:
            for py in pythons:
                row = []
                for w in workloads:
                    ours, theirs = cells.get((w.name, t.name, py)), cells.get((w.name, v.name, py))
                    row.append(
                        _fmt_ratio(ours.rate if ours else None, theirs.rate if theirs else None)
                    )
                if any(r != "—" for r in row):
                    lines.append(f"| {t.label} ÷ {v.label} | {py} | " + " | ".join(row) + " |")
    if len(pythons) > 1:
        first = pythons[0]
        lines += ["", f"Each server's rate on another Python ÷ its rate on Python {first}:", ""]
        lines.append("| server | python | " + " | ".join(w.name for w in workloads) + " |")
        lines.append("|---|---|" + "--:|" * len(workloads))
        for t in targets:
            for py in pythons[1:]:
                row = []
                for w in workloads:
                    other, base = (
                        cells.get((w.name, t.name, py)),
                        cells.get((w.name, t.name, first)),
                    )
                    row.append(
                        _fmt_ratio(other.rate if other else None, base.rate if base else None)
                    )
                if any(r != "—" for r in row):
                    lines.append(f"| {t.label} | {py} ÷ {first} | " + " | ".join(row) + " |")
    scaled = [w for w in workloads if w.baseline]
    scale_rows = []
    for t in targets:
        for py in pythons:
            row = []
            for w in scaled:
                many = cells.get((w.name, t.name, py))
                one = cells.get((str(w.baseline), t.name, py))
                row.append(_fmt_ratio(many.rate if many else None, one.rate if one else None))
                # Requests per CPU-second the server used: whether each worker added does as
                # much work per core as one alone, whatever core time the load generator took.
                row.append(_fmt_ratio(many.per_cpu if many else None, one.per_cpu if one else None))
            if any(r != "—" for r in row):
                scale_rows.append(f"| {t.label} | {py} | " + " | ".join(row) + " |")
    if scale_rows:
        lines += [
            "",
            "Workers: rate with more workers ÷ rate with one worker, and the same for requests "
            "per CPU-second the server used (1.00x: every worker added does as much per core "
            "as one alone, so with the load generator on a core of its own, N workers would "
            "give about N x that ratio x the one-worker rate):",
            "",
        ]
        header = " | ".join(f"{w.name} ÷ {w.baseline} | per server CPU" for w in scaled)
        lines.append("| server | python | " + header + " |")
        lines.append("|---|---|" + "--:|--:|" * len(scaled))
        lines += scale_rows
    lines += [
        "",
        "Rate is the median over repeats (± half the min-max range when repeated). "
        "Worker RSS is the peak during the run, per worker process. "
        "`*` marks runs where other processes or hypervisor steal used more than 10% of a core.",
    ]
    if notes:
        lines += ["", "Failures:", "", *notes]
    return "\n".join(lines) + "\n"


def metadata(
    args: argparse.Namespace, envs: dict[tuple[str, str], dict[str, str]]
) -> dict[str, object]:
    commit = "unknown"
    with contextlib.suppress(Exception):
        head = _run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], 10).stdout.strip()
        dirty = _run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"], 10
        ).stdout.strip()
        commit = head + ("+dirty" if dirty else "")
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    wrk = "wrk"
    if shutil.which("wrk"):
        out = _run(["wrk", "-v"], 10).stdout
        if m := re.search(r"wrk (\S+)", out):
            wrk = f"wrk {m.group(1)}"
    if shutil.which("h2load"):
        out = _run(["h2load", "--version"], 10).stdout
        if m := re.search(r"nghttp2/(\S+)", out):
            wrk += f", h2load {m.group(1)}"
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit,
        "machine": f"{os.cpu_count()} x {cpu}, Linux {platform.release()}",
        # The servers' interpreters (as their venvs report them; run.py's own if none did).
        "python": ", ".join(
            sorted({v["python"] for v in envs.values() if "python" in v}, key=_version_key)
        )
        or platform.python_version(),
        "wrk": wrk,
        "duration": args.duration,
        "warmup": args.warmup,
        "repeat": args.repeat,
        "server_cpu": SERVER_CPUS,
        "load_cpu": LOAD_CPUS,
        "peers": {
            f"{env} (py{py})": ", ".join(f"{n} {v}" for n, v in vs.items())
            for (env, py), vs in envs.items()
        },
    }


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version))


# --------------------------------------------------------------------------------------------
# Main.
# --------------------------------------------------------------------------------------------


def select(only: str | None) -> tuple[list[Workload], list[Target]]:
    if not only:
        return [w for w in WORKLOADS if w.default], [t for t in TARGETS if t.default]
    names = [n.strip() for n in only.split(",") if n.strip()]
    known_w = {w.name: w for w in WORKLOADS}
    known_t = {t.name: t for t in TARGETS}
    unknown = [n for n in names if n not in known_w and n not in known_t]
    if unknown:
        raise SystemExit(
            f"unknown name(s) {', '.join(unknown)}; workloads: {', '.join(known_w)}; "
            f"servers: {', '.join(known_t)}"
        )
    # Registry order, not command-line order, so tables always read the same way.
    workloads = [w for w in WORKLOADS if w.name in names] or [w for w in WORKLOADS if w.default]
    targets = [t for t in TARGETS if t.name in names] or [t for t in TARGETS if t.default]
    return workloads, targets


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="3 s runs, 1 s warm-up")
    parser.add_argument(
        "--only", metavar="NAME,...", help="workload and/or server names (see --list)"
    )
    parser.add_argument("--duration", type=float, help="seconds per measured run (default 10)")
    parser.add_argument("--warmup", type=float, help="seconds of warm-up load (default 2)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per cell (median reported)")
    parser.add_argument(
        "--idle-wait",
        type=float,
        default=15.0,
        help="max seconds to wait before each run for other processes to go quiet (0: never)",
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=1,
        help="re-runs of a run that other processes disturbed (>10%% of a core)",
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=6.0,
        help="minutes after which idle waits and retries stop (every run still happens once)",
    )
    parser.add_argument("--server-cpu", type=int, default=0, help="core for the server (0)")
    parser.add_argument("--load-cpu", type=int, default=1, help="core for wrk and run.py (1)")
    parser.add_argument(
        "--python",
        metavar="X.Y,...",
        help="run every server on each of these CPythons, side by side (default: the version "
        "of the project's .venv); found on PATH or under pyenv, one venv per server and version",
    )
    parser.add_argument("--no-install", action="store_true", help="never run apt-get or pip")
    parser.add_argument("--list", action="store_true", help="list workloads and servers")
    args = parser.parse_args(argv)
    if args.duration is None:
        args.duration = 3.0 if args.quick else 10.0
    if args.warmup is None:
        args.warmup = 1.0 if args.quick else 2.0
    if args.duration < 1 or args.repeat < 1:
        parser.error("--duration must be >= 1 and --repeat >= 1")
    if args.python:
        args.pythons = [v.strip() for v in args.python.split(",") if v.strip()]
    else:
        args.pythons = [venv_version(THIS_VENV) or RUNNING]
    bad = [v for v in args.pythons if not re.fullmatch(r"3\.\d+", v)]
    if bad or len(set(args.pythons)) != len(args.pythons):
        parser.error(f"--python takes distinct versions like 3.11,3.13 (got {args.python})")
    return args


@contextlib.contextmanager
def signals_raise() -> Iterator[None]:
    previous = {s: signal.signal(s, _on_signal) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        for w in WORKLOADS:
            print(f"workload {w.name:18} {'' if w.default else '(opt-in) '}{w.description}")
        for t in TARGETS:
            print(f"server   {t.name:18} {'' if t.default else '(opt-in) '}{t.label}")
        for version in ("3.10", "3.11", "3.12", "3.13"):
            print(f"python   {version:18} {find_python(version) or 'not found'}")
        return 0
    workloads, targets = select(args.only)
    global SERVER_CPUS, LOAD_CPUS
    SERVER_CPUS, LOAD_CPUS = str(args.server_cpu), str(args.load_cpu)
    if (os.cpu_count() or 1) < 2:
        log("warning: fewer than 2 cores; server and load generator will share a core")
    # This script shares the load generator's core, never the server's.
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, {int(LOAD_CPUS)})

    results: list[RunResult] = []
    envs: dict[tuple[str, str], dict[str, str]] = {}
    interrupted = False
    with signals_raise():
        try:
            binaries = {TOOL_BINARIES[w.tool] for w in workloads}
            binaries |= {"curl" for w in workloads if w.protocol == "h2"}  # verify_h2
            binaries |= {"openssl" for w in workloads if w.tls}  # ensure_tls
            for binary in sorted(binaries):
                if args.no_install:
                    if not shutil.which(binary):
                        raise SetupError(f"{binary} missing and --no-install given")
                else:
                    ensure_tool(binary)
            if any(w.tls for w in workloads):
                ensure_tls()
            usable: list[tuple[Target, str]] = []
            for t in targets:
                for py in args.pythons:
                    if (t.env, py) not in envs:
                        try:
                            envs[t.env, py] = ensure_env(t.env, py, not args.no_install)
                        except (SetupError, subprocess.TimeoutExpired) as exc:
                            log(f"skipping {t.env} on Python {py}: {exc}")
                            envs[t.env, py] = {"error": str(exc)[:200]}
                    if "error" not in envs[t.env, py]:
                        usable.append((t, py))
            args.deadline = time.monotonic() + args.budget * 60
            # A server's interpreters run one after the other: their ratio is the least
            # exposed to the host's drift.
            plan = [
                (rep, w, t, py)
                for rep in range(1, args.repeat + 1)
                for w in workloads
                for t, py in usable
                if t.supports(w)
            ]
            per_run = args.duration + args.warmup + 5
            log(f"{len(plan)} runs, roughly {len(plan) * per_run / 60:.1f} minutes")
            for i, (rep, w, t, py) in enumerate(plan, 1):
                result = measure_quietly(w, t, py, rep, args)
                results.append(result)
                if result.ok:
                    on_core = result.foreign_on_server_core
                    status = (
                        f"{result.rate:,.0f} req/s, p99 {_fmt_ms(result.p99_ms)}, "
                        f"server cpu {result.server_cpu or 0:.2f}, "
                        f"other cpu {_noise(result):.2f}"
                        + ("" if on_core is None else f" (on server core {on_core:.2f})")
                        + f", calib {'/'.join(str(c) for c in result.calib_ms)} ms"
                    )
                else:
                    status = f"FAILED: {result.error}"
                log(f"[{i}/{len(plan)}] {w.name} / {t.name} / py{py} (rep {rep}): {status}")
        except KeyboardInterrupt:
            interrupted = True
            log("interrupted; stopping servers and writing partial results")
        except SetupError as exc:
            log(f"setup failed: {exc}")
            return 2
        finally:
            _kill_all()

    meta = metadata(args, envs)
    meta["interrupted"] = interrupted
    calib = [c for r in results for c in r.calib_ms if c is not None]
    meta["calibration_ms"] = (
        {"median": statistics.median(calib), "min": min(calib), "max": max(calib)} if calib else {}
    )
    cells = aggregate(results)
    shown_targets = [t for t in targets if any(key[1] == t.name for key in cells)]
    table = render(cells, workloads, shown_targets, args.pythons, meta)
    print(table)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "latest.md").write_text(table)
    payload = {
        "meta": meta,
        "workloads": [asdict(w) for w in workloads],
        "cells": [asdict(c) for c in cells.values()],
        "runs": [asdict(r) for r in results],
    }
    (RESULTS_DIR / "latest.json").write_text(json.dumps(payload, indent=2, default=str) + "\n")
    log(f"wrote {(RESULTS_DIR / 'latest.md').relative_to(ROOT)} and latest.json")
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
