"""The h11 and httptools stacks give identical event sequences on the valid corpus (event by
event, body pieces included) and identical statuses on the invalid corpus, for every split."""

from __future__ import annotations

import pytest

from hypercorn.protocols.errors import RemoteProtocolError
from hypercorn.protocols.http1.parser import CLOSED, END_OF_MESSAGE, NEED_DATA, PAUSED
from hypercorn.protocols.http1.selection import make_parser
from tests.support.corpus import SPLITS, CorpusCase, load_corpus, split_bytes


def event_log(kind: str, case: CorpusCase, split: str) -> list[object]:
    """Every event (NEED_DATA included, so pacing must agree too), then the error status."""
    parser = make_parser(kind, case.limits)
    log: list[object] = []
    try:
        for piece in [*split_bytes(case.data, split), b""]:
            parser.feed(piece)
            while True:
                event = parser.next_event()
                log.append(event)
                if event is END_OF_MESSAGE:
                    parser.start_next_cycle()
                elif event in (NEED_DATA, PAUSED, CLOSED):
                    break
            if log[-1] is CLOSED:
                break
    except RemoteProtocolError as exc:
        log.append(("error", exc.status_hint))
    return log


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("case", load_corpus("valid"), ids=str)
def test_same_events_on_valid_requests(case: CorpusCase, split: str) -> None:
    h11_log = event_log("h11", case, split)
    assert h11_log == event_log("httptools", case, split)
    assert h11_log[-1] is CLOSED


@pytest.mark.parametrize("case", load_corpus("invalid"), ids=str)
def test_same_status_on_invalid_requests(case: CorpusCase) -> None:
    for split in SPLITS:
        h11_log = event_log("h11", case, split)
        assert h11_log == event_log("httptools", case, split)
        assert h11_log[-1] == ("error", case.status)
