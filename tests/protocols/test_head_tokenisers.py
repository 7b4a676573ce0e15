"""The head tokenisers (h11, httptools, the Python fallback) split every approved corpus head
identically, and the door's framing agrees with ``analyse_headers`` on ``has_body``."""

from __future__ import annotations

import pytest

from hypercorn.protocols.errors import RemoteProtocolError
from hypercorn.protocols.http1.frontdoor import _lowercase_codings
from hypercorn.protocols.http1.h11_tokeniser import H11HeadParser
from hypercorn.protocols.http1.httptools_tokeniser import HttptoolsHeadParser, parse_head_in_python
from hypercorn.protocols.http1.judge import CHUNKED, judge_head
from hypercorn.protocols.http1.parser import analyse_headers
from tests.support.corpus import CorpusCase, load_corpus


@pytest.mark.parametrize("case", load_corpus(), ids=str)
def test_tokenisers_agree(case: CorpusCase) -> None:
    data = case.data.lstrip(b"\r\n")
    if b"\r\n\r\n" not in data:
        return
    head = data[: data.index(b"\r\n\r\n") + 4]
    try:
        length = judge_head(head, case.limits)
    except RemoteProtocolError:
        return
    has_body = length != 0
    method, target, headers = parse_head_in_python(head)
    # The door lowercases transfer codings after tokenising (h11 already does).
    normalise = _lowercase_codings if length == CHUNKED else list
    tokens = (method, target, normalise(headers))
    for parsed in (
        HttptoolsHeadParser().parse_head(head, has_body),
        H11HeadParser(case.limits).parse_head(head, has_body),
    ):
        assert (parsed[0], parsed[1], normalise(parsed[2])) == tokens
    version = head[head.index(b"\r\n") - 3 : head.index(b"\r\n")]
    assert analyse_headers(version, tokens[2])[2] == has_body
    if length == CHUNKED:
        assert any(name == b"transfer-encoding" for name, _ in tokens[2])


@pytest.mark.parametrize("kind", ["h11", "httptools"])
def test_facts_use_lowercased_names_with_raw_headers(kind: str) -> None:
    from hypercorn.protocols.http1.parser import RequestHead
    from hypercorn.protocols.http1.selection import make_parser
    from hypercorn.protocols.limits import ProtocolLimits

    parser = make_parser(kind, ProtocolLimits(pass_raw_headers=True))
    parser.feed(b"GET / HTTP/1.1\r\nHOST: x\r\nConnection: close\r\nExpect: 100-continue\r\n\r\n")
    head = parser.next_event()
    assert isinstance(head, RequestHead)
    assert [name for name, _ in head.headers] == [b"HOST", b"Connection", b"Expect"]
    assert head.keep_alive is False
    assert head.expect_continue is True
