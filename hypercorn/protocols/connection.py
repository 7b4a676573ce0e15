"""The interface between a protocol core connection and whoever drives it.

A *server connection* (``H1Connection`` today; HTTP/2 and HTTP/3 later) is synchronous and
clock-free. The driver gives it a ``ConnectionSink`` when creating it and then calls it:

* ``receive_data(data, now)`` with bytes from the socket (``b""`` = EOF),
* ``next_deadline()`` / ``handle_deadline(now)`` for its one timer,
* ``write_paused(now)`` / ``write_resumed(now)`` when the transport's buffer crosses its marks
  (``write_paused`` again while paused whenever the peer took bytes: the write deadline,
  ``write_timeout`` without progress, starts over),
* ``start_shutdown(now)`` to finish in-flight work and close,
* ``connection_lost()`` once the transport is gone.

The driver reads the connection's ``deadline`` attribute (its current phase deadline) after
each call and re-arms its one timer when it moved earlier.

The connection answers by calling the sink synchronously - writing bytes, closing, pausing
reading, or starting an app for a new stream - instead of returning effect objects, which
keeps the per-request cost of the hot path down (see ARCHITECTURE "The performance budget").
The sink must not call back into the connection from inside these methods; ``start_app``
in particular must only *queue* the stream and start the app after the connection's method
returned (the driver does so), so the core is never re-entered.

Protocol switches are values (ARCHITECTURE "Many streams on one connection"): a connection
that hands its socket to another protocol (an h2c upgrade or prior-knowledge preface, an
accepted WebSocket upgrade) calls ``sink.switch(SwitchProtocol(...))`` once and is done: it
never reads, writes or closes again. The driver builds the next connection for ``to`` and
feeds it ``trailing``. No exception carries control flow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from hypercorn.protocols.asgi_http import AsgiHttpStream
    from hypercorn.protocols.asgi_ws import AsgiWsStream
    from hypercorn.protocols.http1.parser import RequestHead


@dataclass(frozen=True, slots=True, kw_only=True)
class SwitchProtocol:
    """The socket changes protocol; see the module docstring.

    ``to="h2"``: an ``Upgrade: h2c`` request (``request`` is its head: the HTTP2-Settings
    header is in its headers, and it becomes stream 1) or the prior-knowledge preface
    (``request`` is None, ``trailing`` starts with the preface).
    ``to="websocket"``: the app accepted a WebSocket upgrade; ``stream`` is its
    ``AsgiWsStream``, which carries the negotiated handshake.
    """

    to: Literal["h2", "websocket"]
    #: Bytes received past the switch point, for the next protocol (parse them first).
    trailing: bytes = b""
    #: The peer's EOF was already seen (feed ``b""`` after ``trailing``).
    eof: bool = False
    #: h2c upgrade: the upgrading request (``RequestHead``).
    request: RequestHead | None = None
    #: h2c upgrade: the upgrading request's body, read whole (it is answered on stream 1).
    body: bytes = b""
    #: WebSocket: the accepted stream.
    stream: AsgiWsStream | None = None


class ConnectionSink(Protocol):
    """Effects of a server connection, carried out by the driver."""

    def write(self, data: bytes) -> None:
        """Send ``data`` (buffered; never blocks). Usually the transport's bound ``write``."""

    def writelines(self, parts: Sequence[bytes]) -> None:
        """``write`` of ``parts`` in order, as one write, without joining them where the
        transport can (a large body between small frame pieces: no copy)."""

    def call_soon(self, fn: Callable[[], object]) -> None:
        """Call ``fn()`` from the loop once the running task yields, before the loop waits
        for anything (a core that held bytes back to write them together writes them then).
        """

    def close(self, *, linger: bool = True) -> None:
        """Flush what was written, then close. Idempotent. ``linger=False`` when the peer
        said it sends nothing more and all it sent was consumed: no lingering close is
        needed to keep a reset from destroying the last response (``Transport.close``)."""

    def abort(self) -> None:
        """Close at once, dropping unsent data (a peer that stopped reading)."""

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def start_app(self, stream: AsgiHttpStream | AsgiWsStream) -> None:
        """Run the ASGI app for ``stream`` once the current core call has returned."""

    def switch(self, switch: SwitchProtocol) -> None:
        """Replace the calling connection by the one ``switch`` asks for (see the module
        docstring); the caller does nothing with the socket afterwards."""


class ServerConnection(Protocol):
    """A protocol core connection, as the driver sees it. See the module docstring."""

    #: The current phase's deadline (``next_deadline`` may add an earlier write deadline).
    deadline: float | None

    def receive_data(self, data: bytes, now: float) -> None: ...

    def next_deadline(self) -> float | None: ...

    def handle_deadline(self, now: float) -> None: ...

    def write_paused(self, now: float) -> None: ...

    def write_resumed(self, now: float) -> None: ...

    def start_shutdown(self, now: float) -> None: ...

    def connection_lost(self) -> None: ...

    @property
    def idle(self) -> bool:
        """No request in progress: closing now loses nothing."""

    @property
    def closed(self) -> bool:
        """The connection asked the sink to close (or was told the transport is gone)."""
