"""The HTTP/1.1 request parser interface, and its h11 implementation.

The HTTP/1.1 connection (``connection.py``) reads requests through this narrow interface
only, so the parser can be swapped (``H11Parser`` below, the reference implementation; the
strict RFC 9112 front door with an h11 or httptools head tokeniser in ``frontdoor.py`` /
``selection.py``, which the worker uses) without touching keep-alive, pipelining,
deadlines or response writing, which all stay in ``connection.py`` / ``response.py``.
Parsers only *parse*: they never produce bytes to send.

Contract of an ``H1Parser``
---------------------------
``feed(data)``
    Append received bytes. ``b""`` means EOF (the peer closed its sending side); nothing may
    be fed after it. Never raises; errors surface from ``next_event``.
``next_event()``
    Return the next event, one at a time, in wire order:

    * ``RequestHead`` - the request line and header block of a new request, complete.
    * ``bytes`` (non-empty) - a piece of the request body, already de-chunked.
    * ``END_OF_MESSAGE`` - the request (its body, chunked trailers) is complete.
    * ``NEED_DATA`` - nothing more can be parsed until more bytes are fed.
    * ``PAUSED`` - the current request is complete *and* bytes of a following (pipelined)
      request are buffered. The parser looks at them only after ``start_next_cycle()``.
      The caller should stop reading from the socket until it has answered.
    * ``CLOSED`` - EOF was fed between requests (nothing buffered): a clean close.

    After ``END_OF_MESSAGE`` the parser returns ``PAUSED`` or ``NEED_DATA`` (or ``CLOSED``)
    until ``start_next_cycle()``; it never starts a second request on its own.
    Malformed input raises ``RemoteProtocolError`` whose ``status_hint`` is the status to
    answer with: 400 for a bad request line, header or chunk size, or ``Content-Length``
    together with ``Transfer-Encoding``; 414 for a request line over
    ``max_request_line_size``; 431 for a header block over ``max_incomplete_size`` or with
    more than ``max_header_count`` fields. EOF in the middle of a request also raises
    (status 400; the caller knows the peer is gone and does not answer). After raising, the
    parser is dead: every later call raises again.
``start_next_cycle()``
    Forget the finished request and start parsing the next one from the buffered bytes.
    Only valid after ``END_OF_MESSAGE``. Returns False when nothing is buffered and EOF was
    not fed, so the caller can skip a ``next_event`` that could only say ``NEED_DATA``.
``trailing_data``
    ``(unparsed bytes, eof_seen)``, for handing a connection over to another protocol
    (h2c upgrade, WebSocket) after a request.

Per-request facts the connection needs are computed once by the parser and carried on
``RequestHead`` (``keep_alive``, ``expect_continue``, ``has_body``, ``upgrade``), so the
connection never re-scans the header list.
"""

from __future__ import annotations

from enum import Enum
from typing import NamedTuple, Protocol

import h11

from hypercorn.protocols.errors import RemoteProtocolError
from hypercorn.protocols.limits import ProtocolLimits


class ParserSignal(Enum):
    NEED_DATA = "need-data"
    PAUSED = "paused"
    END_OF_MESSAGE = "end-of-message"
    CLOSED = "closed"


NEED_DATA = ParserSignal.NEED_DATA
PAUSED = ParserSignal.PAUSED
END_OF_MESSAGE = ParserSignal.END_OF_MESSAGE
CLOSED = ParserSignal.CLOSED


# A NamedTuple rather than a frozen dataclass: one is built per request on the hot path, and
# tuple construction is several times cheaper than a frozen dataclass's __init__.
class RequestHead(NamedTuple):
    method: bytes
    target: bytes
    #: b"1.1" or b"1.0".
    http_version: bytes
    #: (name, value) pairs in wire order, names lowercased, as the ASGI scope wants them.
    headers: list[tuple[bytes, bytes]]
    #: False for HTTP/1.0 or ``Connection: close``: close after the response.
    keep_alive: bool
    #: ``Expect: 100-continue`` on HTTP/1.1: send 100 before reading the body.
    expect_continue: bool
    #: A body follows (``Content-Length`` > 0 or ``Transfer-Encoding``).
    has_body: bool
    #: The lowercased ``Upgrade`` value when ``Connection`` lists ``upgrade``, else None.
    upgrade: bytes | None


ParserEvent = RequestHead | bytes | ParserSignal


class H1Parser(Protocol):
    """See the module docstring for the full contract."""

    def feed(self, data: bytes) -> None: ...

    def next_event(self) -> ParserEvent: ...

    def take_head(self, data: bytes) -> RequestHead | None:
        """Optional fast path (None: not taken, nothing consumed); see ``frontdoor.py``."""

    def start_next_cycle(self) -> bool:
        """See the module docstring; returns whether ``next_event`` has anything to look at
        (buffered bytes or EOF): when False it would only say ``NEED_DATA``."""

    @property
    def trailing_data(self) -> tuple[bytes, bool]: ...


# The fields analyse_headers looks at; one set lookup per field skips all the others.
_FACT_FIELDS = frozenset(
    (b"connection", b"content-length", b"transfer-encoding", b"expect", b"upgrade")
)


def analyse_headers(
    http_version: bytes, headers: list[tuple[bytes, bytes]]
) -> tuple[bool, bool, bool, bytes | None]:
    """Compute (keep_alive, expect_continue, has_body, upgrade) from lowercased headers.

    Raises RemoteProtocolError(400) for Content-Length together with Transfer-Encoding
    (RFC 9112 §6.3 lets a server reject it; accepting it enables request smuggling).
    Shared by parser implementations so they agree on these facts.
    """
    # Once per request: a single pass with one set lookup per field, and an early return
    # for the usual head that has none of these fields.
    connection: bytes | None = None
    content_length: bytes | None = None
    chunked = False
    expect: bytes | None = None
    upgrade: bytes | None = None
    for name, value in headers:
        if name in _FACT_FIELDS:
            if name == b"connection":
                value = value.lower()
                connection = value if connection is None else connection + b"," + value
            elif name == b"content-length":
                content_length = value
            elif name == b"transfer-encoding":
                chunked = True
            elif name == b"expect":
                expect = value
            else:
                upgrade = value
    if connection is None:
        if expect is None and content_length is None and not chunked:
            return http_version == b"1.1", False, False, None
        tokens: list[bytes] = []
    else:
        tokens = [token.strip() for token in connection.split(b",")]
    if chunked and content_length is not None:
        raise RemoteProtocolError(
            "both Content-Length and Transfer-Encoding in request", status_hint=400
        )
    keep_alive = http_version == b"1.1" and b"close" not in tokens
    has_body = chunked or (content_length is not None and content_length.strip(b" \t0") != b"")
    expect_continue = (
        http_version == b"1.1" and expect is not None and expect.lower() == b"100-continue"
    )
    if upgrade is not None:
        upgrade = upgrade.lower() if b"upgrade" in tokens else None
    return keep_alive, expect_continue, has_body, upgrade


class H11Parser:
    """``H1Parser`` on h11. A fresh ``h11.Connection`` per request cycle.

    h11 is a full client/server state machine that only lets the next request through once
    *it* has sent our response; we write responses ourselves, so instead of echoing them
    through h11 we start a new ``h11.Connection`` for each request and feed it the previous
    one's unparsed bytes (its public ``trailing_data``). That costs about 2 µs per request,
    less than serialising a dummy response through h11.
    """

    __slots__ = ("_conn", "_dead", "_limits")

    def __init__(self, limits: ProtocolLimits) -> None:
        self._limits = limits
        self._conn = h11.Connection(
            h11.SERVER, max_incomplete_event_size=limits.max_incomplete_size
        )
        self._dead: RemoteProtocolError | None = None

    def feed(self, data: bytes) -> None:
        if self._dead is None:
            self._conn.receive_data(data)

    def next_event(self) -> ParserEvent:
        if self._dead is not None:
            raise self._dead
        try:
            event = self._conn.next_event()
        except h11.RemoteProtocolError as exc:
            self._dead = RemoteProtocolError(str(exc), status_hint=exc.error_status_hint)
            raise self._dead from exc
        event_type = type(event)
        if event_type is h11.Data:
            data = event.data  # type: ignore[union-attr]
            return data if type(data) is bytes else bytes(data)
        if event_type is h11.Request:
            try:
                return self._head(event)  # type: ignore[arg-type]
            except RemoteProtocolError as exc:
                self._dead = exc
                raise
        if event_type is h11.EndOfMessage:
            return END_OF_MESSAGE
        if event is h11.NEED_DATA:
            return NEED_DATA
        if event is h11.PAUSED:
            return PAUSED if self._conn.trailing_data[0] else NEED_DATA
        if event_type is h11.ConnectionClosed:
            return CLOSED
        raise AssertionError(f"unexpected h11 event {event!r}")  # pragma: no cover

    def _head(self, request: h11.Request) -> RequestHead:
        limits = self._limits
        headers: list[tuple[bytes, bytes]] = list(request.headers)
        if len(headers) > limits.max_header_count:
            raise RemoteProtocolError("too many header fields", status_hint=431)
        line_size = len(request.method) + len(request.target) + 10
        if line_size > limits.max_request_line_size:
            raise RemoteProtocolError("request line too long", status_hint=414)
        # h11 only bounds *incomplete* heads; a complete one that arrived in one piece can be
        # larger, so bound the parsed size too.
        if line_size + sum(len(n) + len(v) + 4 for n, v in headers) > limits.max_incomplete_size:
            raise RemoteProtocolError("request header block too large", status_hint=431)
        version = request.http_version
        keep_alive, expect_continue, has_body, upgrade = analyse_headers(version, headers)
        return RequestHead(
            request.method,
            request.target,
            version,
            headers,
            keep_alive,
            expect_continue,
            has_body,
            upgrade,
        )

    def take_head(self, data: bytes) -> RequestHead | None:
        return None  # the reference parser takes the general path only

    def start_next_cycle(self) -> bool:
        data, closed = self._conn.trailing_data
        conn = h11.Connection(
            h11.SERVER, max_incomplete_event_size=self._limits.max_incomplete_size
        )
        if data:
            conn.receive_data(data)
        if closed:
            conn.receive_data(b"")
        self._conn = conn
        return bool(data) or closed

    @property
    def trailing_data(self) -> tuple[bytes, bool]:
        return self._conn.trailing_data
