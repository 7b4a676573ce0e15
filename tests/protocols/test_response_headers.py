"""Response headers cannot inject, drop or change header lines (issue 10, item 3).

The app's header names must be RFC 9110 tokens and its values free of CR, LF and NUL. What
is not is refused before anything is written: a 500 (keep-alive intact) when the head is not
out yet. The property: whatever names and values an app sends, the head on the wire holds
exactly the app's lines (plus the server's own Date / Server / Content-Length), or it is a
500 that holds none of them, and the connection serves the next request.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hypercorn.protocols.errors import AppProtocolError
from tests.support.pairs import H1Pair

GET = b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"
TCHARS = b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
#: Names whose handling is the server's (framing, persistence, Date / Server).
OURS = {b"content-length", b"transfer-encoding", b"connection", b"date", b"server"}
SERVER_LINES = (b"date: ", b"server: ", b"content-length: ")


def is_token(name: bytes) -> bool:
    return bool(name) and all(byte in TCHARS for byte in name)


def is_safe_value(value: bytes) -> bool:
    return not any(byte in value for byte in b"\r\n\x00")


# Mostly near-misses: a token or a plain value with one hostile byte sequence inserted.
_HOSTILE = st.sampled_from(
    [b":", b": ", b" ", b"\t", b"\r", b"\n", b"\r\n", b"\x00", b"\x01", b"\x7f", b"\xc3\xa9", b""]
)
_TOKEN = st.binary(min_size=1, max_size=12).map(
    lambda raw: bytes(TCHARS[byte % len(TCHARS)] for byte in raw)
)


@st.composite
def _with_insert(draw: st.DrawFn, base: st.SearchStrategy[bytes]) -> bytes:
    text = draw(base)
    at = draw(st.integers(0, len(text)))
    return text[:at] + draw(_HOSTILE) + text[at:]


NAMES = st.one_of(_TOKEN, _with_insert(_TOKEN), st.binary(max_size=12)).filter(
    lambda name: name.lower() not in OURS
)
VALUES = st.one_of(
    st.binary(max_size=16).filter(is_safe_value),
    _with_insert(st.binary(max_size=12).filter(is_safe_value)),
    st.binary(max_size=16),
)


def head_lines(data: bytes) -> tuple[bytes, list[bytes], bytes]:
    head, sep, rest = data.partition(b"\r\n\r\n")
    assert sep, data
    status_line, *lines = head.split(b"\r\n")
    return status_line, lines, rest


def app_lines(lines: list[bytes]) -> list[bytes]:
    return [line for line in lines if not line.lower().startswith(SERVER_LINES)]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(headers=st.lists(st.tuples(NAMES, VALUES), min_size=1, max_size=4))
def test_the_wire_holds_exactly_the_apps_header_lines_or_a_500(
    headers: list[tuple[bytes, bytes]],
) -> None:
    pair = H1Pair()
    pair.feed(GET)
    acceptable = all(is_token(name) and is_safe_value(value) for name, value in headers)
    if acceptable:
        pair.respond(200, headers, b"hello")
    else:
        with pytest.raises(AppProtocolError):
            pair.respond(200, headers, b"hello")
    status_line, lines, rest = head_lines(pair.new_output())
    if acceptable:
        assert status_line == b"HTTP/1.1 200 OK"
        assert app_lines(lines) == [b"%s: %s" % header for header in headers]
        assert rest == b"hello"
    else:
        assert status_line == b"HTTP/1.1 500 Internal Server Error"
        assert app_lines(lines) == []
        assert rest == b""
    # Either way the connection serves the next request.
    assert not pair.sink.closed
    pair.feed(GET)
    pair.respond(200, [(b"x-next", b"1")], b"next")
    status_line, lines, rest = head_lines(pair.new_output())
    assert (status_line, app_lines(lines), rest) == (b"HTTP/1.1 200 OK", [b"x-next: 1"], b"next")


INJECTING_NAMES = [
    b"x-a: b",
    b"x-a:b",
    b"x a",
    b"x\ta",
    b"",
    b"x\x01",
    b"x\x7f",
    b"caf\xc3\xa9",
    b"(x)",
    b":x",
    b"x:",
]


@pytest.mark.parametrize("name", INJECTING_NAMES)
@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "streamed"])
def test_a_name_that_is_not_a_token_is_refused_before_anything_is_written(
    name: bytes, streamed: bool
) -> None:
    pair = H1Pair()
    pair.feed(GET)
    pair.app_send(
        {"type": "http.response.start", "status": 200, "headers": [(b"a", b"1"), (name, b"c")]}
    )
    assert pair.new_output() == b""  # nothing yet: the head goes with the first body
    with pytest.raises(AppProtocolError, match="invalid header name"):
        pair.app_send({"type": "http.response.body", "body": b"body", "more_body": streamed})
    status_line, lines, rest = head_lines(pair.new_output())
    assert status_line == b"HTTP/1.1 500 Internal Server Error"
    assert app_lines(lines) == []
    assert rest == b""
    assert b"connection: close" not in lines


def test_str_names_and_values_are_refused() -> None:
    for header in [("x-a", b"b"), (b"x-a", "b")]:
        pair = H1Pair()
        pair.feed(GET)
        with pytest.raises(AppProtocolError, match="must be bytes"):
            pair.respond(200, [header], b"x")  # type: ignore[list-item]
        assert pair.new_output().startswith(b"HTTP/1.1 500 ")


@pytest.mark.parametrize(
    "trailer", [(b"x-t: injected", b"v"), (b"x-t", b"v\r\nx-u: injected"), (b"", b"v")]
)
def test_a_bad_trailer_is_refused_and_the_response_is_not_completed(
    trailer: tuple[bytes, bytes],
) -> None:
    pair = H1Pair()
    pair.feed(b"GET / HTTP/1.1\r\nHost: example.com\r\nTE: trailers\r\n\r\n")
    pair.app_send({"type": "http.response.start", "status": 200, "trailers": True})
    pair.app_send({"type": "http.response.body", "body": b"data"})
    sent = pair.new_output()
    assert sent.endswith(b"4\r\ndata\r\n")
    with pytest.raises(AppProtocolError, match="header"):
        pair.app_send({"type": "http.response.trailers", "headers": [trailer]})
    # The head was out: the peer must see an incomplete response (no last chunk).
    assert b"injected" not in pair.new_output()
    assert pair.sink.closed


@pytest.mark.parametrize("link", [b"</a>; rel=preload\r\nx-evil: 1", b"</a>\x00", b"</a>\n"])
def test_an_early_hint_with_an_unsafe_link_is_refused_with_500(link: bytes) -> None:
    pair = H1Pair()
    pair.feed(GET)
    with pytest.raises(AppProtocolError):
        pair.app_send({"type": "http.response.early_hint", "links": [b"</ok>", link]})
    status_line, lines, rest = head_lines(pair.new_output())
    assert status_line == b"HTTP/1.1 500 Internal Server Error"
    assert app_lines(lines) == []
    assert rest == b""
    assert not pair.sink.closed
    pair.feed(GET)
    pair.respond(200, [], b"next")
    assert pair.new_output().startswith(b"HTTP/1.1 200 OK\r\n")
