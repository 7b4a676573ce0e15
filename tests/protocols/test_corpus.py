"""Every corpus case through every parser stack and every split, bare and through the core.

The verdict (requests handed on, their bodies, the error status) must be the expected one,
and identical whatever the parser and however TCP cut the bytes.
"""

from __future__ import annotations

import pytest

from hypercorn.protocols.h1_parser import H1Parser
from hypercorn.protocols.h1_select import make_parser
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
