"""Every example of Hypercorn's "API usage" documentation, run unchanged in a subprocess.

The examples come from the seeds (000: the API usage page, 002: the async integration
reference, 003: ``hypercorn.run.run``, 004: the package quickstart). Each runs as
``python -c`` exactly as documented except for the bind: the test binds 127.0.0.1 port 0
itself and the example binds ``fd://N`` to that inherited socket (no fixed ports, no race).
The two typos the seeds README names are fixed as the documentation intends.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]

# What the examples assume exists: an ASGI `app` and a WSGI `wsgi_app`, plus the bind.
PRELUDE = """
import os
from examples.hello import app
from examples.wsgi_app import app as wsgi_app
BIND = "fd://" + os.environ["HC_TEST_FD"]
"""

EXAMPLES: dict[str, str] = {
    # 000: "using asyncio"
    "asyncio_run": """
        from hypercorn.config import Config

        config = Config()
        config.bind = [BIND]  # As an example configuration setting

        import asyncio
        from hypercorn.asyncio import serve

        asyncio.run(serve(app, config))
    """,
    # 000: "The same for uvloop"
    "uvloop_install": """
        from hypercorn.config import Config

        config = Config()
        config.bind = [BIND]

        import asyncio

        import uvloop
        from hypercorn.asyncio import serve

        uvloop.install()
        asyncio.run(serve(app, config))
    """,
    # 000: "Graceful shutdown" with shutdown_trigger=shutdown_event.wait (and the
    # SSL error reporting exception handler from the same page).
    "shutdown_event": """
        from typing import Any
        import ssl

        from hypercorn.config import Config
        from hypercorn.asyncio import serve

        config = Config()
        config.bind = [BIND]

        import asyncio
        import signal

        shutdown_event = asyncio.Event()

        def _signal_handler(*_: Any) -> None:
            shutdown_event.set()

        def _exception_handler(loop, context):
            exception = context.get("exception")
            if isinstance(exception, ssl.SSLError):
                pass  # Handshake failure
            else:
                loop.default_exception_handler(context)

        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        loop.set_exception_handler(_exception_handler)
        loop.add_signal_handler(signal.SIGTERM, _signal_handler)
        loop.run_until_complete(
            serve(app, config, shutdown_trigger=shutdown_event.wait)
        )
    """,
    # 000: "No signal handling"
    "no_signal_handling": """
        from hypercorn.config import Config
        from hypercorn.asyncio import serve

        config = Config()
        config.bind = [BIND]

        import asyncio

        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        loop.run_until_complete(
            serve(app, config, shutdown_trigger=lambda: asyncio.Future())
        )
    """,
    # 000: "Forcing ASGI or WSGI mode"
    "mode_wsgi": """
        import asyncio
        from hypercorn.config import Config
        from hypercorn.asyncio import serve

        config = Config()
        config.bind = [BIND]
        asyncio.run(serve(wsgi_app, config, mode="wsgi"))
    """,
    # 002: "Asyncio with Shutdown Trigger"
    "shutdown_trigger_function": """
        import asyncio
        import signal
        from hypercorn.config import Config
        from hypercorn.asyncio import serve

        async def shutdown_trigger():
            shutdown_event = asyncio.Event()

            def signal_handler():
                shutdown_event.set()

            loop = asyncio.get_event_loop()
            loop.add_signal_handler(signal.SIGTERM, signal_handler)
            loop.add_signal_handler(signal.SIGINT, signal_handler)

            await shutdown_event.wait()

        async def main():
            config = Config()
            config.bind = [BIND]
            await serve(app, config, shutdown_trigger=shutdown_trigger)

        asyncio.run(main())
    """,
    # 002: "Custom Shutdown Logic" (the shutdown comes from a SIGTERM handler here)
    "server_manager": """
        import asyncio
        import signal
        from hypercorn.config import Config
        from hypercorn.asyncio import serve

        class ServerManager:
            def __init__(self):
                self.shutdown_event = asyncio.Event()

            async def start_server(self, app):
                config = Config()
                config.bind = [BIND]
                await serve(app, config, shutdown_trigger=self.shutdown_event.wait)

            def shutdown(self):
                self.shutdown_event.set()

        async def main():
            manager = ServerManager()
            task = asyncio.create_task(manager.start_server(app))
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, manager.shutdown)
            await task

        asyncio.run(main())
    """,
    # 002: "WSGI Application Integration" (mode auto-detected) and "Mixed ASGI/WSGI Mode"
    "wsgi_detected": """
        import asyncio
        from hypercorn.config import Config
        from hypercorn.asyncio import serve

        def wsgi_app(environ, start_response):
            status = '200 OK'
            headers = [('Content-type', 'text/plain')]
            start_response(status, headers)
            return [b'Hello, world!']

        async def main():
            config = Config()
            config.bind = [BIND]
            await serve(wsgi_app, config)

        asyncio.run(main())
    """,
    "mode_asgi": """
        import asyncio
        from hypercorn.config import Config
        from hypercorn.asyncio import serve

        async def main():
            config = Config()
            config.bind = [BIND]
            await serve(app, config, mode="asgi")

        asyncio.run(main())
    """,
    # 004: the quickstart (its app asserts the scope is http: lifespan is unsupported)
    "quickstart": """
        import asyncio
        from hypercorn.config import Config
        from hypercorn.asyncio import serve

        async def app(scope, receive, send):
            assert scope['type'] == 'http'
            response_body = b'Hello, world!'
            headers = [
                (b'content-type', b'text/plain'),
                (b'content-length', str(len(response_body)).encode())
            ]
            await send({'type': 'http.response.start', 'status': 200, 'headers': headers})
            await send({'type': 'http.response.body', 'body': response_body})

        async def main():
            config = Config()
            config.bind = [BIND]
            print(f"Serving on {config.bind[0]}...")
            await serve(app, config)

        if __name__ == '__main__':
            import os
            asyncio.run(main())
    """,
    # 003: hypercorn.run.run in-process (workers = 0)
    "run_in_process": """
        from hypercorn.config import Config
        from hypercorn.run import run

        config = Config()
        config.bind = [BIND]
        config.workers = 0
        config.worker_class = "asyncio"
        config.application_path = "examples.hello:app"

        exit_code = run(config)
        print(f"Server exited with code: {exit_code}")
    """,
    # 003: hypercorn.run.run with worker processes (the arbiter)
    "run_workers": """
        from hypercorn.config import Config
        from hypercorn.run import run

        config = Config()
        config.bind = [BIND]
        config.workers = 2
        config.worker_class = "asyncio"
        config.application_path = "examples.hello:app"

        exit_code = run(config)
        print(f"Server exited with code: {exit_code}")
    """,
}


class Example:
    def __init__(self, name: str, sock: socket.socket) -> None:
        script = PRELUDE + textwrap.dedent(EXAMPLES[name])
        env = dict(os.environ, HC_TEST_FD=str(sock.fileno()), PYTHONUNBUFFERED="1")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        self.process = subprocess.Popen(
            [sys.executable, "-c", script],
            cwd=ROOT,
            env=env,
            pass_fds=(sock.fileno(),),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        host, port = sock.getsockname()[:2]
        self.url = f"http://{host}:{port}"

    def get(self) -> httpx.Response:
        # The socket is already listening: the request waits in the backlog until the
        # example's server accepts it, so no readiness polling is needed.
        with httpx.Client(base_url=self.url, timeout=30) as client:
            return client.get("/")

    def stop(self, signum: int) -> tuple[int, str, str]:
        self.process.send_signal(signum)
        stdout, stderr = self.process.communicate(timeout=30)
        return self.process.returncode, stdout, stderr

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.communicate(timeout=30)


StartExample = Callable[[str], Example]


@pytest.fixture
def example(bound_socket: socket.socket) -> Iterator[StartExample]:
    started: list[Example] = []

    def start(name: str) -> Example:
        started.append(Example(name, bound_socket))
        return started[-1]

    yield start
    for running in started:
        running.kill()


GRACEFUL = [
    ("asyncio_run", signal.SIGTERM),
    ("asyncio_run", signal.SIGINT),
    ("uvloop_install", signal.SIGTERM),
    ("shutdown_event", signal.SIGTERM),
    ("mode_wsgi", signal.SIGTERM),
    ("shutdown_trigger_function", signal.SIGINT),
    ("server_manager", signal.SIGTERM),
    ("wsgi_detected", signal.SIGTERM),
    ("mode_asgi", signal.SIGTERM),
    ("quickstart", signal.SIGTERM),
]


@pytest.mark.parametrize(("name", "signum"), GRACEFUL)
def test_example_serves_and_stops_gracefully(example: StartExample, name: str, signum: int) -> None:
    if name == "uvloop_install":
        pytest.importorskip("uvloop")
    running = example(name)
    response = running.get()
    assert response.status_code == 200
    assert response.text.startswith("Hello, world!")
    returncode, stdout, stderr = running.stop(signum)
    assert returncode == 0, stderr
    assert "Traceback" not in stderr, stderr
    if name == "quickstart":
        assert "Serving on fd://" in stdout


def test_no_signal_handling(example: StartExample) -> None:
    running = example("no_signal_handling")
    assert running.get().status_code == 200
    returncode, _, _ = running.stop(signal.SIGTERM)
    # No handler was installed, so SIGTERM's default action ended the process.
    assert returncode == -signal.SIGTERM


def test_run_in_process(example: StartExample) -> None:
    running = example("run_in_process")
    assert running.get().status_code == 200
    returncode, stdout, stderr = running.stop(signal.SIGTERM)
    assert returncode == 0, stderr
    assert "Server exited with code: 0" in stdout


@pytest.mark.slow
def test_run_with_workers(example: StartExample) -> None:
    running = example("run_workers")
    assert running.get().status_code == 200
    returncode, stdout, stderr = running.stop(signal.SIGTERM)
    assert returncode == 0, stderr
    assert "Server exited with code: 0" in stdout


@pytest.mark.skipif(
    importlib.util.find_spec("hypercorn.trio") is None,
    reason="trio worker lands in the trio issue",
)
def test_trio_example(bound_socket: socket.socket) -> None:  # pragma: no cover - until trio
    script = PRELUDE + textwrap.dedent(
        """
        import trio
        from hypercorn.config import Config
        from hypercorn.trio import serve

        config = Config()
        config.bind = [BIND]
        trio.run(serve, app, config)
        """
    )
    env = dict(os.environ, HC_TEST_FD=str(bound_socket.fileno()))
    process = subprocess.Popen(
        [sys.executable, "-c", script], cwd=ROOT, env=env, pass_fds=(bound_socket.fileno(),)
    )
    try:
        host, port = bound_socket.getsockname()[:2]
        with httpx.Client(timeout=30) as client:
            assert client.get(f"http://{host}:{port}/").status_code == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
