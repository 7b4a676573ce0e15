"""The strict HTTP/1.1 front door: one request framing for every HTTP/1.1 parser we ship.

Why
---
h11 alone does not stop request smuggling (it serves Content-Length + Transfer-Encoding, a
bare LF inside a value becomes a second header, control bytes reach the app, its 16 KiB
head limit depends on TCP segmentation, and it has no header-count limit). Rather than
patch each parser, every byte of a request passes this module first: it delimits each
message itself, validates its head against RFC 9112, decides the body framing from the
validated headers, de-chunks the body with a strict scanner, and holds back pipelined
bytes until the current message is done. The pluggable *head parser* (h11 or httptools)
only ever sees one complete head that the door has already approved, so the two parser
stacks cannot disagree on where a message ends, and neither sees a smuggled byte.

Theory of operation
-------------------
``StrictH1Parser`` implements ``H1Parser`` (see ``parser.py``) as a state machine over one
receive buffer::

    HEAD ─► (no body) ─────────────────────────► END ─► DONE ─(start_next_cycle)─► HEAD
      │                                           ▲
      ├─► BODY (Content-Length: n) ───────────────┤
      └─► CHUNK_SIZE ─► CHUNK_DATA ─► CHUNK_END ──┤ (size 0) ─► TRAILERS
               ▲                         │        │
               └─────────────────────────┘        └─ CLOSED (EOF between requests)

Rule 2 - nothing unapproved goes further. The head parser gets exactly one approved head.
Body bytes are released only inside the framing the door computed, chunk framing is checked
before the data it frames, and bytes after the current message stay in the buffer
(``PAUSED``) until ``start_next_cycle``.

The verdicts (Rule 1, split invariance, and Rule 3, the one-regex fast path) and the rules
themselves (RFC 9112, at least as strict as gunicorn and llhttp) are in ``judge.py``.
"""

from __future__ import annotations

import re
from enum import Enum
from typing import TYPE_CHECKING, Any, Protocol

from hypercorn.protocols.errors import RemoteProtocolError
from hypercorn.protocols.http1.fieldlines import FRAMED, split_head
from hypercorn.protocols.http1.judge import (
    CHUNK_LINE_RE,
    CHUNKED,
    earliest_violation,
    fast_length,
    fast_match,
    judge_trailers,
    judge_with_version,
    reject,
)
from hypercorn.protocols.http1.parser import (
    CLOSED,
    END_OF_MESSAGE,
    NEED_DATA,
    PAUSED,
    ParserEvent,
    RequestHead,
    analyse_headers,
)
from hypercorn.protocols.limits import ProtocolLimits

if TYPE_CHECKING:
    from typing import TypeAlias

__all__ = ["DEFAULT_MAX_CHUNK_LINE", "HeadParser", "StrictH1Parser", "known_heads_for"]

#: Longest chunk-size line (size plus extensions, without CRLF) accepted by default.
DEFAULT_MAX_CHUNK_LINE = 4096


class HeadParser(Protocol):
    """Tokenises one complete head that the door approved.

    ``head`` is the request line through the terminating empty line (CRLF CRLF included),
    already validated, so an implementation only splits it into the method, the target and
    the fields (names lowercased, values without surrounding OWS, in wire order).
    ``has_body`` is the framing the door decided (a tokeniser that keeps state across heads,
    like llhttp, needs it). The door computes the version and the ``RequestHead`` facts
    itself, once for both stacks. It may raise ``RemoteProtocolError`` (which then kills the
    connection's parser like any other).
    """

    def parse_head(
        self, head: bytes, has_body: bool
    ) -> tuple[bytes, bytes, list[tuple[bytes, bytes]]]: ...


#: A Connection or Expect field line in an approved head (the fields that, with no body,
#: decide keep-alive, 100-continue and upgrades).
_CONNECTION_OR_EXPECT = re.compile(rb"\n(?i:connection|expect):").search


# -- the parser -------------------------------------------------------------------------------


class DoorState(Enum):
    HEAD = "head"
    BODY = "body"  # Content-Length body
    CHUNK_SIZE = "chunk-size"
    CHUNK_DATA = "chunk-data"
    CHUNK_END = "chunk-end"  # the CRLF after chunk data
    TRAILERS = "trailers"
    END = "end"  # the message is complete; END_OF_MESSAGE not yet reported
    DONE = "done"  # END_OF_MESSAGE reported; waiting for start_next_cycle
    CLOSED = "closed"  # EOF between requests
    DEAD = "dead"  # an error was raised; it is raised again


_HEAD = DoorState.HEAD
_BODY = DoorState.BODY
_CHUNK_SIZE = DoorState.CHUNK_SIZE
_CHUNK_DATA = DoorState.CHUNK_DATA
_CHUNK_END = DoorState.CHUNK_END
_TRAILERS = DoorState.TRAILERS
_END = DoorState.END
_DONE = DoorState.DONE
_CLOSED = DoorState.CLOSED
_DEAD = DoorState.DEAD
_CR_LF = (0x0D, 0x0A)
_new_tuple = tuple.__new__

#: Heads ``take_head`` accepted, by their exact bytes: (method, target, version, headers as
#: a tuple, the other RequestHead fields). Clients repeat their heads on a kept-alive
#: connection (health checks and API clients across connections too), and judging plus
#: tokenising is most of the parsing cost. One memo per limits object and tokeniser (the
#: verdict depends on both), looked up once per connection; each is cleared when full, and
#: heads over _KNOWN_HEAD_MAX bytes are not kept.
_KnownHeads: TypeAlias = "dict[bytes, tuple[Any, ...]]"
_known_heads: dict[tuple[int, type], tuple[ProtocolLimits, _KnownHeads]] = {}
_KNOWN_HEADS_SIZE = 256
_KNOWN_HEAD_MAX = 2048
#: After this many new heads in a row, a connection stores one new head in this many.
_KNOWN_HEAD_RETRY = 8
#: Memos kept at once (a worker has one limits object; tests make many).
_KNOWN_HEAD_MEMOS = 16


def known_heads_for(limits: ProtocolLimits, head_parser: HeadParser) -> _KnownHeads:
    key = (id(limits), type(head_parser))
    entry = _known_heads.get(key)
    if entry is None:
        if len(_known_heads) >= _KNOWN_HEAD_MEMOS:
            _known_heads.clear()
        # The entry holds ``limits``, so its id cannot be reused by another object meanwhile.
        entry = _known_heads[key] = (limits, {})
    return entry[1]


class StrictH1Parser:
    """An ``H1Parser`` that frames every message itself and tokenises heads with a
    ``HeadParser`` (h11 or httptools). See the module docstring."""

    __slots__ = (
        "_buf",
        "_crlfs",
        "_dead",
        "_eof",
        "_head_parser",
        "_known",
        "_limits",
        "_max_chunk_line",
        "_misses",
        "_remaining",
        "_scanned",
        "_state",
    )

    def __init__(
        self,
        head_parser: HeadParser,
        limits: ProtocolLimits,
        known: _KnownHeads | None = None,
        *,
        max_chunk_line: int = DEFAULT_MAX_CHUNK_LINE,
    ) -> None:
        self._head_parser = head_parser
        self._limits = limits
        self._known = known if known is not None else known_heads_for(limits, head_parser)
        self._max_chunk_line = max_chunk_line
        self._buf: bytes | bytearray = b""
        self._eof = False
        self._state = _HEAD
        self._dead: RemoteProtocolError | None = None
        #: Body bytes still expected in the current Content-Length body or chunk.
        self._remaining = 0
        #: How much of an unterminated head (or trailer section) was already checked, and
        #: how many CRLFs it held (Rule 1 checks on the accumulated buffer stay linear).
        self._scanned = 0
        self._crlfs = 0
        #: New heads in a row on this connection (the memo of heads missed).
        self._misses = 0

    # -- H1Parser ---------------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        if self._eof:
            return
        if not data:
            self._eof = True
            return
        buf = self._buf
        if not buf:
            self._buf = data
        elif type(buf) is bytes:
            self._buf = bytearray(buf) + data
        else:
            buf += data

    def next_event(self) -> ParserEvent:
        state = self._state
        try:
            if state is _HEAD:
                return self._head()
            if state is _END:
                self._state = _DONE
                return END_OF_MESSAGE
            if state is _DONE:
                if self._buf:
                    return PAUSED
                return CLOSED if self._eof else NEED_DATA
            if state is _BODY:
                return self._body()
            if state is _CLOSED:
                return CLOSED
            if state is _DEAD:
                dead = self._dead
                assert dead is not None
                raise dead
            return self._chunked()
        except RemoteProtocolError as exc:
            self._dead = exc
            self._state = _DEAD
            raise

    def start_next_cycle(self) -> bool:
        if self._state is _DONE:
            self._state = _HEAD
            self._scanned = self._crlfs = 0
        return bool(self._buf) or self._eof

    @property
    def trailing_data(self) -> tuple[bytes, bool]:
        return bytes(self._buf), self._eof

    # -- the state machine ------------------------------------------------------------------

    def _take(self, size: int) -> bytes:
        buf = self._buf
        if size == len(buf):
            self._buf = b""
            return buf if type(buf) is bytes else bytes(buf)
        chunk = buf[:size]
        self._buf = buf[size:]
        return chunk if type(chunk) is bytes else bytes(chunk)

    def _head(self) -> ParserEvent:
        buf = self._buf
        scanned = self._scanned
        if not buf or (scanned == 0 and buf[0] in _CR_LF):
            if buf:
                buf = self._skip_empty_lines()
            if not buf or buf == b"\r":  # nothing, or the start of an empty line
                if not self._eof:
                    return NEED_DATA
                if buf:
                    raise reject("connection closed inside a request head")
                self._state = _CLOSED
                return CLOSED
        end = buf.find(b"\r\n\r\n", scanned - 3 if scanned > 3 else 0) + 4
        if end == 3:
            self._check_unterminated(buf, request_line=True)
            if self._eof:
                raise reject("connection closed inside a request head")
            return NEED_DATA
        if end == len(buf) and type(buf) is bytes:
            head = buf
            self._buf = b""
        else:
            head = self._take(end)
        length, version = judge_with_version(head, self._limits)
        return self._make_head(head, length, version, _END)

    def take_head(self, data: bytes) -> RequestHead | None:
        """The connection's fast path, for ``data`` that arrived between requests with
        nothing buffered: when it is exactly one whole head of a request without a body, the
        request, already complete (no END_OF_MESSAGE follows, as if it had been reported).
        Otherwise None, with nothing consumed: the caller feeds ``data`` as usual, and any
        error is found (and reported) there."""
        if self._state is not _HEAD or self._buf or self._eof:
            return None
        known = self._known.get(data)
        if known is not None:
            # Judged and tokenised before, under the same limits: the verdict is the same.
            self._state = _DONE
            self._misses = 0
            method, target, version, fields, facts = known
            # The app gets this list in its scope and may change it: a new one each time.
            return _new_tuple(RequestHead, (method, target, version, list(fields), *facts))
        # A new head: judged and tokenised line by line, most lines from the memo of lines.
        head = split_head(data, self._limits)
        if type(head) is RequestHead:
            self._state = _DONE
        elif head is FRAMED:
            return None  # a Content-Length or Transfer-Encoding: the general path's
        else:
            # Only the fast judgement, a full match (so ``data`` is exactly one head):
            # anything else (a Content-Length, a slow head, an error, more or less than one
            # head) is left to the general path, which judges it the same way.
            match = fast_match(data, self._limits)
            if match is None:
                return None
            if match.lastindex == 1:  # no Content-Length, Connection or Expect field
                head = self._make_head(data, 0, match[1], _DONE, plain=True)
            elif fast_length(match) is not None:
                return None
            else:
                head = self._make_head(data, 0, match[1], _DONE)
        # A connection whose heads keep being new (behind a proxy: paths, cookies) keeps
        # only one in _KNOWN_HEAD_RETRY: storing each costs about 2.5k instructions.
        misses = self._misses = self._misses + 1
        if len(data) <= _KNOWN_HEAD_MAX and (
            misses <= _KNOWN_HEAD_RETRY or not misses % _KNOWN_HEAD_RETRY
        ):
            known_heads = self._known
            if len(known_heads) >= _KNOWN_HEADS_SIZE:
                known_heads.clear()
            known_heads[data] = (*head[:3], tuple(head.headers), head[4:])
        return head

    def _make_head(
        self, head: bytes, length: int, version: bytes, end_state: DoorState, plain: bool = False
    ) -> RequestHead:
        """Tokenise an approved head and move to its body (or to ``end_state``). ``plain``:
        the judgement found no Content-Length, Connection or Expect field."""
        method, target, headers = self._head_parser.parse_head(head, length != 0)
        if length == 0:
            self._state = end_state
        elif length == CHUNKED:
            self._state = _CHUNK_SIZE
            headers = _lowercase_codings(headers)
        else:
            self._state = _BODY
            self._remaining = length
        if plain or (length == 0 and _CONNECTION_OR_EXPECT(head) is None):
            # None of the fields that change these facts (one C-level search of the head).
            keep_alive, expect_continue, has_body, upgrade = version == b"1.1", False, False, None
        else:
            # On the lowercased names, before they may get their wire case back.
            keep_alive, expect_continue, has_body, upgrade = analyse_headers(version, headers)
        if self._limits.pass_raw_headers:
            headers = _with_wire_case(head, headers)
        # tuple.__new__ skips RequestHead.__new__'s Python frame (this is once per request).
        return _new_tuple(
            RequestHead,
            (method, target, version, headers, keep_alive, expect_continue, has_body, upgrade),
        )

    def _skip_empty_lines(self) -> bytes | bytearray:
        """Drop CRLFs before a request line (RFC 9112 §2.2); a final lone CR is kept."""
        buf = self._buf
        skipped = len(buf) - len(buf.lstrip(b"\r\n"))
        pairs = skipped // 2
        if buf[: 2 * pairs] != b"\r\n" * pairs or (
            skipped % 2 and (skipped < len(buf) or buf[skipped - 1 : skipped] != b"\r")
        ):
            raise reject("bare LF or CR before the request line")
        if pairs:
            buf = self._buf = buf[2 * pairs :]
        return buf

    def _check_unterminated(self, buf: bytes | bytearray, *, request_line: bool) -> None:
        """Rule 1 on a block whose end has not arrived yet, looking at the new bytes only."""
        limits = self._limits
        size = len(buf)
        scanned = self._scanned
        since = scanned - 1 if scanned else 0
        new_crlfs = buf.count(b"\r\n", since)
        crlfs = self._crlfs = self._crlfs + new_crlfs
        self._scanned = size
        max_line = limits.max_request_line_size
        if (
            buf.count(b"\n", scanned) != new_crlfs  # an LF without its CR
            or buf.count(b"\r", since, size - 1) != new_crlfs  # a CR followed by something else
            or size >= limits.max_incomplete_size
            or crlfs >= limits.max_header_count + (2 if request_line else 1)
            or (
                request_line
                and size >= max_line + 2
                and (crlfs == 0 or buf.find(b"\r\n") > max_line)
            )
        ):
            violation = earliest_violation(
                buf, complete=False, limits=limits, request_line=request_line
            )
            if violation is not None:
                raise violation

    def _body(self) -> ParserEvent:
        buf = self._buf
        if not buf:
            if self._eof:
                raise reject("connection closed inside a request body")
            return NEED_DATA
        remaining = self._remaining
        if len(buf) < remaining:
            self._remaining = remaining - len(buf)
            return self._take(len(buf))
        self._state = _END
        return self._take(remaining)

    def _chunked(self) -> ParserEvent:
        while True:
            state = self._state
            buf = self._buf
            if state is _CHUNK_DATA:
                if not buf:
                    break
                remaining = self._remaining
                if len(buf) < remaining:
                    self._remaining = remaining - len(buf)
                    return self._take(len(buf))
                self._state = _CHUNK_END
                return self._take(remaining)
            if state is _CHUNK_SIZE:
                end = buf.find(b"\r\n", 0, self._max_chunk_line + 2)
                if end == -1:
                    if len(buf) >= self._max_chunk_line + 2:
                        raise reject("chunk size line too long")
                    break
                match = CHUNK_LINE_RE.fullmatch(buf, 0, end)
                if match is None:
                    raise reject("invalid chunk size line")
                size = int(match[1], 16)
                self._take(end + 2)
                if size:
                    self._state = _CHUNK_DATA
                    self._remaining = size
                else:
                    self._state = _TRAILERS
                    self._scanned = self._crlfs = 0
            elif state is _CHUNK_END:
                if len(buf) < 2:
                    if buf[:1] not in (b"", b"\r"):
                        raise reject("chunk data not followed by CRLF")
                    break
                if buf[:2] != b"\r\n":
                    raise reject("chunk data not followed by CRLF")
                self._take(2)
                self._state = _CHUNK_SIZE
            else:  # _TRAILERS
                if buf[:2] == b"\r\n":
                    self._take(2)
                    self._state = _DONE
                    return END_OF_MESSAGE
                if buf[:1] == b"\n" or (buf[:1] == b"\r" and len(buf) > 1):
                    raise reject("bare LF or CR in trailer section")
                end = buf.find(b"\r\n\r\n", self._scanned - 3 if self._scanned > 3 else 0)
                if end == -1:
                    self._check_unterminated(buf, request_line=False)
                    break
                judge_trailers(self._take(end + 4), self._limits)
                self._state = _DONE
                return END_OF_MESSAGE
        if self._eof:
            raise reject("connection closed inside a chunked request body")
        return NEED_DATA


def _with_wire_case(head: bytes, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The same headers with names as the client wrote them (``h11_pass_raw_headers``).

    The head parsers lowercase names for framing decisions, which are already made here, so
    only the names handed on change. The door approved one field per line, in order.
    """
    lines = head[head.index(b"\r\n") + 2 : -4].split(b"\r\n")
    return [
        (line[: line.index(b":")], value) for line, (_, value) in zip(lines, headers, strict=True)
    ]


def _lowercase_codings(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """Transfer codings are case-insensitive; hand them on lowercased whatever the parser."""
    return [
        (name, value.lower()) if name == b"transfer-encoding" else (name, value)
        for name, value in headers
    ]
