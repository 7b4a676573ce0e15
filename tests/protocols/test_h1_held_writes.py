"""Rule 4 of ``protocols/http1/response.py``: a streamed response's pieces are held and
written together (one write per step of the app), through the in-memory pair."""

from __future__ import annotations

from typing import Any

import h11
import pytest

from hypercorn.protocols.errors import AppProtocolError
from hypercorn.protocols.http1.response import _HOLD_BYTES, _HOLD_PIECES
from tests.support.pairs import H1Pair, parse_responses

CHUNK = b"x" * 10_240


def start(pair: H1Pair, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    pair.request()
    pair.app_send({"type": "http.response.start", "status": 200, "headers": headers or []})


def more(pair: H1Pair, body: bytes) -> None:
    pair.app_send({"type": "http.response.body", "body": body, "more_body": True})


def body_of(events: list[Any]) -> bytes:
    return b"".join(bytes(e.data) for e in events if isinstance(e, h11.Data))


@pytest.mark.parametrize("size", [10, len(CHUNK)])  # framed into one buffer / written beside
def test_pieces_of_one_step_are_one_write(size: int) -> None:
    pair = H1Pair()
    start(pair)
    for _ in range(5):
        more(pair, b"y" * size)
    assert pair.sink.writes == 0  # (the app has not yielded yet)
    pair.app_send({"type": "http.response.body", "body": b"", "more_body": False})
    assert pair.sink.writes == 1
    [events] = parse_responses(pair.new_output())
    assert isinstance(events[0], h11.Response)
    assert events[0].headers[-1] != (b"content-length", b"%d" % (5 * size))
    assert body_of(events) == b"y" * size * 5


def test_held_pieces_are_written_once_the_app_yields() -> None:
    pair = H1Pair()
    start(pair)
    more(pair, b"first")
    assert pair.sink.writes == 0
    assert len(pair.sink.soon) == 1
    pair.sink.run_soon()  # (what the loop does when the app's task waits, e.g. sleeps)
    out = bytes(pair.sink.out)
    assert out.startswith(b"HTTP/1.1 200 ")
    assert out.endswith(b"5\r\nfirst\r\n")
    assert pair.sink.writes == 1
    more(pair, b"second")
    pair.sink.run_soon()
    assert bytes(pair.sink.out).endswith(b"6\r\nsecond\r\n")
    assert pair.sink.writes == 2
    pair.app_send({"type": "http.response.body", "body": b""})
    assert bytes(pair.sink.out).endswith(b"0\r\n\r\n")
    assert pair.sink.writes == 3
    assert not pair.sink.closed  # kept alive


def test_one_flush_scheduled_per_step() -> None:
    pair = H1Pair()
    start(pair)
    for _ in range(3):
        more(pair, b"abc")
    assert len(pair.sink.soon) == 1


def test_nothing_held_past_the_limits() -> None:
    """The transport sees the bytes (and may pause the app) once this much is held."""
    pair = H1Pair()
    start(pair)
    sent = 0
    while pair.sink.writes == 0:
        more(pair, CHUNK)
        sent += len(CHUNK)
        assert sent < _HOLD_BYTES + len(CHUNK)
    assert len(pair.sink.out) >= _HOLD_BYTES
    small = H1Pair()
    start(small)
    for _ in range(_HOLD_PIECES):
        more(small, b"z")
    assert small.sink.writes == 1


def test_content_length_pieces_are_held_too() -> None:
    pair = H1Pair()
    start(pair, [(b"content-length", b"6")])
    more(pair, b"abc")
    more(pair, b"de")
    pair.app_send({"type": "http.response.body", "body": b"f"})
    assert pair.sink.writes == 1
    [events] = parse_responses(pair.new_output())
    assert body_of(events) == b"abcdef"


def test_trailers_are_written_after_what_is_held() -> None:
    pair = H1Pair()
    pair.request(headers=[("te", "trailers")])
    pair.app_send({"type": "http.response.start", "status": 200, "headers": [], "trailers": True})
    more(pair, b"abc")
    pair.app_send({"type": "http.response.body", "body": b""})
    pair.app_send({"type": "http.response.trailers", "headers": [(b"x-sum", b"1")]})
    assert pair.sink.writes == 1
    assert bytes(pair.sink.out).endswith(b"3\r\nabc\r\n0\r\nx-sum: 1\r\n\r\n")


def test_a_failing_app_gets_what_it_sent_written_before_the_close() -> None:
    pair = H1Pair()
    start(pair, [(b"content-length", b"4")])
    more(pair, b"abc")
    with pytest.raises(AppProtocolError):
        more(pair, b"de")  # longer than its content-length: the connection closes
    assert pair.sink.closed
    assert bytes(pair.sink.out).endswith(b"abc")
    pair.sink.run_soon()  # (the scheduled flush finds nothing, and writes nothing)


def test_app_finishing_mid_stream_writes_what_is_held_then_closes() -> None:
    pair = H1Pair()
    start(pair)
    more(pair, b"partial")
    pair.stream.app_finished(pair.now)
    assert pair.sink.closed
    out = bytes(pair.sink.out)
    assert out.endswith(b"7\r\npartial\r\n")
    pair.sink.run_soon()


def test_a_lost_connection_drops_what_is_held() -> None:
    pair = H1Pair()
    start(pair)
    more(pair, b"abc")
    pair.server.connection_lost()
    pair.sink.closed = True  # (the sink refuses writes from now on)
    pair.sink.run_soon()
    assert pair.sink.writes == 0


def test_next_response_follows_the_held_one() -> None:
    pair = H1Pair()
    start(pair)
    more(pair, b"one")
    pair.app_send({"type": "http.response.body", "body": b""})
    assert body_of(pair.client_events()) == b"one"
    pair.next_cycle()
    pair.request()
    pair.respond(body=b"two")
    assert body_of(pair.client_events()) == b"two"
    assert pair.sink.soon == []
