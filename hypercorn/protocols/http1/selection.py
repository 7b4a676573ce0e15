"""Choosing the HTTP/1.1 parser stack for Config ``http1_parser``.

Every stack is the strict front door (``frontdoor.StrictH1Parser``: framing, validation,
de-chunking, pipelining) around a head tokeniser:

* ``"h11"`` - ``h11_tokeniser.H11HeadParser`` (pure Python, always available);
* ``"httptools"`` - ``httptools_tokeniser.HttptoolsHeadParser`` (llhttp; ``pip install
  hypercorn[fast]``);
* ``"auto"`` - httptools when it can be imported, else h11.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from hypercorn.protocols.http1.frontdoor import HeadParser, StrictH1Parser, known_heads_for
from hypercorn.protocols.http1.h11_tokeniser import H11HeadParser
from hypercorn.protocols.http1.parser import H1Parser
from hypercorn.protocols.limits import ProtocolLimits

__all__ = [
    "PARSER_KINDS",
    "httptools_available",
    "make_head_parser",
    "make_parser",
    "parser_factory",
]

PARSER_KINDS = ("auto", "h11", "httptools")


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
    from hypercorn.protocols.http1.httptools_tokeniser import HttptoolsHeadParser

    return HttptoolsHeadParser()


def make_parser(kind: str, limits: ProtocolLimits) -> H1Parser:
    """The ``H1Parser`` for Config ``http1_parser`` ("auto", "h11" or "httptools")."""
    return StrictH1Parser(make_head_parser(kind, limits), limits)


def parser_factory(kind: str, limits: ProtocolLimits) -> Callable[[], H1Parser]:
    """``make_parser(kind, limits)`` for every connection of a worker, with the choosing done
    once: its connections share one head tokeniser (``parse_head`` is a synchronous call
    that leaves no state behind) and the memo of judged heads, looked up once."""
    head_parser = make_head_parser(kind, limits)
    return functools.partial(
        StrictH1Parser, head_parser, limits, known_heads_for(limits, head_parser)
    )
