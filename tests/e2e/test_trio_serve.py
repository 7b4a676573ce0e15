"""``hypercorn.trio.serve`` inside a trio program: nursery.start, graceful stops, lifespan.

The server runs in the test's own ``trio.run`` on a pre-bound port-0 socket (``fd://``); the
client is httpx in a worker thread (``trio.to_thread``), so the loop under test is never
blocked by the client.
"""

from __future__ import annotations

import os
import socket
from typing import Any

import httpx
import pytest

from hypercorn.config import Config
from hypercorn.errors import BootError
from hypercorn.logging import Logger
from hypercorn.middleware import TrioWSGIMiddleware
from tests.support.apps import wsgi_hello

trio = pytest.importorskip("trio")
from hypercorn.trio import serve  # noqa: E402

TIMEOUT = 10.0
Scope = dict[str, Any]


class ListLogger(Logger):
    """Keeps the error log's info lines (upstream's logger_class hook)."""

    lines: list[str]

    async def info(self, message: str, *args: object, **kwargs: object) -> None:
        ListLogger.lines.append(message % args)


def make_config(sock: socket.socket, **settings: Any) -> Config:
    config = Config()
    config.bind = [f"fd://{os.dup(sock.fileno())}"]  # (serve closes what it adopts)
    config.accesslog = None
    config.logger_class = ListLogger
    ListLogger.lines = []
    for name, value in settings.items():
        setattr(config, name, value)
    return config


class App:
    """Lifespan-aware app: ``/slow`` waits until ``release`` is set."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.release = trio.Event()
        self.slow_started = trio.Event()

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                kind = message["type"].split(".")[1]
                self.events.append(kind)
                await send({"type": f"lifespan.{kind}.complete"})
                if kind == "shutdown":
                    return
        if scope["path"] == "/slow":
            self.slow_started.set()
            await self.release.wait()
        body = scope["path"].encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})


async def get(url: str) -> httpx.Response:
    def request() -> httpx.Response:
        with httpx.Client(timeout=TIMEOUT) as client:
            return client.get(url)

    return await trio.to_thread.run_sync(request)


def test_nursery_start_returns_the_bound_urls_once_listening(bound_socket: socket.socket) -> None:
    app = App()
    config = make_config(bound_socket)
    host, port = bound_socket.getsockname()

    async def main() -> None:
        with trio.fail_after(TIMEOUT):
            async with trio.open_nursery() as nursery:
                binds = await nursery.start(serve, app, config)
                assert binds == [f"http://{host}:{port}"]
                assert app.events == ["startup"]  # lifespan started before "listening"
                assert (await get(binds[0] + "/hi")).text == "/hi"
                nursery.cancel_scope.cancel()
        assert app.events == ["startup", "shutdown"]

    trio.run(main)
    running = [line for line in ListLogger.lines if line.startswith("Running on")]
    assert running == [f"Running on http://{host}:{port} (CTRL + C to quit)"]


def test_cancelling_the_nursery_stops_gracefully(bound_socket: socket.socket) -> None:
    """The request in flight when the caller cancels finishes (with Connection: close)."""
    app = App()
    config = make_config(bound_socket, graceful_timeout=TIMEOUT)
    responses: list[httpx.Response] = []

    async def main() -> None:
        with trio.fail_after(TIMEOUT):
            async with trio.open_nursery() as outer, trio.open_nursery() as server:
                binds = await server.start(serve, app, config)

                async def slow() -> None:
                    responses.append(await get(binds[0] + "/slow"))

                outer.start_soon(slow)
                await app.slow_started.wait()
                server.cancel_scope.cancel()
                # (The nursery's exit waits for the server: let the request finish.)
                outer.start_soon(release_soon, app)

    async def release_soon(app: App) -> None:
        await trio.sleep(0.1)
        app.release.set()

    trio.run(main)
    (response,) = responses
    assert response.text == "/slow"
    assert response.headers["connection"] == "close"
    assert app.events == ["startup", "shutdown"]


def test_shutdown_trigger_stops_gracefully(bound_socket: socket.socket) -> None:
    app = App()
    config = make_config(bound_socket)

    async def main() -> None:
        stop = trio.Event()
        with trio.fail_after(TIMEOUT):
            async with trio.open_nursery() as nursery:
                binds = await nursery.start(
                    lambda task_status: serve(
                        app, config, shutdown_trigger=stop.wait, task_status=task_status
                    )
                )
                assert (await get(binds[0] + "/")).status_code == 200
                stop.set()
        # The nursery ended on its own: serve() returned after the trigger.
        assert app.events == ["startup", "shutdown"]

    trio.run(main)


def test_a_lifespan_failure_raises_boot_error_from_nursery_start(
    bound_socket: socket.socket,
) -> None:
    async def failing(scope: Scope, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "no database"})

    config = make_config(bound_socket)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(serve, failing, config)

    with pytest.raises(BaseException) as info:
        trio.run(main)
    # trio wraps what the nursery raised in a group; inside is our BootError, ungrouped.
    errors = getattr(info.value, "exceptions", [info.value])
    assert [type(error) for error in errors] == [BootError]
    assert "no database" in str(errors[0])


def test_trio_wsgi_middleware_runs_in_trio_threads(bound_socket: socket.socket) -> None:
    config = make_config(bound_socket)

    async def main() -> None:
        with trio.fail_after(TIMEOUT):
            async with trio.open_nursery() as nursery:
                binds = await nursery.start(serve, TrioWSGIMiddleware(wsgi_hello), config)
                response = await get(binds[0] + "/")
                assert response.status_code == 200
                assert response.text == "Hello, world!"
                nursery.cancel_scope.cancel()

    trio.run(main)
