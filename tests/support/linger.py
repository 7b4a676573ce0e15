"""Telling a lingering close from a plain one, from the client's side of a real socket.

After the server's FIN, a server socket that lingers (its write side shut, still reading)
takes what the client sends and closes when the client does; a closed one answers it with
a reset (Linux: data for a socket closed for reading). ``reset_by_server`` sends a byte and
the client's FIN, waits until the kernel has ended the connection (TCP_CLOSE, either way),
and says which it was: a reset leaves its error on the socket (``SO_ERROR``; ``recv`` would
only repeat the EOF it already saw).
"""

from __future__ import annotations

import contextlib
import errno
import socket
import time

import pytest

_TCP_INFO = getattr(socket, "TCP_INFO", None)
#: ``tcpi_state`` (the first byte of ``struct tcp_info``) of a connection that is over.
_TCP_CLOSE = 7
_DEADLINE = 10.0


def _state(sock: socket.socket) -> int:
    assert _TCP_INFO is not None
    return sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, 1)[0]


def reset_by_server(sock: socket.socket) -> bool:
    """Call after reading the server's EOF: True if the server's socket was closed (no
    lingering), False if it lingered (it took our byte and closed after our FIN)."""
    if _TCP_INFO is None:  # pragma: no cover (Linux only)
        pytest.skip("needs TCP_INFO (Linux)")
    sock.sendall(b"x")
    with contextlib.suppress(OSError):  # (ENOTCONN: the reset came already)
        sock.shutdown(socket.SHUT_WR)
    deadline = time.monotonic() + _DEADLINE
    while _state(sock) != _TCP_CLOSE:
        assert time.monotonic() < deadline, "the connection did not end"
        time.sleep(0.005)
    # (Linux records a reset in CLOSE_WAIT, after the peer's FIN, as EPIPE.)
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) in (errno.ECONNRESET, errno.EPIPE)


def linger_for(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """Every backend's lingering close lasts ``seconds`` at most (a long one: a socket that
    lingers is surely still lingering when ``reset_by_server`` probes it)."""
    from hypercorn.workers import asyncio_transport_backend

    monkeypatch.setattr(asyncio_transport_backend, "_LINGER", seconds)
    with contextlib.suppress(ImportError):  # (trio is an extra)
        from hypercorn.workers import trio_transport_backend

        monkeypatch.setattr(trio_transport_backend, "_LINGER", seconds)
