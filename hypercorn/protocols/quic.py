"""The QUIC endpoint: one UDP socket's datagrams, demultiplexed to QUIC connections (sans-IO).

Theory of operation
-------------------
A ``QuicEndpoint`` sits between one UDP socket (the driver hands it every datagram with the
sender's address and ``now``) and the QUIC connections of that socket (aioquic
``QuicConnection``s, each inside an ``EndpointConnection``: the HTTP/3 connection of
``http3.py``). It keeps no per-connection state of its own beyond the routing table.

Rules, in the order a datagram meets them:

1. A datagram whose header does not parse is dropped (counted in ``dropped``).
2. A long-header packet of a version we do not speak, in a datagram large enough to open a
   connection (1200 bytes, RFC 9000 section 14.1), gets a Version Negotiation packet;
   smaller ones, and Version Negotiation packets themselves (a reflection loop otherwise),
   are dropped (RFC 9000 section 5.2.2).
3. A datagram whose destination connection ID is routed goes to that connection, whatever
   its address (QUIC connections may migrate; aioquic validates the new path, and until it
   has, never sends more than three times what that address sent: the amplification limit
   of RFC 9000 section 8).
4. Anything else opens a connection only if it is an Initial packet in a datagram of at
   least 1200 bytes (so what we send before the address is validated is bounded by three
   times a real datagram), the endpoint is accepting (not shutting down, under
   ``max_connections``), and, with ``retry`` on, it carries a valid retry token. Without a
   token it gets a Retry packet (stateless: no connection exists until the client proves
   its address); with an invalid one, an Initial CONNECTION_CLOSE(INVALID_TOKEN). Other
   packets for unknown connection IDs (a connection that ended, a spoofed ID, a worker
   that restarted) are dropped without an answer.

aioquic has no public API for a few things the server needs, so its internals are used in
three places: ``ServerQuicConnection`` (the window arithmetic), ``H3Streams._unsent`` /
``_undelivered`` (a stream's send buffer) and ``Http3Connection`` (a peer's close, the
GOAWAY frame on the control stream). Tested with aioquic 1.2 (the floor) and 1.7.

Connections tell the endpoint which IDs route to them (``add_cid`` / ``remove_cid``, from
aioquic's ``ConnectionIdIssued`` / ``ConnectionIdRetired``) and when they are over
(``forget``). Each keeps its own timer (the driver's one deadline per connection): the
endpoint has none.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from typing import Any, Protocol

from aioquic.buffer import Buffer  # type: ignore[attr-defined]
from aioquic.quic.configuration import SMALLEST_MAX_DATAGRAM_SIZE, QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.crypto import CryptoPair
from aioquic.quic.packet import (
    QuicErrorCode,
    QuicFrameType,
    QuicPacketType,
    encode_quic_retry,
    encode_quic_version_negotiation,
    pull_quic_header,
)
from aioquic.quic.packet_builder import QuicPacketBuilder
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

#: A UDP peer address as the socket gives it: (host, port) or (host, port, flow, scope).
Address = tuple[Any, ...]

#: Receive windows we grant a client: per stream, and per connection (larger, so a stream
#: whose app does not read leaves room for the others). They open as the apps read.
STREAM_WINDOW = 1024 * 1024
CONNECTION_WINDOW = 4 * 1024 * 1024
#: Seconds a retry token stays valid (clients send it back at once: RFC 9000 section 8.1.4).
RETRY_TOKEN_LIFETIME = 30.0
_NONCE = 12


class EndpointConnection(Protocol):
    """A QUIC connection the endpoint routes datagrams to (``http3.Http3Connection``)."""

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None: ...


#: Builds the connection for an accepted ``QuicConnection`` from ``addr``, or refuses it
#: (None). Called by the endpoint before it routes the first datagram.
Accept = Callable[[QuicConnection, Address, float], "EndpointConnection | None"]


def _nothing_unread(stream_id: int = 0) -> int:
    return 0


class ServerQuicConnection(QuicConnection):
    """aioquic's connection, with receive windows that open as the application *reads*.

    aioquic doubles a stream's window (and the connection's) once the peer has sent half of
    it, whether or not anyone read the data: a request body an app never reads would be
    buffered without bound. Here the growth counts only what the app took: the connection
    above sets ``unread`` (bytes of a stream received and not read) and ``unread_total``,
    and aioquic's window arithmetic sees the received offsets less those. An app that does
    not read holds at most the initial windows (``max_stream_data`` per stream,
    ``max_data`` per connection) of its peer's data.
    """

    unread: Callable[[int], int] = staticmethod(_nothing_unread)
    unread_total: Callable[[], int] = staticmethod(_nothing_unread)

    def _write_stream_limits(self, builder: Any, space: Any, stream: Any) -> None:
        unread = self.unread(stream.stream_id)
        if not unread:
            super()._write_stream_limits(builder=builder, space=space, stream=stream)
            return
        receiver = stream.receiver
        received = receiver.highest_offset
        receiver.highest_offset = max(0, received - unread)
        try:
            super()._write_stream_limits(builder=builder, space=space, stream=stream)
        finally:
            receiver.highest_offset = received

    def _write_connection_limits(self, builder: Any, space: Any) -> None:
        unread = self.unread_total()
        if not unread:
            super()._write_connection_limits(builder=builder, space=space)
            return
        limit = self._local_max_data
        used = limit.used
        limit.used = max(0, used - unread)
        try:
            super()._write_connection_limits(builder=builder, space=space)
        finally:
            limit.used = used


class RetryTokens:
    """Stateless address validation (RFC 9000 section 8.1.2): a Retry carries an AEAD-sealed
    token naming the client's address, the connection IDs and the time it was issued.

    The key comes from the caller: every worker of a server derives the same one from its
    TLS key (``retry_key``), so a token issued by one worker is good at another (a client
    may land on the replacement of the worker that sent the Retry).
    """

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    def create(self, addr: Address, odcid: bytes, retry_scid: bytes, now: float) -> bytes:
        plain = b"".join(
            (
                _pack(_address_bytes(addr)),
                _pack(odcid),
                _pack(retry_scid),
                int(now * 1000).to_bytes(8, "big"),
            )
        )
        nonce = os.urandom(_NONCE)
        return nonce + self._aead.encrypt(nonce, plain, None)

    def validate(self, addr: Address, dcid: bytes, token: bytes, now: float) -> bytes | None:
        """The original destination connection ID the token vouches for, or None."""
        if len(token) <= _NONCE:
            return None
        try:
            plain = self._aead.decrypt(token[:_NONCE], token[_NONCE:], None)
        except InvalidTag:
            return None
        fields = []
        pos = 0
        for _ in range(3):
            size = plain[pos]
            fields.append(plain[pos + 1 : pos + 1 + size])
            pos += 1 + size
        issued = int.from_bytes(plain[pos : pos + 8], "big") / 1000
        address, odcid, retry_scid = fields
        # The client must send to the Retry's source connection ID (RFC 9000 17.2.5.2).
        if address != _address_bytes(addr) or dcid != retry_scid:
            return None
        if not 0 <= now - issued <= RETRY_TOKEN_LIFETIME:
            return None
        return odcid


def retry_key(secret: bytes) -> bytes:
    """A retry-token key derived from ``secret`` (the server's TLS key file)."""
    return hashlib.sha256(b"hypercorn quic retry\x00" + secret).digest()[:16]


def _pack(data: bytes) -> bytes:
    return bytes((len(data),)) + data


def _address_bytes(addr: Address) -> bytes:
    return f"{addr[0]}|{addr[1]}".encode()


class QuicEndpoint:
    """Demultiplexes one UDP socket's datagrams; see the module docstring."""

    def __init__(
        self,
        *,
        configuration: QuicConfiguration,
        send: Callable[[bytes, Address], object],
        accept: Accept,
        retry: RetryTokens | None = None,
        max_connections: int | None = None,
    ) -> None:
        # (The endpoint's own windows: see ServerQuicConnection.)
        configuration.max_stream_data = STREAM_WINDOW
        configuration.max_data = CONNECTION_WINDOW
        self._configuration = configuration
        self._cid_length = configuration.connection_id_length
        self._supported = tuple(configuration.supported_versions)
        self.send_datagram = send
        self._accept = accept
        self._retry = retry
        self._max_connections = max_connections
        #: Connection ID -> its connection (several IDs per connection).
        self._routes: dict[bytes, EndpointConnection] = {}
        #: Each connection's IDs, for ``forget``.
        self._cids: dict[EndpointConnection, set[bytes]] = {}
        self.accepting = True
        #: Datagrams dropped (unparseable, unknown connection, refused): for tests and logs.
        self.dropped = 0

    @property
    def connections(self) -> int:
        return len(self._cids)

    def stop_accepting(self) -> None:
        """New connections are refused from now on (their Initials are dropped); the
        existing ones are served until they end."""
        self.accepting = False

    # -- routing, from the connections ---------------------------------------------------------

    def add_cid(self, cid: bytes, conn: EndpointConnection) -> None:
        self._routes[cid] = conn
        self._cids.setdefault(conn, set()).add(cid)

    def remove_cid(self, cid: bytes) -> None:
        conn = self._routes.pop(cid, None)
        if conn is not None:
            self._cids.get(conn, set()).discard(cid)

    def forget(self, conn: EndpointConnection) -> None:
        """``conn`` is over: none of its connection IDs routes anywhere any more."""
        for cid in self._cids.pop(conn, ()):
            if self._routes.get(cid) is conn:
                del self._routes[cid]

    # -- datagrams in ----------------------------------------------------------------------------

    def datagram_received(self, data: bytes, addr: Address, now: float) -> None:
        try:
            header = pull_quic_header(Buffer(data=data), host_cid_length=self._cid_length)
        except ValueError:
            self.dropped += 1
            return
        version = header.version
        if version is not None and version not in self._supported:
            if (
                header.packet_type != QuicPacketType.VERSION_NEGOTIATION
                and len(data) >= SMALLEST_MAX_DATAGRAM_SIZE
            ):
                self.send_datagram(
                    encode_quic_version_negotiation(
                        source_cid=header.destination_cid,
                        destination_cid=header.source_cid,
                        supported_versions=list(self._supported),
                    ),
                    addr,
                )
            else:
                self.dropped += 1
            return
        conn = self._routes.get(header.destination_cid)
        if conn is None:
            conn = self._open(data, header, addr, now)
            if conn is None:
                return
        conn.receive_datagram(data, addr, now)

    def _open(
        self, data: bytes, header: Any, addr: Address, now: float
    ) -> EndpointConnection | None:
        if (
            header.packet_type != QuicPacketType.INITIAL
            or len(data) < SMALLEST_MAX_DATAGRAM_SIZE
            or not self.accepting
            or (self._max_connections is not None and len(self._cids) >= self._max_connections)
        ):
            self.dropped += 1
            return None
        odcid = header.destination_cid
        retry_scid: bytes | None = None
        if self._retry is not None:
            if not header.token:
                scid = os.urandom(self._cid_length)
                token = self._retry.create(addr, header.destination_cid, scid, now)
                self.send_datagram(
                    encode_quic_retry(
                        version=header.version,
                        source_cid=scid,
                        destination_cid=header.source_cid,
                        original_destination_cid=header.destination_cid,
                        retry_token=token,
                    ),
                    addr,
                )
                return None
            vouched = self._retry.validate(addr, header.destination_cid, header.token, now)
            if vouched is None:
                self.send_datagram(
                    invalid_token_close(header.version, header.destination_cid, header.source_cid),
                    addr,
                )
                return None
            odcid, retry_scid = vouched, header.destination_cid
        quic = ServerQuicConnection(
            configuration=self._configuration,
            original_destination_connection_id=odcid,
            retry_source_connection_id=retry_scid,
        )
        conn = self._accept(quic, addr, now)
        if conn is None:
            self.dropped += 1
            return None
        self.add_cid(header.destination_cid, conn)
        self.add_cid(quic.host_cid, conn)
        return conn


def invalid_token_close(version: int, dcid: bytes, scid: bytes) -> bytes:
    """An Initial packet closing the connection with INVALID_TOKEN (RFC 9000 section 8.1.3);
    its keys come from ``dcid``, the destination connection ID the client chose."""
    crypto = CryptoPair()
    crypto.setup_initial(cid=dcid, is_client=False, version=version)
    builder = QuicPacketBuilder(
        host_cid=dcid,
        is_client=False,
        max_datagram_size=SMALLEST_MAX_DATAGRAM_SIZE,
        peer_cid=scid,
        version=version,
    )
    builder.start_packet(QuicPacketType.INITIAL, crypto)
    buf = builder.start_frame(QuicFrameType.TRANSPORT_CLOSE, capacity=16)
    buf.push_uint_var(QuicErrorCode.INVALID_TOKEN)
    buf.push_uint_var(QuicFrameType.PADDING)
    buf.push_uint_var(0)
    datagrams, _ = builder.flush()
    return bytes(datagrams[0])
