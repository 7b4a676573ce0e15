"""FastAPI: routes, JSON bodies, a WebSocket, background tasks and lifespan state.

Serve it with ``hypercorn examples.fastapi_app:app`` (see examples/README.md).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import BackgroundTasks, FastAPI, Request, WebSocket, WebSocketDisconnect
from pydantic import BaseModel


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
    # What is yielded is the lifespan state: each request sees it as ``request.state``.
    yield {"started": "at startup", "done": []}


app = FastAPI(lifespan=lifespan)


class Item(BaseModel):
    name: str
    price: float


@app.get("/")
async def home(request: Request) -> dict[str, Any]:
    return {"hello": "world", "state": request.state.started}


@app.get("/items/{item_id}")
async def read_item(item_id: int, q: str | None = None) -> dict[str, Any]:
    return {"item_id": item_id, "q": q}


@app.post("/items")
async def create_item(item: Item, tasks: BackgroundTasks, request: Request) -> dict[str, Any]:
    # Runs after the response is sent; /done shows that it ran.
    tasks.add_task(request.state.done.append, item.name)
    return {"name": item.name, "price_with_tax": round(item.price * 1.2, 2)}


@app.get("/done")
async def done(request: Request) -> list[str]:
    return list(request.state.done)


@app.websocket("/ws")
async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    try:
        while True:
            await websocket.send_text("echo: " + await websocket.receive_text())
    except WebSocketDisconnect:
        pass
