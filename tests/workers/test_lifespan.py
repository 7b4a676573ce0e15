"""ASGI lifespan against the real backends: startup, shutdown, failures, unsupported, state."""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest

from hypercorn.apps import wrap_app
from hypercorn.config import Config
from hypercorn.workers import run_with_backend
from hypercorn.workers.backend import Backend
from hypercorn.workers.lifespan import Lifespan, LifespanFailure
from tests.support.apps import LifespanApp, hello_app, wsgi_hello

T = TypeVar("T")

_TRIO_READY = importlib.util.find_spec("trio") is not None


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


@pytest.fixture
def error_log() -> Iterator[logging.Logger]:
    logger = logging.getLogger("tests.lifespan")
    logger.setLevel(logging.DEBUG)
    return logger


@pytest.fixture
def config(error_log: logging.Logger) -> Config:
    config = Config()
    config.errorlog = error_log
    config.startup_timeout = 5.0
    config.shutdown_timeout = 5.0
    return config


def run(worker_class: str, main: Callable[[Backend], Awaitable[T]]) -> T:
    return run_with_backend(worker_class, main)


def test_startup_and_shutdown_share_state(worker_class: str, config: Config) -> None:
    app = LifespanApp(state={"db": "connected"})

    async def main(backend: Backend) -> dict[str, Any]:
        lifespan = Lifespan(app, config, backend)
        await lifespan.startup()
        state = dict(lifespan.state)
        await lifespan.shutdown()
        assert lifespan.supported
        return state

    assert run(worker_class, main) == {"db": "connected"}
    assert app.events == ["lifespan.startup", "lifespan.shutdown"]


def test_startup_failed_message(worker_class: str, config: Config) -> None:
    app = LifespanApp(startup_failure="cannot open the cache")

    async def main(backend: Backend) -> str:
        lifespan = Lifespan(app, config, backend)
        with pytest.raises(LifespanFailure) as info:
            await lifespan.startup()
        return str(info.value)

    assert run(worker_class, main) == "lifespan startup failed: cannot open the cache"


def test_startup_failed_with_a_traceback_gives_one_line(
    worker_class: str, config: Config, caplog: pytest.LogCaptureFixture
) -> None:
    trace = (
        "Traceback (most recent call last):\n"
        '  File "app.py", line 3, in startup\n'
        "    connect()\n"
        "OSError: [Errno 111] Connection refused\n"
    )
    app = LifespanApp(startup_failure=trace)

    async def main(backend: Backend) -> str:
        lifespan = Lifespan(app, config, backend)
        with pytest.raises(LifespanFailure) as info:
            await lifespan.startup()
        return str(info.value)

    with caplog.at_level(logging.ERROR):
        message = run(worker_class, main)
    assert message == "lifespan startup failed: OSError: [Errno 111] Connection refused"
    assert "connect()" in caplog.text  # the whole traceback still reaches the error log


async def _raises_on_scope(scope: Any, receive: Any, send: Any) -> None:
    raise ValueError("lifespan not supported here")


async def _raises_in_startup(scope: Any, receive: Any, send: Any) -> None:
    await receive()
    raise ConnectionError("cannot reach the database")


async def _returns(scope: Any, receive: Any, send: Any) -> None:
    return None


async def _http_only(scope: Any, receive: Any, send: Any) -> None:
    # The seeds' first example: it answers every scope as if it were HTTP.
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"Hello World"})


#: Apps that do not speak lifespan, and why the server says so (ASGI spec: "continue").
NO_LIFESPAN = [
    pytest.param(
        _raises_on_scope,
        "raised ValueError: lifespan not supported here before receiving lifespan.startup",
        id="raises-on-scope",
    ),
    pytest.param(
        _raises_in_startup,
        "raised ConnectionError: cannot reach the database after receiving lifespan.startup",
        id="raises-in-startup",
    ),
    pytest.param(_returns, "returned without answering lifespan.startup", id="returns"),
    pytest.param(
        _http_only, "sent 'http.response.start' on the lifespan scope", id="unexpected-message"
    ),
]


@pytest.mark.parametrize(("app", "reason"), NO_LIFESPAN)
def test_auto_serves_without_lifespan_after_one_warning(
    worker_class: str,
    config: Config,
    caplog: pytest.LogCaptureFixture,
    app: Callable[..., Awaitable[None]],
    reason: str,
) -> None:
    async def main(backend: Backend) -> bool:
        lifespan = Lifespan(app, config, backend)
        await lifespan.startup()
        await lifespan.shutdown()
        return lifespan.supported

    with caplog.at_level(logging.DEBUG, logger="tests.lifespan"):
        assert run(worker_class, main) is False
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.levelno for r in warnings] == [logging.WARNING]
    line = warnings[0].getMessage()
    assert "\n" not in line
    assert f"does not support ASGI lifespan (it {reason}); serving without it" in line
    assert warnings[0].exc_info is None  # a traceback, if any, only at debug level


@pytest.mark.parametrize(("app", "reason"), NO_LIFESPAN)
def test_on_makes_lifespan_required(
    worker_class: str, config: Config, app: Callable[..., Awaitable[None]], reason: str
) -> None:
    config.lifespan = "on"

    async def main(backend: Backend) -> str:
        lifespan = Lifespan(app, config, backend)
        with pytest.raises(LifespanFailure) as info:
            await lifespan.startup()
        return str(info.value)

    assert run(worker_class, main) == (
        f"lifespan startup failed: the application {reason} (lifespan is 'on')"
    )


def test_off_never_calls_the_app_with_the_lifespan_scope(
    worker_class: str, config: Config, caplog: pytest.LogCaptureFixture
) -> None:
    config.lifespan = "off"
    app = LifespanApp(startup_failure="would fail")

    async def main(backend: Backend) -> bool:
        lifespan = Lifespan(app, config, backend)
        await lifespan.startup()
        await lifespan.shutdown()
        return lifespan.supported

    assert run(worker_class, main) is False
    assert app.events == []
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize("mode", ["auto", "on"])
def test_wsgi_app_completes_lifespan_quietly(
    worker_class: str, config: Config, caplog: pytest.LogCaptureFixture, mode: str
) -> None:
    config.lifespan = mode

    async def main(backend: Backend) -> bool:
        lifespan = Lifespan(wrap_app(wsgi_hello, config, backend), config, backend)
        await lifespan.startup()
        await lifespan.shutdown()
        return lifespan.supported

    assert run(worker_class, main) is True
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize("mode", ["auto", "on"])
def test_startup_failed_fails_in_every_mode(worker_class: str, config: Config, mode: str) -> None:
    config.lifespan = mode
    app = LifespanApp(startup_failure="no database")

    async def main(backend: Backend) -> str:
        lifespan = Lifespan(app, config, backend)
        with pytest.raises(LifespanFailure) as info:
            await lifespan.startup()
        return str(info.value)

    assert run(worker_class, main) == "lifespan startup failed: no database"


def test_raise_after_startup_completed_is_logged_and_shutdown_skipped(
    worker_class: str, config: Config, caplog: pytest.LogCaptureFixture
) -> None:
    async def crashes_later(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "lifespan.startup.complete"})
        await receive()
        raise RuntimeError("lost the pool")

    async def main(backend: Backend) -> bool:
        lifespan = Lifespan(crashes_later, config, backend)
        await lifespan.startup()
        await lifespan.shutdown()
        return lifespan.supported

    assert run(worker_class, main) is True
    assert "Lifespan errored: RuntimeError: lost the pool" in caplog.text


def test_startup_timeout(worker_class: str, config: Config) -> None:
    config.startup_timeout = 0.05

    async def never_answers(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await receive()  # waits forever: startup is never answered

    async def main(backend: Backend) -> str:
        lifespan = Lifespan(never_answers, config, backend)
        with pytest.raises(LifespanFailure) as info:
            await lifespan.startup()
        return str(info.value)

    assert run(worker_class, main) == (
        "lifespan startup did not complete within startup_timeout (0.05s)"
    )


def test_shutdown_timeout_is_logged_not_raised(
    worker_class: str, config: Config, caplog: pytest.LogCaptureFixture
) -> None:
    config.shutdown_timeout = 0.05

    async def slow_shutdown(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await receive()  # never answers shutdown

    async def main(backend: Backend) -> None:
        lifespan = Lifespan(slow_shutdown, config, backend)
        await lifespan.startup()
        await lifespan.shutdown()

    run(worker_class, main)
    assert "lifespan shutdown did not complete within shutdown_timeout (0.05s)" in caplog.text


def test_shutdown_failed_is_logged(
    worker_class: str, config: Config, caplog: pytest.LogCaptureFixture
) -> None:
    app = LifespanApp(shutdown_failure="could not flush")

    async def main(backend: Backend) -> None:
        lifespan = Lifespan(app, config, backend)
        await lifespan.startup()
        await lifespan.shutdown()

    run(worker_class, main)
    assert "lifespan shutdown failed: could not flush" in caplog.text


def test_lifespan_scope_shape(worker_class: str, config: Config) -> None:
    seen: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(dict(scope))
        await hello_app(scope, receive, send)

    async def main(backend: Backend) -> None:
        lifespan = Lifespan(app, config, backend)
        await lifespan.startup()
        assert seen[0]["state"] is lifespan.state
        await lifespan.shutdown()

    run(worker_class, main)
    assert seen[0]["type"] == "lifespan"
    assert seen[0]["asgi"] == {"version": "3.0", "spec_version": "2.0"}


def test_asgi2_lifespan_through_wrap_app(worker_class: str, config: Config) -> None:
    events: list[str] = []

    class ASGI2:
        def __init__(self, scope: Any) -> None:
            self.scope = scope

        async def __call__(self, receive: Any, send: Any) -> None:
            assert self.scope["asgi"]["version"] == "2.0"
            while True:
                message = await receive()
                events.append(message["type"])
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return

    async def main(backend: Backend) -> None:
        lifespan = Lifespan(wrap_app(ASGI2, config, backend), config, backend)
        await lifespan.startup()
        await lifespan.shutdown()

    run(worker_class, main)
    assert events == ["lifespan.startup", "lifespan.shutdown"]
