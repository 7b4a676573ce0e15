"""Serve a WSGI application from inside an ASGI stack (upstream's WSGI middlewares).

Both run the application through the same thread-pool bridge the server uses for WSGI apps
(``hypercorn.workers.wsgi_bridge``), on the backend of the loop they are called from.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any, ClassVar

from hypercorn.typing import ASGIReceive, ASGISend, WSGIApp, WSGIFramework

__all__ = ["MAX_BODY_SIZE", "AsyncioWSGIMiddleware", "TrioWSGIMiddleware"]

#: Upstream's default request-body limit for the middleware (bytes).
MAX_BODY_SIZE = 2**16


class _WSGIMiddleware:
    worker_class: ClassVar[str]

    def __init__(
        self, wsgi_app: WSGIFramework | WSGIApp, max_body_size: int = MAX_BODY_SIZE
    ) -> None:
        self.wsgi_app = wsgi_app
        self.max_body_size = max_body_size

    async def __call__(
        self, scope: MutableMapping[str, Any], receive: ASGIReceive, send: ASGISend
    ) -> None:
        from hypercorn.workers import current_backend
        from hypercorn.workers.wsgi_bridge import WSGIBridge

        backend = current_backend(self.worker_class)
        bridge = WSGIBridge(self.wsgi_app, backend, self.max_body_size)
        await bridge(scope, receive, send)


class AsyncioWSGIMiddleware(_WSGIMiddleware):
    """Run ``wsgi_app`` in the asyncio (or uvloop) loop's thread pool."""

    worker_class = "asyncio"


class TrioWSGIMiddleware(_WSGIMiddleware):
    """Run ``wsgi_app`` with trio's worker threads."""

    worker_class = "trio"
