"""HPACK and header-block rules for the fast HTTP/2 engine (``h2_fast.py``).

* ``BlockDecoder`` wraps ``hpack.Decoder`` with a memo: a header block decoded while the
  dynamic table was in a given state, and that left the table as it was (only indexed fields
  and literals without indexing), decodes to the same list every time the table is in that
  state again. Clients send the same request block over and over once its fields are in the
  table (h2load, browsers for a page's assets), so most blocks cost one dict lookup.
* ``check_request`` / ``check_trailers`` apply RFC 9113 sections 8.2 and 8.3 exactly as the
  reference engine's ``h2.utilities.validate_headers`` does (plus its cookie joining), and
  are memoised with the block.
* ``encode_block`` is a stateless HPACK encoder: static-table indexes where a field or a name
  is in the static table, literals without indexing otherwise, no Huffman. The peer's
  decoder needs no table space from us, so an encoded list never changes and is memoised.
"""

from __future__ import annotations

from collections.abc import Iterable

import hpack
from hpack.table import HeaderTable

#: RFC 9113 error codes raised here.
PROTOCOL_ERROR = 0x1
COMPRESSION_ERROR = 0x9
ENHANCE_YOUR_CALM = 0xB

Headers = list[tuple[bytes, bytes]]


class HeaderBlockError(Exception):
    """A header block the connection must answer with GOAWAY(``code``)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


#: Blocks memoised per connection, and the longest memoised (a request head whose fields are
#: in the table is a few dozen octets; the bound keeps a hostile client's memo small).
_MEMO_SIZE = 128
_MEMO_BLOCK = 2048
REQUEST = 0
TRAILERS = 1
_SKIP = 2
#: A checked request head: (headers with cookie crumbs joined, method, content-length).
RequestCheck = tuple[Headers, bytes, "int | None"]


class BlockDecoder:
    """``hpack.Decoder`` with the memo of the module docstring."""

    __slots__ = ("_decoder", "_gen", "_memo", "_table")

    def __init__(self, max_header_list_size: int) -> None:
        decoder = hpack.Decoder(max_header_list_size=max_header_list_size)
        self._decoder = decoder
        self._table = decoder.header_table
        #: Bumped whenever a decode changed the dynamic table.
        self._gen = 0
        #: (block, kind) -> (generation, checked result)
        self._memo: dict[tuple[bytes, int], tuple[int, object]] = {}

    def request(self, block: bytes) -> RequestCheck:
        """A request head, checked; raises HeaderBlockError."""
        return self._decode(block, REQUEST)  # type: ignore[return-value]

    def trailers(self, block: bytes) -> Headers:
        """Trailers, checked; raises HeaderBlockError."""
        return self._decode(block, TRAILERS)  # type: ignore[return-value]

    def skip(self, block: bytes) -> None:
        """Decode ``block`` only to keep the dynamic table in step (a block for a stream that
        is answered with an error anyway)."""
        self._decode(block, _SKIP)

    def _decode(self, block: bytes, kind: int) -> object:
        key = (block, kind)
        hit = self._memo.get(key)
        if hit is not None and hit[0] == self._gen:
            return hit[1]
        table = self._table
        entries = table.dynamic_entries
        # (hpack adds an entry as a new tuple at the front: a block that changed the table
        # changed its length, its first entry's identity or its size limit.)
        size = len(entries)
        head = entries[0] if entries else None
        limit = table.maxsize
        try:
            headers = self._decoder.decode(block, raw=True)
        except hpack.OversizedHeaderListError as exc:
            raise HeaderBlockError(ENHANCE_YOUR_CALM, f"oversized header list: {exc}") from exc
        except (hpack.HPACKError, IndexError, TypeError, UnicodeDecodeError) as exc:
            raise HeaderBlockError(COMPRESSION_ERROR, f"bad header block: {exc}") from exc
        changed = (
            size != len(entries)
            or head is not (entries[0] if entries else None)
            or limit != table.maxsize
        )
        if changed:
            self._gen += 1
        result: object
        if kind == REQUEST:
            result = check_request(headers)
        elif kind == TRAILERS:
            result = check_trailers(headers)
        else:
            return None
        if not changed and len(block) <= _MEMO_BLOCK:
            memo = self._memo
            if len(memo) >= _MEMO_SIZE:
                memo.clear()
            memo[key] = (self._gen, result)
        return result


_CONNECTION_HEADERS = frozenset(
    (b"connection", b"proxy-connection", b"keep-alive", b"transfer-encoding", b"upgrade")
)
_PSEUDO = frozenset((b":method", b":scheme", b":authority", b":path", b":status", b":protocol"))
_ILLEGAL_NAME = (
    frozenset(range(0x41, 0x5B)) | frozenset(range(0x21)) | frozenset(range(0x7F, 0x100))
)
_ILLEGAL_NAME_BYTES = bytes(sorted(_ILLEGAL_NAME))
_WS = (0x20, 0x09)


def _fail(message: str) -> HeaderBlockError:
    return HeaderBlockError(PROTOCOL_ERROR, message)


def _check_field(name: bytes, value: bytes) -> None:
    if not name:
        raise _fail("empty header name")
    if name.translate(None, _ILLEGAL_NAME_BYTES) != name:
        raise _fail(f"illegal character in header name {name!r}")
    if name.find(b":", 1) != -1:
        raise _fail(f"illegal ':' in header name {name!r}")
    if value:
        if b"\x00" in value or b"\r" in value or b"\n" in value:
            raise _fail(f"illegal character in the value of {name!r}")
        if value[0] in _WS or value[-1] in _WS:
            raise _fail(f"value of {name!r} surrounded by whitespace")


def check_request(headers: Iterable[tuple[bytes, bytes]]) -> RequestCheck:
    """RFC 9113 section 8.2/8.3 for a request head; raises HeaderBlockError(PROTOCOL_ERROR)."""
    seen: set[bytes] = set()
    regular = False
    method = b""
    authority: bytes | None = None
    host: bytes | None = None
    content_length: int | None = None
    cookies: list[bytes] = []
    out: Headers = []
    for header in headers:
        name, value = header[0], header[1]
        _check_field(name, value)
        if name[0] == 0x3A:  # ":"
            if name in seen:
                raise _fail(f"duplicate pseudo-header {name!r}")
            seen.add(name)
            if regular:
                raise _fail(f"pseudo-header {name!r} after a regular field")
            if name not in _PSEUDO:
                raise _fail(f"unknown pseudo-header {name!r}")
            if name == b":method":
                method = value
            elif name == b":authority":
                authority = value
            elif name == b":path" and not value:
                raise _fail("empty :path")
        else:
            regular = True
            if name in _CONNECTION_HEADERS:
                raise _fail(f"connection-specific header {name!r}")
            if name == b"te" and value.lower() != b"trailers":
                raise _fail(f"TE {value!r}")
            if name == b"host":
                if host is not None:
                    raise _fail("several Host headers")
                host = value
            elif name == b"content-length":
                if not value.isdigit():
                    raise _fail(f"content-length {value!r}")
                length = int(value)
                if content_length is not None and length != content_length:
                    raise _fail("conflicting content-length headers")
                content_length = length
            elif name == b"cookie":
                cookies.append(value)
                continue
        out.append(header)
    if b":method" not in seen:
        raise _fail("no :method")
    if b":status" in seen:
        raise _fail("response pseudo-header in a request")
    connect = method == b"CONNECT"
    if connect and b":protocol" not in seen:
        if b":scheme" in seen or b":path" in seen:
            raise _fail("ordinary CONNECT with :scheme or :path")
    elif b":scheme" not in seen or b":path" not in seen:
        raise _fail("no :scheme or :path")
    if b":protocol" in seen and not connect:
        raise _fail(":protocol outside CONNECT")
    if authority is None and host is None:
        raise _fail("neither :authority nor Host")
    if authority is not None and host is not None and authority != host:
        raise _fail("Host differs from :authority")
    if cookies:
        out.append((b"cookie", b"; ".join(cookies)))
    # (A HEAD request's own body is held to its content-length like any other: only the
    # response to a HEAD has none, as in h2.)
    return out, method, content_length


def check_trailers(headers: Iterable[tuple[bytes, bytes]]) -> Headers:
    """RFC 9113 section 8.1 for trailers: no pseudo-headers, the field rules."""
    cookies: list[bytes] = []
    out: Headers = []
    for header in headers:
        name, value = header[0], header[1]
        _check_field(name, value)
        if name[0] == 0x3A:
            raise _fail(f"pseudo-header {name!r} in trailers")
        if name in _CONNECTION_HEADERS:
            raise _fail(f"connection-specific header {name!r}")
        if name == b"te" and value.lower() != b"trailers":
            raise _fail(f"TE {value!r}")
        if name == b"cookie":
            cookies.append(value)
            continue
        out.append(header)
    if cookies:
        out.append((b"cookie", b"; ".join(cookies)))
    return out


# -- encoding ------------------------------------------------------------------------------------

_STATIC_FIELD: dict[tuple[bytes, bytes], int] = {}
_STATIC_NAME: dict[bytes, int] = {}
for _index, (_name, _value) in enumerate(HeaderTable.STATIC_TABLE, start=1):
    _STATIC_FIELD.setdefault((_name, _value), _index)
    _STATIC_NAME.setdefault(_name, _index)


def _integer(value: int, prefix: int, first: int) -> bytes:
    """RFC 7541 section 5.1: ``value`` with a ``prefix``-bit prefix, high bits ``first``."""
    limit = (1 << prefix) - 1
    if value < limit:
        return bytes((first | value,))
    out = bytearray((first | limit,))
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _string(data: bytes) -> bytes:
    return _integer(len(data), 7, 0) + data


def _encode(headers: tuple[tuple[bytes, bytes], ...]) -> bytes:
    parts = []
    for field in headers:
        index = _STATIC_FIELD.get(field)
        if index is not None:
            parts.append(_integer(index, 7, 0x80))
            continue
        name, value = field
        index = _STATIC_NAME.get(name, 0)
        # Literal without indexing (0000xxxx); sensitive fields never indexed (0001xxxx).
        first = 0x10 if name in (b"authorization", b"proxy-authorization", b"set-cookie") else 0
        parts.append(_integer(index, 4, first))
        if not index:
            parts.append(_string(name))
        parts.append(_string(value))
    return b"".join(parts)


_encode_memo: dict[tuple[tuple[bytes, bytes], ...], bytes] = {}


def encode_block(headers: tuple[tuple[bytes, bytes], ...]) -> bytes:
    """The HPACK block for ``headers`` (stateless: see the module docstring)."""
    block = _encode_memo.get(headers)
    if block is None:
        block = _encode(headers)
        if len(_encode_memo) >= 1024:
            _encode_memo.clear()
        _encode_memo[headers] = block
    return block
