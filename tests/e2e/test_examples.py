"""The framework apps in ``examples/`` served for real and driven by httpx and ``websockets``:
FastAPI (routes, JSON, WebSocket, background tasks, lifespan state), Quart (HTTP and
WebSocket), Flask over WSGI (a 20 MB form upload, streaming) and the Django ASGI project (a
view, a form POST with CSRF, the admin login page and its static assets through WhiteNoise).
Each framework skips with its reason when it is not installed (the ``test`` extra has them)."""

from __future__ import annotations

import hashlib
import importlib
import os
import re
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect as ws_connect

from hypercorn.config import Config
from tests.e2e.conftest import RunningServer, start_server

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
DEADLINE = 10.0


@pytest.fixture
def serve_example(bound_socket: socket.socket) -> Iterator[Any]:
    """``serve_example(app, config=None)`` -> the running server (asyncio worker)."""
    started: list[RunningServer] = []

    def serve(app: Any, config: Config | None = None) -> RunningServer:
        server = start_server(app, bound_socket, worker_class="asyncio", config=config)
        started.append(server)
        return server

    yield serve
    for server in started:
        server.stop(timeout=30)


def example(module: str, framework: str) -> Any:
    pytest.importorskip(framework)
    return importlib.import_module(f"examples.{module}").app


def ws_url(server: RunningServer, path: str) -> str:
    return f"ws://{server.host}:{server.port}{path}"


def test_fastapi(serve_example: Any) -> None:
    server = serve_example(example("fastapi_app", "fastapi"))
    with httpx.Client(base_url=server.url, timeout=DEADLINE) as client:
        assert client.get("/").json() == {"hello": "world", "state": "at startup"}
        assert client.get("/items/3", params={"q": "x"}).json() == {"item_id": 3, "q": "x"}
        assert client.get("/items/three").status_code == 422
        response = client.post("/items", json={"name": "pen", "price": 10})
        assert response.json() == {"name": "pen", "price_with_tax": 12.0}
        # The background task runs after the response went out: poll for it, bounded.
        end = time.monotonic() + DEADLINE
        while (done := client.get("/done").json()) != ["pen"] and time.monotonic() < end:
            pass
        assert done == ["pen"]
    with ws_connect(ws_url(server, "/ws"), open_timeout=DEADLINE) as ws:
        for text in ("hello", "é" * 70_000):
            ws.send(text)
            assert ws.recv(timeout=DEADLINE) == "echo: " + text


def test_quart(serve_example: Any) -> None:
    server = serve_example(example("quart_app", "quart"))
    with httpx.Client(base_url=server.url, timeout=DEADLINE) as client:
        assert client.get("/").text == "Hello from Quart"
        assert client.post("/echo", json={"a": [1, 2]}).json() == {"received": {"a": [1, 2]}}
    with ws_connect(ws_url(server, "/ws"), open_timeout=DEADLINE) as ws:
        ws.send("ping")
        assert ws.recv(timeout=DEADLINE) == "echo: ping"


def test_flask_upload_and_stream(serve_example: Any) -> None:
    # The same config file as the README's command line.
    server = serve_example(example("flask_app", "flask"), Config.from_toml(EXAMPLES / "flask.toml"))
    upload = os.urandom(20 * 1024 * 1024)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        assert "multipart/form-data" in client.get("/").text
        response = client.post(
            "/upload", data={"title": "big"}, files={"file": ("big.bin", upload)}
        )
        assert response.status_code == 200, response.text
        assert response.json() == {
            "title": "big",
            "size": len(upload),
            "sha256": hashlib.sha256(upload).hexdigest(),
        }
        # (More than the WSGI bridge buffers before it streams: see wsgi_bridge.HIGH_WATER.)
        with client.stream("GET", "/stream", params={"lines": 50_000}) as streamed:
            assert streamed.headers["transfer-encoding"] == "chunked"
            body = b"".join(streamed.iter_bytes())
        assert body == b"".join(f"line {n}\n".encode() for n in range(50_000))


@pytest.fixture
def django_app(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    pytest.importorskip("django")
    pytest.importorskip("whitenoise")
    monkeypatch.syspath_prepend(str(EXAMPLES / "django_project"))
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "mysite.settings")
    monkeypatch.setenv("DJANGO_DB", str(tmp_path / "db.sqlite3"))
    module = importlib.import_module("mysite.asgi")
    yield module.application
    # (Django's settings stay configured for the process; the module's path goes.)
    sys.modules.pop("mysite.asgi", None)


# WhiteNoise answers with a sync file iterator, which Django's ASGI handler consumes with this
# warning (WhiteNoise has no async responses yet); the files are served whole all the same.
@pytest.mark.filterwarnings("ignore:StreamingHttpResponse must consume synchronous iterators")
def test_django(serve_example: Any, django_app: Any) -> None:
    server = serve_example(django_app)
    with httpx.Client(base_url=server.url, timeout=DEADLINE) as client:
        page = client.get("/")
        assert page.status_code == 200
        assert "Hello from Django" in page.text
        css = re.search(r'href="(/static/site\.css)"', page.text)
        assert css is not None, page.text
        static = client.get(css.group(1))
        assert static.status_code == 200
        assert static.headers["content-type"].startswith("text/css")

        # A form POST with Django's CSRF protection: the token from the page and the cookie.
        form = client.get("/message/")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text)
        assert token is not None, form.text
        assert "csrftoken" in client.cookies
        fields = {"name": "Ada", "message": "hello, Django"}
        thanks = client.post("/message/", data={**fields, "csrfmiddlewaretoken": token.group(1)})
        assert thanks.status_code == 200
        assert 'Thanks, Ada: "hello, Django"' in thanks.text
        client.cookies.clear()
        assert client.post("/message/", data=fields).status_code == 403

        # The admin's login page and the static assets it links, served by WhiteNoise.
        login = client.get("/admin/login/")
        assert login.status_code == 200
        assert 'name="username"' in login.text
        assets = re.findall(r'(?:href|src)="(/static/admin/[^"]+)"', login.text)
        assert any(asset.endswith("base.css") for asset in assets), assets
        for asset in assets:
            response = client.get(asset)
            assert response.status_code == 200, asset
            assert response.content


def readme_commands() -> list[Any]:
    """``(directory, hypercorn arguments)`` for each command line in examples/README.md."""
    found = []
    for line in (EXAMPLES / "README.md").read_text().splitlines():
        command = re.search(r"`(?:cd (\S+) && )?hypercorn ([^`]+)`\s*\|$", line)
        if command:
            directory, args = command.groups()
            found.append(pytest.param(directory or ".", args.split(), id=args.split()[-1]))
    return found


NEEDS = {"fastapi_app": "fastapi", "quart_app": "quart", "flask_app": "flask", "mysite": "django"}


@pytest.mark.slow
@pytest.mark.parametrize(("directory", "args"), readme_commands())
def test_readme_command_serves(
    directory: str, args: list[str], bound_socket: socket.socket, tmp_path: Path
) -> None:
    """Each README line, run as written (with the test's socket instead of port 8000)."""
    from tests.support.procs import running

    for name, framework in NEEDS.items():
        if name in args[-1]:
            pytest.importorskip(framework)
    bound_socket.setblocking(True)
    port = bound_socket.getsockname()[1]
    env = {"DJANGO_DB": str(tmp_path / "db.sqlite3")}
    cwd = EXAMPLES.parent / directory
    with running(args, cwd=cwd, sock=bound_socket, env=env, log_dir=tmp_path) as server:
        server.wait_ready(timeout=60)
        response = httpx.get(f"http://127.0.0.1:{port}/", timeout=DEADLINE)
        assert response.status_code == 200, server.stderr()
