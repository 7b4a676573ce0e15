"""The WebSocket opening handshake and permessage-deflate negotiation, sans-IO.

``judge_handshake`` reads a request that asks for a WebSocket (RFC 6455 section 4.2.1 over
HTTP/1.1, RFC 8441 section 4 over HTTP/2) and returns a ``WsHandshake`` or the
``RemoteProtocolError`` to answer with (400, or 426 with ``Sec-WebSocket-Version: 13``).
When the app accepts, ``WsHandshake.accept`` checks its subprotocol and headers and returns
the WebSocket header lines of the response plus the negotiated compression; the wire adds
what its HTTP version needs (``101``, ``Upgrade``, ``Connection`` over HTTP/1.1; ``200``
over HTTP/2).

Compression (RFC 7692): the first ``permessage-deflate`` offer whose parameters are valid
and that zlib can honour is accepted; the others are declined. ``BoundedDeflate`` inflates
with a bound, so a compressed message that grows past ``max_message_size`` fails with 1009
after at most that many bytes, whatever its compression ratio (no decompression bomb).
"""

from __future__ import annotations

import base64
import binascii
import zlib
from collections.abc import Iterable
from typing import TYPE_CHECKING

from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import CloseReason, Opcode, RsvBits
from wsproto.utilities import generate_accept_token

from hypercorn.protocols.errors import AppProtocolError, RemoteProtocolError
from hypercorn.protocols.headers import check_header

if TYPE_CHECKING:
    from wsproto.frame_protocol import FrameDecoder, FrameProtocol

WS_VERSION = b"13"

#: Response headers the handshake owns; an app's ``websocket.accept`` may not set them.
_OWNED = frozenset(
    (
        b"sec-websocket-accept",
        b"sec-websocket-extensions",
        b"sec-websocket-protocol",
        b"upgrade",
        b"connection",
        b"content-length",
        b"transfer-encoding",
    )
)


def _tokens(value: bytes) -> list[bytes]:
    return [token.strip() for token in value.split(b",") if token.strip()]


class WsHandshake:
    """A WebSocket request judged acceptable; ``accept`` builds the answer."""

    __slots__ = ("key", "offers", "subprotocols")

    def __init__(self, key: bytes | None, subprotocols: list[str], offers: list[bytes]) -> None:
        #: ``Sec-WebSocket-Key`` (HTTP/1.1), None over HTTP/2.
        self.key = key
        #: What the client offered in ``Sec-WebSocket-Protocol``, in order (the scope's
        #: ``subprotocols``).
        self.subprotocols = subprotocols
        #: Each offered extension, as sent (``Sec-WebSocket-Extensions`` split on commas).
        self.offers = offers

    def accept(
        self,
        subprotocol: object,
        headers: Iterable[tuple[bytes, bytes]],
        max_message_size: int,
        deflate: bool = True,
    ) -> tuple[list[tuple[bytes, bytes]], BoundedDeflate | None]:
        """(WebSocket response headers, negotiated compression) for the app's accept.

        Raises ``AppProtocolError`` for a subprotocol the client did not offer, a header the
        handshake owns, or an invalid header.
        """
        lines: list[tuple[bytes, bytes]] = []
        if self.key is not None:
            lines.append((b"sec-websocket-accept", generate_accept_token(self.key)))
        if subprotocol is not None:
            if not isinstance(subprotocol, str) or subprotocol not in self.subprotocols:
                raise AppProtocolError(
                    f"subprotocol {subprotocol!r} was not offered by the client "
                    f"(offered: {self.subprotocols})"
                )
            lines.append((b"sec-websocket-protocol", subprotocol.encode("ascii")))
        extension: BoundedDeflate | None = None
        if deflate and self.offers:
            answer, extension = negotiate_deflate(self.offers, max_message_size)
            if answer is not None:
                lines.append((b"sec-websocket-extensions", answer))
        for name, value in headers:
            check_header(name, value)
            if name.lower() in _OWNED:
                raise AppProtocolError(
                    f"websocket.accept may not set the {name.decode('latin-1')!r} header"
                    + (
                        " (use the subprotocol key)"
                        if name.lower() == b"sec-websocket-protocol"
                        else ""
                    )
                )
            lines.append((name, value))
        return lines, extension


def judge_handshake(
    headers: Iterable[tuple[bytes, bytes]], http2: bool
) -> WsHandshake | RemoteProtocolError:
    """Check a request that asks for a WebSocket (the caller checked the method and the
    Upgrade / ``:protocol``). Header names are compared case-insensitively."""
    key: bytes | None = None
    keys = 0
    version: bytes | None = None
    subprotocols: list[str] = []
    offers: list[bytes] = []
    for name, value in headers:
        lname = name.lower()
        if lname == b"sec-websocket-key":
            key = value.strip()
            keys += 1
        elif lname == b"sec-websocket-version":
            version = value.strip()
        elif lname == b"sec-websocket-protocol":
            if not value.isascii():
                return RemoteProtocolError("non-ASCII Sec-WebSocket-Protocol")
            subprotocols.extend(token.decode("ascii") for token in _tokens(value))
        elif lname == b"sec-websocket-extensions":
            offers.extend(_tokens(value))
    if version != WS_VERSION:
        # RFC 6455 4.2.2: answer 426 with the versions we speak.
        return RemoteProtocolError(
            f"unsupported Sec-WebSocket-Version {version!r}", status_hint=426
        )
    if not http2:
        if keys != 1 or key is None:
            return RemoteProtocolError("missing or repeated Sec-WebSocket-Key")
        try:
            raw = base64.b64decode(key, validate=True)
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) != 16:
            return RemoteProtocolError("invalid Sec-WebSocket-Key")
    else:
        key = None
    return WsHandshake(key, subprotocols, offers)


# -- permessage-deflate --------------------------------------------------------------------

_NO_VALUE = object()


def _parse_offer(offer: bytes) -> tuple[str, dict[str, object]] | None:
    """(extension name, parameters) of one offer; None when malformed (duplicates too)."""
    try:
        text = offer.decode("ascii")
    except UnicodeDecodeError:
        return None
    name, *params = (part.strip() for part in text.split(";"))
    parsed: dict[str, object] = {}
    for param in params:
        if not param:
            return None
        pname, sep, pvalue = param.partition("=")
        pname = pname.strip().lower()
        if pname in parsed:
            return None
        parsed[pname] = pvalue.strip().strip('"') if sep else _NO_VALUE
    return name.lower(), parsed


def _window_bits(value: object) -> int | None:
    if not isinstance(value, str) or not value.isdigit() or value[:1] == "0":
        return None
    bits = int(value)
    # RFC 7692 allows 8, which zlib cannot do for raw deflate streams: such offers are
    # declined (server side) or answered with our own 15 (client side, where it is a hint).
    return bits if 9 <= bits <= 15 else None


def negotiate_deflate(
    offers: Iterable[bytes], max_message_size: int
) -> tuple[bytes | None, BoundedDeflate | None]:
    """The ``Sec-WebSocket-Extensions`` answer and the extension for the first acceptable
    ``permessage-deflate`` offer (RFC 7692 section 7.1), or ``(None, None)``."""
    for offer in offers:
        parsed = _parse_offer(offer)
        if parsed is None or parsed[0] != "permessage-deflate":
            continue
        params = parsed[1]
        answer = ["permessage-deflate"]
        server_no_context = client_no_context = False
        server_bits: int | None = None
        acceptable = True
        for pname, pvalue in params.items():
            if pname == "server_no_context_takeover" and pvalue is _NO_VALUE:
                server_no_context = True
                answer.append(pname)
            elif pname == "client_no_context_takeover" and pvalue is _NO_VALUE:
                client_no_context = True
                answer.append(pname)
            elif pname == "server_max_window_bits":
                server_bits = _window_bits(pvalue)
                if server_bits is None:
                    acceptable = False
                    break
                answer.append(f"server_max_window_bits={server_bits}")
            elif pname == "client_max_window_bits":
                # A hint that the client can limit its window: we inflate with the largest
                # window, which reads any smaller one, so nothing needs saying.
                if pvalue is not _NO_VALUE and _window_bits(pvalue) is None:
                    acceptable = False
                    break
            else:
                acceptable = False
                break
        if not acceptable:
            continue
        extension = BoundedDeflate(
            max_message_size=max_message_size,
            client_no_context_takeover=client_no_context,
            server_no_context_takeover=server_no_context,
            server_max_window_bits=server_bits,
        )
        return "; ".join(answer).encode("ascii"), extension
    return None, None


class BoundedDeflate(PerMessageDeflate):
    """wsproto's permessage-deflate, already negotiated, inflating with a bound: a message
    that inflates past ``max_message_size`` fails with 1009 (MESSAGE_TOO_BIG) after at most
    ``max_message_size + 1`` bytes of output, whatever the compression ratio."""

    def __init__(
        self,
        *,
        max_message_size: int,
        client_no_context_takeover: bool = False,
        server_no_context_takeover: bool = False,
        server_max_window_bits: int | None = None,
    ) -> None:
        super().__init__(
            client_no_context_takeover=client_no_context_takeover,
            server_no_context_takeover=server_no_context_takeover,
            server_max_window_bits=server_max_window_bits,
        )
        self._enabled = True
        self._limit = max_message_size
        #: Bytes inflated so far for the message being received.
        self._inflated = 0

    def frame_inbound_header(
        self,
        proto: FrameDecoder | FrameProtocol,
        opcode: Opcode,
        rsv: RsvBits,
        payload_length: int,
    ) -> CloseReason | RsvBits:
        if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
            self._inflated = 0
        return super().frame_inbound_header(proto, opcode, rsv, payload_length)

    def _inflate(self, data: bytes) -> bytes | CloseReason:
        decompressor = self._decompressor
        assert decompressor is not None
        room = self._limit - self._inflated
        try:
            # At most room + 1 bytes: one more than allowed proves the message too big.
            out = decompressor.decompress(data, room + 1)
        except zlib.error:
            return CloseReason.INVALID_FRAME_PAYLOAD_DATA
        self._inflated += len(out)
        if self._inflated > self._limit:
            return CloseReason.MESSAGE_TOO_BIG
        return out

    def frame_inbound_payload_data(
        self, proto: FrameDecoder | FrameProtocol, data: bytes
    ) -> bytes | CloseReason:
        if not self._inbound_compressed or not self._inbound_is_compressible:
            return data
        return self._inflate(bytes(data))

    def frame_inbound_complete(
        self, proto: FrameDecoder | FrameProtocol, fin: bool
    ) -> bytes | CloseReason | None:
        if not fin or not self._inbound_is_compressible or not self._inbound_compressed:
            return super().frame_inbound_complete(proto, fin)
        out = self._inflate(b"\x00\x00\xff\xff")
        if isinstance(out, CloseReason):
            return out
        if self.client_no_context_takeover:
            self._decompressor = None
        self._inbound_compressed = None
        return out
