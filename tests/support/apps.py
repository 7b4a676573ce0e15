"""ASGI and WSGI applications the tests serve: echo, streaming, raising and lifespan variants.

They only use the ASGI/WSGI interfaces (no event-loop library), so every backend can run them.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import sniffio

Scope = dict[str, Any]
Receive = Callable[[], Any]
Send = Callable[[dict[str, Any]], Any]


async def loop_sleep(seconds: float = 0.0) -> None:
    """Sleep (or just give the loop a turn) on whichever loop runs the app: asyncio, uvloop
    or trio, so that test apps run on every backend."""
    library = importlib.import_module(sniffio.current_async_library())
    await library.sleep(seconds)


async def read_body(receive: Receive) -> bytes:
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return bytes(body)
        body += message.get("body", b"")
        if not message.get("more_body", False):
            return bytes(body)


async def send_response(
    send: Send,
    body: bytes,
    status: int = 200,
    content_type: bytes = b"text/plain; charset=utf-8",
    extra_headers: Iterable[tuple[bytes, bytes]] = (),
) -> None:
    headers = [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode()),
        *extra_headers,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def handle_lifespan(receive: Receive, send: Send) -> None:
    """Answer startup and shutdown with "complete"."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def hello_app(scope: Scope, receive: Receive, send: Send) -> None:
    """200 "Hello, world!" for every request; supports lifespan."""
    if scope["type"] == "lifespan":
        await handle_lifespan(receive, send)
        return
    await read_body(receive)
    await send_response(send, b"Hello, world!")


async def echo_app(scope: Scope, receive: Receive, send: Send) -> None:
    """JSON with the request's method, path, query, headers and body (as latin-1 text)."""
    if scope["type"] == "lifespan":
        await handle_lifespan(receive, send)
        return
    body = await read_body(receive)
    payload = {
        "method": scope["method"],
        "path": scope["path"],
        "root_path": scope.get("root_path", ""),
        "query_string": scope["query_string"].decode("latin-1"),
        "http_version": scope["http_version"],
        "scheme": scope["scheme"],
        "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]],
        "body": body.decode("latin-1"),
        "state": sorted((scope.get("state") or {}).keys()),
    }
    await send_response(send, json.dumps(payload).encode(), content_type=b"application/json")


async def where_app(scope: Scope, receive: Receive, send: Send) -> None:
    """Where the request came from, as JSON: type, path, scheme, client, server, host header.
    HTTP answers with it; a WebSocket sends it once, then echoes text until the client leaves.
    """
    if scope["type"] == "lifespan":
        await handle_lifespan(receive, send)
        return
    host = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
    seen = json.dumps(
        {
            "type": scope["type"],
            "path": scope["path"],
            "scheme": scope["scheme"],
            "client": scope["client"],
            "server": scope["server"],
            "host": host,
        }
    )
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": seen})
        while (message := await receive())["type"] == "websocket.receive":
            await send({"type": "websocket.send", "text": message.get("text") or ""})
        return
    await read_body(receive)
    await send_response(send, seen.encode())


def streaming_app(chunks: int = 5, size: int = 10) -> Callable[..., Any]:
    """An ASGI app sending ``chunks`` body messages of ``size`` bytes each (no length)."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        await read_body(receive)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for index in range(chunks):
            body = bytes([ord("a") + index % 26]) * size
            await send({"type": "http.response.body", "body": body, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    return app


async def raising_app(scope: Scope, receive: Receive, send: Send) -> None:
    """Raises before starting the response (the server must answer 500)."""
    if scope["type"] == "lifespan":
        await handle_lifespan(receive, send)
        return
    raise RuntimeError("application bug")


class LifespanApp:
    """Lifespan behaviours: complete (storing ``state``), fail, raise, or ignore lifespan."""

    def __init__(
        self,
        *,
        startup_failure: str | None = None,
        shutdown_failure: str | None = None,
        raise_on_scope: bool = False,
        raise_in_startup: bool = False,
        state: dict[str, Any] | None = None,
    ) -> None:
        self.startup_failure = startup_failure
        self.shutdown_failure = shutdown_failure
        self.raise_on_scope = raise_on_scope
        self.raise_in_startup = raise_in_startup
        self.state = state or {}
        self.events: list[str] = []
        self.request_states: list[dict[str, Any]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            if self.raise_on_scope:
                raise ValueError("lifespan not supported here")
            await self._lifespan(scope, receive, send)
            return
        self.request_states.append(dict(scope.get("state") or {}))
        await read_body(receive)
        await send_response(send, b"ok")

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            self.events.append(message["type"])
            if message["type"] == "lifespan.startup":
                if self.raise_in_startup:
                    raise ConnectionError("cannot reach the database")
                if self.startup_failure is not None:
                    await send({"type": "lifespan.startup.failed", "message": self.startup_failure})
                    return
                scope["state"].update(self.state)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.shutdown_failure is not None:
                    await send(
                        {"type": "lifespan.shutdown.failed", "message": self.shutdown_failure}
                    )
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                return


# -- WSGI ---------------------------------------------------------------------------------------


def wsgi_hello(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"Hello, world!"]


def wsgi_echo(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    """JSON with the string-valued environ entries and the body."""
    body = environ["wsgi.input"].read()
    payload = {key: value for key, value in environ.items() if isinstance(value, str)}
    payload["body"] = body.decode("latin-1")
    data = json.dumps(payload).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [data]


def wsgi_streaming(chunks: int = 5, size: int = 10) -> Callable[..., Iterator[bytes]]:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        for index in range(chunks):
            yield bytes([ord("a") + index % 26]) * size

    return app


def wsgi_raising(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    raise RuntimeError("wsgi application bug")
