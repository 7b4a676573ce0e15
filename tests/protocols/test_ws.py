"""The WebSocket session: RFC 6455 close codes for hostile frames, limits, pings, back-pressure.

In memory, over the HTTP/1.1 upgrade, with a real wsproto client for the well-formed side
and hand-built frames (``frame``) for everything a well-behaved client cannot send.
"""

from __future__ import annotations

import functools
import struct
import zlib
from typing import Any

import pytest
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage
from wsproto.extensions import PerMessageDeflate

from hypercorn.protocols.limits import ProtocolLimits
from hypercorn.protocols.ws import CLOSE_TIMEOUT, WsState
from tests.support.pairs import SPLITS
from tests.support.wspair import WsPair, close_payload, frame

pytestmark = pytest.mark.usefixtures("ws_framing")  # fast path and wsproto alike


@pytest.fixture(params=SPLITS)
def split(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def connected(split: str = "whole", *, extensions: Any = None, **limits: Any) -> WsPair:
    p = WsPair(ProtocolLimits(**limits), split=split)
    p.connect(extensions=extensions)
    return p


def server_close_code(p: WsPair) -> int:
    closes = [e for e in p.events() if isinstance(e, CloseConnection)]
    assert closes, "the server sent no close frame"
    return int(closes[0].code)


def assert_failed(p: WsPair, code: int) -> None:
    """The server sent close ``code``, closed the socket, and told the app the same code."""
    assert server_close_code(p) == code
    assert p.sink.closed
    assert p.session is not None
    assert p.session.state is WsState.CLOSED
    messages = p.receive_all()
    assert messages[-1]["type"] == "websocket.disconnect"
    assert messages[-1]["code"] == code


# -- RFC 6455 protocol errors: 1002 -------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(frame(0x1, b"unmasked", mask=False), id="unmasked"),
        pytest.param(frame(0x1, b"x", rsv=0b010), id="rsv2"),
        pytest.param(frame(0x1, b"x", rsv=0b001), id="rsv3"),
        pytest.param(frame(0x1, b"x", rsv=0b100), id="rsv1-without-deflate"),
        pytest.param(frame(0x3, b"x"), id="reserved-data-opcode"),
        pytest.param(frame(0xB, b"x"), id="reserved-control-opcode"),
        pytest.param(frame(0x9, b"x", fin=False), id="fragmented-ping"),
        pytest.param(frame(0x9, b"x" * 126), id="oversized-ping"),
        pytest.param(frame(0x8, b"x" * 126), id="oversized-close"),
        pytest.param(frame(0x0, b"x"), id="continuation-without-start"),
        pytest.param(frame(0x1, b"a", fin=False) + frame(0x1, b"b"), id="text-inside-text"),
        pytest.param(frame(0x8, b"\x03"), id="one-byte-close"),
        pytest.param(frame(0x8, close_payload(999)), id="close-code-999"),
        pytest.param(frame(0x8, close_payload(1005)), id="close-code-1005"),
        pytest.param(frame(0x8, close_payload(1006)), id="close-code-1006"),
        pytest.param(frame(0x8, close_payload(2000)), id="close-code-2000"),
        pytest.param(frame(0x8, close_payload(5000)), id="close-code-5000"),
        pytest.param(
            bytes((0x81, 0x80 | 126)) + struct.pack("!H", 5) + b"mask12345", id="long-length-form"
        ),
    ],
)
def test_protocol_errors_close_1002(data: bytes, split: str) -> None:
    p = connected(split)
    p.feed(data)
    assert_failed(p, 1002)


# -- invalid UTF-8: 1007 --------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(frame(0x1, b"\xff"), id="invalid-byte"),
        pytest.param(frame(0x1, "é".encode()[:1]), id="truncated-sequence"),
        pytest.param(frame(0x1, b"ok\xed\xa0\x80", fin=True), id="surrogate"),
        pytest.param(frame(0x1, b"\xce", fin=False) + frame(0x0, b"\xff"), id="across-fragments"),
        pytest.param(frame(0x8, close_payload(1000, b"\xff")), id="close-reason"),
    ],
)
def test_invalid_utf8_closes_1007(data: bytes, split: str) -> None:
    p = connected(split)
    p.feed(data)
    assert_failed(p, 1007)


def test_utf8_split_across_fragments_is_fine(split: str) -> None:
    p = connected(split)
    encoded = "é€".encode()
    p.feed(frame(0x1, encoded[:1], fin=False) + frame(0x0, encoded[1:4], fin=False))
    p.feed(frame(0x0, encoded[4:]))
    assert p.receive()["text"] == "é€"  # type: ignore[index]


# -- limits: 1009 ---------------------------------------------------------------------------


def test_message_at_the_limit_passes_one_over_closes_1009(split: str) -> None:
    p = connected(split, websocket_max_message_size=100)
    p.send_ws(BytesMessage(data=b"x" * 100))
    assert p.receive()["bytes"] == b"x" * 100  # type: ignore[index]
    p.send_ws(TextMessage(data="y" * 101))
    assert_failed(p, 1009)


def test_fragmented_message_over_the_limit_closes_1009(split: str) -> None:
    p = connected(split, websocket_max_message_size=100)
    for _ in range(2):
        p.send_ws(BytesMessage(data=b"x" * 40, message_finished=False))
    assert p.receive() is None
    p.send_ws(BytesMessage(data=b"x" * 40))
    assert_failed(p, 1009)


def test_oversized_frame_is_refused_from_its_header() -> None:
    """A declared length over the limit fails before a byte of its payload is read."""
    p = connected(websocket_max_message_size=1000)
    p.feed(bytes((0x82, 0x80 | 127)) + struct.pack("!Q", 2**40) + b"mask")
    assert_failed(p, 1009)


def _deflated(data: bytes) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    out = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


@functools.cache
def _bomb() -> bytes:
    return _deflated(b"\x00" * 50_000_000)


def test_compressed_message_inflating_past_the_limit_closes_1009(split: str) -> None:
    """A decompression bomb (50 MB of zeros in ~50 KB) is inflated with a bound: the
    server never holds more than the limit and closes 1009."""
    limit = 1 << 20
    p = connected(split, extensions=[PerMessageDeflate()], websocket_max_message_size=limit)
    extension = p.stream.extension
    assert extension is not None
    bomb = _bomb()
    assert len(bomb) < 100_000
    p.feed(frame(0x2, bomb, rsv=0b100))
    assert_failed(p, 1009)
    assert extension._inflated <= limit + 1


def test_compressed_message_within_the_limit(split: str) -> None:
    p = connected(split, extensions=[PerMessageDeflate()], websocket_max_message_size=10_000)
    p.feed(frame(0x2, _deflated(b"z" * 10_000), rsv=0b100))
    assert p.receive()["bytes"] == b"z" * 10_000  # type: ignore[index]


def test_compressed_fragments_over_the_limit_close_1009() -> None:
    p = connected(extensions=[PerMessageDeflate()], websocket_max_message_size=10_000)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = compressor.compress(b"a" * 6000) + compressor.flush(zlib.Z_SYNC_FLUSH)
    second = compressor.compress(b"a" * 6000) + compressor.flush(zlib.Z_SYNC_FLUSH)
    p.feed(frame(0x2, first, rsv=0b100, fin=False))
    assert p.receive() is None
    p.feed(frame(0x0, second[:-4]))
    assert_failed(p, 1009)


def test_bad_deflate_data_closes_1007() -> None:
    p = connected(extensions=[PerMessageDeflate()])
    p.feed(frame(0x2, b"\xff\xff\xff\xff garbage", rsv=0b100))
    assert_failed(p, 1007)


def test_rsv1_on_a_continuation_is_a_protocol_error() -> None:
    p = connected(extensions=[PerMessageDeflate()])
    p.feed(frame(0x2, _deflated(b"a"), rsv=0b100, fin=False) + frame(0x0, b"", rsv=0b100))
    assert_failed(p, 1002)


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"server_no_context_takeover": True, "client_no_context_takeover": True},
        {"server_max_window_bits": 10, "client_max_window_bits": 9},
    ],
)
def test_deflate_round_trips_under_each_parameter(params: dict[str, Any]) -> None:
    p = connected(extensions=[PerMessageDeflate(**params)])
    for index in range(3):
        text = f"message {index} " * 50
        p.send_ws(TextMessage(data=text))
        assert p.receive()["text"] == text  # type: ignore[index]
        p.app_send({"type": "websocket.send", "text": text})
        assert [e.data for e in p.events()] == [text]


# -- control frames -------------------------------------------------------------------------


def test_ping_is_answered_with_its_payload(split: str) -> None:
    p = connected(split)
    p.send_ws(Ping(payload=b"are you there"))
    assert [type(e) for e in p.events()] == [Pong]
    p.feed(frame(0x9, b"", fin=True))
    (pong,) = p.events()
    assert pong.payload == b""


def test_ping_between_fragments_is_answered(split: str) -> None:
    p = connected(split)
    p.feed(frame(0x1, b"frag", fin=False) + frame(0x9, b"p") + frame(0x0, b"ment"))
    (pong,) = p.events()
    assert isinstance(pong, Pong)
    assert p.receive()["text"] == "fragment"  # type: ignore[index]


def test_unsolicited_pong_is_ignored() -> None:
    p = connected()
    p.send_ws(Pong(payload=b"x"))
    assert p.events() == []
    assert p.receive() is None


def test_pings_keep_a_live_peer_and_drop_a_dead_one() -> None:
    p = connected(websocket_ping_interval=10.0)
    p.advance(9.9)
    assert p.events() == []
    p.advance(0.2)
    (ping,) = p.events()
    assert isinstance(ping, Ping)
    p.send_ws(ping.response())
    p.advance(10.0)
    (ping,) = p.events()
    assert isinstance(ping, Ping)  # answered: a second ping, not a drop
    p.advance(10.0)  # this one goes unanswered
    assert p.sink.aborted
    assert p.receive_all()[-1] == {"type": "websocket.disconnect", "code": 1006, "reason": ""}


def test_no_pings_without_an_interval() -> None:
    p = connected()
    assert p.session is not None
    assert p.session.next_deadline() is None


# -- back-pressure --------------------------------------------------------------------------


def test_an_app_that_does_not_receive_stops_reading_after_a_bound() -> None:
    p = connected(websocket_queue_size=4)
    p.feed(b"".join(frame(0x1, b"m%d" % i) for i in range(3)))
    assert not p.sink.reading_paused
    p.feed(frame(0x1, b"m3"))
    assert p.sink.reading_paused
    p.receive()
    assert p.sink.reading_paused  # 3 still queued: more than half the bound
    p.receive()
    assert not p.sink.reading_paused


def test_queued_bytes_bound_reading_too() -> None:
    p = connected(body_buffer_size=1000)
    p.send_ws(BytesMessage(data=b"x" * 600))
    assert not p.sink.reading_paused
    p.send_ws(BytesMessage(data=b"x" * 600))
    assert p.sink.reading_paused
    p.receive()
    p.receive()
    assert not p.sink.reading_paused


def test_a_peer_that_does_not_read_is_aborted_after_write_timeout() -> None:
    p = connected(write_timeout=30.0)
    assert p.session is not None
    p.session.write_paused(p.now)
    p.advance(29.0)
    assert not p.sink.closed
    p.advance(2.0)
    assert p.sink.aborted
    assert p.receive_all()[-1]["code"] == 1006
    assert p.stream.disconnected


def test_write_resumed_cancels_the_write_deadline() -> None:
    p = connected(write_timeout=30.0)
    assert p.session is not None
    p.session.write_paused(p.now)
    p.session.write_resumed(p.now)
    p.advance(31.0)
    assert not p.sink.closed


def test_closing_resumes_a_paused_reader_to_find_the_close() -> None:
    p = connected(websocket_queue_size=1)
    p.feed(frame(0x1, b"fill"))
    assert p.sink.reading_paused
    p.app_send({"type": "websocket.close", "code": 1000})
    assert not p.sink.reading_paused
    p.feed(frame(0x8, close_payload(1000)))
    assert p.sink.closed


# -- closing --------------------------------------------------------------------------------


def test_data_after_the_close_frame_is_ignored() -> None:
    p = connected()
    p.feed(frame(0x8, close_payload(1000)) + frame(0x1, b"after"))
    assert [m["type"] for m in p.receive_all()] == ["websocket.disconnect"]


def test_connection_lost_disconnects_the_app() -> None:
    p = connected()
    assert p.session is not None
    p.session.connection_lost()
    assert p.receive_all() == [{"type": "websocket.disconnect", "code": 1006, "reason": ""}]
    assert p.session.closed


def test_shutdown_close_times_out() -> None:
    p = connected()
    assert p.session is not None
    p.session.start_shutdown(p.now)
    p.advance(CLOSE_TIMEOUT + 0.1)
    assert p.sink.closed
    assert p.receive_all()[-1]["code"] == 1006


# -- mixed bursts (the fast path hands over to wsproto mid-buffer and back) -------------------


def test_a_burst_of_mixed_frames_in_one_read(split: str) -> None:
    p = connected(split)
    burst = (
        frame(0x1, b"one")
        + frame(0x2, b"\x00" * 200)  # 16-bit length form
        + frame(0x9, b"ping")
        + frame(0x1, b"fr", fin=False)
        + frame(0x0, b"ag")
        + frame(0x1, "é".encode())
        + frame(0x2, b"")
    )
    p.feed(burst)
    assert [m["text"] if m["text"] is not None else m["bytes"] for m in p.receive_all()] == [
        "one",
        b"\x00" * 200,
        "frag",
        "é",
        b"",
    ]
    (pong,) = p.events()
    assert pong.payload == b"ping"


def test_take_frames_declines_what_it_does_not_read() -> None:
    from hypercorn.protocols.ws_fast import frame_message, take_frames

    good = frame(0x1, b"ok")
    for tail in (
        frame(0x9, b""),
        frame(0x1, b"x", fin=False),
        frame(0x1, b"x", rsv=0b100),
        frame(0x1, b"x", mask=False),
        frame(0x1, b"\xff"),
        frame(0x2, b"x" * 70000),
        frame(0x2, b"x" * 11),  # over the limit below
        good[:-1],  # incomplete
    ):
        assert take_frames(good + tail, 10) == (["ok"], len(good))
    # A read that is exactly one small frame (the usual case, taken without the loop).
    assert take_frames(frame(0x1, "é".encode()), 10) == (["é"], 8)
    assert take_frames(frame(0x2, b"\x00\x01"), 10) == ([b"\x00\x01"], 8)
    assert take_frames(frame(0x1, b"\xff\xfe"), 10) == ([], 0)
    assert take_frames(frame(0x9, b"pi"), 10) == ([], 0)
    assert take_frames(frame(0x2, b"x" * 11), 10) == ([], 0)
    assert frame_message("hé") == b"\x81\x03h\xc3\xa9"
    assert frame_message(b"x" * 200)[:4] == b"\x82\x7e\x00\xc8"
    assert frame_message(b"x" * 70000)[:2] == b"\x82\x7f"
