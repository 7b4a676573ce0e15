"""Redirect plain-HTTP (and ``ws://``) requests to their TLS equivalent."""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any
from urllib.parse import urlunsplit

from hypercorn.middleware._invoke import invoke_asgi
from hypercorn.typing import ASGIReceive, ASGISend

__all__ = ["HTTPToHTTPSRedirectMiddleware"]


class HTTPToHTTPSRedirectMiddleware:
    """Answer ``http`` requests with a 307 to ``https`` on ``host`` (or the request's Host).

    WebSocket handshakes over ``ws`` get a 307 to ``wss`` when the server supports the
    WebSocket Denial Response extension, and are refused otherwise. Requests that are
    already secure pass through to ``app``.
    """

    def __init__(self, app: Any, host: str | None) -> None:
        self.app = app
        self.host = host

    async def __call__(
        self, scope: MutableMapping[str, Any], receive: ASGIReceive, send: ASGISend
    ) -> None:
        if scope["type"] == "http" and scope["scheme"] == "http":
            await self._send_http_redirect(scope, send)
        elif scope["type"] == "websocket" and scope["scheme"] == "ws":
            if "websocket.http.response" in (scope.get("extensions") or {}):
                await self._send_websocket_redirect(scope, send)
            else:
                await send({"type": "websocket.close", "code": 1000})
        else:
            await invoke_asgi(self.app, scope, receive, send)

    async def _send_http_redirect(self, scope: Mapping[str, Any], send: ASGISend) -> None:
        new_url = self._new_url("https", scope)
        await send(
            {
                "type": "http.response.start",
                "status": 307,
                "headers": [(b"location", new_url.encode("latin-1")), (b"content-length", b"0")],
            }
        )
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _send_websocket_redirect(self, scope: Mapping[str, Any], send: ASGISend) -> None:
        # Over HTTP/2 the handshake is an extended CONNECT, so the new URL is https.
        scheme = "https" if scope.get("http_version", "1.1") == "2" else "wss"
        new_url = self._new_url(scheme, scope)
        await send(
            {
                "type": "websocket.http.response.start",
                "status": 307,
                "headers": [(b"location", new_url.encode("latin-1")), (b"content-length", b"0")],
            }
        )
        await send({"type": "websocket.http.response.body", "body": b"", "more_body": False})

    def _new_url(self, scheme: str, scope: Mapping[str, Any]) -> str:
        host = self.host
        if host is None:
            for name, value in scope["headers"]:
                if name == b"host":
                    host = value.decode("latin-1")
                    break
        if host is None:
            raise ValueError("Host to redirect to cannot be determined")
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode("utf-8")
        path = str(scope.get("root_path", "")) + raw_path.decode("latin-1")
        query = scope.get("query_string", b"").decode("latin-1")
        return str(urlunsplit((scheme, host, path, query, "")))
