"""Header helpers shared by the wire protocols: Date/Server headers, status lines, validation.

Time is injected: ``DateCache`` turns the loop's monotonic ``now`` into wall-clock time with
an offset the worker measures (and refreshes) outside ``protocols/``, and formats the Date
header at most once per second.
"""

from __future__ import annotations

import re
from email.utils import formatdate
from http import HTTPStatus

from hypercorn.protocols.errors import AppProtocolError

#: RFC 9110 token: the only bytes allowed in a field name.
_TOKEN = re.compile(rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+")
is_token = _TOKEN.fullmatch

#: Bytes never allowed in a field value we put on the wire (response splitting).
_FORBIDDEN_IN_VALUE = re.compile(rb"[\x00\r\n]")
has_forbidden_value_bytes = _FORBIDDEN_IN_VALUE.search


def format_http_date(wall_time: float) -> bytes:
    """IMF-fixdate, as RFC 9110 wants: ``Sun, 06 Nov 1994 08:49:37 GMT``."""
    return formatdate(wall_time, usegmt=True).encode("ascii")


class DateCache:
    """The current Date header value, recomputed at most once per wall-clock second.

    ``wall_offset`` is ``time.time() - loop.time()``, measured by the worker (the core never
    reads a clock). The worker may refresh it now and then to follow wall-clock steps.
    """

    __slots__ = ("_line", "_second", "_value", "tails", "wall_offset")

    def __init__(self, wall_offset: float = 0.0) -> None:
        self.wall_offset = wall_offset
        self._second = -1
        self._value = b""
        self._line = b""
        #: The HTTP/1.1 response tails last built (Date line + fixed lines), by their fixed
        #: lines: (tail, loop time until which it holds). A new connection starts from it
        #: rather than building its own.
        self.tails: dict[bytes, tuple[bytes, float]] = {}

    def _refresh(self, now: float) -> None:
        wall = now + self.wall_offset
        self._second = int(wall)
        self._value = format_http_date(self._second)
        self._line = b"date: " + self._value + b"\r\n"

    def value(self, now: float) -> bytes:
        """The header value, e.g. ``b"Sun, 06 Nov 1994 08:49:37 GMT"``."""
        if int(now + self.wall_offset) != self._second:
            self._refresh(now)
        return self._value

    def line(self, now: float) -> bytes:
        """The whole HTTP/1.1 header line, CRLF included."""
        if int(now + self.wall_offset) != self._second:
            self._refresh(now)
        return self._line


def _build_status_lines() -> dict[int, bytes]:
    lines = {}
    for status in HTTPStatus:
        lines[status.value] = b"HTTP/1.1 %d %s\r\n" % (status.value, status.phrase.encode("ascii"))
    return lines


#: Status code -> status line, for the hot path's inlined lookup (``status_line`` for others).
STATUS_LINES = _build_status_lines()


def status_line(status: int) -> bytes:
    """``HTTP/1.1 <status> <reason>\\r\\n``; the reason is empty for unregistered codes."""
    line = STATUS_LINES.get(status)
    if line is None:
        line = b"HTTP/1.1 %d \r\n" % status
    return line


def check_status(status: object) -> int:
    """Validate an ASGI ``status`` (an int from 200 to 999)."""
    if type(status) is not int:
        if not isinstance(status, int) or isinstance(status, bool):
            raise AppProtocolError(f"response status must be an int, got {status!r}")
        status = int(status)
    if not 200 <= status <= 999:
        raise AppProtocolError(f"response status must be between 200 and 999, got {status}")
    return status


def check_header(name: object, value: object) -> None:
    """Raise AppProtocolError unless ``name``/``value`` are bytes that are safe to send."""
    if type(name) is not bytes or type(value) is not bytes:
        raise AppProtocolError(
            f"header names and values must be bytes, got {type(name).__name__}: "
            f"{type(value).__name__} ({name!r})"
        )
    if is_token(name) is None:
        raise AppProtocolError(f"invalid header name {name!r}")
    if has_forbidden_value_bytes(value) is not None:
        raise AppProtocolError(f"header {name!r} has a CR, LF or NUL in its value")


def check_transfer_encoding(value: bytes, seen: bool) -> None:
    """An app's own Transfer-Encoding header (``seen``: it sent one already). The wire frames
    the body itself (chunked where HTTP/1.1 needs it, DATA frames on HTTP/2) and applies no
    coding, so anything but one ``chunked`` is a promise it cannot keep: a 500 (as upstream
    Hypercorn, through h11), never bytes sent as identity under the app's coding."""
    if seen or value.strip(b" \t").lower() != b"chunked":
        raise AppProtocolError(
            f"transfer-encoding {value!r} cannot be honoured: the server frames the body "
            "itself and applies no transfer coding (send content-encoding for compression)"
        )
