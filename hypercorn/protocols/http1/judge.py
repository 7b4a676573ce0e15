"""Judging an HTTP/1.1 request head (and a trailer section) against RFC 9112.

The front door (``frontdoor.py``) delimits each message and asks this module for the verdict
on its head: the body framing (a Content-Length or ``CHUNKED``) or the ``RemoteProtocolError``
carrying the status to answer. Nothing here keeps state.

Rule 1 - split invariance. The verdict on a byte stream (which request is served, which
status a bad one gets) never depends on how TCP cut it into segments. Each violation has a
*position*: the stream length at which it becomes certain (a request line over the limit at
``max_request_line_size + 2``, a head over ``max_incomplete_size`` at that size, header
line number ``max_header_count + 1`` at its CRLF, a bare LF just after it, a bare CR one
byte after it, any other syntax error at the end of the head). Limits are checked on the
accumulated buffer before a head terminator is found (``earliest_violation``), and whatever
finds a violation reports the one with the smallest position, so a 60 KB head in one write
gets the same 431 as the same head trickled byte by byte.

Rule 3 - the common case is cheap. A complete head is validated with one precompiled regex
(``_FAST_HEAD``) that also requires exactly one Host, allows at most one Content-Length and
no Transfer-Encoding, and captures the length. Everything else (chunked uploads, HTTP/1.0
without Host, absolute-form targets, and every error) takes ``judge_head_slowly``, which is
the reference: for every head the fast path accepts, the slow path accepts it with the same
framing (tests assert this on the corpus).

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

from hypercorn.protocols.errors import RemoteProtocolError
from hypercorn.protocols.limits import ProtocolLimits

__all__ = [
    "CHUNKED",
    "CHUNK_LINE_RE",
    "HOST_FIELD_RE",
    "TOKEN_RE",
    "earliest_violation",
    "fast_length",
    "fast_match",
    "judge_head",
    "judge_head_slowly",
    "judge_trailers",
    "judge_with_version",
    "reject",
]

#: ``judge_head`` result for a chunked body; any other result is the Content-Length.
CHUNKED = -1


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
#: A field line that is none of the framing fields. The empty group after it matches on a
#: Connection or Expect line (the fields that change the request's facts), so a match whose
#: ``lastindex`` is 1 (only the version group closed) has none of them and no Content-Length.
_PLAIN_LINE = (
    rb"(?:(?=(?i:connection|expect):)()|(?!(?i:host|content-length|transfer-encoding):))"
    + _FIELD_LINE
)
_HOST_LINE = rb"(?i:host):[ \t]*(?:" + _NONEMPTY_HOST_VALUE + rb"[ \t]*)?\r\n"


def _cl_line(group: bytes) -> bytes:
    return rb"(?i:content-length):[ \t]*(?P<" + group + rb">[0-9]{1,18})[ \t]*\r\n"


# The fast path: origin-form (or OPTIONS *), HTTP/1.0 or 1.1, exactly one Host, at most one
# Content-Length (captured in group length_a or length_b), no Transfer-Encoding. Group 1 is
# the version (b"1.0" or b"1.1"), whose end is also the length of the request line. A plain
# line cannot be a Host or Content-Length line, so at each line one branch at most can go on.
_FAST_HEAD = re.compile(
    rb"(?:OPTIONS \* |(?!CONNECT )" + _TOKEN + rb" /[\x21-\x7e]* )HTTP/(1\.[01])\r\n"
    rb"(?:" + _PLAIN_LINE + rb")*"
    rb"(?:" + _HOST_LINE + rb"(?:" + _PLAIN_LINE + rb")*"
    rb"(?:" + _cl_line(b"length_a") + rb"(?:" + _PLAIN_LINE + rb")*)?"
    rb"|"
    + _cl_line(b"length_b")
    + rb"(?:"
    + _PLAIN_LINE
    + rb")*"
    + _HOST_LINE
    + rb"(?:"
    + _PLAIN_LINE
    + rb")*"
    rb")\r\n"
)
_LENGTH_A = _FAST_HEAD.groupindex["length_a"]
_LENGTH_B = _FAST_HEAD.groupindex["length_b"]

_TOKEN_RE = re.compile(_TOKEN)
_TARGET_RE = re.compile(rb"[\x21-\x7e]+")
_ABSOLUTE_FORM_RE = re.compile(rb"[A-Za-z][A-Za-z0-9+.\-]*://[\x21-\x7e]*")
_VERSION_RE = re.compile(rb"HTTP/[0-9]\.[0-9]")
_FIELD_RE = re.compile(rb"(" + _TOKEN + rb"):[ \t]*(" + _TRIMMED_VALUE + rb")")
_VALUE_RE = re.compile(_VALUE)
_HOST_VALUE_RE = re.compile(_HOST_VALUE)
#: A Host field line on its own, its value without OWS in group 1 (unmatched when empty).
HOST_FIELD_RE = re.compile(rb"(?i:host):[ \t]*(?:(" + _NONEMPTY_HOST_VALUE + rb")[ \t]*)?")
#: For ``fieldlines``.
TOKEN_RE = _TOKEN_RE
_DIGITS_RE = re.compile(rb"[0-9]{1,18}")
_TRAILERS_RE = re.compile(rb"(?:" + _FIELD_LINE + rb")*\r\n")
# qdtext excludes DQUOTE and backslash, so a quoted string has one way to match.
CHUNK_LINE_RE = re.compile(
    rb"([0-9A-Fa-f]{1,16})"
    rb"(?:;" + _TOKEN + rb"(?:=(?:" + _TOKEN + rb'|"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]'
    rb'|\\[\t \x21-\x7e\x80-\xff])*"))?)*'
)
_OWS = b" \t"


def reject(reason: str, status: int = 400) -> RemoteProtocolError:
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
    return reject(reason, status)


def judge_head(head: bytes, limits: ProtocolLimits) -> int:
    """Judge one complete head (ending CRLF CRLF): its Content-Length, or ``CHUNKED``.

    Raises ``RemoteProtocolError`` with the status to answer. The fast path handles the
    usual request in one regex match; everything else goes to ``judge_head_slowly``.
    """
    return judge_with_version(head, limits)[0]


def judge_with_version(head: bytes, limits: ProtocolLimits) -> tuple[int, bytes]:
    """``judge_head`` and the head's version (b"1.0" or b"1.1"), which the door hands on."""
    match = fast_match(head, limits)
    if match is not None:
        length = match[_LENGTH_A] or match[_LENGTH_B]
        return (0 if length is None else int(length)), match[1]
    length = judge_head_slowly(head, limits)
    # An approved request line ends in "HTTP/1.0" or "HTTP/1.1".
    line_end = head.find(b"\r\n")
    return length, head[line_end - 3 : line_end]


def fast_match(head: bytes, limits: ProtocolLimits) -> re.Match[bytes] | None:
    """``_FAST_HEAD``'s match when it accepts ``head`` within the limits, else None.

    Group 1 is the version; ``fast_length`` reads the Content-Length. A ``lastindex`` of 1
    means no Content-Length, Connection or Expect field (every other group comes after the
    version's, so any of them matching would have closed last)."""
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


def fast_length(match: re.Match[bytes]) -> bytes | None:
    """The Content-Length digits of a ``fast_match``, or None."""
    return match[_LENGTH_A] or match[_LENGTH_B]


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
            raise reject(_describe_bad_field(line))
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
        raise reject("missing Host header")
    if len(hosts) > 1:
        raise reject("more than one Host header")
    if hosts and _HOST_VALUE_RE.fullmatch(hosts[0]) is None:
        raise reject("invalid Host header")
    if codings:
        if version != b"1.1":
            raise reject("Transfer-Encoding in an HTTP/1.0 request")
        if lengths:
            raise reject("both Content-Length and Transfer-Encoding in request")
        _judge_codings(codings)
        return CHUNKED
    if not lengths:
        return 0
    if len(lengths) > 1:
        raise reject("more than one Content-Length header")
    if _DIGITS_RE.fullmatch(lengths[0]) is None:
        raise reject("invalid Content-Length header")
    return int(lengths[0])


def _judge_request_line(line: bytes) -> bytes:
    parts = line.split(b" ")
    if len(parts) != 3:
        raise reject("malformed request line")
    method, target, version = parts
    if _TOKEN_RE.fullmatch(method) is None:
        raise reject("invalid method")
    if _TARGET_RE.fullmatch(target) is None:
        raise reject("invalid request target")
    if version not in (b"HTTP/1.1", b"HTTP/1.0"):
        if _VERSION_RE.fullmatch(version) is not None:
            raise reject("unsupported HTTP version", 505)
        raise reject("malformed HTTP version")
    if method == b"CONNECT":
        raise reject("CONNECT is not supported by an origin server")
    if target == b"*":
        if method != b"OPTIONS":
            raise reject("asterisk-form target is only allowed for OPTIONS")
    elif target[0] != 0x2F and _ABSOLUTE_FORM_RE.fullmatch(target) is None:  # "/"
        raise reject("invalid request target form")
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
        raise reject("malformed Transfer-Encoding")
    if codings[-1] != b"chunked" or codings.count(b"chunked") != 1:
        raise reject("Transfer-Encoding does not end in a single chunked")
    if len(codings) > 1:
        raise reject("unsupported transfer coding", 501)


def judge_trailers(block: bytes, limits: ProtocolLimits) -> None:
    """Judge a complete trailer section (field lines and the empty line); raises
    ``RemoteProtocolError`` as for a head."""
    violation = earliest_violation(block, complete=True, limits=limits, request_line=False)
    if violation is not None:
        raise violation
    if _TRAILERS_RE.fullmatch(block) is None:
        for line in block[:-4].split(b"\r\n"):
            if _FIELD_RE.fullmatch(line) is None:
                raise reject(_describe_bad_field(line).replace("header", "trailer"))
        raise reject("malformed trailer section")  # pragma: no cover
