"""The ASGI HTTP stream state machine: app misuse, scope helpers."""

from __future__ import annotations

from typing import Any

import pytest

from hypercorn.protocols.asgi_http import (
    AsgiHttpState,
    build_scope,
    decode_path,
    host_allowed,
    split_target,
)
from hypercorn.protocols.errors import AppProtocolError
from tests.support.pairs import H1Pair

START = {"type": "http.response.start", "status": 200, "headers": []}
BODY = {"type": "http.response.body", "body": b"x"}


def started_pair() -> H1Pair:
    pair = H1Pair()
    pair.request()
    pair.receive_all()
    return pair


def assert_500_and_closed(pair: H1Pair) -> None:
    assert pair.new_output().startswith(b"HTTP/1.1 500 ")
    assert pair.sink.closed
    assert pair.stream.state is AsgiHttpState.CLOSED


@pytest.mark.parametrize(
    "message",
    [
        {"type": "http.response.body", "body": b"x"},  # body before start
        {"type": "http.response.trailers", "headers": []},
        {"type": "not.a.type"},
        {"no": "type"},
        {"type": "http.response.start", "status": "200", "headers": []},
        {"type": "http.response.start", "status": 99, "headers": []},
        {"type": "http.response.start", "status": True, "headers": []},
        {"type": "http.response.start", "headers": []},  # no status
    ],
)
def test_bad_first_message_gives_500(message: dict[str, Any]) -> None:
    pair = started_pair()
    with pytest.raises(AppProtocolError):
        pair.app_send(message)
    assert_500_and_closed(pair)


def test_start_twice() -> None:
    pair = started_pair()
    pair.app_send(START)
    with pytest.raises(AppProtocolError):
        pair.app_send(START)
    assert_500_and_closed(pair)


def test_body_must_be_bytes() -> None:
    pair = started_pair()
    pair.app_send(START)
    with pytest.raises(AppProtocolError):
        pair.app_send({"type": "http.response.body", "body": "text"})
    assert_500_and_closed(pair)


def test_bytearray_and_memoryview_bodies_are_accepted() -> None:
    pair = started_pair()
    pair.app_send(START)
    pair.app_send({"type": "http.response.body", "body": bytearray(b"ab"), "more_body": True})
    pair.app_send({"type": "http.response.body", "body": memoryview(b"cd")})
    assert pair.new_output().endswith(b"2\r\nab\r\n2\r\ncd\r\n0\r\n\r\n")


def test_start_after_body_is_an_error_that_closes() -> None:
    pair = started_pair()
    pair.app_send(START)
    pair.app_send({"type": "http.response.body", "body": b"x", "more_body": True})
    with pytest.raises(AppProtocolError):
        pair.app_send(START)
    out = pair.new_output()
    assert out.startswith(b"HTTP/1.1 200 ")  # the head already went out: close, no 500
    assert not out.endswith(b"0\r\n\r\n")
    assert pair.sink.closed


def test_send_after_complete_raises_without_output() -> None:
    pair = started_pair()
    pair.app_send(START)
    pair.app_send(BODY)
    pair.new_output()
    with pytest.raises(AppProtocolError):
        pair.app_send(BODY)
    assert pair.new_output() == b""


def test_every_send_after_failure_raises() -> None:
    pair = started_pair()
    with pytest.raises(AppProtocolError):
        pair.app_send(BODY)
    # The failure closed the connection: later sends are dropped like after a disconnect.
    pair.app_send(START)
    assert pair.stream.state is AsgiHttpState.CLOSED


def test_trailers_without_declaring_them() -> None:
    pair = started_pair()
    pair.app_send(START)
    pair.app_send(BODY)
    with pytest.raises(AppProtocolError):
        pair.app_send({"type": "http.response.trailers", "headers": []})


def test_more_trailers() -> None:
    pair = H1Pair()
    pair.request(headers=[("te", "trailers")])
    pair.app_send({**START, "trailers": True})
    pair.app_send(BODY)
    pair.app_send(
        {"type": "http.response.trailers", "headers": [(b"a", b"1")], "more_trailers": True}
    )
    assert not pair.new_output().endswith(b"\r\n\r\n")
    pair.app_send({"type": "http.response.trailers", "headers": [(b"b", b"2")]})
    assert pair.new_output().endswith(b"0\r\na: 1\r\nb: 2\r\n\r\n")


def test_send_after_disconnect_is_ignored() -> None:
    pair = started_pair()
    pair.server.connection_lost()
    pair.app_send(START)
    pair.app_send(BODY)
    pair.app_send({"type": "nonsense"})
    assert pair.new_output() == b""


def test_app_finished_without_response() -> None:
    pair = started_pair()
    pair.stream.app_finished(pair.now)
    assert_500_and_closed(pair)
    assert pair.stream.app_done


def test_app_finished_after_complete_response_is_quiet() -> None:
    pair = started_pair()
    pair.app_send(START)
    pair.app_send(BODY)
    pair.new_output()
    pair.stream.app_finished(pair.now)
    assert pair.new_output() == b""
    assert not pair.sink.closed


# -- a receive() waiting when the response ends (rule 4) --------------------------------------

TRAILERS_START = {**START, "trailers": True}
TRAILERS = {"type": "http.response.trailers", "headers": []}
BAD_BODY = {"type": "http.response.body", "body": "text"}


def wait_in_receive(pair: H1Pair) -> list[bool]:
    """Park the app in receive(), as the driver does; the list records its wake-up."""
    woken: list[bool] = []
    assert pair.receive() is None
    pair.stream.waiter = lambda: woken.append(True)
    return woken


@pytest.mark.parametrize(
    "messages",
    [[START, BODY], [TRAILERS_START, BODY, TRAILERS], [START, BAD_BODY]],
    ids=["body", "trailers", "failed"],
)
def test_a_waiting_receive_gets_disconnect_when_the_response_ends(
    messages: list[dict[str, Any]],
) -> None:
    """A disconnect watcher (a task waiting in receive()) is woken the moment the response
    is complete, or failed, and gets http.disconnect (before: it waited for good)."""
    pair = H1Pair()
    pair.request(headers=[("te", "trailers")])
    assert pair.receive() == {"type": "http.request", "body": b"", "more_body": False}
    woken = wait_in_receive(pair)
    for message in messages[:-1]:
        pair.app_send(message)
        assert woken == []
    try:
        pair.app_send(messages[-1])
    except AppProtocolError:
        pass
    assert woken == [True]
    assert pair.receive() == {"type": "http.disconnect"}


def test_an_app_that_returns_wakes_the_receive_it_left_waiting() -> None:
    pair = started_pair()
    woken = wait_in_receive(pair)
    pair.stream.app_finished(pair.now)
    assert woken == [True]
    assert pair.receive() == {"type": "http.disconnect"}
    assert_500_and_closed(pair)


def test_headers_may_be_any_iterable() -> None:
    pair = started_pair()
    pair.app_send({"type": "http.response.start", "status": 200, "headers": iter([(b"a", b"b")])})
    pair.app_send(BODY)
    assert b"\r\na: b\r\n" in pair.new_output()


def test_response_length_and_status_recorded() -> None:
    pair = started_pair()
    pair.app_send({**START, "status": 201})
    pair.app_send({"type": "http.response.body", "body": b"abc", "more_body": True})
    pair.app_send({"type": "http.response.body", "body": b"de"})
    assert pair.stream.status == 201
    assert pair.stream.response_length == 5


# -- scope helpers -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "path", "query"),
    [
        (b"/", b"/", b""),
        (b"/a?b=c?d", b"/a", b"b=c?d"),
        (b"*", b"*", b""),
        (b"http://h/x/y?z", b"/x/y", b"z"),
        (b"https://h", b"/", b""),
    ],
)
def test_split_target(target: bytes, path: bytes, query: bytes) -> None:
    assert split_target(target) == (path, query)


@pytest.mark.parametrize(
    ("raw", "decoded"),
    [
        (b"/plain", "/plain"),
        (b"/a%20b", "/a b"),
        (b"/caf%C3%A9", "/café"),
        (b"/bad%FF", "/bad\ufffd"),
        (b"/%2F", "//"),
        (b"/raw\xc3\xa9", "/rawé"),
    ],
)
def test_decode_path(raw: bytes, decoded: str) -> None:
    assert decode_path(raw) == decoded


def test_host_allowed() -> None:
    headers = [(b"host", b"a.example")]
    assert host_allowed(headers, ())
    assert host_allowed(headers, ("a.example",))
    assert not host_allowed(headers, ("b.example",))
    assert not host_allowed([], ("a.example",))


def test_build_scope_tls_extension_and_no_state() -> None:
    scope = build_scope(
        http_version=b"1.1",
        method=b"get",
        target=b"/",
        headers=[],
        scheme="https",
        client=None,
        server=("/tmp/sock", None),
        root_path="/root",
        state=None,
        tls={"tls_version": 0x0304},
    )
    assert scope["method"] == "GET"
    assert scope["root_path"] == "/root"
    assert scope["extensions"]["tls"] == {"tls_version": 0x0304}
    assert "state" not in scope


@pytest.mark.parametrize("parser_kind", ["h11", "httptools", "plain-h11"])
def test_a_bodiless_request_is_received_before_a_disconnect(parser_kind: str) -> None:
    """The message of a request complete at its head is made when the app first asks; a
    disconnect that came first still follows it, as it would any queued body."""
    pair = H1Pair(parser_kind=parser_kind)
    pair.request()
    pair.eof()
    pair.server.connection_lost()
    assert pair.receive() == {"type": "http.request", "body": b"", "more_body": False}
    assert pair.receive() == {"type": "http.disconnect"}
    assert pair.receive() == {"type": "http.disconnect"}


def test_each_bodiless_request_gets_its_own_message() -> None:
    pair = H1Pair()
    pair.request()
    first = pair.receive()
    assert first == {"type": "http.request", "body": b"", "more_body": False}
    first["body"] = b"changed by the app"
    pair.respond()
    pair.client_events()
    pair.next_cycle()
    pair.request()
    assert pair.receive() == {"type": "http.request", "body": b"", "more_body": False}
