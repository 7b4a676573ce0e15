"""End-to-end fixtures: ``serve()`` on a real loop in a background thread, on a pre-bound socket."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from hypercorn.arbiter.sockets import Sockets
from hypercorn.config import Config
from hypercorn.workers import run_with_backend
from hypercorn.workers.backend import Backend
from hypercorn.workers.serve import WorkerHooks, serve
from tests.support.certs import Certs, make_certs

READY_TIMEOUT = 10.0
#: Config ``h2_engine`` of the servers ``start_server`` starts without one: modules that run
#: every test on every HTTP/2 engine set it through the ``every_h2_engine`` fixture.
H2_ENGINE = ["auto"]


@dataclass
class RunningServer:
    host: str
    port: int
    config: Config
    thread: threading.Thread
    _stop: list[Callable[[], None]] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)

    @property
    def url(self) -> str:
        scheme = "https" if self.config.ssl_enabled else "http"
        return f"{scheme}://{self.host}:{self.port}"

    def connect(self, timeout: float = 5.0) -> socket.socket:
        return socket.create_connection((self.host, self.port), timeout=timeout)

    def stop(self, timeout: float = 10.0) -> None:
        if self._stop:
            self._stop.pop()()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "server did not stop"
        if self.errors:
            raise self.errors[0]


def start_server(
    app: Any,
    sock: socket.socket,
    *,
    worker_class: str = "uvloop",
    secure: bool = False,
    quic: socket.socket | None = None,
    config: Config | None = None,
    also: Sequence[socket.socket] = (),
    **settings: Any,
) -> RunningServer:
    """Serve ``app`` on ``sock`` (and the listeners in ``also``, a unix socket say) in a
    background thread; ``host``/``port`` are ``sock``'s. ``quic``: a bound UDP socket to
    serve HTTP/3 on too (with ``secure``)."""
    config = config or Config()
    config.accesslog = None
    if H2_ENGINE[0] != "auto":
        config.h2_engine = H2_ENGINE[0]
    for name, value in settings.items():
        setattr(config, name, value)
    listeners = [sock, *also]
    sockets = Sockets(secure_sockets=listeners) if secure else Sockets(insecure_sockets=listeners)
    if quic is not None:
        sockets.quic_sockets.append(quic)
    ready = threading.Event()
    host, port = sock.getsockname()[:2]
    server = RunningServer(host, port, config, threading.Thread(daemon=True))

    async def main(backend: Backend) -> None:
        stop = backend.event()
        server._stop.append(lambda: backend.call_soon_threadsafe(stop.set))
        await serve(
            app,
            config,
            backend,
            sockets,
            shutdown_trigger=stop.wait,
            hooks=WorkerHooks(on_ready=ready.set, on_beat=lambda: True),
        )

    def target() -> None:
        try:
            run_with_backend(worker_class, main)
        except BaseException as exc:
            server.errors.append(exc)
        finally:
            ready.set()

    server.thread = threading.Thread(target=target, daemon=True, name="hypercorn-e2e")
    server.thread.start()
    assert ready.wait(READY_TIMEOUT), "server not ready"
    if server.errors:
        raise server.errors[0]
    return server


@pytest.fixture(params=["fast", "h2"])
def every_h2_engine(request: pytest.FixtureRequest) -> Iterator[str]:
    """Servers started during the test run on this HTTP/2 engine (``pytestmark =
    pytest.mark.usefixtures("every_h2_engine")``: every test on every engine)."""
    H2_ENGINE[0] = request.param
    try:
        yield request.param
    finally:
        H2_ENGINE[0] = "auto"


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """A trustme CA and a server certificate for 127.0.0.1 / localhost (skips without trustme)."""
    pytest.importorskip("trustme")
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(params=["uvloop", "asyncio", "trio"])
def worker_class(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def run_server(
    bound_socket: socket.socket, worker_class: str
) -> Iterator[Callable[..., RunningServer]]:
    """``run_server(app, **config_settings)`` -> a RunningServer, stopped at teardown."""
    started: list[RunningServer] = []

    def factory(app: Any, **settings: Any) -> RunningServer:
        server = start_server(app, bound_socket, worker_class=worker_class, **settings)
        started.append(server)
        return server

    yield factory
    for server in started:
        if server.thread.is_alive():
            server.stop()
