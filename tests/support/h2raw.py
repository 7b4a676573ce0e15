"""A hand-built HTTP/2 client for hostile frame sequences (h2spec-style), in memory.

``RawClient`` talks to an ``H2Connection`` through a ``RecordingSink``: it writes frames byte
by byte as the test says (``frame()`` packs any type, flags, stream id and payload, valid or
not), encodes header blocks with its own ``hpack.Encoder`` (or takes raw block bytes), and
parses what the server wrote into ``hyperframe`` frames. ``connection_error`` and
``stream_error`` check the RFC 9113 outcome the way h2spec's verifiers do.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Any

import hpack
from hyperframe.frame import Frame, GoAwayFrame, RstStreamFrame

from hypercorn.protocols.headers import DateCache
from hypercorn.protocols.http2 import H2Connection
from hypercorn.protocols.limits import ProtocolLimits
from tests.support import h2pair
from tests.support.h2pair import ENGINES, PREFACE
from tests.support.pairs import RecordingSink

# Frame types and flags (RFC 9113 section 6).
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE = 0, 1, 2, 3, 4, 5
PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 6, 7, 8, 9
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20

# Error codes.
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR = 0x0, 0x1, 0x2, 0x3
SETTINGS_TIMEOUT, STREAM_CLOSED, FRAME_SIZE_ERROR, REFUSED_STREAM = 0x4, 0x5, 0x6, 0x7
CANCEL, COMPRESSION_ERROR, ENHANCE_YOUR_CALM = 0x8, 0x9, 0xB


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    """Any frame, valid or not: 9-octet header (24-bit length) and payload."""
    return (
        struct.pack(">I", len(payload))[1:] + struct.pack(">BBI", kind, flags, stream_id) + payload
    )


def settings(*pairs: tuple[int, int], ack: bool = False) -> bytes:
    return frame(
        SETTINGS, ACK if ack else 0, 0, b"".join(struct.pack(">HI", k, v) for k, v in pairs)
    )


def window_update(stream_id: int, increment: int) -> bytes:
    return frame(WINDOW_UPDATE, 0, stream_id, struct.pack(">I", increment))


def rst_stream(stream_id: int, code: int) -> bytes:
    return frame(RST_STREAM, 0, stream_id, struct.pack(">I", code))


def priority(stream_id: int, depends_on: int, weight: int = 16) -> bytes:
    return frame(PRIORITY, 0, stream_id, struct.pack(">IB", depends_on, weight - 1))


def ping(data: bytes = b"12345678", ack: bool = False) -> bytes:
    return frame(PING, ACK if ack else 0, 0, data)


REQUEST = [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"), (b":authority", b"x")]


class RawClient:
    """A raw HTTP/2 client against an in-memory H2Connection (see the module docstring)."""

    def __init__(
        self,
        limits: ProtocolLimits | None = None,
        *,
        engine: str | None = None,
        now: float = 1000.0,
        preface: bool = True,
    ) -> None:
        self.limits = limits or ProtocolLimits()
        self.now = now
        self.sink = RecordingSink()
        self.server = H2Connection(
            sink=self.sink,
            limits=self.limits,
            dates=DateCache(),
            client=("127.0.0.1", 50000),
            server=("127.0.0.1", 8000),
            ssl=False,
            tls=None,
            state=None,
            now=now,
            engine=ENGINES[engine or h2pair.DEFAULT_ENGINE](self.limits),
        )
        self.encoder = hpack.Encoder()
        self._read = 0
        self._buffer = b""
        #: Every frame the server sent, in order.
        self.received: list[Frame] = []
        if preface:
            self.send(PREFACE + settings())
            self.frames()

    # -- to the server -------------------------------------------------------------------

    def send(self, *chunks: bytes) -> None:
        data = b"".join(chunks)
        if data:
            self.server.receive_data(data, self.now)

    def block(self, headers: Iterable[tuple[bytes, bytes]] = REQUEST) -> bytes:
        """An HPACK block from this client's encoder (its dynamic table stays in step)."""
        return self.encoder.encode(list(headers))

    def headers(
        self,
        stream_id: int,
        headers: Iterable[tuple[bytes, bytes]] = REQUEST,
        *,
        end_stream: bool = True,
        flags: int = END_HEADERS,
        block: bytes | None = None,
    ) -> None:
        payload = self.block(headers) if block is None else block
        self.send(frame(HEADERS, flags | (END_STREAM if end_stream else 0), stream_id, payload))

    def request(self, stream_id: int, **kwargs: Any) -> None:
        self.headers(stream_id, **kwargs)

    # -- from the server -----------------------------------------------------------------

    def frames(self) -> list[Frame]:
        """Frames the server wrote since the last call."""
        data = self._buffer + bytes(self.sink.out[self._read :])
        self._read = len(self.sink.out)
        out = []
        while len(data) >= 9:
            parsed, length = Frame.parse_frame_header(memoryview(data[:9]))
            if len(data) < 9 + length:
                break
            parsed.parse_body(memoryview(data[9 : 9 + length]))
            out.append(parsed)
            data = data[9 + length :]
        self._buffer = data
        self.received.extend(out)
        return out

    @property
    def closed(self) -> bool:
        return self.sink.closed

    def goaway(self) -> GoAwayFrame | None:
        self.frames()
        found = [f for f in self.received if isinstance(f, GoAwayFrame)]
        return found[-1] if found else None

    def resets(self, stream_id: int | None = None) -> list[int]:
        self.frames()
        return [
            f.error_code
            for f in self.received
            if isinstance(f, RstStreamFrame) and (stream_id is None or f.stream_id == stream_id)
        ]

    def connection_error(self, *codes: int) -> None:
        """GOAWAY with one of ``codes``, and the connection closed."""
        goaway = self.goaway()
        assert goaway is not None, f"no GOAWAY; got {self.received}"
        assert goaway.error_code in codes, f"GOAWAY {goaway.error_code:#x}, expected {codes}"
        assert self.closed, "connection not closed after the connection error"

    def stream_error(self, stream_id: int, *codes: int) -> None:
        """RST_STREAM on ``stream_id`` with one of ``codes``, or a connection error with one."""
        resets = self.resets(stream_id)
        if resets:
            assert resets[-1] in codes, f"RST_STREAM {resets[-1]:#x}, expected {codes}"
            return
        self.connection_error(*codes)

    def alive(self) -> None:
        """Still serving: a PING is answered and no GOAWAY was sent."""
        self.send(ping(b"stillok!"))
        acks = [f for f in self.frames() if f.type == PING and "ACK" in f.flags]
        assert any(f.opaque_data == b"stillok!" for f in acks), "no PING ACK"
        assert self.goaway() is None
        assert not self.closed
