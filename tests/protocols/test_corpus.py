"""Every corpus case through every parser stack and every split, bare and through the core.

The verdict (requests handed on, their bodies, the error status) must be the expected one,
and identical whatever the parser and however TCP cut the bytes.
"""

from __future__ import annotations

import dataclasses

import pytest

from hypercorn.protocols.http1.parser import END_OF_MESSAGE, NEED_DATA, H1Parser
from hypercorn.protocols.http1.selection import make_parser
from hypercorn.protocols.limits import ProtocolLimits
from tests.support.corpus import (
    SPLITS,
    CorpusCase,
    Outcome,
    load_corpus,
    replay_core,
    replay_parser,
    split_bytes,
)

CASES = load_corpus()
PARSERS = ("h11", "httptools")


def check_expected(case: CorpusCase, outcome: Outcome, *, core: bool) -> None:
    if case.valid:
        assert outcome.status is None, case.description
        assert len(outcome.requests) == len(case.requests), case.description
        for seen, expected in zip(outcome.requests, case.requests, strict=True):
            assert seen.method == expected.method
            if not core or expected.target.startswith(b"/"):
                assert seen.target == expected.target
            assert seen.version == expected.version
            assert seen.headers == expected.headers
            assert seen.body == expected.body
            assert seen.complete
            if not core:
                assert seen.keep_alive == expected.keep_alive
                assert seen.expect_continue == expected.expect_continue
                assert seen.upgrade == expected.upgrade
    elif core and case.switch is not None:
        assert outcome.switch == case.switch, case.description
        assert outcome.status is None
        assert not outcome.requests
    else:
        assert outcome.status == case.status, case.description
        assert outcome.closed
        # Nothing after the bad request is handed on; requests before it were.
        assert len(outcome.requests) == case.dispatched, case.description


@pytest.mark.parametrize("kind", PARSERS)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_parser_stack(case: CorpusCase, kind: str) -> None:
    outcomes = {
        split: replay_parser(make_parser(kind, case.limits), split_bytes(case.data, split))
        for split in SPLITS
    }
    check_expected(case, outcomes["whole"], core=False)
    for split, outcome in outcomes.items():
        assert outcome.verdict() == outcomes["whole"].verdict(), split


@pytest.mark.parametrize("kind", PARSERS)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_through_the_core(case: CorpusCase, kind: str) -> None:
    def parser(limits: ProtocolLimits) -> H1Parser:
        return make_parser(kind, limits)

    outcomes = {
        split: replay_core(parser, case.limits, split_bytes(case.data, split)) for split in SPLITS
    }
    check_expected(case, outcomes["whole"], core=True)
    for split, outcome in outcomes.items():
        assert outcome.verdict() == outcomes["whole"].verdict(), split


@pytest.mark.parametrize("raw", [False, True])
@pytest.mark.parametrize("kind", PARSERS)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_take_head_agrees_with_the_event_path(case: CorpusCase, kind: str, raw: bool) -> None:
    """The connection's fast path either declines (consuming nothing) or hands on exactly
    the request the general path reports, already complete."""
    limits = dataclasses.replace(case.limits, pass_raw_headers=raw)
    fast = make_parser(kind, limits)
    head = fast.take_head(case.data)
    if head is None:
        assert fast.trailing_data == (b"", False)
        return
    again = make_parser(kind, limits).take_head(case.data)  # now from the memo of heads
    assert again == head
    assert again is not None
    assert again.headers is not head.headers
    slow = make_parser(kind, limits)
    slow.feed(case.data)
    assert slow.next_event() == head
    assert slow.next_event() is END_OF_MESSAGE
    assert slow.next_event() is NEED_DATA
    assert fast.next_event() is NEED_DATA  # no END_OF_MESSAGE: the head was the message
    assert not head.has_body
