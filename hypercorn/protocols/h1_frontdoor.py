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
``StrictH1Parser`` implements ``H1Parser`` (see ``h1_parser.py``) as a state machine over one
receive buffer::

    HEAD ─► (no body) ─────────────────────────► END ─► DONE ─(start_next_cycle)─► HEAD
      │                                           ▲
      ├─► BODY (Content-Length: n) ───────────────┤
      └─► CHUNK_SIZE ─► CHUNK_DATA ─► CHUNK_END ──┤ (size 0) ─► TRAILERS
               ▲                         │        │
               └─────────────────────────┘        └─ CLOSED (EOF between requests)

Rule 1 - split invariance. The verdict on a byte stream (which request is served, which
status a bad one gets) never depends on how TCP cut it into segments. Each violation has a
*position*: the stream length at which it becomes certain (a request line over the limit at
``max_request_line_size + 2``, a head over ``max_incomplete_size`` at that size, header
line number ``max_header_count + 1`` at its CRLF, a bare LF just after it, a bare CR one
byte after it, any other syntax error at the end of the head). Limits are checked on the
accumulated buffer before a head terminator is found, and whatever finds a violation
reports the one with the smallest position, so a 60 KB head in one write gets the same 431
as the same head trickled byte by byte.

Rule 2 - nothing unapproved goes further. The head parser gets exactly one approved head.
Body bytes are released only inside the framing the door computed, chunk framing is checked
before the data it frames, and bytes after the current message stay in the buffer
(``PAUSED``) until ``start_next_cycle``.

Rule 3 - the common case is cheap. A complete head is found with one ``bytes.find`` and
validated with one precompiled regex (``_FAST_HEAD``) that also requires exactly one Host,
allows at most one Content-Length and no Transfer-Encoding, and captures the length.
Everything else (chunked uploads, HTTP/1.0 without Host, absolute-form targets, and every
error) takes ``judge_head_slowly``, which is the reference: for every head the fast path
accepts, the slow path accepts it with the same framing (tests assert this on the corpus).

The rules (RFC 9112, and at least as strict as gunicorn and llhttp)
--------------------------------------------------------------------
* request line: ``token SP target SP HTTP/1.0|HTTP/1.1`` with single spaces; the target is
  visible ASCII (no obs-text, no whitespace or controls). Another ``HTTP/d.d`` is 505,
  anything else 400. Over ``max_request_line_size`` bytes: 414.
* target forms: origin-form (``/...``) and absolute-form (``scheme://...``); ``*`` only for
  ``OPTIONS``; ``CONNECT`` (authority-form) is refused with **400** - we are an origin
  server, and 405 would oblige an ``Allow`` header the error path does not send.
* field lines: ``token ":" OWS value OWS``; no whitespace before the colon, no obs-fold, no
  CR, LF, NUL or other controls in values except HTAB (obs-text 0x80-0xFF is allowed).
  Lines end with CRLF only (a bare LF or bare CR is 400). Leading empty lines before the
  request line are skipped (RFC 9112 §2.2).
* head bytes (request line through the empty line) over ``max_incomplete_size``, or more
  than ``max_header_count`` field lines: 431.
* Host: exactly one on HTTP/1.1, at most one on HTTP/1.0, with a valid ``uri-host [":"
  port]`` value; otherwise 400.
* Content-Length: ``1*DIGIT`` (at most 18 digits), exactly one field line. Duplicates are
  rejected even when identical (llhttp's and gunicorn's behaviour), as is ``5, 5``.
* Transfer-Encoding: only on HTTP/1.1 (otherwise 400), never with Content-Length (400);
  the codings (all its field lines, comma-joined, case-insensitive) must end in exactly one
  ``chunked`` (otherwise 400); other codings before it are 501 (we decode none).
* chunked body: ``1*16HEXDIG *(";" token ["=" (token / quoted-string)]) CRLF`` with no
  whitespace, sign or ``0x``; the size line is at most ``max_chunk_line`` bytes; chunk data
  must be followed by CRLF; trailer fields follow the header rules and limits (431/400) and
  are validated but not delivered (the ``H1Parser`` contract has no trailers).
* EOF inside a head or a body: 400 (the caller knows the peer is gone).
"""

from __future__ import annotations

import re
from enum import Enum
from typing import TYPE_CHECKING, Any, Protocol

from hypercorn.protocols.errors import RemoteProtocolError
from hypercorn.protocols.h1_parser import (
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

__all__ = [
    "CHUNKED",
    "DEFAULT_MAX_CHUNK_LINE",
    "HeadParser",
    "StrictH1Parser",
    "earliest_violation",
    "judge_head",
    "judge_head_slowly",
]

#: ``judge_head`` result for a chunked body; any other result is the Content-Length.
CHUNKED = -1
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


# -- grammar ----------------------------------------------------------------------------------
# These patterns judge untrusted bytes, so each is written to match in linear time with plain
# greedy quantifiers (CPython 3.10 has no possessive ones): every repeated class is followed by
# a delimiter the class cannot contain (a token by ":", a value by CR, a chunk extension's
# token by ";" or "="), so backtracking into a repeat fails at once, and no two adjacent
# repeats can share a byte (optional whitespace is followed by something that cannot start
# with a space or a tab). Each therefore matches exactly where its possessive form would.

_TCHAR = rb"!#$%&'*+\-.^_`|~0-9A-Za-z"
_TOKEN = rb"[" + _TCHAR + rb"]+"
_VALUE = rb"[\t\x20-\x7e\x80-\xff]*"
#: A value after its leading OWS: empty, or starting with a byte that is not OWS.
_TRIMMED_VALUE = rb"(?:[\x21-\x7e\x80-\xff][\t\x20-\x7e\x80-\xff]*)?"
_FIELD_LINE = _TOKEN + rb":" + _VALUE + rb"\r\n"
_HOST_VALUE = rb"(?:\[[0-9A-Za-z\-._~!$&'()*+,;=:%]+\]|[0-9A-Za-z\-._~!$&'()*+,;=%]*)(?::[0-9]*)?"
#: The same language without the empty value, so OWS on either side cannot meet.
_NONEMPTY_HOST_VALUE = (
    rb"(?:(?:\[[0-9A-Za-z\-._~!$&'()*+,;=:%]+\]|[0-9A-Za-z\-._~!$&'()*+,;=%]+)(?::[0-9]*)?"
    rb"|:[0-9]*)"
)
_PLAIN_LINE = rb"(?!(?i:host|content-length|transfer-encoding):)" + _FIELD_LINE
_HOST_LINE = rb"(?i:host):[ \t]*(?:" + _NONEMPTY_HOST_VALUE + rb"[ \t]*)?\r\n"
_CL_LINE = rb"(?i:content-length):[ \t]*([0-9]{1,18})[ \t]*\r\n"

# The fast path: origin-form (or OPTIONS *), HTTP/1.0 or 1.1, exactly one Host, at most one
# Content-Length (captured in group 2 or 3), no Transfer-Encoding. Group 1 is the version
# (b"1.0" or b"1.1"), whose end is also the length of the request line. A plain line cannot
# be a Host or Content-Length line, so at each line one branch at most can go on.
_FAST_HEAD = re.compile(
    rb"(?:OPTIONS \* |(?!CONNECT )" + _TOKEN + rb" /[\x21-\x7e]* )HTTP/(1\.[01])\r\n"
    rb"(?:" + _PLAIN_LINE + rb")*"
    rb"(?:" + _HOST_LINE + rb"(?:" + _PLAIN_LINE + rb")*"
    rb"(?:" + _CL_LINE + rb"(?:" + _PLAIN_LINE + rb")*)?"
    rb"|" + _CL_LINE + rb"(?:" + _PLAIN_LINE + rb")*" + _HOST_LINE + rb"(?:" + _PLAIN_LINE + rb")*"
    rb")\r\n"
)

_TOKEN_RE = re.compile(_TOKEN)
_TARGET_RE = re.compile(rb"[\x21-\x7e]+")
_ABSOLUTE_FORM_RE = re.compile(rb"[A-Za-z][A-Za-z0-9+.\-]*://[\x21-\x7e]*")
_VERSION_RE = re.compile(rb"HTTP/[0-9]\.[0-9]")
_FIELD_RE = re.compile(rb"(" + _TOKEN + rb"):[ \t]*(" + _TRIMMED_VALUE + rb")")
_VALUE_RE = re.compile(_VALUE)
_HOST_VALUE_RE = re.compile(_HOST_VALUE)
_DIGITS_RE = re.compile(rb"[0-9]{1,18}")
_TRAILERS_RE = re.compile(rb"(?:" + _FIELD_LINE + rb")*\r\n")
# qdtext excludes DQUOTE and backslash, so a quoted string has one way to match.
_CHUNK_LINE_RE = re.compile(
    rb"([0-9A-Fa-f]{1,16})"
    rb"(?:;" + _TOKEN + rb"(?:=(?:" + _TOKEN + rb'|"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]'
    rb'|\\[\t \x21-\x7e\x80-\xff])*"))?)*'
)
_OWS = b" \t"
#: A Connection or Expect field line in an approved head (the fields that, with no body,
#: decide keep-alive, 100-continue and upgrades).
_CONNECTION_OR_EXPECT = re.compile(rb"\n(?i:connection|expect):").search


def _reject(reason: str, status: int = 400) -> RemoteProtocolError:
    return RemoteProtocolError(reason, status_hint=status)


# -- judging a head ---------------------------------------------------------------------------


def earliest_violation(
    buf: bytes | bytearray,
    *,
    complete: bool,
    limits: ProtocolLimits,
    request_line: bool = True,
) -> RemoteProtocolError | None:
    """The violation certain within ``buf`` with the smallest position (Rule 1), or None.

    ``buf`` is a whole block (``complete``: it ends with its empty line) or an unterminated
    prefix of one; the block is a request head (``request_line``) or a trailer section.
    Only limits and line endings are judged here; other syntax is judged at the end of the
    block by ``judge_head_slowly``, so its position is the block's length.
    """
    found: list[tuple[int, int, str]] = []
    size = len(buf)
    if request_line:
        max_line = limits.max_request_line_size
        line_end = buf.find(b"\r\n")
        if line_end > max_line or (line_end == -1 and size >= max_line + 2):
            found.append((max_line + 2, 414, "request line too long"))
    max_size = limits.max_incomplete_size
    if size > max_size or (not complete and size == max_size):
        what = "request head" if request_line else "trailer section"
        found.append((max_size, 431, f"{what} larger than {max_size} bytes"))
    # The CRLF that ends field line number max_header_count + 1.
    nth = limits.max_header_count + (2 if request_line else 1)
    position = -2
    for _ in range(nth):
        position = buf.find(b"\r\n", position + 2)
        if position == -1:
            break
    else:
        if not complete or position < size - 2:  # not the terminating empty line
            found.append((position + 2, 431, f"more than {limits.max_header_count} fields"))
    lf = buf.find(b"\n")
    while lf != -1:
        if lf == 0 or buf[lf - 1] != 0x0D:
            found.append((lf + 1, 400, "bare LF in request"))
            break
        lf = buf.find(b"\n", lf + 1)
    cr = buf.find(b"\r")
    while cr != -1 and cr + 1 < size:
        if buf[cr + 1] != 0x0A:
            found.append((cr + 2, 400, "bare CR in request"))
            break
        cr = buf.find(b"\r", cr + 1)
    if not found:
        return None
    _, status, reason = min(found)
    return _reject(reason, status)


def judge_head(head: bytes, limits: ProtocolLimits) -> int:
    """Judge one complete head (ending CRLF CRLF): its Content-Length, or ``CHUNKED``.

    Raises ``RemoteProtocolError`` with the status to answer. The fast path handles the
    usual request in one regex match; everything else goes to ``judge_head_slowly``.
    """
    return _judge(head, limits)[0]


def _judge(head: bytes, limits: ProtocolLimits) -> tuple[int, bytes]:
    """``judge_head`` and the head's version (b"1.0" or b"1.1"), which the door hands on."""
    match = _fast_match(head, limits)
    if match is not None:
        length = match[2] or match[3]
        return (0 if length is None else int(length)), match[1]
    length = judge_head_slowly(head, limits)
    # An approved request line ends in "HTTP/1.0" or "HTTP/1.1".
    line_end = head.find(b"\r\n")
    return length, head[line_end - 3 : line_end]


def _fast_match(head: bytes, limits: ProtocolLimits) -> re.Match[bytes] | None:
    """``_FAST_HEAD``'s match when it accepts ``head`` within the limits, else None.
    (Group 1: the version; group 2 or 3: the Content-Length, if any.)"""
    match = _FAST_HEAD.fullmatch(head)
    if (
        match is not None
        and len(head) <= limits.max_incomplete_size
        and match.end(1) <= limits.max_request_line_size
        and (
            len(head) <= 4 * limits.max_header_count
            or _field_count(head) <= limits.max_header_count
        )
    ):
        return match
    return None


def _field_count(head: bytes) -> int:
    return head.count(b"\r\n") - 2


def judge_head_slowly(head: bytes, limits: ProtocolLimits) -> int:
    """The reference judgement of a complete head; see the module docstring for the rules."""
    violation = earliest_violation(head, complete=True, limits=limits)
    if violation is not None:
        raise violation
    lines = head[:-4].split(b"\r\n")
    version = _judge_request_line(lines[0])
    hosts: list[bytes] = []
    lengths: list[bytes] = []
    codings: list[bytes] = []
    for line in lines[1:]:
        match = _FIELD_RE.fullmatch(line)
        if match is None:
            raise _reject(_describe_bad_field(line))
        name = match[1].lower()
        if name in (b"host", b"content-length", b"transfer-encoding"):
            value = match[2].rstrip(_OWS)
            if name == b"host":
                hosts.append(value)
            elif name == b"content-length":
                lengths.append(value)
            else:
                codings.append(value)
    if version == b"1.1" and not hosts:
        raise _reject("missing Host header")
    if len(hosts) > 1:
        raise _reject("more than one Host header")
    if hosts and _HOST_VALUE_RE.fullmatch(hosts[0]) is None:
        raise _reject("invalid Host header")
    if codings:
        if version != b"1.1":
            raise _reject("Transfer-Encoding in an HTTP/1.0 request")
        if lengths:
            raise _reject("both Content-Length and Transfer-Encoding in request")
        _judge_codings(codings)
        return CHUNKED
    if not lengths:
        return 0
    if len(lengths) > 1:
        raise _reject("more than one Content-Length header")
    if _DIGITS_RE.fullmatch(lengths[0]) is None:
        raise _reject("invalid Content-Length header")
    return int(lengths[0])


def _judge_request_line(line: bytes) -> bytes:
    parts = line.split(b" ")
    if len(parts) != 3:
        raise _reject("malformed request line")
    method, target, version = parts
    if _TOKEN_RE.fullmatch(method) is None:
        raise _reject("invalid method")
    if _TARGET_RE.fullmatch(target) is None:
        raise _reject("invalid request target")
    if version not in (b"HTTP/1.1", b"HTTP/1.0"):
        if _VERSION_RE.fullmatch(version) is not None:
            raise _reject("unsupported HTTP version", 505)
        raise _reject("malformed HTTP version")
    if method == b"CONNECT":
        raise _reject("CONNECT is not supported by an origin server")
    if target == b"*":
        if method != b"OPTIONS":
            raise _reject("asterisk-form target is only allowed for OPTIONS")
    elif target[0] != 0x2F and _ABSOLUTE_FORM_RE.fullmatch(target) is None:  # "/"
        raise _reject("invalid request target form")
    return version[5:]


def _describe_bad_field(line: bytes) -> str:
    if line[:1] in (b" ", b"\t"):
        return "obsolete line folding in header"
    name, colon, value = line.partition(b":")
    if not colon:
        return "header line without a colon"
    if name.rstrip(_OWS) != name:
        return "whitespace between header name and colon"
    if _TOKEN_RE.fullmatch(name) is None:
        return "invalid header name"
    if _VALUE_RE.fullmatch(value) is None:
        return "control character in header value"
    return "malformed header line"  # pragma: no cover - every branch above covers the regex


def _judge_codings(values: list[bytes]) -> None:
    codings = [coding.strip(_OWS).lower() for coding in b",".join(values).split(b",")]
    if any(_TOKEN_RE.fullmatch(coding) is None for coding in codings):
        raise _reject("malformed Transfer-Encoding")
    if codings[-1] != b"chunked" or codings.count(b"chunked") != 1:
        raise _reject("Transfer-Encoding does not end in a single chunked")
    if len(codings) > 1:
        raise _reject("unsupported transfer coding", 501)


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
#: Memos kept at once (a worker has one limits object; tests make many).
_KNOWN_HEAD_MEMOS = 16


def _known_heads_for(limits: ProtocolLimits, head_parser: HeadParser) -> _KnownHeads:
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
        "_remaining",
        "_scanned",
        "_state",
    )

    def __init__(
        self,
        head_parser: HeadParser,
        limits: ProtocolLimits,
        *,
        max_chunk_line: int = DEFAULT_MAX_CHUNK_LINE,
    ) -> None:
        self._head_parser = head_parser
        self._limits = limits
        self._known = _known_heads_for(limits, head_parser)
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
                    raise _reject("connection closed inside a request head")
                self._state = _CLOSED
                return CLOSED
        end = buf.find(b"\r\n\r\n", scanned - 3 if scanned > 3 else 0) + 4
        if end == 3:
            self._check_unterminated(buf, request_line=True)
            if self._eof:
                raise _reject("connection closed inside a request head")
            return NEED_DATA
        if end == len(buf) and type(buf) is bytes:
            head = buf
            self._buf = b""
        else:
            head = self._take(end)
        length, version = _judge(head, self._limits)
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
            method, target, version, fields, facts = known
            # The app gets this list in its scope and may change it: a new one each time.
            return _new_tuple(RequestHead, (method, target, version, list(fields), *facts))
        if data.find(b"\r\n\r\n") + 4 != len(data) or data[0] in _CR_LF:
            return None
        # Only the fast judgement: anything else (a Content-Length, a slow head, an error) is
        # left to the general path, which judges it the same way.
        match = _fast_match(data, self._limits)
        if match is None or match[2] is not None or match[3] is not None:
            return None
        head = self._make_head(data, 0, match[1], _DONE)
        if len(data) <= _KNOWN_HEAD_MAX:
            known_heads = self._known
            if len(known_heads) >= _KNOWN_HEADS_SIZE:
                known_heads.clear()
            known_heads[data] = (*head[:3], tuple(head.headers), head[4:])
        return head

    def _make_head(
        self, head: bytes, length: int, version: bytes, end_state: DoorState
    ) -> RequestHead:
        """Tokenise an approved head and move to its body (or to ``end_state``)."""
        method, target, headers = self._head_parser.parse_head(head, length != 0)
        if length == 0:
            self._state = end_state
        elif length == CHUNKED:
            self._state = _CHUNK_SIZE
            headers = _lowercase_codings(headers)
        else:
            self._state = _BODY
            self._remaining = length
        if length == 0 and _CONNECTION_OR_EXPECT(head) is None:
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
            raise _reject("bare LF or CR before the request line")
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
                raise _reject("connection closed inside a request body")
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
                        raise _reject("chunk size line too long")
                    break
                match = _CHUNK_LINE_RE.fullmatch(buf, 0, end)
                if match is None:
                    raise _reject("invalid chunk size line")
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
                        raise _reject("chunk data not followed by CRLF")
                    break
                if buf[:2] != b"\r\n":
                    raise _reject("chunk data not followed by CRLF")
                self._take(2)
                self._state = _CHUNK_SIZE
            else:  # _TRAILERS
                if buf[:2] == b"\r\n":
                    self._take(2)
                    self._state = _DONE
                    return END_OF_MESSAGE
                if buf[:1] == b"\n" or (buf[:1] == b"\r" and len(buf) > 1):
                    raise _reject("bare LF or CR in trailer section")
                end = buf.find(b"\r\n\r\n", self._scanned - 3 if self._scanned > 3 else 0)
                if end == -1:
                    self._check_unterminated(buf, request_line=False)
                    break
                self._judge_trailers(self._take(end + 4))
                self._state = _DONE
                return END_OF_MESSAGE
        if self._eof:
            raise _reject("connection closed inside a chunked request body")
        return NEED_DATA

    def _judge_trailers(self, block: bytes) -> None:
        violation = earliest_violation(
            block, complete=True, limits=self._limits, request_line=False
        )
        if violation is not None:
            raise violation
        if _TRAILERS_RE.fullmatch(block) is None:
            for line in block[:-4].split(b"\r\n"):
                if _FIELD_RE.fullmatch(line) is None:
                    raise _reject(_describe_bad_field(line).replace("header", "trailer"))
            raise _reject("malformed trailer section")  # pragma: no cover


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
