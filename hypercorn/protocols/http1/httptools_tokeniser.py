"""Request heads tokenised by httptools (llhttp), behind the strict front door.

``HttptoolsHeadParser`` is a ``HeadParser`` (``frontdoor.py``): the front door has already
delimited and validated the head, decided the body framing and will de-chunk the body, so
llhttp is only asked to split one approved head into method, target and fields. The door
computes the version and the per-request facts itself, so the two parser stacks are
identical by construction on everything but tokenising. That also sidesteps two llhttp
behaviours that differ from h11: it skips the body of any request carrying ``Upgrade`` (h11
reads it, and the connection decides whether to switch), and it reuses its state across
requests (a body it was not fed would be taken for the next head).

Values come out as h11 gives them: names lowercased, surrounding whitespace removed
(llhttp strips only the leading part), codings lowercased by the door for chunked requests.

llhttp knows a fixed list of methods and a narrower URL-scheme grammar than RFC 9112; for
a head the door approved but llhttp refuses (``FOO / HTTP/1.1``, ``get``, ``h2c+x://...``)
the head is tokenised in Python instead, so the httptools stack accepts exactly what the
h11 stack accepts.

The parser object is reused while llhttp is back at the start of a message (a request
without body, kept alive, not an upgrade), and replaced otherwise (about 0.5 µs).

Cost: this runs once per request, so the callbacks do as little as possible in Python.
``on_url`` is a list's bound ``append`` (no Python frame), ``on_header`` a closure over
another list's ``append``, and there is no ``on_message_complete``: the door's framing
(``has_body``) already says whether llhttp finished the message. A pure-Python split of the
head was measured too; it is no faster than this for a one-field GET and slower for a
browser-sized head, so llhttp keeps tokenising.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httptools

__all__ = ["HttptoolsHeadParser", "parse_head_in_python"]

_OWS = b" \t"


class HttptoolsHeadParser:
    """``HeadParser`` on ``httptools.HttpRequestParser``; see the module docstring."""

    # on_url / on_header are the llhttp callbacks, looked up by httptools once, when a
    # parser is created; they fill _urls and _fields, which parse_head empties.
    __slots__ = ("_fields", "_parser", "_urls", "on_header", "on_url")

    def __init__(self) -> None:
        self._parser: Any = None
        fields: list[tuple[bytes, bytes]] = []
        append = fields.append

        def on_header(name: bytes, value: bytes) -> None:
            append((name.lower(), value.rstrip(_OWS)))

        self._fields = fields
        self.on_header: Callable[[bytes, bytes], None] = on_header
        self._urls: list[bytes] = []
        self.on_url: Callable[[bytes], None] = self._urls.append

    def parse_head(
        self, head: bytes, has_body: bool
    ) -> tuple[bytes, bytes, list[tuple[bytes, bytes]]]:
        parser = self._parser
        if parser is None:
            parser = self._parser = httptools.HttpRequestParser(self)
        fields = self._fields
        urls = self._urls
        try:
            parser.feed_data(head)
        except httptools.HttpParserUpgrade:
            self._parser = None  # llhttp now waits in upgrade mode
        except httptools.HttpParserError:
            self._parser = None
            fields.clear()
            urls.clear()
            return parse_head_in_python(head)
        else:
            if has_body or not parser.should_keep_alive():
                self._parser = None  # mid-body or closed: llhttp cannot take the next head
        headers = fields.copy()
        fields.clear()
        # One feed holds the whole URL, so llhttp reports it in one piece.
        url = urls[0] if len(urls) == 1 else b"".join(urls)
        urls.clear()
        return parser.get_method(), url, headers


def parse_head_in_python(head: bytes) -> tuple[bytes, bytes, list[tuple[bytes, bytes]]]:
    """Tokenise a head the front door approved (so no validation is repeated here)."""
    lines = head[:-4].split(b"\r\n")
    method, target, _ = lines[0].split(b" ")
    del lines[0]
    headers = []
    for line in lines:
        name, _, value = line.partition(b":")
        headers.append((name.lower(), value.strip(_OWS)))
    return method, target, headers
