"""Judging and tokenising a request head line by line, for heads never seen whole before.

The front door's fast path (``StrictH1Parser.take_head``) first looks a head up whole in its
memo; a head that is new (every request behind a proxy: its own path, query, cookie) comes
here. Lines repeat across heads even when heads do not (Host, Accept, a browser's
User-Agent, a session's Cookie), so the head is split once (``bytes.split``, one C call) and
each field line is looked up by its exact bytes in a bounded memo of lines already judged
and tokenised (``(name lowercased, value without OWS)``). Only the lines not found are
judged, with C string methods (``partition``, ``strip``, a ``translate`` that must leave
the value unchanged) and a memo of field names, not with a regex over the whole head, whose
cost on CPython is mostly per byte (about 100 instructions a byte on 3.11).

What this accepts is a subset of what ``judge._FAST_HEAD`` accepts, tokenised exactly as the
head tokenisers do, with the same facts (tests compare both paths on the corpus and on
generated heads): an origin-form target, a method from a short list, HTTP/1.0 or 1.1,
exactly one Host, no Content-Length or Transfer-Encoding, and within the limits. Every line
is judged on its own exact bytes (split on CRLF, so a bare CR or LF is a control byte inside
a line and fails its line's check); a memo hit is a line that was judged valid byte for
byte. Anything else is declined and judged by the regex or the reference as before.

Memory: both memos are module-level (a line's verdict depends on neither the limits nor
the tokeniser) and bounded by entries and by line length; each is cleared when full, so a
client sending endless new lines only makes them restart.
"""

from __future__ import annotations

from operator import itemgetter

from hypercorn.protocols.http1.judge import HOST_FIELD_RE, TOKEN_RE
from hypercorn.protocols.http1.parser import RequestHead, analyse_headers
from hypercorn.protocols.limits import ProtocolLimits

__all__ = ["FRAMED", "KNOWN_LINES_SIZE", "KNOWN_LINE_MAX", "KNOWN_NAMES_SIZE", "split_head"]

#: ``split_head``'s answer for a head with a Content-Length or Transfer-Encoding line: not a
#: bodiless request for the fast path (None means "not judged here").
FRAMED = False

_VERSIONS = {b"HTTP/1.1": b"1.1", b"HTTP/1.0": b"1.0"}
#: Methods taken here (tokens; CONNECT is refused by the judge, others are judged there).
_METHODS = frozenset((b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH", b"TRACE"))
_OWS = b" \t"
_FRAMING_NAMES = frozenset((b"content-length", b"transfer-encoding"))
#: ``bytes.translate`` tables that keep the allowed bytes and change every other one, so a
#: string is allowed when it translates to itself (one C call, a table lookup a byte): field
#: values (HTAB, SP, VCHAR, obs-text) and request lines (SP and VCHAR).
_VALUE_BYTES = bytes(
    b if b == 0x09 or 0x20 <= b <= 0x7E or b >= 0x80 else 0x01 if b == 0 else 0 for b in range(256)
)
_LINE_BYTES = bytes(b if 0x20 <= b <= 0x7E else 0x21 for b in range(256))

KNOWN_LINES_SIZE = 512
KNOWN_NAMES_SIZE = 256
#: Longer lines are judged every time (so the memo holds at most about 1 MB of lines).
KNOWN_LINE_MAX = 2048


class _NotHere(Exception):
    """A field line ``split_head`` does not take; ``answer`` is its return value."""

    def __init__(self, answer: bool | None) -> None:
        self.answer = answer


class _KnownLines(dict[bytes, tuple[bytes, bytes]]):
    """Field lines judged valid, by their exact bytes, to their field (name lowercased,
    value without OWS). A line not yet known is judged on lookup (``__missing__``), so
    looking up a head's lines is one ``map`` in C until a line is new."""

    def __missing__(self, line: bytes) -> tuple[bytes, bytes]:
        name, colon, value = line.partition(b":")
        if not colon:
            raise _NotHere(None)
        lowered = _known_name(name)
        if lowered is None:
            if _token_match(name) is None:
                raise _NotHere(None)
            lowered = name.lower()
            if len(_known_names) >= KNOWN_NAMES_SIZE:
                _known_names.clear()
            _known_names[name] = lowered
        if lowered == b"host":
            match = _host_match(line)
            if match is None:
                raise _NotHere(None)
            value = match[1] or b""
        elif lowered in _FRAMING_NAMES:
            raise _NotHere(FRAMED)
        else:
            value = value.strip(_OWS)
            if value.translate(_VALUE_BYTES) != value:
                raise _NotHere(None)
        field = (lowered, value)
        if len(line) <= KNOWN_LINE_MAX:
            if len(self) >= KNOWN_LINES_SIZE:
                self.clear()
            self[line] = field
        return field


_known_lines = _KnownLines()
#: Field names judged to be tokens, by their wire bytes, to the lowercased name.
_known_names: dict[bytes, bytes] = {}
_field_of = _known_lines.__getitem__
_known_name = _known_names.get
_host_match = HOST_FIELD_RE.fullmatch
_token_match = TOKEN_RE.fullmatch
_name_of = itemgetter(0)
_new_tuple = tuple.__new__


def split_head(data: bytes, limits: ProtocolLimits) -> RequestHead | bool | None:
    """The bodiless request ``data`` is, as the general path would report it, when ``data``
    is exactly one head this module can judge; ``FRAMED`` for a head with a Content-Length
    or Transfer-Encoding line; otherwise None (not judged: ask the judge)."""
    lines = data.split(b"\r\n")
    request_line = lines[0]
    if (
        len(lines) < 4  # no field line (so no Host)
        or lines[-1]  # not ending in CRLF
        or lines[-2]  # nor in an empty line
        or len(data) > limits.max_incomplete_size
        or len(lines) - 3 > limits.max_header_count
        or len(request_line) > limits.max_request_line_size
        # Only SP and visible ASCII: the split below leaves none but VCHARs in the parts.
        or request_line.translate(_LINE_BYTES) != request_line
    ):
        return None
    parts = request_line.split(b" ")
    if len(parts) != 3:
        return None
    method, target, version = parts
    http_version = _VERSIONS.get(version)
    if http_version is None or method not in _METHODS or target[:1] != b"/":
        return None
    lines = lines[1:-2]
    try:
        headers = list(map(_field_of, lines))
    except _NotHere as exc:
        return exc.answer
    names = list(map(_name_of, headers))
    if names.count(b"host") != 1:  # (an empty line inside was judged not a field line)
        return None
    if b"connection" in names or b"expect" in names:
        keep_alive, expect_continue, has_body, upgrade = analyse_headers(http_version, headers)
    else:
        keep_alive, expect_continue, has_body, upgrade = (
            http_version == b"1.1",
            False,
            False,
            None,
        )
    if limits.pass_raw_headers:
        headers = [
            (line[: line.index(b":")], value)
            for line, (_, value) in zip(lines, headers, strict=True)
        ]
    # tuple.__new__ skips RequestHead.__new__'s Python frame (this is once per request).
    return _new_tuple(
        RequestHead,
        (method, target, http_version, headers, keep_alive, expect_continue, has_body, upgrade),
    )
