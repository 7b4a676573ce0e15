"""Attack limits for HTTP/2 connections: documented constants and a leaky-bucket meter.

Each limit is a constant here (or a Config setting passed through ``ProtocolLimits``) and has
a test in ``tests/protocols/test_h2_attacks.py``. What each one stops:

* **Rapid Reset** (CVE-2023-44487): a client opens streams and resets them at once, making
  the server start (and abandon) work at no cost to itself. Streams the client resets
  before their response is complete fill the *reset meter*; over ``RESET_BURST`` (draining
  at ``RESET_RATE`` per second) the connection gets GOAWAY(ENHANCE_YOUR_CALM).
* **Control-frame floods** (SETTINGS, PING, WINDOW_UPDATE, PRIORITY, RST_STREAM, empty
  DATA, CONTINUATION, unknown frames, frames on closed streams): ``FrameCounter`` reads the
  headers of the incoming frames before any engine parses them; frames that do not move a
  request forward fill the *overhead meter*, every frame of real progress (a request head,
  DATA with a payload or END_STREAM) drains it by one, a response DATA frame we send by two
  (a client may acknowledge it on the stream and on the connection), and
  time drains it at ``OVERHEAD_RATE`` per second. Over ``OVERHEAD_BURST``:
  GOAWAY(ENHANCE_YOUR_CALM), before the flood's frames are processed. Their *memory* is
  bounded separately: the connection stops reading while its transport is above the write
  high-water mark, so unread PING/SETTINGS acknowledgements cannot pile up.
* **CONTINUATION floods** (CVE-2024-27316 class) and **HPACK bombs**: the engine bounds a
  header block (h2: 64 CONTINUATION frames of at most ``h2_max_inbound_frame_size``) and the
  decoded header list (``h2_max_header_list_size``); both are answered with
  ENHANCE_YOUR_CALM.
* **Zero-window stalls**: a stream whose response waits on a window the peer never opens is
  reset (CANCEL) after ``write_timeout``, releasing the one app message it holds.
* **Request-body memory**: a stream holds at most its receive window (``STREAM_WINDOW``) of
  body the app has not read, a connection at most ``CONNECTION_WINDOW``.
* **Stream-id exhaustion and priority loops**: ids must grow (the engine), a stream may not
  depend on itself (the engine), and no priority tree is kept, so no loop can form;
  ``keep_alive_max_requests`` bounds the streams of one connection.
"""

from __future__ import annotations

#: Streams reset by the client before their response completed: burst and drain per second.
RESET_BURST = 200
RESET_RATE = 100.0
#: Overhead frames beyond real progress: burst and drain per second.
OVERHEAD_BURST = 2000
OVERHEAD_RATE = 200.0
#: Request body per stream the app has not read (the stream window we advertise: the RFC's
#: default, so no SETTINGS round trip is needed).
STREAM_WINDOW = 65_535
#: Request body per connection the apps have not read (the connection window we open).
CONNECTION_WINDOW = 1 << 20


class LeakyBucket:
    """A level that ``add`` raises and time lowers at ``rate`` per second; ``add`` says
    whether the level went over ``burst``."""

    __slots__ = ("_at", "burst", "level", "rate")

    def __init__(self, burst: float, rate: float, now: float) -> None:
        self.burst = burst
        self.rate = rate
        self.level = 0.0
        self._at = now

    def add(self, amount: float, now: float) -> bool:
        level = self.level - (now - self._at) * self.rate
        self._at = now
        level = level + amount if level > 0.0 else amount
        self.level = level
        return level > self.burst

    def drain(self, amount: float) -> None:
        level = self.level - amount
        self.level = level if level > 0.0 else 0.0


_DATA = 0x0
_HEADERS = 0x1
_END_STREAM = 0x1
_PADDED = 0x8


class FrameCounter:
    """Reads the 9-octet frame headers of the incoming byte stream (after ``skip`` octets of
    preface) and charges the overhead meter: +1 per frame that moves no request forward,
    -1 per one that does (see the module docstring). Engine-independent and cheap: a
    request usually arrives as one or two frames per read."""

    __slots__ = ("_partial", "_skip")

    def __init__(self, skip: int) -> None:
        self._skip = skip
        self._partial = b""

    def feed(self, data: bytes, meter: LeakyBucket, now: float) -> bool:
        """True when the meter went over its burst."""
        partial = self._partial
        if partial:  # (a header cut by the previous read: rare, so the copy is fine)
            data = partial + data
            self._partial = b""
            pos = 0
        else:
            pos = self._skip
        size = len(data)
        net = 0
        while pos + 9 <= size:
            length = int.from_bytes(data[pos : pos + 3], "big")
            kind = data[pos + 3]
            if kind == _HEADERS:
                net -= 1
            elif kind == _DATA:
                flags = data[pos + 4]
                payload = length
                if flags & _PADDED and pos + 9 < size:
                    payload -= 1 + data[pos + 9]
                net += -1 if payload > 0 or flags & _END_STREAM else 1
            else:
                net += 1
            pos += 9 + length
        if pos < size:
            self._partial = data[pos:]
            self._skip = 0
        else:
            self._skip = pos - size
        if net > 0:
            return meter.add(net, now)
        if net < 0:
            meter.drain(-net)
        return False
