"""The Backend/Transport contract (workers/backend.py), run on every backend.

Loop-agnostic on purpose: the peer is a plain blocking socket driven from a worker thread
(``backend.run_sync``), so the same tests will run on trio once its backend lands.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib.util
import os
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest

from hypercorn.workers import run_with_backend
from hypercorn.workers.backend import (
    Backend,
    Listener,
    ServeOptions,
    Transport,
    TransportClosed,
    TransportTimeout,
    map_exceptions,
)
from tests.support.linger import linger_for, reset_by_server

T = TypeVar("T")

_TRIO_READY = importlib.util.find_spec("trio") is not None

TIMEOUT = 5.0


@pytest.fixture(
    params=[
        "asyncio",
        "uvloop",
        pytest.param(
            "trio",
            marks=pytest.mark.skipif(
                not _TRIO_READY, reason="trio is not installed (the trio extra)"
            ),
        ),
    ]
)
def worker_class(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def run(worker_class: str, main: Callable[[Backend], Awaitable[T]]) -> T:
    return run_with_backend(worker_class, main)


async def until(backend: Backend, condition: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    """Poll ``condition`` with a bounded deadline (no sleeping for synchronisation)."""
    deadline = backend.now() + timeout
    while not condition():
        if backend.now() > deadline:
            raise AssertionError("condition not met in time")
        await backend.sleep(0.002)


class Recorder:
    """A ConnectionHandler that records everything; optionally echoes."""

    instances: list[Recorder]

    def __init__(self, transport: Transport, echo: bool = False) -> None:
        self.transport = transport
        self.echo = echo
        self.data = bytearray()
        self.log: list[str] = []

    def data_received(self, data: bytes) -> None:
        assert data
        assert "lost" not in self.log
        self.data += data
        if self.echo:
            self.transport.write(data)

    def eof_received(self) -> None:
        self.log.append("eof")
        self.transport.close()  # the transport stays writable after EOF until we close it

    def connection_lost(self) -> None:
        self.log.append("lost")

    def write_paused(self) -> None:
        self.log.append("paused")

    def write_resumed(self) -> None:
        self.log.append("resumed")


class Server:
    """Runs ``backend.serve`` on one listener and collects Recorders."""

    def __init__(
        self,
        backend: Backend,
        sock: socket.socket,
        *,
        echo: bool = False,
        ssl_context: ssl.SSLContext | None = None,
        options: ServeOptions | None = None,
    ) -> None:
        self.backend = backend
        self.sock = sock
        self.echo = echo
        self.recorders: list[Recorder] = []
        self.stop = backend.event()
        self.done = False
        self.listener = Listener(sock, ssl_context)
        self.options = options or ServeOptions()

    def on_connection(self, transport: Transport) -> Recorder:
        recorder = Recorder(transport, self.echo)
        self.recorders.append(recorder)
        return recorder

    def start(self) -> None:
        async def serve() -> None:
            await self.backend.serve([self.listener], self.on_connection, self.stop, self.options)
            self.done = True

        self.backend.spawn(serve)

    async def close(self) -> None:
        """Stop accepting, then abort what is still open and wait until it is gone."""
        self.stop.set()
        await until(self.backend, lambda: self.done)
        for recorder in self.recorders:
            recorder.transport.abort()
        await until(self.backend, lambda: all("lost" in r.log for r in self.recorders))


def connect(sock: socket.socket) -> socket.socket:
    client = socket.create_connection(sock.getsockname()[:2], timeout=TIMEOUT)
    return client


def recv_until_eof(client: socket.socket) -> bytes:
    out = bytearray()
    while True:
        chunk = client.recv(65536)
        if not chunk:
            return bytes(out)
        out += chunk


# -- data flow ---------------------------------------------------------------------------------


def test_data_in_order_echo_eof_then_lost(worker_class: str, bound_socket: socket.socket) -> None:
    async def main(backend: Backend) -> None:
        server = Server(backend, bound_socket, echo=True)
        server.start()

        def client() -> bytes:
            with connect(bound_socket) as c:
                for part in (b"one ", b"two ", b"three"):
                    c.sendall(part)
                received = b""
                while len(received) < 13:
                    received += c.recv(100)
                c.shutdown(socket.SHUT_WR)
                assert recv_until_eof(c) == b""
                return received

        assert await backend.run_sync(client) == b"one two three"
        await until(backend, lambda: bool(server.recorders) and "lost" in server.recorders[0].log)
        recorder = server.recorders[0]
        assert bytes(recorder.data) == b"one two three"
        assert recorder.log[-2:] == ["eof", "lost"]
        info = recorder.transport.info
        assert info.client is not None
        assert info.client[0] == "127.0.0.1"
        assert info.server == bound_socket.getsockname()
        assert info.ssl is False
        assert info.alpn_protocol is None
        assert info.tls is None
        await server.close()

    run(worker_class, main)


def test_close_flushes_and_is_idempotent(worker_class: str, bound_socket: socket.socket) -> None:
    payload = os.urandom(3 * 1024 * 1024)

    async def main(backend: Backend) -> None:
        server = Server(backend, bound_socket)
        server.start()
        result: list[bytes] = []

        def client() -> None:
            with connect(bound_socket) as c:
                c.sendall(b"go")
                result.append(recv_until_eof(c))

        done = backend.event()

        async def run_client() -> None:
            await backend.run_sync(client)
            done.set()

        backend.spawn(run_client)
        await until(backend, lambda: bool(server.recorders) and bool(server.recorders[0].data))
        transport = server.recorders[0].transport
        transport.write(payload)
        transport.close()
        transport.close()
        assert transport.is_closing
        transport.write(b"dropped")  # silently dropped
        assert await backend.wait_event(done, TIMEOUT)
        assert result[0] == payload
        await until(backend, lambda: "lost" in server.recorders[0].log)
        transport.abort()  # still fine after the fact
        with pytest.raises(TransportClosed):
            await transport.drain()
        await server.close()

    run(worker_class, main)


def test_abort_discards_and_reports_lost(worker_class: str, bound_socket: socket.socket) -> None:
    async def main(backend: Backend) -> None:
        server = Server(backend, bound_socket)
        server.start()
        client = await backend.run_sync(connect, bound_socket)
        try:
            await until(backend, lambda: bool(server.recorders))
            transport = server.recorders[0].transport
            transport.abort()
            transport.abort()
            transport.close()
            await until(backend, lambda: "lost" in server.recorders[0].log)
            assert server.recorders[0].log.count("lost") == 1
            data = await backend.run_sync(_recv_or_reset, client)
            assert data == b""
        finally:
            client.close()
        await server.close()

    run(worker_class, main)


def _recv_or_reset(client: socket.socket) -> bytes:
    try:
        return recv_until_eof(client)
    except ConnectionResetError:
        return b""


def test_drain_under_clogged_peer(worker_class: str, bound_socket: socket.socket) -> None:
    async def main(backend: Backend) -> None:
        options = ServeOptions(write_high_water=64 * 1024, write_low_water=16 * 1024)
        server = Server(backend, bound_socket, options=options)
        server.start()
        client = await backend.run_sync(connect, bound_socket)
        try:
            await until(backend, lambda: bool(server.recorders))
            recorder = server.recorders[0]
            transport = recorder.transport
            await transport.drain()  # nothing buffered: returns at once
            chunk = b"x" * 65536
            written = 0
            while not transport.writing_paused:
                transport.write(chunk)
                written += len(chunk)
                await backend.sleep(0)
            assert "paused" in recorder.log
            # What the driver samples for write_timeout (progress, and what is left to flush).
            assert transport.write_buffer_size > options.write_high_water
            paused_at = transport.write_progress
            drained = backend.event()

            async def drainer() -> None:
                await transport.drain()
                drained.set()

            backend.spawn(drainer)
            assert not await backend.wait_event(drained, 0.2)  # the peer is not reading
            got = 0

            def read_all() -> None:
                nonlocal got
                client.settimeout(TIMEOUT)
                while got < written:
                    got += len(client.recv(1 << 20))

            await backend.run_sync(read_all)
            assert await backend.wait_event(drained, TIMEOUT)
            assert not transport.writing_paused
            assert transport.write_buffer_size <= options.write_low_water
            assert transport.write_progress > paused_at  # (the peer took them)
            assert recorder.log[-1] == "resumed"
            assert got == written
        finally:
            client.close()
        await server.close()

    run(worker_class, main)


def test_drain_raises_when_connection_lost_while_waiting(
    worker_class: str, bound_socket: socket.socket
) -> None:
    async def main(backend: Backend) -> None:
        server = Server(
            backend, bound_socket, options=ServeOptions(write_high_water=1024, write_low_water=256)
        )
        server.start()
        client = await backend.run_sync(connect, bound_socket)
        await until(backend, lambda: bool(server.recorders))
        transport = server.recorders[0].transport
        while not transport.writing_paused:
            transport.write(b"y" * 65536)
            await backend.sleep(0)
        outcome: list[str] = []

        async def drainer() -> None:
            try:
                await transport.drain()
                outcome.append("returned")
            except TransportClosed:
                outcome.append("closed")

        backend.spawn(drainer)
        await backend.sleep(0.01)
        transport.abort()
        client.close()
        await until(backend, lambda: bool(outcome))
        assert outcome == ["closed"]
        await server.close()

    run(worker_class, main)


def test_pause_and_resume_reading(worker_class: str, bound_socket: socket.socket) -> None:
    async def main(backend: Backend) -> None:
        server = Server(backend, bound_socket)
        server.start()
        client = await backend.run_sync(connect, bound_socket)
        try:
            await until(backend, lambda: bool(server.recorders))
            recorder = server.recorders[0]
            recorder.transport.pause_reading()
            recorder.transport.pause_reading()  # idempotent
            await backend.run_sync(client.sendall, b"held")
            await backend.sleep(0.1)
            assert recorder.data == b""
            recorder.transport.resume_reading()
            recorder.transport.resume_reading()
            await until(backend, lambda: recorder.data == b"held")
        finally:
            client.close()
        await server.close()

    run(worker_class, main)


# -- accept loop -------------------------------------------------------------------------------


def test_stop_returns_and_leaves_listener_open(
    worker_class: str, bound_socket: socket.socket
) -> None:
    async def main(backend: Backend) -> None:
        server = Server(backend, bound_socket)
        server.start()
        await backend.sleep(0)
        await server.close()
        assert bound_socket.fileno() != -1
        # Not accepting any more: a connection waits in the backlog, unseen.
        client = await backend.run_sync(connect, bound_socket)
        await backend.sleep(0.05)
        assert server.recorders == []
        client.close()

    run(worker_class, main)


def test_max_connections(worker_class: str, bound_socket: socket.socket) -> None:
    async def main(backend: Backend) -> None:
        server = Server(backend, bound_socket, options=ServeOptions(max_connections=1))
        server.start()
        first = await backend.run_sync(connect, bound_socket)
        await until(backend, lambda: len(server.recorders) == 1)
        second = await backend.run_sync(connect, bound_socket)  # completes in the backlog
        await backend.sleep(0.1)
        assert len(server.recorders) == 1
        server.recorders[0].transport.close()
        await until(backend, lambda: len(server.recorders) == 2)
        first.close()
        second.close()
        await server.close()

    run(worker_class, main)


def test_unix_socket_info(worker_class: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "s.sock")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(path)
        sock.listen(8)

        async def main(backend: Backend) -> None:
            server = Server(backend, sock, echo=True)
            server.start()

            def client() -> bytes:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
                    c.settimeout(TIMEOUT)
                    c.connect(path)
                    c.sendall(b"ping")
                    return c.recv(4)

            assert await backend.run_sync(client) == b"ping"
            info = server.recorders[0].transport.info
            assert info.client is None
            assert info.server == (path, None)
            await server.close()

        try:
            run(worker_class, main)
        finally:
            sock.close()


def test_tls_alpn_and_info(worker_class: str, bound_socket: socket.socket, tmp_path: Any) -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_ctx)
    server_ctx.set_alpn_protocols(["h2", "http/1.1"])
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    client_ctx.set_alpn_protocols(["http/1.1"])

    async def main(backend: Backend) -> None:
        server = Server(backend, bound_socket, echo=True, ssl_context=server_ctx)
        server.start()

        def client() -> bytes:
            with (
                connect(bound_socket) as raw,
                client_ctx.wrap_socket(raw, server_hostname="127.0.0.1") as c,
            ):
                c.sendall(b"secret")
                return c.recv(6)

        assert await backend.run_sync(client) == b"secret"
        info = server.recorders[0].transport.info
        assert info.ssl is True
        assert info.alpn_protocol == "http/1.1"
        assert info.tls is not None
        assert info.tls["tls_version"] in (0x0303, 0x0304)
        await server.close()

    run(worker_class, main)


def tls_contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server, client) contexts for 127.0.0.1 from a throwaway CA (skips without trustme)."""
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    return server_ctx, client_ctx


def test_serve_returns_only_after_accepted_connections_are_handed_on(
    worker_class: str, bound_socket: socket.socket
) -> None:
    """A connection accepted before the stop but still in its TLS handshake reaches
    ``on_connection`` before ``serve`` returns: the caller's graceful shutdown must see it
    (a rolling restart lost such a request when serve returned first)."""
    server_ctx, client_ctx = tls_contexts()
    go = threading.Event()

    async def main(backend: Backend) -> None:
        server = Server(backend, bound_socket, echo=True, ssl_context=server_ctx)
        server.start()

        def client() -> bytes:
            # TCP now (the server accepts it), the TLS handshake only after the stop.
            with connect(bound_socket) as raw:
                go.wait(TIMEOUT)
                with client_ctx.wrap_socket(raw, server_hostname="127.0.0.1") as c:
                    c.sendall(b"late")
                    return c.recv(4)

        done_client = backend.event()
        answer: list[bytes] = []

        async def run_client() -> None:
            answer.append(await backend.run_sync(client))
            done_client.set()

        backend.spawn(run_client)
        await backend.sleep(0.3)  # (the accept loop takes the connection meanwhile)
        server.stop.set()
        await backend.sleep(0.1)
        assert not server.done, "serve returned with a handshake in flight"
        go.set()
        await until(backend, lambda: server.done)
        assert len(server.recorders) == 1  # handed on before serve returned
        await backend.wait_event(done_client, TIMEOUT)
        assert answer == [b"late"]
        await server.close()

    run(worker_class, main)


def test_failed_tls_handshake_does_not_stop_serving(
    worker_class: str, bound_socket: socket.socket
) -> None:
    server_ctx, client_ctx = tls_contexts()

    async def main(backend: Backend) -> None:
        server = Server(backend, bound_socket, echo=True, ssl_context=server_ctx)
        server.start()

        def bad_then_good() -> bytes:
            with connect(bound_socket) as raw:
                raw.sendall(b"GET / HTTP/1.1\r\n\r\n")  # plaintext to a TLS port
                raw.recv(100)
            with (
                connect(bound_socket) as raw,
                client_ctx.wrap_socket(raw, server_hostname="127.0.0.1") as c,
            ):
                c.sendall(b"ok")
                return c.recv(2)

        assert await backend.run_sync(bad_then_good) == b"ok"
        await server.close()

    run(worker_class, main)


# -- loop services -----------------------------------------------------------------------------


def test_timers_fire_in_order_at_their_deadline(worker_class: str) -> None:
    async def main(backend: Backend) -> None:
        fired: list[tuple[str, float]] = []
        start = backend.now()
        backend.call_at(start + 0.06, lambda: fired.append(("late", backend.now())))
        backend.call_at(start + 0.02, lambda: fired.append(("early", backend.now())))
        cancelled = backend.call_at(start + 0.04, lambda: fired.append(("cancelled", 0.0)))
        cancelled.cancel()
        cancelled.cancel()
        backend.call_at(start - 1, lambda: fired.append(("past", backend.now())))
        await until(backend, lambda: len(fired) >= 3)
        await backend.sleep(0.05)
        # A deadline already past runs at once: uvloop makes it a call_soon, which runs after
        # the timers that came due meanwhile when the loop was held up for longer than 20 ms
        # (a busy machine), so only the timers still in the future have an order to keep.
        names = [name for name, _ in fired]
        assert sorted(names) == ["early", "late", "past"]  # each once, the cancelled never
        assert names.index("early") < names.index("late")
        at = dict(fired)
        assert at["early"] >= start + 0.02 - 0.002
        assert at["late"] >= start + 0.06 - 0.002

    run(worker_class, main)


def test_a_timer_rearmed_in_the_past_lets_other_tasks_run(worker_class: str) -> None:
    """A callback that arms a timer at a deadline already past does not starve the loop:
    each re-armed call waits for a later loop pass, so another task gets a turn."""

    async def main(backend: Backend) -> None:
        fired = 0
        seen_by_task: list[int] = []

        def again() -> None:
            nonlocal fired
            fired += 1
            if fired < 2000:
                backend.call_at(backend.now() - 1, again)

        async def bystander() -> None:
            await backend.sleep(0)
            seen_by_task.append(fired)

        backend.spawn(bystander)
        backend.call_at(backend.now() - 1, again)
        await until(backend, lambda: fired >= 2000)
        assert seen_by_task, "the other task never ran"
        assert seen_by_task[0] < 1000, f"the timer ran {seen_by_task[0]} times in one pass"

    run(worker_class, main)


def test_spawn_cancel_and_events(worker_class: str) -> None:
    async def main(backend: Backend) -> None:
        event = backend.event()
        log: list[str] = []
        started: list[str] = []

        async def waiter(tag: str) -> None:
            started.append(tag)
            try:
                await event.wait()
                log.append(tag)
            except BaseException:
                log.append(f"{tag}-cancelled")
                raise

        handle = backend.spawn(waiter, "a")
        backend.spawn(waiter, "b")
        # (No fixed number of loop passes: trio runs new tasks in a random order.)
        await until(backend, lambda: len(started) == 2)
        handle.cancel()
        await until(backend, handle.done)
        handle.cancel()  # idempotent once done
        assert not await backend.wait_event(event, 0.01)
        event.set()
        event.set()
        assert event.is_set()
        assert await backend.wait_event(event, None)
        await until(backend, lambda: "b" in log)
        assert log == ["a-cancelled", "b"]

    run(worker_class, main)


def test_task_starter_runs_cancels_and_isolates_context(worker_class: str) -> None:
    """Request tasks: each runs to completion, in a context of its own (trio reuses the
    tasks that run them), and ``cancel`` stops only its own, including before it starts."""
    var: contextvars.ContextVar[str] = contextvars.ContextVar("request")

    async def main(backend: Backend) -> None:
        start, eager = backend.task_starter()
        assert eager in (True, False)
        seen: list[str] = []

        async def request(tag: str) -> None:
            seen.append(f"{tag}:{var.get('unset')}")
            var.set(tag)
            await backend.sleep(0)

        for tag in ("a", "b", "c"):
            handle = start(request(tag))
            await until(backend, handle.done)
        assert seen == ["a:unset", "b:unset", "c:unset"]  # no value leaks to the next one

        gate = backend.event()
        log: list[str] = []

        async def blocked(tag: str) -> None:
            log.append(f"{tag}-started")
            try:
                await gate.wait()
                log.append(tag)
            except BaseException:
                log.append(f"{tag}-cancelled")
                raise

        first, second = start(blocked("x")), start(blocked("y"))
        await until(backend, lambda: len(log) == 2)
        first.cancel()
        await until(backend, first.done)
        first.cancel()  # idempotent once done
        gate.set()
        await until(backend, second.done)
        assert sorted(log) == ["x-cancelled", "x-started", "y", "y-started"]

        if not eager:  # a task cancelled before it ran never runs
            late = start(blocked("z"))
            late.cancel()
            await until(backend, late.done)
            assert "z-started" not in log
        start(request("d"))  # the starter still works after cancellations
        await until(backend, lambda: len(seen) == 4)

    run(worker_class, main)


def test_spawned_task_errors_are_logged(
    worker_class: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def main(backend: Backend) -> None:
        async def boom() -> None:
            raise RuntimeError("task failed")

        handle = backend.spawn(boom)
        await until(backend, handle.done)
        await backend.sleep(0)

    with caplog.at_level("ERROR", logger="hypercorn.error"):
        run(worker_class, main)
    assert any("task failed" in r.getMessage() or r.exc_info for r in caplog.records)


def test_run_sync_and_call_soon_threadsafe(worker_class: str) -> None:
    async def main(backend: Backend) -> None:
        assert await backend.run_sync(lambda a, b: a + b, 2, 3) == 5

        def fail() -> None:
            raise ValueError("in thread")

        with pytest.raises(ValueError, match="in thread"):
            await backend.run_sync(fail)
        seen: list[int] = []
        main_thread = threading.get_ident()

        def from_thread() -> None:
            backend.call_soon_threadsafe(lambda: seen.append(threading.get_ident()))

        await backend.run_sync(from_thread)
        await until(backend, lambda: bool(seen))
        assert seen == [main_thread]
        backend.call_soon(lambda: seen.append(0))
        await until(backend, lambda: len(seen) == 2)

    run(worker_class, main)


def test_now_is_monotonic_seconds(worker_class: str) -> None:
    async def main(backend: Backend) -> None:
        first = backend.now()
        await backend.sleep(0.02)
        assert 0.015 <= backend.now() - first < 2
        assert backend.name == worker_class

    run(worker_class, main)


def test_map_exceptions() -> None:
    mapping = {ConnectionResetError: TransportClosed, TimeoutError: TransportTimeout}
    with pytest.raises(TransportClosed) as info, map_exceptions(mapping):
        raise ConnectionResetError("reset")
    assert isinstance(info.value.__cause__, ConnectionResetError)
    with pytest.raises(TransportTimeout), map_exceptions(mapping):
        raise TimeoutError
    with pytest.raises(KeyError), map_exceptions(mapping):
        raise KeyError("unmapped")


def test_accept_survives_fd_exhaustion(
    worker_class: str, bound_socket: socket.socket, caplog: pytest.LogCaptureFixture
) -> None:
    """EMFILE while accepting: logged (rate-limited), backs off, recovers once fds free up."""
    resource = pytest.importorskip("resource")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)

    async def main(backend: Backend) -> None:
        server = Server(backend, bound_socket, echo=True)
        server.start()
        await backend.sleep(0)
        hogs: list[int] = []
        client = None
        resource.setrlimit(resource.RLIMIT_NOFILE, (128, hard))
        try:
            # The client socket must exist before the table fills up.
            client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                while True:
                    hogs.append(os.open(os.devnull, os.O_RDONLY))
            except OSError:
                pass
            client.settimeout(TIMEOUT)
            client.connect(bound_socket.getsockname())
            await backend.sleep(0.3)  # several accept attempts hit EMFILE
            assert server.recorders == []
            for fd in hogs:
                os.close(fd)
            hogs.clear()
            await backend.run_sync(client.sendall, b"alive")
            assert await backend.run_sync(client.recv, 5) == b"alive"
        finally:
            for fd in hogs:
                os.close(fd)
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
            if client is not None:
                client.close()
        await server.close()

    with caplog.at_level("ERROR", logger="hypercorn.error"):
        run(worker_class, main)
    exhausted = [r for r in caplog.records if "Out of resources" in r.getMessage()]
    assert len(exhausted) == 1  # several failed accepts, one line (rate-limited)
    assert exhausted[0].exc_info is None  # no traceback


def test_close_with_unread_input_still_delivers_what_was_written(
    worker_class: str, bound_socket: socket.socket
) -> None:
    """A peer that sent more than we read before ``close`` (pipelined requests, a flood
    answered with GOAWAY) still gets every byte written before the close: the transport
    does not reset the connection under it (a lingering close, RFC 9112 9.6)."""
    answer = os.urandom(256 * 1024)

    class CloseAtOnce(Recorder):
        def data_received(self, data: bytes) -> None:
            if not self.data:
                self.transport.write(answer)
                self.transport.close()
            self.data += data

    async def main(backend: Backend) -> None:
        server = Server(backend, bound_socket)
        server.on_connection = lambda transport: CloseAtOnce(transport)  # type: ignore[method-assign]

        def client() -> bytes:
            with connect(bound_socket) as c:
                c.sendall(b"x")
                c.settimeout(0.2)
                # More input than the server will read before it closes.
                with contextlib.suppress(OSError):
                    for _ in range(64):
                        c.send(b"y" * 65536)
                c.settimeout(TIMEOUT)
                return recv_until_eof(c)

        server.start()
        assert await backend.run_sync(client) == answer
        await server.close()

    run(worker_class, main)


class ByeAtOnce(Recorder):
    """Answers the first bytes with b"bye" and closes; ``lost`` is set by connection_lost."""

    lost: threading.Event

    def data_received(self, data: bytes) -> None:
        if not self.data:
            self.transport.write(b"bye")
            self.transport.close()
        self.data += data

    def connection_lost(self) -> None:
        super().connection_lost()
        self.lost.set()


def test_lingering_close_reports_lost_once_written(
    worker_class: str, bound_socket: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a closed connection lingers (the peer still connected, still sending), its
    handler has already heard ``connection_lost``: a graceful shutdown waits for nothing."""
    linger_for(monkeypatch, 60.0)
    lost = threading.Event()

    async def main(backend: Backend) -> None:
        server = Server(backend, bound_socket)

        def handler(transport: Transport) -> ByeAtOnce:
            recorder = ByeAtOnce(transport)
            recorder.lost = lost
            return recorder

        server.on_connection = handler  # type: ignore[method-assign]

        def client() -> tuple[bytes, bool]:
            with connect(bound_socket) as c:
                c.sendall(b"x")
                answer = recv_until_eof(c)  # (the server shut its write side)
                c.sendall(b"more")  # discarded, not answered with a reset
                return answer, lost.wait(TIMEOUT)

        server.start()
        assert await backend.run_sync(client) == (b"bye", True)
        await server.close()

    run(worker_class, main)


def test_lingering_close_is_bounded(
    worker_class: str, bound_socket: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A peer that keeps sending after our close is cut off once the linger is over."""
    linger_for(monkeypatch, 0.3)

    async def main(backend: Backend) -> None:
        server = Server(backend, bound_socket)

        def handler(transport: Transport) -> ByeAtOnce:
            recorder = ByeAtOnce(transport)
            recorder.lost = threading.Event()
            return recorder

        server.on_connection = handler  # type: ignore[method-assign]

        def client() -> tuple[bytes, bool]:
            with connect(bound_socket) as c:
                c.sendall(b"x")
                answer = recv_until_eof(c)
                c.settimeout(0.5)
                deadline = time.monotonic() + 30.0
                while time.monotonic() < deadline:
                    try:
                        c.send(b"y" * 65536)
                    except TimeoutError:
                        continue
                    except OSError:
                        return answer, True
                return answer, False

        server.start()
        assert await backend.run_sync(client) == (b"bye", True)
        await server.close()

    run(worker_class, main)


def test_close_without_linger_flushes_then_closes(
    worker_class: str, bound_socket: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``close(linger=False)`` (the peer said it sends nothing more): every byte written
    arrives, then the socket is closed rather than lingering, so what the peer still sends
    after our FIN is answered with a reset."""
    linger_for(monkeypatch, 60.0)
    payload = os.urandom(3 * 1024 * 1024)

    class AnswerAndClose(Recorder):
        def data_received(self, data: bytes) -> None:
            if not self.data:
                self.transport.write(payload)
                self.transport.close(linger=False)
            self.data += data

    async def main(backend: Backend) -> None:
        server = Server(backend, bound_socket)
        server.on_connection = AnswerAndClose  # type: ignore[method-assign]

        def client() -> tuple[bool, bool]:
            with connect(bound_socket) as c:
                c.sendall(b"x")
                return recv_until_eof(c) == payload, reset_by_server(c)

        server.start()
        assert await backend.run_sync(client) == (True, True)
        await server.close()

    run(worker_class, main)
