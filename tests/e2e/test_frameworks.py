"""Real frameworks over a real socket: Starlette and FastAPI (ASGI), Flask (WSGI), with httpx.
(The apps in examples/, Django and Quart among them, are served in ``test_examples.py``.)

The server runs ``hypercorn.workers.serve.serve`` on each backend (asyncio, uvloop, trio: the
``worker_class`` fixture) in a background thread (``tests.e2e.conftest.start_server``), on the
pre-bound port-0 socket from the ``bound_socket`` fixture. Starlette and FastAPI run on trio
through anyio.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from hypercorn.apps import ModedApp
from hypercorn.config import Config
from tests.e2e.conftest import start_server

starlette = pytest.importorskip("starlette")
fastapi = pytest.importorskip("fastapi")
flask = pytest.importorskip("flask")

from fastapi import FastAPI  # noqa: E402
from flask import Flask, Response, jsonify, request, stream_with_context  # noqa: E402
from pydantic import BaseModel  # noqa: E402
from starlette.applications import Starlette  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import (  # noqa: E402
    FileResponse,
    JSONResponse,
    PlainTextResponse,
    StreamingResponse,
)
from starlette.routing import Route  # noqa: E402


@contextmanager
def serving(
    app: object,
    sock: socket.socket,
    worker_class: str,
    config: Config | None = None,
    mode: Any = None,
) -> Iterator[str]:
    """Serve ``app`` on ``sock`` in a background thread; yields the base URL."""
    if mode is not None:
        app = ModedApp(app, mode)
    server = start_server(app, sock, worker_class=worker_class, config=config)
    try:
        yield server.url
    finally:
        server.stop(timeout=30)


# -- Starlette -------------------------------------------------------------------------------


def starlette_app(events: list[str], file: Path | None = None) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        events.append("startup")
        yield {"greeting": "hello from lifespan"}
        events.append("shutdown")

    async def home(request: Request) -> PlainTextResponse:
        return PlainTextResponse("home")

    async def item(request: Request) -> JSONResponse:
        return JSONResponse(
            {
                "id": int(request.path_params["item_id"]),
                "q": request.query_params.get("q"),
                "greeting": request.state.greeting,
            }
        )

    async def echo(request: Request) -> JSONResponse:
        body = await request.body()
        return JSONResponse({"length": len(body), "type": request.headers.get("content-type")})

    async def stream(request: Request) -> StreamingResponse:
        async def numbers() -> AsyncIterator[bytes]:
            for number in range(5):
                yield f"{number}\n".encode()

        return StreamingResponse(numbers(), media_type="text/plain")

    async def download(request: Request) -> FileResponse:
        assert file is not None
        return FileResponse(file, filename="data.bin")

    return Starlette(
        routes=[
            Route("/file", download, methods=["GET", "HEAD"]),
            Route("/", home),
            Route("/items/{item_id:int}", item),
            Route("/echo", echo, methods=["POST"]),
            Route("/stream", stream),
        ],
        lifespan=lifespan,
    )


def test_starlette(bound_socket: socket.socket, worker_class: str, tmp_path: Path) -> None:
    events: list[str] = []
    data = os.urandom(3 * 1024 * 1024 + 7)
    (tmp_path / "data.bin").write_bytes(data)
    with (
        serving(starlette_app(events, tmp_path / "data.bin"), bound_socket, worker_class) as url,
        httpx.Client(base_url=url) as client,
    ):
        assert events == ["startup"]
        response = client.get("/")
        assert (response.status_code, response.text) == (200, "home")
        assert response.headers["content-type"].startswith("text/plain")

        response = client.get("/items/42", params={"q": "x y"})
        assert response.json() == {"id": 42, "q": "x y", "greeting": "hello from lifespan"}

        assert client.get("/missing").status_code == 404

        payload = b"z" * 100_000
        response = client.post("/echo", content=payload, headers={"content-type": "app/x"})
        assert response.json() == {"length": 100_000, "type": "app/x"}

        with client.stream("GET", "/stream") as streamed:
            assert streamed.status_code == 200
            assert streamed.headers["transfer-encoding"] == "chunked"
            assert b"".join(streamed.iter_bytes()) == b"0\n1\n2\n3\n4\n"

        response = client.get("/file")
        assert response.content == data
        assert response.headers["content-length"] == str(len(data))
        assert 'filename="data.bin"' in response.headers["content-disposition"]
        head = client.head("/file")
        assert (head.headers["content-length"], head.content) == (str(len(data)), b"")
        ranged = client.get("/file", headers={"range": "bytes=100-199"})
        assert (ranged.status_code, ranged.content) == (206, data[100:200])
    assert events == ["startup", "shutdown"]


# -- FastAPI ---------------------------------------------------------------------------------


class Item(BaseModel):
    name: str
    price: float


def fastapi_app() -> FastAPI:
    app = FastAPI()

    @app.get("/items/{item_id}")
    async def read_item(item_id: int, q: str | None = None) -> dict[str, Any]:
        return {"item_id": item_id, "q": q}

    @app.post("/items")
    async def create_item(item: Item) -> dict[str, Any]:
        return {"name": item.name, "price_with_tax": round(item.price * 1.2, 2)}

    @app.get("/sync")
    def sync_endpoint() -> dict[str, str]:
        return {"ran": "in a thread"}

    return app


def test_fastapi(bound_socket: socket.socket, worker_class: str) -> None:
    with (
        serving(fastapi_app(), bound_socket, worker_class) as url,
        httpx.Client(base_url=url) as client,
    ):
        assert client.get("/items/7", params={"q": "a"}).json() == {"item_id": 7, "q": "a"}
        response = client.post("/items", json={"name": "pen", "price": 10})
        assert response.json() == {"name": "pen", "price_with_tax": 12.0}
        assert client.post("/items", json={"name": "pen"}).status_code == 422
        assert client.get("/items/not-a-number").status_code == 422
        assert client.get("/sync").json() == {"ran": "in a thread"}
        assert client.get("/openapi.json").json()["openapi"].startswith("3.")


# -- Flask over WSGI ---------------------------------------------------------------------------


def flask_app() -> Flask:
    app = Flask("hypercorn_e2e")

    @app.route("/")
    def home() -> str:
        return "flask home"

    @app.route("/json")
    def as_json() -> Any:
        return jsonify(ok=True, args=request.args.to_dict())

    @app.route("/echo", methods=["POST"])
    def echo() -> Any:
        return jsonify(
            length=len(request.get_data()),
            content_type=request.content_type,
            custom=request.headers.get("X-Custom"),
        )

    @app.route("/where")
    def where() -> Any:
        return jsonify(path=request.path, script_root=request.script_root, url=request.url)

    @app.route("/stream")
    def stream() -> Response:
        def generate() -> Iterator[str]:
            for number in range(100):
                yield f"line {number}\n"

        return Response(stream_with_context(generate()), mimetype="text/plain")

    @app.route("/error")
    def error() -> str:
        raise RuntimeError("flask view bug")

    return app


def test_flask(bound_socket: socket.socket, worker_class: str) -> None:
    config = Config()
    config.wsgi_max_body_size = 1_000_000
    with (
        serving(flask_app(), bound_socket, worker_class, config) as url,
        httpx.Client(base_url=url) as client,
    ):
        response = client.get("/")
        assert (response.status_code, response.text) == (200, "flask home")
        assert response.headers["content-length"] == "10"

        assert client.get("/json", params={"a": "1"}).json() == {"ok": True, "args": {"a": "1"}}

        response = client.post(
            "/echo",
            content=b"x" * 500_000,
            headers={"content-type": "application/octet-stream", "x-custom": "yes"},
        )
        assert response.json() == {
            "length": 500_000,
            "content_type": "application/octet-stream",
            "custom": "yes",
        }

        with client.stream("GET", "/stream") as streamed:
            body = b"".join(streamed.iter_bytes())
        assert body == b"".join(f"line {n}\n".encode() for n in range(100))

        assert client.get("/nothing-here").status_code == 404
        assert client.post("/echo", content=b"y" * 1_000_001).status_code == 413
        assert client.get("/error").status_code == 500
        assert client.get("/").status_code == 200  # still serving after errors


def test_flask_root_path(bound_socket: socket.socket, worker_class: str) -> None:
    config = Config()
    config.root_path = "/prefix"
    with (
        serving(flask_app(), bound_socket, worker_class, config) as url,
        httpx.Client(base_url=url) as client,
    ):
        data = client.get("/prefix/where").json()
        assert data["path"] == "/where"
        assert data["script_root"] == "/prefix"
        assert data["url"].endswith("/prefix/where")


def test_forced_wsgi_mode(bound_socket: socket.socket, worker_class: str) -> None:
    def wsgi(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps({"method": environ["REQUEST_METHOD"]}).encode()]

    with (
        serving(wsgi, bound_socket, worker_class, mode="wsgi") as url,
        httpx.Client(base_url=url) as client,
    ):
        assert client.delete("/").json() == {"method": "DELETE"}
