"""h2spec's server sections, with raw frames: every RFC 9113 / RFC 7541 outcome it checks.

h2spec itself cannot be installed here (no Go toolchain reaches its source), so each of its
server test groups is a case below, named after its section, driving an in-memory
``H2Connection`` with hand-built frames (``tests/support/h2raw.py``) on every engine. The
verdicts follow h2spec's: a *connection error* is GOAWAY with the code and a close; a
*stream error* is RST_STREAM with the code, or a connection error with it.
"""

from __future__ import annotations

import struct

import pytest
from hyperframe.frame import SettingsFrame

from hypercorn.protocols import h2_fast
from hypercorn.protocols.limits import ProtocolLimits
from tests.support.h2pair import ENGINES, PREFACE
from tests.support.h2raw import (
    ACK,
    COMPRESSION_ERROR,
    CONTINUATION,
    DATA,
    END_HEADERS,
    END_STREAM,
    FLOW_CONTROL_ERROR,
    FRAME_SIZE_ERROR,
    GOAWAY,
    HEADERS,
    PADDED,
    PING,
    PRIORITY,
    PRIORITY_FLAG,
    PROTOCOL_ERROR,
    PUSH_PROMISE,
    REFUSED_STREAM,
    REQUEST,
    RST_STREAM,
    SETTINGS,
    STREAM_CLOSED,
    WINDOW_UPDATE,
    RawClient,
    frame,
    ping,
    priority,
    rst_stream,
    settings,
    window_update,
)


@pytest.fixture(params=sorted(ENGINES))
def client(request: pytest.FixtureRequest) -> RawClient:
    return RawClient(engine=request.param)


@pytest.fixture(params=sorted(ENGINES))
def engine(request: pytest.FixtureRequest) -> str:
    return request.param  # type: ignore[no-any-return]


# -- 3.4 / 3.5 connection preface -------------------------------------------------------------


def test_3_5_server_preface_is_settings(client: RawClient) -> None:
    first = client.received[0]
    assert isinstance(first, SettingsFrame)
    assert "ACK" not in first.flags
    # Our SETTINGS is acknowledged.
    assert any(f.type == SETTINGS and "ACK" in f.flags for f in client.received)


def test_3_5_invalid_preface(engine: str) -> None:
    client = RawClient(engine=engine, preface=False)
    client.send(b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n")
    assert client.closed


def test_3_5_preface_then_no_settings_is_protocol_error(engine: str) -> None:
    client = RawClient(engine=engine, preface=False)
    client.send(PREFACE + ping())
    client.connection_error(PROTOCOL_ERROR)


# -- 4.1 frame format, 4.2 frame size -------------------------------------------------------------


def test_4_1_unknown_frame_type_is_ignored(client: RawClient) -> None:
    client.send(frame(0x20, 0, 0, b"ignored"))
    client.alive()


def test_4_1_undefined_flags_are_ignored(client: RawClient) -> None:
    client.send(frame(PING, 0x16, 0, b"abcdefgh"))
    acks = [f for f in client.frames() if f.type == PING]
    assert [a.opaque_data for a in acks] == [b"abcdefgh"]


def test_4_1_reserved_bit_is_ignored(client: RawClient) -> None:
    client.send(frame(PING, 0, 0x80000000, b"abcdefgh"))
    assert any(f.type == PING for f in client.frames())


def test_4_2_data_over_max_frame_size(client: RawClient) -> None:
    client.request(1, end_stream=False)
    client.send(frame(DATA, 0, 1, b"x" * 16385))
    client.stream_error(1, FRAME_SIZE_ERROR)


def test_4_2_headers_over_max_frame_size(client: RawClient) -> None:
    client.headers(1, block=b"\x00" * 16385)  # (the size is judged before the block)
    client.connection_error(FRAME_SIZE_ERROR)


def test_4_2_larger_frames_when_allowed(engine: str) -> None:
    client = RawClient(ProtocolLimits(h2_max_inbound_frame_size=32768), engine=engine)
    client.request(1, end_stream=False)
    client.send(frame(DATA, END_STREAM, 1, b"x" * 20000))
    client.alive()
    assert client.server._streams[1].asgi.buffered == 20000


# -- 4.3 header compression ---------------------------------------------------------------------


def test_4_3_invalid_header_block(client: RawClient) -> None:
    client.headers(1, block=b"\xff\xff\xff\xff")  # an index far out of range
    client.connection_error(COMPRESSION_ERROR)


def test_4_3_header_block_split_by_another_frame(client: RawClient) -> None:
    block = client.block()
    client.send(
        frame(HEADERS, END_STREAM, 1, block[:2]),
        ping(),
        frame(CONTINUATION, END_HEADERS, 1, block[2:]),
    )
    client.connection_error(PROTOCOL_ERROR)


# -- 5.1 stream states ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "hostile",
    [
        pytest.param(frame(DATA, 0, 1, b"x"), id="data"),
        pytest.param(rst_stream(1, 0), id="rst_stream"),
        pytest.param(window_update(1, 100), id="window_update"),
        pytest.param(frame(CONTINUATION, END_HEADERS, 1, b""), id="continuation"),
    ],
)
def test_5_1_idle_stream(client: RawClient, hostile: bytes) -> None:
    client.send(hostile)
    client.connection_error(PROTOCOL_ERROR)


def test_5_1_half_closed_remote_data(client: RawClient) -> None:
    client.request(1)  # END_STREAM: half-closed (remote) for the server
    client.send(frame(DATA, 0, 1, b"x"))
    client.stream_error(1, STREAM_CLOSED)


def test_5_1_half_closed_remote_headers(client: RawClient) -> None:
    client.request(1)
    client.headers(1)
    client.stream_error(1, STREAM_CLOSED)


def test_5_1_closed_after_reset_data(client: RawClient) -> None:
    client.request(1, end_stream=False)
    client.send(rst_stream(1, 0x8))
    client.send(frame(DATA, 0, 1, b"x"))
    client.stream_error(1, STREAM_CLOSED)


def test_5_1_closed_streams_are_remembered_within_a_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The fast engine remembers how the newest closed streams closed, and forgets the
    oldest once it holds ``_CLOSED_MEMORY``: a long-lived connection's memory stays bounded."""
    monkeypatch.setattr(h2_fast, "_CLOSED_MEMORY", 8)
    client = RawClient(engine="fast")
    ids = range(1, 81, 2)  # 40 streams, each reset by the client
    for stream_id in ids:
        client.request(stream_id, end_stream=False)
        client.send(rst_stream(stream_id, 0x8))
    client.send(frame(DATA, 0, ids[-1], b"x"))  # remembered: closed by a reset
    client.stream_error(ids[-1], STREAM_CLOSED)
    client.alive()
    client.send(frame(DATA, 0, ids[0], b"x"))  # forgotten: only "closed before" is known
    client.connection_error(PROTOCOL_ERROR)


def test_5_1_priority_on_half_closed_is_fine(client: RawClient) -> None:
    client.request(1)
    client.send(priority(1, 0))
    client.alive()


def test_5_1_1_even_stream_id(client: RawClient) -> None:
    client.request(2)
    client.connection_error(PROTOCOL_ERROR)


def test_5_1_1_decreasing_stream_id(client: RawClient) -> None:
    client.request(5)
    client.request(3)
    client.connection_error(PROTOCOL_ERROR)


def test_5_1_2_concurrent_stream_limit(engine: str) -> None:
    client = RawClient(ProtocolLimits(h2_max_concurrent_streams=2), engine=engine)
    for stream_id in (1, 3, 5):
        client.request(stream_id, end_stream=False)
    client.stream_error(5, REFUSED_STREAM, PROTOCOL_ERROR)
    assert not client.resets(1)
    assert not client.resets(3)


# -- 5.3 priority, 5.4 error handling, 5.5 extensions ---------------------------------------------


def test_5_3_1_stream_depends_on_itself_priority(client: RawClient) -> None:
    client.send(priority(1, 1))
    client.stream_error(1, PROTOCOL_ERROR)


def test_5_3_1_stream_depends_on_itself_headers(client: RawClient) -> None:
    payload = struct.pack(">IB", 1, 15) + client.block()
    client.send(frame(HEADERS, END_HEADERS | END_STREAM | PRIORITY_FLAG, 1, payload))
    client.stream_error(1, PROTOCOL_ERROR)


def test_5_4_1_connection_error_is_goaway_then_close(client: RawClient) -> None:
    client.request(1)
    client.send(frame(DATA, 0, 0, b"x"))
    goaway = client.goaway()
    assert goaway is not None
    assert goaway.last_stream_id == 1
    client.connection_error(PROTOCOL_ERROR)


def test_5_5_unknown_extension_frame_ignored(client: RawClient) -> None:
    client.request(1, end_stream=False)
    client.send(frame(0xEE, 0xFF, 1, b"whatever"))
    client.alive()


def test_5_5_unknown_frame_inside_header_block(client: RawClient) -> None:
    block = client.block()
    client.send(frame(HEADERS, END_STREAM, 1, block[:2]), frame(0xEE, 0, 1, b"x"))
    client.connection_error(PROTOCOL_ERROR)


# -- 6.1 DATA, 6.2 HEADERS, 6.3 PRIORITY, 6.4 RST_STREAM ----------------------------------------


def test_6_1_data_on_stream_0(client: RawClient) -> None:
    client.send(frame(DATA, 0, 0, b"x"))
    client.connection_error(PROTOCOL_ERROR)


def test_6_1_data_with_bad_padding(client: RawClient) -> None:
    client.request(1, end_stream=False)
    client.send(frame(DATA, PADDED, 1, b"\x09abc"))  # pad length > payload
    client.connection_error(PROTOCOL_ERROR)


def test_6_1_padded_data_counts_its_padding(client: RawClient) -> None:
    client.request(1, end_stream=False)
    client.send(frame(DATA, PADDED | END_STREAM, 1, b"\x03abc\x00\x00\x00"))
    client.alive()
    assert client.server._streams[1].asgi.buffered == 3


def test_6_2_headers_on_stream_0(client: RawClient) -> None:
    client.headers(0)
    client.connection_error(PROTOCOL_ERROR)


def test_6_2_headers_with_bad_padding(client: RawClient) -> None:
    block = client.block()
    client.send(frame(HEADERS, END_HEADERS | PADDED, 1, bytes([len(block) + 5]) + block))
    client.connection_error(PROTOCOL_ERROR)


def test_6_3_priority_on_stream_0(client: RawClient) -> None:
    client.send(priority(0, 1))
    client.connection_error(PROTOCOL_ERROR)


def test_6_3_priority_with_bad_length(client: RawClient) -> None:
    client.request(1, end_stream=False)
    client.send(frame(PRIORITY, 0, 1, b"\x00\x00\x00\x00"))
    client.stream_error(1, FRAME_SIZE_ERROR)


def test_6_4_rst_stream_on_stream_0(client: RawClient) -> None:
    client.send(rst_stream(0, 0))
    client.connection_error(PROTOCOL_ERROR)


def test_6_4_rst_stream_with_bad_length(client: RawClient) -> None:
    client.request(1, end_stream=False)
    client.send(frame(RST_STREAM, 0, 1, b"\x00\x00\x00"))
    client.connection_error(FRAME_SIZE_ERROR)


# -- 6.5 SETTINGS ---------------------------------------------------------------------------------


def test_6_5_settings_ack_with_payload(client: RawClient) -> None:
    client.send(frame(SETTINGS, ACK, 0, b"\x00\x01\x00\x00\x10\x00"))
    client.connection_error(FRAME_SIZE_ERROR)


def test_6_5_settings_on_a_stream(client: RawClient) -> None:
    client.send(frame(SETTINGS, 0, 1, b""))
    client.connection_error(PROTOCOL_ERROR)


def test_6_5_settings_bad_length(client: RawClient) -> None:
    client.send(frame(SETTINGS, 0, 0, b"\x00\x01\x00\x00\x10"))
    client.connection_error(FRAME_SIZE_ERROR)


@pytest.mark.parametrize(
    ("setting", "code"),
    [
        pytest.param((0x2, 2), PROTOCOL_ERROR, id="enable_push-2"),
        pytest.param((0x4, 2**31), FLOW_CONTROL_ERROR, id="initial_window-too-big"),
        pytest.param((0x5, 16383), PROTOCOL_ERROR, id="max_frame-too-small"),
        pytest.param((0x5, 2**24), PROTOCOL_ERROR, id="max_frame-too-big"),
    ],
)
def test_6_5_2_invalid_settings_values(
    client: RawClient, setting: tuple[int, int], code: int
) -> None:
    client.send(settings(setting))
    client.connection_error(code)


def test_6_5_2_unknown_setting_ignored(client: RawClient) -> None:
    client.send(settings((0xFF, 1)))
    client.alive()


def test_6_5_3_settings_are_acknowledged(client: RawClient) -> None:
    client.send(settings((0x3, 10)))
    assert any(f.type == SETTINGS and "ACK" in f.flags for f in client.frames())


# -- 6.7 PING, 6.8 GOAWAY -------------------------------------------------------------------------


def test_6_7_ping_is_answered_with_its_data(client: RawClient) -> None:
    client.send(ping(b"\x01\x02\x03\x04\x05\x06\x07\x08"))
    acks = [f for f in client.frames() if f.type == PING]
    assert [(a.opaque_data, "ACK" in a.flags) for a in acks] == [
        (b"\x01\x02\x03\x04\x05\x06\x07\x08", True)
    ]


def test_6_7_ping_ack_is_not_answered(client: RawClient) -> None:
    client.send(ping(ack=True))
    assert not [f for f in client.frames() if f.type == PING]


def test_6_7_ping_on_a_stream(client: RawClient) -> None:
    client.send(frame(PING, 0, 1, b"12345678"))
    client.connection_error(PROTOCOL_ERROR)


def test_6_7_ping_bad_length(client: RawClient) -> None:
    client.send(frame(PING, 0, 0, b"1234567"))
    client.connection_error(FRAME_SIZE_ERROR)


def test_6_8_goaway_on_a_stream(client: RawClient) -> None:
    client.send(frame(GOAWAY, 0, 1, b"\x00\x00\x00\x00\x00\x00\x00\x00"))
    client.connection_error(PROTOCOL_ERROR)


# -- 6.9 WINDOW_UPDATE ---------------------------------------------------------------------------


def test_6_9_zero_increment_on_the_connection(client: RawClient) -> None:
    client.send(window_update(0, 0))
    client.connection_error(PROTOCOL_ERROR)


def test_6_9_zero_increment_on_a_stream(client: RawClient) -> None:
    client.request(1, end_stream=False)
    client.send(window_update(1, 0))
    client.stream_error(1, PROTOCOL_ERROR)


def test_6_9_bad_length(client: RawClient) -> None:
    client.send(frame(WINDOW_UPDATE, 0, 0, b"\x00\x00\x01"))
    client.connection_error(FRAME_SIZE_ERROR)


def test_6_9_1_connection_window_overflow(client: RawClient) -> None:
    client.send(window_update(0, 2**31 - 1))
    client.connection_error(FLOW_CONTROL_ERROR)


def test_6_9_1_stream_window_overflow(client: RawClient) -> None:
    client.request(1, end_stream=False)
    client.send(window_update(1, 2**31 - 1))
    client.stream_error(1, FLOW_CONTROL_ERROR)


def test_6_9_1_data_beyond_our_window(client: RawClient) -> None:
    client.request(1, end_stream=False)
    for _ in range(4):
        client.send(frame(DATA, 0, 1, b"x" * 16384))
    client.send(frame(DATA, 0, 1, b"x" * 100))  # 65,636 > 65,535
    client.stream_error(1, FLOW_CONTROL_ERROR)


def test_6_9_2_initial_window_change_applies_to_open_streams(engine: str) -> None:
    client = RawClient(engine=engine, preface=False)
    client.send(PREFACE + settings((0x4, 1)))
    client.request(1)
    stream = client.server._streams[1].asgi
    stream.app_send({"type": "http.response.start", "status": 200}, client.now)
    stream.app_send({"type": "http.response.body", "body": b"abc"}, client.now)
    data = [f for f in client.frames() if f.type == DATA]
    assert [f.data for f in data] == [b"a"]
    client.send(settings((0x4, 3)))
    data = [f for f in client.frames() if f.type == DATA]
    assert [f.data for f in data] == [b"bc"]
    assert "END_STREAM" in data[-1].flags


# -- 6.10 CONTINUATION ---------------------------------------------------------------------------


def test_6_10_continuations_make_one_block(client: RawClient) -> None:
    block = client.block()
    client.send(
        frame(HEADERS, END_STREAM, 1, block[:1]),
        frame(CONTINUATION, 0, 1, block[1:2]),
        frame(CONTINUATION, END_HEADERS, 1, block[2:]),
    )
    client.alive()
    assert 1 in client.server._streams


def test_6_10_continuation_after_end_headers(client: RawClient) -> None:
    client.request(1, end_stream=False)
    client.send(frame(CONTINUATION, END_HEADERS, 1, client.block()))
    client.connection_error(PROTOCOL_ERROR)


def test_6_10_continuation_on_another_stream(client: RawClient) -> None:
    block = client.block()
    client.send(
        frame(HEADERS, END_STREAM, 1, block[:2]), frame(CONTINUATION, END_HEADERS, 3, block[2:])
    )
    client.connection_error(PROTOCOL_ERROR)


def test_6_10_continuation_on_stream_0(client: RawClient) -> None:
    block = client.block()
    client.send(
        frame(HEADERS, END_STREAM, 1, block[:2]), frame(CONTINUATION, END_HEADERS, 0, block[2:])
    )
    client.connection_error(PROTOCOL_ERROR)


# -- 8.1 HTTP message exchanges ------------------------------------------------------------------


def test_8_1_trailers_without_end_stream(client: RawClient) -> None:
    client.request(1, end_stream=False)
    client.send(frame(DATA, 0, 1, b"x"))
    client.headers(1, [(b"x-trailer", b"1")], end_stream=False)
    client.stream_error(1, PROTOCOL_ERROR)


_BAD_HEADS = {
    "uppercase-name": [*REQUEST, (b"X-Upper", b"1")],
    "unknown-pseudo": [*REQUEST, (b":custom", b"1")],
    "response-pseudo": [*REQUEST, (b":status", b"200")],
    "pseudo-after-regular": [
        (b":method", b"GET"),
        (b":scheme", b"http"),
        (b"x", b"1"),
        (b":path", b"/"),
        (b":authority", b"x"),
    ],
    "connection-specific": [*REQUEST, (b"connection", b"keep-alive")],
    "te-not-trailers": [*REQUEST, (b"te", b"gzip")],
    "missing-method": [h for h in REQUEST if h[0] != b":method"],
    "missing-scheme": [h for h in REQUEST if h[0] != b":scheme"],
    "missing-path": [h for h in REQUEST if h[0] != b":path"],
    "empty-path": [
        (b":method", b"GET"),
        (b":scheme", b"http"),
        (b":path", b""),
        (b":authority", b"x"),
    ],
    "duplicate-method": [*REQUEST[:1], *REQUEST],
    "duplicate-path": [*REQUEST, (b":path", b"/again")],
    "host-authority-mismatch": [*REQUEST, (b"host", b"other")],
    "cr-in-value": [*REQUEST, (b"x", b"a\rb")],
}


@pytest.mark.parametrize("name", sorted(_BAD_HEADS))
def test_8_1_2_malformed_request_head(client: RawClient, name: str) -> None:
    client.headers(1, _BAD_HEADS[name])
    client.stream_error(1, PROTOCOL_ERROR)
    assert not client.sink.started  # no app ever saw it


def test_8_1_2_pseudo_header_in_trailers(client: RawClient) -> None:
    client.request(1, end_stream=False)
    client.headers(1, [(b":method", b"GET")], end_stream=True)
    client.stream_error(1, PROTOCOL_ERROR)


def test_8_1_2_6_content_length_mismatch(client: RawClient) -> None:
    client.headers(1, [*REQUEST, (b"content-length", b"5")], end_stream=False)
    client.send(frame(DATA, END_STREAM, 1, b"abc"))
    client.stream_error(1, PROTOCOL_ERROR)


def test_8_1_2_6_head_request_body_is_held_to_its_content_length(client: RawClient) -> None:
    # (Only the response to a HEAD has no body; the request's own is like any other.)
    head = [(b":method", b"HEAD"), *REQUEST[1:], (b"content-length", b"3")]
    client.headers(1, head, end_stream=False)
    client.send(frame(DATA, END_STREAM, 1, b"abc"))
    client.alive()
    assert not client.resets(1)
    assert client.sink.started[0].scope["method"] == "HEAD"


@pytest.mark.parametrize(
    ("hostile", "code"),
    [
        pytest.param(frame(DATA, 0, 1, b"x"), STREAM_CLOSED, id="data-on-half-closed"),
        pytest.param(None, STREAM_CLOSED, id="headers-on-half-closed"),
        pytest.param(window_update(1, 2**31 - 1), FLOW_CONTROL_ERROR, id="stream-window-overflow"),
    ],
)
def test_5_4_2_stream_errors_stay_stream_errors(
    client: RawClient, hostile: bytes | None, code: int
) -> None:
    """Every engine answers these as h2 does: RST_STREAM, and the other streams go on."""
    client.request(1, end_stream=hostile is None or hostile[3] != WINDOW_UPDATE)
    client.request(3, end_stream=False)
    if hostile is None:
        client.headers(1)
    else:
        client.send(hostile)
    assert client.resets(1) == [code]
    client.alive()
    client.send(frame(DATA, END_STREAM, 3, b"body"))
    assert not client.resets(3)
    message = client.sink.started[1].receive_nowait(client.now)
    assert message is not None
    assert message["body"] == b"body"


def test_8_2_push_promise_from_a_client(client: RawClient) -> None:
    client.request(1, end_stream=False)
    client.send(frame(PUSH_PROMISE, END_HEADERS, 1, b"\x00\x00\x00\x02" + client.block()))
    client.connection_error(PROTOCOL_ERROR)


# -- HPACK (RFC 7541) ----------------------------------------------------------------------------


def test_hpack_2_3_3_index_out_of_range(client: RawClient) -> None:
    client.headers(1, block=b"\xbe")  # index 62: the dynamic table is empty
    client.connection_error(COMPRESSION_ERROR)


def test_hpack_4_2_table_size_update_over_the_limit(client: RawClient) -> None:
    client.headers(1, block=b"\x3f\xe2\x1f" + client.block())  # size update to 4097
    client.connection_error(COMPRESSION_ERROR)


def test_hpack_5_2_huffman_with_eos(client: RawClient) -> None:
    # Literal without indexing, new name "x", Huffman value of four 0xff octets (EOS).
    client.headers(1, block=client.block() + b"\x00\x01x\x84\xff\xff\xff\xff")
    client.connection_error(COMPRESSION_ERROR)


def test_hpack_6_3_size_update_after_a_field(client: RawClient) -> None:
    client.headers(1, block=client.block() + b"\x20")
    client.connection_error(COMPRESSION_ERROR)


def test_hpack_memo_sees_a_table_change_that_keeps_its_length_and_front(client: RawClient) -> None:
    """A block decoded while the dynamic table is in one state may be memoised, but a block
    that evicts an entry and adds one equal to the front changes what an index means."""
    base = b"\x82\x86\x84\x01\x01x"  # GET http / with :authority x
    entry_a, entry_b = b"\x40\x03x-a\x011", b"\x40\x03x-b\x011"  # 36 octets each
    client.headers(1, block=b"\x3f\x29" + base + entry_a + entry_b)  # table of 72: [b, a]
    client.headers(3, block=base + b"\xbf")  # index 63: x-a
    client.headers(5, block=base + entry_b)  # [b, b]: a evicted
    client.headers(7, block=base + b"\xbf")  # index 63: now x-b
    seen = [stream.scope["headers"][-1] for stream in client.sink.started]
    assert seen == [(b"x-b", b"1"), (b"x-a", b"1"), (b"x-b", b"1"), (b"x-b", b"1")]
    client.alive()
