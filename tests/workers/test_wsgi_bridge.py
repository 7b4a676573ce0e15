"""The WSGI bridge on a real backend: environ, fast path, streaming, back-pressure, limits."""

from __future__ import annotations

import io
import logging
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest

from hypercorn.apps import wrap_app
from hypercorn.config import Config
from hypercorn.protocols.wsgi import (
    InvalidPathError,
    UnderscoreHeaderError,
    WSGIResponseError,
    build_environ,
    encode_response_head,
    encode_response_headers,
    parse_status,
)
from hypercorn.workers import run_with_backend
from hypercorn.workers.backend import AsyncEvent, Backend
from hypercorn.workers.wsgi_bridge import HIGH_WATER, STREAM_AFTER, WSGIBridge
from tests.support.apps import wsgi_echo, wsgi_hello, wsgi_streaming

T = TypeVar("T")
Message = dict[str, Any]


@pytest.fixture(params=["asyncio", "uvloop", "trio"])
def worker_class(request: pytest.FixtureRequest) -> str:
    """The bridge is written once against Backend: it runs on every backend."""
    return str(request.param)


def scope(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/",
        "raw_path": b"/",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"example.com")],
        "client": ("10.0.0.1", 40000),
        "server": ("127.0.0.1", 8000),
    }
    base.update(overrides)
    return base


class Client:
    """The ASGI side of one request: feeds body messages, records what the app sends.

    Like a real server, ``receive`` after the body blocks until the client disconnects
    (``disconnect()``) or the response is complete.
    """

    def __init__(self, body: list[bytes] | None = None, *, disconnect: bool = False) -> None:
        chunks = body or [b""]
        self.requests: list[Message] = [
            {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1}
            for i, chunk in enumerate(chunks)
        ]
        if disconnect:
            self.requests = [{"type": "http.disconnect"}]
        self.sent: list[Message] = []
        self.on_send: Callable[[Message], Awaitable[None]] | None = None
        self.backend: Backend | None = None
        self.gone: AsyncEvent | None = None

    def disconnect(self) -> None:
        assert self.backend is not None
        if self.gone is None:
            self.gone = self.backend.event()
        self.gone.set()

    async def receive(self) -> Message:
        if self.requests:
            return self.requests.pop(0)
        assert self.backend is not None
        if self.gone is None:
            self.gone = self.backend.event()
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        if self.gone is not None and self.gone.is_set():
            return  # dropped, as the driver does after a disconnect
        self.sent.append(message)
        if self.on_send is not None:
            await self.on_send(message)
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            self.disconnect()

    @property
    def status(self) -> int:
        return int(self.sent[0]["status"])

    @property
    def headers(self) -> dict[bytes, bytes]:
        return dict(self.sent[0]["headers"])

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.sent[1:])


def call(
    worker_class: str,
    app: Any,
    request_scope: dict[str, Any] | None = None,
    client: Client | None = None,
    *,
    max_body_size: int = 1024,
    setup: Callable[[Backend, Client], None] | None = None,
) -> Client:
    client = client or Client()

    async def main(backend: Backend) -> None:
        client.backend = backend
        if setup is not None:
            setup(backend, client)
        bridge = WSGIBridge(app, backend, max_body_size)
        await bridge(request_scope or scope(), client.receive, client.send)

    run_with_backend(worker_class, main)
    return client


# -- environ (pure) ----------------------------------------------------------------------------


def test_environ_basics() -> None:
    environ = build_environ(
        scope(
            method="POST",
            path="/caf\u00e9/x",
            query_string=b"a=1&b=%20",
            headers=[
                (b"host", b"example.com"),
                (b"content-type", b"text/plain"),
                (b"content-length", b"4"),
                (b"x-forwarded-for", b"1.1.1.1"),
                (b"x-forwarded-for", b"2.2.2.2"),
                (b"accept-encoding", b"gzip"),
            ],
        ),
        b"data",
    )
    assert environ["REQUEST_METHOD"] == "POST"
    assert environ["SCRIPT_NAME"] == ""
    assert environ["PATH_INFO"] == "/caf\u00e9/x".encode().decode("latin-1")
    assert environ["QUERY_STRING"] == "a=1&b=%20"
    assert environ["SERVER_NAME"] == "127.0.0.1"
    assert environ["SERVER_PORT"] == "8000"
    assert environ["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert environ["REMOTE_ADDR"] == "10.0.0.1"
    assert environ["REMOTE_PORT"] == "40000"
    assert environ["CONTENT_TYPE"] == "text/plain"
    assert environ["CONTENT_LENGTH"] == "4"
    assert "HTTP_CONTENT_TYPE" not in environ
    assert environ["HTTP_HOST"] == "example.com"
    assert environ["HTTP_X_FORWARDED_FOR"] == "1.1.1.1,2.2.2.2"
    assert environ["HTTP_ACCEPT_ENCODING"] == "gzip"
    assert environ["wsgi.version"] == (1, 0)
    assert environ["wsgi.url_scheme"] == "http"
    assert environ["wsgi.input"].read() == b"data"
    assert environ["wsgi.errors"] is sys.stderr
    assert environ["wsgi.multithread"] is True
    assert environ["wsgi.run_once"] is False


def test_environ_header_names_with_underscores() -> None:
    headers = [(b"x-user", b"proxy"), (b"x_user", b"attacker"), (b"x_new", b"n")]
    # "dangerous" first: what it converts must not be cached for the default's lookups.
    dangerous = build_environ(scope(headers=headers), b"", header_map="dangerous")
    assert (dangerous["HTTP_X_USER"], dangerous["HTTP_X_NEW"]) == ("proxy,attacker", "n")
    dropped = build_environ(scope(headers=headers), b"")
    assert dropped["HTTP_X_USER"] == "proxy"
    assert "HTTP_X_NEW" not in dropped
    with pytest.raises(UnderscoreHeaderError, match="x_user"):
        build_environ(scope(headers=headers), b"", header_map="refuse")


def test_environ_root_path() -> None:
    environ = build_environ(scope(path="/app/users", root_path="/app"), b"")
    assert (environ["SCRIPT_NAME"], environ["PATH_INFO"]) == ("/app", "/users")
    environ = build_environ(scope(path="/app", root_path="/app"), b"")
    assert (environ["SCRIPT_NAME"], environ["PATH_INFO"]) == ("/app", "/")
    with pytest.raises(InvalidPathError):
        build_environ(scope(path="/application", root_path="/app"), b"")
    with pytest.raises(InvalidPathError):
        build_environ(scope(path="/other", root_path="/app"), b"")


def test_environ_without_server_or_client() -> None:
    environ = build_environ(scope(server=None, client=None, scheme="https"), b"")
    assert (environ["SERVER_NAME"], environ["SERVER_PORT"]) == ("localhost", "443")
    assert "REMOTE_ADDR" not in environ
    environ = build_environ(scope(server=("/tmp/hc.sock", None)), b"")
    assert (environ["SERVER_NAME"], environ["SERVER_PORT"]) == ("/tmp/hc.sock", "80")


def test_environ_of_a_scope_without_the_optional_keys() -> None:
    """A hand-made scope may leave out what ASGI gives defaults for (or give None)."""
    environ = build_environ({"type": "http", "method": "GET", "path": "/x"}, b"")
    assert environ["SCRIPT_NAME"] == ""
    assert environ["PATH_INFO"] == "/x"
    assert environ["QUERY_STRING"] == ""
    assert environ["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert environ["wsgi.url_scheme"] == "http"
    assert (environ["SERVER_NAME"], environ["SERVER_PORT"]) == ("localhost", "80")
    assert "REMOTE_ADDR" not in environ
    assert not [key for key in environ if key.startswith("HTTP_")]
    environ = build_environ(scope(scheme=None, root_path=None), b"")
    assert (environ["wsgi.url_scheme"], environ["SCRIPT_NAME"]) == ("http", "")
    with pytest.raises(KeyError):
        build_environ({"type": "http", "method": "GET"}, b"")


def test_environ_joins_repeated_headers_with_equal_values() -> None:
    # (one-character and empty strings are shared objects: equal values must still join)
    environ = build_environ(
        scope(headers=[(b"x-a", b"1"), (b"x-a", b"1"), (b"x-b", b""), (b"x-b", b"")]), b""
    )
    assert (environ["HTTP_X_A"], environ["HTTP_X_B"]) == ("1,1", ",")


@pytest.mark.parametrize(
    ("status", "code"), [("200 OK", 200), ("404 Not Found", 404), ("599", 599)]
)
def test_parse_status(status: str, code: int) -> None:
    assert parse_status(status) == code


@pytest.mark.parametrize(
    "status", [200, b"200 OK", "20 OK", "2000 OK", "abc OK", "200 OK\r\nX: y", "099 x"]
)
def test_parse_status_rejects(status: object) -> None:
    with pytest.raises(WSGIResponseError):
        parse_status(status)


def test_encode_headers() -> None:
    assert encode_response_headers([("Content-Type", "text/html"), ("X-A", "\u00e9")]) == [
        (b"content-type", b"text/html"),
        (b"x-a", b"\xe9"),
    ]


def test_encode_head_memo_hands_out_copies() -> None:
    headers = [("Content-Type", "text/plain"), ("Content-Length", "2")]
    first, framed = encode_response_head(list(headers))
    assert framed is True
    first.append((b"x-mutated", b"1"))  # the bridge appends to what it gets
    again, framed_again = encode_response_head(list(headers))
    assert again == [(b"content-type", b"text/plain"), (b"content-length", b"2")]
    assert framed_again is True
    assert encode_response_head([("X-A", "1")])[1] is False
    # A list seen before that turns invalid is refused, not served from the memo.
    with pytest.raises(WSGIResponseError):
        encode_response_head([("Content-Type", "text/plain"), ("Content-Length", 2)])


@pytest.mark.parametrize(
    "headers",
    [
        (("a", "b"),),
        [("a", "b", "c")],
        [["a", "b"]],
        [(b"a", "b")],
        [("a", 1)],
        [("bad name", "x")],
        [("x", "injected\r\nset-cookie: a=b")],
        [("x", "nul\x00")],
        [("x", "\u20ac")],
    ],
)
def test_encode_headers_rejects(headers: object) -> None:
    with pytest.raises(WSGIResponseError):
        encode_response_headers(headers)


# -- the bridge on every backend --------------------------------------------------------------


def test_fast_path_adds_content_length(worker_class: str) -> None:
    client = call(worker_class, wsgi_hello)
    assert client.status == 200
    assert client.headers[b"content-length"] == b"13"
    assert client.headers[b"content-type"] == b"text/plain"
    assert [m["type"] for m in client.sent] == ["http.response.start", "http.response.body"]
    assert client.sent[1] == {
        "type": "http.response.body",
        "body": b"Hello, world!",
        "more_body": False,
    }


def test_no_content_length_for_head_and_304(worker_class: str) -> None:
    assert b"content-length" not in call(worker_class, wsgi_hello, scope(method="HEAD")).headers

    def not_modified(environ: Any, start_response: Any) -> list[bytes]:
        start_response("304 Not Modified", [])
        return []

    assert b"content-length" not in call(worker_class, not_modified).headers


def test_request_body_and_environ_reach_the_app(worker_class: str) -> None:
    import json

    client = call(
        worker_class,
        wsgi_echo,
        scope(method="PUT", path="/p", query_string=b"x=1"),
        Client([b"hello ", b"world"]),
    )
    payload = json.loads(client.body)
    assert payload["body"] == "hello world"
    assert payload["REQUEST_METHOD"] == "PUT"
    assert payload["PATH_INFO"] == "/p"
    assert payload["QUERY_STRING"] == "x=1"


def test_body_too_large_by_content_length(worker_class: str) -> None:
    client = call(
        worker_class,
        wsgi_echo,
        scope(method="POST", headers=[(b"content-length", b"2048")]),
        Client([b"x" * 2048]),
    )
    assert client.status == 413


def test_body_too_large_while_streaming(worker_class: str) -> None:
    client = call(worker_class, wsgi_echo, scope(method="POST"), Client([b"x" * 600, b"y" * 600]))
    assert client.status == 413
    assert client.headers[b"connection"] == b"close"


def test_disconnect_before_body_sends_nothing(worker_class: str) -> None:
    called = []

    def app(environ: Any, start_response: Any) -> list[bytes]:
        called.append(True)
        return []

    client = call(worker_class, app, client=Client(disconnect=True))
    assert client.sent == []
    assert called == []


def test_path_outside_root_path_is_404(worker_class: str) -> None:
    client = call(worker_class, wsgi_hello, scope(path="/elsewhere", root_path="/app"))
    assert client.status == 404


def test_websocket_is_refused(worker_class: str) -> None:
    client = call(worker_class, wsgi_hello, scope(type="websocket"))
    assert client.sent == [{"type": "websocket.close", "code": 1000}]


class ClosingBody:
    def __init__(self, chunks: list[bytes], fail: bool = False) -> None:
        self.chunks = chunks
        self.fail = fail
        self.closed = threading.Event()

    def __iter__(self) -> Iterator[bytes]:
        yield from self.chunks
        if self.fail:
            raise RuntimeError("broken generator")

    def close(self) -> None:
        self.closed.set()


def test_close_is_called(worker_class: str) -> None:
    body = ClosingBody([b"a", b"b"])

    def app(environ: Any, start_response: Any) -> ClosingBody:
        start_response("200 OK", [])
        return body

    assert call(worker_class, app).body == b"ab"
    assert body.closed.is_set()


def test_close_is_called_when_iteration_raises(worker_class: str) -> None:
    body = ClosingBody([b"a"], fail=True)

    def app(environ: Any, start_response: Any) -> ClosingBody:
        start_response("200 OK", [])
        return body

    with pytest.raises(RuntimeError, match="broken generator"):
        call(worker_class, app)
    assert body.closed.is_set()


def test_app_exception_propagates_before_response(worker_class: str) -> None:
    def app(environ: Any, start_response: Any) -> list[bytes]:
        raise KeyError("oops")

    client = Client()
    with pytest.raises(KeyError):
        call(worker_class, app, client=client)
    assert client.sent == []  # the driver answers 500


@pytest.mark.parametrize(
    ("status", "headers"),
    [("OK", []), ("200 OK", {"a": "b"}), ("200 OK", [("x", "a\nb")])],
)
def test_invalid_start_response_is_a_500_and_one_log_line(
    status: str, headers: Any, worker_class: str, caplog: pytest.LogCaptureFixture
) -> None:
    def app(environ: Any, start_response: Any) -> list[bytes]:
        start_response(status, headers)
        return [b""]

    assert_refused(worker_class, app, caplog, "")


def assert_refused(
    worker_class: str, app: Any, caplog: pytest.LogCaptureFixture, match: str
) -> None:
    """The bridge answered an ordinary 500 for the app's PEP 3333 mistake (so the connection
    stays usable) and logged one line saying what the mistake was."""
    with caplog.at_level(logging.ERROR, logger="hypercorn.error"):
        client = call(worker_class, app)
    assert client.sent == [
        {"type": "http.response.start", "status": 500, "headers": []},
        {"type": "http.response.body", "body": b""},
    ]
    records = [r for r in caplog.records if r.name == "hypercorn.error"]
    assert len(records) == 1, records
    assert records[0].getMessage().startswith("WSGI app error: ")
    assert match in records[0].getMessage()
    assert records[0].exc_info is None


def test_missing_start_response(worker_class: str, caplog: pytest.LogCaptureFixture) -> None:
    def app(environ: Any, start_response: Any) -> list[bytes]:
        return []

    assert_refused(worker_class, app, caplog, "did not call start_response")


def test_body_before_start_response(worker_class: str, caplog: pytest.LogCaptureFixture) -> None:
    def app(environ: Any, start_response: Any) -> list[bytes]:
        return [b"early"]

    assert_refused(worker_class, app, caplog, "before start_response")


def test_str_chunk_is_refused(worker_class: str) -> None:
    def app(environ: Any, start_response: Any) -> list[str]:
        start_response("200 OK", [])
        return ["text"]

    with pytest.raises(TypeError, match="must produce bytes, got str"):
        call(worker_class, app)


def test_second_start_response_needs_exc_info(
    worker_class: str, caplog: pytest.LogCaptureFixture
) -> None:
    def app(environ: Any, start_response: Any) -> list[bytes]:
        start_response("200 OK", [])
        start_response("500 Error", [])
        return []

    assert_refused(worker_class, app, caplog, "second time")


def test_exc_info_before_headers_sent_replaces_the_response(worker_class: str) -> None:
    def app(environ: Any, start_response: Any) -> list[bytes]:
        start_response("200 OK", [("X-First", "1")])
        try:
            raise ValueError("handled")
        except ValueError:
            start_response("500 Internal Server Error", [("X-Second", "2")], sys.exc_info())
        return [b"error page"]

    client = call(worker_class, app)
    assert client.status == 500
    assert b"x-second" in client.headers
    assert b"x-first" not in client.headers
    assert client.body == b"error page"


@pytest.mark.parametrize("streamed", [True, False], ids=["streamed", "one-hop"])
def test_exc_info_after_a_chunk_reraises(streamed: bool, worker_class: str) -> None:
    # PEP 3333: the first non-empty chunk commits the response. Streamed: the error waits
    # until that chunk was sent. One-hop: it comes before the streaming timer, when nothing
    # is on the wire yet; the outcome must be the same.
    gate = threading.Event()
    if not streamed:
        gate.set()

    def app(environ: Any, start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [])
        yield b"first"
        assert gate.wait(10)
        try:
            raise ValueError("too late")
        except ValueError:
            start_response("500 Internal Server Error", [], sys.exc_info())
        yield b"never"

    client = Client()

    async def on_send(message: Message) -> None:
        if message.get("body") == b"first":
            gate.set()

    client.on_send = on_send
    with pytest.raises(ValueError, match="too late"):
        call(worker_class, app, client=client)
    assert client.status == 200
    assert client.body == b"first"
    assert client.sent[-1].get("more_body") is True  # the driver aborts: no clean end


def test_write_callable(worker_class: str) -> None:
    def app(environ: Any, start_response: Any) -> list[bytes]:
        write = start_response("200 OK", [])
        write(b"written ")
        return [b"returned"]

    assert call(worker_class, app).body == b"written returned"


def test_streaming_sends_chunks_before_the_app_finishes(worker_class: str) -> None:
    """A generator that blocks after its first chunk: the chunk must still reach the client."""
    bodies, client = _first_chunk_before_the_second(worker_class, start_delay=0.0)
    assert [m["body"] for m in bodies] == [b"first", b"second", b""]
    assert [m["more_body"] for m in bodies] == [True, True, False]
    assert b"content-length" not in client.headers


def test_slow_start_then_chunks_still_stream(worker_class: str) -> None:
    """The sweep finds the app running with nothing to send yet (no sender is started
    then): its first chunk must still reach the client while the app waits for it."""
    # (Slower than the fast-path window.)
    bodies, client = _first_chunk_before_the_second(worker_class, start_delay=STREAM_AFTER * 4)
    assert [m["body"] for m in bodies] == [b"first", b"second", b""]
    assert b"content-length" not in client.headers


def _first_chunk_before_the_second(
    worker_class: str, start_delay: float
) -> tuple[list[Message], Client]:
    """Run an app that, after ``start_delay``, yields a chunk and then blocks until the
    client has received it before yielding the second; the body messages and the client."""
    release = threading.Event()

    def app(environ: Any, start_response: Any) -> Iterator[bytes]:
        if start_delay:
            threading.Event().wait(start_delay)
        start_response("200 OK", [])
        yield b"first"
        assert release.wait(10), "the first chunk was never sent"
        yield b"second"

    client = Client()

    async def on_send(message: Message) -> None:
        if message.get("body") == b"first":
            release.set()

    client.on_send = on_send
    call(worker_class, app, client=client)
    return [m for m in client.sent if m["type"] == "http.response.body"], client


def test_many_chunks_stream_in_order(worker_class: str) -> None:
    client = call(worker_class, wsgi_streaming(chunks=200, size=100))
    assert client.body == b"".join(bytes([97 + i % 26]) * 100 for i in range(200))


def test_back_pressure_stops_the_thread(worker_class: str) -> None:
    """While the client does not read, the app thread is held near HIGH_WATER."""
    produced: list[int] = []
    chunk = b"x" * 64 * 1024
    total_chunks = 64

    def app(environ: Any, start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [])
        for index in range(total_chunks):
            produced.append(index)
            yield chunk

    client = Client()
    backends: list[Backend] = []
    stalled: list[int] = []

    async def on_send(message: Message) -> None:
        # The first body send stalls for a while, like a client that stopped reading.
        if message["type"] == "http.response.body" and not stalled:
            backend = backends[0]
            deadline = backend.now() + 0.2
            while backend.now() < deadline:
                await backend.sleep(0.01)
            stalled.append(len(produced))

    client.on_send = on_send
    call(worker_class, app, client=client, setup=lambda backend, _: backends.append(backend))
    assert len(client.body) == total_chunks * len(chunk)
    assert stalled[0] < total_chunks
    assert stalled[0] * len(chunk) <= HIGH_WATER + 2 * len(chunk)


def test_client_gone_stops_iteration_and_closes(worker_class: str) -> None:
    body_closed = threading.Event()
    produced: list[int] = []

    class Endless:
        def __iter__(self) -> Iterator[bytes]:
            index = 0
            while not body_closed.is_set() and index < 100_000:
                produced.append(index)
                index += 1
                yield b"z" * 1024

        def close(self) -> None:
            body_closed.set()

    def app(environ: Any, start_response: Any) -> Endless:
        start_response("200 OK", [])
        return Endless()

    client = Client()

    async def on_send(message: Message) -> None:
        if message["type"] == "http.response.body" and message.get("more_body"):
            client.disconnect()

    client.on_send = on_send
    call(worker_class, app, client=client)
    assert body_closed.is_set()
    assert len(produced) < 100_000


def test_slow_app_switches_to_streaming_and_completes(worker_class: str) -> None:
    def app(environ: Any, start_response: Any) -> list[bytes]:
        threading.Event().wait(STREAM_AFTER * 4)  # slower than the fast-path window
        start_response("200 OK", [("Content-Length", "4")])
        return [b"slow"]

    client = call(worker_class, app)
    assert client.status == 200
    assert client.body == b"slow"
    assert client.sent[-1]["more_body"] is False


def test_slow_app_returning_a_list_is_sent_whole(worker_class: str) -> None:
    """Slow to start (as under load, waiting for the GIL) but nothing streamed: the body
    goes out in one message with the Content-Length the server adds."""

    def app(environ: Any, start_response: Any) -> list[bytes]:
        threading.Event().wait(STREAM_AFTER * 4)
        start_response("200 OK", [])
        return [b"sl", b"ow"]

    client = call(worker_class, app)
    assert client.status == 200
    assert client.headers[b"content-length"] == b"4"
    bodies = [m for m in client.sent if m["type"] == "http.response.body"]
    assert [(m["body"], m.get("more_body", False)) for m in bodies] == [(b"slow", False)]


def test_wrap_app_detects_wsgi_and_uses_config_limit(worker_class: str) -> None:
    config = Config()
    config.wsgi_max_body_size = 5
    client = Client([b"too long"])

    async def main(backend: Backend) -> None:
        client.backend = backend
        app = wrap_app(wsgi_echo, config, backend)
        assert isinstance(app, WSGIBridge)
        await app(scope(method="POST"), client.receive, client.send)

    run_with_backend(worker_class, main)
    assert client.status == 413


def test_wsgi_errors_is_a_text_stream(worker_class: str) -> None:
    seen: list[Any] = []

    def app(environ: Any, start_response: Any) -> list[bytes]:
        seen.append(environ["wsgi.errors"])
        start_response("200 OK", [])
        return []

    call(worker_class, app)
    assert isinstance(seen[0], io.TextIOBase) or hasattr(seen[0], "write")
