"""The HTTP/2 attack limits of ``h2_guard``, exactly, with an explicit clock: where each one
trips, that time drains it, and that busy legitimate clients never trip it. (The same
attacks against a real worker, with RSS and a victim connection: tests/e2e/test_h2_attacks.)"""

from __future__ import annotations

import hpack
import pytest

from hypercorn.protocols.h2_guard import OVERHEAD_BURST, RESET_BURST, RESET_RATE
from hypercorn.protocols.h2_hpack import _MEMO_BLOCK, _MEMO_SIZE, BlockDecoder
from hypercorn.protocols.limits import ProtocolLimits
from tests.support.h2pair import ENGINES
from tests.support.h2raw import (
    CANCEL,
    DATA,
    END_HEADERS,
    END_STREAM,
    ENHANCE_YOUR_CALM,
    HEADERS,
    PROTOCOL_ERROR,
    REQUEST,
    RawClient,
    frame,
    ping,
    priority,
    rst_stream,
    window_update,
)


@pytest.fixture(params=sorted(ENGINES))
def engine(request: pytest.FixtureRequest) -> str:
    return request.param  # type: ignore[no-any-return]


def open_and_reset(client: RawClient, first: int, count: int) -> None:
    client.send(
        b"".join(
            frame(HEADERS, END_HEADERS, sid, client.block()) + rst_stream(sid, CANCEL)
            for sid in range(first, first + 2 * count, 2)
        )
    )


def test_rapid_reset_trips_just_over_the_burst(engine: str) -> None:
    client = RawClient(ProtocolLimits(h2_max_streams=None), engine=engine)
    open_and_reset(client, 1, RESET_BURST)
    client.alive()
    open_and_reset(client, 2 * RESET_BURST + 1, 1)
    client.connection_error(ENHANCE_YOUR_CALM)


def test_resets_spread_over_time_are_fine(engine: str) -> None:
    client = RawClient(ProtocolLimits(h2_max_streams=None), engine=engine)
    sid = 1
    for _ in range(5):
        open_and_reset(client, sid, RESET_BURST)
        sid += 2 * RESET_BURST
        client.now += RESET_BURST / RESET_RATE
    client.alive()


def test_resets_of_answered_streams_do_not_count(engine: str) -> None:
    client = RawClient(ProtocolLimits(h2_max_streams=None), engine=engine)
    for sid in range(1, 2 * (RESET_BURST + 50), 2):
        client.request(sid)
        stream = client.server._streams[sid].asgi
        stream.app_send({"type": "http.response.start", "status": 204}, client.now)
        stream.app_send({"type": "http.response.body"}, client.now)
        client.send(rst_stream(sid, CANCEL))
    client.alive()


@pytest.mark.parametrize(
    "control",
    [ping(), window_update(0, 1), frame(0xEE, 0, 0, b"x"), priority(1, 0)],
    ids=["ping", "window_update", "unknown", "priority"],
)
def test_overhead_trips_just_over_the_burst(engine: str, control: bytes) -> None:
    client = RawClient(engine=engine)
    already = len(client.received)  # (the handshake's own frames counted a little)
    client.send(control * (OVERHEAD_BURST - 10))
    assert client.goaway() is None
    client.send(control * 20)
    client.connection_error(ENHANCE_YOUR_CALM)
    assert len(client.received) >= already


def test_empty_data_frames_are_overhead(engine: str) -> None:
    client = RawClient(engine=engine)
    client.headers(1, end_stream=False)
    client.send(frame(DATA, 0, 1, b"") * (OVERHEAD_BURST + 10))
    client.connection_error(ENHANCE_YOUR_CALM)


def test_many_small_body_frames_are_progress(engine: str) -> None:
    client = RawClient(engine=engine)
    client.headers(1, end_stream=False)
    client.send(frame(DATA, 0, 1, b"x") * 20_000 + frame(DATA, END_STREAM, 1, b""))
    client.alive()
    assert client.server._streams[1].asgi.buffered == 20_000


def test_window_updates_answering_a_download_are_fine(engine: str) -> None:
    """A client may send a WINDOW_UPDATE for every DATA frame it gets: each DATA frame we
    sent pays for one."""
    client = RawClient(engine=engine)
    client.request(1)
    stream = client.server._streams[1].asgi
    stream.app_send({"type": "http.response.start", "status": 200}, client.now)
    for _ in range(OVERHEAD_BURST // 4):
        stream.app_send(
            {"type": "http.response.body", "body": b"d" * 16384 * 4, "more_body": True},
            client.now,
        )
        data = [f for f in client.frames() if f.type == DATA]
        client.send(b"".join(window_update(0, len(f.data)) for f in data))
        client.send(b"".join(window_update(1, len(f.data)) for f in data))
    client.alive()


def test_highest_stream_id_then_no_more(engine: str) -> None:
    client = RawClient(engine=engine)
    client.request(2**31 - 1)
    assert (2**31 - 1) in client.server._streams
    client.alive()
    client.request(2**31 - 3)
    client.connection_error(PROTOCOL_ERROR)


def test_priority_loops_cannot_form(engine: str) -> None:
    """No priority tree is kept: a dependency cycle is just two ignored frames."""
    client = RawClient(engine=engine)
    client.send(priority(1, 3), priority(3, 5), priority(5, 1))
    client.request(1)
    client.request(3)
    client.alive()


def test_streams_after_keep_alive_max_requests_are_refused(engine: str) -> None:
    client = RawClient(ProtocolLimits(h2_max_streams=3), engine=engine)
    for sid in (1, 3, 5, 7):
        client.headers(sid, REQUEST, end_stream=True)
    goaway = client.goaway()
    assert goaway is not None
    assert goaway.last_stream_id == 5
    assert client.resets(7) == [0x7]  # REFUSED_STREAM: the client retries it elsewhere


def test_fast_engine_hpack_memo_is_bounded() -> None:
    """The fast engine memoises decoded request blocks: a client sending ever new or large
    ones gets them decoded (and checked) every time, and the memo stays small."""
    decoder = BlockDecoder(2**16)
    base = b"\x82\x86\x84\x01\x01x"  # GET http / with :authority x
    for n in range(3 * _MEMO_SIZE):
        value = str(n).encode() * (1 if n % 2 else 1000)  # (every other one is large)
        length = hpack.hpack.encode_integer(len(value), 7)
        block = base + b"\x00\x03x-n" + bytes(length) + value  # literal, not indexed
        headers, _, _ = decoder.request(block)
        assert headers[-1] == (b"x-n", value)
    memo = decoder._memo
    assert 0 < len(memo) <= _MEMO_SIZE
    assert max(len(block) for block, _ in memo) <= _MEMO_BLOCK
