"""The PROXY protocol, versions 1 and 2 (HAProxy's spec, ``proxy-protocol.txt``): sans-IO.

A load balancer in front (HAProxy, AWS NLB, nginx ``proxy_protocol``) opens the connection
and, before anything else (before the TLS handshake too), sends one header naming the real
client and the address it connected to. ``ProxyHeaderReader.feed`` takes the bytes as they
come and says how many of them are the header, so the caller hands the rest (or, reading with
``MSG_PEEK``, leaves it in the socket for the TLS handshake) to the connection proper. Nothing
here reads a socket: ``hypercorn/workers/proxy_header.py`` does that once for every backend.

Rules (the spec's, and ours where it leaves room):

* The header must be there: a connection that starts with anything else is closed (the spec
  forbids guessing). Version 1 or 2 is recognised from the first byte.
* Version 1 is one line of at most 107 bytes ending in CRLF; version 2 is a 16-byte block
  followed by the length it declares. A header longer than ``max_size`` (or a version 1 line
  without its CRLF within 107 bytes) is refused as soon as that is known, not buffered.
* ``UNKNOWN`` (v1), ``LOCAL`` (v2, a proxy's own health check), and v2 ``UNSPEC`` or
  ``UNIX`` addresses keep the connection's real addresses (``client`` is None here).
* Version 2 TLVs are checked for framing and kept; none changes what the server does.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from hypercorn.protocols.errors import RemoteProtocolError

__all__ = [
    "MAX_HEADER_SIZE",
    "V1_MAX_SIZE",
    "V2_SIGNATURE",
    "ProxyHeader",
    "ProxyHeaderError",
    "ProxyHeaderReader",
    "ProxyPolicy",
]

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
_V1_PREFIX = b"PROXY "
#: The longest version 1 line, CRLF included (the spec's bound).
V1_MAX_SIZE = 107
#: The largest header accepted by default: version 2's addresses take at most 216 bytes, and
#: the TLVs the common proxies add (AWS NLB's endpoint id, HAProxy's SSL facts) far less than
#: the rest.
MAX_HEADER_SIZE = 4096

_V2_FIXED = 16
_V2_ADDRESS_SIZES = {0x1: 12, 0x2: 36, 0x3: 216}  # INET, INET6, UNIX


class ProxyHeaderError(RemoteProtocolError):
    """The connection did not start with a valid PROXY header (or may not send one); the
    caller closes it without an answer."""


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """What the proxy said. ``client``/``server`` are None when the real connection's
    addresses stand (UNKNOWN, LOCAL, UNSPEC, UNIX)."""

    version: int
    #: The real client, as the ASGI scope's ``client``.
    client: tuple[str, int] | None = None
    #: The address the client connected to (the proxy's), as the scope's ``server``.
    server: tuple[str, int] | None = None
    #: Version 2 type-length-value extensions, in order.
    tlvs: tuple[tuple[int, bytes], ...] = ()


class ProxyHeaderReader:
    """Finds the end of one PROXY header in a byte stream and parses it (see the module).

    ``feed(data)`` takes the bytes that follow those fed before and returns how many of them
    belong to the header; once the header is complete ``header`` is set and ``feed`` returns
    0. Raises ``ProxyHeaderError`` as soon as the bytes cannot be a valid header.
    """

    __slots__ = ("_buffer", "header", "max_size")

    def __init__(self, max_size: int = MAX_HEADER_SIZE) -> None:
        self.max_size = max_size
        self._buffer = b""
        self.header: ProxyHeader | None = None

    def feed(self, data: bytes) -> int:
        if self.header is not None:
            return 0
        seen = len(self._buffer)
        buffer = self._buffer + data
        end = _header_end(buffer, self.max_size)
        if end is None:
            self._buffer = buffer
            return len(data)
        self._buffer = b""
        self.header = _parse_v2(buffer[:end]) if buffer[0] == 0x0D else _parse_v1(buffer[:end])
        return end - seen


def _header_end(buffer: bytes, max_size: int) -> int | None:
    """Where the header in ``buffer`` ends, None if it may still be incomplete."""
    size = len(buffer)
    if buffer[:12] == V2_SIGNATURE[: min(size, 12)]:
        if size < _V2_FIXED:
            return None
        end = _V2_FIXED + int.from_bytes(buffer[14:16], "big")
        if end > max_size:
            raise ProxyHeaderError(f"PROXY v2 header of {end} bytes is over {max_size}")
        return end if size >= end else None
    if buffer[:6] == _V1_PREFIX[: min(size, 6)]:
        crlf = buffer.find(b"\r\n", 0, V1_MAX_SIZE)
        if crlf >= 0:
            return crlf + 2
        if size >= V1_MAX_SIZE:
            raise ProxyHeaderError(f"PROXY v1 line without CRLF in {V1_MAX_SIZE} bytes")
        return None
    raise ProxyHeaderError("the connection did not start with a PROXY header")


def _port(text: str) -> int:
    # Decimal, no sign, no leading zero (so one port has one spelling), at most 65535.
    if not text.isdigit() or (text[0] == "0" and text != "0"):
        raise ProxyHeaderError(f"bad port {text!r} in a PROXY v1 line")
    port = int(text)
    if port > 0xFFFF:
        raise ProxyHeaderError(f"port {port} out of range in a PROXY v1 line")
    return port


def _parse_v1(line: bytes) -> ProxyHeader:
    try:
        text = line[:-2].decode("ascii")
    except UnicodeDecodeError:
        raise ProxyHeaderError("non-ASCII bytes in a PROXY v1 line") from None
    fields = text.split(" ")
    if len(fields) >= 2 and fields[1] == "UNKNOWN":
        return ProxyHeader(version=1)  # (the rest of an UNKNOWN line is ignored, per spec)
    if len(fields) != 6 or fields[1] not in ("TCP4", "TCP6"):
        raise ProxyHeaderError(f"malformed PROXY v1 line {text[:107]!r}")
    kind = ipaddress.IPv4Address if fields[1] == "TCP4" else ipaddress.IPv6Address
    try:
        source, destination = kind(fields[2]), kind(fields[3])
    except ValueError:
        raise ProxyHeaderError(f"bad {fields[1]} address in a PROXY v1 line") from None
    return ProxyHeader(
        version=1,
        client=(str(source), _port(fields[4])),
        server=(str(destination), _port(fields[5])),
    )


def _parse_v2(block: bytes) -> ProxyHeader:
    version, command = block[12] >> 4, block[12] & 0x0F
    family, transport = block[13] >> 4, block[13] & 0x0F
    if version != 2:
        raise ProxyHeaderError(f"PROXY v2 signature with version {version}")
    if command > 1 or family > 3 or transport > 2:
        raise ProxyHeaderError(f"unknown PROXY v2 command/family byte {block[12:14].hex()}")
    body = block[_V2_FIXED:]
    address_size = _V2_ADDRESS_SIZES.get(family, 0)
    if len(body) < address_size:
        raise ProxyHeaderError("PROXY v2 header shorter than its addresses")
    tlvs = _tlvs(body[address_size:])
    if command == 0 or family in (0, 3):  # LOCAL, UNSPEC, UNIX: the real addresses stand
        return ProxyHeader(version=2, tlvs=tlvs)
    half = (address_size - 4) // 2
    kind = ipaddress.IPv4Address if family == 1 else ipaddress.IPv6Address
    ports = address_size - 4
    return ProxyHeader(
        version=2,
        client=(str(kind(body[:half])), int.from_bytes(body[ports : ports + 2], "big")),
        server=(str(kind(body[half:ports])), int.from_bytes(body[ports + 2 : ports + 4], "big")),
        tlvs=tlvs,
    )


def _tlvs(data: bytes) -> tuple[tuple[int, bytes], ...]:
    found = []
    at = 0
    while at < len(data):
        if at + 3 > len(data):
            raise ProxyHeaderError("truncated PROXY v2 TLV")
        end = at + 3 + int.from_bytes(data[at + 1 : at + 3], "big")
        if end > len(data):
            raise ProxyHeaderError("PROXY v2 TLV longer than the header")
        found.append((data[at], data[at + 3 : end]))
        at = end
    return tuple(found)


_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class ProxyPolicy:
    """Who may send a PROXY header, and how long it may take to arrive.

    A connection from anywhere else is closed unread: otherwise any client could name its own
    address. Unix socket peers have no address and are trusted (the socket file's
    permissions say who may connect).
    """

    trusted: tuple[_Network, ...]
    trust_all: bool = False
    #: Seconds from the accept to the end of the header.
    timeout: float = 10.0
    max_size: int = MAX_HEADER_SIZE

    @classmethod
    def from_strings(cls, items: Iterable[str], timeout: float = 10.0) -> ProxyPolicy:
        """``items``: addresses or networks (``10.0.0.0/8``), or ``*`` for any source.
        Raises ``ValueError`` naming the first bad item."""
        networks: list[_Network] = []
        trust_all = False
        for item in items:
            if item.strip() == "*":
                trust_all = True
                continue
            networks.append(ipaddress.ip_network(item.strip(), strict=False))
        return cls(tuple(networks), trust_all, timeout)

    def trusts(self, host: str | None) -> bool:
        """Whether a peer at ``host`` (None: a unix socket) may send the header."""
        if host is None or self.trust_all:
            return True
        try:
            address = ipaddress.ip_address(host.partition("%")[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # (a dual-stack listener reports IPv4 peers so)
        return any(address in network for network in self.trusted)
