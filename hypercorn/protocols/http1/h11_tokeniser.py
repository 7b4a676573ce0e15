"""Request heads tokenised by h11, behind the strict front door (pure Python, always there).

``H11HeadParser`` is a ``HeadParser`` (``frontdoor.py``): the door has already delimited and
validated the head, so h11 only splits it into the method, the target and the fields.
"""

from __future__ import annotations

import h11

from hypercorn.protocols.errors import RemoteProtocolError
from hypercorn.protocols.limits import ProtocolLimits

__all__ = ["H11HeadParser"]


class H11HeadParser:
    """``HeadParser`` on a fresh ``h11.Connection`` per head (h11 keeps per-cycle state)."""

    __slots__ = ("_max_size",)

    def __init__(self, limits: ProtocolLimits) -> None:
        # The door already bounded the head; h11's own limit must not be the tighter one.
        self._max_size = limits.max_incomplete_size + 1

    def parse_head(
        self, head: bytes, has_body: bool
    ) -> tuple[bytes, bytes, list[tuple[bytes, bytes]]]:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self._max_size)
        conn.receive_data(head)
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            raise RemoteProtocolError(str(exc), status_hint=exc.error_status_hint) from exc
        if type(event) is not h11.Request:  # pragma: no cover - the door hands whole heads
            raise RemoteProtocolError("incomplete request head", status_hint=400)
        return event.method, event.target, list(event.headers)
