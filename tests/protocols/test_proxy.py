"""The PROXY protocol reader (``hypercorn/protocols/proxy.py``) on the spec's examples, split
at every byte, and on the ways a header goes wrong."""

from __future__ import annotations

import ipaddress
import struct

import pytest

from hypercorn.protocols.proxy import (
    V2_SIGNATURE,
    ProxyHeader,
    ProxyHeaderError,
    ProxyHeaderReader,
    ProxyPolicy,
)

REQUEST = b"GET / HTTP/1.1\r\nhost: x\r\n\r\n"
TLS_HELLO = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"


def v2(
    command: int = 1,
    family: int = 1,
    addresses: bytes = b"",
    tlvs: bytes = b"",
    length: int | None = None,
) -> bytes:
    body = addresses + tlvs
    size = len(body) if length is None else length
    return (
        V2_SIGNATURE + bytes([0x20 | command, (family << 4) | 1]) + struct.pack("!H", size) + body
    )


def inet(src: str, dst: str, sport: int, dport: int) -> bytes:
    packed = ipaddress.ip_address(src).packed + ipaddress.ip_address(dst).packed
    return packed + struct.pack("!HH", sport, dport)


def read(data: bytes, step: int | None = None) -> tuple[ProxyHeader, bytes]:
    """Feed ``data`` whole or in ``step``-byte pieces; return the header and what follows it."""
    reader = ProxyHeaderReader()
    rest = b""
    pieces = [data] if step is None else [data[i : i + step] for i in range(0, len(data), step)]
    for piece in pieces:
        if reader.header is None:
            rest += piece[reader.feed(piece) :]
        else:
            assert reader.feed(piece) == 0
            rest += piece
    assert reader.header is not None
    return reader.header, rest


VALID = [
    (
        b"PROXY TCP4 192.0.2.10 198.51.100.1 56324 443\r\n",
        ProxyHeader(1, ("192.0.2.10", 56324), ("198.51.100.1", 443)),
    ),
    (
        b"PROXY TCP6 2001:db8::1 2001:db8::2 65535 0\r\n",
        ProxyHeader(1, ("2001:db8::1", 65535), ("2001:db8::2", 0)),
    ),
    (b"PROXY UNKNOWN\r\n", ProxyHeader(1)),
    (b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n", ProxyHeader(1)),
    (
        v2(addresses=inet("203.0.113.7", "10.0.0.1", 40000, 8443)),
        ProxyHeader(2, ("203.0.113.7", 40000), ("10.0.0.1", 8443)),
    ),
    (
        v2(family=2, addresses=inet("2001:db8::7", "::1", 1, 2), tlvs=b"\x05\x00\x02id"),
        ProxyHeader(2, ("2001:db8::7", 1), ("::1", 2), tlvs=((5, b"id"),)),
    ),
    # LOCAL (a health check from the proxy itself): the real addresses stand.
    (v2(command=0, family=0), ProxyHeader(2)),
    (v2(command=0, addresses=inet("1.2.3.4", "5.6.7.8", 1, 2)), ProxyHeader(2)),
    (v2(family=3, addresses=b"/a".ljust(108, b"\0") + b"/b".ljust(108, b"\0")), ProxyHeader(2)),
    (v2(family=0, tlvs=b"\x04\x00\x00"), ProxyHeader(2, tlvs=((4, b""),))),
]


@pytest.mark.parametrize(("header", "expected"), VALID)
@pytest.mark.parametrize("follows", [b"", REQUEST, TLS_HELLO])
def test_valid_headers_at_every_split(header: bytes, expected: ProxyHeader, follows: bytes) -> None:
    data = header + follows
    for step in (None, 1, 2, 7, 16):
        assert read(data, step) == (expected, follows)


def test_incomplete_header_takes_everything_and_waits() -> None:
    reader = ProxyHeaderReader()
    assert reader.feed(b"PROXY TCP4 1.2.3.4") == 18
    assert reader.header is None
    assert reader.feed(b" 5.6.7.8 1 2\r") == 13
    assert reader.feed(b"\nGET") == 1
    assert reader.header == ProxyHeader(1, ("1.2.3.4", 1), ("5.6.7.8", 2))


INVALID = [
    pytest.param(REQUEST, "did not start", id="plain-http"),
    pytest.param(TLS_HELLO, "did not start", id="tls-hello"),
    pytest.param(b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "did not start", id="lower-case"),
    pytest.param(b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "malformed", id="missing-port"),
    pytest.param(b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n", "malformed", id="double-space"),
    pytest.param(b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n", "malformed", id="udp"),
    pytest.param(b"PROXY TCP4 1.2.3.400 5.6.7.8 1 2\r\n", "address", id="bad-ip"),
    pytest.param(b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n", "address", id="family-mismatch"),
    pytest.param(b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n", "address", id="leading-zero-ip"),
    pytest.param(b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", "range", id="port-range"),
    pytest.param(b"PROXY TCP4 1.2.3.4 5.6.7.8 080 2\r\n", "port", id="port-zero"),
    pytest.param(b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n", "port", id="port-sign"),
    pytest.param(b"PROXY TCP4 1.2.3.4 5.6.7.8 \xd9\xa1 2\r\n", "ASCII", id="non-ascii"),
    pytest.param(b"PROXY UNKNOWN " + b"x" * 100, "CRLF", id="v1-oversized"),
    pytest.param(v2(length=5000), "over 4096", id="v2-oversized"),
    pytest.param(V2_SIGNATURE + b"\x11\x11\x00\x00", "version 1", id="v2-version"),
    pytest.param(V2_SIGNATURE + b"\x22\x11\x00\x00", "command", id="v2-command"),
    pytest.param(V2_SIGNATURE + b"\x21\x41\x00\x00", "command", id="v2-family"),
    pytest.param(v2(addresses=b"\x01" * 11), "shorter", id="v2-short-inet"),
    pytest.param(v2(family=0, tlvs=b"\x01\x00"), "truncated", id="v2-tlv-truncated"),
    pytest.param(v2(family=0, tlvs=b"\x01\x00\x09abc"), "longer", id="v2-tlv-overflow"),
]


@pytest.mark.parametrize(("data", "reason"), INVALID)
def test_invalid_headers_are_refused(data: bytes, reason: str) -> None:
    for step in (None, 1):
        reader = ProxyHeaderReader()
        with pytest.raises(ProxyHeaderError, match=reason):
            for at in range(0, len(data), step or len(data)):
                reader.feed(data[at : at + (step or len(data))])


def test_refused_from_the_first_byte_that_cannot_be_a_header() -> None:
    reader = ProxyHeaderReader()
    with pytest.raises(ProxyHeaderError):
        reader.feed(b"G")
    with pytest.raises(ProxyHeaderError):
        ProxyHeaderReader().feed(b"\r\n\r\n\x00\r\nQUIX")


def test_oversized_v2_refused_from_its_fixed_part() -> None:
    # The declared length alone is enough: nothing of the body is waited for or buffered.
    reader = ProxyHeaderReader(max_size=64)
    with pytest.raises(ProxyHeaderError, match="over 64"):
        reader.feed(v2(length=49))
    assert ProxyHeaderReader(max_size=64).feed(v2(length=48)) == 16


@pytest.mark.parametrize(
    ("allowed", "host", "trusted"),
    [
        (["127.0.0.1", "::1"], "127.0.0.1", True),
        (["127.0.0.1", "::1"], "::1", True),
        (["127.0.0.1", "::1"], "127.0.0.2", False),
        (["10.0.0.0/8"], "10.200.3.4", True),
        (["10.0.0.0/8"], "::ffff:10.1.1.1", True),
        (["10.0.0.0/8"], "11.0.0.1", False),
        (["2001:db8::/32"], "2001:db8:1::5", True),
        (["*"], "198.51.100.9", True),
        ([], "127.0.0.1", False),
        ([], None, True),  # a unix socket peer
        (["10.0.0.0/8"], "not-an-ip", False),
    ],
)
def test_policy(allowed: list[str], host: str | None, trusted: bool) -> None:
    assert ProxyPolicy.from_strings(allowed).trusts(host) is trusted
