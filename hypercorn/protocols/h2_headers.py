"""HTTP/2 header blocks: request heads into ASGI shapes, app response headers onto the wire.

Both directions are pure functions, shared by every HTTP/2 engine (``h2_engine.py``):

* ``split_request_head`` turns a validated request header list into the method, the
  ``:path`` and the ASGI headers as upstream Hypercorn builds them: pseudo-headers removed and
  ``host`` first, taken from ``:authority`` (or from a ``Host`` field when there is none).
* ``response_head`` validates the app's headers once per distinct list (memoised, as the
  HTTP/1.1 wire does): bytes only, token names, no CR/LF/NUL in values, names lowercased
  (RFC 9113 section 8.2.1), connection-specific fields dropped (section 8.2.2; a
  Transfer-Encoding other than ``chunked`` refused, as on HTTP/1.1), surrounding
  whitespace stripped; and picks out Content-Length, Date and Server.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

from hypercorn.protocols.errors import AppProtocolError
from hypercorn.protocols.headers import DateCache, check_header, check_transfer_encoding

#: Connection-specific fields (RFC 9113 section 8.2.2): meaningless on HTTP/2, never sent.
CONNECTION_SPECIFIC = frozenset(
    (b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade")
)

_STATUS = {code: b"%d" % code for code in range(100, 1000)}


def status_bytes(status: int) -> bytes:
    return _STATUS.get(status) or b"%d" % status


def split_request_head(
    headers: Iterable[tuple[bytes, bytes]],
) -> tuple[bytes, bytes, list[tuple[bytes, bytes]]]:
    """``(method, path, asgi_headers)`` from a request header list the engine validated."""
    method = path = b""
    authority: bytes | None = None
    host: bytes | None = None
    out: list[tuple[bytes, bytes]] = [(b"host", b"")]  # (its value is filled in below)
    for header in headers:
        name = header[0]
        if name[:1] == b":":
            if name == b":method":
                method = header[1]
            elif name == b":path":
                path = header[1]
            elif name == b":authority":
                authority = header[1]
        elif name == b"host":
            host = header[1]
        else:
            out.append((name, header[1]))
    out[0] = (b"host", authority if authority is not None else host or b"")
    return method, path, out


#: (headers to send, content_length, has_date, has_server)
ResponseFacts = tuple[tuple[tuple[bytes, bytes], ...], "int | None", bool, bool]


def _response_facts(headers: Iterable[tuple[bytes, bytes]]) -> ResponseFacts:
    out: list[tuple[bytes, bytes]] = []
    content_length: int | None = None
    has_date = has_server = chunked = False
    for name, value in headers:
        check_header(name, value)
        name = name.lower()
        if name in CONNECTION_SPECIFIC:
            if name == b"transfer-encoding":
                # (DATA frames are HTTP/2's chunking: only a coding we would drop is refused.)
                check_transfer_encoding(value, chunked)
                chunked = True
            continue
        if name == b"content-length":
            if not value.isdigit():
                raise AppProtocolError(f"invalid content-length {value!r}")
            length = int(value)
            if content_length is not None and content_length != length:
                raise AppProtocolError("conflicting content-length headers")
            content_length = length
        elif name == b"date":
            has_date = True
        elif name == b"server":
            has_server = True
        if value[:1] in (b" ", b"\t") or value[-1:] in (b" ", b"\t"):
            value = value.strip(b" \t")
        out.append((name, value))
    return tuple(out), content_length, has_date, has_server


_known_response_facts = functools.lru_cache(maxsize=256)(_response_facts)


def response_facts(headers: Iterable[tuple[bytes, bytes]]) -> ResponseFacts:
    """Validated response headers and their facts; raises AppProtocolError."""
    try:
        return _known_response_facts(tuple(headers))
    except TypeError:  # unhashable (lists of lists): not memoised
        return _response_facts(headers)


def trailer_block(headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """Validated, lowercased response trailers (pseudo-headers are not allowed there)."""
    out = []
    for name, value in headers:
        check_header(name, value)
        name = name.lower()
        if name in CONNECTION_SPECIFIC:
            continue
        out.append((name, value.strip(b" \t")))
    return out


# -- shared by the HTTP/2 and HTTP/3 wires ---------------------------------------------------


def response_head(
    status: int,
    headers: Iterable[tuple[bytes, bytes]],
    dates: DateCache | None,
    server_value: bytes | None,
    extra: tuple[tuple[bytes, bytes], ...],
    now: float,
) -> tuple[list[tuple[bytes, bytes]], int | None]:
    """The head of a response with the app's ``headers`` (validated) plus the Date and
    Server the app did not set and the server's ``extra`` ones, and the app's Content-Length
    (or None). Raises AppProtocolError."""
    block, content_length, has_date, has_server = response_facts(headers)
    out = [(b":status", status_bytes(status)), *block]
    if dates is not None and not has_date:
        out.append((b"date", dates.value(now)))
    if server_value is not None and not has_server:
        out.append((b"server", server_value))
    if extra:
        out.extend(extra)
    return out, content_length


def error_head(
    status: int, dates: DateCache | None, server_value: bytes | None, now: float
) -> list[tuple[bytes, bytes]]:
    """The head of a bodiless ``status`` response the server makes itself."""
    head = [(b":status", status_bytes(status)), (b"content-length", b"0")]
    if dates is not None:
        head.append((b"date", dates.value(now)))
    if server_value is not None:
        head.append((b"server", server_value))
    return head


def body_remaining(remaining: int | None, size: int, end: bool) -> int | None:
    """What the app's Content-Length still promises after ``size`` more bytes; raises
    AppProtocolError when the body outgrows it, or ends (``end``) short of it."""
    if remaining is None:
        return None
    remaining -= size
    if remaining < 0:
        raise AppProtocolError("response body longer than its content-length")
    if end and remaining > 0:
        raise AppProtocolError("response body shorter than its content-length")
    return remaining
