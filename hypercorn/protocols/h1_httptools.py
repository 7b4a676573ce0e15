"""Request heads tokenised by httptools (llhttp), behind the strict front door.

``HttptoolsHeadParser`` is a ``HeadParser`` (``h1_frontdoor.py``): the front door has already
delimited and validated the head, decided the body framing and will de-chunk the body, so
llhttp is only asked to split one approved head into method, target, version and fields.
That keeps the two parser stacks identical by construction on everything but tokenising,
and sidesteps two llhttp behaviours that differ from h11: it skips the body of any request
carrying ``Upgrade`` (h11 reads it, and the connection decides whether to switch), and it
reuses its state across requests (a body it was not fed would be taken for the next head).

Values come out as h11 gives them: names lowercased, surrounding whitespace removed
(llhttp strips only the leading part), codings lowercased by the door for chunked requests.

llhttp knows a fixed list of methods and a narrower URL-scheme grammar than RFC 9112; for
a head the door approved but llhttp refuses (``FOO / HTTP/1.1``, ``get``, ``h2c+x://...``)
the head is tokenised in Python instead, so the httptools stack accepts exactly what the
h11 stack accepts.

The parser object is reused while llhttp is back at the start of a message (a request
without body, kept alive, not an upgrade), and replaced otherwise (about 0.5 µs).
"""

from __future__ import annotations

from typing import Any

import httptools

from hypercorn.protocols.h1_parser import RequestHead, analyse_headers

__all__ = ["HttptoolsHeadParser", "parse_head_in_python"]

_OWS = b" \t"


class HttptoolsHeadParser:
    """``HeadParser`` on ``httptools.HttpRequestParser``; see the module docstring."""

    __slots__ = ("_complete", "_headers", "_parser", "_url")

    def __init__(self) -> None:
        self._parser: Any = None
        self._headers: list[tuple[bytes, bytes]] = []
        self._url = b""
        self._complete = False

    # llhttp callbacks (looked up by httptools once, when a parser is created).

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.lower(), value.rstrip(_OWS)))

    def on_message_complete(self) -> None:
        self._complete = True

    def parse_head(self, head: bytes) -> RequestHead:
        parser = self._parser
        if parser is None:
            parser = self._parser = httptools.HttpRequestParser(self)
        headers: list[tuple[bytes, bytes]] = []
        self._headers = headers
        self._url = b""
        self._complete = False
        try:
            parser.feed_data(head)
        except httptools.HttpParserUpgrade:
            self._parser = None  # llhttp now waits in upgrade mode
        except httptools.HttpParserError:
            self._parser = None
            return parse_head_in_python(head)
        else:
            if not (self._complete and parser.should_keep_alive()):
                self._parser = None  # mid-body or closed: llhttp cannot take the next head
        version = b"1.1" if parser.get_http_version() == "1.1" else b"1.0"
        keep_alive, expect_continue, has_body, upgrade = analyse_headers(version, headers)
        return RequestHead(
            parser.get_method(),
            self._url,
            version,
            headers,
            keep_alive,
            expect_continue,
            has_body,
            upgrade,
        )


def parse_head_in_python(head: bytes) -> RequestHead:
    """Tokenise a head the front door approved (so no validation is repeated here)."""
    lines = head[:-4].split(b"\r\n")
    method, target, version = lines[0].split(b" ")
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers.append((name.lower(), value.strip(_OWS)))
    http_version = version[5:]
    keep_alive, expect_continue, has_body, upgrade = analyse_headers(http_version, headers)
    return RequestHead(
        method, target, http_version, headers, keep_alive, expect_continue, has_body, upgrade
    )
