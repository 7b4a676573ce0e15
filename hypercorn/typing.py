"""ASGI and WSGI type names, kept compatible with upstream Hypercorn's ``hypercorn.typing``.

The TypedDicts describe the messages of the ASGI 3 specification and are what applications
and middleware written against upstream Hypercorn import. Inside the server the messages are
plain dicts: ``Message``, ``ASGIReceive``, ``ASGISend`` and ``ASGIApp`` are the loose internal
aliases every worker module agrees on, so that a driver passing ``dict[str, Any]`` messages
and an application typed with the TypedDicts both fit without casts.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, NewType, Optional, Protocol, TypedDict

if TYPE_CHECKING:
    from multiprocessing.synchronize import Event as EventType

    from hypercorn.config import Config, Sockets

# ---------------------------------------------------------------------------------------------
# Internal aliases (the server's own vocabulary)

Message = dict[str, Any]
"""An ASGI event as the server handles it: a plain dict with a ``type`` key."""

ASGIReceive = Callable[[], Awaitable[Message]]
ASGISend = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[MutableMapping[str, Any], ASGIReceive, ASGISend], Awaitable[None]]
"""An ASGI 3 application as the worker calls it (what ``hypercorn.apps.wrap_app`` returns)."""

WSGIStartResponse = Callable[..., Callable[[bytes], object]]
WSGIApp = Callable[[dict[str, Any], WSGIStartResponse], Iterable[bytes]]

# ---------------------------------------------------------------------------------------------
# Upstream-compatible public names

LifespanState = dict[str, Any]
ConnectionState = NewType("ConnectionState", dict[str, Any])

WorkerFunc = Callable[["Config", Optional["Sockets"], Optional["EventType"]], None]


class ASGIVersions(TypedDict, total=False):
    spec_version: str
    version: Literal["2.0", "3.0"]


class HTTPScope(TypedDict):
    type: Literal["http"]
    asgi: ASGIVersions
    http_version: str
    method: str
    scheme: str
    path: str
    raw_path: bytes
    query_string: bytes
    root_path: str
    headers: Iterable[tuple[bytes, bytes]]
    client: tuple[str, int] | None
    server: tuple[str, int | None] | None
    extensions: dict[str, dict[Any, Any]]
    state: ConnectionState


class WebsocketScope(TypedDict):
    type: Literal["websocket"]
    asgi: ASGIVersions
    http_version: str
    scheme: str
    path: str
    raw_path: bytes
    query_string: bytes
    root_path: str
    headers: Iterable[tuple[bytes, bytes]]
    client: tuple[str, int] | None
    server: tuple[str, int | None] | None
    subprotocols: Iterable[str]
    extensions: dict[str, dict[Any, Any]]
    state: ConnectionState


class LifespanScope(TypedDict):
    type: Literal["lifespan"]
    asgi: ASGIVersions
    state: LifespanState


WWWScope = HTTPScope | WebsocketScope
Scope = HTTPScope | WebsocketScope | LifespanScope


class HTTPRequestEvent(TypedDict):
    type: Literal["http.request"]
    body: bytes
    more_body: bool


class HTTPResponseStartEvent(TypedDict):
    type: Literal["http.response.start"]
    status: int
    headers: Iterable[tuple[bytes, bytes]]


class HTTPResponseBodyEvent(TypedDict):
    type: Literal["http.response.body"]
    body: bytes
    more_body: bool


class HTTPResponseTrailersEvent(TypedDict):
    type: Literal["http.response.trailers"]
    headers: Iterable[tuple[bytes, bytes]]
    more_trailers: bool


class HTTPServerPushEvent(TypedDict):
    type: Literal["http.response.push"]
    path: str
    headers: Iterable[tuple[bytes, bytes]]


class HTTPEarlyHintEvent(TypedDict):
    type: Literal["http.response.early_hint"]
    links: Iterable[bytes]


class HTTPDisconnectEvent(TypedDict):
    type: Literal["http.disconnect"]


class WebsocketConnectEvent(TypedDict):
    type: Literal["websocket.connect"]


class WebsocketAcceptEvent(TypedDict):
    type: Literal["websocket.accept"]
    subprotocol: str | None
    headers: Iterable[tuple[bytes, bytes]]


class WebsocketReceiveEvent(TypedDict):
    type: Literal["websocket.receive"]
    bytes: bytes | None
    text: str | None


class WebsocketSendEvent(TypedDict):
    type: Literal["websocket.send"]
    bytes: bytes | None
    text: str | None


class WebsocketResponseStartEvent(TypedDict):
    type: Literal["websocket.http.response.start"]
    status: int
    headers: Iterable[tuple[bytes, bytes]]


class WebsocketResponseBodyEvent(TypedDict):
    type: Literal["websocket.http.response.body"]
    body: bytes
    more_body: bool


class WebsocketDisconnectEvent(TypedDict):
    type: Literal["websocket.disconnect"]
    code: int


class WebsocketCloseEvent(TypedDict):
    type: Literal["websocket.close"]
    code: int
    reason: str | None


class LifespanStartupEvent(TypedDict):
    type: Literal["lifespan.startup"]


class LifespanShutdownEvent(TypedDict):
    type: Literal["lifespan.shutdown"]


class LifespanStartupCompleteEvent(TypedDict):
    type: Literal["lifespan.startup.complete"]


class LifespanStartupFailedEvent(TypedDict):
    type: Literal["lifespan.startup.failed"]
    message: str


class LifespanShutdownCompleteEvent(TypedDict):
    type: Literal["lifespan.shutdown.complete"]


class LifespanShutdownFailedEvent(TypedDict):
    type: Literal["lifespan.shutdown.failed"]
    message: str


ASGIReceiveEvent = (
    HTTPRequestEvent
    | HTTPDisconnectEvent
    | WebsocketConnectEvent
    | WebsocketReceiveEvent
    | WebsocketDisconnectEvent
    | LifespanStartupEvent
    | LifespanShutdownEvent
)

ASGISendEvent = (
    HTTPResponseStartEvent
    | HTTPResponseBodyEvent
    | HTTPResponseTrailersEvent
    | HTTPServerPushEvent
    | HTTPEarlyHintEvent
    | HTTPDisconnectEvent
    | WebsocketAcceptEvent
    | WebsocketSendEvent
    | WebsocketResponseStartEvent
    | WebsocketResponseBodyEvent
    | WebsocketCloseEvent
    | LifespanStartupCompleteEvent
    | LifespanStartupFailedEvent
    | LifespanShutdownCompleteEvent
    | LifespanShutdownFailedEvent
)

ASGIReceiveCallable = Callable[[], Awaitable[ASGIReceiveEvent]]
ASGISendCallable = Callable[[ASGISendEvent], Awaitable[None]]


class ASGI2Protocol(Protocol):
    """An ASGI 2 ("double callable") application: ``app(scope)`` then ``await inst(r, s)``."""

    def __init__(self, scope: Scope) -> None: ...

    async def __call__(self, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None: ...


ASGI2Framework = type[ASGI2Protocol]
ASGI3Framework = Callable[[Scope, ASGIReceiveCallable, ASGISendCallable], Awaitable[None]]
ASGIFramework = Callable[[Scope, ASGIReceiveCallable, ASGISendCallable], Awaitable[None]]
WSGIFramework = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
Framework = ASGIFramework | WSGIFramework


class ResponseSummary(TypedDict):
    status: int
    headers: Iterable[tuple[bytes, bytes]]


class Event(Protocol):
    """Upstream's awaitable event protocol (kept for code that annotates with it)."""

    def __init__(self) -> None: ...

    async def clear(self) -> None: ...

    async def set(self) -> None: ...

    async def wait(self) -> None: ...

    def is_set(self) -> bool: ...


class WorkerContext(Protocol):
    event_class: type[Event]
    terminated: Event

    @staticmethod
    async def sleep(wait: float) -> None: ...

    @staticmethod
    def time() -> float: ...


class AppWrapper(Protocol):
    async def __call__(
        self,
        scope: Scope,
        receive: ASGIReceiveCallable,
        send: ASGISendCallable,
        sync_spawn: Callable[..., Any],
        call_soon: Callable[..., Any],
    ) -> None: ...


class TaskGroup(Protocol):
    async def spawn_app(
        self,
        app: AppWrapper,
        config: Config,
        scope: Scope,
        send: Callable[[ASGISendEvent | None], Awaitable[None]],
    ) -> Callable[[ASGIReceiveEvent], Awaitable[None]]: ...

    def spawn(self, func: Callable[..., Any], *args: Any) -> None: ...

    async def __aenter__(self) -> TaskGroup: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


__all__ = [
    "ASGI2Framework",
    "ASGI2Protocol",
    "ASGI3Framework",
    "ASGIApp",
    "ASGIFramework",
    "ASGIReceive",
    "ASGIReceiveCallable",
    "ASGIReceiveEvent",
    "ASGISend",
    "ASGISendCallable",
    "ASGISendEvent",
    "ASGIVersions",
    "AppWrapper",
    "ConnectionState",
    "Event",
    "Framework",
    "HTTPDisconnectEvent",
    "HTTPEarlyHintEvent",
    "HTTPRequestEvent",
    "HTTPResponseBodyEvent",
    "HTTPResponseStartEvent",
    "HTTPResponseTrailersEvent",
    "HTTPScope",
    "HTTPServerPushEvent",
    "LifespanScope",
    "LifespanShutdownCompleteEvent",
    "LifespanShutdownEvent",
    "LifespanShutdownFailedEvent",
    "LifespanStartupCompleteEvent",
    "LifespanStartupEvent",
    "LifespanStartupFailedEvent",
    "LifespanState",
    "Message",
    "ResponseSummary",
    "Scope",
    "TaskGroup",
    "WSGIApp",
    "WSGIFramework",
    "WSGIStartResponse",
    "WWWScope",
    "WebsocketAcceptEvent",
    "WebsocketCloseEvent",
    "WebsocketConnectEvent",
    "WebsocketDisconnectEvent",
    "WebsocketReceiveEvent",
    "WebsocketResponseBodyEvent",
    "WebsocketResponseStartEvent",
    "WebsocketScope",
    "WebsocketSendEvent",
    "WorkerContext",
    "WorkerFunc",
]
