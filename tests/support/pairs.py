"""In-memory client <-> ServerConnection pairs (h11's ConnectionPair idea), explicit clock.

``H1Pair`` wires a real ``h11.Connection(CLIENT)`` to our ``H1Connection`` through a
``RecordingSink``. Nothing runs an event loop: the test plays the ASGI app by calling the
started streams' ``receive_nowait`` / ``app_send`` directly, and moves time with
``advance``. Bytes sent to the server can be split ``whole``, ``bytewise`` or in seeded
``random`` chunks, so every behaviour is checked against every way TCP may cut a request, and
with every parser stack behind the H1Parser interface.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import h11

from hypercorn.protocols.asgi_http import AsgiHttpStream
from hypercorn.protocols.asgi_ws import AsgiWsStream
from hypercorn.protocols.connection import SwitchProtocol
from hypercorn.protocols.headers import DateCache
from hypercorn.protocols.http1.connection import H1Connection
from hypercorn.protocols.http1.parser import H1Parser, H11Parser
from hypercorn.protocols.http1.selection import make_parser
from hypercorn.protocols.limits import ProtocolLimits

SPLITS = ("whole", "bytewise", "random")
#: "auto"/"h11"/"httptools": the production stacks (strict front door + head tokeniser);
#: "plain-h11": the reference ``H11Parser`` that defines the H1Parser interface.
PARSERS = ("auto", "h11", "httptools", "plain-h11")


def split_bytes(data: bytes, how: str, seed: int = 0) -> Iterator[bytes]:
    """Cut ``data`` the way ``how`` says; never yields empty pieces."""
    if how == "whole":
        if data:
            yield data
    elif how == "bytewise":
        for index in range(len(data)):
            yield data[index : index + 1]
    elif how == "random":
        rng = random.Random(seed)
        pos = 0
        while pos < len(data):
            step = rng.randint(1, 7)
            yield data[pos : pos + step]
            pos += step
    else:
        raise ValueError(how)


def parse_responses(data: bytes, method: str = "GET") -> list[list[Any]]:
    """Split raw server output into responses, each a list of h11 events (for pipelining)."""
    responses: list[list[Any]] = []
    while data:
        client = h11.Connection(h11.CLIENT)
        client.send(h11.Request(method=method, target="/", headers=[("host", "x")]))
        client.send(h11.EndOfMessage())
        client.receive_data(data)
        events: list[Any] = []
        while True:
            event = client.next_event()
            if event is h11.NEED_DATA:
                raise AssertionError(f"incomplete response: {data!r}")
            events.append(event)
            if isinstance(event, h11.EndOfMessage):
                break
        responses.append(events)
        data = client.trailing_data[0]
    return responses


class RecordingSink:
    """A ConnectionSink that records every effect, and refuses writes after close."""

    def __init__(self) -> None:
        self.out = bytearray()
        #: Calls of ``write`` and ``writelines`` (each would be one system call or so).
        self.writes = 0
        self.closed = False
        #: The first close asked for a lingering close (``ConnectionSink.close``).
        self.lingering: bool | None = None
        self.aborted = False
        self.reading_paused = False
        self.pause_calls = 0
        self.started: list[Any] = []
        self.switched: list[SwitchProtocol] = []
        #: Callbacks given to ``call_soon``, not run yet (``run_soon``).
        self.soon: list[Callable[[], object]] = []
        #: Carries out a protocol switch (as the driver does), if set.
        self.on_switch: Any = None

    def write(self, data: bytes) -> None:
        self.writes += 1
        self._append(data)

    def writelines(self, parts: Sequence[bytes]) -> None:
        self.writes += 1
        for part in parts:
            self._append(part)

    def _append(self, data: bytes) -> None:
        assert not self.closed, "write after close"
        assert isinstance(data, bytes)
        self.out += data

    def call_soon(self, fn: Callable[[], object]) -> None:
        self.soon.append(fn)

    def run_soon(self) -> None:
        """Run what was scheduled with ``call_soon``, as the loop would after a task step."""
        while self.soon:
            self.soon.pop(0)()

    def close(self, *, linger: bool = True) -> None:
        if not self.closed:
            self.lingering = linger
        self.closed = True

    def abort(self) -> None:
        self.closed = True
        self.aborted = True

    def pause_reading(self) -> None:
        assert not self.reading_paused, "pause_reading twice"
        self.reading_paused = True
        self.pause_calls += 1

    def resume_reading(self) -> None:
        assert self.reading_paused, "resume_reading while not paused"
        self.reading_paused = False

    def start_app(self, stream: AsgiHttpStream | AsgiWsStream) -> None:
        self.started.append(stream)

    def switch(self, switch: SwitchProtocol) -> None:
        self.switched.append(switch)
        if self.on_switch is not None:
            self.on_switch(switch)


class H1Pair:
    """A real h11 client talking to an H1Connection in memory."""

    def __init__(
        self,
        limits: ProtocolLimits | None = None,
        *,
        split: str = "whole",
        now: float = 1000.0,
        ssl: bool = False,
        state: dict[str, Any] | None = None,
        parser_kind: str = "auto",
    ) -> None:
        self.limits = limits or ProtocolLimits()
        self.split = split
        self.now = now
        self.sink = RecordingSink()
        self.dates = DateCache(wall_offset=784111777.0 - 1000.0)  # the RFC's example date
        parser: H1Parser
        if parser_kind == "plain-h11":
            parser = H11Parser(self.limits)
        else:
            parser = make_parser(parser_kind, self.limits)
        self.server = H1Connection(
            sink=self.sink,
            parser=parser,
            limits=self.limits,
            dates=self.dates,
            client=("127.0.0.1", 50000),
            server=("127.0.0.1", 8000),
            ssl=ssl,
            tls=None,
            state=state,
            now=now,
        )
        self.client = h11.Connection(h11.CLIENT)
        self._read = 0
        self._seed = 0

    # -- client to server ------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Raw bytes to the server, cut according to ``self.split``."""
        self._seed += 1
        for piece in split_bytes(data, self.split, self._seed):
            self.server.receive_data(piece, self.now)

    def send(self, *events: Any) -> None:
        """Serialise ``events`` with the h11 client and feed the bytes to the server."""
        data = b"".join(self.client.send(event) or b"" for event in events)
        self.feed(data)

    def request(
        self,
        method: str = "GET",
        target: str = "/",
        headers: Iterable[tuple[str, str]] = (),
        body: bytes | None = None,
    ) -> None:
        hdrs = [("host", "example.com"), *headers]
        if body is not None and not any(n.lower() == "transfer-encoding" for n, _ in hdrs):
            hdrs.append(("content-length", str(len(body))))
        events: list[Any] = [h11.Request(method=method, target=target, headers=hdrs)]
        if body:
            events.append(h11.Data(data=body))
        events.append(h11.EndOfMessage())
        self.send(*events)

    def eof(self) -> None:
        self.server.receive_data(b"", self.now)

    # -- server to client ------------------------------------------------------------------

    def new_output(self) -> bytes:
        self.sink.run_soon()  # (the loop went round before the client reads)
        data = bytes(self.sink.out[self._read :])
        self._read = len(self.sink.out)
        return data

    def client_events(self) -> list[Any]:
        """Everything the server wrote since last time, parsed by the h11 client."""
        data = self.new_output()
        if data:
            self.client.receive_data(data)
        if self.sink.closed and self.client.their_state is not h11.CLOSED:
            self.client.receive_data(b"")
        events = []
        while True:
            event = self.client.next_event()
            if event is h11.NEED_DATA or event is h11.PAUSED:
                break
            events.append(event)
            if isinstance(event, h11.ConnectionClosed):
                break
        return events

    def next_cycle(self) -> None:
        self.client.start_next_cycle()

    # -- playing the app -------------------------------------------------------------------

    @property
    def stream(self) -> AsgiHttpStream:
        assert self.sink.started, "no app started"
        return self.sink.started[-1]

    def receive(self, stream: AsgiHttpStream | None = None) -> dict[str, Any] | None:
        return (stream or self.stream).receive_nowait(self.now)

    def receive_all(self, stream: AsgiHttpStream | None = None) -> list[dict[str, Any]]:
        messages = []
        while True:
            message = self.receive(stream)
            if message is None:
                return messages
            messages.append(message)
            if message["type"] == "http.disconnect" or not message.get("more_body", True):
                return messages

    def app_send(self, message: dict[str, Any], stream: AsgiHttpStream | None = None) -> None:
        (stream or self.stream).app_send(message, self.now)

    def respond(
        self,
        status: int = 200,
        headers: list[tuple[bytes, bytes]] | None = None,
        body: bytes = b"",
        *,
        chunks: Iterable[bytes] | None = None,
        stream: AsgiHttpStream | None = None,
    ) -> None:
        self.app_send(
            {"type": "http.response.start", "status": status, "headers": headers or []}, stream
        )
        if chunks is None:
            self.app_send({"type": "http.response.body", "body": body}, stream)
        else:
            for chunk in chunks:
                self.app_send(
                    {"type": "http.response.body", "body": chunk, "more_body": True}, stream
                )
            self.app_send({"type": "http.response.body", "body": b""}, stream)

    # -- time --------------------------------------------------------------------------------

    def advance(self, seconds: float) -> None:
        """Move the clock; fire the server's deadline if it is due (as the driver's timer)."""
        self.now += seconds
        deadline = self.server.next_deadline()
        if deadline is not None and deadline <= self.now:
            self.server.handle_deadline(self.now)
