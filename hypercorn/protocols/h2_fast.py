"""The fast HTTP/2 engine: the ``H2Engine`` contract (``h2_engine.py``) without the ``h2`` package.

The reference engine spends most of a request in h2's general machinery: an event object per
frame, a state-machine transition table per stream input, generator-chained header
validation, hyperframe objects and HPACK encoding with a dynamic table. This engine is the
same protocol written for a server's hot path:

* frames are read with one ``struct`` call per header and dispatched on their type;
* a stream is a small record (``_Stream``) with the two halves' state, both windows and the
  Content-Length check; a closed stream is remembered (bounded) with how it closed, so frames
  that race a reset get RST_STREAM(STREAM_CLOSED) and others a connection error, as in h2;
* header blocks go through ``h2_hpack.BlockDecoder`` (memoised decode and RFC 9113 checks)
  and ``encode_block`` (stateless, memoised);
* events are calls on the connection, made as the frames are read.

It is held to the reference by running the whole HTTP/2 suite on both engines
(``tests/support/h2pair.py: ENGINES``): every outcome, error code and limit the suite checks.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from hypercorn.protocols.h2_engine import H2Events
from hypercorn.protocols.h2_hpack import BlockDecoder, HeaderBlockError, encode_block

if TYPE_CHECKING:
    from hypercorn.protocols.h2_engine import Headers

_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_HEADER = struct.Struct(">HBBBL")  # length (24 bits: high 16 + low 8), type, flags, stream
_pack_header = _HEADER.pack
_unpack_header = _HEADER.unpack_from
_U32 = struct.Struct(">L")
_unpack_u32 = _U32.unpack_from
_SETTING = struct.Struct(">HL")

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE = 0, 1, 2, 3, 4, 5
PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 6, 7, 8, 9
END_STREAM = ACK = 0x1
END_HEADERS, PADDED, PRIORITY_FLAG = 0x4, 0x8, 0x20

PROTOCOL_ERROR, FLOW_CONTROL_ERROR, STREAM_CLOSED, FRAME_SIZE_ERROR = 0x1, 0x3, 0x5, 0x6
ENHANCE_YOUR_CALM = 0xB

_MAX_WINDOW = 2**31 - 1
#: HEADERS plus CONTINUATION frames one header block may take (h2's backlog, the same limit).
_CONTINUATION_BACKLOG = 64
#: Closed streams remembered (the newest half to all of this many), so a frame the peer sent
#: before it saw our reset gets a stream error, not a connection error. h2 keeps 2**16: about
#: 5 MB per long-lived connection; the newest 2,048 cover far more than a round trip's streams.
_CLOSED_MEMORY = 2**12


def _frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    size = len(payload)
    return _pack_header(size >> 8, size & 0xFF, kind, flags, stream_id) + payload


class _Stream:
    __slots__ = (
        "expected",
        "local_closed",
        "received",
        "recv_window",
        "remote_closed",
        "send_window",
    )

    def __init__(self, send_window: int, expected: int | None, remote_closed: bool) -> None:
        self.send_window = send_window
        self.recv_window = 65_535
        self.expected = expected  # the request's Content-Length, or None
        self.received = 0
        self.remote_closed = remote_closed
        self.local_closed = False


class _Violation(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class H2FastEngine:
    """See the module docstring; the contract is ``h2_engine.H2Engine``."""

    __slots__ = (
        "_block",
        "_block_end",
        "_block_frames",
        "_block_id",
        "_buf",
        "_buffered",
        "_closed",
        "_decoder",
        "_error",
        "_highest",
        "_last_block",
        "_last_headers",
        "_local_frame",
        "_need",
        "_next_push",
        "_out",
        "_preface",
        "_pushed",
        "_recv_conn",
        "_remote_initial",
        "_remote_max_streams",
        "_send_conn",
        "_settings",
        "_streams",
        "max_frame_size",
        "push_enabled",
    )

    def __init__(
        self,
        *,
        max_concurrent_streams: int,
        max_header_list_size: int,
        max_inbound_frame_size: int,
    ) -> None:
        self._out: list[bytes] = []
        #: The start of a frame cut by a read, and the reads after it (``_buffered`` octets
        #: in all; ``_need`` make the frame, or its header, whole).
        self._buf: list[bytes] = []
        self._buffered = 0
        self._need = 0
        self._preface = _PREFACE
        self._error = False
        self._local_frame = max_inbound_frame_size
        self._decoder = BlockDecoder(max_header_list_size)
        self._streams: dict[int, _Stream] = {}
        #: stream id -> it closed by a reset (else by END_STREAM both ways)
        self._closed: dict[int, bool] = {}
        self._highest = 0
        #: The last header list encoded (by identity) and its block.
        self._last_headers: object = None
        self._last_block = b""
        self._next_push = 2
        self._pushed: set[int] = set()
        self._send_conn = 65_535
        self._recv_conn = 65_535
        self._remote_initial = 65_535
        self._remote_max_streams = _MAX_WINDOW
        #: The peer's SETTINGS as far as we use them.
        self.max_frame_size = 16_384
        self.push_enabled = True
        self._block_id = 0
        self._block: list[bytes] = []
        self._block_end = False
        self._block_frames = 0
        self._settings = b"".join(
            _SETTING.pack(code, value)
            for code, value in (
                (0x1, 4096),
                (0x2, 0),
                (0x3, max_concurrent_streams),
                (0x4, 65_535),
                (0x5, max_inbound_frame_size),
                (0x6, max_header_list_size),
                (0x8, 1),  # RFC 8441 extended CONNECT (protocols/h2_ws.py)
            )
        )

    # -- setup and output ------------------------------------------------------------------

    def initiate(self, upgrade_settings: bytes | None = None) -> None:
        self._out.append(_frame(SETTINGS, 0, 0, self._settings))
        if upgrade_settings is not None:
            # The HTTP2-Settings of an h2c upgrade: the client's first SETTINGS, never acked.
            try:
                self._apply_settings(upgrade_settings)
            except _Violation:
                pass
            self._streams[1] = _Stream(self._remote_initial, None, True)
            self._highest = 1

    def data_to_send(self) -> bytes:
        out = self._out
        if not out:
            return b""
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        return data

    # -- reading ---------------------------------------------------------------------------

    def receive_data(self, data: bytes, events: H2Events) -> None:
        if self._error:
            return
        if self._buf:
            # A frame cut by a read: reads are collected until it is whole (joined once, so
            # a large frame in many reads costs linear time).
            self._buf.append(data)
            self._buffered += len(data)
            if self._buffered < self._need:
                return
            buf = b"".join(self._buf)
            self._buf = []
        else:
            buf = data
        pos = 0
        try:
            if self._preface:
                want = self._preface
                got = buf[: len(want)]
                if want[: len(got)] != got:
                    raise _Violation(PROTOCOL_ERROR, "invalid HTTP/2 preface")
                self._preface = want[len(got) :]
                pos = len(got)
            size = len(buf)
            while size - pos >= 9:
                high, low, kind, flags, stream_id = _unpack_header(buf, pos)
                length = (high << 8) | low
                if length > self._local_frame:
                    raise _Violation(FRAME_SIZE_ERROR, f"frame of {length} octets")
                end = pos + 9 + length
                if end > size:
                    self._need = end - pos
                    break
                payload = buf[pos + 9 : end]
                pos = end
                stream_id &= _MAX_WINDOW
                if self._block_id and kind != CONTINUATION:
                    raise _Violation(PROTOCOL_ERROR, "frame inside a header block")
                if kind == HEADERS:
                    self._headers(stream_id, flags, payload, events)
                elif kind == DATA:
                    self._data(stream_id, flags, payload, events)
                elif kind == WINDOW_UPDATE:
                    self._window_update(stream_id, payload, events)
                elif kind == CONTINUATION:
                    self._continuation(stream_id, flags, payload, events)
                elif kind == SETTINGS:
                    self._settings_frame(stream_id, flags, payload, events)
                elif kind == PING:
                    if stream_id:
                        raise _Violation(PROTOCOL_ERROR, "PING on a stream")
                    if length != 8:
                        raise _Violation(FRAME_SIZE_ERROR, "PING of a wrong size")
                    if flags & ACK:
                        events.ping_acked(payload)
                    else:
                        self._out.append(_frame(PING, ACK, 0, payload))
                elif kind == RST_STREAM:
                    self._rst_stream(stream_id, payload, events)
                elif kind == PRIORITY:
                    if not stream_id:
                        raise _Violation(PROTOCOL_ERROR, "PRIORITY on stream 0")
                    if length != 5:
                        raise _Violation(FRAME_SIZE_ERROR, "PRIORITY of a wrong size")
                    if _unpack_u32(payload)[0] & _MAX_WINDOW == stream_id:
                        raise _Violation(PROTOCOL_ERROR, "a stream depends on itself")
                elif kind == GOAWAY:
                    if stream_id:
                        raise _Violation(PROTOCOL_ERROR, "GOAWAY on a stream")
                    if length < 8:
                        raise _Violation(FRAME_SIZE_ERROR, "GOAWAY too short")
                    last, code = struct.unpack_from(">LL", payload)
                    events.goaway_received(last & _MAX_WINDOW, code)
                elif kind == PUSH_PROMISE:
                    raise _Violation(PROTOCOL_ERROR, "PUSH_PROMISE from a client")
                # (Unknown types are ignored: RFC 9113 section 5.5.)
        except _Violation as exc:
            self._fail(exc.code, str(exc), events)
            return
        except HeaderBlockError as exc:
            self._fail(exc.code, str(exc), events)
            return
        if pos < len(buf):
            rest = buf[pos:]
            if len(rest) < 9:
                self._need = 9
            self._buf = [rest]
            self._buffered = len(rest)

    def _fail(self, code: int, message: str, events: H2Events) -> None:
        self._error = True
        self._buf = []
        self._out.append(_frame(GOAWAY, 0, 0, struct.pack(">LL", self._highest, code)))
        events.connection_error(code, message)

    def _stream_error(self, stream_id: int, code: int, events: H2Events) -> None:
        """RFC 9113 section 5.4.2 (as h2: a frame on a half-closed (remote) stream, a stream
        window overflow): RST_STREAM(``code``), and the connection hears of it as a reset."""
        self._close(stream_id, True)
        self._out.append(_frame(RST_STREAM, 0, stream_id, _U32.pack(code)))
        events.stream_reset(stream_id, code)

    def _closed_stream(self, stream_id: int, what: str) -> bool:
        """A frame for a stream not open: True when it closed by a reset (the caller answers
        RST_STREAM(STREAM_CLOSED)); raises the connection error otherwise."""
        closed = self._closed.get(stream_id)
        if closed:
            return True
        if closed is None and (
            (stream_id & 1 and stream_id > self._highest)
            or (not stream_id & 1 and stream_id >= self._next_push)
        ):
            raise _Violation(PROTOCOL_ERROR, f"{what} on idle stream {stream_id}")
        if closed is None:
            raise _Violation(PROTOCOL_ERROR, f"{what} on stream {stream_id}, closed before")
        raise _Violation(STREAM_CLOSED, f"{what} on closed stream {stream_id}")

    def _headers(self, stream_id: int, flags: int, payload: bytes, events: H2Events) -> None:
        if not stream_id:
            raise _Violation(PROTOCOL_ERROR, "HEADERS on stream 0")
        if flags & PADDED:
            if not payload or payload[0] >= len(payload):
                raise _Violation(PROTOCOL_ERROR, "bad padding")
            payload = payload[1 : len(payload) - payload[0]]
        if flags & PRIORITY_FLAG:
            if len(payload) < 5:
                raise _Violation(FRAME_SIZE_ERROR, "HEADERS priority too short")
            if _unpack_u32(payload)[0] & _MAX_WINDOW == stream_id:
                raise _Violation(PROTOCOL_ERROR, "a stream depends on itself")
            payload = payload[5:]
        if flags & END_HEADERS:
            self._block_done(stream_id, payload, bool(flags & END_STREAM), events)
        else:
            self._block_id = stream_id
            self._block = [payload]
            self._block_end = bool(flags & END_STREAM)
            self._block_frames = 1

    def _continuation(self, stream_id: int, flags: int, payload: bytes, events: H2Events) -> None:
        if not self._block_id or stream_id != self._block_id:
            raise _Violation(PROTOCOL_ERROR, "CONTINUATION out of a header block")
        self._block_frames += 1
        if self._block_frames > _CONTINUATION_BACKLOG:
            raise _Violation(ENHANCE_YOUR_CALM, "too many CONTINUATION frames")
        self._block.append(payload)
        if flags & END_HEADERS:
            block = b"".join(self._block)
            self._block_id = 0
            self._block = []
            self._block_done(stream_id, block, self._block_end, events)

    def _block_done(self, stream_id: int, block: bytes, end: bool, events: H2Events) -> None:
        stream = self._streams.get(stream_id)
        if stream is None:
            if stream_id in self._closed or not stream_id & 1 or stream_id <= self._highest:
                self._decoder.skip(block)  # (the HPACK state stays in step)
                if self._closed_stream(stream_id, "HEADERS"):
                    self._out.append(_frame(RST_STREAM, 0, stream_id, _U32.pack(STREAM_CLOSED)))
                return
            headers, _, expected = self._decoder.request(block)
            self._highest = stream_id
            self._streams[stream_id] = _Stream(self._remote_initial, expected, end)
            events.request_received(stream_id, headers, end)  # (memoised: not to be changed)
            return
        if stream.remote_closed:
            self._decoder.skip(block)
            self._stream_error(stream_id, STREAM_CLOSED, events)
            return
        if not end:
            raise _Violation(PROTOCOL_ERROR, "trailers without END_STREAM")
        trailers = self._decoder.trailers(block)
        stream.remote_closed = True
        if stream.local_closed:
            self._close(stream_id, False)
        events.trailers_received(stream_id, trailers)

    def _data(self, stream_id: int, flags: int, payload: bytes, events: H2Events) -> None:
        if not stream_id:
            raise _Violation(PROTOCOL_ERROR, "DATA on stream 0")
        flow = len(payload)
        if flags & PADDED:
            if not payload or payload[0] >= flow:
                raise _Violation(PROTOCOL_ERROR, "bad padding")
            payload = payload[1 : flow - payload[0]]
        self._recv_conn -= flow
        if self._recv_conn < 0:
            raise _Violation(FLOW_CONTROL_ERROR, "the connection window is exceeded")
        stream = self._streams.get(stream_id)
        if stream is None or stream.remote_closed:
            if stream is not None:
                self._stream_error(stream_id, STREAM_CLOSED, events)
            elif self._closed_stream(stream_id, "DATA"):
                self._out.append(_frame(RST_STREAM, 0, stream_id, _U32.pack(STREAM_CLOSED)))
            if flow:  # (nobody will read it: the connection window goes back at once)
                self._recv_conn += flow
                self._out.append(_frame(WINDOW_UPDATE, 0, 0, _U32.pack(flow)))
            return
        stream.recv_window -= flow
        if stream.recv_window < 0:
            raise _Violation(FLOW_CONTROL_ERROR, f"stream {stream_id}'s window is exceeded")
        end = bool(flags & END_STREAM)
        expected = stream.expected
        if expected is not None:
            received = stream.received = stream.received + len(payload)
            if received > expected or (end and received != expected):
                raise _Violation(PROTOCOL_ERROR, "body length differs from content-length")
        if end:
            stream.remote_closed = True
            if stream.local_closed:
                self._close(stream_id, False)
        events.data_received(stream_id, payload, flow, end)

    def _window_update(self, stream_id: int, payload: bytes, events: H2Events) -> None:
        if len(payload) != 4:
            raise _Violation(FRAME_SIZE_ERROR, "WINDOW_UPDATE of a wrong size")
        increment = _unpack_u32(payload)[0] & _MAX_WINDOW
        if not increment:
            raise _Violation(PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
        if not stream_id:
            self._send_conn += increment
            if self._send_conn > _MAX_WINDOW:
                raise _Violation(FLOW_CONTROL_ERROR, "the connection window overflows")
            events.window_opened(0)
            return
        stream = self._streams.get(stream_id)
        if stream is None:
            # (Late WINDOW_UPDATEs for closed streams are normal: ignored. Idle ones are not.)
            if stream_id not in self._closed and (
                (stream_id & 1 and stream_id > self._highest)
                or (not stream_id & 1 and stream_id >= self._next_push)
            ):
                raise _Violation(PROTOCOL_ERROR, f"WINDOW_UPDATE on idle stream {stream_id}")
            return
        stream.send_window += increment
        if stream.send_window > _MAX_WINDOW:
            self._stream_error(stream_id, FLOW_CONTROL_ERROR, events)
            return
        events.window_opened(stream_id)

    def _rst_stream(self, stream_id: int, payload: bytes, events: H2Events) -> None:
        if len(payload) != 4:
            raise _Violation(FRAME_SIZE_ERROR, "RST_STREAM of a wrong size")
        if not stream_id:
            raise _Violation(PROTOCOL_ERROR, "RST_STREAM on stream 0")
        if stream_id in self._streams:
            self._close(stream_id, True)
            events.stream_reset(stream_id, _unpack_u32(payload)[0])
        elif stream_id not in self._closed:
            self._closed_stream(stream_id, "RST_STREAM")

    def _settings_frame(self, stream_id: int, flags: int, payload: bytes, events: H2Events) -> None:
        if stream_id:
            raise _Violation(PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & ACK:
            if payload:
                raise _Violation(FRAME_SIZE_ERROR, "SETTINGS ACK with a payload")
            return
        if len(payload) % 6:
            raise _Violation(FRAME_SIZE_ERROR, "SETTINGS of a wrong size")
        if self._apply_settings(payload):
            self._out.append(_frame(SETTINGS, ACK, 0))
            events.window_opened(0)
        else:
            self._out.append(_frame(SETTINGS, ACK, 0))

    def _apply_settings(self, payload: bytes) -> bool:
        """Apply a SETTINGS payload; True when the windows or the frame size changed."""
        pairs = [_SETTING.unpack_from(payload, at) for at in range(0, len(payload), 6)]
        for code, value in pairs:  # (all checked before any applies, as h2 does)
            if code in (0x2, 0x8) and value > 1:
                raise _Violation(PROTOCOL_ERROR, f"setting {code} = {value}")
            if code == 0x4 and value > _MAX_WINDOW:
                raise _Violation(FLOW_CONTROL_ERROR, "initial window too large")
            if code == 0x5 and not 16_384 <= value <= 16_777_215:
                raise _Violation(PROTOCOL_ERROR, f"max frame size {value}")
        moved = False
        for code, value in pairs:
            if code == 0x4:
                delta = value - self._remote_initial
                self._remote_initial = value
                for stream in self._streams.values():
                    stream.send_window += delta
                    if stream.send_window > _MAX_WINDOW:
                        raise _Violation(FLOW_CONTROL_ERROR, "a stream window overflows")
                moved = True
            elif code == 0x5:
                moved = moved or value != self.max_frame_size
                self.max_frame_size = value
            elif code == 0x2:
                self.push_enabled = bool(value)
            elif code == 0x3:
                self._remote_max_streams = value
        return moved

    # -- writing ---------------------------------------------------------------------------

    def _close(self, stream_id: int, by_reset: bool) -> None:
        del self._streams[stream_id]
        self._pushed.discard(stream_id)
        closed = self._closed
        if len(closed) >= _CLOSED_MEMORY:
            # Forget the older half at once: deleting the oldest one by one is quadratic (a
            # dict's iteration walks over the holes its deletions leave until it resizes).
            self._closed = closed = dict(list(closed.items())[_CLOSED_MEMORY // 2 :])
        closed[stream_id] = by_reset

    def _header_frames(self, kind: int, flags: int, stream_id: int, block: bytes) -> None:
        size = self.max_frame_size
        out = self._out
        if len(block) <= size:
            out.append(_frame(kind, flags | END_HEADERS, stream_id, block))
            return
        out.append(_frame(kind, flags, stream_id, block[:size]))
        for start in range(size, len(block), size):
            last = start + size >= len(block)
            out.append(
                _frame(
                    CONTINUATION, END_HEADERS if last else 0, stream_id, block[start : start + size]
                )
            )

    def send_headers(self, stream_id: int, headers: Headers, end_stream: bool) -> None:
        stream = self._streams.get(stream_id)
        if stream is None or stream.local_closed:
            return
        if headers is self._last_headers:
            block = self._last_block
        elif type(headers) is tuple:  # (remembered by identity: only an immutable list)
            block = encode_block(headers)
            self._last_headers = headers
            self._last_block = block
        else:
            block = encode_block(tuple(headers))
        if len(block) <= self.max_frame_size:
            size = len(block)
            self._out.append(
                _pack_header(size >> 8, size & 0xFF, HEADERS, END_HEADERS | end_stream, stream_id)
                + block
            )
        else:
            self._header_frames(HEADERS, int(end_stream), stream_id, block)
        if end_stream:
            stream.local_closed = True
            if stream.remote_closed:
                self._close(stream_id, False)

    def send_data(self, stream_id: int, data: bytes, end_stream: bool) -> None:
        stream = self._streams.get(stream_id)
        if stream is None or stream.local_closed:
            return
        size = len(data)
        stream.send_window -= size
        self._send_conn -= size
        self._out.append(_pack_header(size >> 8, size & 0xFF, DATA, end_stream, stream_id) + data)
        if end_stream:
            stream.local_closed = True
            if stream.remote_closed:
                self._close(stream_id, False)

    def send_window(self, stream_id: int) -> int:
        stream = self._streams.get(stream_id)
        if stream is None:
            return 0
        window = stream.send_window
        return window if window < self._send_conn else self._send_conn

    def reset_stream(self, stream_id: int, error_code: int) -> None:
        if stream_id in self._streams:
            self._close(stream_id, True)
        elif stream_id in self._closed:
            return
        self._out.append(_frame(RST_STREAM, 0, stream_id, _U32.pack(error_code)))

    def push_stream(self, stream_id: int, headers: Headers) -> int | None:
        parent = self._streams.get(stream_id)
        if not self.push_enabled or parent is None or parent.local_closed:
            return None
        promised = self._next_push
        if promised > _MAX_WINDOW or len(self._pushed) >= self._remote_max_streams:
            return None
        self._next_push = promised + 2
        block = _U32.pack(promised) + encode_block(tuple(headers))
        self._header_frames(PUSH_PROMISE, 0, stream_id, block)
        self._streams[promised] = _Stream(self._remote_initial, None, True)
        self._pushed.add(promised)
        return promised

    def open_window(self, stream_id: int, increment: int) -> None:
        if stream_id:
            stream = self._streams.get(stream_id)
            if stream is None or stream.remote_closed:
                return
            stream.recv_window += increment
        else:
            self._recv_conn += increment
        self._out.append(_frame(WINDOW_UPDATE, 0, stream_id, _U32.pack(increment)))

    def ping(self, data: bytes) -> None:
        self._out.append(_frame(PING, 0, 0, data))

    def goaway(self, last_stream_id: int, error_code: int) -> None:
        self._out.append(_frame(GOAWAY, 0, 0, struct.pack(">LL", last_stream_id, error_code)))
