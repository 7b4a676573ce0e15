"""Ceiling reference: a uvloop Protocol that answers every request head with a fixed response.

It does not parse HTTP (it only counts blank lines that end request heads), so it is not a
server; it shows what the event loop and the kernel cost on this machine, the floor under every
real server's per-request time. Run by ``bench/run.py --only raw-uvloop``.

Usage: python bench/raw_uvloop.py PORT [WORKERS]
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys

import uvloop

RESPONSE = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 13\r\n\r\nHello, world!"


class RawProtocol(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.pending = b""

    def data_received(self, data: bytes) -> None:
        data = self.pending + data
        count = data.count(b"\r\n\r\n")
        if count:
            self.transport.write(RESPONSE * count)
            self.pending = data[data.rindex(b"\r\n\r\n") + 4 :]
        else:
            self.pending = data


async def serve(sock: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = await loop.create_server(RawProtocol, sock=sock, backlog=4096)
    async with server:
        await stop.wait()


def main() -> None:
    port = int(sys.argv[1])
    workers = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(4096)
    sock.setblocking(False)
    # Like the real servers' master processes, the parent only supervises; children serve.
    children = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:
            uvloop.run(serve(sock))
            os._exit(0)
        children.append(pid)
    sock.close()
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    signal.signal(signal.SIGINT, lambda signum, frame: None)
    try:
        for pid in children:
            while True:
                try:
                    os.waitpid(pid, 0)
                    break
                except InterruptedError:
                    continue
                except ChildProcessError:
                    break
    finally:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)


if __name__ == "__main__":
    main()
