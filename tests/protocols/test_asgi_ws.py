"""The ASGI WebSocket state machine over HTTP/1.1, in memory, with a real wsproto client.

The test plays the app: it takes messages with ``receive`` and gives the stream the app's
messages with ``app_send``. Every test runs with the client's bytes fed whole, one byte at a
time and in random pieces, and over each parser stack.
"""

from __future__ import annotations

from typing import Any

import pytest
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.extensions import PerMessageDeflate

from hypercorn.protocols.asgi_http import AsgiHttpStream
from hypercorn.protocols.asgi_ws import AsgiWsStream
from hypercorn.protocols.errors import AppProtocolError
from hypercorn.protocols.limits import ProtocolLimits
from hypercorn.protocols.ws import CLOSE_TIMEOUT
from tests.support.pairs import PARSERS, SPLITS
from tests.support.wspair import WsPair, close_payload, frame

pytestmark = pytest.mark.usefixtures("ws_framing")  # fast path and wsproto alike


@pytest.fixture(params=SPLITS)
def split(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=PARSERS)
def parser_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def pair(split: str = "whole", parser_kind: str = "auto", **limits: Any) -> WsPair:
    return WsPair(ProtocolLimits(**limits), split=split, parser_kind=parser_kind)


def test_scope_and_connect(parser_kind: str) -> None:
    p = pair(parser_kind=parser_kind)
    stream = p.handshake("/chat%20room?x=1", subprotocols=["one", "two"])
    scope = stream.scope
    assert scope["type"] == "websocket"
    assert scope["asgi"] == {"version": "3.0", "spec_version": "2.4"}
    assert scope["http_version"] == "1.1"
    assert scope["scheme"] == "ws"
    assert scope["path"] == "/chat room"
    assert scope["raw_path"] == b"/chat%20room"
    assert scope["query_string"] == b"x=1"
    assert scope["subprotocols"] == ["one", "two"]
    assert scope["client"] == ("127.0.0.1", 50000)
    assert scope["extensions"] == {"websocket.http.response": {}}
    assert "method" not in scope
    assert (b"upgrade", b"websocket") in [(n.lower(), v) for n, v in scope["headers"]]
    assert p.receive() == {"type": "websocket.connect"}
    assert p.receive() is None  # nothing more until the client sends
    assert p.sink.out == b""  # the handshake waits for the app


def test_wss_scheme() -> None:
    p = WsPair(ProtocolLimits(), ssl=True)
    assert p.handshake().scope["scheme"] == "wss"


def test_accept_with_subprotocol_and_headers(split: str) -> None:
    p = pair(split)
    p.handshake(subprotocols=["one", "two"])
    p.receive()
    p.app_send(
        {"type": "websocket.accept", "subprotocol": "two", "headers": [(b"x-extra", b"yes")]}
    )
    (accepted,) = p.events()
    assert isinstance(accepted, AcceptConnection)
    assert accepted.subprotocol == "two"
    assert (b"x-extra", b"yes") in accepted.extra_headers
    assert p.stream.status == 101
    assert p.session is not None
    assert p.sink.switched[0].to == "websocket"


def test_text_and_bytes_both_ways(split: str, parser_kind: str) -> None:
    p = pair(split, parser_kind)
    p.connect()
    p.send_ws(TextMessage(data="héllo"))
    p.send_ws(BytesMessage(data=b"\x00\xff"))
    assert p.receive_all() == [
        {"type": "websocket.receive", "bytes": None, "text": "héllo"},
        {"type": "websocket.receive", "bytes": b"\x00\xff", "text": None},
    ]
    p.app_send({"type": "websocket.send", "text": "ünïcode"})
    p.app_send({"type": "websocket.send", "bytes": bytearray(b"raw")})
    p.app_send({"type": "websocket.send", "bytes": None, "text": "only text"})
    events = p.events()
    assert [(type(e), e.data) for e in events] == [
        (TextMessage, "ünïcode"),
        (BytesMessage, b"raw"),
        (TextMessage, "only text"),
    ]


def test_fragmented_messages_are_assembled(split: str) -> None:
    p = pair(split)
    p.connect()
    p.send_ws(TextMessage(data="one ", message_finished=False))
    p.send_ws(TextMessage(data="two ", message_finished=False))
    p.send_ws(TextMessage(data="three"))
    p.send_ws(BytesMessage(data=b"a", message_finished=False))
    p.send_ws(BytesMessage(data=b"b"))
    assert [m["text"] or m["bytes"] for m in p.receive_all()] == ["one two three", b"ab"]


def test_client_close_reaches_the_app_and_is_echoed(split: str) -> None:
    p = pair(split)
    p.connect()
    p.send_ws(CloseConnection(code=4001, reason="bye"))
    assert p.receive_all() == [{"type": "websocket.disconnect", "code": 4001, "reason": "bye"}]
    assert p.sink.closed
    assert not p.sink.aborted
    close = p.events()[0]
    assert isinstance(close, CloseConnection)
    assert close.code == 4001
    # Receiving again gives the disconnect again; sends are refused by the driver.
    assert p.receive() == {"type": "websocket.disconnect", "code": 4001, "reason": "bye"}
    assert p.stream.disconnected


def test_client_close_without_code_is_1005() -> None:
    p = pair()
    p.connect()
    p.feed(frame(0x8))
    assert p.receive_all() == [{"type": "websocket.disconnect", "code": 1005, "reason": ""}]
    assert p.sink.closed


def test_app_close_waits_for_the_client_answer(split: str) -> None:
    p = pair(split)
    p.connect()
    p.app_send({"type": "websocket.close", "code": 4000, "reason": "done"})
    (close,) = p.events()
    assert isinstance(close, CloseConnection)
    assert (close.code, close.reason) == (4000, "done")
    assert not p.sink.closed
    assert p.receive() is None
    p.feed(frame(0x1, b"late"))  # dropped: the app closed
    p.send_ws(close.response())
    assert p.receive_all() == [{"type": "websocket.disconnect", "code": 4000, "reason": "done"}]
    assert p.sink.closed


def test_app_close_default_code_is_1000() -> None:
    p = pair()
    p.connect()
    p.app_send({"type": "websocket.close"})
    assert p.events()[0].code == 1000


def test_app_close_times_out_without_an_answer() -> None:
    p = pair()
    p.connect()
    p.app_send({"type": "websocket.close", "code": 1000})
    p.advance(CLOSE_TIMEOUT - 0.1)
    assert not p.sink.closed
    p.advance(0.2)
    assert p.sink.closed
    assert p.receive_all() == [{"type": "websocket.disconnect", "code": 1006, "reason": ""}]


def test_close_before_accept_is_403(split: str) -> None:
    p = pair(split)
    p.handshake()
    p.receive()
    p.app_send({"type": "websocket.close", "code": 1000})
    (reject,) = [e for e in p.events() if isinstance(e, RejectConnection)]
    assert reject.status_code == 403
    assert p.sink.closed
    assert p.stream.status == 403
    assert p.stream.app_finished(p.now) is None


def test_denial_response(split: str) -> None:
    p = pair(split)
    p.handshake()
    p.receive()
    p.app_send(
        {
            "type": "websocket.http.response.start",
            "status": 401,
            "headers": [(b"www-authenticate", b"Bearer"), (b"content-type", b"text/plain")],
        }
    )
    assert p.sink.out == b""  # (the head goes with the first body message)
    p.app_send({"type": "websocket.http.response.body", "body": b"no ", "more_body": True})
    p.app_send({"type": "websocket.http.response.body", "body": b"entry"})
    events = p.events()
    reject = events[0]
    assert isinstance(reject, RejectConnection)
    assert reject.status_code == 401
    assert (b"www-authenticate", b"Bearer") in reject.headers
    assert b"".join(e.data for e in events if isinstance(e, RejectData)) == b"no entry"
    assert p.stream.status == 401
    assert p.stream.app_finished(p.now) is None


def test_app_returning_without_accepting_is_500_logged_once() -> None:
    p = pair()
    stream = p.handshake()
    problem = stream.app_finished(p.now)
    assert problem is not None
    assert "without accepting" in problem
    (reject,) = [e for e in p.events() if isinstance(e, RejectConnection)]
    assert reject.status_code == 500
    assert stream.status == 500
    assert stream.app_finished(p.now) is None  # said once


def test_app_returning_after_accepting_closes_1011() -> None:
    p = pair()
    stream = p.connect()
    problem = stream.app_finished(p.now)
    assert problem is not None
    assert "1011" in problem
    (close,) = p.events()
    assert close.code == 1011
    assert stream.app_finished(p.now) is None


def test_app_returning_after_the_client_left_is_quiet() -> None:
    p = pair()
    stream = p.connect()
    p.send_ws(CloseConnection(code=1000))
    assert stream.app_finished(p.now) is None


def test_app_returning_mid_denial_aborts() -> None:
    p = pair()
    stream = p.handshake()
    p.app_send({"type": "websocket.http.response.start", "status": 403, "headers": []})
    p.app_send({"type": "websocket.http.response.body", "body": b"x", "more_body": True})
    assert stream.app_finished(p.now) is not None
    assert p.sink.closed


@pytest.mark.parametrize(
    ("message", "answer"),
    [
        ({"type": "websocket.send", "text": "too early"}, 500),
        ({"type": "websocket.accept", "subprotocol": "not-offered"}, 500),
        ({"type": "websocket.accept", "headers": [(b"sec-websocket-protocol", b"x")]}, 500),
        ({"type": "websocket.accept", "headers": [(b"x", b"bad\r\nvalue")]}, 500),
        ({"type": "websocket.http.response.start", "status": 101}, 500),
        ({"type": "websocket.http.response.body", "body": b""}, 500),
        ({"type": "http.response.start", "status": 200}, 500),
    ],
)
def test_app_errors_before_accepting_answer_500(message: dict[str, Any], answer: int) -> None:
    p = pair()
    p.handshake()
    p.receive()
    with pytest.raises(AppProtocolError):
        p.app_send(message)
    (reject,) = [e for e in p.events() if isinstance(e, RejectConnection)]
    assert reject.status_code == answer
    with pytest.raises(AppProtocolError):  # and every later message is refused
        p.app_send({"type": "websocket.accept"})
    assert p.stream.app_finished(p.now) is None  # (the error was the one report)


@pytest.mark.parametrize(
    "message",
    [
        {"type": "websocket.send", "bytes": b"x", "text": "y"},
        {"type": "websocket.send"},
        {"type": "websocket.send", "text": b"not str"},
        {"type": "websocket.send", "bytes": "not bytes"},
        {"type": "websocket.close", "code": 1006},
        {"type": "websocket.close", "code": 999},
        {"type": "websocket.close", "code": "1000"},
        {"type": "websocket.close", "reason": 5},
        {"type": "websocket.accept"},
        {"type": "websocket.http.response.start", "status": 200},
    ],
)
def test_app_errors_after_accepting_close_1011(message: dict[str, Any]) -> None:
    p = pair()
    p.connect()
    with pytest.raises(AppProtocolError):
        p.app_send(message)
    (close,) = p.events()
    assert isinstance(close, CloseConnection)
    assert close.code == 1011


def test_send_after_close_is_an_app_error() -> None:
    p = pair()
    p.connect()
    p.app_send({"type": "websocket.close"})
    with pytest.raises(AppProtocolError):
        p.app_send({"type": "websocket.send", "text": "after close"})


def test_peer_eof_without_close_is_1006(split: str) -> None:
    p = pair(split)
    p.connect()
    p.eof()
    assert p.receive_all() == [{"type": "websocket.disconnect", "code": 1006, "reason": ""}]
    assert p.sink.closed
    assert p.stream.disconnected


def test_peer_gone_during_the_handshake_disconnects_the_app() -> None:
    p = pair()
    p.handshake()
    p.eof()
    assert p.receive_all() == [
        {"type": "websocket.connect"},
        {"type": "websocket.disconnect", "code": 1006, "reason": ""},
    ]
    assert p.stream.disconnected


def test_bytes_sent_before_the_101_are_handed_over(split: str) -> None:
    """A client that does not wait for the 101 (pipelining its first frame) loses nothing:
    the HTTP/1.1 connection hands its unparsed bytes to the session."""
    p = pair(split)
    p.handshake(then=frame(0x1, b"early"))
    p.receive()
    p.app_send({"type": "websocket.accept"})
    assert p.receive() == {"type": "websocket.receive", "bytes": None, "text": "early"}
    assert not p.sink.reading_paused


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ([("sec-websocket-version", "8")], 426),
        ([("sec-websocket-key", "short")], 400),
    ],
)
def test_bad_handshakes_are_refused(headers: list[tuple[str, str]], status: int) -> None:
    p = pair()
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    fields = {
        "host": "example.com",
        "upgrade": "websocket",
        "connection": "Upgrade",
        "sec-websocket-key": key,
        "sec-websocket-version": "13",
    }
    fields.update(dict(headers))
    p.request(headers=[(k, v) for k, v in fields.items() if k != "host"])
    (response, *_) = p.client_events()
    assert response.status_code == status
    if status == 426:
        assert (b"sec-websocket-version", b"13") in response.headers
    assert p.sink.closed
    assert not p.sink.started


def test_missing_key_is_400() -> None:
    p = pair()
    p.request(
        headers=[
            ("upgrade", "websocket"),
            ("connection", "upgrade"),
            ("sec-websocket-version", "13"),
        ]
    )
    assert p.client_events()[0].status_code == 400


def test_upgrade_on_post_is_plain_http() -> None:
    p = pair()
    p.request(
        "POST",
        headers=[("upgrade", "websocket"), ("connection", "upgrade")],
        body=b"x",
    )
    assert isinstance(p.stream, AsgiHttpStream)


def test_server_names_refuse_other_hosts() -> None:
    p = WsPair(ProtocolLimits(server_names=("good.example",)))
    p.feed(p.ws.send(Request(host="bad", target="/")))
    assert b"404" in bytes(p.sink.out).split(b"\r\n")[0]
    assert p.sink.closed


def test_shutdown_closes_with_1001_and_refuses_sends(split: str) -> None:
    p = pair(split)
    stream = p.connect()
    p.session.start_shutdown(p.now)  # type: ignore[union-attr]
    (close,) = p.events()
    assert close.code == 1001
    assert stream.disconnected  # the driver refuses the app's sends from now on
    assert p.receive() is None
    p.send_ws(close.response())
    assert p.receive_all() == [{"type": "websocket.disconnect", "code": 1001, "reason": ""}]
    assert p.sink.closed


def test_deflate_is_negotiated_and_used(split: str) -> None:
    p = pair(split)
    p.connect(extensions=[PerMessageDeflate()])
    assert p.stream.extension is not None
    text = "compressible " * 200
    p.send_ws(TextMessage(data=text))
    assert p.receive()["text"] == text  # type: ignore[index]
    before = len(p.sink.out)
    p.app_send({"type": "websocket.send", "text": text})
    assert len(p.sink.out) - before < len(text) // 10
    assert p.events()[0].data == text


def test_deflate_not_offered_when_disabled() -> None:
    p = pair(websocket_deflate=False)
    p.handshake(extensions=[PerMessageDeflate()])
    p.receive()
    p.app_send({"type": "websocket.accept"})
    (accepted,) = p.events()
    assert accepted.extensions == []
    p.send_ws(TextMessage(data="plain"))
    assert p.receive()["text"] == "plain"  # type: ignore[index]


def test_stream_is_an_asgi_ws_stream() -> None:
    assert isinstance(pair().handshake(), AsgiWsStream)


def test_raw_close_frame_with_reason() -> None:
    p = pair()
    p.connect()
    p.feed(frame(0x8, close_payload(1000, b"ok")))
    assert p.receive_all()[-1] == {"type": "websocket.disconnect", "code": 1000, "reason": "ok"}
