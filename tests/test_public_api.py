"""Upstream Hypercorn's public names and signatures, and the behaviour of its middleware."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
from typing import Any

import pytest

import hypercorn
from hypercorn.config import Config
from hypercorn.middleware import (
    AsyncioWSGIMiddleware,
    DispatcherMiddleware,
    HTTPToHTTPSRedirectMiddleware,
    ProxyFixMiddleware,
    TrioWSGIMiddleware,
)
from hypercorn.workers import run_with_backend
from hypercorn.workers.backend import Backend
from tests.support.apps import LifespanApp, echo_app, wsgi_echo

Message = dict[str, Any]


def parameters(function: Any) -> list[tuple[str, str, object]]:
    return [
        (name, parameter.kind.name, parameter.default)
        for name, parameter in inspect.signature(function).parameters.items()
    ]


# -- names and signatures ----------------------------------------------------------------------


def test_package_exports() -> None:
    assert hypercorn.Config is Config
    assert isinstance(hypercorn.__version__, str)


def test_config_and_sockets() -> None:
    from hypercorn.config import Sockets

    config = Config()
    for name in ("bind", "workers", "worker_class", "accesslog", "errorlog", "keep_alive_timeout"):
        assert hasattr(config, name), name
    for name in ("from_toml", "from_pyfile", "from_object", "from_mapping", "create_sockets"):
        assert callable(getattr(Config, name)), name
    assert {"secure_sockets", "insecure_sockets", "quic_sockets"} <= set(
        inspect.signature(Sockets).parameters
    )


def test_asyncio_serve_signature() -> None:
    from hypercorn.asyncio import serve

    assert inspect.iscoroutinefunction(serve)
    assert parameters(serve) == [
        ("app", "POSITIONAL_OR_KEYWORD", inspect.Parameter.empty),
        ("config", "POSITIONAL_OR_KEYWORD", inspect.Parameter.empty),
        ("shutdown_trigger", "KEYWORD_ONLY", None),
        ("mode", "KEYWORD_ONLY", None),
    ]


@pytest.mark.skipif(
    importlib.util.find_spec("trio") is None,
    reason="trio is not installed (the trio extra)",
)
def test_trio_serve_signature() -> None:
    from hypercorn.trio import serve  # type: ignore[import-not-found, unused-ignore]

    names = [name for name, _, _ in parameters(serve)]
    assert names[:2] == ["app", "config"]
    assert {"shutdown_trigger", "task_status", "mode"} <= set(names)


def test_run_signature() -> None:
    from hypercorn.run import run

    assert parameters(run) == [("config", "POSITIONAL_OR_KEYWORD", inspect.Parameter.empty)]
    assert not inspect.iscoroutinefunction(run)


def test_main_signature() -> None:
    from hypercorn.__main__ import main

    assert parameters(main) == [("sys_args", "POSITIONAL_OR_KEYWORD", None)]


def test_middleware_signatures() -> None:
    assert [n for n, _, _ in parameters(DispatcherMiddleware)] == ["mounts"]
    assert parameters(HTTPToHTTPSRedirectMiddleware) == [
        ("app", "POSITIONAL_OR_KEYWORD", inspect.Parameter.empty),
        ("host", "POSITIONAL_OR_KEYWORD", inspect.Parameter.empty),
    ]
    assert parameters(ProxyFixMiddleware) == [
        ("app", "POSITIONAL_OR_KEYWORD", inspect.Parameter.empty),
        ("mode", "POSITIONAL_OR_KEYWORD", "legacy"),
        ("trusted_hops", "POSITIONAL_OR_KEYWORD", 1),
    ]
    for wsgi_middleware in (AsyncioWSGIMiddleware, TrioWSGIMiddleware):
        assert parameters(wsgi_middleware) == [
            ("wsgi_app", "POSITIONAL_OR_KEYWORD", inspect.Parameter.empty),
            ("max_body_size", "POSITIONAL_OR_KEYWORD", 2**16),
        ]
    module = importlib.import_module("hypercorn.middleware.dispatcher")
    assert module.DispatcherMiddleware is module.AsyncioDispatcherMiddleware
    assert hasattr(module, "TrioDispatcherMiddleware")


TYPING_NAMES = [
    "ASGIFramework",
    "ASGIReceiveCallable",
    "ASGIReceiveEvent",
    "ASGISendCallable",
    "ASGISendEvent",
    "ASGIVersions",
    "ConnectionState",
    "Framework",
    "HTTPDisconnectEvent",
    "HTTPRequestEvent",
    "HTTPResponseBodyEvent",
    "HTTPResponseStartEvent",
    "HTTPScope",
    "LifespanScope",
    "LifespanShutdownCompleteEvent",
    "LifespanShutdownEvent",
    "LifespanStartupCompleteEvent",
    "LifespanStartupEvent",
    "LifespanStartupFailedEvent",
    "ResponseSummary",
    "Scope",
    "WSGIFramework",
    "WWWScope",
    "WebsocketAcceptEvent",
    "WebsocketCloseEvent",
    "WebsocketConnectEvent",
    "WebsocketDisconnectEvent",
    "WebsocketReceiveEvent",
    "WebsocketScope",
    "WebsocketSendEvent",
]


@pytest.mark.parametrize("name", TYPING_NAMES)
def test_typing_names(name: str) -> None:
    module = importlib.import_module("hypercorn.typing")
    assert hasattr(module, name)


def test_typed_dict_fields() -> None:
    from hypercorn.typing import HTTPScope, LifespanScope

    assert {"method", "path", "raw_path", "query_string", "headers", "state"} <= set(
        HTTPScope.__annotations__
    )
    assert set(LifespanScope.__annotations__) == {"type", "asgi", "state"}


# -- middleware behaviour -----------------------------------------------------------------------


class Exchange:
    """One request's ASGI side; ``receive`` after the body blocks until the response ends."""

    def __init__(self, backend: Backend, body: bytes = b"") -> None:
        self.incoming: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]
        self.sent: list[Message] = []
        self.done = backend.event()

    async def receive(self) -> Message:
        if self.incoming:
            return self.incoming.pop(0)
        await self.done.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        self.sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            self.done.set()


def scope(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/a/b",
        "raw_path": b"/a/b",
        "query_string": b"x=1",
        "root_path": "",
        "headers": [(b"host", b"example.com")],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
        "extensions": {},
    }
    base.update(overrides)
    return base


def run_app(app: Any, request_scope: dict[str, Any], body: bytes = b"") -> Exchange:
    async def main(backend: Backend) -> Exchange:
        exchange = Exchange(backend, body)
        await app(request_scope, exchange.receive, exchange.send)
        return exchange

    return run_with_backend("asyncio", main)


def test_http_to_https_redirect() -> None:
    app = HTTPToHTTPSRedirectMiddleware(echo_app, host=None)
    exchange = run_app(app, scope())
    assert exchange.sent[0]["status"] == 307
    assert dict(exchange.sent[0]["headers"])[b"location"] == b"https://example.com/a/b?x=1"
    exchange = run_app(
        HTTPToHTTPSRedirectMiddleware(echo_app, host="secure.example"), scope(root_path="/r")
    )
    assert dict(exchange.sent[0]["headers"])[b"location"] == b"https://secure.example/r/a/b?x=1"


def test_http_to_https_passes_secure_requests_through() -> None:
    exchange = run_app(HTTPToHTTPSRedirectMiddleware(echo_app, host=None), scope(scheme="https"))
    assert exchange.sent[0]["status"] == 200


def test_http_to_https_websocket() -> None:
    app = HTTPToHTTPSRedirectMiddleware(echo_app, host=None)
    exchange = run_app(app, scope(type="websocket", scheme="ws"))
    assert exchange.sent == [{"type": "websocket.close", "code": 1000}]
    exchange = run_app(
        app,
        scope(type="websocket", scheme="ws", extensions={"websocket.http.response": {}}),
    )
    assert exchange.sent[0]["type"] == "websocket.http.response.start"
    assert dict(exchange.sent[0]["headers"])[b"location"] == b"wss://example.com/a/b?x=1"


def _echoed(exchange: Exchange) -> dict[str, Any]:
    import json

    result: dict[str, Any] = json.loads(exchange.sent[1]["body"])
    return result


def test_proxy_fix_legacy() -> None:
    seen: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope)
        await echo_app(scope, receive, send)

    headers = [
        (b"host", b"internal"),
        (b"x-forwarded-for", b"spoofed, 203.0.113.7"),
        (b"x-forwarded-proto", b"https"),
        (b"x-forwarded-host", b"public.example"),
    ]
    original = scope(headers=headers)
    run_app(ProxyFixMiddleware(app), original)
    assert seen[0]["client"] == ("203.0.113.7", 0)
    assert seen[0]["scheme"] == "https"
    assert (b"host", b"public.example") in seen[0]["headers"]
    assert (b"host", b"internal") not in seen[0]["headers"]
    assert original["client"] == ("127.0.0.1", 5000)  # the server's scope is not mutated

    run_app(ProxyFixMiddleware(app, trusted_hops=2), scope(headers=headers))
    assert seen[1]["client"] == ("spoofed", 0)
    run_app(ProxyFixMiddleware(app, trusted_hops=0), scope(headers=headers))
    assert seen[2]["client"] == ("127.0.0.1", 5000)


def test_proxy_fix_modern() -> None:
    seen: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope)
        await echo_app(scope, receive, send)

    headers = [(b"forwarded", b'for=198.51.100.1;proto=https;host="public.example"')]
    run_app(ProxyFixMiddleware(app, mode="modern"), scope(headers=headers))
    assert seen[0]["client"] == ("198.51.100.1", 0)
    assert seen[0]["scheme"] == "https"
    assert (b"host", b"public.example") in seen[0]["headers"]


def test_dispatcher_routes_by_longest_prefix() -> None:
    dispatcher = DispatcherMiddleware({"/": echo_app, "/api": echo_app, "/api/v2": echo_app})
    assert _echoed(run_app(dispatcher, scope(path="/api/v2/items")))["path"] == "/items"
    assert _echoed(run_app(dispatcher, scope(path="/api/items")))["path"] == "/items"
    assert _echoed(run_app(dispatcher, scope(path="/api")))["path"] == "/"
    assert _echoed(run_app(dispatcher, scope(path="/apiary")))["path"] == "/apiary"


def test_dispatcher_404() -> None:
    exchange = run_app(DispatcherMiddleware({"/api": echo_app}), scope(path="/other"))
    assert exchange.sent[0]["status"] == 404


def test_dispatcher_fans_out_lifespan() -> None:
    from hypercorn.workers.lifespan import Lifespan

    first = LifespanApp(state={"a": 1})
    second = LifespanApp(state={"b": 2})
    unsupported = LifespanApp(raise_on_scope=True)
    dispatcher = DispatcherMiddleware({"/one": first, "/two": second, "/three": unsupported})

    async def main(backend: Backend) -> dict[str, Any]:
        lifespan = Lifespan(dispatcher, Config(), backend)
        await lifespan.startup()
        await lifespan.shutdown()
        return lifespan.state

    state = run_with_backend("asyncio", main)
    assert state == {"a": 1, "b": 2}
    assert first.events == ["lifespan.startup", "lifespan.shutdown"]
    assert second.events == ["lifespan.startup", "lifespan.shutdown"]


def test_dispatcher_forwards_startup_failure() -> None:
    from hypercorn.workers.lifespan import Lifespan, LifespanFailure

    dispatcher = DispatcherMiddleware(
        {"/ok": LifespanApp(), "/bad": LifespanApp(startup_failure="no database")}
    )

    async def main(backend: Backend) -> str:
        lifespan = Lifespan(dispatcher, Config(), backend)
        with pytest.raises(LifespanFailure) as info:
            await lifespan.startup()
        return str(info.value)

    assert run_with_backend("asyncio", main) == "lifespan startup failed: no database"


def test_asyncio_wsgi_middleware() -> None:
    exchange = run_app(AsyncioWSGIMiddleware(wsgi_echo), scope(method="POST"), b"payload")
    assert exchange.sent[0]["status"] == 200
    assert _echoed(exchange)["body"] == "payload"
    too_big = run_app(AsyncioWSGIMiddleware(wsgi_echo, max_body_size=3), scope(), b"payload")
    assert too_big.sent[0]["status"] == 413
