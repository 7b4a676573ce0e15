"""HTTP/1.1 core behaviour through the in-memory pair, every request cut three ways."""

from __future__ import annotations

from typing import Any

import h11
import pytest

from hypercorn.protocols.errors import AppProtocolError
from hypercorn.protocols.http1.connection import SHUTDOWN_IDLE_GRACE
from hypercorn.protocols.limits import ProtocolLimits
from tests.support.pairs import PARSERS, SPLITS, H1Pair, parse_responses

# Every split with the production parser stack; each other parser whole and randomly cut.
_COMBOS = [(split, "auto") for split in SPLITS] + [
    (split, parser) for parser in PARSERS[1:] for split in ("whole", "random")
]


@pytest.fixture(params=_COMBOS, ids=["-".join(combo) for combo in _COMBOS])
def split(request: pytest.FixtureRequest) -> tuple[str, str]:
    return request.param  # type: ignore[no-any-return]


def make(split: tuple[str, str], **limits: Any) -> H1Pair:
    how, parser = split
    return H1Pair(ProtocolLimits(**limits), split=how, parser_kind=parser)


def headers_of(response: h11.Response) -> dict[bytes, bytes]:
    return dict(response.headers)


def body_of(events: list[Any]) -> bytes:
    return b"".join(bytes(e.data) for e in events if isinstance(e, h11.Data))


# -- basic exchange ----------------------------------------------------------------------------


def test_get_scope_and_response(split: tuple[str, str]) -> None:
    pair = H1Pair(split=split[0], parser_kind=split[1], state={"db": 1})
    pair.request("GET", "/caf%C3%A9/x?q=1&r=%20", headers=[("X-Thing", "Yes")])
    scope = pair.stream.scope
    assert scope["type"] == "http"
    assert scope["asgi"] == {"version": "3.0", "spec_version": "2.4"}
    assert scope["http_version"] == "1.1"
    assert scope["method"] == "GET"
    assert scope["scheme"] == "http"
    assert scope["path"] == "/café/x"
    assert scope["raw_path"] == b"/caf%C3%A9/x"
    assert scope["query_string"] == b"q=1&r=%20"
    assert scope["root_path"] == ""
    assert (b"x-thing", b"Yes") in scope["headers"]
    assert scope["client"] == ("127.0.0.1", 50000)
    assert scope["server"] == ("127.0.0.1", 8000)
    assert scope["state"] == {"db": 1}
    assert scope["extensions"] == {"http.response.trailers": {}, "http.response.early_hint": {}}
    assert pair.receive_all() == [{"type": "http.request", "body": b"", "more_body": False}]
    pair.respond(200, [(b"content-type", b"text/plain")], b"hello")
    events = pair.client_events()
    response = events[0]
    assert response.status_code == 200
    assert response.reason == b"OK"
    hdrs = headers_of(response)
    assert hdrs[b"content-length"] == b"5"
    assert hdrs[b"date"] == b"Sun, 06 Nov 1994 08:49:37 GMT"
    assert hdrs[b"server"] == b"hypercorn-h11"
    assert b"transfer-encoding" not in hdrs
    assert body_of(events) == b"hello"
    assert isinstance(events[-1], h11.EndOfMessage)
    assert not pair.sink.closed
    # After the response, receive() reports the exchange is over.
    assert pair.receive() == {"type": "http.disconnect"}


def test_state_is_a_shallow_copy() -> None:
    state = {"k": "v"}
    pair = H1Pair(state=state)
    pair.request()
    pair.stream.scope["state"]["k"] = "changed"
    assert state == {"k": "v"}


def test_tls_scheme() -> None:
    pair = H1Pair(ssl=True)
    pair.request()
    assert pair.stream.scope["scheme"] == "https"


def test_absolute_form_target() -> None:
    pair = H1Pair()
    pair.feed(b"GET http://example.com/a/b?c=d HTTP/1.1\r\nHost: example.com\r\n\r\n")
    assert pair.stream.scope["path"] == "/a/b"
    assert pair.stream.scope["query_string"] == b"c=d"


@pytest.mark.parametrize("streamed", [False, True])
def test_date_follows_the_clock_on_a_kept_alive_connection(streamed: bool) -> None:
    """The Date line is cached per second, and a new second gets a new line (on the short
    path of a whole response, and on the general one)."""
    pair = H1Pair()
    dates = []
    for step in (0.0, 0.4, 0.7, 0.05, 2.0):  # 08:49:37.0, .4, 38.1, 38.15, 40.15
        pair.advance(step)
        pair.request()
        chunks = [b"a", b"b"] if streamed else None
        pair.respond(200, [], b"ok", chunks=chunks)
        dates.append(headers_of(pair.client_events()[0])[b"date"])
        pair.next_cycle()
    assert dates == [
        b"Sun, 06 Nov 1994 08:49:37 GMT",
        b"Sun, 06 Nov 1994 08:49:37 GMT",
        b"Sun, 06 Nov 1994 08:49:38 GMT",
        b"Sun, 06 Nov 1994 08:49:38 GMT",
        b"Sun, 06 Nov 1994 08:49:40 GMT",
    ]


def test_app_date_and_server_headers_win() -> None:
    pair = H1Pair()
    pair.request()
    pair.respond(200, [(b"Date", b"yesterday"), (b"Server", b"mine")], b"")
    hdrs = headers_of(pair.client_events()[0])
    assert hdrs[b"date"] == b"yesterday"
    assert hdrs[b"server"] == b"mine"


def test_no_date_or_server_when_disabled() -> None:
    pair = H1Pair(ProtocolLimits(include_date_header=False, server_header=None))
    pair.request()
    pair.respond(200, [], b"x")
    hdrs = headers_of(pair.client_events()[0])
    assert b"date" not in hdrs
    assert b"server" not in hdrs


def test_extra_headers() -> None:
    pair = H1Pair(ProtocolLimits(extra_headers=((b"alt-svc", b'h3=":443"'),)))
    pair.request()
    pair.respond(200, [], b"x")
    assert headers_of(pair.client_events()[0])[b"alt-svc"] == b'h3=":443"'


def test_unregistered_status_has_empty_reason() -> None:
    pair = H1Pair()
    pair.request()
    pair.respond(599, [], b"")
    response = pair.client_events()[0]
    assert response.status_code == 599


# -- keep-alive and pipelining -----------------------------------------------------------------


def test_keep_alive(split: tuple[str, str]) -> None:
    pair = make(split)
    for index in range(3):
        pair.request("GET", f"/{index}")
        assert pair.stream.scope["path"] == f"/{index}"
        pair.respond(200, [], str(index).encode())
        events = pair.client_events()
        assert body_of(events) == str(index).encode()
        pair.next_cycle()
    assert len(pair.sink.started) == 3
    assert not pair.sink.closed


def test_pipelining_answers_in_order(split: tuple[str, str]) -> None:
    pair = make(split)
    raw = b"".join(b"GET /%d HTTP/1.1\r\nHost: x\r\n\r\n" % index for index in range(3))
    pair.feed(raw)
    # Only the first request is being served; reading is paused behind it.
    assert [s.scope["path"] for s in pair.sink.started] == ["/0"]
    assert pair.sink.reading_paused
    for index in range(3):
        stream = pair.sink.started[index]
        assert stream.scope["path"] == f"/{index}"
        pair.respond(200, [], b"r%d" % index, stream=stream)
    assert not pair.sink.reading_paused
    assert len(pair.sink.started) == 3
    responses = parse_responses(pair.new_output())
    assert [body_of(events) for events in responses] == [b"r0", b"r1", b"r2"]


def test_keep_alive_max_requests_closes_after_the_last_pipelined_one() -> None:
    """Config ``keep_alive_max_requests``: the last request allowed is answered with
    ``connection: close``; requests pipelined behind it are not started (the client
    retries them on a new connection, as after any close)."""
    pair = H1Pair(ProtocolLimits(h1_max_requests=2))
    pair.feed(b"".join(b"GET /%d HTTP/1.1\r\nHost: x\r\n\r\n" % index for index in range(3)))
    for index in range(2):
        pair.respond(200, [], b"r%d" % index, stream=pair.sink.started[index])
    assert [s.scope["path"] for s in pair.sink.started] == ["/0", "/1"]
    assert pair.sink.closed
    first, second = parse_responses(pair.new_output())
    assert (b"connection", b"close") not in first[0].headers
    assert (b"connection", b"close") in second[0].headers
    assert [body_of(events) for events in (first, second)] == [b"r0", b"r1"]


def test_pipelined_request_waits_for_slow_body() -> None:
    pair = H1Pair()
    pair.feed(
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
        b"GET /2 HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    assert len(pair.sink.started) == 1
    assert pair.receive_all()[0]["body"] == b"abc"
    pair.respond(200, [], b"1")
    assert len(pair.sink.started) == 2
    assert pair.stream.scope["path"] == "/2"


def test_request_connection_close(split: tuple[str, str]) -> None:
    pair = make(split)
    pair.request(headers=[("Connection", "close")])
    pair.respond(200, [], b"bye")
    events = pair.client_events()
    assert headers_of(events[0])[b"connection"] == b"close"
    assert pair.sink.closed


def test_close_asked_by_the_client_does_not_linger(split: tuple[str, str]) -> None:
    """RFC 9112 9.6: a client that sent ``Connection: close`` (or HTTP/1.0) sends nothing
    more; its request read whole with nothing past it, the close needs no lingering."""
    for raw in (
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"GET / HTTP/1.0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 3\r\n\r\nabc",
    ):
        pair = make(split)
        pair.feed(raw)
        pair.receive_all()
        pair.respond(200, [], b"bye")
        assert pair.sink.closed
        assert pair.sink.lingering is False, raw


def test_every_other_close_lingers(split: tuple[str, str]) -> None:
    """A close the client may still be sending into keeps lingering: bytes pipelined behind
    its ``Connection: close``, a body not read yet, or a close of ours (the app's
    ``Connection: close``, the last of ``keep_alive_max_requests``, a protocol error)."""
    close = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    cases: list[tuple[bytes, list[tuple[bytes, bytes]], dict[str, Any]]] = [
        (close + b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n", [], {}),
        (close + b"G", [], {}),
        (
            b"POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 9\r\n\r\nabc",
            [],
            {},
        ),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", [(b"connection", b"close")], {}),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", [], {"h1_max_requests": 1}),
    ]
    for raw, headers, limits in cases:
        pair = make(split, **limits)
        pair.feed(raw)
        pair.respond(200, headers, b"bye")
        assert pair.sink.closed
        assert pair.sink.lingering is True, raw
    pair = make(split)
    pair.feed(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nBad Header: x\r\n\r\n")
    assert pair.sink.closed
    assert pair.sink.lingering is True


def test_app_connection_close_header() -> None:
    pair = H1Pair()
    pair.request()
    pair.respond(200, [(b"connection", b"close")], b"bye")
    events = pair.client_events()
    assert headers_of(events[0])[b"connection"] == b"close"
    assert pair.sink.closed


def test_http10(split: tuple[str, str]) -> None:
    pair = make(split)
    pair.feed(b"GET /old HTTP/1.0\r\nHost: x\r\n\r\n")
    assert pair.stream.scope["http_version"] == "1.0"
    pair.respond(200, [], b"legacy")
    out = pair.new_output()
    assert out.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"content-length: 6\r\n" in out
    assert b"connection: close\r\n" in out
    assert out.endswith(b"\r\n\r\nlegacy")
    assert pair.sink.closed


def test_http10_streaming_is_close_delimited() -> None:
    pair = H1Pair()
    pair.feed(b"GET / HTTP/1.0\r\n\r\n")
    pair.respond(200, [], chunks=[b"a", b"b"])
    out = pair.new_output()
    assert b"transfer-encoding" not in out
    assert b"content-length" not in out
    assert out.endswith(b"\r\n\r\nab")
    assert pair.sink.closed


def test_eof_between_requests_closes_quietly(split: tuple[str, str]) -> None:
    pair = make(split)
    pair.request()
    pair.respond(200, [], b"")
    pair.client_events()
    pair.eof()
    assert pair.sink.closed
    assert pair.new_output() == b""


# -- bodies ---------------------------------------------------------------------------------


def test_content_length_body(split: tuple[str, str]) -> None:
    pair = make(split)
    pair.request("POST", "/", body=b"x" * 100)
    messages = pair.receive_all()
    assert b"".join(m["body"] for m in messages) == b"x" * 100
    assert messages[-1]["more_body"] is False


def test_chunked_request_body(split: tuple[str, str]) -> None:
    pair = make(split)
    pair.send(
        h11.Request(
            method="POST", target="/", headers=[("host", "x"), ("transfer-encoding", "chunked")]
        ),
        h11.Data(data=b"hello "),
        h11.Data(data=b"world"),
        h11.EndOfMessage(),
    )
    messages = pair.receive_all()
    assert b"".join(m["body"] for m in messages) == b"hello world"
    assert all(m["more_body"] for m in messages[:-1])
    assert messages[-1]["more_body"] is False


def test_streaming_chunked_response(split: tuple[str, str]) -> None:
    pair = make(split)
    pair.request()
    pair.respond(200, [], chunks=[b"one", b"", b"two"])
    events = pair.client_events()
    assert headers_of(events[0])[b"transfer-encoding"] == b"chunked"
    assert body_of(events) == b"onetwo"
    assert isinstance(events[-1], h11.EndOfMessage)
    pair.next_cycle()
    pair.request()  # still alive
    assert len(pair.sink.started) == 2


@pytest.mark.parametrize(
    "pieces",
    [
        [b"a" * 10_240] * 3 + [b""],  # large pieces: size line, data, CRLF written apart
        [b"b" * 5000, b"c" * 10, b"d" * 4096],  # a large last piece ends the response
        [b"e" * 8192],  # one piece: Content-Length, the head written beside the body
    ],
)
@pytest.mark.parametrize("headers", [[], [(b"x-a", b"1")]])
def test_large_body_pieces_are_framed_alike(
    pieces: list[bytes], headers: list[tuple[bytes, bytes]]
) -> None:
    pair = H1Pair()
    pair.request()
    pair.app_send({"type": "http.response.start", "status": 200, "headers": headers})
    for i, piece in enumerate(pieces):
        more = i < len(pieces) - 1
        pair.app_send({"type": "http.response.body", "body": piece, "more_body": more})
    events = pair.client_events()
    assert body_of(events) == b"".join(pieces)
    assert isinstance(events[-1], h11.EndOfMessage)
    pair.next_cycle()
    pair.request()  # still alive
    assert len(pair.sink.started) == 2


def test_streaming_with_app_content_length() -> None:
    pair = H1Pair()
    pair.request()
    pair.respond(200, [(b"content-length", b"6")], chunks=[b"abc", b"def"])
    events = pair.client_events()
    assert b"transfer-encoding" not in headers_of(events[0])
    assert body_of(events) == b"abcdef"
    assert not pair.sink.closed


def test_app_transfer_encoding_header_is_replaced() -> None:
    pair = H1Pair()
    pair.request()
    pair.respond(200, [(b"transfer-encoding", b"chunked")], chunks=[b"abc"])
    out = pair.new_output()
    assert out.count(b"transfer-encoding") == 1
    pair.client.receive_data(out)
    assert body_of([pair.client.next_event() for _ in range(3)]) == b"abc"


def test_body_backpressure_pauses_and_resumes_reading() -> None:
    pair = H1Pair(ProtocolLimits(body_buffer_size=1000))
    pair.send(
        h11.Request(method="POST", target="/", headers=[("host", "x"), ("content-length", "5000")]),
        h11.Data(data=b"a" * 1500),
    )
    assert pair.sink.reading_paused
    total = 0
    while (message := pair.receive()) is not None:
        total += len(message["body"])
    assert total == 1500
    assert not pair.sink.reading_paused
    pair.send(h11.Data(data=b"b" * 3500), h11.EndOfMessage())
    rest = pair.receive_all()
    assert sum(len(m["body"]) for m in rest) == 3500


# -- 100-continue ------------------------------------------------------------------------------


def test_expect_100_continue(split: tuple[str, str]) -> None:
    pair = make(split)
    pair.send(
        h11.Request(
            method="POST",
            target="/",
            headers=[("host", "x"), ("content-length", "4"), ("expect", "100-continue")],
        )
    )
    assert pair.new_output() == b""  # not before the app asks for the body
    assert pair.receive() is None
    assert pair.new_output() == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert pair.receive() is None  # only once
    assert pair.new_output() == b""
    pair.send(h11.Data(data=b"body"), h11.EndOfMessage())
    assert b"".join(m["body"] for m in pair.receive_all()) == b"body"
    pair.respond(200, [], b"ok")
    assert body_of(pair.client_events()) == b"ok"
    assert not pair.sink.closed


def test_expect_100_app_answers_without_reading() -> None:
    pair = H1Pair()
    pair.send(
        h11.Request(
            method="POST",
            target="/",
            headers=[("host", "x"), ("content-length", "4"), ("expect", "100-continue")],
        )
    )
    pair.respond(413, [], b"")
    out = pair.new_output()
    assert out.startswith(b"HTTP/1.1 413 ")
    assert b"100 Continue" not in out
    assert b"connection: close" in out
    assert pair.sink.closed


# -- HEAD / 204 / 304 --------------------------------------------------------------------------


def test_head_has_no_body(split: tuple[str, str]) -> None:
    pair = make(split)
    pair.request("HEAD", "/")
    pair.respond(200, [], b"would-be-body")
    out = pair.new_output()
    assert b"content-length: 13\r\n" in out
    assert out.endswith(b"\r\n\r\n")
    assert b"would-be-body" not in out
    pair.feed(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # keep-alive survives
    assert len(pair.sink.started) == 2


def test_head_streaming_has_no_body() -> None:
    pair = H1Pair()
    pair.request("HEAD", "/")
    pair.respond(200, [(b"content-length", b"100")], chunks=[b"x" * 50])
    out = pair.new_output()
    assert b"content-length: 100\r\n" in out
    assert out.endswith(b"\r\n\r\n")
    assert not pair.sink.closed


@pytest.mark.parametrize("status", [204, 304])
def test_no_body_statuses(status: int) -> None:
    pair = H1Pair()
    pair.request()
    pair.respond(status, [(b"content-length", b"4")] if status == 304 else [], b"body")
    out = pair.new_output()
    assert out.endswith(b"\r\n\r\n")
    assert b"body" not in out.split(b"\r\n\r\n")[1]
    assert b"transfer-encoding" not in out
    if status == 204:
        assert b"content-length" not in out
    assert not pair.sink.closed


# -- trailers ----------------------------------------------------------------------------------


def test_trailers_when_client_accepts_them() -> None:
    pair = H1Pair()
    pair.request(headers=[("TE", "trailers")])
    pair.app_send({"type": "http.response.start", "status": 200, "headers": [], "trailers": True})
    pair.app_send({"type": "http.response.body", "body": b"data"})
    assert not pair.new_output().endswith(b"0\r\n\r\n")
    pair.app_send({"type": "http.response.trailers", "headers": [(b"x-sum", b"42")]})
    pair.client.receive_data(bytes(pair.sink.out))
    events = []
    while (event := pair.client.next_event()) is not h11.NEED_DATA:
        events.append(event)
        if isinstance(event, h11.EndOfMessage):
            break
    assert body_of(events) == b"data"
    assert list(events[-1].headers) == [(b"x-sum", b"42")]


def test_trailers_dropped_when_client_did_not_ask() -> None:
    pair = H1Pair()
    pair.request()
    pair.app_send({"type": "http.response.start", "status": 200, "headers": [], "trailers": True})
    pair.app_send({"type": "http.response.body", "body": b"data"})
    pair.app_send({"type": "http.response.trailers", "headers": [(b"x-sum", b"42")]})
    events = pair.client_events()
    assert body_of(events) == b"data"
    assert list(events[-1].headers) == []
    assert not pair.sink.closed


# -- disconnects -------------------------------------------------------------------------------


def test_disconnect_mid_body(split: tuple[str, str]) -> None:
    pair = make(split)
    pair.send(
        h11.Request(method="POST", target="/", headers=[("host", "x"), ("content-length", "10")]),
        h11.Data(data=b"abc"),
    )
    pair.eof()
    messages = pair.receive_all()
    assert messages[-1] == {"type": "http.disconnect"}
    assert pair.sink.closed
    assert pair.new_output() == b""  # nobody to answer
    pair.respond(200, [], b"late")  # dropped, no error
    assert pair.new_output() == b""


def test_eof_after_a_complete_request_is_a_half_close() -> None:
    """RFC 9112 9.6: the client shut its sending side; it may still read the response. The
    app's receive() says http.disconnect (a client gone for good sends the same FIN), but
    what the app sends goes out, and the connection closes after it."""
    pair = H1Pair()
    pair.request()
    pair.receive_all()
    pair.app_send({"type": "http.response.start", "status": 200, "headers": []})
    pair.app_send({"type": "http.response.body", "body": b"a", "more_body": True})
    woken: list[bool] = []
    assert pair.receive() is None
    pair.stream.waiter = lambda: woken.append(True)
    pair.eof()
    assert woken == [True]
    assert pair.receive() == {"type": "http.disconnect"}
    assert pair.receive() == {"type": "http.disconnect"}  # (every time)
    assert not pair.sink.closed
    pair.app_send({"type": "http.response.body", "body": b"b"})
    assert pair.sink.closed
    events = pair.client_events()
    assert [type(event) for event in events][-3:] == [
        h11.Data,
        h11.EndOfMessage,
        h11.ConnectionClosed,
    ]
    assert pair.receive() == {"type": "http.disconnect"}  # (response done: rule 4)


def test_disconnect_while_responding() -> None:
    pair = H1Pair()
    pair.request()
    pair.receive_all()
    pair.app_send({"type": "http.response.start", "status": 200, "headers": []})
    pair.app_send({"type": "http.response.body", "body": b"a", "more_body": True})
    pair.server.connection_lost()
    assert pair.receive() == {"type": "http.disconnect"}
    pair.app_send({"type": "http.response.body", "body": b"b", "more_body": True})  # ignored


def test_waiting_app_is_woken_on_disconnect() -> None:
    pair = H1Pair()
    pair.send(
        h11.Request(method="POST", target="/", headers=[("host", "x"), ("content-length", "10")])
    )
    woken: list[bool] = []
    assert pair.receive() is None
    pair.stream.waiter = lambda: woken.append(True)
    pair.server.connection_lost()
    assert woken == [True]
    assert pair.receive() == {"type": "http.disconnect"}


# -- malformed input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GET\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\n: novalue\r\n\r\n", 400),
        (
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n",
            400,
        ),
        (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-Big: " + b"a" * 20000 + b"\r\n\r\n", 431),
        (
            b"GET / HTTP/1.1\r\nHost: x\r\n"
            + b"".join(b"X-%d: 1\r\n" % i for i in range(101))
            + b"\r\n",
            431,
        ),
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505),
    ],
)
def test_malformed_request(raw: bytes, status: int, split: tuple[str, str]) -> None:
    pair = make(split)
    pair.feed(raw)
    out = pair.new_output()
    assert out.startswith(b"HTTP/1.1 %d " % status), out[:40]
    assert b"connection: close\r\n" in out
    assert pair.sink.closed
    assert pair.sink.started == [] or pair.sink.started[-1].disconnected


def test_bad_request_pipelined_behind_a_good_one_gets_400(split: tuple[str, str]) -> None:
    pair = make(split)
    pair.feed(
        b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n"
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    pair.respond(200, [], b"first")
    responses = parse_responses(pair.new_output())
    assert [r[0].status_code for r in responses] == [200, 400]
    assert pair.sink.closed
    assert len(pair.sink.started) == 1


def test_bad_chunk_mid_body_disconnects_app() -> None:
    pair = H1Pair()
    pair.feed(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nzz\r\n")
    messages = pair.receive_all()
    assert messages[0]["body"] == b"abc"
    assert messages[-1] == {"type": "http.disconnect"}
    assert pair.new_output().startswith(b"HTTP/1.1 400 ")
    assert pair.sink.closed


def test_garbage_after_response_started_only_closes() -> None:
    pair = H1Pair()
    pair.feed(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    pair.app_send({"type": "http.response.start", "status": 200, "headers": []})
    pair.app_send({"type": "http.response.body", "body": b"x", "more_body": True})
    pair.new_output()
    pair.feed(b"nothex\r\n")
    assert pair.new_output() == b""
    assert pair.sink.closed


def test_server_names_404() -> None:
    pair = H1Pair(ProtocolLimits(server_names=("good.example",)))
    pair.request()  # Host: example.com
    assert pair.new_output().startswith(b"HTTP/1.1 404 ")
    assert pair.sink.closed
    assert pair.sink.started == []


def test_server_names_allowed() -> None:
    pair = H1Pair(ProtocolLimits(server_names=("example.com",)))
    pair.request()
    assert len(pair.sink.started) == 1


# -- app failures ------------------------------------------------------------------------------


def test_app_raises_before_start_gives_500(split: tuple[str, str]) -> None:
    pair = make(split)
    pair.request()
    pair.stream.app_finished(pair.now)
    out = pair.new_output()
    assert out.startswith(b"HTTP/1.1 500 ")
    assert b"content-length: 0\r\n" in out
    assert pair.sink.closed
    assert pair.stream.status == 500


def test_app_raises_after_start_closes_without_last_chunk() -> None:
    pair = H1Pair()
    pair.request()
    pair.app_send({"type": "http.response.start", "status": 200, "headers": []})
    pair.app_send({"type": "http.response.body", "body": b"partial", "more_body": True})
    pair.stream.app_finished(pair.now)
    out = pair.new_output()
    assert out.startswith(b"HTTP/1.1 200 ")
    assert not out.endswith(b"0\r\n\r\n")
    assert pair.sink.closed
    pair.client.receive_data(out)
    pair.client.receive_data(b"")
    with pytest.raises(h11.RemoteProtocolError):
        _drain_client(pair.client)


def _drain_client(client: h11.Connection) -> None:
    while True:
        client.next_event()


def test_app_content_length_too_short_closes() -> None:
    pair = H1Pair()
    pair.request()
    pair.app_send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"10")]}
    )
    with pytest.raises(AppProtocolError):
        pair.app_send({"type": "http.response.body", "body": b"short"})
    assert pair.sink.closed


def test_app_content_length_too_long_closes() -> None:
    pair = H1Pair()
    pair.request()
    pair.app_send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
    )
    with pytest.raises(AppProtocolError):
        pair.app_send({"type": "http.response.body", "body": b"toolong"})
    out = pair.new_output()
    assert out.startswith(b"HTTP/1.1 500 ")  # nothing was written yet: a clean 500
    assert b"toolong" not in out
    assert pair.sink.closed


def test_app_content_length_too_long_while_streaming() -> None:
    pair = H1Pair()
    pair.request()
    pair.app_send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"4")]}
    )
    pair.app_send({"type": "http.response.body", "body": b"abc", "more_body": True})
    with pytest.raises(AppProtocolError):
        pair.app_send({"type": "http.response.body", "body": b"de", "more_body": True})
    assert pair.new_output().endswith(b"abc")
    assert pair.sink.closed


@pytest.mark.parametrize(
    "header",
    [
        (b"x-evil", b"a\r\nSet-Cookie: x=1"),
        (b"x-evil", b"a\nb"),
        (b"x-evil", b"a\x00b"),
        (b"x-evil", b"a\rb"),
        (b"x\r\nevil", b"a"),
        (b"bad name", b"a"),
        (b"", b"a"),
        ("x-str", b"a"),
        (b"x-str", "a"),
    ],
)
def test_unsafe_app_header_refused_with_500(header: tuple[Any, Any]) -> None:
    pair = H1Pair()
    pair.request()
    pair.app_send({"type": "http.response.start", "status": 200, "headers": [header]})
    with pytest.raises(AppProtocolError):
        pair.app_send({"type": "http.response.body", "body": b"x"})
    out = pair.new_output()
    assert out.startswith(b"HTTP/1.1 500 ")
    assert b"evil" not in out
    assert b"Set-Cookie" not in out
    # Nothing was written before the refusal: the connection serves the next request.
    assert b"connection: close" not in out
    assert not pair.sink.closed
    pair.client.receive_data(out)
    assert pair.client.next_event().status_code == 500  # type: ignore[union-attr]


def test_invalid_app_content_length_is_500() -> None:
    pair = H1Pair()
    pair.request()
    pair.app_send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"-1")]}
    )
    with pytest.raises(AppProtocolError):
        pair.app_send({"type": "http.response.body", "body": b""})
    assert pair.new_output().startswith(b"HTTP/1.1 500 ")


def test_response_before_body_read_closes_after() -> None:
    pair = H1Pair()
    pair.send(
        h11.Request(method="POST", target="/", headers=[("host", "x"), ("content-length", "10")]),
        h11.Data(data=b"abc"),
    )
    pair.respond(200, [], b"early")
    out = pair.new_output()
    assert b"connection: close\r\n" in out
    assert pair.sink.closed


# -- shutdown ----------------------------------------------------------------------------------


def test_shutdown_keeps_an_idle_connection_for_a_grace_then_closes() -> None:
    pair = H1Pair()
    pair.request()
    pair.respond(200, [], b"")
    pair.server.start_shutdown(pair.now)
    # The client may be sending its next request right now: closing would fail it.
    assert not pair.sink.closed
    assert pair.server.next_deadline() == pair.now + SHUTDOWN_IDLE_GRACE
    pair.advance(SHUTDOWN_IDLE_GRACE - 0.01)
    assert not pair.sink.closed
    pair.advance(0.01)
    assert pair.sink.closed


def test_shutdown_answers_a_request_arriving_in_the_grace_with_close() -> None:
    pair = H1Pair()
    pair.request()
    pair.respond(200, [], b"first")
    pair.client_events()
    pair.next_cycle()
    pair.server.start_shutdown(pair.now)
    pair.advance(SHUTDOWN_IDLE_GRACE / 2)
    pair.request()
    pair.respond(200, [], b"second")
    events = pair.client_events()
    assert headers_of(events[0])[b"connection"] == b"close"
    assert body_of(events) == b"second"
    assert pair.sink.closed


def test_shutdown_grace_never_outlasts_the_keep_alive_timeout() -> None:
    pair = H1Pair()
    pair.request()
    pair.respond(200, [], b"")
    keep_alive_end = pair.server.next_deadline()
    assert keep_alive_end is not None
    pair.advance(keep_alive_end - pair.now - 0.1)
    pair.server.start_shutdown(pair.now)
    assert pair.server.next_deadline() == keep_alive_end


def test_shutdown_mid_request_finishes_with_close() -> None:
    pair = H1Pair()
    pair.request()
    pair.server.start_shutdown(pair.now)
    assert not pair.sink.closed
    pair.respond(200, [], b"last")
    events = pair.client_events()
    assert headers_of(events[0])[b"connection"] == b"close"
    assert body_of(events) == b"last"
    assert pair.sink.closed


def test_shutdown_after_head_written_closes_after_response() -> None:
    pair = H1Pair()
    pair.request()
    pair.app_send({"type": "http.response.start", "status": 200, "headers": []})
    pair.app_send({"type": "http.response.body", "body": b"a", "more_body": True})
    pair.server.start_shutdown(pair.now)
    pair.app_send({"type": "http.response.body", "body": b"b"})
    assert pair.new_output().endswith(b"0\r\n\r\n")
    assert pair.sink.closed
