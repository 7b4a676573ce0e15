"""The ways into HTTP/2 from an HTTP/1.1 connection, in memory: the prior-knowledge preface and
``Upgrade: h2c`` (the request, body included, answered on stream 1). The HTTP/1.1 connection
hands over with a ``SwitchProtocol`` value; here the test plays the driver and builds the
``H2Connection`` from it, as ``SWITCHES['h2']`` does."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import h2.config
import h2.connection
import h2.events
import pytest

from hypercorn.protocols.connection import SwitchProtocol
from hypercorn.protocols.limits import ProtocolLimits
from tests.support.h2pair import ENGINES, PREFACE, H2Pair, every_engine
from tests.support.pairs import H1Pair, split_bytes


@pytest.fixture(autouse=True, params=sorted(ENGINES))
def _engine(request: pytest.FixtureRequest) -> Iterator[str]:
    """Every test here runs on every HTTP/2 engine."""
    yield from every_engine(request)


SPLITS = ("whole", "bytewise", "random")


def h1_then_h2(pair: H1Pair) -> dict[str, H2Pair]:
    """When ``pair``'s HTTP/1.1 connection switches, build the HTTP/2 one on its sink."""
    built: dict[str, H2Pair] = {}

    def on_switch(switch: SwitchProtocol) -> None:
        assert switch.to == "h2"
        h2pair = H2Pair(
            pair.limits,
            upgrade=switch if switch.request is not None else None,
            handshake=False,
            now=pair.now,
        )
        # (The HTTP/2 side writes to its own sink; later bytes for the socket go to it.)
        if switch.trailing:
            h2pair.server.receive_data(switch.trailing, pair.now)
        pair.server = h2pair.server  # type: ignore[assignment]
        built["h2"] = h2pair

    pair.sink.on_switch = on_switch
    return built


def h2_client(upgrade: bool = False) -> tuple[h2.connection.H2Connection, bytes | None]:
    config = h2.config.H2Configuration(client_side=True, header_encoding=None)
    client = h2.connection.H2Connection(config=config)
    settings = client.initiate_upgrade_connection() if upgrade else None
    if not upgrade:
        client.initiate_connection()
    return client, settings


@pytest.mark.parametrize("split", SPLITS)
def test_prior_knowledge_preface_switches(split: str) -> None:
    pair = H1Pair(split=split)
    built = h1_then_h2(pair)
    client, _ = h2_client()
    client.send_headers(
        1,
        [(b":method", b"GET"), (b":path", b"/pk"), (b":scheme", b"http"), (b":authority", b"a")],
        end_stream=True,
    )
    pair.feed(client.data_to_send())
    assert len(pair.sink.switched) == 1
    switch = pair.sink.switched[0]
    assert switch.request is None
    assert switch.trailing.startswith(PREFACE[:16])
    h2pair = built["h2"]
    # (Bytes cut inside the preface reach the H2 side through later feeds.)
    stream = h2pair.stream(1)
    assert stream.scope["path"] == "/pk"
    assert stream.scope["http_version"] == "2"
    assert not pair.sink.started  # the HTTP/1.1 side started nothing


def test_split_preface_after_the_first_16_bytes() -> None:
    pair = H1Pair()
    built = h1_then_h2(pair)
    client, _ = h2_client()
    client.send_headers(
        1,
        [(b":method", b"GET"), (b":path", b"/"), (b":scheme", b"http"), (b":authority", b"a")],
        end_stream=True,
    )
    data = client.data_to_send()
    for piece in split_bytes(data, "bytewise"):
        pair.server.receive_data(piece, pair.now)
    assert built["h2"].stream(1).scope["path"] == "/"


def test_pri_method_that_is_not_the_preface_is_http11() -> None:
    pair = H1Pair()
    pair.feed(b"PRIX / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert not pair.sink.switched


def upgrade_request(settings: bytes, body: bytes = b"", extra: bytes = b"") -> bytes:
    head = (
        b"POST /up?q=1 HTTP/1.1\r\nHost: example.com\r\nConnection: Upgrade, HTTP2-Settings\r\n"
        b"Upgrade: h2c\r\nHTTP2-Settings: " + settings + b"\r\nX-A: b\r\n" + extra
    )
    if body:
        head += b"Content-Length: %d\r\n" % len(body)
    return head + b"\r\n" + body


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("body", [b"", b"hello body"])
def test_h2c_upgrade_answers_the_request_on_stream_1(split: str, body: bytes) -> None:
    pair = H1Pair(split=split)
    built = h1_then_h2(pair)
    client, settings = h2_client(upgrade=True)
    assert settings is not None
    pair.feed(upgrade_request(settings.rstrip(b"="), body))
    switch = pair.sink.switched[0]
    assert switch.request is not None
    assert switch.body == body
    output = bytes(pair.sink.out)
    assert output.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert b"upgrade: h2c" in output.split(b"\r\n\r\n")[0]
    h2pair = built["h2"]
    h2pair.client = client
    h2pair.flush()  # the client's preface, after the 101
    h2pair.client_events()
    stream = h2pair.stream(1)
    assert stream.scope["method"] == "POST"
    assert stream.scope["path"] == "/up"
    assert stream.scope["headers"] == [(b"host", b"example.com"), (b"x-a", b"b")]
    assert b"".join(m["body"] for m in h2pair.receive_all(1)) == body
    h2pair.respond(1, 200, [], b"on stream 1")
    assert h2pair.response(1)[1:] == (b"on stream 1", True)
    assert not pair.sink.started


def test_h2c_over_tls_is_ignored() -> None:
    pair = H1Pair(ssl=True)
    _, settings = h2_client(upgrade=True)
    assert settings is not None
    pair.feed(upgrade_request(settings))
    assert not pair.sink.switched
    assert pair.stream.scope["path"] == "/up"


@pytest.mark.parametrize(
    "settings_header",
    [b"!!not base64!!", b"AAMAAABkAAQ"],  # (the second decodes to 8 octets: not n x 6)
)
def test_h2c_with_bad_settings_stays_http11(settings_header: bytes) -> None:
    pair = H1Pair()
    pair.feed(upgrade_request(settings_header))
    assert not pair.sink.switched
    pair.receive_all()
    pair.respond(200, [], b"http/1.1")
    assert pair.client_events()[0].status_code == 200


def test_h2c_with_two_settings_headers_stays_http11() -> None:
    pair = H1Pair()
    _, settings = h2_client(upgrade=True)
    assert settings is not None
    pair.feed(upgrade_request(settings, extra=b"HTTP2-Settings: " + settings + b"\r\n"))
    assert not pair.sink.switched


def test_h2c_with_a_body_over_the_buffer_stays_http11() -> None:
    pair = H1Pair(ProtocolLimits(body_buffer_size=8))
    _, settings = h2_client(upgrade=True)
    assert settings is not None
    pair.feed(upgrade_request(settings, b"more than eight"))
    assert not pair.sink.switched
    assert b"".join(m["body"] for m in pair.receive_all()) == b"more than eight"


def test_h2c_client_sees_the_response() -> None:
    """The h2 client, after 101, reads the response to its upgrade request on stream 1."""
    pair = H1Pair()
    built = h1_then_h2(pair)
    client, settings = h2_client(upgrade=True)
    assert settings is not None
    pair.feed(upgrade_request(settings))
    h2pair = built["h2"]
    h2pair.client = client
    h2pair.flush()
    h2pair.respond(1, 201, [(b"x-up", b"1")], b"")
    events = h2pair.of_type(h2.events.ResponseReceived)
    assert [dict(e.headers)[b":status"] for e in events] == [b"201"]
    assert base64.urlsafe_b64decode(settings)  # (the header as the client made it)
