"""Calling a wrapped application that may be ASGI 3 or ASGI 2 (upstream's ``invoke_asgi``)."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from hypercorn.typing import ASGIReceive, ASGISend


async def invoke_asgi(
    app: Any, scope: MutableMapping[str, Any], receive: ASGIReceive, send: ASGISend
) -> None:
    from hypercorn.apps import app_kind

    if app_kind(app) == "asgi2":
        asgi = dict(scope.get("asgi") or {})
        asgi["version"] = "2.0"
        scope["asgi"] = asgi
        instance = app(scope)
        await instance(receive, send)
    else:
        await app(scope, receive, send)
