"""Hypothesis against the HTTP/1.1 parser stacks and the core: random bytes, HTTP-shaped
junk and mutated corpus requests, cut at random points.

Whatever arrives: nothing but ``RemoteProtocolError`` escapes a parser (and nothing at all
escapes the core), every run ends in requests, an error with a 4xx/5xx status, or a wait for
more data, and the verdict is the same for both parsers and for every segmentation.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hypercorn.protocols.errors import RemoteProtocolError
from hypercorn.protocols.http1.judge import fast_match, judge_head, judge_head_slowly
from hypercorn.protocols.http1.parser import END_OF_MESSAGE, NEED_DATA, H1Parser
from hypercorn.protocols.http1.selection import make_parser
from hypercorn.protocols.limits import ProtocolLimits
from tests.support.corpus import Outcome, load_corpus, replay_core, replay_parser

STATUSES = {None, 400, 414, 431, 501, 505}
# Small limits so that generated inputs reach them.
LIMITS = ProtocolLimits(max_incomplete_size=512, max_request_line_size=128, max_header_count=8)
CORPUS = [case.data for case in load_corpus() if len(case.data) < 20000]

FRAGMENTS = [
    b"GET", b"POST", b"OPTIONS", b"CONNECT", b" ", b"  ", b"\t", b"/", b"/a?b=c", b"*",
    b"http://h/", b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"\r\n", b"\n", b"\r", b"\r\n\r\n",
    b"Host: a", b"Host:", b"Content-Length: 3", b"Content-Length: 0", b"Content-Length: -1",
    b"Transfer-Encoding: chunked", b"Transfer-Encoding: gzip, chunked", b"Connection: close",
    b"Expect: 100-continue", b"Upgrade: websocket", b"Connection: upgrade", b":", b";", b",",
    b"0", b"3", b"a", b"abc", b"ff", b"0x3", b"\x00", b"\x7f", b"\xff", b'"', b"=",
]  # fmt: skip

# HC_FUZZ_EXAMPLES=20000 for a long hunt; the suite's default stays bounded.
EXAMPLES = int(os.environ.get("HC_FUZZ_EXAMPLES", "200"))
fuzz = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@st.composite
def http_junk(draw: st.DrawFn) -> bytes:
    return b"".join(draw(st.lists(st.sampled_from(FRAGMENTS), max_size=40)))


@st.composite
def mutated_corpus(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(CORPUS)))
    for _ in range(draw(st.integers(1, 3))):
        pos = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["insert", "delete", "replace", "duplicate"]))
        if action == "insert":
            data[pos:pos] = draw(st.sampled_from(FRAGMENTS))
        elif action == "delete":
            del data[pos : pos + draw(st.integers(1, 8))]
        elif action == "replace" and pos < len(data):
            data[pos] = draw(st.integers(0, 255))
        else:
            data[pos:pos] = data[pos : pos + draw(st.integers(1, 40))]
    return bytes(data)


inputs = st.one_of(st.binary(max_size=300), http_junk(), mutated_corpus())


@st.composite
def cuts(draw: st.DrawFn, data: bytes) -> list[bytes]:
    points = sorted(set(draw(st.lists(st.integers(0, len(data)), max_size=12))))
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges) if b > a]


def run_parser(kind: str, pieces: list[bytes]) -> Outcome:
    parser = make_parser(kind, LIMITS)
    # replay_parser turns RemoteProtocolError into a status; anything else propagates.
    outcome = replay_parser(parser, pieces)
    assert outcome.status in STATUSES
    assert outcome.closed or outcome.status is None
    return outcome


@fuzz
@given(data=st.data(), payload=inputs)
def test_parsers_agree_on_anything(data: Any, payload: bytes) -> None:
    pieces = data.draw(cuts(payload))
    verdicts = {
        (kind, how): run_parser(kind, chunks).verdict()
        for kind in ("h11", "httptools")
        for how, chunks in (("whole", [payload]), ("cut", pieces))
    }
    assert len({repr(v) for v in verdicts.values()}) == 1, verdicts


@fuzz
@given(payload=inputs)
def test_fast_path_agrees_with_the_reference(payload: bytes) -> None:
    end = payload.find(b"\r\n\r\n")
    if end == -1:
        return
    head = payload[: end + 4]
    assert _verdict(judge_head, head) == _verdict(judge_head_slowly, head)


@fuzz
@given(payload=inputs)
def test_fast_plain_heads_have_no_fact_fields(payload: bytes) -> None:
    # take_head trusts lastindex == 1 instead of searching for Connection/Expect.
    end = payload.find(b"\r\n\r\n")
    match = None if end == -1 else fast_match(payload[: end + 4], LIMITS)
    if match is None:
        return
    names = {line.partition(b":")[0].lower() for line in payload[:end].split(b"\r\n")[1:]}
    has_facts = bool(names & {b"content-length", b"connection", b"expect"})
    assert (match.lastindex == 1) is not has_facts


@fuzz
@given(payload=inputs, raw=st.booleans())
def test_take_head_agrees_with_the_event_path(payload: bytes, raw: bool) -> None:
    # The memos of heads and lines persist between examples, as in a worker.
    limits = dataclasses.replace(LIMITS, pass_raw_headers=raw)
    for kind in ("h11", "httptools"):
        head = make_parser(kind, limits).take_head(payload)
        if head is None:
            continue
        slow = make_parser(kind, limits)
        slow.feed(payload)
        assert slow.next_event() == head
        assert slow.next_event() is END_OF_MESSAGE
        assert slow.next_event() is NEED_DATA


def _verdict(judge: Any, head: bytes) -> int:
    try:
        return int(judge(head, LIMITS))
    except RemoteProtocolError as exc:
        return -exc.status_hint


@settings(fuzz, max_examples=max(1, EXAMPLES // 2))
@given(data=st.data(), payload=inputs)
def test_the_core_survives_anything(data: Any, payload: bytes) -> None:
    pieces = data.draw(cuts(payload))
    verdicts = set()
    for kind in ("h11", "httptools"):

        def parser(limits: ProtocolLimits, kind: str = kind) -> H1Parser:
            return make_parser(kind, limits)

        outcome = replay_core(parser, LIMITS, pieces)
        assert outcome.status in STATUSES
        verdicts.add(repr(outcome.verdict()))
    assert len(verdicts) == 1
