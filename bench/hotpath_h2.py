"""The per-request cost of this server's HTTP/2 path, with no sockets and no load generator.

Like ``hotpath.py`` for HTTP/2 (h2load's shape: ``connections`` connections, ``streams``
concurrent streams each): every connection opens with the prior-knowledge preface through the
real asyncio Protocol (so the HTTP/1.1 door hands over to HTTP/2 as in production), then each
round sends ``streams`` HEADERS frames (GET /, END_STREAM, HPACK from the dynamic table after
the first, as h2load sends them) in one read per connection; the ``hello`` app answers each on
the real loop, and responses go to a fake transport that counts writes.

    .venv/bin/python bench/hotpath_h2.py                       # µs/request, uvloop
    .venv/bin/python bench/hotpath_h2.py --instructions        # instructions/request
    .venv/bin/python bench/hotpath_h2.py --engine fast --instructions
    .venv/bin/python bench/hotpath_h2.py --profile             # cProfile by own time

``--engine`` picks the HTTP/2 engine behind ``H2Connection`` (Config ``h2_engine``).
``--instructions`` runs under ``valgrind --tool=callgrind`` with 1 and 3 rounds and divides
the difference, so start-up, imports and the handshake cancel out.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import os
import pstats
import re
import shutil
import struct
import subprocess
import sys
import time
from typing import Any

BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH)
sys.path.insert(0, os.path.dirname(BENCH))

from hotpath import FakeTransport  # noqa: E402  (needs the path above)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
REQUEST_HEADERS = [
    (b":method", b"GET"),
    (b":scheme", b"http"),
    (b":path", b"/"),
    (b":authority", b"127.0.0.1:8000"),
    (b"user-agent", b"h2load nghttp2/1.52.0"),
]


def _frame(kind: int, flags: int, stream_id: int, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))[1:] + struct.pack(">BBI", kind, flags, stream_id) + payload
    )


def _opening() -> bytes:
    """Preface, SETTINGS (a large stream window) and a connection WINDOW_UPDATE: no client
    flow-control frames are needed during the run (13-byte responses)."""
    settings = _frame(0x4, 0, 0, struct.pack(">HI", 0x4, 2**30) + struct.pack(">HI", 0x3, 100))
    return PREFACE + settings + _frame(0x8, 0, 0, struct.pack(">I", 2**31 - 1 - 65535))


class Client:
    """One connection's request frames: stream ids grow, the HPACK block is h2load's."""

    def __init__(self) -> None:
        import hpack

        encoder = hpack.Encoder()
        # h2load's blocks: literals with indexing first, then the same fields from the table
        # (every later block equals the second: the harness does not encode per request).
        self.blocks = [encoder.encode(REQUEST_HEADERS), encoder.encode(REQUEST_HEADERS)]
        assert encoder.encode(REQUEST_HEADERS) == self.blocks[1]
        self.next_id = 1

    def batch(self, streams: int) -> bytes:
        out = []
        for _ in range(streams):
            block = self.blocks[0 if self.next_id == 1 else 1]
            out.append(_frame(0x1, 0x5, self.next_id, block))  # END_STREAM | END_HEADERS
            self.next_id += 2
        return b"".join(out)


def _make(args: argparse.Namespace, loop: asyncio.AbstractEventLoop) -> list[Any]:
    import apps

    from hypercorn.config import Config
    from hypercorn.workers.asyncio_backend import AsyncioBackend, _StreamProtocol
    from hypercorn.workers.backend import ServeOptions
    from hypercorn.workers.driver import WorkerContext, limits_from_config

    config = Config()
    config.keep_alive_max_requests = 2**30
    if args.engine is not None:
        config.h2_engine = args.engine
    backend = AsyncioBackend("uvloop" if args.loop == "uvloop" else "asyncio")
    ctx = WorkerContext(app=apps.hello, backend=backend, limits=limits_from_config(config))
    return [
        _StreamProtocol(loop, ctx.on_connection, ServeOptions(), lambda: None, False)
        for _ in range(args.connections)
    ]


async def _run(args: argparse.Namespace) -> list[float]:
    loop = asyncio.get_running_loop()
    protocols = _make(args, loop)
    transports = [FakeTransport() for _ in protocols]
    clients = [Client() for _ in protocols]
    for protocol, transport in zip(protocols, transports, strict=True):
        protocol.connection_made(transport)
        protocol.data_received(_opening())
    await asyncio.sleep(0)
    per_round = args.requests * args.streams * args.connections
    # Every round's frames are made before it is timed.
    batches = [
        [[client.batch(args.streams) for client in clients] for _ in range(args.requests)]
        for _ in range(args.rounds + 1)
    ]

    async def one_round(frames: list[list[bytes]]) -> float:
        start = time.perf_counter()
        for step in frames:
            for protocol, data in zip(protocols, step, strict=True):
                protocol.data_received(data)
            await asyncio.sleep(0)
            await asyncio.sleep(0)
        return time.perf_counter() - start

    times = []
    for frames in batches:  # the first round warms up
        before = sum(t.writes for t in transports)
        times.append(await one_round(frames))
        done = sum(t.writes for t in transports) - before
        if done < per_round:
            raise SystemExit(f"only {done} writes for {per_round} responses")
    return [t / per_round * 1e6 for t in times[1:]]


def _instructions(args: argparse.Namespace) -> None:
    if shutil.which("valgrind") is None:
        raise SystemExit("--instructions needs valgrind (apt-get install valgrind)")
    requests = 10
    counts = []
    for rounds in (1, 3):
        argv = [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            os.path.abspath(__file__),
            f"--loop={args.loop}",
            f"--connections={args.connections}",
            f"--streams={args.streams}",
            f"--requests={requests}",
            f"--rounds={rounds}",
            *([f"--engine={args.engine}"] if args.engine else []),
            *(["--no-gc"] if args.no_gc else []),
        ]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=1800, check=False)
        match = re.search(r"Collected : (\d+)", result.stderr)
        if result.returncode != 0 or match is None:
            raise SystemExit(f"callgrind run failed:\n{result.stdout}\n{result.stderr[-2000:]}")
        counts.append(int(match[1]))
    per_request = (counts[1] - counts[0]) / (2 * requests * args.streams * args.connections)
    print(
        f"{per_request:,.0f} instructions/request (this, HTTP/2 hello, engine "
        f"{args.engine or 'default'}, {args.loop}, Python {sys.version.split()[0]})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", help="Config h2_engine (default: the Config default)")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    parser.add_argument("--connections", type=int, default=10)
    parser.add_argument("--streams", type=int, default=10, help="concurrent streams (-m)")
    parser.add_argument("--requests", type=int, default=100, help="batches per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--instructions", action="store_true", help="count, with callgrind")
    parser.add_argument("--profile", action="store_true", help="cProfile one run")
    parser.add_argument("--no-gc", action="store_true", help="gc.disable()")
    args = parser.parse_args()
    if args.instructions:
        _instructions(args)
        return
    if args.no_gc:
        gc.disable()
    else:
        from hypercorn.workers.process import settle_gc

        settle_gc()
    if args.loop == "uvloop":
        import uvloop

        loop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
            per_request = loop.run_until_complete(_run(args))
            profiler.disable()
            pstats.Stats(profiler).sort_stats("tottime").print_stats(30)
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
