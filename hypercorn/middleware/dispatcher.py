"""Route requests to one of several ASGI applications by path prefix (upstream's names).

``DispatcherMiddleware({"/api": api_app, "/": site_app})`` strips the matched prefix from
``scope["path"]`` (as upstream does) and calls that app; the longest matching prefix wins
and a prefix only matches at a path-segment boundary. Unmatched paths get a 404. The
lifespan scope is fanned out to every mounted app: startup completes once all of them
completed (an app without lifespan support counts as completed), and fails as soon as one
fails.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, MutableMapping
from typing import TYPE_CHECKING, Any, ClassVar

from hypercorn.middleware._invoke import invoke_asgi
from hypercorn.typing import ASGIReceive, ASGISend, Message

if TYPE_CHECKING:
    from hypercorn.workers.backend import AsyncEvent, Backend

__all__ = ["AsyncioDispatcherMiddleware", "DispatcherMiddleware", "TrioDispatcherMiddleware"]


class _DispatcherMiddleware:
    worker_class: ClassVar[str]

    def __init__(self, mounts: Mapping[str, Any]) -> None:
        self.mounts = dict(mounts)
        self._ordered = sorted(self.mounts.items(), key=lambda item: len(item[0]), reverse=True)

    async def __call__(
        self, scope: MutableMapping[str, Any], receive: ASGIReceive, send: ASGISend
    ) -> None:
        if scope["type"] == "lifespan":
            await self._handle_lifespan(scope, receive, send)
            return
        path: str = scope["path"]
        for prefix, app in self._ordered:
            if _matches(path, prefix):
                scope = dict(scope)
                scope["path"] = path[len(prefix.rstrip("/")) :] or "/"
                await invoke_asgi(app, scope, receive, send)
                return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1000})
            return
        await send(
            {"type": "http.response.start", "status": 404, "headers": [(b"content-length", b"0")]}
        )
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _handle_lifespan(
        self, scope: MutableMapping[str, Any], receive: ASGIReceive, send: ASGISend
    ) -> None:
        from hypercorn.workers import current_backend

        backend = current_backend(self.worker_class)
        fan_out = _LifespanFanOut(backend, list(self.mounts.values()), send)
        await fan_out.run(scope, receive)


def _matches(path: str, prefix: str) -> bool:
    if prefix in ("", "/"):
        return True
    bare = prefix.rstrip("/")
    return path == bare or path.startswith(bare + "/")


class _Mounted:
    """One mounted app's side of the lifespan fan-out."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.messages: deque[Message] = deque()
        self.ready: AsyncEvent | None = None
        self.done = backend.event()
        self.started = False
        self.stopped = False

    def put(self, message: Message) -> None:
        self.messages.append(message)
        if self.ready is not None:
            self.ready.set()

    async def receive(self) -> Message:
        while not self.messages:
            self.ready = self.backend.event()
            await self.ready.wait()
        return self.messages.popleft()


class _LifespanFanOut:
    def __init__(self, backend: Backend, apps: list[Any], send: ASGISend) -> None:
        self.backend = backend
        self.apps = apps
        self.send = send
        self.mounted = [_Mounted(backend) for _ in apps]
        self.failed = False
        self.startup_sent = False
        self.shutdown_sent = False

    async def run(self, scope: MutableMapping[str, Any], receive: ASGIReceive) -> None:
        for app, mounted in zip(self.apps, self.mounted, strict=True):
            self.backend.spawn(self._run_app, app, dict(scope), mounted)
        while True:
            message = await receive()
            for mounted in self.mounted:
                mounted.put(message)
            if message["type"] == "lifespan.shutdown":
                break
        for mounted in self.mounted:
            await mounted.done.wait()
        await self._maybe_complete("shutdown")

    async def _run_app(self, app: Any, scope: MutableMapping[str, Any], mounted: _Mounted) -> None:
        async def send(message: Message) -> None:
            await self._on_send(mounted, message)

        try:
            await invoke_asgi(app, scope, mounted.receive, send)
        except Exception:  # an app without lifespan support raises on the scope
            pass
        finally:
            # Finished (or unsupported): counts as complete for whatever it had not answered.
            mounted.started = mounted.stopped = True
            mounted.done.set()
            await self._maybe_complete("startup")

    async def _on_send(self, mounted: _Mounted, message: Message) -> None:
        kind = message["type"]
        if kind == "lifespan.startup.complete":
            mounted.started = True
            await self._maybe_complete("startup")
        elif kind == "lifespan.shutdown.complete":
            mounted.stopped = True
        elif kind in ("lifespan.startup.failed", "lifespan.shutdown.failed"):
            if not self.failed:
                self.failed = True
                if kind == "lifespan.startup.failed":
                    self.startup_sent = True
                else:
                    self.shutdown_sent = True
                await self.send(message)
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r} on the lifespan scope")

    async def _maybe_complete(self, stage: str) -> None:
        if stage == "startup":
            if not self.startup_sent and all(m.started for m in self.mounted):
                self.startup_sent = True
                await self.send({"type": "lifespan.startup.complete"})
        elif not self.shutdown_sent and all(m.stopped for m in self.mounted):
            self.shutdown_sent = True
            await self.send({"type": "lifespan.shutdown.complete"})


class AsyncioDispatcherMiddleware(_DispatcherMiddleware):
    """The dispatcher for asyncio (and uvloop) servers."""

    worker_class = "asyncio"


class TrioDispatcherMiddleware(_DispatcherMiddleware):
    """The dispatcher for trio servers."""

    worker_class = "trio"


DispatcherMiddleware = AsyncioDispatcherMiddleware
