"""Quart: an HTTP route, a JSON echo and a WebSocket echo.

Serve it with ``hypercorn examples.quart_app:app`` (see examples/README.md).
"""

from __future__ import annotations

from typing import Any

from quart import Quart, request, websocket

app = Quart(__name__)


@app.route("/")
async def home() -> str:
    return "Hello from Quart"


@app.route("/echo", methods=["POST"])
async def echo() -> dict[str, Any]:
    return {"received": await request.get_json()}


@app.websocket("/ws")
async def ws() -> None:
    while True:
        await websocket.send("echo: " + await websocket.receive())
