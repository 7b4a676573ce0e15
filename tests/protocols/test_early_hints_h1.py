"""103 Early Hints on HTTP/1.1 (``http.response.early_hint``), which no peer server sends."""

from __future__ import annotations

import h11
import pytest

from tests.support.pairs import H1Pair


def test_early_hints_before_the_response() -> None:
    pair = H1Pair()
    pair.request()
    assert "http.response.early_hint" in pair.stream.scope["extensions"]
    links = [b"</style.css>; rel=preload; as=style", b"</app.js>; rel=preload"]
    pair.app_send({"type": "http.response.early_hint", "links": links})
    pair.respond(200, [], b"page")
    events = pair.client_events()
    assert isinstance(events[0], h11.InformationalResponse)
    assert events[0].status_code == 103
    assert [v for n, v in events[0].headers if n == b"link"] == links
    assert isinstance(events[1], h11.Response)
    assert events[1].status_code == 200
    assert not pair.sink.closed  # keep-alive survives the interim response


def test_no_early_hints_on_http10() -> None:
    pair = H1Pair()
    pair.feed(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
    pair.app_send({"type": "http.response.early_hint", "links": [b"</a>"]})
    pair.respond(200, [], b"ok")
    assert bytes(pair.sink.out).startswith(b"HTTP/1.1 200 ")


@pytest.mark.parametrize("links", [[b"ok", "not bytes"], [b"a\r\nb"]])
def test_bad_links_are_an_app_error(links: list[object]) -> None:
    from hypercorn.protocols.errors import AppProtocolError

    pair = H1Pair()
    pair.request()
    with pytest.raises(AppProtocolError):
        pair.app_send({"type": "http.response.early_hint", "links": links})
    assert pair.client_events()[0].status_code == 500


def test_push_is_ignored_on_http11() -> None:
    pair = H1Pair()
    pair.request()
    assert "http.response.push" not in pair.stream.scope["extensions"]
    pair.app_send({"type": "http.response.push", "path": "/x", "headers": []})
    pair.respond(200, [], b"ok")
    assert pair.client_events()[0].status_code == 200
    assert len(pair.sink.started) == 1
