"""Keep-alive, header, body-read and write deadlines, driven by an explicit clock."""

from __future__ import annotations

import h11
import pytest

from hypercorn.protocols.http1.connection import H1Phase
from hypercorn.protocols.limits import ProtocolLimits
from tests.support.pairs import H1Pair

LIMITS = ProtocolLimits(
    keep_alive_timeout=5.0, header_read_timeout=10.0, read_timeout=20.0, write_timeout=30.0
)


def pair() -> H1Pair:
    return H1Pair(LIMITS)


def test_new_connection_silent_closes_after_header_timeout() -> None:
    p = pair()
    assert p.server.next_deadline() == p.now + 10.0
    p.advance(9.9)
    assert not p.sink.closed
    p.advance(0.1)
    assert p.sink.closed
    assert p.new_output() == b""


def test_partial_head_gets_408() -> None:
    p = pair()
    p.advance(3)
    p.feed(b"GET / HTTP/1.1\r\nHo")
    assert p.server.phase is H1Phase.HEAD
    assert p.server.next_deadline() == p.now + 10.0
    p.advance(9.9)
    p.feed(b"st: x")  # trickling bytes do not extend the head deadline
    p.advance(0.1)
    assert p.new_output().startswith(b"HTTP/1.1 408 ")
    assert p.sink.closed


def test_keep_alive_timeout() -> None:
    p = pair()
    p.request()
    assert p.server.next_deadline() is None  # responding: the app takes its time
    p.advance(100)
    p.respond(200, [], b"")
    p.client_events()
    assert p.server.idle
    assert p.server.next_deadline() == p.now + 5.0
    p.advance(4.9)
    assert not p.sink.closed
    p.advance(0.1)
    assert p.sink.closed
    assert p.new_output() == b""


def test_next_request_after_idle_uses_header_timeout() -> None:
    p = pair()
    p.request()
    p.respond(200, [], b"")
    p.client_events()
    p.advance(4)
    p.feed(b"GET /")
    assert p.server.next_deadline() == p.now + 10.0


def test_body_read_timeout_408() -> None:
    p = pair()
    p.send(
        h11.Request(method="POST", target="/", headers=[("host", "x"), ("content-length", "10")])
    )
    assert p.server.next_deadline() == p.now + 20.0
    p.advance(15)
    p.send(h11.Data(data=b"abc"))  # progress extends it
    assert p.server.next_deadline() == p.now + 20.0
    p.advance(20)
    assert p.new_output().startswith(b"HTTP/1.1 408 ")
    assert p.sink.closed
    assert p.receive_all()[-1] == {"type": "http.disconnect"}


def test_body_read_timeout_after_response_started_closes_without_408() -> None:
    p = pair()
    p.send(
        h11.Request(method="POST", target="/", headers=[("host", "x"), ("content-length", "10")])
    )
    p.app_send({"type": "http.response.start", "status": 200, "headers": []})
    p.app_send({"type": "http.response.body", "body": b"a", "more_body": True})
    p.new_output()
    p.advance(20)
    assert p.new_output() == b""
    assert p.sink.closed


def test_no_read_deadline_before_100_continue() -> None:
    p = pair()
    p.send(
        h11.Request(
            method="POST",
            target="/",
            headers=[("host", "x"), ("content-length", "3"), ("expect", "100-continue")],
        )
    )
    assert p.server.next_deadline() is None
    p.advance(1000)
    assert not p.sink.closed
    assert p.receive() is None  # sends 100; now the client owes us the body
    assert p.server.next_deadline() == p.now + 20.0


def test_no_read_deadline_while_app_is_not_reading() -> None:
    p = H1Pair(ProtocolLimits(read_timeout=20.0, body_buffer_size=10))
    p.send(
        h11.Request(method="POST", target="/", headers=[("host", "x"), ("content-length", "100")]),
        h11.Data(data=b"a" * 50),
    )
    assert p.sink.reading_paused
    assert p.server.next_deadline() is None
    p.advance(1000)
    assert not p.sink.closed
    while p.receive() is not None:
        pass
    assert p.server.next_deadline() == p.now + 20.0


def test_read_timeout_none_disables_it() -> None:
    p = H1Pair(ProtocolLimits(read_timeout=None))
    p.send(
        h11.Request(method="POST", target="/", headers=[("host", "x"), ("content-length", "10")])
    )
    assert p.server.next_deadline() is None


def test_write_timeout_aborts() -> None:
    p = pair()
    p.request()
    p.app_send({"type": "http.response.start", "status": 200, "headers": []})
    p.app_send({"type": "http.response.body", "body": b"a", "more_body": True})
    p.server.write_paused(p.now)
    assert p.server.next_deadline() == p.now + 30.0
    p.advance(30)
    assert p.sink.aborted
    assert p.receive()["type"] == "http.request"  # type: ignore[index]
    assert p.receive() == {"type": "http.disconnect"}


def test_write_resumed_clears_write_deadline() -> None:
    p = pair()
    p.request()
    p.server.write_paused(p.now)
    p.advance(10)
    p.server.write_resumed(p.now)
    assert p.server.next_deadline() is None
    p.advance(100)
    assert not p.sink.closed


def test_write_deadline_wins_when_earlier() -> None:
    p = H1Pair(ProtocolLimits(keep_alive_timeout=50.0, write_timeout=1.0))
    p.request()
    p.respond(200, [], b"")
    p.server.write_paused(p.now)
    assert p.server.next_deadline() == p.now + 1.0


@pytest.mark.parametrize("early", [0.0, 0.5])
def test_deadline_handled_only_when_due(early: float) -> None:
    p = pair()
    deadline = p.server.next_deadline()
    assert deadline is not None
    p.server.handle_deadline(deadline - 1 - early)
    assert not p.sink.closed
    p.server.handle_deadline(deadline)
    assert p.sink.closed


def test_closed_connection_has_no_deadline() -> None:
    p = pair()
    p.server.connection_lost()
    assert p.server.next_deadline() is None
    p.server.handle_deadline(p.now + 1000)
