"""``write_timeout`` as time without write *progress* (written once, any loop).

A peer that reads slowly but steadily must not be cut off, and one that reads nothing must
not keep its unsent response in the worker, whatever the connection's state. Transports say
when their buffer crosses its marks (``write_paused`` / ``write_resumed``), not when the
peer takes bytes, and asyncio could not say more without a call per write on the hot path;
so the driver samples ``Transport.write_progress`` (on Linux TCP: the bytes the peer
acknowledged) every ``write_timeout / 4`` while a ``WriteWatch`` is on:

* while the buffer is above its high-water mark and the protocol core is open, the core
  owns the deadline (``write_paused`` set it to ``now + write_timeout``); each sample that
  finds progress calls ``write_paused`` again, so the deadline starts over;
* once the core has closed the connection (``Connection: close``, keep-alive expiry, a
  GOAWAY) with bytes still unsent, the core is done: the watch itself says when
  ``write_timeout`` has passed without progress, and the driver aborts the transport.

Progress is seen at the sample after it happened, so a stall is acted on between
``write_timeout`` and ``write_timeout * 1.25`` after the peer last took a byte, never
sooner. (Where the count is ``-write_buffer_size``, bytes written between two samples can
hide one sample's progress; while paused only the core's small frames are written: apps
wait in ``drain``.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hypercorn.workers.backend import Transport

__all__ = ["SAMPLES", "WriteWatch"]

#: Samples per ``write_timeout``.
SAMPLES = 4


class WriteWatch:
    """The progress watch of one connection's writes; see the module docstring."""

    __slots__ = ("_mark", "_period", "_progress_at", "_timeout", "_transport", "closing", "due")

    def __init__(self, transport: Transport, timeout: float, now: float) -> None:
        self._transport = transport
        self._timeout = timeout
        self._period = timeout / SAMPLES
        #: The core has closed: the watch, not the core, ends a stalled flush.
        self.closing = False
        self._mark = transport.write_progress
        self._progress_at = now
        #: When the next sample is due.
        self.due = now + self._period

    def restart(self, now: float) -> None:
        """Writing paused again (or the core closed): progress is counted from now."""
        self._mark = self._transport.write_progress
        self._progress_at = now
        self.due = now + self._period

    def sample(self, now: float) -> bool:
        """True when the peer took bytes since the previous sample (or the restart)."""
        progress = self._transport.write_progress
        moved = progress > self._mark
        self._mark = progress
        if moved:
            self._progress_at = now
        self.due = now + self._period
        return moved

    def stalled(self, now: float) -> bool:
        """``write_timeout`` has passed since the peer last took a byte."""
        return now - self._progress_at >= self._timeout
