"""Choosing the HTTP/1.1 parser stack for Config ``http1_parser``.

Every stack is the strict front door (``h1_frontdoor.StrictH1Parser``: framing, validation,
de-chunking, pipelining) around a head tokeniser:

* ``"h11"`` - ``H11HeadParser`` below (pure Python, always available);
* ``"httptools"`` - ``h1_httptools.HttptoolsHeadParser`` (llhttp; ``pip install
  hypercorn[fast]``);
* ``"auto"`` - httptools when it can be imported, else h11.
"""

from __future__ import annotations

import functools

import h11

from hypercorn.protocols.errors import RemoteProtocolError
from hypercorn.protocols.h1_frontdoor import HeadParser, StrictH1Parser
from hypercorn.protocols.h1_parser import H1Parser
from hypercorn.protocols.limits import ProtocolLimits

__all__ = ["PARSER_KINDS", "H11HeadParser", "httptools_available", "make_parser"]

PARSER_KINDS = ("auto", "h11", "httptools")


class H11HeadParser:
    """``HeadParser`` on a fresh ``h11.Connection`` per head (h11 keeps per-cycle state)."""

    __slots__ = ("_max_size",)

    def __init__(self, limits: ProtocolLimits) -> None:
        # The door already bounded the head; h11's own limit must not be the tighter one.
        self._max_size = limits.max_incomplete_size + 1

    def parse_head(
        self, head: bytes, has_body: bool
    ) -> tuple[bytes, bytes, list[tuple[bytes, bytes]]]:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self._max_size)
        conn.receive_data(head)
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            raise RemoteProtocolError(str(exc), status_hint=exc.error_status_hint) from exc
        if type(event) is not h11.Request:  # pragma: no cover - the door hands whole heads
            raise RemoteProtocolError("incomplete request head", status_hint=400)
        return event.method, event.target, list(event.headers)


@functools.cache
def httptools_available() -> bool:
    try:
        import httptools  # noqa: F401
    except ImportError:
        return False
    return True


def make_head_parser(kind: str, limits: ProtocolLimits) -> HeadParser:
    """The head tokeniser for ``kind``; ValueError for an unknown kind, ImportError when
    ``"httptools"`` is asked for explicitly and is not installed."""
    if kind == "h11" or (kind == "auto" and not httptools_available()):
        return H11HeadParser(limits)
    if kind not in PARSER_KINDS:
        raise ValueError(f"unknown http1_parser {kind!r}; expected one of {PARSER_KINDS}")
    from hypercorn.protocols.h1_httptools import HttptoolsHeadParser

    return HttptoolsHeadParser()


def make_parser(kind: str, limits: ProtocolLimits) -> H1Parser:
    """The ``H1Parser`` for Config ``http1_parser`` ("auto", "h11" or "httptools")."""
    return StrictH1Parser(make_head_parser(kind, limits), limits)
