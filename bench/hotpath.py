"""The per-request cost of this server's Python path, with no sockets and no load generator.

``wrk`` numbers on a shared 2-core machine drift by 20% between runs; this measures only our
own code, deterministically enough to compare two commits within a few percent:
``connections`` fake connections each send ``requests`` keep-alive GETs in lock-step through
the real asyncio Protocol, driver, core, front door and parser, the app runs as a real task
on the real loop, and the responses go to a fake transport that only counts bytes.

    .venv/bin/python bench/hotpath.py                  # uvloop, auto parser, hello app
    .venv/bin/python bench/hotpath.py --loop asyncio --parser h11
    .venv/bin/python bench/hotpath.py --profile        # cProfile, sorted by own time

It prints microseconds per request (best of ``--rounds``): the whole cost our Python adds
to a request, which the kernel's send/recv and the loop's epoll then come on top of.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import os
import pstats
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from apps import hello

from hypercorn.config import Config
from hypercorn.workers.asyncio_backend import AsyncioBackend, _StreamProtocol
from hypercorn.workers.backend import ServeOptions
from hypercorn.workers.driver import WorkerContext, limits_from_config

REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n\r\n"


class FakeTransport:
    """Enough of asyncio.Transport for ``_StreamProtocol``: writes are counted, not sent."""

    def __init__(self) -> None:
        self.written = 0
        self.responses = 0

    def write(self, data: bytes) -> None:
        self.written += len(data)
        self.responses += 1

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}.get(
            name, default
        )

    def set_write_buffer_limits(self, high: int, low: int) -> None:
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


async def _run(args: argparse.Namespace) -> list[float]:
    config = Config()
    config.http1_parser = args.parser
    backend = AsyncioBackend("uvloop" if args.loop == "uvloop" else "asyncio")
    ctx = WorkerContext(
        app=hello,
        backend=backend,
        limits=limits_from_config(config),
        parser_kind=config.http1_parser,
    )
    loop = asyncio.get_running_loop()
    protocols = []
    transports = []
    for _ in range(args.connections):
        protocol = _StreamProtocol(loop, ctx.on_connection, ServeOptions(), lambda: None, False)
        transport = FakeTransport()
        protocol.connection_made(transport)  # type: ignore[arg-type]
        protocols.append(protocol)
        transports.append(transport)

    async def one_round() -> float:
        start = time.perf_counter()
        for _ in range(args.requests):
            for protocol in protocols:
                protocol.data_received(REQUEST)
            # Let every app task run to completion (one loop pass for the task, one spare).
            await asyncio.sleep(0)
            await asyncio.sleep(0)
        return time.perf_counter() - start

    await one_round()  # warm up
    expected = 0
    times = []
    for _ in range(args.rounds):
        expected = sum(t.responses for t in transports) + args.requests * args.connections
        times.append(await one_round())
        done = sum(t.responses for t in transports)
        if done != expected:
            raise SystemExit(f"only {done} of {expected} responses were written")
    return [t / (args.requests * args.connections) * 1e6 for t in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    parser.add_argument("--parser", choices=("auto", "h11", "httptools"), default="auto")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--requests", type=int, default=300, help="per connection per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile", action="store_true", help="cProfile one run")
    parser.add_argument("--no-gc", action="store_true", help="gc.disable() (what GC costs)")
    args = parser.parse_args()
    if args.no_gc:
        gc.disable()
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
