"""Judging WebSocket requests and negotiating permessage-deflate (RFC 6455 4.2, RFC 7692 7)."""

from __future__ import annotations

import pytest
from wsproto.utilities import generate_accept_token

from hypercorn.protocols.errors import AppProtocolError, RemoteProtocolError
from hypercorn.protocols.ws_handshake import WsHandshake, judge_handshake, negotiate_deflate

KEY = b"dGhlIHNhbXBsZSBub25jZQ=="


def judged(*extra: tuple[bytes, bytes], http2: bool = False) -> WsHandshake:
    headers = [(b"sec-websocket-version", b"13")]
    if not http2:
        headers.append((b"sec-websocket-key", KEY))
    result = judge_handshake([*headers, *extra], http2=http2)
    assert isinstance(result, WsHandshake)
    return result


def test_rfc_example_accept_token() -> None:
    lines, _ = judged().accept(None, [], 1000)
    # RFC 6455 1.3's example.
    assert lines == [(b"sec-websocket-accept", b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")]
    assert generate_accept_token(KEY) == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ([(b"sec-websocket-version", b"13")], 400),
        ([(b"sec-websocket-version", b"13"), (b"sec-websocket-key", b"c2hvcnQ=")], 400),
        (
            [
                (b"sec-websocket-version", b"13"),
                (b"sec-websocket-key", b"!!notbase64!!!!!!!!!!!=="),
            ],
            400,
        ),
        ([(b"sec-websocket-version", b"13"), (b"sec-websocket-key", KEY)] * 2, 400),
        ([(b"sec-websocket-key", KEY)], 426),
        ([(b"sec-websocket-version", b"8"), (b"sec-websocket-key", KEY)], 426),
        (
            [
                (b"sec-websocket-version", b"13"),
                (b"sec-websocket-key", KEY),
                (b"sec-websocket-protocol", "é".encode()),
            ],
            400,
        ),
    ],
)
def test_bad_requests(headers: list[tuple[bytes, bytes]], status: int) -> None:
    result = judge_handshake(headers, http2=False)
    assert isinstance(result, RemoteProtocolError)
    assert result.status_hint == status


def test_http2_needs_no_key_and_sends_no_accept() -> None:
    handshake = judged(http2=True)
    assert handshake.key is None
    assert handshake.accept(None, [], 1000)[0] == []


def test_subprotocols_and_offers_across_headers() -> None:
    handshake = judged(
        (b"Sec-WebSocket-Protocol", b"one, two"),
        (b"sec-websocket-protocol", b"three"),
        (b"sec-websocket-extensions", b"foo, permessage-deflate; client_max_window_bits"),
    )
    assert handshake.subprotocols == ["one", "two", "three"]
    assert handshake.offers == [b"foo", b"permessage-deflate; client_max_window_bits"]


def test_accept_checks_the_apps_answer() -> None:
    handshake = judged((b"sec-websocket-protocol", b"chat"))
    lines, _ = handshake.accept("chat", [(b"x-a", b"1")], 1000)
    assert (b"sec-websocket-protocol", b"chat") in lines
    assert lines[-1] == (b"x-a", b"1")
    with pytest.raises(AppProtocolError, match="not offered"):
        handshake.accept("other", [], 1000)
    with pytest.raises(AppProtocolError, match="subprotocol key"):
        handshake.accept(None, [(b"Sec-WebSocket-Protocol", b"chat")], 1000)
    with pytest.raises(AppProtocolError):
        handshake.accept(None, [(b"x", b"a\r\nb")], 1000)


@pytest.mark.parametrize(
    ("offers", "answer"),
    [
        ([b"permessage-deflate"], b"permessage-deflate"),
        ([b"permessage-deflate; client_max_window_bits"], b"permessage-deflate"),
        ([b"permessage-deflate; client_max_window_bits=10"], b"permessage-deflate"),
        (
            [b"permessage-deflate; server_no_context_takeover; client_no_context_takeover"],
            b"permessage-deflate; server_no_context_takeover; client_no_context_takeover",
        ),
        (
            [b'permessage-deflate; server_max_window_bits="10"'],
            b"permessage-deflate; server_max_window_bits=10",
        ),
        # zlib cannot deflate with a 256-byte window: that offer is declined, the next taken.
        (
            [b"permessage-deflate; server_max_window_bits=8", b"permessage-deflate"],
            b"permessage-deflate",
        ),
        ([b"permessage-deflate; unknown_param"], None),
        ([b"permessage-deflate; server_no_context_takeover; server_no_context_takeover"], None),
        ([b"permessage-deflate; server_max_window_bits"], None),
        ([b"permessage-deflate; server_max_window_bits=16"], None),
        ([b"permessage-deflate; client_max_window_bits=7"], None),
        ([b"permessage-deflate; server_no_context_takeover=1"], None),
        ([b"x-webkit-deflate-frame"], None),
        ([], None),
    ],
)
def test_deflate_negotiation(offers: list[bytes], answer: bytes | None) -> None:
    got, extension = negotiate_deflate(offers, 1000)
    assert got == answer
    assert (extension is None) is (answer is None)


def test_negotiated_parameters_reach_the_extension() -> None:
    _, extension = negotiate_deflate(
        [b"permessage-deflate; server_max_window_bits=11; server_no_context_takeover"], 1000
    )
    assert extension is not None
    assert extension.server_max_window_bits == 11
    assert extension.server_no_context_takeover
    assert not extension.client_no_context_takeover
    assert extension.enabled()


def test_deflate_can_be_refused() -> None:
    handshake = judged((b"sec-websocket-extensions", b"permessage-deflate"))
    lines, extension = handshake.accept(None, [], 1000, deflate=False)
    assert extension is None
    assert all(name != b"sec-websocket-extensions" for name, _ in lines)
