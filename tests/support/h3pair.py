"""In-memory HTTP/3: real aioquic clients against our ``QuicEndpoint`` + ``Http3Connection``.

aioquic's ``client_and_server`` idea: no sockets, no event loop. Datagrams move between the
clients and the endpoint only when the test calls ``transfer``; time moves only with
``advance``, which fires every timer that came due (aioquic's on the client side, each
connection's one deadline on ours). The test plays the ASGI apps by calling the started
streams' ``receive_nowait`` / ``app_send``, as with ``H2Pair``.
"""

from __future__ import annotations

import functools
from typing import Any

import trustme
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, H3Event, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import QuicEvent
from aioquic.tls import load_pem_private_key, load_pem_x509_certificates

from hypercorn.protocols.asgi_http import AsgiHttpStream
from hypercorn.protocols.headers import DateCache
from hypercorn.protocols.http3 import Http3Connection
from hypercorn.protocols.limits import ProtocolLimits
from hypercorn.protocols.quic import Address, QuicEndpoint, RetryTokens
from tests.support.pairs import RecordingSink

SERVER_ADDR = ("127.0.0.1", 4433)
#: Timers due this soon fire during ``transfer`` (aioquic's pacing, at zero RTT).
PACING_SLACK = 0.001


@functools.lru_cache(maxsize=1)
def certificates() -> tuple[bytes, bytes, bytes]:
    """(CA PEM, certificate chain PEM, key PEM) for ``localhost``, made once per run."""
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    chain = b"".join(blob.bytes() for blob in cert.cert_chain_pems)
    return ca.cert_pem.bytes(), chain, cert.private_key_pem.bytes()


def server_configuration(**overrides: Any) -> QuicConfiguration:
    _, chain, key = certificates()
    configuration = QuicConfiguration(is_client=False, alpn_protocols=H3_ALPN, **overrides)
    certs = load_pem_x509_certificates(chain)
    configuration.certificate = certs[0]
    configuration.certificate_chain = certs[1:]
    configuration.private_key = load_pem_private_key(key)
    return configuration


def client_configuration(**overrides: Any) -> QuicConfiguration:
    configuration = QuicConfiguration(
        is_client=True, alpn_protocols=H3_ALPN, server_name="localhost", **overrides
    )
    configuration.load_verify_locations(cadata=certificates()[0])
    return configuration


class H3Client:
    """One aioquic HTTP/3 client connection of an ``H3Pair``."""

    def __init__(self, pair: H3Pair, port: int, **config: Any) -> None:
        self.pair = pair
        self.addr: Address = ("127.0.0.1", port)
        self.quic = QuicConnection(configuration=client_configuration(**config))
        self.quic.connect(SERVER_ADDR, now=pair.now)
        self.h3 = H3Connection(self.quic)
        #: Every QUIC and HTTP/3 event this client saw, in order.
        self.quic_events: list[QuicEvent] = []
        self.events: list[H3Event] = []
        #: Bytes delivered to the server / sent to us by it.
        self.sent = 0
        self.received = 0
        #: When False, this client's datagrams are not delivered to the server / the
        #: server's are lost on the way (a spoofed address).
        self.deliver = True
        self.reachable = True

    def request(
        self,
        method: str = "GET",
        path: str = "/",
        headers: list[tuple[str, str]] | None = None,
        body: bytes | None = None,
        *,
        end: bool = True,
        authority: str = "localhost",
        trailers: list[tuple[str, str]] | None = None,
    ) -> int:
        stream_id = self.quic.get_next_available_stream_id()
        head = [
            (b":method", method.encode()),
            (b":scheme", b"https"),
            (b":authority", authority.encode()),
            (b":path", path.encode()),
            *((name.encode(), value.encode()) for name, value in headers or []),
        ]
        if method == "CONNECT":
            head = [header for header in head if header[0] not in (b":scheme", b":path")] + [
                (b":scheme", b"https"),
                (b":path", path.encode()),
            ]
            head.sort(key=lambda header: not header[0].startswith(b":"))
        ends_here = end and not body and not trailers
        self.h3.send_headers(stream_id, head, end_stream=ends_here)
        if body:
            self.h3.send_data(stream_id, body, end_stream=end and not trailers)
        if trailers:
            self.h3.send_headers(
                stream_id, [(n.encode(), v.encode()) for n, v in trailers], end_stream=True
            )
        self.pair.transfer()
        return stream_id

    def send_body(self, stream_id: int, data: bytes, end: bool = False) -> None:
        self.h3.send_data(stream_id, data, end_stream=end)
        self.pair.transfer()

    def response(self, stream_id: int) -> tuple[dict[bytes, bytes] | None, bytes, bool]:
        """(final headers, body, ended) this client has for ``stream_id`` so far."""
        headers = None
        body = b""
        ended = False
        for event in self.events:
            if getattr(event, "stream_id", None) != stream_id:
                continue
            if isinstance(event, HeadersReceived):
                if headers is None:  # (a later block is the trailers)
                    status = dict(event.headers).get(b":status", b"")
                    if not status.startswith(b"1"):
                        headers = dict(event.headers)
                ended = ended or event.stream_ended
            elif isinstance(event, DataReceived):
                body += event.data
                ended = ended or event.stream_ended
        return headers, body, ended

    def headers_frames(self, stream_id: int) -> list[list[tuple[bytes, bytes]]]:
        return [
            list(event.headers)
            for event in self.events
            if isinstance(event, HeadersReceived) and event.stream_id == stream_id
        ]

    def of_type(self, kind: type) -> list[Any]:
        return [event for event in (*self.quic_events, *self.events) if isinstance(event, kind)]

    def _pump_events(self) -> None:
        while (event := self.quic.next_event()) is not None:
            self.quic_events.append(event)
            self.events.extend(self.h3.handle_event(event))


class H3Pair:
    """aioquic HTTP/3 clients talking to one ``QuicEndpoint`` in memory."""

    def __init__(
        self,
        limits: ProtocolLimits | None = None,
        *,
        now: float = 1000.0,
        retry: bool = False,
        max_connections: int | None = None,
        connect: bool = True,
        state: dict[str, Any] | None = None,
    ) -> None:
        self.limits = limits or ProtocolLimits()
        self.now = now
        self.dates = DateCache(wall_offset=784111777.0 - 1000.0)
        self.state = state
        self.sinks: dict[Http3Connection, RecordingSink] = {}
        self.connections: list[Http3Connection] = []
        #: Datagrams the endpoint sent, not yet delivered.
        self.outbox: list[tuple[bytes, Address]] = []
        #: Bytes the endpoint sent, per address.
        self.sent_to: dict[Address, int] = {}
        self.endpoint = QuicEndpoint(
            configuration=server_configuration(),
            send=self._server_send,
            accept=self._accept,
            retry=RetryTokens(b"k" * 16) if retry else None,
            max_connections=max_connections,
        )
        self.clients: list[H3Client] = []
        self._port = 50000
        self.client = self.new_client() if connect else None

    # -- the endpoint's side -------------------------------------------------------------------

    def _server_send(self, data: bytes, addr: Address) -> None:
        self.outbox.append((data, addr))
        self.sent_to[addr] = self.sent_to.get(addr, 0) + len(data)

    def _accept(self, quic: QuicConnection, addr: Address, now: float) -> Http3Connection:
        sink = RecordingSink()
        conn = Http3Connection(
            quic=quic,
            routes=self.endpoint,
            sink=sink,
            limits=self.limits,
            dates=self.dates,
            client=(str(addr[0]), int(addr[1])),
            server=SERVER_ADDR,
            tls={"tls_version": 0x304},
            state=self.state,
            now=now,
        )
        self.sinks[conn] = sink
        self.connections.append(conn)
        return conn

    @property
    def conn(self) -> Http3Connection:
        assert self.connections, "no connection yet"
        return self.connections[0]

    def conn_of(self, client: H3Client) -> Http3Connection:
        """The server's connection for ``client`` (the one the address matches)."""
        for conn in self.connections:
            if conn._client == client.addr:
                return conn
        raise AssertionError(f"no connection from {client.addr}")

    @property
    def sink(self) -> RecordingSink:
        return self.sinks[self.conn]

    # -- clients and datagrams -----------------------------------------------------------------

    def new_client(self, **config: Any) -> H3Client:
        self._port += 1
        client = H3Client(self, self._port, **config)
        self.clients.append(client)
        self.transfer()
        return client

    def transfer(self, rounds: int = 20_000) -> None:
        """Move datagrams both ways until nothing more moves. aioquic paces what it sends
        (a few microseconds apart at our zero RTT): timers due within ``PACING_SLACK``
        fire on the way, moving the clock that little."""
        for _ in range(rounds):
            if self._exchange():
                continue
            soon = self._earliest_timer()
            if soon is None or soon > self.now + PACING_SLACK:
                return
            self.now = max(self.now, soon)
            self._fire_timers()
        raise AssertionError("datagrams kept moving")

    def _exchange(self) -> bool:
        moved = False
        for client in self.clients:
            for data, _addr in client.quic.datagrams_to_send(self.now):
                moved = True
                if client.deliver:
                    client.sent += len(data)
                    self.endpoint.datagram_received(data, client.addr, self.now)
        out, self.outbox = self.outbox, []
        for data, addr in out:
            moved = True
            for client in self.clients:
                if client.addr == addr:
                    client.received += len(data)
                    if client.reachable:
                        client.quic.receive_datagram(data, SERVER_ADDR, self.now)
        for client in self.clients:
            client._pump_events()
        return moved

    def _earliest_timer(self) -> float | None:
        deadlines = [
            deadline
            for deadline in (
                *(client.quic.get_timer() for client in self.clients),
                *(conn.next_deadline() for conn in self.connections),
            )
            if deadline is not None
        ]
        return min(deadlines) if deadlines else None

    def _fire_timers(self) -> None:
        for client in self.clients:
            timer = client.quic.get_timer()
            if timer is not None and timer <= self.now:
                client.quic.handle_timer(self.now)
        for conn in self.connections:
            deadline = conn.next_deadline()
            if deadline is not None and deadline <= self.now:
                conn.handle_deadline(self.now)
                # A deadline that stays in the past would have the driver's timer fire
                # again at once, forever (a busy loop, or a frozen trio loop).
                later = conn.next_deadline()
                assert later is None or later > self.now, "the deadline did not move"

    def advance(self, seconds: float) -> None:
        """Move time on, firing every timer that came due (in order) on both sides."""
        target = self.now + seconds
        self.transfer()  # (what is in flight lands first: it may set timers)
        for _ in range(10_000):
            soon = self._earliest_timer()
            if soon is None or soon > target:
                break
            self.now = max(self.now, soon)
            self._fire_timers()
            self.transfer()
        self.now = target
        self.transfer()

    # -- playing the app -----------------------------------------------------------------------

    def stream(self, stream_id: int, conn: Http3Connection | None = None) -> Any:
        sink = self.sinks[conn or self.conn]
        for stream in sink.started:
            if stream.stream_id == stream_id:
                return stream
        raise AssertionError(f"no app started for stream {stream_id}")

    def receive(self, stream_id: int) -> dict[str, Any] | None:
        message: dict[str, Any] | None = self.stream(stream_id).receive_nowait(self.now)
        return message

    def receive_all(self, stream_id: int) -> list[dict[str, Any]]:
        messages = []
        while (message := self.receive(stream_id)) is not None:
            messages.append(message)
            if message["type"] == "http.disconnect" or not message.get("more_body", True):
                break
        return messages

    def app_send(self, stream_id: int, message: dict[str, Any]) -> None:
        self.stream(stream_id).app_send(message, self.now)
        self.transfer()

    def respond(
        self,
        stream_id: int,
        status: int = 200,
        headers: list[tuple[bytes, bytes]] | None = None,
        body: bytes = b"",
    ) -> None:
        stream: AsgiHttpStream = self.stream(stream_id)
        start = {"type": "http.response.start", "status": status, "headers": headers or []}
        stream.app_send(start, self.now)
        stream.app_send({"type": "http.response.body", "body": body}, self.now)
        self.transfer()
