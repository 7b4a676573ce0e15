"""WebSockets on one stream of an HTTP/2 or HTTP/3 connection: what RFC 8441 and RFC 9220
share.

An extended CONNECT ``:protocol websocket`` becomes an ``AsgiWsStream``
(``MultiplexedStreams._open_websocket``); its stream record carries a ``WsStreamState``, and
``websocket.accept`` attaches a ``WsSession`` whose carrier is the stream (a
``StreamCarrier``: ``H2WsCarrier`` in ``h2_ws.py``, ``H3WsCarrier`` in ``h3_ws.py``, which
write within each protocol's own flow control).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Generic, TypeVar

from hypercorn.protocols.h2_headers import error_head, response_head

if TYPE_CHECKING:
    from hypercorn.protocols.headers import DateCache
    from hypercorn.protocols.multiplexed import MultiplexedStreams, StreamRecord
    from hypercorn.protocols.ws import WsSession


class WsStreamState:
    """The WebSocket side of one stream record (``StreamRecord.ws``)."""

    __slots__ = ("early", "paused", "session", "unread")

    def __init__(self) -> None:
        self.session: WsSession | None = None
        #: Data that came before the accept (or, on HTTP/3, while the session is paused),
        #: fed to the session when it can take it.
        self.early: list[bytes] = []
        #: The session paused reading: HTTP/2 holds back ``unread`` bytes of credit.
        self.paused = False
        self.unread = 0


_Conn = TypeVar("_Conn", bound="MultiplexedStreams")


class StreamCarrier(Generic[_Conn]):
    """The parts of a ``WsCarrier`` on one stream that HTTP/2 and HTTP/3 share."""

    __slots__ = ("_conn", "_record")

    def __init__(self, conn: _Conn, record: StreamRecord) -> None:
        self._conn = conn
        self._record = record

    def _live(self) -> bool:
        """The stream is still in the table and the connection serves it."""
        raise NotImplementedError

    def abort(self) -> None:
        if self._live():
            conn = self._conn
            conn._cancel(self._record, conn._CANCEL)
            conn._flush_at(conn._now)

    def pause_reading(self) -> None:
        ws = self._record.ws
        assert ws is not None
        ws.paused = True


def is_websocket_connect(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    """The ``:protocol`` of an extended CONNECT (RFC 8441), or None."""
    for name, value in headers:
        if name[:1] != b":":
            return None  # (pseudo-headers come first)
        if name == b":protocol":
            return value
    return None


def refusal_head(status: int) -> list[tuple[bytes, bytes]]:
    """The response head refusing a WebSocket extended CONNECT with ``status``."""
    head = error_head(status, None, None, 0.0)
    if status == 426:
        head.append((b"sec-websocket-version", b"13"))
    return head


def accepted_head(
    headers: list[tuple[bytes, bytes]],
    dates: DateCache | None,
    server_value: bytes | None,
    now: float,
    extra: tuple[tuple[bytes, bytes], ...] = (),
) -> list[tuple[bytes, bytes]]:
    """The ``:status 200`` head accepting a WebSocket with the handshake's ``headers``."""
    return response_head(200, headers, dates, server_value, extra, now)[0]
