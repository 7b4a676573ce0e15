"""The applications every server in the benchmark serves (same module, same bytes).

- ``hello``: ASGI 3, 13-byte ``Hello, world!`` body with a content-length header.
- ``stream``: ASGI 3, a 100 KB (102,400 byte) body sent in ten 10 KB ``http.response.body``
  messages without a content-length, so HTTP/1.1 servers use chunked transfer-encoding.
- ``wsgi_hello``: WSGI, the same 13-byte body with a content-length header.
- ``ws_echo``: ASGI 3 WebSocket echo (and ``hello`` for plain HTTP requests).

The ASGI apps answer the lifespan protocol so no server logs a lifespan error. They never read
the request body: every benchmark request is a GET without one. Nothing here allocates per
request beyond what the protocol requires, so the numbers measure the server, not the app.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

HELLO_BODY = b"Hello, world!"
STREAM_CHUNK = b"x" * 10_240
STREAM_CHUNKS = 10
STREAM_SIZE = len(STREAM_CHUNK) * STREAM_CHUNKS  # 102,400 bytes

_HELLO_START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"text/plain"), (b"content-length", b"13")],
}
_HELLO_BODY = {"type": "http.response.body", "body": HELLO_BODY}
_STREAM_START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"application/octet-stream")],
}
_STREAM_MORE = {"type": "http.response.body", "body": STREAM_CHUNK, "more_body": True}
_STREAM_END = {"type": "http.response.body", "body": b"", "more_body": False}


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def hello(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "http":
        # Fresh dicts: a server may legitimately mutate the message it is given.
        await send(dict(_HELLO_START))
        await send(dict(_HELLO_BODY))
    elif scope["type"] == "lifespan":
        await _lifespan(receive, send)


async def stream(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "http":
        await send(dict(_STREAM_START))
        for _ in range(STREAM_CHUNKS):
            await send(dict(_STREAM_MORE))
        await send(dict(_STREAM_END))
    elif scope["type"] == "lifespan":
        await _lifespan(receive, send)


_WSGI_HEADERS = [("Content-Type", "text/plain"), ("Content-Length", "13")]


def wsgi_hello(
    environ: dict[str, Any], start_response: Callable[[str, list[tuple[str, str]]], object]
) -> Iterable[bytes]:
    start_response("200 OK", list(_WSGI_HEADERS))
    return [HELLO_BODY]


# Alias so ``apps:app`` also works for servers that default to the attribute name ``app``.
app = hello


async def ws_echo(scope: Scope, receive: Receive, send: Send) -> None:
    """WebSocket echo (the ``ws-echo`` workload); a plain GET gets ``hello`` (readiness)."""
    if scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            if message["type"] != "websocket.receive":
                return
            if message.get("text") is not None:
                await send({"type": "websocket.send", "text": message["text"]})
            else:
                await send({"type": "websocket.send", "bytes": message["bytes"]})
    else:
        await hello(scope, receive, send)
