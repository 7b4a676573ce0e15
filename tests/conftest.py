"""Fixtures shared by every test package. Package-specific ones live in each package's conftest."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest


@pytest.fixture
def bound_socket() -> Iterator[socket.socket]:
    """A listening TCP socket on 127.0.0.1, port chosen by the kernel, handed to the server.

    Binding here (not picking a "free" port and hoping) avoids the TOCTOU race.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    sock.setblocking(False)
    try:
        yield sock
    finally:
        sock.close()


@pytest.fixture(params=["ws-fast", "ws-wsproto"])
def ws_framing(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a WebSocket test with the fast data-frame path (the default) and with wsproto
    alone (the reference, ``protocols/ws_fast.py``): both must give the same results. Sets
    ``ProtocolLimits``'s default, so every way a test builds its limits follows."""
    from hypercorn.protocols.limits import ProtocolLimits

    fast = request.param == "ws-fast"
    monkeypatch.setitem(ProtocolLimits.__init__.__kwdefaults__, "websocket_fast_path", fast)
    return str(request.param)
