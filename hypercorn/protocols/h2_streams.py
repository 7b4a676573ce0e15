"""HTTP/2 streams on one connection: the StreamWire side and flow control.

``H2Streams`` is the half of ``H2Connection`` (``http2.py``) that its streams see: on the
stream table HTTP/3 shares (``multiplexed.py``), it writes their responses (``StreamWire``)
within the peer's windows and opens the peer's windows as the apps read (Rules 1 and 2 in
``http2.py``). The connection half adds the driver side, the engine's events, shutdown and
deadlines.
"""

from __future__ import annotations

from collections.abc import Iterable

from hypercorn.protocols.asgi_http import AsgiHttpStream
from hypercorn.protocols.asgi_ws import AsgiWsStream
from hypercorn.protocols.h2_engine import CANCEL, INTERNAL_ERROR, NO_ERROR, H2Engine
from hypercorn.protocols.h2_guard import (
    CONNECTION_WINDOW,
    OVERHEAD_BURST,
    OVERHEAD_RATE,
    STREAM_WINDOW,
    LeakyBucket,
)
from hypercorn.protocols.h2_headers import (
    body_remaining,
    response_facts,
    status_bytes,
)
from hypercorn.protocols.multiplexed import MultiplexedStreams, StreamRecord

_NO_BODY_STATUSES = frozenset((204, 304))


class H2Streams(MultiplexedStreams):
    """The writing side of an HTTP/2 connection (see the module docstring);
    ``H2Connection`` completes it."""

    __slots__ = (
        "_conn_debt",
        "_conn_window",
        "_engine",
        "_last_head",
        "_overhead",
        "_write",
    )

    _SENDS_INTERIM = True
    _INTERNAL_ERROR = INTERNAL_ERROR
    _CANCEL = CANCEL

    def _init_wire(self, engine: H2Engine) -> None:
        """(Called by ``H2Connection.__init__``, after the table's.)"""
        self._write = self._sink.write
        #: (status, facts, date, header tuple) of the last response head built.
        self._last_head: tuple[int, object, object, tuple[tuple[bytes, bytes], ...]] = (
            0,
            None,
            None,
            (),
        )
        self._engine = engine
        #: What the peer may still send on the connection, and what we owe it.
        self._conn_window = CONNECTION_WINDOW
        self._conn_debt = 0
        self._overhead = LeakyBucket(OVERHEAD_BURST, OVERHEAD_RATE, self._now)

    # -- hooks of MultiplexedStreams ---------------------------------------------------------

    def _send_headers(self, stream_id: int, headers: list[tuple[bytes, bytes]], end: bool) -> None:
        self._engine.send_headers(stream_id, headers, end)

    def _reset(self, stream_id: int, recv_open: bool, error_code: int) -> None:
        self._engine.reset_stream(stream_id, error_code)  # (RST_STREAM ends both ways)

    def _stop_request(self, stream_id: int) -> None:
        self._engine.reset_stream(stream_id, NO_ERROR)  # (Rule 2)

    def _flush_at(self, now: float) -> None:
        self._flush()

    # -- inbound flow control (Rule 1) -------------------------------------------------------

    def app_reading(self, stream: AsgiHttpStream, now: float) -> None:
        record = self._streams.get(stream.stream_id)
        if record is None or record.asgi is not stream or self._closed:
            return
        self._now = now
        read = record.held - stream.buffered
        if read > 0:
            record.held = stream.buffered
            self._conn_debt += read
            if record.recv_open:
                record.stream_debt += read
            self._return_windows(record)
            self._flush()
        if stream.buffered:
            stream.notify_on_read = True

    def _return_windows(self, record: StreamRecord | None) -> None:
        """Hand read (or discarded) bytes back to the peer, in batches of half a window or
        when its window runs low."""
        engine = self._engine
        if record is not None and record.recv_open:
            debt = record.stream_debt
            if debt and (debt >= STREAM_WINDOW // 2 or record.recv_window < STREAM_WINDOW // 4):
                record.stream_debt = 0
                record.recv_window += debt
                engine.open_window(record.asgi.stream_id, debt)
        debt = self._conn_debt
        if debt and (debt >= CONNECTION_WINDOW // 2 or self._conn_window < CONNECTION_WINDOW // 4):
            self._conn_debt = 0
            self._conn_window += debt
            engine.open_window(0, debt)

    # -- writing (StreamWire) ---------------------------------------------------------------

    def send_head(
        self,
        stream: AsgiHttpStream | AsgiWsStream,
        status: int,
        headers: Iterable[tuple[bytes, bytes]],
        body: bytes,
        end: bool,
        now: float,
    ) -> None:
        record = self._streams.get(stream.stream_id)
        if record is None or record.asgi is not stream or self._closed:
            return
        self._now = now
        facts = response_facts(headers)
        dates = self._dates
        date = dates.value(now) if dates is not None else None
        # Apps answer with the same head over and over: the header tuple is reused while the
        # facts (memoised per header list) and the Date value are the same objects.
        last = self._last_head
        if last[0] == status and last[1] is facts and last[2] is date:
            out = last[3]
        else:
            block, _, has_date, has_server = facts
            head = [(b":status", status_bytes(status)), *block]
            if date is not None and not has_date:
                head.append((b"date", date))
            if self._server_value is not None and not has_server:
                head.append((b"server", self._server_value))
            if self._extra:
                head.extend(self._extra)
            out = tuple(head)
            self._last_head = (status, facts, date, out)
        content_length = facts[1]
        if status in _NO_BODY_STATUSES:
            record.no_body = True
        record.remaining = None if record.no_body else content_length
        record.head_sent = True
        engine = self._engine
        stream_id = stream.stream_id
        if end and body and not record.no_body and not record.pending:
            # The usual response, whole in one message: HEADERS and one DATA frame when it
            # fits the windows and a frame (else the general path below).
            size = len(body)
            if (
                (content_length is None or content_length == size)
                and size <= engine.max_frame_size
                and size <= engine.send_window(stream_id)
            ):
                engine.send_headers(stream_id, out, False)
                engine.send_data(stream_id, body, True)
                self._overhead.drain(2)
                record.remaining = None
                self._response_complete(record)
                self._flush()
                return
        if record.no_body or (end and not body):
            engine.send_headers(stream.stream_id, out, end)
            if end:
                self._response_complete(record)
        else:
            engine.send_headers(stream.stream_id, out, False)
            self._send_body(record, body, end)
        self._flush()

    def send_body(
        self, stream: AsgiHttpStream | AsgiWsStream, data: bytes, end: bool, now: float
    ) -> None:
        record = self._streams.get(stream.stream_id)
        if record is None or record.asgi is not stream or self._closed:
            return
        self._now = now
        self._send_body(record, data, end)
        self._flush()

    def _send_body(self, record: StreamRecord, data: bytes, end: bool) -> None:
        # (A body that breaks its Content-Length raises; the stream's cleanup resets it.)
        record.remaining = body_remaining(record.remaining, len(data), end)
        if record.no_body:
            data = b""
        if record.pending or record.asgi.send_blocked:
            record.pending += data  # (an app sending from two tasks at once)
            record.pending_end = end
            return
        record.pending = data
        record.pending_end = end
        self._send_pending(record)

    def _send_pending(self, record: StreamRecord) -> None:
        """Send as much of ``record.pending`` as the windows allow (Rule 1)."""
        engine = self._engine
        stream_id = record.asgi.stream_id
        data = record.pending
        end = record.pending_end
        if data:
            window = engine.send_window(stream_id)
            frame_size = engine.max_frame_size
            sent = 0
            size = len(data)
            while sent < size and window > 0:
                chunk = min(window, frame_size, size - sent)
                last = sent + chunk == size
                engine.send_data(stream_id, data[sent : sent + chunk], end and last)
                sent += chunk
                window -= chunk
                # (A client may acknowledge each on its stream and on the connection.)
                self._overhead.drain(2)
            if sent < size:
                record.pending = data[sent:]
                asgi = record.asgi
                if sent or record.blocked_since is None:
                    record.blocked_since = self._now
                    self._blocked[stream_id] = record
                    self._refresh_stall()
                asgi.send_blocked = True
                return
            record.pending = b""
        elif end:
            engine.send_data(stream_id, b"", True)
        trailers = record.pending_trailers
        if trailers is not None:
            record.pending_trailers = None
            engine.send_headers(stream_id, trailers, True)
            end = True
        if record.blocked_since is not None:
            record.blocked_since = None
            self._blocked.pop(stream_id, None)
            self._refresh_stall()
        if record.asgi.send_blocked:
            record.asgi.release_send()
        if end:
            self._response_complete(record)

    def _send_trailers(self, record: StreamRecord, block: list[tuple[bytes, bytes]]) -> None:
        stream_id = record.asgi.stream_id
        if record.pending or record.asgi.send_blocked:
            record.pending_trailers = block  # (sent after the body the windows hold back)
        elif block:
            self._engine.send_headers(stream_id, block, True)
            self._response_complete(record)
        else:
            self._engine.send_data(stream_id, b"", True)
            self._response_complete(record)

    # -- stream lifecycle (Rule 2) ----------------------------------------------------------

    def _forget(self, record: StreamRecord) -> None:
        record.recv_open = False
        if record.held:
            self._conn_debt += record.held
            record.held = 0
        record.pending = b""
        record.pending_trailers = None
        if record.blocked_since is not None:
            record.blocked_since = None
            self._blocked.pop(record.asgi.stream_id, None)
            self._refresh_stall()
        asgi = record.asgi
        if record.ws is not None:
            self._ws_forget(record)
        if not record.response_done:
            asgi.peer_closed()
        elif asgi.send_blocked:
            asgi.release_send()
        self._return_windows(None)
        if not self._streams:
            self._all_streams_done()

    def _flush(self) -> None:
        if self._closed:
            return
        data = self._engine.data_to_send()
        if data:
            self._write(data)
