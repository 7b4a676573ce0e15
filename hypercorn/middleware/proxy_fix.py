"""Trust ``X-Forwarded-*`` / ``Forwarded`` headers from a known number of proxies."""

from __future__ import annotations

from collections.abc import Iterable, MutableMapping
from typing import Any, Literal

from hypercorn.typing import ASGIReceive, ASGISend

__all__ = ["ProxyFixMiddleware"]

_WS_SCHEMES = {"http": "ws", "https": "wss"}


class ProxyFixMiddleware:
    """Rewrite ``client``, ``scheme`` and the Host header from proxy headers.

    ``mode="legacy"`` reads ``X-Forwarded-For``, ``X-Forwarded-Proto`` and
    ``X-Forwarded-Host``; ``mode="modern"`` reads RFC 7239 ``Forwarded``. Only the value added
    by the ``trusted_hops``-th proxy from the server's side is believed (0 trusts none), so a
    client cannot spoof its address by sending the header itself. A WebSocket scope gets
    ``ws``/``wss`` for a forwarded ``http``/``https``.
    """

    def __init__(
        self,
        app: Any,
        mode: Literal["legacy", "modern"] = "legacy",
        trusted_hops: int = 1,
    ) -> None:
        self.app = app
        self.mode = mode
        self.trusted_hops = trusted_hops

    async def __call__(
        self, scope: MutableMapping[str, Any], receive: ASGIReceive, send: ASGISend
    ) -> None:
        if scope["type"] in ("http", "websocket"):
            scope = dict(scope)
            headers = list(scope["headers"])
            client: str | None = None
            scheme: str | None = None
            host: str | None = None

            if self.mode == "modern":
                value = _trusted_value(b"forwarded", headers, self.trusted_hops)
                if value is not None:
                    for part in value.split(";"):
                        key, _, item = part.partition("=")
                        key = key.strip().lower()
                        item = item.strip().strip('"')
                        if key == "for":
                            client = item
                        elif key == "host":
                            host = item
                        elif key == "proto":
                            scheme = item
            else:
                client = _trusted_value(b"x-forwarded-for", headers, self.trusted_hops)
                scheme = _trusted_value(b"x-forwarded-proto", headers, self.trusted_hops)
                host = _trusted_value(b"x-forwarded-host", headers, self.trusted_hops)

            if client is not None:
                scope["client"] = (client, 0)
            if scheme is not None:
                if scope["type"] == "websocket":  # (proxies send the HTTP scheme they served)
                    scheme = _WS_SCHEMES.get(scheme, scheme)
                scope["scheme"] = scheme
            if host is not None:
                headers = [(name, item) for name, item in headers if name.lower() != b"host"]
                headers.append((b"host", host.encode("latin-1")))
            scope["headers"] = headers

        await self.app(scope, receive, send)


def _trusted_value(
    name: bytes, headers: Iterable[tuple[bytes, bytes]], trusted_hops: int
) -> str | None:
    if trusted_hops <= 0:
        return None
    values: list[str] = []
    for header_name, header_value in headers:
        if header_name.lower() == name:
            values.extend(item.decode("latin-1").strip() for item in header_value.split(b","))
    if len(values) >= trusted_hops:
        return values[-trusted_hops]
    return None
