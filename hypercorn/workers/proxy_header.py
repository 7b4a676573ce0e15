"""Reading a PROXY header off a freshly accepted socket (written once, for every backend).

The header comes before anything else, the TLS handshake included, and the backends hand the
socket itself on to their TLS layer (asyncio's ``connect_accepted_socket(ssl=...)``, trio's
``SSLStream``), which cannot be given bytes already read. So nothing past the header may be
read: the bytes are looked at with ``MSG_PEEK`` and only the header's are taken off the
socket. Whatever was peeked of an incomplete header is all header, so it is taken too and the
next peek waits for new bytes (no busy loop on a slow proxy). The common case, a header that
arrived with the connection, costs two system calls and no wait.

A backend calls ``read_proxy_header`` between accept and handshake with its own
``wait_readable(sock, deadline)``, which raises ``TransportTimeout`` past the deadline.
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable

from hypercorn.protocols.proxy import ProxyHeader, ProxyHeaderError, ProxyHeaderReader, ProxyPolicy
from hypercorn.workers.backend import TransportClosed

__all__ = ["WaitReadable", "close_refused", "peer_host", "read_proxy_header"]

#: ``wait_readable(sock, deadline)``: return once ``sock`` is readable; raise
#: ``TransportTimeout`` once the loop's clock passes ``deadline``.
WaitReadable = Callable[[socket.socket, float], Awaitable[object]]


def peer_host(sock: socket.socket) -> str | None:
    """The peer's address, None on a unix socket. Raises ``OSError`` if it has gone."""
    if sock.family == getattr(socket, "AF_UNIX", None):
        return None
    return str(sock.getpeername()[0])


async def read_proxy_header(
    sock: socket.socket, policy: ProxyPolicy, wait_readable: WaitReadable, deadline: float
) -> ProxyHeader:
    """Check the peer is trusted, then take exactly the PROXY header off the non-blocking
    ``sock``. Raises ``ProxyHeaderError`` (untrusted peer, bad or oversized header),
    ``TransportClosed`` (closed before the header ended), ``TransportTimeout``, or
    ``OSError`` from the socket (the backend maps it)."""
    host = peer_host(sock)
    if not policy.trusts(host):
        raise ProxyHeaderError(f"{host} is not allowed to send a PROXY header")
    reader = ProxyHeaderReader(policy.max_size)
    while True:
        try:
            data = sock.recv(policy.max_size, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            await wait_readable(sock, deadline)
            continue
        if not data:
            raise TransportClosed("closed before the end of the PROXY header")
        count = reader.feed(data)
        while count:  # (peeked, so there: one recv takes them)
            taken = len(sock.recv(count))
            if not taken:
                raise TransportClosed("closed inside the PROXY header")
            count -= taken
        if reader.header is not None:
            return reader.header


def close_refused(sock: socket.socket) -> None:
    """Close a connection refused before it began. What the peer sent and we left unread is
    read first (a few reads at most), so the peer sees a FIN rather than a reset."""
    try:
        for _ in range(4):
            if not sock.recv(65536):
                break
    except OSError:
        pass
    sock.close()
