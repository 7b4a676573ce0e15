"""ASGI middleware with upstream Hypercorn's names and signatures."""

from __future__ import annotations

from hypercorn.middleware.dispatcher import (
    AsyncioDispatcherMiddleware,
    DispatcherMiddleware,
    TrioDispatcherMiddleware,
)
from hypercorn.middleware.http_to_https import HTTPToHTTPSRedirectMiddleware
from hypercorn.middleware.proxy_fix import ProxyFixMiddleware
from hypercorn.middleware.wsgi import AsyncioWSGIMiddleware, TrioWSGIMiddleware

__all__ = (
    "AsyncioDispatcherMiddleware",
    "AsyncioWSGIMiddleware",
    "DispatcherMiddleware",
    "HTTPToHTTPSRedirectMiddleware",
    "ProxyFixMiddleware",
    "TrioDispatcherMiddleware",
    "TrioWSGIMiddleware",
)
