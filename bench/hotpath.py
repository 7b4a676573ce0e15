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
    .venv/bin/python bench/hotpath.py --app ws_echo --instructions --ws-reference  # wsproto only

``--server uvicorn`` runs uvicorn's httptools protocol the same way, with the Python of
``bench/.peers/uvicorn`` (made by ``run.py``). What this leaves out is the kernel's work
(recv/send, epoll), which is the same per response for every server except that uvicorn
writes the head and the body of a response with two ``write`` calls (two syscalls).
``--instructions`` runs the measurement twice under ``valgrind --tool=callgrind`` (one and
three rounds) and divides the difference, so start-up and imports cancel out.
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
#: ``--app ws_echo``: each connection upgrades once, then every "request" is one masked
#: 32-byte text frame (the bench's ws-echo message) that the app echoes.
WS_HANDSHAKE = (
    b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n"
)
_MASK = b"\x12\x34\x56\x78"
WS_FRAME = b"\x81\xa0" + _MASK + bytes(b ^ _MASK[i % 4] for i, b in enumerate(b"x" * 32))


class FakeTransport:
    """Enough of asyncio.Transport for a server Protocol: writes are counted, not sent."""

    def __init__(self) -> None:
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.writes += 1

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

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


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
    backend = AsyncioBackend("uvloop" if args.loop == "uvloop" else "asyncio")
    limits = limits_from_config(config)
    if args.ws_reference:
        limits = dataclasses.replace(limits, websocket_fast_path=False)
    ctx = WorkerContext(
        app=_app(args.app),
        backend=backend,
        limits=limits,
        parser_kind=config.http1_parser,
    )
    return [
        _StreamProtocol(loop, ctx.on_connection, ServeOptions(), lambda: None, False)
        for _ in range(args.connections)
    ]


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
    transports = [FakeTransport() for _ in protocols]
    for protocol, transport in zip(protocols, transports, strict=True):
        protocol.connection_made(transport)
    request = REQUEST
    if args.app == "ws_echo":
        request = WS_FRAME
        for protocol in protocols:
            protocol.data_received(WS_HANDSHAKE)
        for _ in range(3):
            await asyncio.sleep(0)
    # Writes per response: uvicorn writes a response's head apart from its first body piece,
    # and the stream app sends ten pieces and (chunked) an end.
    if args.app == "stream":
        per_response = 12 if args.server == "uvicorn" else 11
    else:
        per_response = 2 if args.server == "uvicorn" else 1

    async def one_round() -> float:
        start = time.perf_counter()
        for _ in range(args.requests):
            for protocol in protocols:
                protocol.data_received(request)
            # Let every app task run to completion (one loop pass for the task, one spare).
            await asyncio.sleep(0)
            await asyncio.sleep(0)
        return time.perf_counter() - start

    times = []
    for _ in range(args.rounds + 1):  # the first round warms up
        before = sum(t.writes for t in transports)
        times.append(await one_round())
        done = (sum(t.writes for t in transports) - before) // per_response
        if done != args.requests * args.connections:
            raise SystemExit(f"only {done} of {args.requests * args.connections} responses")
    return [t / (args.requests * args.connections) * 1e6 for t in times[1:]]


def _instructions(args: argparse.Namespace) -> None:
    """Re-run this script under callgrind with 1 and 3 rounds; print the per-request cost."""
    if shutil.which("valgrind") is None:
        raise SystemExit("--instructions needs valgrind (apt-get install valgrind)")
    python = sys.executable
    if args.server == "uvicorn":
        python = os.path.join(BENCH, ".peers", "uvicorn", "bin", "python")
        if not os.path.exists(python):
            raise SystemExit("no bench/.peers/uvicorn: run bench/run.py once to create it")
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
            f"--connections={args.connections}",
            f"--requests={requests}",
            f"--rounds={rounds}",
            *(["--no-gc"] if args.no_gc else []),
            *(["--ws-reference"] if args.ws_reference else []),
        ]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=900, check=False)
        match = re.search(r"Collected : (\d+)", result.stderr)
        if result.returncode != 0 or match is None:
            raise SystemExit(f"callgrind run failed:\n{result.stdout}\n{result.stderr[-2000:]}")
        counts.append(int(match[1]))
    per_request = (counts[1] - counts[0]) / (2 * requests * args.connections)
    print(f"{per_request:,.0f} instructions/request ({args.server}, {args.app}, {args.loop})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", choices=("this", "uvicorn"), default="this")
    parser.add_argument("--app", choices=("hello", "stream", "ws_echo"), default="hello")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
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
    args = parser.parse_args()
    if args.instructions:
        _instructions(args)
        return
    if args.no_gc:
        gc.disable()
    elif args.server == "this":
        from hypercorn.workers.process import settle_gc

        settle_gc()  # as a worker does once it is ready
    if args.loop == "uvloop":
        import uvloop

        loop_factory = uvloop.new_event_loop
    else:
        loop_factory = asyncio.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
            per_request = runner.run(_run(args))
            profiler.disable()
            pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
        else:
            per_request = runner.run(_run(args))
    rounds = ", ".join(f"{t:.2f}" for t in per_request)
    print(f"{min(per_request):.2f} µs/request (best of {args.rounds}; rounds: {rounds})")


if __name__ == "__main__":
    main()
