"""The connection driver on every real backend with an in-memory Transport.

``MemoryTransport`` is the in-memory peer of the driver (as h11's ConnectionPair is for h11):
it implements the Transport contract with a byte buffer and lets the test decide when the
"socket" is writable.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import h11
import pytest

from hypercorn.config import Config
from hypercorn.protocols.limits import ProtocolLimits
from hypercorn.workers import run_with_backend
from hypercorn.workers.backend import (
    AsyncEvent,
    Backend,
    ConnectionInfo,
    TransportClosed,
    joined_writelines,
)
from hypercorn.workers.driver import ConnectionDriver, WorkerContext, limits_from_config
from tests.support.pairs import parse_responses

TIMEOUT = 5.0
Scope = dict[str, Any]
App = Callable[[Scope, Any, Any], Awaitable[None]]


class MemoryTransport:
    """An in-memory Transport. ``writing_paused`` is set by the test (a clogged peer)."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.out = bytearray()
        self.first_write_at: float | None = None
        self.closed = False
        self.aborted = False
        self.reading = True
        self._paused = False
        self._drained: AsyncEvent | None = None
        self._info = ConnectionInfo(client=("10.0.0.1", 1234), server=("10.0.0.2", 80))
        self.raw_write = self.write
        self.raw_writelines = joined_writelines(self.write)

    @property
    def info(self) -> ConnectionInfo:
        return self._info

    @property
    def writing_paused(self) -> bool:
        return self._paused

    @property
    def is_closing(self) -> bool:
        return self.closed

    @property
    def write_buffer_size(self) -> int:
        return len(self.out) if self._paused else 0

    @property
    def write_progress(self) -> int:
        return -self.write_buffer_size

    def write(self, data: bytes) -> None:
        if not self.closed:
            if not self.out:
                self.first_write_at = self.backend.now()
            self.out += data

    async def drain(self) -> None:
        if self.closed:
            raise TransportClosed("closed")
        if not self._paused:
            return
        if self._drained is None:
            self._drained = self.backend.event()
        await self._drained.wait()
        if self.closed:
            raise TransportClosed("closed")

    def clog(self) -> None:
        self._paused = True

    def unclog(self) -> None:
        self._paused = False
        if self._drained is not None:
            self._drained.set()
            self._drained = None

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def close(self, *, linger: bool = True) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True
        self.aborted = True
        if self._drained is not None:
            self._drained.set()


async def until(backend: Backend, condition: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    deadline = backend.now() + timeout
    while not condition():
        if backend.now() > deadline:
            raise AssertionError("condition not met in time")
        await backend.sleep(0.001)


class Harness:
    def __init__(self, backend: Backend, app: App, limits: ProtocolLimits, **ctx: Any) -> None:
        self.backend = backend
        self.ctx = WorkerContext(app=app, backend=backend, limits=limits, **ctx)
        self.transport = MemoryTransport(backend)
        self.driver = ConnectionDriver(self.ctx, self.transport)

    def feed(self, data: bytes) -> None:
        self.driver.data_received(data)

    def lose(self) -> None:
        self.transport.closed = True
        self.driver.connection_lost()

    def responses(self, method: str = "GET") -> list[list[Any]]:
        return parse_responses(bytes(self.transport.out), method)


def run(main: Callable[[Backend], Awaitable[None]], worker_class: str = "asyncio") -> None:
    run_with_backend(worker_class, main)


@pytest.fixture(params=["asyncio", "uvloop", "trio"])
def worker_class(request: pytest.FixtureRequest) -> str:
    """The driver is written once against Backend: it runs on every backend."""
    return str(request.param)


GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


async def hello(scope: Scope, receive: Any, send: Any) -> None:
    await receive()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"hello " + scope["path"].encode()})


def body(events: list[Any]) -> bytes:
    return b"".join(bytes(e.data) for e in events if isinstance(e, h11.Data))


def test_request_response_and_keep_alive(worker_class: str) -> None:
    async def main(backend: Backend) -> None:
        h = Harness(backend, hello, ProtocolLimits())
        h.feed(GET)
        await until(backend, lambda: b"hello /" in h.transport.out)
        h.feed(b"GET /two HTTP/1.1\r\nHost: x\r\n\r\n")
        await until(backend, lambda: b"hello /two" in h.transport.out)
        assert [body(r) for r in h.responses()] == [b"hello /", b"hello /two"]
        assert not h.transport.closed
        await until(backend, lambda: h.ctx.running_apps == 0)
        assert h.ctx.requests == 2
        h.lose()

    run(main, worker_class)


def test_pipelined_requests_run_one_after_another(worker_class: str) -> None:
    order: list[str] = []
    reading: list[bool] = []
    transport: list[MemoryTransport] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        order.append("start " + scope["path"])
        reading.append(transport[0].reading)
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": scope["path"].encode()})
        order.append("end " + scope["path"])

    async def main(backend: Backend) -> None:
        h = Harness(backend, app, ProtocolLimits())
        transport.append(h.transport)
        h.feed(GET.replace(b"/", b"/a", 1) + GET.replace(b"/", b"/b", 1))
        await until(backend, lambda: len(order) == 4)
        assert reading[0] is False  # paused behind the first request
        assert [body(r) for r in h.responses()] == [b"/a", b"/b"]
        # /b's app starts after /a's returned, also where tasks start eagerly (3.12+): not
        # inside /a's last send.
        assert order == ["start /a", "end /a", "start /b", "end /b"]
        assert h.transport.reading
        h.lose()

    run(main, worker_class)


_request_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request", default=None)


def test_many_pipelined_requests_neither_nest_nor_share_context(worker_class: str) -> None:
    """Hundreds of pipelined requests in one read: every one answered in order, each app at
    the same stack depth (3.12+ once nested each in its predecessor's send, and failed with a
    RecursionError after about 190), and no app sees a context variable its predecessor set."""
    count = 600
    seen: list[str | None] = []
    depths: set[int] = set()

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        seen.append(_request_var.get())
        _request_var.set(scope["path"])
        frame, depth = sys._getframe(), 0
        while frame is not None:
            frame, depth = frame.f_back, depth + 1
        depths.add(depth)
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": scope["path"].encode()})

    async def main(backend: Backend) -> None:
        h = Harness(backend, app, ProtocolLimits())
        h.feed(b"".join(GET.replace(b"/", b"/%d" % i, 1) for i in range(count)))
        await until(backend, lambda: len(seen) == count and h.ctx.running_apps == 0)
        assert [body(r) for r in h.responses()] == [b"/%d" % i for i in range(count)]
        assert seen == [None] * count
        assert max(depths) - min(depths) < 10, depths  # (the first starts inside feed())
        h.lose()

    run(main, worker_class)


def test_apps_go_through_the_queue_when_tasks_may_start_eagerly() -> None:
    """With a task factory installed a task may run inside its starter (eagerly),
    so the driver queues each app and starts it after the core call; pipelined requests are
    served in order either way, through the loop's task factory."""
    made: list[str] = []

    def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> Any:
        made.append(coro.__qualname__)
        return asyncio.Task(coro, loop=loop, **kwargs)

    async def main(backend: Backend) -> None:
        loop = asyncio.get_running_loop()
        loop.set_task_factory(factory)
        try:
            h = Harness(backend, hello, ProtocolLimits())
            assert h.driver._eager
            h.feed(GET.replace(b"/", b"/a", 1) + GET.replace(b"/", b"/b", 1))
            await until(backend, lambda: b"hello /b" in h.transport.out)
            assert [body(r) for r in h.responses()] == [b"hello /a", b"hello /b"]
            assert made.count("ConnectionDriver._run_app") == 2
            h.lose()
        finally:
            loop.set_task_factory(None)
        h = Harness(backend, hello, ProtocolLimits())
        # Without a factory our tasks start lazily on every version (eager_start measured
        # slower), so the core starts them.
        assert h.driver._eager is False
        h.lose()

    run(main)


def test_receive_waits_for_body(worker_class: str) -> None:
    got: list[bytes] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            got.append(message["body"])
            if not message["more_body"]:
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"".join(got)})

    async def main(backend: Backend) -> None:
        h = Harness(backend, app, ProtocolLimits())
        h.feed(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n\r\nabc")
        await until(backend, lambda: got == [b"abc"])
        await backend.sleep(0.01)
        assert h.transport.out == b""
        h.feed(b"def")
        await until(backend, lambda: b"abcdef" in h.transport.out)
        h.lose()

    run(main, worker_class)


def test_100_continue_sent_when_app_reads(worker_class: str) -> None:
    async def main(backend: Backend) -> None:
        h = Harness(backend, hello, ProtocolLimits())
        h.feed(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n")
        await until(backend, lambda: b"100 Continue" in h.transport.out)
        h.feed(b"hi")
        await until(backend, lambda: b"hello /" in h.transport.out)
        h.lose()

    run(main, worker_class)


def test_send_awaits_drain_only_when_clogged(worker_class: str) -> None:
    progress: list[int] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for index in range(3):
            await send({"type": "http.response.body", "body": b"x" * 10, "more_body": True})
            progress.append(index)
        await send({"type": "http.response.body", "body": b""})
        progress.append(99)

    async def main(backend: Backend) -> None:
        h = Harness(backend, app, ProtocolLimits())
        h.feed(GET)
        await until(backend, lambda: progress == [0, 1, 2, 99])  # never waited: not clogged
        h.transport.out.clear()
        progress.clear()
        h.transport.clog()
        h.feed(GET)
        await until(backend, lambda: h.ctx.running_apps == 1)
        await backend.sleep(0.02)
        assert progress == []  # blocked in send() on the clogged transport
        h.transport.unclog()
        await until(backend, lambda: progress == [0, 1, 2, 99])
        h.lose()

    run(main, worker_class)


def test_disconnect_reaches_waiting_app_and_sends_become_no_ops(worker_class: str) -> None:
    seen: list[dict[str, Any]] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        seen.append(await receive())
        seen.append(await receive())
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"late"})

    async def main(backend: Backend) -> None:
        h = Harness(backend, app, ProtocolLimits())
        h.feed(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n\r\nabc")
        await until(backend, lambda: len(seen) == 1)
        h.lose()
        await until(backend, lambda: h.ctx.running_apps == 0)
        assert seen[1] == {"type": "http.disconnect"}
        assert h.transport.out == b""

    run(main, worker_class)


def test_app_error_before_start_is_500_and_logged(
    caplog: pytest.LogCaptureFixture, worker_class: str
) -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        raise RuntimeError("app bug")

    async def main(backend: Backend) -> None:
        h = Harness(backend, app, ProtocolLimits())
        h.feed(GET)
        await until(backend, lambda: h.transport.closed)
        assert h.transport.out.startswith(b"HTTP/1.1 500 ")
        h.lose()

    with caplog.at_level(logging.ERROR, logger="hypercorn.error"):
        run(main, worker_class)
    errors = [r for r in caplog.records if r.name == "hypercorn.error"]
    assert len(errors) == 1
    assert errors[0].exc_info is not None
    assert "app bug" in str(errors[0].exc_info[1])


def test_app_error_after_start_closes_without_last_chunk(worker_class: str) -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"part", "more_body": True})
        raise RuntimeError("mid-stream")

    async def main(backend: Backend) -> None:
        h = Harness(backend, app, ProtocolLimits())
        h.feed(GET)
        await until(backend, lambda: h.transport.closed)
        assert h.transport.out.startswith(b"HTTP/1.1 200 ")
        assert not h.transport.out.endswith(b"0\r\n\r\n")
        h.lose()

    logging.getLogger("hypercorn.error").disabled = True
    try:
        run(main, worker_class)
    finally:
        logging.getLogger("hypercorn.error").disabled = False


def test_keep_alive_timer_closes_idle_connection(worker_class: str) -> None:
    async def main(backend: Backend) -> None:
        h = Harness(backend, hello, ProtocolLimits(keep_alive_timeout=0.05))
        h.feed(GET)
        await until(backend, lambda: b"hello" in h.transport.out)
        await until(backend, lambda: h.transport.closed)
        # Measured from the response (the keep-alive wait starts there), not from when the
        # polling above noticed it: that can be late on a busy machine.
        assert h.transport.first_write_at is not None
        assert backend.now() - h.transport.first_write_at >= 0.04
        h.lose()

    run(main, worker_class)


def test_timer_rearms_when_deadline_moves_later(worker_class: str) -> None:
    async def main(backend: Backend) -> None:
        limits = ProtocolLimits(keep_alive_timeout=0.2, header_read_timeout=0.6)
        h = Harness(backend, hello, limits)
        h.feed(GET)
        await until(backend, lambda: b"hello" in h.transport.out)
        answered = h.transport.first_write_at
        assert answered is not None
        # (Times from the response, not from when polling noticed it: a busy machine.)
        await backend.sleep(max(0.0, answered + 0.05 - backend.now()))
        h.feed(b"GET / HT")  # head started: the deadline moves to +0.6 s
        await backend.sleep(max(0.0, answered + 0.35 - backend.now()))
        assert not h.transport.closed  # the keep-alive timer fired early and re-armed
        await until(backend, lambda: h.transport.closed)
        assert b"408" in h.transport.out
        h.lose()

    run(main, worker_class)


def test_new_connections_share_the_head_deadline_timer(worker_class: str) -> None:
    """Each new connection's head deadline is kept on one timer of the worker's: silent or
    half-sent connections still close at theirs, whether those set up before them are gone,
    answered or silent too, and a lost connection is not kept for its deadline."""

    async def main(backend: Backend) -> None:
        limits = ProtocolLimits(header_read_timeout=0.2, keep_alive_timeout=0.1)
        ctx = WorkerContext(app=hello, backend=backend, limits=limits)

        def connect() -> tuple[ConnectionDriver, MemoryTransport]:
            transport = MemoryTransport(backend)
            return ConnectionDriver(ctx, transport), transport

        gone, gone_transport = connect()
        gone_transport.closed = True
        gone.connection_lost()
        assert gone not in ctx._fresh
        answered, answered_transport = connect()
        answered.data_received(GET)
        await backend.sleep(0.05)
        silent, silent_transport = connect()
        partial, partial_transport = connect()
        partial.data_received(b"GET / HT")
        await until(backend, lambda: silent_transport.closed and partial_transport.closed)
        assert silent_transport.out == b""
        assert partial_transport.out.startswith(b"HTTP/1.1 408 ")
        await until(backend, lambda: answered_transport.closed)
        assert b"hello /" in answered_transport.out
        for driver in (answered, silent, partial):
            driver.connection_lost()
        assert not ctx._fresh

    run(main, worker_class)


def test_shutdown_closes_idle_and_finishes_in_flight(worker_class: str) -> None:
    release: list[AsyncEvent] = []

    async def slow(scope: Scope, receive: Any, send: Any) -> None:
        await receive()
        await release[0].wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"done"})

    async def main(backend: Backend) -> None:
        release.append(backend.event())
        ctx = WorkerContext(app=slow, backend=backend, limits=ProtocolLimits())
        idle_t = MemoryTransport(backend)
        busy_t = MemoryTransport(backend)
        idle = ConnectionDriver(ctx, idle_t)
        busy = ConnectionDriver(ctx, busy_t)
        busy.data_received(GET)
        await until(backend, lambda: ctx.running_apps == 1)
        ctx.start_shutdown()
        # Never used: its first request may be in flight, so it gets a short grace, not a RST.
        assert not idle_t.closed
        await until(backend, lambda: idle_t.closed)
        idle.connection_lost()
        assert not busy_t.closed
        assert not await ctx.wait_idle(0.02)
        release[0].set()
        await until(backend, lambda: busy_t.closed)
        assert b"connection: close" in busy_t.out
        assert busy_t.out.endswith(b"done")
        busy.connection_lost()
        assert await ctx.wait_idle(TIMEOUT)

    run(main, worker_class)


def test_a_connection_set_up_after_the_shutdown_began_is_shut_down_too(worker_class: str) -> None:
    """Accepted before the stop, handed on after it (a TLS handshake finishing late): it
    is served like one that was open when the shutdown began (Connection: close)."""

    async def main(backend: Backend) -> None:
        ctx = WorkerContext(app=hello, backend=backend, limits=ProtocolLimits())
        ctx.start_shutdown()
        transport = MemoryTransport(backend)
        driver = ctx.on_connection(transport)
        driver.data_received(GET)
        await until(backend, lambda: transport.closed)
        assert b"connection: close" in transport.out
        assert transport.out.endswith(b"hello /")
        driver.connection_lost()
        assert await ctx.wait_idle(TIMEOUT)

    run(main, worker_class)


def test_abort_all_cancels_apps(worker_class: str) -> None:
    cancelled: list[bool] = []

    async def forever(scope: Scope, receive: Any, send: Any) -> None:
        try:
            await receive()
            await receive()
            await receive()
        except BaseException:
            cancelled.append(True)
            raise

    async def main(backend: Backend) -> None:
        h = Harness(backend, forever, ProtocolLimits())
        h.feed(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n")
        await until(backend, lambda: h.ctx.running_apps == 1)
        h.ctx.abort_all()
        await until(backend, lambda: h.ctx.running_apps == 0)
        assert h.transport.aborted
        assert cancelled == [True]
        h.lose()

    run(main, worker_class)


def test_on_request_and_access_log(tmp_path: Any, worker_class: str) -> None:
    counted: list[int] = []
    log_path = tmp_path / "access.log"
    config = Config()
    config.accesslog = str(log_path)
    config.access_log_format = "%(m)s %(U)s %(s)s %(B)s"

    async def main(backend: Backend) -> None:
        h = Harness(
            backend,
            hello,
            limits_from_config(config),
            access_log=config.log,
            on_request=lambda: counted.append(1),
        )
        h.feed(b"GET /logged HTTP/1.1\r\nHost: x\r\n\r\n")
        await until(backend, lambda: counted == [1])
        h.lose()

    run(main, worker_class)
    for handler in logging.getLogger("hypercorn.access").handlers:
        handler.flush()
    assert "GET /logged 200 13" in log_path.read_text()


def test_limits_from_config() -> None:
    config = Config()
    config.include_server_header = False
    config.keep_alive_timeout = 7.5
    config.h11_max_incomplete_size = 1234
    config.alt_svc_headers = ['h3=":443"']
    limits = limits_from_config(config)
    assert limits.server_header is None
    assert limits.keep_alive_timeout == 7.5
    assert limits.max_incomplete_size == 1234
    assert limits.extra_headers == ((b"alt-svc", b'h3=":443"'),)
    # keep_alive_max_requests: upstream's default, for HTTP/1.1 and HTTP/2 alike.
    assert limits.h1_max_requests == limits.h2_max_streams == 1000


class _RecordingCore:
    """A ServerConnection that records what the driver feeds it after a protocol switch."""

    def __init__(self, deadline: float) -> None:
        self.deadline: float | None = deadline
        self.received: list[bytes] = []
        self.lost = False
        self.expired: list[float] = []

    def receive_data(self, data: bytes, now: float) -> None:
        self.received.append(data)

    def next_deadline(self) -> float | None:
        return self.deadline

    def handle_deadline(self, now: float) -> None:
        self.expired.append(now)
        self.deadline = None

    def write_paused(self, now: float) -> None:
        pass

    def write_resumed(self, now: float) -> None:
        pass

    def start_shutdown(self, now: float) -> None:
        pass

    def connection_lost(self) -> None:
        self.lost = True

    idle = True
    closed = False


def test_switch_hands_the_socket_to_the_next_protocol(
    monkeypatch: pytest.MonkeyPatch, worker_class: str
) -> None:
    """A core's ``sink.switch`` is a value: the driver builds the next connection, resumes
    reading, feeds it the trailing bytes and EOF, then routes everything to it."""
    from hypercorn.protocols.connection import SwitchProtocol
    from hypercorn.workers import driver as driver_module

    built: list[SwitchProtocol] = []

    async def main(backend: Backend) -> None:
        nxt = _RecordingCore(deadline=backend.now() + 0.01)

        def build(driver: ConnectionDriver, switch: SwitchProtocol) -> _RecordingCore:
            built.append(switch)
            return nxt

        monkeypatch.setitem(driver_module.SWITCHES, "websocket", build)
        h = Harness(backend, hello, ProtocolLimits())
        h.transport.reading = False
        h.driver.switch(SwitchProtocol(to="websocket", trailing=b"early", eof=True))
        assert built
        assert h.driver.core is nxt
        assert h.transport.reading
        assert nxt.received == [b"early", b""]
        h.feed(b"later")
        assert nxt.received[-1] == b"later"
        await until(backend, lambda: bool(nxt.expired))  # its deadline armed the timer
        h.lose()
        assert nxt.lost

    run(main, worker_class)
