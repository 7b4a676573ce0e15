"""Writing HTTP/1.1 responses: the head, body framing, chunks, trailers and error answers.

``ResponseWriter`` is the response half of ``H1Connection`` (``connection.py``, which
extends it): the ``StreamWire`` calls an ``AsgiHttpStream`` makes to answer (``send_head``,
``send_body``, ``send_trailers``, ``send_error``) and the bare answers the connection writes
itself (``_write_error``). It reads and sets the state of the current exchange, which both
halves share (its slots), and asks the connection to recycle (``_response_complete``) or to
close (``_close``).

Rule 3 - framing is chosen when the head is written: the app's Content-Length if given;
otherwise Content-Length of the whole body when the first body message is also the last;
otherwise chunked (HTTP/1.1) or close-delimited (HTTP/1.0). HEAD, 204 and 304 responses
carry no body bytes whatever the app sends.

Rule 4 - a streamed response's pieces are held and written together: what the app sends in
one step of its task (a head and body messages with ``more_body``) is written as one
``writelines`` (one system call) when its last message is, or once the task yields (the sink's
``call_soon``: before the loop waits for anything, so a piece sent before a pause is on the
wire at once), or as soon as ``_HOLD_BYTES`` or ``_HOLD_PIECES`` are held (so flow control
still sees the bytes: the transport pauses, the app's ``send`` waits). Anything else written
or a close flushes what is held first; an abort or a lost connection drops it.

The app's header lists are validated and their facts (Content-Length, Connection: close,
its own Date / Server) picked out once per distinct list: apps send the same few lists over
and over, so the facts are memoised (``_known_header_facts``).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from enum import Enum
from typing import TYPE_CHECKING

from hypercorn.protocols.connection import ConnectionSink
from hypercorn.protocols.errors import AppProtocolError
from hypercorn.protocols.headers import (
    STATUS_LINES,
    DateCache,
    check_header,
    check_transfer_encoding,
    has_forbidden_value_bytes,
    is_token,
    status_line,
)
from hypercorn.protocols.limits import ProtocolLimits

if TYPE_CHECKING:
    from hypercorn.protocols.asgi_http import AsgiHttpStream
    from hypercorn.protocols.asgi_ws import AsgiWsStream
    from hypercorn.protocols.http1.parser import RequestHead

__all__ = ["Framing", "ResponseWriter"]

_INFINITY = float("inf")

#: Per limits object (by id; the entry holds it, so the id is not reused meanwhile): the
#: Server line, the extra header lines and the two with the blank line, built once rather
#: than per connection.
_fixed_lines: dict[int, tuple[ProtocolLimits, bytes, bytes, bytes]] = {}


def _fixed_lines_for(limits: ProtocolLimits) -> tuple[ProtocolLimits, bytes, bytes, bytes]:
    server_line = b"server: " + limits.server_header + _CRLF if limits.server_header else b""
    extra_lines = b"".join(name + b": " + value + _CRLF for name, value in limits.extra_headers)
    if len(_fixed_lines) >= 16:  # (a worker has one limits object; tests make many)
        _fixed_lines.clear()
    lines = _fixed_lines[id(limits)] = (
        limits,
        server_line,
        extra_lines,
        server_line + extra_lines + _CRLF,
    )
    return lines


class Framing(Enum):
    CONTENT_LENGTH = "content-length"
    CHUNKED = "chunked"
    CLOSE_DELIMITED = "close-delimited"
    NONE = "none"  # HEAD / 204 / 304: no body bytes on the wire


# Enum members as module globals (on 3.11 ``Enum.MEMBER`` is slow; see connection.py).
_FRAMING_CHUNKED = Framing.CHUNKED
_FRAMING_CLOSE_DELIMITED = Framing.CLOSE_DELIMITED
_FRAMING_CONTENT_LENGTH = Framing.CONTENT_LENGTH
_FRAMING_NONE = Framing.NONE

_NO_BODY_STATUSES = frozenset((204, 304))
_SPECIAL_HEADERS = frozenset(
    (b"content-length", b"transfer-encoding", b"connection", b"date", b"server")
)
#: Does a lowercased header block hold a header whose handling is ours?
_special_header = re.compile(
    rb"(?:^|\n)(?:content-length|transfer-encoding|connection|date|server):"
).search
_CRLF = b"\r\n"
_LAST_CHUNK = b"0\r\n\r\n"
_CRLF_LAST_CHUNK = _CRLF + _LAST_CHUNK
#: Body pieces from this size on are written beside their framing (``writelines``) rather
#: than copied into one bytes object with it; below it, one copy is cheaper than a vector.
_VECTORED = 4096
#: Rule 4: held pieces are written as soon as they hold this many bytes (the transports'
#: default high-water mark: no more is held than a transport buffers before pausing) or
#: number this many buffers (small pieces are framed into one buffer each).
_HOLD_BYTES = 64 * 1024
_HOLD_PIECES = 64
_CONNECTION_CLOSE = b"connection: close\r\n"
_EMPTY_BODY = b"content-length: 0\r\n"
_CHUNKED_HEADER = b"transfer-encoding: chunked\r\n"
#: A "close" connection option (RFC 9110 7.6.1: a comma-separated list, case-insensitive).
_CLOSE_TOKEN = re.compile(rb"(?:^|,)[ \t]*close[ \t]*(?:,|$)", re.IGNORECASE).search
#: The Connection lines of a validated header block (names are tokens, values hold no CR/LF).
_without_connection = functools.partial(
    re.compile(rb"^connection:[^\r\n]*\r\n", re.IGNORECASE | re.MULTILINE).sub, b""
)


def _parse_content_length(value: bytes) -> int:
    if not value.isdigit():
        raise AppProtocolError(f"invalid content-length {value!r}")
    return int(value)


class ResponseWriter:
    """The response half of an HTTP/1.1 connection; see the module docstring."""

    __slots__ = (
        "_call_soon",
        "_chunk_trailers_ok",
        "_closed",
        "_continue_pending",
        "_dates",
        "_extra_lines",
        "_flush_scheduled",
        "_framing",
        "_head",
        "_held",
        "_held_size",
        "_keep_alive",
        "_remaining",
        "_request_done",
        "_response_started",
        "_server_line",
        "_stream",
        "_tail",
        "_tail_fixed",
        "_tail_until",
        "_write",
        "_writelines",
    )

    def __init__(self, sink: ConnectionSink, limits: ProtocolLimits, dates: DateCache) -> None:
        self._write = sink.write
        self._writelines = sink.writelines
        self._call_soon = sink.call_soon
        #: Rule 4: pieces held back, their size, and whether ``flush_held`` is scheduled.
        self._held: list[bytes] | None = None
        self._held_size = 0
        self._flush_scheduled = False
        lines = _fixed_lines.get(id(limits))
        if lines is None or lines[0] is not limits:
            lines = _fixed_lines_for(limits)
        _, self._server_line, self._extra_lines, fixed = lines
        # Everything after the app's headers but the Date line, and the whole tail as last
        # built (rebuilt when the Date second changes): one append per response.
        self._tail_fixed = fixed
        if limits.include_date_header:
            self._dates: DateCache | None = dates
            #: Loop time until which ``_tail`` holds (its Date second ends then).
            self._tail, self._tail_until = dates.tails.get(fixed) or (fixed, -_INFINITY)
        else:
            self._dates = None
            self._tail, self._tail_until = fixed, _INFINITY
        # The current exchange, shared with the connection (which owns its lifecycle).
        self._stream: AsgiHttpStream | AsgiWsStream | None = None
        self._head: RequestHead | None = None
        self._keep_alive = True
        self._request_done = False
        self._response_started = False
        self._continue_pending = False
        self._closed = False
        self._chunk_trailers_ok = False
        self._framing = _FRAMING_NONE
        self._remaining = 0

    # -- what the connection provides ------------------------------------------------------

    def _response_complete(self, now: float) -> None:
        """The response is complete: recycle the connection or close it."""
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError

    # -- writing -----------------------------------------------------------------------------

    def _write_error(self, status: int, now: float, extra: bytes = b"") -> None:
        dates = self._dates
        self._response_started = True
        self._write(
            b"".join(
                (
                    status_line(status),
                    _EMPTY_BODY,
                    extra,
                    _CONNECTION_CLOSE,
                    dates.line(now) if dates is not None else b"",
                    self._server_line,
                    self._extra_lines,
                    _CRLF,
                )
            )
        )

    def send_head(
        self,
        stream: AsgiHttpStream,
        status: int,
        headers: Iterable[tuple[bytes, bytes]],
        body: bytes,
        end: bool,
        now: float,
    ) -> None:
        if stream is not self._stream or self._closed:
            return
        head = self._head
        assert head is not None
        try:
            try:
                # Apps send the same few header lists over and over: their facts are memoised.
                facts = _known_header_facts(tuple(headers), status == 204)
            except TypeError:  # unhashable (lists of lists): not memoised
                facts = _header_facts(headers, status == 204)
        except AppProtocolError:
            self._refuse_head(now)
            raise
        block, content_length, close, has_date, has_server = facts
        keep_alive = self._keep_alive and self._request_done and not close
        if (
            end
            and (keep_alive or close is None)
            and (content_length is None or content_length == len(body))
            and not (has_date or has_server)
            and status not in _NO_BODY_STATUSES
            and head[0] != b"HEAD"  # (the method; [0] is cheaper than .method on 3.11)
        ):
            # The usual response: the whole body in one message, kept alive or closing (the
            # app's head has no Connection line to replace). One write of head and body with
            # the right Content-Length (Rule 3), nothing else to decide.
            self._framing = _FRAMING_CONTENT_LENGTH
            self._remaining = 0
            self._response_started = True
            self._continue_pending = False
            if not keep_alive:
                self._keep_alive = False
            # (Called through a local: on 3.11 ``self._write(...)`` is a generic lookup,
            # the attribute being a stored callable rather than a method.)
            pieces = (
                STATUS_LINES.get(status) or status_line(status),
                block,
                b"content-length: %d\r\n" % len(body) if content_length is None else b"",
                b"" if keep_alive else _CONNECTION_CLOSE,
                self._tail if now < self._tail_until else self._tail_for(now),
                body,
            )
            if len(body) < _VECTORED:
                write = self._write
                write(b"".join(pieces))
            else:  # (a large body is not copied to put the head in front of it)
                writelines = self._writelines
                writelines(pieces)
            self._response_complete(now)
            return
        parts = [STATUS_LINES.get(status) or status_line(status), block]
        append = parts.append
        # Framing (Rule 3).
        is_head = head.method == b"HEAD"
        if status in _NO_BODY_STATUSES:
            framing = _FRAMING_NONE
        elif content_length is not None:
            framing = _FRAMING_NONE if is_head else _FRAMING_CONTENT_LENGTH
            self._remaining = content_length
        elif end:
            framing = _FRAMING_NONE if is_head else _FRAMING_CONTENT_LENGTH
            self._remaining = len(body)
            if body or not is_head:
                append(b"content-length: %d\r\n" % len(body))
        elif head.http_version == b"1.1":
            framing = _FRAMING_NONE if is_head else _FRAMING_CHUNKED
            append(_CHUNKED_HEADER)
        else:
            framing = _FRAMING_NONE if is_head else _FRAMING_CLOSE_DELIMITED
            keep_alive = False
        if stream.trailers_expected and framing is _FRAMING_CHUNKED:
            self._chunk_trailers_ok = _accepts_trailers(head.headers)
        self._framing = framing
        if not keep_alive:
            self._keep_alive = False
            if close is not None:  # (the app's own Connection lines give way to our one)
                parts[1] = _without_connection(block)
            append(_CONNECTION_CLOSE)
        dates = self._dates
        if has_date or has_server:
            if dates is not None and not has_date:
                append(dates.line(now))
            if not has_server:
                append(self._server_line)
            append(self._extra_lines)
            append(_CRLF)
        else:
            append(self._tail_for(now))
        vectored = len(body) >= _VECTORED and framing is not _FRAMING_NONE
        if framing is _FRAMING_CONTENT_LENGTH and end and len(body) == self._remaining:
            short = False  # the common case: the whole body in one message
            self._remaining = 0
        elif vectored and framing is _FRAMING_CHUNKED:
            short = False
            parts[-1] += b"%x\r\n" % len(body)  # (the chunk size line joins the head)
            parts.extend((body, _CRLF_LAST_CHUNK if end else _CRLF))
            body = b""
        else:
            body, short = self._frame(body, end)
        self._response_started = True
        self._continue_pending = False
        if body and framing is not _FRAMING_NONE:
            append(body)
        if not end:  # (a streamed response: Rule 4)
            if vectored:
                self._hold(parts, sum(map(len, parts)))
            else:
                joined = b"".join(parts)
                self._hold((joined,), len(joined))
        elif vectored:
            self._writelines(parts)
        else:
            self._write(b"".join(parts))
        if short:
            raise AppProtocolError("response body shorter than its content-length")
        if end:
            self._response_complete(now)

    def _refuse_head(self, now: float) -> None:
        """The app's head was refused before anything was written (a header that is not
        safe to send, a bad Content-Length): answer 500 and, the connection being sound,
        keep it for the next request when the exchange allows (the stream's own 500 then
        finds the exchange over)."""
        if not (self._keep_alive and self._request_done):
            return  # the stream's send_error answers 500 and closes
        self._response_started = True
        self._continue_pending = False
        self._write(b"".join((status_line(500), _EMPTY_BODY, self._tail_for(now))))
        self._response_complete(now)

    def _tail_for(self, now: float) -> bytes:
        """Date, Server and extra header lines and the blank line (rebuilt once a second;
        callers on the hot path read ``_tail`` while ``now < _tail_until``)."""
        dates = self._dates
        if dates is None or now < self._tail_until:
            return self._tail
        second = int(now + dates.wall_offset)
        self._tail_until = until = second + 1 - dates.wall_offset
        self._tail = tail = dates.line(now) + self._tail_fixed
        dates.tails[self._tail_fixed] = (tail, until)
        return tail

    def _hold(self, pieces: Sequence[bytes], size: int) -> None:
        """Hold ``pieces`` (``size`` bytes) back, to be written with what follows (Rule 4).
        (While something is held, its flush is scheduled: ``send_body`` relies on it.)"""
        held = self._held
        if held is None:
            held = self._held = []
        if not self._flush_scheduled:
            self._flush_scheduled = True
            call_soon = self._call_soon  # (through a local: see send_head)
            call_soon(self.flush_held)
        held += pieces
        size += self._held_size
        if size >= _HOLD_BYTES or len(held) >= _HOLD_PIECES:
            self._held = None
            self._held_size = 0
            writelines = self._writelines
            writelines(held)
        else:
            self._held_size = size

    def flush_held(self) -> None:
        """Write what is held (Rule 4): called from the loop once the app's task yielded."""
        self._flush_scheduled = False
        held = self._held
        if held:
            self._held = None
            self._held_size = 0
            if not self._closed:
                self._writelines(held)

    def _write_after_held(self, pieces: Sequence[bytes]) -> None:
        """Write ``pieces`` (after what is held, in one write with it)."""
        held = self._held
        if held:
            self._held = None
            self._held_size = 0
            held += pieces
            self._writelines(held)
        elif len(pieces) == 1:
            self._write(pieces[0])
        else:
            self._writelines(pieces)

    def _frame(self, data: bytes, end: bool) -> tuple[bytes, bool]:
        """(bytes to write for this body piece, content-length left unfilled at the end)."""
        framing = self._framing
        if framing is _FRAMING_CHUNKED:
            return _chunk(data, end), False
        if framing is _FRAMING_CONTENT_LENGTH:
            remaining = self._remaining - len(data)
            if remaining < 0:
                raise AppProtocolError("response body longer than its content-length")
            self._remaining = remaining
            return data, end and remaining > 0
        if framing is _FRAMING_CLOSE_DELIMITED:
            return data, False
        return b"", False

    def send_body(self, stream: AsgiHttpStream, data: bytes, end: bool, now: float) -> None:
        if stream is not self._stream or self._closed:
            return
        short = False
        if self._framing is _FRAMING_CHUNKED:
            # Streaming's usual case, without _frame's tuple; a large piece is not copied
            # into its frame (written beside its size line and CRLF).
            size = len(data)
            if size >= _VECTORED:
                pieces: tuple[bytes, ...] = (
                    _size_lines.get(size) or _size_line(size),
                    data,
                    _CRLF_LAST_CHUNK if end else _CRLF,
                )
            elif data:
                pieces = (_chunk(data, end),)
            elif end:
                pieces = (_LAST_CHUNK,)
            else:
                return
        else:
            framed, short = self._frame(data, end)
            if not framed:
                if end:
                    if self._held:
                        self._write_after_held(())
                    if short:
                        raise AppProtocolError("response body shorter than its content-length")
                    self._response_complete(now)
                return
            pieces = (framed,)
            size = len(framed)
        if not end:
            held = self._held
            if held:  # (``_hold`` inline for a later piece of a step: a call costs as much)
                held += pieces
                size += self._held_size
                if size < _HOLD_BYTES and len(held) < _HOLD_PIECES:
                    self._held_size = size
                    return
                self._held = None
                self._held_size = 0
                writelines = self._writelines
                writelines(held)
            else:
                self._hold(pieces, size)
            return
        # (The response's last piece: with what is held, in one write.)
        if self._held:
            self._write_after_held(pieces)
        elif len(pieces) == 1:
            write = self._write  # (through a local: see send_head)
            write(pieces[0])
        else:
            writelines = self._writelines
            writelines(pieces)
        if short:
            raise AppProtocolError("response body shorter than its content-length")
        self._response_complete(now)

    def send_trailers(
        self, stream: AsgiHttpStream, headers: Iterable[tuple[bytes, bytes]], now: float
    ) -> None:
        if stream is not self._stream or self._closed:
            return
        framing = self._framing
        if framing is _FRAMING_CHUNKED:
            if self._chunk_trailers_ok:
                lines = [b"0\r\n"]
                for name, value in headers:
                    check_header(name, value)
                    lines.append(b"%s: %s\r\n" % (name, value))
                lines.append(_CRLF)
                self._write_after_held((b"".join(lines),))
            else:
                self._write_after_held((_LAST_CHUNK,))
        elif framing is _FRAMING_CONTENT_LENGTH and self._remaining:
            raise AppProtocolError("response body shorter than its content-length")
        elif self._held:
            self._write_after_held(())
        self._response_complete(now)

    def send_error(self, stream: AsgiHttpStream, status: int, now: float) -> None:
        if stream is not self._stream or self._closed:
            return
        if not self._response_started:
            self._write_error(status, now)
        self._close()

    def send_informational(
        self, stream: AsgiHttpStream, status: int, headers: list[tuple[bytes, bytes]], now: float
    ) -> None:
        head = self._head
        if stream is not self._stream or self._closed or self._response_started:
            return
        if head is None or head.http_version != b"1.1":
            return  # (HTTP/1.0 has no interim responses)
        lines = [status_line(status)]
        try:
            for name, value in headers:
                check_header(name, value)
                lines.append(b"%s: %s\r\n" % (name, value))
        except AppProtocolError:
            self._refuse_head(now)
            raise
        lines.append(_CRLF)
        self._write(b"".join(lines))

    def send_push(
        self, stream: AsgiHttpStream, path: str, headers: list[tuple[bytes, bytes]], now: float
    ) -> None:
        """No server push on HTTP/1.1 (the extension is not in its scope)."""


#: (block, content_length, close, has_date, has_server): see ``_header_facts``.
_HeaderFacts = tuple[bytes, "int | None", "bool | None", bool, bool]


def _header_facts(headers: Iterable[tuple[bytes, bytes]], no_content: bool) -> _HeaderFacts:
    """Validate the app's response headers and pick out the ones whose handling is ours.

    Returns the header block to send (Transfer-Encoding removed: framing is ours, Rule 3;
    Content-Length removed when ``no_content``, a 204), the Content-Length, the app's
    Connection (None: it sent none; True: it asks to close), and whether the app sent its
    own Date / Server. Raises AppProtocolError.
    """
    # Each name must be a token and each value free of CR/LF/NUL, judged one by one: checking
    # the joined block let a name like b"x-a: b" through as a valid-looking line.
    lines: list[bytes] = []
    append = lines.append
    try:
        for name, value in headers:
            if is_token(name) is None or has_forbidden_value_bytes(value) is not None:
                raise ValueError
            append(b"%s: %s\r\n" % (name, value))
    except (TypeError, ValueError):  # (not bytes pairs, or refused: say precisely why)
        for name, value in headers:
            check_header(name, value)
        raise AppProtocolError(f"invalid response headers {headers!r}") from None
    block = b"".join(lines)
    if _special_header(block.lower()) is None:
        return block, None, None, False, False
    lines.clear()
    content_length: int | None = None
    close: bool | None = None
    chunked = has_date = has_server = False
    for name, value in headers:
        lname = name.lower()
        if lname in _SPECIAL_HEADERS:
            if lname == b"content-length":
                length = _parse_content_length(value)
                if content_length is not None and content_length != length:
                    raise AppProtocolError("conflicting content-length headers")
                content_length = length
                if no_content:
                    continue
            elif lname == b"transfer-encoding":
                # Framing is ours (Rule 3): "chunked" is what we do anyway when the length is
                # unknown (or Content-Length, as good); any other coding is refused.
                check_transfer_encoding(value, chunked)
                chunked = True
                continue
            elif lname == b"connection":
                # Ours too: kept for a kept-alive response, replaced by our one line when the
                # connection closes (see ``_without_connection``).
                if _CLOSE_TOKEN(value) is not None:
                    close = True
                elif close is None:
                    close = False
            elif lname == b"date":
                has_date = True
            else:
                has_server = True
        lines.append(b"%s: %s\r\n" % (name, value))
    return b"".join(lines), content_length, close, has_date, has_server


#: ``_header_facts`` for header lists seen before (a C-level cache: no Python frame on a hit).
_known_header_facts = functools.lru_cache(maxsize=256)(_header_facts)


#: Chunk-size lines by size (apps stream in a few fixed sizes; ``%`` formatting costs more).
_size_lines: dict[int, bytes] = {}


def _size_line(size: int) -> bytes:
    if len(_size_lines) >= 64:
        _size_lines.clear()
    line = _size_lines[size] = b"%x\r\n" % size
    return line


def _chunk(data: bytes, end: bool) -> bytes:
    """``data`` as one chunk (none when empty), then the last chunk if ``end``: one copy."""
    if data:
        return b"%x\r\n%b\r\n%b" % (len(data), data, _LAST_CHUNK if end else b"")
    return _LAST_CHUNK if end else b""


def _accepts_trailers(headers: list[tuple[bytes, bytes]]) -> bool:
    return any(name == b"te" and b"trailers" in value.lower() for name, value in headers)
