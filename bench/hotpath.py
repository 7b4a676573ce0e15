"""The per-request cost of a server's Python path, with no sockets and no load generator.

``wrk`` numbers on a shared 2-core machine drift by 20% between runs; this measures only the
servers' own code, and in instructions (callgrind) exactly enough to compare two commits, or
this server with uvicorn, whatever else the machine is doing. ``connections`` fake
connections each send ``requests`` keep-alive GETs in lock-step through the server's real
asyncio Protocol (for this server: driver, core, front door and parser); the app (``hello``
from ``apps.py``) runs as a real task on the real loop, and responses go to a fake transport
that only counts writes.

    .venv/bin/python bench/hotpath.py                     # µs/request, uvloop, auto parser
    .venv/bin/python bench/hotpath.py --instructions      # instructions/request (valgrind)
    .venv/bin/python bench/hotpath.py --instructions --server uvicorn
    .venv/bin/python bench/hotpath.py --loop asyncio --parser h11
    .venv/bin/python bench/hotpath.py --profile           # cProfile, sorted by own time
    .venv/bin/python bench/hotpath.py --app ws_echo --instructions   # per echoed WS message
    .venv/bin/python bench/hotpath.py --app wsgi_hello --instructions  # WSGI, thread pool
    .venv/bin/python bench/hotpath.py --app stream --instructions  # 100 KB in ten chunks
    .venv/bin/python bench/hotpath.py --app ws_echo --instructions --ws-reference  # wsproto only
    .venv/bin/python bench/hotpath.py --instructions --python 3.13  # on another CPython
    .venv/bin/python bench/hotpath.py --instructions --loop trio       # over real sockets
    .venv/bin/python bench/hotpath.py --instructions --sockets         # uvloop, the same way
    .venv/bin/python bench/hotpath.py --instructions --scenario unique  # no head seen twice
    .venv/bin/python bench/hotpath.py --instructions --scenario close   # new connection each
    .venv/bin/python bench/hotpath.py --instructions --metrics statsd  # with statsd on

``--server uvicorn`` runs uvicorn's httptools protocol the same way, with the Python of
``bench/.peers/uvicorn`` (made by ``run.py``). What this leaves out is the kernel's work
(recv/send, epoll), which is the same per response for every server except that uvicorn
writes the head and the body of a response with two ``write`` calls (two syscalls).
``--instructions`` runs the measurement twice under ``valgrind --tool=callgrind`` (one and
three rounds) and divides the difference, so start-up and imports cancel out.

``--python 3.13`` runs it all on that CPython, from the venv ``run.py --python 3.13`` uses
for the server (``bench/.peers/this-py3.13`` or ``uvicorn-py3.13``, made here if missing).

``--sockets`` (implied by ``--loop trio``, whose transports own their sockets) measures the
whole user-space path instead, on any backend: the real accept loop and transports over
``connections`` loopback connections, the loop's own I/O and scheduling included; the
harness sends each round's requests and reads the responses without blocking (hello only).
Compare ``--sockets`` numbers only with ``--sockets`` numbers.

``--scenario`` picks the traffic (the rows of ``run.py`` it stands for):

- ``identical`` (``h1-keepalive``): every request is the same 40-byte GET;
- ``unique`` (``h1-keepalive-unique``): every request has its own path, query, cookie and
  user agent (as ``unique_targets.lua`` makes them), so no head is seen twice; the heads are
  made before measuring, the same number whatever ``--rounds`` says, so making them cancels
  out of ``--instructions``;
- ``close`` (``h1-close``): every request is ``Connection: close`` on a connection of its
  own, over real loopback sockets (implies ``--sockets``): the accept loop, the connection's
  setup and its close are in the count, as are the harness's connect, send, receive and
  close (the same for every commit).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import dataclasses
import gc
import os
import pstats
import re
import shutil
import subprocess
import sys
import time
from typing import Any

BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH)
sys.path.insert(0, os.path.dirname(BENCH))

REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n\r\n"
CLOSE_REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nConnection: close\r\n\r\n"
#: Rounds of unique heads made up front whatever ``--rounds`` says (see ``--scenario``).
UNIQUE_ROUNDS = 4


def unique_heads(count: int) -> list[bytes]:
    """``count`` request heads, each with its own path, query, cookie and user agent."""
    return [
        b"GET /items/%d?page=%d&q=%d HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n"
        b"User-Agent: bench-client/%d.%d\r\nAccept: */*\r\n"
        b"Cookie: session=%d; theme=dark; seen=%d\r\n\r\n"
        % (n, n % 97, n, n % 1000, n, n, n * 7919)
        for n in range(1, count + 1)
    ]


#: ``--app ws_echo``: each connection upgrades once, then every "request" is one masked
#: 32-byte text frame (the bench's ws-echo message) that the app echoes.
WS_HANDSHAKE = (
    b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n"
)
_MASK = b"\x12\x34\x56\x78"
WS_FRAME = b"\x81\xa0" + _MASK + bytes(b ^ _MASK[i % 4] for i, b in enumerate(b"x" * 32))


class Responses:
    """Counts the responses written; ``wait`` returns once ``count`` reached a number (WSGI
    responses come back from pool threads, not within a fixed number of loop passes)."""

    def __init__(self, per_response: int) -> None:
        self.per_response = per_response
        self.writes = 0
        self.responses = 0
        self.target = 0
        self.waiter: asyncio.Future[None] | None = None

    def written(self) -> None:
        self.writes += 1
        if self.waiter is not None and self.writes >= self.target and not self.waiter.done():
            self.waiter.set_result(None)

    async def wait(self, more: int) -> None:
        """Until ``more`` responses beyond those waited for before were written."""
        self.responses += more
        self.target = self.responses * self.per_response
        if self.writes < self.target:
            self.waiter = asyncio.get_running_loop().create_future()
            await self.waiter
            self.waiter = None


class FakeTransport:
    """Enough of asyncio.Transport for a server Protocol: writes are counted, not sent."""

    def __init__(self, responses: Responses | None = None) -> None:
        self.writes = 0
        self._written = responses.written if responses is not None else None

    def write(self, data: bytes) -> None:
        self.writes += 1
        if self._written is not None:
            self._written()

    def writelines(self, data: Any) -> None:
        self.writes += 1
        if self._written is not None:
            self._written()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}.get(
            name, default
        )

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def set_protocol(self, protocol: Any) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


class StreamedTransport(FakeTransport):
    """Counts only the writes that end a chunked response (with its last chunk): a server
    may write a streamed response in any number of writes. (Per write this costs about what
    ``FakeTransport``'s count does; a real transport's write costs more.)"""

    def write(self, data: bytes) -> None:
        if data.endswith(b"0\r\n\r\n"):
            self.writes += 1

    def writelines(self, data: Any) -> None:
        if data[-1].endswith(b"0\r\n\r\n"):
            self.writes += 1


def _app(name: str) -> Any:
    import apps

    return getattr(apps, name)


def _this_server(args: argparse.Namespace, loop: asyncio.AbstractEventLoop) -> list[Any]:

    from hypercorn.config import Config
    from hypercorn.workers.asyncio_backend import AsyncioBackend, _StreamProtocol
    from hypercorn.workers.backend import ServeOptions
    from hypercorn.workers.driver import WorkerContext, limits_from_config

    config = Config()
    config.http1_parser = args.parser
    # Each fake connection sends more requests than the default 1000 allows on one.
    config.keep_alive_max_requests = 10**9
    backend = AsyncioBackend("uvloop" if args.loop == "uvloop" else "asyncio")
    limits = limits_from_config(config)
    if args.ws_reference:
        limits = dataclasses.replace(limits, websocket_fast_path=False)
    app = _app(args.app)
    if args.app == "wsgi_hello":
        from hypercorn.apps import wrap_app

        app = wrap_app(app, config, backend, "wsgi")
    metrics = _metrics(args, backend)
    ctx = WorkerContext(
        app=app,
        backend=backend,
        limits=limits,
        parser_kind=config.http1_parser,
        on_done=metrics.observer if metrics is not None else None,
    )
    if metrics is not None:
        metrics.context = ctx
    return [
        _StreamProtocol(loop, ctx.on_connection, ServeOptions(), lambda: None, False)
        for _ in range(args.connections)
    ]


def _metrics(args: argparse.Namespace, backend: Any) -> Any:
    """``--metrics statsd``: the worker's counters, sending to a UDP socket of ours (never
    read: what the kernel does with the datagrams is not counted); ``prometheus``: counting
    for the master's /metrics only; ``both``.

    With no heartbeat here, what is measured is the flush every ``_BATCH`` requests, as a
    busy worker makes them (a quiet one flushes once a second: some 0.2 ms of CPU)."""
    if args.metrics == "off":
        return None
    import socket

    from hypercorn.statsd import StatsdClient
    from hypercorn.workers import metrics as module

    statsd = None
    if args.metrics in ("statsd", "both"):
        sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sink.bind(("127.0.0.1", 0))
        _keep.append(sink)
        statsd = StatsdClient(f"127.0.0.1:{sink.getsockname()[1]}", "bench")
    return module.RequestMetrics(backend, histogram=args.metrics != "statsd", statsd=statsd)


_keep: list[Any] = []


def _uvicorn(args: argparse.Namespace, loop: asyncio.AbstractEventLoop) -> list[Any]:
    from uvicorn.config import Config
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    from uvicorn.server import ServerState

    config = Config(app=_app(args.app), lifespan="off", access_log=False, http="httptools")
    config.load()
    state = ServerState()
    return [HttpToolsProtocol(config, state, app_state={}) for _ in range(args.connections)]


async def _run(args: argparse.Namespace) -> list[float]:
    loop = asyncio.get_running_loop()
    make = _uvicorn if args.server == "uvicorn" else _this_server
    protocols = make(args, loop)
    # Writes per response: uvicorn writes a response's head apart from its first body piece;
    # a streamed response counts once, by the write that ends it (its last chunk).
    per_response = 2 if args.server == "uvicorn" and args.app != "stream" else 1
    responses = Responses(per_response) if args.app == "wsgi_hello" else None
    transport_class = StreamedTransport if args.app == "stream" else FakeTransport
    transports = [transport_class(responses) for _ in protocols]
    for protocol, transport in zip(protocols, transports, strict=True):
        protocol.connection_made(transport)
    request = REQUEST
    heads: list[bytes] = []
    if args.scenario == "unique":
        heads = unique_heads(max(UNIQUE_ROUNDS, args.rounds + 1) * args.requests * len(protocols))
        heads.reverse()  # (taken from the end)
    if args.app == "ws_echo":
        request = WS_FRAME
        for protocol in protocols:
            protocol.data_received(WS_HANDSHAKE)
        for _ in range(3):
            await asyncio.sleep(0)

    async def one_round() -> float:
        start = time.perf_counter()
        for _ in range(args.requests):
            if heads:
                for protocol in protocols:
                    protocol.data_received(heads.pop())
            else:
                for protocol in protocols:
                    protocol.data_received(request)
            # Let every app task run to completion (one loop pass for the task, one spare).
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            if responses is not None:  # (WSGI: until the pool threads answered them all)
                await responses.wait(len(protocols))
        return time.perf_counter() - start

    times = []
    for _ in range(args.rounds + 1):  # the first round warms up
        before = sum(t.writes for t in transports)
        times.append(await one_round())
        done = (sum(t.writes for t in transports) - before) // per_response
        if done != args.requests * args.connections:
            raise SystemExit(f"only {done} of {args.requests * args.connections} responses")
    return [t / (args.requests * args.connections) * 1e6 for t in times[1:]]


def _python_for(args: argparse.Namespace) -> str:
    """The interpreter to measure with: ``--python``'s (from run.py's venv for that server
    and version, made if missing), else uvicorn's venv for ``--server uvicorn``, else ours."""
    running = f"{sys.version_info[0]}.{sys.version_info[1]}"
    if args.python is None and args.server == "this":
        return sys.executable
    import run  # (bench/run.py: its venvs; imported only here, it is not needed otherwise)

    env = "uvicorn" if args.server == "uvicorn" else run.THIS
    version = args.python or running
    try:
        run.ensure_env(env, version, install=True)
    except run.SetupError as exc:
        raise SystemExit(str(exc)) from None
    return str(run.env_bin(env, version) / "python")


def _reexec(args: argparse.Namespace) -> None:
    """Run this script again on the interpreter ``--python`` asks for, if it is not this one."""
    python = _python_for(args)
    if os.path.realpath(python) == os.path.realpath(sys.executable):
        return
    argv = [a for a in sys.argv[1:] if not a.startswith("--python")]
    if "--python" in sys.argv[1:]:  # (the space-separated form: drop its value too)
        i = sys.argv.index("--python")
        argv = sys.argv[1:i] + sys.argv[i + 2 :]
    os.execv(python, [python, os.path.abspath(__file__), *argv])


def _over_sockets(args: argparse.Namespace) -> list[float]:
    """One round = every connection sends a GET and reads its whole response."""
    import _socket
    import socket

    from hypercorn.config import Config
    from hypercorn.workers import run_with_backend
    from hypercorn.workers.backend import Listener, ServeOptions
    from hypercorn.workers.driver import WorkerContext, limits_from_config

    config = Config()
    config.http1_parser = args.parser
    config.keep_alive_max_requests = 10**9  # (as above)
    listener = socket.create_server(("127.0.0.1", 0), backlog=args.connections)

    async def main(backend: Any) -> list[float]:
        ctx = WorkerContext(
            app=_app(args.app),
            backend=backend,
            limits=limits_from_config(config),
            parser_kind=config.http1_parser,
        )
        stop = backend.event()
        done = backend.event()

        async def serve() -> None:
            await backend.serve([Listener(listener)], ctx.on_connection, stop, ServeOptions())
            done.set()

        backend.spawn(serve)
        clients = []
        for _ in range(0 if args.scenario == "close" else args.connections):
            client = socket.create_connection(listener.getsockname())
            client.setblocking(False)
            clients.append(client)
        while len(ctx.connections) < len(clients):
            await backend.sleep(0.001)
        size = 0
        address = listener.getsockname()

        async def one_close_round() -> float:
            """Each request on a connection of its own: connect, send, read until EOF."""
            start = time.perf_counter()
            for _ in range(args.requests):
                pending: list[Any] = []
                for _ in range(args.connections):
                    # (The C socket type: the harness's own cost, counted in every commit's
                    # number alike, as small as it can be.)
                    client = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
                    client.connect(address)
                    client.setblocking(False)
                    client.send(CLOSE_REQUEST)
                    pending.append(client)
                while pending:
                    await backend.sleep(0)
                    for client in list(pending):
                        try:
                            if client.recv(1 << 20):
                                continue
                        except BlockingIOError:
                            continue
                        client.close()  # (EOF: the server closed after its response)
                        pending.remove(client)
            return time.perf_counter() - start

        async def one_round() -> float:
            nonlocal size
            if args.scenario == "close":
                return await one_close_round()
            start = time.perf_counter()
            for _ in range(args.requests):
                for client in clients:
                    client.send(REQUEST)
                pending = list(clients)
                got = dict.fromkeys(clients, 0)
                while pending:
                    await backend.sleep(0)
                    for client in list(pending):
                        try:
                            got[client] += len(client.recv(1 << 20))
                        except BlockingIOError:
                            continue
                        if size and got[client] >= size:
                            pending.remove(client)
                        elif not size and got[client]:
                            size = got[client]  # (the first whole response sets the size)
                            pending.remove(client)
            return time.perf_counter() - start

        times = [await one_round() for _ in range(args.rounds + 1)]  # the first warms up
        for client in clients:
            client.close()
        stop.set()
        await done.wait()
        ctx.abort_all()
        return [t / (args.requests * args.connections) * 1e6 for t in times[1:]]

    try:
        return run_with_backend(args.loop, main)
    finally:
        listener.close()


def _instructions(args: argparse.Namespace) -> None:
    """Re-run this script under callgrind with 1 and 3 rounds; print the per-request cost."""
    if shutil.which("valgrind") is None:
        raise SystemExit("--instructions needs valgrind (apt-get install valgrind)")
    python = _python_for(args)
    version = subprocess.run(
        [python, "-c", "import platform; print(platform.python_version())"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.strip()
    requests = 40
    counts = []
    for rounds in (1, 3):
        argv = [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            python,
            os.path.abspath(__file__),
            f"--server={args.server}",
            f"--loop={args.loop}",
            f"--parser={args.parser}",
            f"--app={args.app}",
            f"--scenario={args.scenario}",
            f"--connections={args.connections}",
            f"--requests={requests}",
            f"--rounds={rounds}",
            *(["--no-gc"] if args.no_gc else []),
            *(["--ws-reference"] if args.ws_reference else []),
            *(["--sockets"] if args.sockets else []),
            f"--metrics={args.metrics}",
        ]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=900, check=False)
        match = re.search(r"Collected : (\d+)", result.stderr)
        if result.returncode != 0 or match is None:
            raise SystemExit(f"callgrind run failed:\n{result.stdout}\n{result.stderr[-2000:]}")
        counts.append(int(match[1]))
    per_request = (counts[1] - counts[0]) / (2 * requests * args.connections)
    print(
        f"{per_request:,.0f} instructions/request "
        f"({args.server}, {args.app}, {args.scenario}, {args.loop}"
        f"{', sockets' if args.sockets else ''}, "
        f"Python {version}{'' if args.metrics == 'off' else ', metrics ' + args.metrics})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", choices=("this", "uvicorn"), default="this")
    parser.add_argument(
        "--app", choices=("hello", "stream", "wsgi_hello", "ws_echo"), default="hello"
    )
    parser.add_argument("--scenario", choices=("identical", "unique", "close"), default="identical")
    parser.add_argument("--loop", choices=("uvloop", "asyncio", "trio"), default="uvloop")
    parser.add_argument("--sockets", action="store_true", help="real sockets (see above)")
    parser.add_argument("--parser", choices=("auto", "h11", "httptools"), default="auto")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--requests", type=int, default=300, help="per connection per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--instructions", action="store_true", help="count, with callgrind")
    parser.add_argument("--profile", action="store_true", help="cProfile one run")
    parser.add_argument("--no-gc", action="store_true", help="gc.disable() (what GC costs)")
    parser.add_argument(
        "--ws-reference", action="store_true", help="WebSocket frames through wsproto only"
    )
    parser.add_argument("--python", metavar="X.Y", help="measure on this CPython (see above)")
    parser.add_argument(
        "--metrics",
        choices=("off", "statsd", "prometheus", "both"),
        default="off",
        help="this server with statsd on, or counting for the master's /metrics",
    )
    args = parser.parse_args()
    if args.loop == "trio" or args.scenario == "close":
        args.sockets = True
    if args.scenario == "unique" and args.sockets:
        parser.error("--scenario unique runs in memory (no --sockets, no --loop trio)")
    if args.scenario != "identical" and args.app != "hello":
        parser.error("--scenario unique and close measure the hello app")
    if args.sockets and (args.server != "this" or args.app != "hello"):
        parser.error("--sockets (and --loop trio) measure this server's hello only")
    if args.metrics != "off" and (args.sockets or args.server != "this"):
        parser.error("--metrics measures this server without --sockets")
    if args.instructions:
        _instructions(args)
        return
    if args.python is not None:
        _reexec(args)
    if args.no_gc:
        gc.disable()
    elif args.server == "this":
        from hypercorn.workers.process import settle_gc

        settle_gc()  # as a worker does once it is ready
    if args.sockets:
        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
            per_request = _over_sockets(args)
            profiler.disable()
            pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
        else:
            per_request = _over_sockets(args)
        rounds = ", ".join(f"{t:.2f}" for t in per_request)
        print(f"{min(per_request):.2f} µs/request (best of {args.rounds}; rounds: {rounds})")
        return
    if args.loop == "uvloop":
        import uvloop

        loop_factory = uvloop.new_event_loop
    else:
        loop_factory = asyncio.new_event_loop
    # (A loop by hand rather than asyncio.Runner, which 3.10 lacks; it ends as Runner does,
    # cancelling what still runs, such as the echo apps' loops.)
    loop = loop_factory()
    asyncio.set_event_loop(loop)
    try:
        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
            per_request = loop.run_until_complete(_run(args))
            profiler.disable()
            pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
        else:
            per_request = loop.run_until_complete(_run(args))
    finally:
        left = asyncio.all_tasks(loop)
        for task in left:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
        asyncio.set_event_loop(None)
        loop.close()
    rounds = ", ".join(f"{t:.2f}" for t in per_request)
    print(f"{min(per_request):.2f} µs/request (best of {args.rounds}; rounds: {rounds})")


if __name__ == "__main__":
    main()
