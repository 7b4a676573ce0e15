"""In-memory HTTP/2 pairs: a real ``h2`` client connection against our ``H2Connection``.

Like ``pairs.H1Pair``: no event loop, the test plays the ASGI apps by calling the started
streams' ``receive_nowait`` / ``app_send``, and time moves only with ``advance``. Every
engine behind the ``H2Engine`` seam is listed in ``ENGINES``; tests parametrised over it run
the same assertions on each. ``raw()`` sends hand-built frames (hyperframe / hpack) for
hostile sequences the h2 client refuses to produce.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.settings
from hyperframe.frame import Frame

from hypercorn.protocols.asgi_http import AsgiHttpStream
from hypercorn.protocols.connection import SwitchProtocol
from hypercorn.protocols.h2_engine import H2Engine, H2LibEngine
from hypercorn.protocols.h2_fast import H2FastEngine
from hypercorn.protocols.headers import DateCache
from hypercorn.protocols.http2 import H2Connection
from hypercorn.protocols.limits import ProtocolLimits
from tests.support.pairs import RecordingSink, split_bytes

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def _h2lib(limits: ProtocolLimits) -> H2Engine:
    return H2LibEngine(
        max_concurrent_streams=limits.h2_max_concurrent_streams,
        max_header_list_size=limits.h2_max_header_list_size,
        max_inbound_frame_size=limits.h2_max_inbound_frame_size,
    )


def _fast(limits: ProtocolLimits) -> H2Engine:
    return H2FastEngine(
        max_concurrent_streams=limits.h2_max_concurrent_streams,
        max_header_list_size=limits.h2_max_header_list_size,
        max_inbound_frame_size=limits.h2_max_inbound_frame_size,
    )


#: Every engine behind the seam: name -> factory.
ENGINES: dict[str, Callable[[ProtocolLimits], H2Engine]] = {"h2": _h2lib, "fast": _fast}
#: The engine of a pair made without one (modules that run every test on every engine set it
#: from an autouse fixture: see ``every_engine``).
DEFAULT_ENGINE = "h2"


def every_engine(request: Any) -> Iterator[str]:
    """Body of an autouse fixture parametrised over ``ENGINES``: pairs made without an
    engine use the fixture's."""
    global DEFAULT_ENGINE
    saved = DEFAULT_ENGINE
    DEFAULT_ENGINE = request.param
    try:
        yield request.param
    finally:
        DEFAULT_ENGINE = saved


class H2Pair:
    """A real h2 client talking to an H2Connection in memory."""

    def __init__(
        self,
        limits: ProtocolLimits | None = None,
        *,
        engine: str | None = None,
        split: str = "whole",
        now: float = 1000.0,
        ssl: bool = False,
        state: dict[str, Any] | None = None,
        client_settings: dict[int, int] | None = None,
        upgrade: SwitchProtocol | None = None,
        handshake: bool = True,
    ) -> None:
        self.limits = limits or ProtocolLimits()
        self.split = split
        self.now = now
        self.sink = RecordingSink()
        self.dates = DateCache(wall_offset=784111777.0 - 1000.0)
        self.server = H2Connection(
            sink=self.sink,
            limits=self.limits,
            dates=self.dates,
            client=("127.0.0.1", 50000),
            server=("127.0.0.1", 8000),
            ssl=ssl,
            tls={"tls_version": 0x304} if ssl else None,
            state=state,
            now=now,
            engine=ENGINES[engine or DEFAULT_ENGINE](self.limits),
            upgrade=upgrade,
        )
        config = h2.config.H2Configuration(client_side=True, header_encoding=None)
        self.client = h2.connection.H2Connection(config=config)
        if client_settings:
            self.client.local_settings = h2.settings.Settings(
                client=True,
                initial_values=client_settings,  # type: ignore[arg-type]
            )
        self._read = 0
        self._seed = 0
        self._pending_output = b""
        #: Every event the client saw, in order.
        self.events: list[Any] = []
        if handshake:
            if upgrade is None:
                self.client.initiate_connection()
            self.flush()
            self.client_events()

    # -- client to server ------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Raw bytes to the server, cut according to ``self.split``."""
        self._seed += 1
        for piece in split_bytes(data, self.split, self._seed):
            self.server.receive_data(piece, self.now)

    def flush(self) -> None:
        """Whatever the h2 client queued, to the server."""
        data = self.client.data_to_send()
        if data:
            self.feed(data)

    def raw(self, *frames: Frame | bytes) -> None:
        """Hand-built frames (or bytes), straight to the server."""
        self.feed(b"".join(f if isinstance(f, bytes) else f.serialize() for f in frames))

    def request(
        self,
        method: str = "GET",
        path: str = "/",
        headers: Iterable[tuple[str, str]] = (),
        body: bytes | None = None,
        *,
        end: bool = True,
        authority: str = "example.com",
    ) -> int:
        """Send a request on a new stream; returns its id."""
        stream_id = self.client.get_next_available_stream_id()
        hdrs = [
            (b":method", method.encode()),
            (b":path", path.encode()),
            (b":scheme", b"http"),
            (b":authority", authority.encode()),
            *((n.encode(), v.encode()) for n, v in headers),
        ]
        self.client.send_headers(stream_id, hdrs, end_stream=end and not body)
        if body:
            self.send_body(stream_id, body, end)
        self.flush()
        return stream_id

    def ignore_server_stream_limit(self) -> None:
        """Let the h2 client open more streams than the server allows (to test refusal)."""
        codes = h2.settings.SettingCodes
        self.client.remote_settings._settings[codes.MAX_CONCURRENT_STREAMS] = deque([2**31 - 1])

    def send_body(self, stream_id: int, data: bytes, end: bool = False) -> None:
        size = self.client.max_outbound_frame_size
        for start in range(0, len(data), size):
            last = start + size >= len(data)
            self.client.send_data(stream_id, data[start : start + size], end_stream=end and last)
        if not data and end:
            self.client.end_stream(stream_id)
        self.flush()

    # -- server to client ------------------------------------------------------------------

    def new_output(self) -> bytes:
        data = bytes(self.sink.out[self._read :])
        self._read = len(self.sink.out)
        return data

    def client_events(self, ack: bool = True) -> list[Any]:
        """What the server wrote since last time, as h2 client events (the client's own
        answers - SETTINGS/PING ACKs - go back to the server unless ``ack`` is False)."""
        data = self._pending_output + self.new_output()
        events: list[Any] = []
        # Frame by frame, so the client stays open after a graceful GOAWAY (h2 would refuse
        # everything after it, but RFC 9113 section 6.8 lets the open streams finish).
        client = self.client
        while len(data) >= 9:
            end = 9 + int.from_bytes(data[:3], "big")
            if len(data) < end:
                break
            frame, data = data[:end], data[end:]
            for event in client.receive_data(frame):
                events.append(event)
                if isinstance(event, h2.events.ConnectionTerminated) and not event.error_code:
                    client.state_machine.state = h2.connection.ConnectionState.CLIENT_OPEN
        self._pending_output = data
        self.events.extend(events)
        if ack:
            self.flush()
        return events

    def response(self, stream_id: int) -> tuple[dict[bytes, bytes] | None, bytes, bool]:
        """(headers, body, ended) the client has for ``stream_id`` so far."""
        self.client_events()
        headers = None
        body = b""
        ended = False
        for event in self.events:
            if getattr(event, "stream_id", None) != stream_id:
                continue
            if isinstance(event, h2.events.ResponseReceived):
                headers = dict(event.headers)
            elif isinstance(event, h2.events.DataReceived):
                body += event.data
                if event.flow_controlled_length:
                    self.client.acknowledge_received_data(event.flow_controlled_length, stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                ended = True
        self.flush()
        return headers, body, ended

    def of_type(self, kind: type) -> list[Any]:
        self.client_events()
        return [event for event in self.events if isinstance(event, kind)]

    # -- playing the app -------------------------------------------------------------------

    def stream(self, stream_id: int) -> AsgiHttpStream:
        for stream in self.sink.started:
            if stream.stream_id == stream_id:
                return stream
        raise AssertionError(f"no app started for stream {stream_id}")

    def receive(self, stream_id: int) -> dict[str, Any] | None:
        return self.stream(stream_id).receive_nowait(self.now)

    def receive_all(self, stream_id: int) -> list[dict[str, Any]]:
        messages = []
        while True:
            message = self.receive(stream_id)
            if message is None:
                return messages
            messages.append(message)
            if message["type"] == "http.disconnect" or not message.get("more_body", True):
                return messages

    def app_send(self, stream_id: int, message: dict[str, Any]) -> None:
        self.stream(stream_id).app_send(message, self.now)

    def respond(
        self,
        stream_id: int,
        status: int = 200,
        headers: list[tuple[bytes, bytes]] | None = None,
        body: bytes = b"",
        *,
        chunks: Iterable[bytes] | None = None,
    ) -> None:
        self.app_send(
            stream_id, {"type": "http.response.start", "status": status, "headers": headers or []}
        )
        if chunks is None:
            self.app_send(stream_id, {"type": "http.response.body", "body": body})
        else:
            for chunk in chunks:
                self.app_send(
                    stream_id, {"type": "http.response.body", "body": chunk, "more_body": True}
                )
            self.app_send(stream_id, {"type": "http.response.body", "body": b""})

    # -- time --------------------------------------------------------------------------------

    def advance(self, seconds: float) -> None:
        """Move the clock; fire the server's deadline if due (as the driver's timer)."""
        self.now += seconds
        deadline = self.server.next_deadline()
        if deadline is not None and deadline <= self.now:
            self.server.handle_deadline(self.now)
