"""HTTP/3 core: aioquic clients against ``QuicEndpoint`` + ``Http3Connection``, in memory.

Time moves only with ``H3Pair.advance``; the test plays the ASGI app (``tests/support/h3pair``).
"""

from __future__ import annotations

import pytest
from aioquic.h3.connection import ErrorCode
from aioquic.quic.events import ConnectionTerminated, StreamReset

from hypercorn.protocols.asgi_http import AsgiHttpStream
from hypercorn.protocols.errors import AppProtocolError
from hypercorn.protocols.h3_streams import _INTERIM_OK
from hypercorn.protocols.limits import ProtocolLimits
from tests.support.h3pair import H3Pair


def test_get_scope_and_response() -> None:
    pair = H3Pair(state={"db": "x"})
    client = pair.client
    assert client is not None
    stream_id = client.request("GET", "/a%20b?q=1", headers=[("x-one", "1"), ("cookie", "a=1")])
    scope = pair.stream(stream_id).scope
    assert scope["type"] == "http"
    assert scope["http_version"] == "3"
    assert scope["scheme"] == "https"
    assert scope["method"] == "GET"
    assert scope["path"] == "/a b"
    assert scope["raw_path"] == b"/a%20b"
    assert scope["query_string"] == b"q=1"
    assert scope["headers"][0] == (b"host", b"localhost")
    assert (b"x-one", b"1") in scope["headers"]
    assert scope["client"] == client.addr
    assert scope["state"] == {"db": "x"}
    assert scope["extensions"]["tls"] == {"tls_version": 0x304}
    assert pair.receive_all(stream_id) == [
        {"type": "http.request", "body": b"", "more_body": False}
    ]
    pair.respond(stream_id, 200, [(b"content-type", b"text/plain")], b"hello")
    headers, body, ended = client.response(stream_id)
    assert headers is not None
    assert headers[b":status"] == b"200"
    assert headers[b"content-type"] == b"text/plain"
    assert headers[b"server"] == b"hypercorn-h3"
    assert headers[b"date"] == b"Sun, 06 Nov 1994 08:49:37 GMT"
    assert (body, ended) == (b"hello", True)
    assert pair.conn.idle


def test_split_cookies_reach_the_app_joined() -> None:
    pair = H3Pair()
    assert pair.client is not None
    stream_id = pair.client.request(headers=[("cookie", "a=1"), ("x", "y"), ("cookie", "b=2")])
    headers = pair.stream(stream_id).scope["headers"]
    assert [value for name, value in headers if name == b"cookie"] == [b"a=1; b=2"]


def test_post_body_in_pieces_and_request_trailers() -> None:
    pair = H3Pair()
    client = pair.client
    assert client is not None
    stream_id = client.request("POST", "/up", body=b"abc", end=False)
    client.send_body(stream_id, b"def")
    client.h3.send_headers(stream_id, [(b"x-sum", b"42")], end_stream=True)
    pair.transfer()
    messages = pair.receive_all(stream_id)
    assert b"".join(m["body"] for m in messages) == b"abcdef"
    assert messages[-1]["more_body"] is False
    assert messages[-1]["trailers"] == [(b"x-sum", b"42")]
    pair.respond(stream_id, 201)
    assert client.response(stream_id)[0][b":status"] == b"201"  # type: ignore[index]


def test_streamed_response_and_trailers() -> None:
    pair = H3Pair()
    client = pair.client
    assert client is not None
    stream_id = client.request()
    pair.app_send(
        stream_id,
        {"type": "http.response.start", "status": 200, "headers": [], "trailers": True},
    )
    for chunk in (b"one ", b"two ", b"three"):
        pair.app_send(stream_id, {"type": "http.response.body", "body": chunk, "more_body": True})
    pair.app_send(stream_id, {"type": "http.response.body", "body": b""})
    assert client.response(stream_id)[2] is False  # (the trailers end it)
    pair.app_send(stream_id, {"type": "http.response.trailers", "headers": [(b"x-digest", b"abc")]})
    _headers, body, ended = client.response(stream_id)
    assert (body, ended) == (b"one two three", True)
    assert client.headers_frames(stream_id)[-1] == [(b"x-digest", b"abc")]
    assert pair.conn.idle


def test_twenty_concurrent_streams() -> None:
    pair = H3Pair()
    client = pair.client
    assert client is not None
    ids = [client.request("GET", f"/{n}") for n in range(20)]
    assert len(pair.sink.started) == 20
    for stream_id in reversed(ids):
        path = pair.stream(stream_id).scope["path"]
        pair.respond(stream_id, body=path.encode())
    for n, stream_id in enumerate(ids):
        assert client.response(stream_id)[1:] == (f"/{n}".encode(), True)


def test_head_and_204_carry_no_body() -> None:
    pair = H3Pair()
    client = pair.client
    assert client is not None
    head = client.request("HEAD")
    # (No content-length: aioquic's client would hold a HEAD response to it.)
    pair.respond(head, 200, [(b"x-len", b"5")], b"hello")
    assert client.response(head)[1:] == (b"", True)
    empty = client.request()
    pair.respond(empty, 204, [], b"ignored")
    assert client.response(empty)[1:] == (b"", True)


def test_app_errors_become_500_or_a_reset() -> None:
    pair = H3Pair()
    client = pair.client
    assert client is not None
    early = client.request()
    with pytest.raises(AppProtocolError):
        pair.app_send(early, {"type": "http.response.body", "body": b"x"})
    pair.transfer()
    assert client.response(early)[0][b":status"] == b"500"  # type: ignore[index]
    late = client.request()
    pair.app_send(late, {"type": "http.response.start", "status": 200, "headers": []})
    pair.app_send(late, {"type": "http.response.body", "body": b"x", "more_body": True})
    with pytest.raises(AppProtocolError):
        pair.app_send(late, {"type": "http.response.start", "status": 200})
    pair.transfer()
    resets = [e for e in client.of_type(StreamReset) if e.stream_id == late]
    assert resets[0].error_code == ErrorCode.H3_INTERNAL_ERROR


def test_client_reset_disconnects_the_app_only() -> None:
    pair = H3Pair()
    client = pair.client
    assert client is not None
    gone = client.request("POST", body=b"x", end=False)
    kept = client.request()
    client.quic.reset_stream(gone, ErrorCode.H3_REQUEST_CANCELLED)
    pair.transfer()
    messages = pair.receive_all(gone)
    assert messages[-1] == {"type": "http.disconnect"}
    pair.respond(kept, body=b"still here")
    assert client.response(kept)[1:] == (b"still here", True)


@pytest.mark.skipif(not _INTERIM_OK, reason="this aioquic sends no interim responses")
def test_early_hints_before_the_response() -> None:
    pair = H3Pair()
    client = pair.client
    assert client is not None
    stream_id = client.request()
    link = b"</style.css>; rel=preload"
    pair.app_send(stream_id, {"type": "http.response.early_hint", "links": [link]})
    pair.respond(stream_id, body=b"ok")
    frames = client.headers_frames(stream_id)
    assert frames[0] == [(b":status", b"103"), (b"link", link)]
    assert dict(frames[1])[b":status"] == b"200"


def test_bad_requests_get_an_answer_without_an_app() -> None:
    pair = H3Pair(ProtocolLimits(server_names=("example.com",)))
    client = pair.client
    assert client is not None
    other = client.request(authority="other.example")
    assert not pair.sink.started
    assert client.response(other)[0][b":status"] == b"404"  # type: ignore[index]
    no_path = client.quic.get_next_available_stream_id()
    client.h3.send_headers(
        no_path, [(b":method", b"GET"), (b":authority", b"example.com")], end_stream=True
    )
    pair.transfer()
    assert client.response(no_path)[0][b":status"] == b"400"  # type: ignore[index]


def test_large_response_waits_for_the_peer() -> None:
    pair = H3Pair()
    client = pair.client
    assert client is not None
    stream_id = client.request()
    stream: AsgiHttpStream = pair.stream(stream_id)
    stream.app_send({"type": "http.response.start", "status": 200, "headers": []}, pair.now)
    chunk = b"x" * 200_000
    sent = 0
    # Without the client's acknowledgements nothing drains: the app is parked.
    while not stream.send_blocked:
        stream.app_send({"type": "http.response.body", "body": chunk, "more_body": True}, pair.now)
        sent += len(chunk)
        assert sent < 3_000_000, "never blocked"
    released: list[bool] = []
    stream.send_waiter = lambda: released.append(True)
    # The client reads and acknowledges: the stream drains and the app goes on.
    for _ in range(50):
        pair.advance(0.05)
        if released:
            break
    assert released == [True]
    assert not stream.send_blocked
    stream.app_send({"type": "http.response.body", "body": b"end"}, pair.now)
    for _ in range(100):
        pair.advance(0.05)
        if client.response(stream_id)[2]:
            break
    _headers, body, ended = client.response(stream_id)
    assert ended
    assert len(body) == sent + 3


def test_idle_connection_closes_after_keep_alive() -> None:
    pair = H3Pair(ProtocolLimits(keep_alive_timeout=5.0))
    client = pair.client
    assert client is not None
    stream_id = client.request()
    pair.respond(stream_id)
    pair.advance(4.0)
    assert not pair.sink.closed
    pair.advance(2.0)
    closed = client.of_type(ConnectionTerminated)
    assert closed
    assert closed[0].error_code == ErrorCode.H3_NO_ERROR
    pair.advance(5.0)  # (the closing period)
    assert pair.sink.closed
    assert pair.endpoint.connections == 0


def test_graceful_shutdown_finishes_streams_then_closes() -> None:
    pair = H3Pair()
    client = pair.client
    assert client is not None
    busy = client.request()
    pair.conn.start_shutdown(pair.now)
    pair.transfer()
    # The final GOAWAY went once the client acknowledged our PING: no new request is served.
    late = client.request()
    resets = [e for e in client.of_type(StreamReset) if e.stream_id == late]
    assert resets
    assert resets[0].error_code == ErrorCode.H3_REQUEST_REJECTED
    assert not client.of_type(ConnectionTerminated)
    pair.respond(busy, body=b"done")
    assert client.response(busy)[1:] == (b"done", True)
    pair.advance(5.0)  # (the closing period)
    assert client.of_type(ConnectionTerminated)[0].error_code == ErrorCode.H3_NO_ERROR
    assert pair.sink.closed
    assert pair.endpoint.connections == 0


def test_keep_alive_max_requests_sends_goaway() -> None:
    pair = H3Pair(ProtocolLimits(h2_max_streams=2))
    client = pair.client
    assert client is not None
    first, second = client.request(), client.request()
    third = client.request()
    assert {s.stream_id for s in pair.sink.started} == {first, second}
    assert [e.stream_id for e in client.of_type(StreamReset)] == [third]
    pair.respond(first)
    pair.respond(second)
    assert client.response(second)[2]
    pair.advance(5.0)
    assert client.of_type(ConnectionTerminated)


def test_connection_lost_closes_the_quic_connection() -> None:
    pair = H3Pair()
    client = pair.client
    assert client is not None
    stream_id = client.request()
    stream = pair.stream(stream_id)
    pair.conn.connection_lost()  # (the driver aborted it: graceful_timeout ran out)
    pair.advance(5.0)
    assert pair.receive_all(stream_id)[-1]["more_body"] is False  # (the request came whole)
    assert stream.receive_nowait(pair.now) == {"type": "http.disconnect"}
    assert client.of_type(ConnectionTerminated)
    assert pair.endpoint.connections == 0


def test_a_body_the_app_does_not_read_is_held_back_by_flow_control() -> None:
    pair = H3Pair()
    client = pair.client
    assert client is not None
    size = 3 * 1024 * 1024
    stream_id = client.request("POST", "/up", body=b"x" * size)
    pair.advance(1.0)
    stream = pair.stream(stream_id)
    # The windows (aioquic's 1 MiB initial ones) stay shut while the app reads nothing.
    assert 0 < stream.buffered <= 1024 * 1024
    received = 0
    for _ in range(200):
        for message in pair.receive_all(stream_id):
            received += len(message.get("body", b""))
            if not message.get("more_body", True):
                break
        else:
            pair.advance(0.05)
            continue
        break
    assert received == size


def test_the_app_hears_at_once_when_the_client_closes() -> None:
    pair = H3Pair()
    client = pair.client
    assert client is not None
    stream_id = client.request("POST", body=b"x", end=False)
    stream = pair.stream(stream_id)
    assert pair.receive_all(stream_id)[0]["body"] == b"x"
    client.quic.close(error_code=ErrorCode.H3_NO_ERROR)
    pair.transfer()  # (no time passes: aioquic's draining period has not ended)
    assert stream.receive_nowait(pair.now) == {"type": "http.disconnect"}
    pair.advance(5.0)
    assert pair.sink.closed
    assert pair.endpoint.connections == 0


def test_an_idle_close_waits_for_acknowledgements_then_gives_up() -> None:
    pair = H3Pair(ProtocolLimits(keep_alive_timeout=5.0, write_timeout=20.0))
    client = pair.client
    assert client is not None
    stream_id = client.request()
    client.deliver = False  # (its acknowledgements are lost from now on)
    pair.respond(stream_id, body=b"x" * 5000)
    # Past keep-alive the connection waits (deadlines moving on: H3Pair checks) for the
    # response to be acknowledged, and closes anyway after write_timeout.
    pair.advance(10.0)
    assert not pair.sink.closed
    pair.advance(30.0)
    assert pair.sink.closed
    assert pair.endpoint.connections == 0
