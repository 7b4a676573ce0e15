"""The QUIC endpoint (``protocols/quic.py``): what it answers, what it drops, in memory.

Every hostile datagram here must leave the other connections of the endpoint untouched: each
test ends by serving a request on a connection made before the attack.
"""

from __future__ import annotations

import os

from aioquic.buffer import Buffer
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import ConnectionTerminated, HandshakeCompleted
from aioquic.quic.packet import QuicErrorCode, QuicPacketType, pull_quic_header

from hypercorn.protocols.limits import ProtocolLimits
from tests.support.h3pair import SERVER_ADDR, H3Client, H3Pair, client_configuration

SPOOFED = ("192.0.2.7", 40000)


def still_serves(pair: H3Pair, client: H3Client) -> None:
    stream_id = client.request("GET", "/after")
    stream = pair.stream(stream_id, pair.conn_of(client))
    stream.app_send({"type": "http.response.start", "status": 200, "headers": []}, pair.now)
    stream.app_send({"type": "http.response.body", "body": b"ok"}, pair.now)
    pair.transfer()
    assert client.response(stream_id)[1:] == (b"ok", True)


def first_flight(port: int = 41000, **config: object) -> tuple[QuicConnection, list[bytes]]:
    """A client's first datagrams (its Initial, padded to 1200 bytes), sent to no one."""
    quic = QuicConnection(configuration=client_configuration(**config))
    quic.connect(SERVER_ADDR, now=1000.0)
    return quic, [data for data, _ in quic.datagrams_to_send(1000.0)]


def header_of(data: bytes) -> object:
    return pull_quic_header(Buffer(data=data), host_cid_length=8)


def test_garbage_and_unknown_connections_are_dropped_silently() -> None:
    pair = H3Pair()
    assert pair.client is not None
    hostile = [
        b"",
        b"\x00",
        os.urandom(50),
        b"\x40" + os.urandom(8) + os.urandom(40),  # short header, unknown connection ID
        b"\xc0\x00\x00\x00\x01\x08" + os.urandom(8) + b"\x00" + os.urandom(30),  # no Initial
    ]
    _, flight = first_flight()
    hostile.append(flight[0][:600])  # an Initial too small to open a connection
    before = pair.endpoint.dropped
    for data in hostile:
        pair.endpoint.datagram_received(data, SPOOFED, pair.now)
    assert pair.outbox == []
    assert pair.endpoint.dropped == before + len(hostile)
    assert pair.endpoint.connections == 1
    still_serves(pair, pair.client)


def test_unknown_version_gets_version_negotiation_when_large_enough() -> None:
    pair = H3Pair()
    assert pair.client is not None
    dcid, scid = os.urandom(8), os.urandom(8)
    packet = b"\xc0" + b"\x1a\x2a\x3a\x4a" + b"\x08" + dcid + b"\x08" + scid
    pair.endpoint.datagram_received(packet + bytes(1200), SPOOFED, pair.now)
    ((answer, addr),) = pair.outbox
    pair.outbox.clear()
    assert addr == SPOOFED
    header = header_of(answer)
    assert header.packet_type == QuicPacketType.VERSION_NEGOTIATION  # type: ignore[attr-defined]
    assert header.destination_cid == scid
    assert header.source_cid == dcid
    assert 0x00000001 in header.supported_versions  # type: ignore[attr-defined]
    # Small ones and Version Negotiation packets themselves get nothing (RFC 9000 5.2.2).
    pair.endpoint.datagram_received(packet + bytes(100), SPOOFED, pair.now)
    pair.endpoint.datagram_received(answer + bytes(1200), SPOOFED, pair.now)
    assert pair.outbox == []
    still_serves(pair, pair.client)


def test_retry_validates_the_address_before_any_state() -> None:
    pair = H3Pair(retry=True, connect=False)
    _, flight = first_flight()
    pair.endpoint.datagram_received(flight[0], SPOOFED, pair.now)
    ((answer, _),) = pair.outbox
    pair.outbox.clear()
    assert header_of(answer).packet_type == QuicPacketType.RETRY  # type: ignore[attr-defined]
    assert len(answer) < len(flight[0])  # (no amplification)
    assert pair.endpoint.connections == 0
    # A real client follows the Retry with its token and gets served.
    client = pair.new_client()
    assert client.of_type(HandshakeCompleted)
    assert pair.endpoint.connections == 1
    still_serves(pair, client)


def test_a_bad_retry_token_is_refused_with_invalid_token() -> None:
    pair = H3Pair(retry=True)
    assert pair.client is not None
    forged = pair.new_client(token=b"\x01" * 40)
    assert pair.endpoint.connections == 1
    pair.advance(1.0)
    closed = forged.of_type(ConnectionTerminated)
    assert closed
    assert closed[0].error_code == QuicErrorCode.INVALID_TOKEN
    still_serves(pair, pair.client)


def test_amplification_is_bounded_before_the_address_is_validated() -> None:
    # (Limits long enough that no deadline of ours ends the spoofed connection first.)
    pair = H3Pair(ProtocolLimits(keep_alive_timeout=100.0, header_read_timeout=100.0))
    assert pair.client is not None
    # One Initial from an address that never answers (a spoofed source): our handshake
    # flight and its retransmissions may total three times what it sent, no more.
    _, flight = first_flight()
    pair.endpoint.datagram_received(flight[0], SPOOFED, pair.now)
    pair.advance(20.0)
    assert pair.sent_to[SPOOFED] == 3 * len(flight[0])
    still_serves(pair, pair.client)


def test_a_handshake_that_never_ends_is_forgotten_without_a_word() -> None:
    pair = H3Pair(ProtocolLimits(header_read_timeout=10.0), connect=False)
    _, flight = first_flight()
    pair.endpoint.datagram_received(flight[0], SPOOFED, pair.now)
    assert pair.endpoint.connections == 1
    pair.advance(11.0)
    assert pair.endpoint.connections == 0
    assert pair.sent_to[SPOOFED] <= 3 * len(flight[0])
    still_serves(pair, pair.new_client())


def test_refused_connections_when_full_or_stopping() -> None:
    pair = H3Pair(max_connections=1)
    assert pair.client is not None
    second = pair.new_client()
    assert not second.of_type(HandshakeCompleted)
    assert pair.endpoint.connections == 1
    pair.endpoint.stop_accepting()
    pair.endpoint._max_connections = None
    third = pair.new_client()
    assert not third.of_type(HandshakeCompleted)
    still_serves(pair, pair.client)


def test_many_connections_are_routed_apart() -> None:
    pair = H3Pair()
    clients = [pair.new_client() for _ in range(3)]
    for client in clients:
        still_serves(pair, client)
