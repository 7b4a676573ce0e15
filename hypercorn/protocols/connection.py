"""The interface between a protocol core connection and whoever drives it.

A *server connection* (``H1Connection`` today; HTTP/2 and HTTP/3 later) is synchronous and
clock-free. The driver gives it a ``ConnectionSink`` when creating it and then calls it:

* ``receive_data(data, now)`` with bytes from the socket (``b""`` = EOF),
* ``next_deadline()`` / ``handle_deadline(now)`` for its one timer,
* ``write_paused(now)`` / ``write_resumed(now)`` when the transport's buffer crosses its marks,
* ``start_shutdown(now)`` to finish in-flight work and close,
* ``connection_lost()`` once the transport is gone.

The connection answers by calling the sink synchronously - writing bytes, closing, pausing
reading, or starting an app for a new stream - instead of returning effect objects, which
keeps the per-request cost of the hot path down (see ARCHITECTURE "The performance budget").
The sink must not call back into the connection from inside these methods; ``start_app``
in particular must only *queue* the stream and start the app after the connection's method
returned (the driver does so), so the core is never re-entered.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from hypercorn.protocols.asgi_http import AsgiHttpStream


class ConnectionSink(Protocol):
    """Effects of a server connection, carried out by the driver."""

    def write(self, data: bytes) -> None:
        """Send ``data`` (buffered; never blocks). Usually the transport's bound ``write``."""

    def close(self) -> None:
        """Flush what was written, then close. Idempotent."""

    def abort(self) -> None:
        """Close at once, dropping unsent data (a peer that stopped reading)."""

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def start_app(self, stream: AsgiHttpStream) -> None:
        """Run the ASGI app for ``stream`` once the current core call has returned."""


class ServerConnection(Protocol):
    """A protocol core connection, as the driver sees it. See the module docstring."""

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
