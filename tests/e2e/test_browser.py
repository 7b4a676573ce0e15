"""A real browser: headless Chromium loads a page over TLS with HTTP/2, whose script opens a
WebSocket and has a message echoed; the page reports the protocol it and its script were
loaded with (``performance.getEntries()[0].nextHopProtocol``) and the echo, which names the
HTTP version the WebSocket came over; read over the DevTools protocol
(``tests/support/browser.py``). Skipped, with the reason, without chromium."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import start_server
from tests.support.apps import handle_lifespan, read_body, send_response
from tests.support.browser import running_browser, skip_reason
from tests.support.certs import Certs

PAGE = b"""<!doctype html>
<html><head><title>hypercorn in a browser</title><script src="/app.js"></script></head>
<body><p id="out">waiting</p></body></html>
"""

SCRIPT = b"""
window.echoed = new Promise((resolve, reject) => {
  const ws = new WebSocket(`wss://${location.host}/echo`);
  ws.onopen = () => ws.send("hello from the browser");
  ws.onerror = () => reject(new Error("WebSocket error"));
  ws.onmessage = (event) => {
    const page = performance.getEntries()[0].nextHopProtocol;
    const script = performance.getEntriesByName(document.scripts[0].src)[0].nextHopProtocol;
    document.getElementById("out").textContent = event.data;
    resolve({echo: event.data, page, script});
    ws.close();
  };
});
"""


async def browser_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await handle_lifespan(receive, send)
        return
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        message = await receive()
        if message["type"] == "websocket.receive":
            echo = f"{message['text']} (WebSocket over HTTP/{scope['http_version']})"
            await send({"type": "websocket.send", "text": echo})
        while (await receive())["type"] != "websocket.disconnect":
            pass
        return
    await read_body(receive)
    if scope["path"] == "/app.js":
        await send_response(send, SCRIPT, content_type=b"text/javascript")
    elif scope["path"] == "/":
        await send_response(send, PAGE, content_type=b"text/html; charset=utf-8")
    else:
        await send_response(send, b"not found", status=404)


@pytest.mark.slow
def test_page_over_h2_opens_a_websocket(
    bound_socket: socket.socket, certs: Certs, tmp_path: Path
) -> None:
    if reason := skip_reason():
        pytest.skip(reason)
    server = start_server(browser_app, bound_socket, secure=True, **certs.server_settings)
    try:
        with running_browser(tmp_path / "profile") as browser:
            result = browser.evaluate(f"https://127.0.0.1:{server.port}/", "window.echoed")
    finally:
        server.stop()
    assert result["page"] == "h2", result
    assert result["script"] == "h2", result
    # Chromium opens the WebSocket on the page's HTTP/2 connection (RFC 8441).
    assert result["echo"] == "hello from the browser (WebSocket over HTTP/2)", result
