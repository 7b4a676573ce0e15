"""HTTP/2 core behaviour through the in-memory pair: a real h2 client, every engine."""

from __future__ import annotations

import h2.errors
import h2.events
import h2.settings
import pytest
from hyperframe.frame import GoAwayFrame

from hypercorn.protocols.errors import AppProtocolError
from hypercorn.protocols.h2_guard import CONNECTION_WINDOW, STREAM_WINDOW
from hypercorn.protocols.http2 import GOAWAY_PING_TIMEOUT
from hypercorn.protocols.limits import ProtocolLimits
from tests.support.h2pair import ENGINES, H2Pair

SPLITS = ("whole", "bytewise", "random")


@pytest.fixture(params=sorted(ENGINES))
def engine(request: pytest.FixtureRequest) -> str:
    return request.param  # type: ignore[no-any-return]


def pair_of(engine: str, **kwargs: object) -> H2Pair:
    return H2Pair(engine=engine, **kwargs)  # type: ignore[arg-type]


# -- one exchange ------------------------------------------------------------------------------


@pytest.mark.parametrize("split", SPLITS)
def test_get_scope_and_response(engine: str, split: str) -> None:
    pair = H2Pair(engine=engine, split=split, state={"db": 1})
    sid = pair.request("GET", "/caf%C3%A9/x?q=1", headers=[("x-thing", "Yes")])
    scope = pair.stream(sid).scope
    assert scope["type"] == "http"
    assert scope["http_version"] == "2"
    assert scope["method"] == "GET"
    assert scope["scheme"] == "http"
    assert scope["path"] == "/café/x"
    assert scope["raw_path"] == b"/caf%C3%A9/x"
    assert scope["query_string"] == b"q=1"
    # As upstream: pseudo-headers removed, :authority first as host.
    assert scope["headers"] == [(b"host", b"example.com"), (b"x-thing", b"Yes")]
    assert scope["client"] == ("127.0.0.1", 50000)
    assert scope["server"] == ("127.0.0.1", 8000)
    assert scope["state"] == {"db": 1}
    assert "http.response.trailers" in scope["extensions"]
    assert pair.receive_all(sid) == [{"type": "http.request", "body": b"", "more_body": False}]
    pair.respond(sid, 200, [(b"Content-Type", b"text/plain")], b"hello")
    headers, body, ended = pair.response(sid)
    assert headers is not None
    assert headers[b":status"] == b"200"
    assert headers[b"content-type"] == b"text/plain"  # (lowercased for HTTP/2)
    assert headers[b"date"] == b"Sun, 06 Nov 1994 08:49:37 GMT"
    assert headers[b"server"] == b"hypercorn-h2"
    assert body == b"hello"
    assert ended
    assert not pair.sink.closed
    assert pair.server.idle
    assert pair.receive(sid) == {"type": "http.disconnect"}


def test_tls_scope(engine: str) -> None:
    pair = pair_of(engine, ssl=True)
    sid = pair.request()
    scope = pair.stream(sid).scope
    assert scope["scheme"] == "https"
    assert scope["extensions"]["tls"] == {"tls_version": 0x304}


def test_host_header_without_authority(engine: str) -> None:
    pair = pair_of(engine)
    sid = pair.client.get_next_available_stream_id()
    pair.client.send_headers(
        sid,
        [(b":method", b"GET"), (b":path", b"/"), (b":scheme", b"http"), (b"host", b"h.example")],
        end_stream=True,
    )
    pair.flush()
    assert pair.stream(sid).scope["headers"] == [(b"host", b"h.example")]


def test_cookie_crumbs_are_joined(engine: str) -> None:
    pair = pair_of(engine)
    sid = pair.request(headers=[("cookie", "a=1"), ("cookie", "b=2")])
    assert (b"cookie", b"a=1; b=2") in pair.stream(sid).scope["headers"]


def test_connection_specific_response_headers_are_dropped(engine: str) -> None:
    pair = pair_of(engine)
    sid = pair.request()
    pair.respond(
        sid,
        200,
        [(b"connection", b"keep-alive"), (b"transfer-encoding", b"chunked"), (b"x", b"1")],
        b"ok",
    )
    headers, body, _ = pair.response(sid)
    assert headers is not None
    assert b"connection" not in headers
    assert b"transfer-encoding" not in headers
    assert headers[b"x"] == b"1"
    assert body == b"ok"


def test_no_date_or_server_when_disabled(engine: str) -> None:
    limits = ProtocolLimits(include_date_header=False, h2_server_header=None)
    pair = pair_of(engine, limits=limits)
    sid = pair.request()
    pair.respond(sid, 204)
    headers, _, ended = pair.response(sid)
    assert headers is not None
    assert b"date" not in headers
    assert b"server" not in headers
    assert ended


def test_head_sends_no_data(engine: str) -> None:
    pair = pair_of(engine)
    sid = pair.request("HEAD")
    pair.respond(sid, 200, [(b"content-length", b"5")], b"hello")
    headers, body, ended = pair.response(sid)
    assert headers is not None
    assert headers[b"content-length"] == b"5"
    assert body == b""
    assert ended


def test_streamed_response(engine: str) -> None:
    pair = pair_of(engine)
    sid = pair.request()
    pair.respond(sid, 200, [], chunks=[b"a", b"bc", b"", b"d"])
    _, body, ended = pair.response(sid)
    assert body == b"abcd"
    assert ended


def test_request_body(engine: str) -> None:
    pair = pair_of(engine)
    sid = pair.request("POST", body=b"part1", end=False)
    pair.send_body(sid, b"part2", end=True)
    messages = pair.receive_all(sid)
    assert b"".join(m["body"] for m in messages) == b"part1part2"
    assert messages[-1]["more_body"] is False


# -- many streams --------------------------------------------------------------------------------


def test_concurrent_streams_answer_in_any_order(engine: str) -> None:
    pair = pair_of(engine)
    ids = [pair.request("GET", f"/{index}") for index in range(4)]
    assert [pair.stream(sid).scope["path"] for sid in ids] == ["/0", "/1", "/2", "/3"]
    for sid in reversed(ids):
        pair.respond(sid, 200, [], pair.stream(sid).scope["path"].encode())
    for sid, index in zip(ids, range(4), strict=True):
        assert pair.response(sid)[1] == f"/{index}".encode()
    assert pair.server.idle


def test_streams_over_the_limit_are_refused(engine: str) -> None:
    pair = pair_of(engine, limits=ProtocolLimits(h2_max_concurrent_streams=2))
    pair.ignore_server_stream_limit()
    ids = [pair.request() for _ in range(3)]
    resets = pair.of_type(h2.events.StreamReset)
    assert [(r.stream_id, r.error_code) for r in resets] == [
        (ids[2], h2.errors.ErrorCodes.REFUSED_STREAM)
    ]
    assert len(pair.sink.started) == 2
    # A finished stream makes room for the next one.
    pair.respond(ids[0], 200, [], b"")
    sid = pair.request()
    assert pair.stream(sid).stream_id == sid


def test_settings_advertise_the_limits(engine: str) -> None:
    limits = ProtocolLimits(
        h2_max_concurrent_streams=7, h2_max_header_list_size=9999, h2_max_inbound_frame_size=20000
    )
    pair = pair_of(engine, limits=limits)
    changed = pair.of_type(h2.events.RemoteSettingsChanged)[0].changed_settings
    codes = h2.settings.SettingCodes
    assert changed[codes.MAX_CONCURRENT_STREAMS].new_value == 7
    assert changed[codes.MAX_HEADER_LIST_SIZE].new_value == 9999
    assert changed[codes.MAX_FRAME_SIZE].new_value == 20000


def test_peer_reset_disconnects_the_app(engine: str) -> None:
    pair = pair_of(engine)
    sid = pair.request("POST", body=b"x", end=False)
    other = pair.request()
    pair.client.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
    pair.flush()
    messages = pair.receive_all(sid)
    assert messages[-1] == {"type": "http.disconnect"}
    assert pair.stream(sid).disconnected
    # Its later sends are dropped; the sibling is unaffected.
    pair.respond(sid, 200, [], b"late")
    pair.respond(other, 200, [], b"fine")
    assert pair.response(other)[1] == b"fine"
    assert pair.response(sid)[0] is None


def test_keep_alive_max_requests_sends_goaway(engine: str) -> None:
    pair = pair_of(engine, limits=ProtocolLimits(h2_max_streams=2))
    first = pair.request()
    second = pair.request()
    goaways = pair.of_type(h2.events.ConnectionTerminated)
    assert [(g.last_stream_id, g.error_code) for g in goaways] == [(second, 0)]
    # Both allowed streams are served; then the connection closes.
    pair.respond(first, 200, [], b"1")
    assert not pair.sink.closed
    pair.respond(second, 200, [], b"2")
    assert pair.sink.closed


# -- inbound flow control ------------------------------------------------------------------------


def test_request_window_opens_as_the_app_reads(engine: str) -> None:
    pair = pair_of(engine)
    sid = pair.request("POST", end=False)
    body = b"x" * STREAM_WINDOW
    pair.send_body(sid, body)
    # The client used up the stream window; the app has not read: nothing is returned.
    pair.client_events()
    assert pair.client.local_flow_control_window(sid) == 0
    received = b"".join(m["body"] for m in pair.receive_all(sid))
    assert received == body
    pair.client_events()
    # (Returned in batches: at least half a window, never all of it held back.)
    assert pair.client.local_flow_control_window(sid) >= STREAM_WINDOW // 2


def test_an_app_that_does_not_read_throttles_only_its_stream(engine: str) -> None:
    pair = pair_of(engine)
    slow = pair.request("POST", end=False)
    pair.send_body(slow, b"s" * STREAM_WINDOW)
    fast = pair.request("POST", end=False)
    total = 0
    for _ in range(8):
        chunk = b"f" * 16384
        pair.send_body(fast, chunk)
        total += sum(len(m["body"]) for m in pair.receive_all(fast))
        pair.client_events()
    assert total == 8 * 16384
    assert pair.client.local_flow_control_window(slow) == 0
    assert pair.stream(slow).buffered == STREAM_WINDOW


def test_connection_window_bounds_unread_body(engine: str) -> None:
    """Streams whose apps never read hold at most CONNECTION_WINDOW together."""
    pair = pair_of(engine, limits=ProtocolLimits(h2_max_concurrent_streams=100))
    ids = []
    for _ in range(CONNECTION_WINDOW // STREAM_WINDOW + 4):
        sid = pair.request("POST", end=False)
        ids.append(sid)
        window = pair.client.local_flow_control_window(sid)
        if window:
            pair.send_body(sid, b"z" * window)
        pair.client_events()
    held = sum(pair.stream(sid).buffered for sid in ids)
    assert held <= CONNECTION_WINDOW
    assert pair.client.outbound_flow_control_window < STREAM_WINDOW


# -- outbound flow control -----------------------------------------------------------------------


def test_response_waits_for_the_window_without_blocking_siblings(engine: str) -> None:
    codes = h2.settings.SettingCodes
    pair = pair_of(engine, client_settings={codes.INITIAL_WINDOW_SIZE: 100})
    big = pair.request()
    small = pair.request()
    stream = pair.stream(big)
    pair.respond(big, 200, [], b"b" * 250)
    assert stream.send_blocked
    assert pair.response(big)[1] == b"b" * 100
    pair.respond(small, 200, [], b"tiny")
    assert pair.response(small)[1] == b"tiny"
    released = []
    stream.send_waiter = lambda: released.append(True)
    pair.client.increment_flow_control_window(200, stream_id=big)
    pair.flush()
    assert released == [True]
    assert not stream.send_blocked
    _, body, ended = pair.response(big)
    assert body == b"b" * 250
    assert ended


def test_a_window_never_opened_resets_the_stream_after_write_timeout(engine: str) -> None:
    codes = h2.settings.SettingCodes
    limits = ProtocolLimits(write_timeout=30.0)
    pair = pair_of(engine, limits=limits, client_settings={codes.INITIAL_WINDOW_SIZE: 10})
    sid = pair.request()
    pair.respond(sid, 200, [], b"q" * 1000)
    stream = pair.stream(sid)
    assert stream.send_blocked
    pair.advance(29.0)
    assert not pair.of_type(h2.events.StreamReset)
    pair.advance(1.5)
    resets = pair.of_type(h2.events.StreamReset)
    assert [(r.stream_id, r.error_code) for r in resets] == [(sid, h2.errors.ErrorCodes.CANCEL)]
    assert not stream.send_blocked
    assert stream.disconnected
    assert pair.server.idle


# -- trailers ----------------------------------------------------------------------------------


def test_response_trailers(engine: str) -> None:
    pair = pair_of(engine)
    sid = pair.request(headers=[("te", "trailers")])
    pair.app_send(sid, {"type": "http.response.start", "status": 200, "trailers": True})
    pair.app_send(sid, {"type": "http.response.body", "body": b"data"})
    pair.app_send(sid, {"type": "http.response.trailers", "headers": [(b"X-Checksum", b"abc")]})
    trailers = pair.of_type(h2.events.TrailersReceived)
    assert [dict(t.headers) for t in trailers] == [{b"x-checksum": b"abc"}]
    assert pair.response(sid)[1:] == (b"data", True)


def test_request_trailers_reach_the_app(engine: str) -> None:
    pair = pair_of(engine)
    sid = pair.request("POST", body=b"abc", end=False)
    pair.client.send_headers(sid, [(b"x-sum", b"1")], end_stream=True)
    pair.flush()
    messages = pair.receive_all(sid)
    assert b"".join(m["body"] for m in messages) == b"abc"
    assert messages[-1]["more_body"] is False
    assert messages[-1]["trailers"] == [(b"x-sum", b"1")]


# -- early hints and server push -----------------------------------------------------------------


def test_early_hints(engine: str) -> None:
    pair = pair_of(engine)
    sid = pair.request()
    assert "http.response.early_hint" in pair.stream(sid).scope["extensions"]
    links = [b"</style.css>; rel=preload; as=style", b"</app.js>; rel=preload; as=script"]
    pair.app_send(sid, {"type": "http.response.early_hint", "links": links})
    pair.respond(sid, 200, [], b"page")
    hints = pair.of_type(h2.events.InformationalResponseReceived)
    assert len(hints) == 1
    assert hints[0].headers[0] == (b":status", b"103")
    assert [v for n, v in hints[0].headers if n == b"link"] == links
    assert pair.response(sid)[1:] == (b"page", True)


def test_early_hint_after_the_head_is_an_app_error(engine: str) -> None:
    pair = pair_of(engine)
    sid = pair.request()
    pair.app_send(sid, {"type": "http.response.start", "status": 200})
    pair.app_send(sid, {"type": "http.response.body", "body": b"x", "more_body": True})
    with pytest.raises(AppProtocolError):
        pair.app_send(sid, {"type": "http.response.early_hint", "links": [b"</a>"]})


def test_server_push(engine: str) -> None:
    pair = pair_of(engine)
    sid = pair.request("GET", "/page")
    assert "http.response.push" in pair.stream(sid).scope["extensions"]
    pair.app_send(
        sid,
        {"type": "http.response.push", "path": "/style.css", "headers": [(b"accept", b"text/css")]},
    )
    pushed = pair.of_type(h2.events.PushedStreamReceived)
    assert len(pushed) == 1
    promised = pushed[0].pushed_stream_id
    assert dict(pushed[0].headers)[b":path"] == b"/style.css"
    assert dict(pushed[0].headers)[b":authority"] == b"example.com"
    stream = pair.stream(promised)
    assert stream.scope["path"] == "/style.css"
    assert stream.scope["method"] == "GET"
    assert (b"accept", b"text/css") in stream.scope["headers"]
    assert "http.response.push" not in stream.scope["extensions"]
    assert pair.receive_all(promised) == [{"type": "http.request", "body": b"", "more_body": False}]
    pair.respond(promised, 200, [], b"body{}")
    pair.respond(sid, 200, [], b"<html>")
    assert pair.response(promised)[1:] == (b"body{}", True)
    assert pair.response(sid)[1:] == (b"<html>", True)
    assert pair.server.idle


def test_no_push_when_the_client_disables_it(engine: str) -> None:
    codes = h2.settings.SettingCodes
    pair = pair_of(engine, client_settings={codes.ENABLE_PUSH: 0})
    sid = pair.request()
    pair.app_send(sid, {"type": "http.response.push", "path": "/x", "headers": []})
    assert not pair.of_type(h2.events.PushedStreamReceived)
    assert len(pair.sink.started) == 1
    pair.respond(sid, 200, [], b"ok")
    assert pair.response(sid)[1:] == (b"ok", True)


# -- app errors ------------------------------------------------------------------------------------


def test_app_error_before_the_head_is_a_500(engine: str) -> None:
    pair = pair_of(engine)
    sid = pair.request()
    with pytest.raises(AppProtocolError):
        pair.app_send(sid, {"type": "http.response.body", "body": b"x"})
    headers, _, ended = pair.response(sid)
    assert headers is not None
    assert headers[b":status"] == b"500"
    assert ended


def test_bad_response_header_is_a_500(engine: str) -> None:
    pair = pair_of(engine)
    sid = pair.request()
    pair.app_send(
        sid, {"type": "http.response.start", "status": 200, "headers": [(b"x", b"a\r\nb")]}
    )
    with pytest.raises(AppProtocolError):
        pair.app_send(sid, {"type": "http.response.body", "body": b"x"})
    headers, _, _ = pair.response(sid)
    assert headers is not None
    assert headers[b":status"] == b"500"


def test_app_error_after_the_head_resets_the_stream(engine: str) -> None:
    pair = pair_of(engine)
    sid = pair.request()
    pair.app_send(sid, {"type": "http.response.start", "status": 200})
    pair.app_send(sid, {"type": "http.response.body", "body": b"x", "more_body": True})
    pair.stream(sid).app_finished(pair.now)  # the app returned without finishing
    resets = pair.of_type(h2.events.StreamReset)
    assert [(r.stream_id, r.error_code) for r in resets] == [
        (sid, h2.errors.ErrorCodes.INTERNAL_ERROR)
    ]
    assert pair.server.idle
    assert not pair.sink.closed


@pytest.mark.parametrize("body", [b"abc", b"abcdefg"])
def test_content_length_mismatch_resets_the_stream(engine: str, body: bytes) -> None:
    pair = pair_of(engine)
    sid = pair.request()
    with pytest.raises(AppProtocolError):
        pair.respond(sid, 200, [(b"content-length", b"5")], body)
    assert any(r.stream_id == sid for r in pair.of_type(h2.events.StreamReset))
    assert pair.server.idle


def test_server_names_answer_404(engine: str) -> None:
    pair = pair_of(engine, limits=ProtocolLimits(server_names=("good.example",)))
    sid = pair.request(authority="bad.example")
    headers, _, ended = pair.response(sid)
    assert headers is not None
    assert headers[b":status"] == b"404"
    assert ended
    assert not pair.sink.started
    sid = pair.request(authority="good.example")
    assert pair.stream(sid).scope["headers"][0] == (b"host", b"good.example")


# -- deadlines and closing ---------------------------------------------------------------------


def test_idle_connection_gets_goaway_after_keep_alive_timeout(engine: str) -> None:
    pair = pair_of(engine, limits=ProtocolLimits(keep_alive_timeout=5.0))
    sid = pair.request()
    pair.respond(sid, 200, [], b"")
    pair.advance(4.9)
    assert not pair.sink.closed
    pair.advance(0.2)
    assert pair.sink.closed
    goaways = pair.of_type(h2.events.ConnectionTerminated)
    assert [(g.last_stream_id, g.error_code) for g in goaways] == [(sid, 0)]


def test_open_stream_holds_the_connection(engine: str) -> None:
    pair = pair_of(engine, limits=ProtocolLimits(keep_alive_timeout=5.0))
    sid = pair.request()
    pair.advance(60.0)
    assert not pair.sink.closed
    pair.respond(sid, 200, [], b"")
    pair.advance(5.1)
    assert pair.sink.closed


def test_missing_preface_times_out(engine: str) -> None:
    pair = pair_of(engine, limits=ProtocolLimits(header_read_timeout=3.0), handshake=False)
    pair.advance(2.9)
    assert not pair.sink.closed
    pair.advance(0.2)
    assert pair.sink.closed


def test_bad_preface_closes(engine: str) -> None:
    pair = pair_of(engine, handshake=False)
    pair.feed(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert pair.sink.closed


def test_eof_disconnects_open_streams(engine: str) -> None:
    pair = pair_of(engine)
    sid = pair.request("POST", end=False)
    pair.server.receive_data(b"", pair.now)
    assert pair.sink.closed
    assert pair.receive_all(sid)[-1] == {"type": "http.disconnect"}


def test_client_goaway_lets_open_streams_finish(engine: str) -> None:
    pair = pair_of(engine)
    sid = pair.request()
    pair.raw(GoAwayFrame(0, last_stream_id=0, error_code=0))
    assert not pair.sink.closed
    pair.respond(sid, 200, [], b"done")
    assert pair.sink.closed
    assert pair.response(sid)[1:] == (b"done", True)


# -- graceful shutdown (RFC 9113 section 6.8) ---------------------------------------------------


def test_shutdown_is_two_goaways_around_a_ping(engine: str) -> None:
    pair = pair_of(engine)
    first = pair.request()
    pair.server.start_shutdown(pair.now)
    events = pair.client_events(ack=False)
    goaways = [e for e in events if isinstance(e, h2.events.ConnectionTerminated)]
    assert [(g.last_stream_id, g.error_code) for g in goaways] == [(2**31 - 1, 0)]
    # A stream the client opened before it saw the GOAWAY is still served...
    ping_ack = pair.client.data_to_send()
    late = pair.request()
    pair.feed(ping_ack)
    goaways = pair.of_type(h2.events.ConnectionTerminated)
    assert [g.last_stream_id for g in goaways] == [2**31 - 1, late]
    assert pair.stream(late).stream_id == late
    # ... and one opened after the final GOAWAY is refused, so the client retries it.
    refused = pair.request()
    resets = pair.of_type(h2.events.StreamReset)
    assert [(r.stream_id, r.error_code) for r in resets] == [
        (refused, h2.errors.ErrorCodes.REFUSED_STREAM)
    ]
    pair.respond(first, 200, [], b"1")
    assert not pair.sink.closed
    pair.respond(late, 200, [], b"2")
    assert pair.sink.closed
    assert pair.response(late)[1:] == (b"2", True)


def test_shutdown_without_ping_answer_sends_second_goaway_on_time(engine: str) -> None:
    pair = pair_of(engine)
    pair.server.start_shutdown(pair.now)
    pair.client_events(ack=False)
    pair.client.clear_outbound_data_buffer()  # the client never answers the PING
    pair.advance(GOAWAY_PING_TIMEOUT + 0.1)
    goaways = pair.of_type(h2.events.ConnectionTerminated)
    assert [g.last_stream_id for g in goaways] == [2**31 - 1, 0]
    assert pair.sink.closed


# -- h2c upgrade ------------------------------------------------------------------------------


def test_upgrade_answers_the_request_with_its_body_on_stream_1(engine: str) -> None:
    import base64

    from hypercorn.protocols.connection import SwitchProtocol
    from hypercorn.protocols.http1.parser import RequestHead

    config = h2.config.H2Configuration(client_side=True, header_encoding=None)
    client = h2.connection.H2Connection(config=config)
    settings = client.initiate_upgrade_connection()
    assert settings is not None
    head = RequestHead(
        b"POST",
        b"/up?x=1",
        b"1.1",
        [
            (b"host", b"example.com"),
            (b"connection", b"Upgrade, HTTP2-Settings"),
            (b"upgrade", b"h2c"),
            (b"http2-settings", base64.urlsafe_b64encode(base64.urlsafe_b64decode(settings))),
            (b"content-length", b"4"),
            (b"x-a", b"b"),
        ],
        True,
        False,
        True,
        True,
    )
    switch = SwitchProtocol(to="h2", request=head, body=b"body")
    pair = H2Pair(engine=engine, upgrade=switch, handshake=False)
    pair.client = client
    pair.flush()
    pair.client_events()
    stream = pair.stream(1)
    assert stream.scope["http_version"] == "2"
    assert stream.scope["path"] == "/up"
    assert stream.scope["headers"] == [(b"host", b"example.com"), (b"x-a", b"b")]
    assert pair.receive_all(1) == [
        {"type": "http.request", "body": b"body", "more_body": True},
        {"type": "http.request", "body": b"", "more_body": False},
    ]
    pair.respond(1, 200, [], b"upgraded")
    assert pair.response(1)[1:] == (b"upgraded", True)
