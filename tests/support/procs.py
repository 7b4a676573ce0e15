"""Real ``python -m hypercorn`` processes for arbiter tests: start, wait, signal, load, reap.

- The listening socket is bound by the test (port 0) and handed over as ``fd://N`` with
  ``pass_fds``: no port race. The test's copy is closed once the server has it.
- Readiness comes from a ``NOTIFY_SOCKET`` datagram socket (abstract namespace, so path
  length never matters), or from bounded polling: never from a sleep.
- Every process started here is killed by pid at teardown (master and its workers).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import h11

T = TypeVar("T")

#: An ASGI app used by the process tests. Paths:
#:   /            -> the worker's pid
#:   /slow?S      -> sleeps S seconds on the loop (asyncio's or trio's sleep), then the pid;
#:                   appends the pid to ``slow_started`` first (the request is in the app)
#:   /block?S     -> blocks the event loop with time.sleep(S) (a hung worker)
#:   /gc          -> gc.get_freeze_count() and the young-generation threshold in the worker
#: Files in the app's directory change how workers that start later behave (see ``knob``):
#:   boot_delay      -> seconds to sleep while importing (a slow-booting app)
#:   broken          -> the import raises (an app that cannot load)
#:   lifespan_fail   -> lifespan startup answers lifespan.startup.failed
#:   shutdown_delay  -> seconds lifespan shutdown takes; then the pid goes into shutdown_done
APP_SOURCE = textwrap.dedent(
    """
    import gc
    import importlib
    import os
    import time

    import sniffio

    VERSION = "v1"


    def knob(name):
        try:
            with open(name) as file:
                return file.read().strip() or "0"
        except FileNotFoundError:
            return None


    async def sleep(seconds):
        # On whichever loop runs the worker: asyncio, uvloop or trio (-k).
        await importlib.import_module(sniffio.current_async_library()).sleep(seconds)


    if knob("broken") is not None:
        raise ImportError("broken on purpose")
    time.sleep(float(knob("boot_delay") or 0))


    async def lifespan(receive, send):
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                if knob("lifespan_fail") is not None:
                    await send({"type": "lifespan.startup.failed", "message": "db is down"})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                delay = knob("shutdown_delay")
                if delay is not None:
                    await sleep(float(delay))
                    with open("shutdown_done", "a") as file:
                        file.write(f"{os.getpid()}\\n")
                await send({"type": "lifespan.shutdown.complete"})
                return


    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        path = scope["path"]
        seconds = float(scope["query_string"] or b"0")
        if path == "/slow":
            with open("slow_started", "a") as file:
                file.write(f"{os.getpid()}\\n")
            await sleep(seconds)
        elif path == "/block":
            time.sleep(seconds)
        body = f"{os.getpid()} {VERSION}".encode()
        if path == "/gc":
            body = f"{gc.get_freeze_count()} {gc.get_threshold()[0]}".encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})
    """
)


def wait_for(
    predicate: Callable[[], T | None], timeout: float, what: str, interval: float = 0.02
) -> T:
    """Poll ``predicate`` until it returns a truthy value or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def children_of(pid: int) -> set[int]:
    """Live child pids of ``pid`` (Linux /proc), zombies excluded."""
    try:
        # Children forked by the main thread (as masters fork), without scanning /proc.
        with open(f"/proc/{pid}/task/{pid}/children") as file:
            candidates = [int(entry) for entry in file.read().split()]
    except (OSError, ValueError):
        candidates = None
    if candidates is not None:
        return {child for child in candidates if pid_alive(child)}
    result: set[int] = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as file:
                stat = file.read()
        except OSError:
            continue
        # "pid (comm) state ppid ..." where comm may contain spaces and parentheses.
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            result.add(int(entry))
    return result


def cpu_seconds(pid: int) -> float:
    """User + system CPU time ``pid`` has used so far (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as file:
        stat = file.read()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as file:
            stat = file.read()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


# ------------------------------------------------------------------------------ HTTP client


class RequestFailed(Exception):
    pass


def _read_response(sock: socket.socket, conn: h11.Connection) -> tuple[int, bytes, bool]:
    """Read one response; returns (status, body, received_any_bytes)."""
    status = 0
    body = b""
    got_bytes = False
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = sock.recv(65536)
            if data:
                got_bytes = True
            conn.receive_data(data)
            continue
        if isinstance(event, h11.Response):
            status = event.status_code
        elif isinstance(event, h11.Data):
            body += bytes(event.data)
        elif isinstance(event, h11.EndOfMessage):
            return status, body, got_bytes
        elif isinstance(event, h11.ConnectionClosed):
            raise ConnectionResetError("closed before a response" if not got_bytes else "cut")


def http_get(port: int | str, path: str = "/", timeout: float = 10.0) -> tuple[int, str]:
    """One request on a fresh connection; ``port`` may be a unix socket's path."""
    if isinstance(port, str):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(port)
        except BaseException:
            sock.close()
            raise
    else:
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    with sock:
        conn = h11.Connection(h11.CLIENT)
        request = h11.Request(
            method="GET", target=path, headers=[("host", "test"), ("connection", "close")]
        )
        sock.sendall(conn.send(request) + conn.send(h11.EndOfMessage()))
        status, body, _ = _read_response(sock, conn)
        return status, body.decode()


class KeepAliveClient:
    """Reuses one connection. A request whose *reused* connection turns out closed before
    any response byte arrived is retried once on a fresh connection: RFC 9112 §9.3.1 allows
    that for idempotent requests, and it is what every keep-alive client does."""

    def __init__(self, port: int, timeout: float = 10.0, *, retry: bool = True) -> None:
        self.port = port
        self.timeout = timeout
        #: False: a client that never retries (nginx's upstream keepalive with a POST, httpx).
        self.retry = retry
        self.sock: socket.socket | None = None
        self.conn: h11.Connection | None = None
        self.retries = 0

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.sock = self.conn = None

    def get(self, path: str = "/") -> tuple[int, str]:
        for _ in range(2):
            reused = self.sock is not None
            if self.sock is None:
                self.sock = socket.create_connection(("127.0.0.1", self.port), self.timeout)
                self.conn = h11.Connection(h11.CLIENT)
            assert self.conn is not None
            got_bytes = False
            try:
                request = h11.Request(method="GET", target=path, headers=[("host", "test")])
                self.sock.sendall(self.conn.send(request) + self.conn.send(h11.EndOfMessage()))
                status, body, got_bytes = _read_response(self.sock, self.conn)
            except (OSError, h11.RemoteProtocolError) as exc:
                self.close()
                if reused and not got_bytes and self.retry:
                    self.retries += 1
                    continue
                raise RequestFailed(f"{type(exc).__name__}: {exc}") from exc
            if self.conn.our_state is h11.MUST_CLOSE or self.conn.their_state is h11.MUST_CLOSE:
                self.close()
            else:
                self.conn.start_next_cycle()
            return status, body.decode()
        raise RequestFailed("retry failed")


@dataclass
class LoadResult:
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    pids: set[int] = field(default_factory=set)
    retries: int = 0


class LoadLoop:
    """Threads sending requests until stopped, bounded in count and in time: half on fresh
    connections and half keep-alive, or (``fresh=False``) all keep-alive. ``retry=False``
    makes the keep-alive clients never retry (nginx's upstream keepalive with a POST,
    httpx): a request a closing connection loses is a failure."""

    def __init__(
        self,
        port: int,
        threads: int = 4,
        max_requests: int = 20000,
        *,
        fresh: bool = True,
        retry: bool = True,
        seconds: float = 45.0,
    ) -> None:
        self.port = port
        self.result = LoadResult()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._budget = max_requests
        self._retry = retry
        self._seconds = seconds
        self._threads = [
            threading.Thread(target=self._run, args=(not fresh or i % 2 == 0,), daemon=True)
            for i in range(threads)
        ]

    def __enter__(self) -> LoadLoop:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> LoadResult:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=15)
        return self.result

    def _take(self) -> bool:
        with self._lock:
            if self._budget <= 0:
                return False
            self._budget -= 1
            return True

    def _record(self, status: int | None, body: str, error: str | None) -> None:
        with self._lock:
            if error is None and status == 200:
                self.result.ok += 1
                self.result.pids.add(int(body.split()[0]))
            else:
                self.result.failures.append(error or f"status {status}: {body!r}")

    def _one(self, client: KeepAliveClient, keep_alive: bool) -> None:
        try:
            if keep_alive:
                status, body = client.get("/")
            else:
                status, body = http_get(self.port, "/")
        except (OSError, RequestFailed, h11.ProtocolError) as exc:
            kind = "keep-alive" if keep_alive else "fresh connection"
            self._record(None, "", f"{kind}: {type(exc).__name__}: {exc}")
        else:
            self._record(status, body, None)

    def _run(self, keep_alive: bool) -> None:
        client = KeepAliveClient(self.port, retry=self._retry)
        deadline = time.monotonic() + self._seconds
        try:
            while not self._stop.is_set() and time.monotonic() < deadline and self._take():
                self._one(client, keep_alive)
        finally:
            client.close()
            with self._lock:
                self.result.retries += client.retries


# ------------------------------------------------------------------------------ census


def process_title(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as file:
            return file.read().split(b"\0")[0].decode(errors="replace").strip()
    except OSError:
        return None


#: One pass over a master's workers: (pid, title) for each child, by pid.
Census = tuple[tuple[int, str | None], ...]


class WorkerCensus:
    """Samples a master's workers every few milliseconds from a thread: how many are alive,
    and how many serve (a worker's title says ``(booting)`` or ``(draining)`` otherwise).

    Each sample is one instant. A pass reads the children, then their titles one by one,
    milliseconds apart under load (the test's load threads hold the GIL), so now and then a
    replacement's READY and its predecessor's stop fall between two reads of one pass: it
    sees the new worker still booting and the old one already draining, which were never
    true together. So a sample is two passes in a row that agree: a title only moves forward
    (the master's, booting, serving, draining, gone), so what both saw held throughout the
    time between them. (That also covers the kernel's children list, which may skip a child
    while a sibling is being reaped.)

    Each sample keeps what it saw, so a failed assertion can say what happened around its
    worst moment (``explain``)."""

    def __init__(self, master_pid: int, interval: float = 0.005, tries: int = 20) -> None:
        self.master_pid = master_pid
        self.interval = interval
        #: Passes after the first one before a sample is given up (workers kept changing).
        self.tries = tries
        self.samples: list[tuple[int, int]] = []
        #: Per sample: seconds since the census began, the passes it took, what it saw.
        self.seen: list[tuple[float, int, Census]] = []
        #: Samples given up because no two passes in a row agreed.
        self.unsettled = 0
        #: Every worker pid seen.
        self.pids: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._began = time.monotonic()

    def __enter__(self) -> WorkerCensus:
        self._began = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _pass(self) -> Census:
        pids = children_of(self.master_pid)
        self.pids |= pids
        return tuple((pid, process_title(pid)) for pid in sorted(pids))

    def _run(self) -> None:
        while not self._stop.is_set():
            at = time.monotonic() - self._began
            previous = self._pass()
            for passes in range(2, self.tries + 2):
                current = self._pass()
                if current == previous:
                    alive = [title for _, title in current if title is not None]
                    self.samples.append((len(alive), sum(map(_serves, alive))))
                    self.seen.append((at, passes, current))
                    break
                previous = current
            else:
                self.unsettled += 1
            self._stop.wait(self.interval)

    @property
    def most_alive(self) -> int:
        return max(alive for alive, _ in self.samples)

    @property
    def fewest_serving(self) -> int:
        return min(serving for _, serving in self.samples)

    def explain(self, worst: Callable[[tuple[int, int]], int], around: int = 8) -> str:
        """The samples around the first one that maximises ``worst((alive, serving))``: when
        each was taken, in how many passes, and every worker's title then."""
        if not self.samples:
            return f"no samples ({self.unsettled} unsettled)"
        index = max(range(len(self.samples)), key=lambda i: worst(self.samples[i]))
        lines = [
            f"{len(self.samples)} samples ({self.unsettled} unsettled); "
            f"worst is #{index}: {self.samples[index]}"
        ]
        for i in range(max(0, index - around), min(len(self.seen), index + around + 1)):
            at, passes, seen = self.seen[i]
            mark = ">>" if i == index else "  "
            titles = ", ".join(f"{pid}: {title!r}" for pid, title in seen)
            lines.append(f"{mark} #{i} {at:7.3f}s {passes} passes {self.samples[i]} {titles}")
        return "\n".join(lines)


def _serves(title: str) -> bool:
    return title.startswith("hypercorn: worker") and "(" not in title


# ------------------------------------------------------------------------------ the server


class NotifyListener:
    """A fake systemd ``NOTIFY_SOCKET`` in the abstract namespace."""

    def __init__(self) -> None:
        self.name = f"@hypercorn-test-{uuid.uuid4().hex}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + self.name[1:])
        self.messages: list[str] = []

    def wait_for(self, field_: str, timeout: float = 20.0) -> str:
        """Wait for a message with the line ``field_`` (e.g. ``READY=1``) not yet consumed."""
        deadline = time.monotonic() + timeout
        while True:
            for index, message in enumerate(self.messages):
                if field_ in message.split("\n"):
                    del self.messages[: index + 1]
                    return message
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {field_} within {timeout}s; got {self.messages}")
            self.sock.settimeout(remaining)
            with contextlib.suppress(TimeoutError):
                self.messages.append(self.sock.recv(4096).decode())

    def close(self) -> None:
        self.sock.close()


class HypercornProcess:
    """One ``python -m hypercorn`` master under test."""

    def __init__(
        self,
        args: list[str],
        *,
        cwd: Path,
        sock: socket.socket | None = None,
        env: dict[str, str] | None = None,
        notify: bool = True,
        socket_activation: bool = False,
        new_session: bool = False,
        log_dir: Path | None = None,
        pass_fds: tuple[int, ...] = (),
    ) -> None:
        """``pass_fds``: more descriptors to hand over (``fd://N`` binds in ``args``)."""
        self.cwd = cwd
        self.notify = NotifyListener() if notify else None
        self.port = sock.getsockname()[1] if sock is not None else 0
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("LISTEN_")}
        full_env.pop("NOTIFY_SOCKET", None)
        full_env["PYTHONUNBUFFERED"] = "1"
        if self.notify is not None:
            full_env["NOTIFY_SOCKET"] = self.notify.name
        full_env.update(env or {})
        command = [sys.executable, "-m", "hypercorn", *args]
        if sock is not None and socket_activation:
            # systemd's protocol: the socket at fd 3, LISTEN_PID naming the server itself
            # (exec keeps the pid), LISTEN_FDS/LISTEN_FDNAMES describing it.
            fd = sock.fileno()
            shim = (
                "import os, sys; "
                f"{fd} == 3 or (os.dup2({fd}, 3), os.close({fd})); "
                "os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS='1', "
                "LISTEN_FDNAMES='http'); "
                "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])"
            )
            command = [sys.executable, "-c", shim, *command[1:]]
        elif sock is not None:
            command[3:3] = ["-b", f"fd://{sock.fileno()}"]
        self.stderr_path = (log_dir or cwd) / f"stderr-{uuid.uuid4().hex[:8]}.log"
        self._stderr = open(self.stderr_path, "wb")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            command,
            cwd=cwd,
            env=full_env,
            pass_fds=((sock.fileno(),) if sock is not None else ()) + pass_fds,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
            # Its own process group, as under a terminal or systemd, for group signals.
            start_new_session=new_session,
        )
        self.pid = self.proc.pid
        self._known: set[int] = set()
        self._adopted: set[int] = set()
        if sock is not None:
            sock.close()  # the server holds the listener now

    # -- observation

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def workers(self) -> set[int]:
        pids = children_of(self.pid)
        self._known |= pids
        return pids

    def wait_ready(self, timeout: float = 20.0) -> set[int]:
        """READY=1 from the master (all workers booted); returns the worker pids."""
        assert self.notify is not None
        try:
            self.notify.wait_for("READY=1", timeout)
        except AssertionError:
            raise AssertionError(f"not ready; stderr:\n{self.stderr()}") from None
        return self.workers()

    def wait_workers(
        self, predicate: Callable[[set[int]], bool], timeout: float = 20.0
    ) -> set[int]:
        def check() -> set[int] | None:
            pids = self.workers()
            return pids if predicate(pids) else None

        try:
            return wait_for(check, timeout, "worker set")
        except AssertionError:
            raise AssertionError(
                f"workers {self.workers()} never matched; stderr:\n{self.stderr()}"
            ) from None

    def wait_exit(self, timeout: float = 20.0) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"master still running; stderr:\n{self.stderr()}") from None

    def adopt(self, pid: int) -> None:
        """Also kill ``pid`` and its children at teardown (a master started by SIGUSR2)."""
        self._adopted.add(pid)

    # -- actions

    def signal(self, sig: signal.Signals) -> None:
        os.kill(self.pid, sig)

    def signal_group(self, sig: signal.Signals) -> None:
        """``sig`` to the master and every worker at once (Ctrl-C in a terminal, systemd's
        KillMode=control-group); needs ``new_session=True``."""
        assert os.getpgid(self.pid) == self.pid, "started without new_session=True"
        os.killpg(self.pid, sig)

    def close(self) -> None:
        """Kill by pid whatever is left: the master and every worker it ever had."""
        pids = {self.pid} | self._known | self._adopted
        for parent in {self.pid, *self._adopted}:
            with contextlib.suppress(OSError):
                pids |= children_of(parent)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        self._stderr.close()
        if self.notify is not None:
            self.notify.close()


def write_app(directory: Path, name: str = "app", source: str = APP_SOURCE) -> Path:
    path = directory / f"{name}.py"
    path.write_text(source)
    return path


@contextlib.contextmanager
def running(
    args: list[str],
    *,
    cwd: Path,
    sock: socket.socket | None = None,
    env: dict[str, str] | None = None,
    notify: bool = True,
    socket_activation: bool = False,
    new_session: bool = False,
    log_dir: Path | None = None,
    pass_fds: tuple[int, ...] = (),
) -> Iterator[HypercornProcess]:
    """``log_dir``: where the server's stderr goes (default ``cwd``); ``pass_fds``: more
    descriptors to hand over (``fd://N`` binds in ``args``)."""
    server = HypercornProcess(
        args,
        cwd=cwd,
        sock=sock,
        env=env,
        notify=notify,
        socket_activation=socket_activation,
        new_session=new_session,
        log_dir=log_dir,
        pass_fds=pass_fds,
    )
    try:
        yield server
    finally:
        server.close()
