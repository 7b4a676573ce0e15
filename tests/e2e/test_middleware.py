"""The middleware in ``hypercorn.middleware`` through the real server, on every worker class,
HTTP and WebSocket scopes (the ASGI-level cases are in ``tests/test_public_api.py``)."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect as ws_connect

from hypercorn.middleware import (
    AsyncioDispatcherMiddleware,
    AsyncioWSGIMiddleware,
    HTTPToHTTPSRedirectMiddleware,
    ProxyFixMiddleware,
    TrioDispatcherMiddleware,
    TrioWSGIMiddleware,
)
from tests.e2e.conftest import RunningServer
from tests.support.certs import Certs

DEADLINE = 10.0


def recorder(name: str, events: list[str]) -> Any:
    """An app that records its lifespan events and answers with what its scope said."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                stage = message["type"].rpartition(".")[2]
                events.append(f"{name} {stage}")
                await send({"type": f"lifespan.{stage}.complete"})
                if stage == "shutdown":
                    return
        headers = dict(scope["headers"])
        seen = json.dumps(
            {
                "app": name,
                "type": scope["type"],
                "path": scope["path"],
                "scheme": scope["scheme"],
                "client": scope["client"],
                "host": headers.get(b"host", b"").decode(),
            }
        )
        if scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.send", "text": seen})
            await send({"type": "websocket.close"})
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": seen.encode()})

    return app


def ws_seen(url: str, **kwargs: Any) -> dict[str, Any]:
    with ws_connect(url, open_timeout=DEADLINE, **kwargs) as ws:
        result: dict[str, Any] = json.loads(ws.recv(timeout=DEADLINE))
    return result


def ws_refused(url: str) -> Any:
    """The response refusing the handshake. (The client is given its socket, so it does not
    follow a redirect: it raises ValueError from the InvalidStatus instead.)"""
    address = urlsplit(url)
    sock = socket.create_connection((address.hostname, address.port), timeout=DEADLINE)
    with pytest.raises((InvalidStatus, ValueError)) as refused:
        ws_connect(url, sock=sock, open_timeout=DEADLINE)
    error = refused.value if isinstance(refused.value, InvalidStatus) else refused.value.__cause__
    assert isinstance(error, InvalidStatus), refused.value
    sock.close()
    return error.response


def dispatcher_for(worker_class: str) -> Any:
    return TrioDispatcherMiddleware if worker_class == "trio" else AsyncioDispatcherMiddleware


def test_dispatcher(run_server: Callable[..., RunningServer], worker_class: str) -> None:
    events: list[str] = []
    app = dispatcher_for(worker_class)(
        {"/api": recorder("api", events), "/": recorder("site", events)}
    )
    server = run_server(app)
    assert sorted(events) == ["api startup", "site startup"]
    with httpx.Client(base_url=server.url, timeout=DEADLINE) as client:
        api = client.get("/api/items").json()
        assert (api["app"], api["path"]) == ("api", "/items")
        assert client.get("/apiary").json()["app"] == "site"
    ws = f"ws://{server.host}:{server.port}"
    assert (ws_seen(ws + "/api/feed")["app"], ws_seen(ws + "/api/feed")["path"]) == ("api", "/feed")
    assert ws_seen(ws + "/chat")["app"] == "site"
    server.stop()
    assert sorted(events) == ["api shutdown", "api startup", "site shutdown", "site startup"]


def test_dispatcher_unmatched(run_server: Callable[..., RunningServer], worker_class: str) -> None:
    server = run_server(dispatcher_for(worker_class)({"/api": recorder("api", [])}))
    assert httpx.get(server.url + "/elsewhere", timeout=DEADLINE).status_code == 404
    assert ws_refused(f"ws://{server.host}:{server.port}/elsewhere").status_code == 403


def test_http_to_https_redirect(run_server: Callable[..., RunningServer]) -> None:
    server = run_server(HTTPToHTTPSRedirectMiddleware(recorder("app", []), host=None))
    response = httpx.get(server.url + "/a/b?c=1", timeout=DEADLINE)
    assert response.status_code == 307
    assert response.headers["location"] == f"https://{server.host}:{server.port}/a/b?c=1"
    # A WebSocket handshake gets the redirect as a denial response (the server offers it).
    refused = ws_refused(f"ws://{server.host}:{server.port}/feed?x=2")
    assert refused.status_code == 307
    assert refused.headers["location"] == f"wss://{server.host}:{server.port}/feed?x=2"


def test_http_to_https_passes_tls_through(
    run_server: Callable[..., RunningServer], certs: Certs
) -> None:
    app = HTTPToHTTPSRedirectMiddleware(recorder("app", []), host="public.example")
    server = run_server(app, secure=True, **certs.server_settings)
    with httpx.Client(verify=certs.client_context(), timeout=DEADLINE) as client:
        assert client.get(server.url + "/x").json()["scheme"] == "https"
    seen = ws_seen(f"wss://{server.host}:{server.port}/x", ssl=certs.client_context())
    assert seen["scheme"] == "wss"


def test_proxy_fix(run_server: Callable[..., RunningServer]) -> None:
    server = run_server(ProxyFixMiddleware(recorder("app", []), trusted_hops=1))
    headers = {
        "x-forwarded-for": "198.51.100.66, 203.0.113.9",  # (the first is the client's own claim)
        "x-forwarded-proto": "https",
        "x-forwarded-host": "public.example",
    }
    seen = httpx.get(server.url + "/", headers=headers, timeout=DEADLINE).json()
    assert (seen["client"], seen["scheme"], seen["host"]) == (
        ["203.0.113.9", 0],
        "https",
        "public.example",
    )
    seen = ws_seen(f"ws://{server.host}:{server.port}/", additional_headers=headers)
    assert (seen["client"], seen["scheme"], seen["host"]) == (
        ["203.0.113.9", 0],
        "wss",
        "public.example",
    )
    plain = httpx.get(server.url + "/", timeout=DEADLINE).json()
    assert (plain["client"][0], plain["scheme"]) == ("127.0.0.1", "http")


def test_proxy_fix_modern(run_server: Callable[..., RunningServer]) -> None:
    server = run_server(ProxyFixMiddleware(recorder("app", []), mode="modern"))
    forwarded = {"forwarded": 'for=192.0.2.60;proto=http;host="public.example"'}
    seen = ws_seen(f"ws://{server.host}:{server.port}/", additional_headers=forwarded)
    assert (seen["client"], seen["scheme"], seen["host"]) == (
        ["192.0.2.60", 0],
        "ws",
        "public.example",
    )


def wsgi_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    body = environ["wsgi.input"].read()
    start_response("200 OK", [("content-type", "text/plain")])
    return [f"{environ['PATH_INFO']} {len(body)}".encode()]


def test_wsgi_middleware(run_server: Callable[..., RunningServer], worker_class: str) -> None:
    wsgi = TrioWSGIMiddleware if worker_class == "trio" else AsyncioWSGIMiddleware
    app = dispatcher_for(worker_class)(
        {"/wsgi": wsgi(wsgi_app, max_body_size=1000), "/": recorder("asgi", [])}
    )
    server = run_server(app)
    with httpx.Client(base_url=server.url, timeout=DEADLINE) as client:
        response = client.post("/wsgi/form", content=b"x" * 1000)
        assert (response.status_code, response.text) == (200, "/form 1000")
        assert client.post("/wsgi/form", content=b"x" * 1001).status_code == 413
        assert client.get("/other").json()["app"] == "asgi"
    # WSGI has no WebSockets: the handshake is refused, and the server serves on.
    assert ws_refused(f"ws://{server.host}:{server.port}/wsgi/feed").status_code == 403
    assert httpx.get(server.url + "/wsgi/", timeout=DEADLINE).text == "/ 0"
