"""A fast path for WebSocket data frames, beside wsproto (the reference).

Most frames a server sees are whole, unfragmented, uncompressed TEXT or BINARY frames from a
masking client, and most it sends are the same without the mask. wsproto handles every frame
with the full machinery (buffer objects, an extension pass, a generator per frame): about half
of a small echo's cost. ``take_frames`` reads the common frames at the start of the bytes and
stops at the first one it does not take, which wsproto then reads in its place: control
frames, fragments, reserved bits or bad opcodes, unmasked frames, 64-bit lengths, an
incomplete frame, a frame over the message limit, and text that is not valid UTF-8 (so every
error is found, and answered, by the reference). ``frame_message`` builds the server's data
frame. ``WsSession`` uses them only while wsproto holds nothing (between messages, empty
buffer) and no compression was negotiated, and only when ``websocket_fast_path`` is on: the
WebSocket test suites and Autobahn run both ways.
"""

from __future__ import annotations

import struct

_TEXT = 0x81  # FIN + TEXT, no reserved bits
_BINARY = 0x82
_TEXT_HEADS = tuple(bytes((_TEXT, n)) for n in range(126))
_BINARY_HEADS = tuple(bytes((_BINARY, n)) for n in range(126))


def take_frames(data: bytes, limit: int) -> tuple[list[str | bytes], int]:
    """(messages of the whole common frames at the start of ``data``, bytes they used)."""
    size = len(data)
    length = size - 6
    if 0 < length < 126 and data[1] == 0x80 | length and length <= limit:
        # The usual read: exactly one small frame (no loop, no list growth).
        first = data[0]
        if first in (_TEXT, _BINARY):
            payload = (
                int.from_bytes(data[6:], "little")
                ^ int.from_bytes((data[2:6] * ((length >> 2) + 1))[:length], "little")
            ).to_bytes(length, "little")
            if first == _BINARY:
                return [payload], size
            try:
                return [payload.decode("utf-8")], size
            except UnicodeDecodeError:
                return [], 0
    messages: list[str | bytes] = []
    pos = 0
    while size - pos >= 6:
        first = data[pos]
        second = data[pos + 1]
        if (first != _TEXT and first != _BINARY) or second < 0x80:
            break  # anything but a whole masked data frame
        length = second & 0x7F
        head = pos + 2
        if length == 126:
            if size - pos < 8:
                break
            length = (data[head] << 8) | data[head + 1]
            if length < 126:
                break  # (not the minimal length form: wsproto fails it)
            head += 2
        elif length == 127:
            break
        end = head + 4 + length
        if end > size or length > limit:
            break
        if length:
            mask = data[head : head + 4] * ((length >> 2) + 1)
            payload = (
                int.from_bytes(data[head + 4 : end], "little")
                ^ int.from_bytes(mask[:length], "little")
            ).to_bytes(length, "little")
        else:
            payload = b""
        if first == _TEXT:
            try:
                messages.append(payload.decode("utf-8"))
            except UnicodeDecodeError:
                break
        else:
            messages.append(payload)
        pos = end
    return messages, pos


def frame_message(data: str | bytes) -> bytes:
    """One unmasked, unfragmented, uncompressed server data frame for ``data``."""
    if type(data) is str:
        payload = data.encode("utf-8")
        heads = _TEXT_HEADS
        first = _TEXT
    else:
        payload = data  # type: ignore[assignment]
        heads = _BINARY_HEADS
        first = _BINARY
    length = len(payload)
    if length < 126:
        return heads[length] + payload
    if length < 65536:
        return struct.pack("!BBH", first, 126, length) + payload
    return struct.pack("!BBQ", first, 127, length) + payload
