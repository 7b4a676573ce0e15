"""Every example of the seeds (the documents the product was specified from), run verbatim.

The seeds are ``../shared/seeds``: 000 Hypercorn's API usage page, 002 its async
integration reference, 003 its server-execution reference (``hypercorn.run.run`` and the
command line) and 004 a package summary (the quickstart). Users copy these examples as they
are, so each runs here as a real process, from the seed's own text:

* An example is a list of *pieces*. Each piece is a contiguous excerpt of a seed (only the
  indentation the seed's rendering lost is restored); ``test_pieces_are_verbatim`` checks that
  against the seed files whenever they are beside this checkout.
* Where the seed relies on its page for context (000's snippets assume ``app`` and ``serve``
  exist; 002's later examples reuse the first example's ``app``), the context is other
  pieces of the same seeds, plus ``import`` lines. The few glue lines that are not from a
  seed are marked ``GLUE`` and explained; the two typos the seeds README names are fixed by
  ``EDITS``.
* The examples' own binds (``localhost:8080``, ``0.0.0.0:8000``, ``:443``) stay in the text:
  the test hands the server a pre-bound 127.0.0.1 port-0 socket through systemd socket
  activation (fd 3, ``LISTEN_FDS``/``LISTEN_PID``), which replaces the configured binds as
  in gunicorn. No fixed port is ever bound, and nothing in the example changes.
* The examples' application is the seeds' own: it answers every scope as HTTP, so it does
  not speak ASGI lifespan. The server must serve it anyway (the ASGI spec; issue 10 item 2).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
TRIO_SKIP = pytest.mark.skipif(
    importlib.util.find_spec("trio") is None,
    reason="trio is not installed (the trio extra)",
)


def _seeds_dir() -> Path | None:
    candidates = [os.environ.get("HYPERCORN_SEEDS", "")]
    # /work/main/../shared/seeds, and the same from a worktree at /work/wt/<name>.
    candidates += [str(parent / "shared" / "seeds") for parent in ROOT.parents[:2]]
    for candidate in candidates:
        if candidate and (Path(candidate) / "README.md").is_file():
            return Path(candidate)
    return None


# ---------------------------------------------------------------------------------------------
# The pieces, as the seeds show them.


@dataclass(frozen=True)
class Piece:
    seed: str  # "000", "002", "003", "004"
    text: str


def piece(seed: str, text: str, indent: int = 0) -> Piece:
    """``text`` dedented, then indented by ``indent`` spaces (lines inside a function)."""
    return Piece(seed, textwrap.indent(textwrap.dedent(text).strip("\n"), " " * indent) + "\n")


def glue(text: str, indent: int = 0) -> Piece:
    """Lines not taken from a seed (each use says why)."""
    return piece("", text, indent)


# 002 "Basic Asyncio Integration": the application every other example assumes.
APP_002 = piece(
    "002",
    """
    async def app(scope, receive, send):
        \"\"\"Simple ASGI application\"\"\"
        await send({
            'type': 'http.response.start',
            'status': 200,
            'headers': [[b'content-type', b'text/plain']],
        })
        await send({
            'type': 'http.response.body',
            'body': b'Hello World',
        })
    """,
)
BASIC_MAIN_002 = piece(
    "002",
    """
    async def main():
        config = Config()
        config.bind = ["127.0.0.1:8000"]

        # Serve until manually stopped
        await serve(app, config)

    asyncio.run(main())
    """,
)
ASYNCIO_IMPORTS_002 = piece(
    "002",
    """
    import asyncio
    from hypercorn.config import Config
    from hypercorn.asyncio import serve
    """,
)
# 002 "WSGI Application Integration", without its imports (shared with the others).
WSGI_APP_002 = piece(
    "002",
    """
    def wsgi_app(environ, start_response):
        \"\"\"Simple WSGI application\"\"\"
        status = '200 OK'
        headers = [('Content-type', 'text/plain')]
        start_response(status, headers)
        return [b'Hello World']
    """,
)
WSGI_MAIN_002 = piece(
    "002",
    """
    async def main():
        config = Config()
        config.bind = ["127.0.0.1:8000"]

        # Serve WSGI app (mode auto-detected)
        await serve(wsgi_app, config)

    asyncio.run(main())
    """,
)
# 000 "API usage": the configuration every snippet of the page continues from.
CONFIG_000 = piece(
    "000",
    """
    from hypercorn.config import Config

    config = Config()
    config.bind = ["localhost:8080"]  # As an example configuration setting
    """,
)
# 002 "Trio Integration", after its imports and app.
TRIO_MAIN_002 = piece(
    "002",
    """
    async def main():
        config = Config()
        config.bind = ["127.0.0.1:8000"]

        async with trio.open_nursery() as nursery:
            # Start server in nursery
            nursery.start_soon(serve, app, config, task_status=trio.TASK_STATUS_IGNORED)

            # Server is now running - do other work
            await trio.sleep(60)  # Run for 60 seconds

            # Nursery cleanup will shutdown server

    trio.run(main)
    """,
)
# 004 "Quickstart".
QUICKSTART_004 = piece(
    "004",
    """
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
        config.bind = [f"0.0.0.0:{os.environ.get('PORT', '8000')}"]
        print(f"Serving on {config.bind[0]}...")
        await serve(app, config)
    if __name__ == '__main__':
        import os
        asyncio.run(main())
    """,
)
# What 000 assumes ("assuming you have an ASGI or WSGI framework instance called app").
PAGE_000 = [APP_002, CONFIG_000]


@dataclass(frozen=True)
class Example:
    name: str
    pieces: list[Piece]
    #: (seed text, what runs, why): fixes the seeds README allows.
    edits: list[tuple[str, str, str]] = field(default_factory=list)
    body: str = "Hello World"

    def script(self) -> str:
        source = "".join(p.text + "\n" for p in self.pieces)
        for old, new, _why in self.edits:
            assert source.count(old) == 1, old
            source = source.replace(old, new)
        return source


EXAMPLES = {
    example.name: example
    for example in [
        # 000 "using asyncio".
        Example(
            "000-asyncio",
            [
                *PAGE_000,
                piece(
                    "000",
                    """
                    import asyncio
                    from hypercorn.asyncio import serve

                    asyncio.run(serve(app, config))
                    """,
                ),
            ],
        ),
        # 000 "The same for Trio".
        Example(
            "000-trio",
            [
                *PAGE_000,
                piece(
                    "000",
                    """
                    import trio
                    from hypercorn.trio import serve

                    trio.run(serve, app, config)
                    """,
                ),
            ],
        ),
        # 000 "The same for uvloop".
        Example(
            "000-uvloop",
            [
                *PAGE_000,
                piece(
                    "000",
                    """
                    import asyncio

                    import uvloop
                    from hypercorn.asyncio import serve

                    uvloop.install()
                    asyncio.run(serve(app, config))
                    """,
                ),
            ],
        ),
        # 000 "Graceful shutdown", with "SSL Error reporting" installed on the same loop.
        Example(
            "000-graceful",
            [
                *PAGE_000,
                glue(
                    """
                    # GLUE: names the page imported in earlier snippets or uses unimported.
                    import ssl
                    from typing import Any
                    from hypercorn.asyncio import serve
                    """
                ),
                piece(
                    "000",
                    """
                    import asyncio
                    import signal

                    shutdown_event = asyncio.Event()

                    def signal_handler(*: Any) -> None:
                        shutdown_event.set()

                    loop = asyncio.get_event_loop()
                    loop.add_signal_handler(signal.SIGTERM, _signal_handler)
                    """,
                ),
                piece(
                    "000",
                    """
                    def _exception_handler(loop, context):
                        exception = context.get("exception")
                        if isinstance(exception, ssl.SSLError):
                            pass  # Handshake failure
                        else:
                            loop.default_exception_handler(context)

                    loop.set_exception_handler(_exception_handler)
                    """,
                ),
                piece(
                    "000",
                    """
                    loop.run_until_complete(
                        serve(app, config, shutdown_trigger=shutdown_event.wait)
                    )
                    """,
                ),
            ],
            edits=[
                (
                    "def signal_handler(*: Any) -> None:",
                    "def _signal_handler(*_: Any) -> None:",
                    "the seeds README: 000's `def signal_handler(*: Any)` is a typo",
                )
            ],
        ),
        # 000 "No signal handling" (on the loop of the previous snippet).
        Example(
            "000-no-signal-handling",
            [
                *PAGE_000,
                glue(
                    """
                    # GLUE: the page's earlier imports.
                    import asyncio
                    from hypercorn.asyncio import serve
                    """
                ),
                piece("000", "loop = asyncio.get_event_loop()"),
                piece(
                    "000",
                    """
                    loop.run_until_complete(
                        serve(app, config, shutdown_trigger=lambda: asyncio.Future())
                    )
                    """,
                ),
            ],
        ),
        # 002 "Basic Asyncio Integration": the example of issue 10 item 2.
        Example("002-basic", [ASYNCIO_IMPORTS_002, APP_002, BASIC_MAIN_002]),
        # 002 "Asyncio with Shutdown Trigger" (its `app` is the first example's).
        Example(
            "002-shutdown-trigger",
            [
                APP_002,
                piece(
                    "002",
                    """
                    import asyncio
                    import signal
                    from hypercorn.config import Config
                    from hypercorn.asyncio import serve

                    async def shutdown_trigger():
                        \"\"\"Wait for SIGTERM or SIGINT\"\"\"
                        shutdown_event = asyncio.Event()

                        def signal_handler():
                            shutdown_event.set()

                        loop = asyncio.get_event_loop()
                        loop.add_signal_handler(signal.SIGTERM, signal_handler)
                        loop.add_signal_handler(signal.SIGINT, signal_handler)

                        await shutdown_event.wait()

                    async def main():
                        config = Config()
                        config.bind = ["0.0.0.0:8000"]

                        # Serve with graceful shutdown on signals
                        await serve(app, config, shutdown_trigger=shutdown_trigger)

                    asyncio.run(main())
                    """,
                ),
            ],
        ),
        # 002 "Trio Integration".
        Example(
            "002-trio",
            [
                piece(
                    "002",
                    """
                    import trio
                    from hypercorn.config import Config
                    from hypercorn.trio import serve
                    """,
                ),
                APP_002,
                TRIO_MAIN_002,
            ],
            edits=[
                (
                    "nursery.start_soon(serve, app, config, task_status=trio.TASK_STATUS_IGNORED)",
                    "await nursery.start(serve, app, config)",
                    "the seeds README: start_soon cannot pass task_status; nursery.start does",
                )
            ],
        ),
        # 002 "Custom Shutdown Logic": the class, then its "Usage" run inside a loop.
        Example(
            "002-custom-shutdown",
            [
                APP_002,
                piece(
                    "002",
                    """
                    import asyncio
                    from hypercorn.config import Config
                    from hypercorn.asyncio import serve

                    class ServerManager:
                        def __init__(self):
                            self.shutdown_event = asyncio.Event()

                        async def start_server(self, app):
                            config = Config()
                            config.bind = ["0.0.0.0:8000"]

                            # Serve with custom shutdown trigger
                            await serve(app, config, shutdown_trigger=self.shutdown_event.wait)

                        def shutdown(self):
                            \"\"\"Trigger graceful shutdown\"\"\"
                            self.shutdown_event.set()
                    """,
                ),
                glue(
                    """
                    # GLUE: the "Usage" lines need a running loop ("In one task"), and "Later"
                    # is when the test sends SIGTERM.
                    import signal

                    async def later():
                        terminated = asyncio.Event()
                        loop = asyncio.get_running_loop()
                        loop.add_signal_handler(signal.SIGTERM, terminated.set)
                        await terminated.wait()

                    async def usage():
                    """
                ),
                piece(
                    "002",
                    """
                    # Usage
                    manager = ServerManager()

                    # In one task
                    asyncio.create_task(manager.start_server(app))
                    """,
                    indent=4,
                ),
                glue("await later()", indent=4),
                piece(
                    "002",
                    """
                    # Later, from another part of application
                    manager.shutdown()  # Triggers graceful shutdown
                    """,
                    indent=4,
                ),
                glue(
                    """
                    # GLUE: let the server task finish its graceful stop before the loop ends.
                    await asyncio.gather(*(asyncio.all_tasks() - {asyncio.current_task()}))
                    """,
                    indent=4,
                ),
                glue("asyncio.run(usage())"),
            ],
        ),
        # 002 "WSGI Application Integration" (mode auto-detected).
        Example("002-wsgi", [ASYNCIO_IMPORTS_002, WSGI_APP_002, WSGI_MAIN_002]),
        # 002 "Mixed ASGI/WSGI Mode": its two `serve` lines are alternatives ("# or").
        *[
            Example(
                f"002-mixed-{mode}",
                [
                    ASYNCIO_IMPORTS_002,
                    APP_002,
                    WSGI_APP_002,
                    piece(
                        "002",
                        """
                        async def main():
                            config = Config()
                            config.bind = ["127.0.0.1:8000"]

                            # Explicitly specify mode (useful for ambiguous applications)
                        """,
                    ),
                    piece("002", f'await serve({name}, config, mode="{mode}")', indent=4),
                    glue("asyncio.run(main())  # GLUE: the earlier examples' last line"),
                ],
            )
            for mode, name in (("asgi", "app"), ("wsgi", "wsgi_app"))
        ],
        # 003 "Programmatic Server Execution", and a variant serving in-process (workers = 0).
        *[
            Example(
                name,
                [
                    piece(
                        "003",
                        """
                    from hypercorn.config import Config
                    from hypercorn.run import run

                    # Create and configure server
                    config = Config()
                    config.bind = ["0.0.0.0:8000"]
                    config.workers = 4
                    config.worker_class = "asyncio"
                    """,
                    ),
                    glue(
                        """
                    # GLUE: the seed never says which application; app.py holds 002's.
                    config.application_path = "app:app"
                    """
                    ),
                    piece(
                        "003",
                        """
                    # Run the server
                    exit_code = run(config)
                    print(f"Server exited with code: {exit_code}")
                    """,
                    ),
                ],
                edits=edits,
            )
            for name, edits in (
                ("003-run", []),
                (
                    "003-run-in-process",
                    [("config.workers = 4", "config.workers = 0", "variant: no arbiter")],
                ),
            )
        ],
        # 004 "Quickstart".
        Example(
            "004-quickstart",
            [
                QUICKSTART_004,
            ],
            body="Hello, world!",
        ),
    ]
}

#: 003 "Command Line Usage" (the systemd unit's ExecStart is the second one).
COMMANDS_003 = {
    "basic": "hypercorn app:application",
    "workers": "hypercorn --bind 0.0.0.0:8000 --workers 4 app:application",
    "https": "hypercorn --certfile cert.pem --keyfile key.pem --bind 0.0.0.0:443 app:application",
    "reload": "hypercorn --reload --bind 127.0.0.1:8000 app:application",
    "production": """hypercorn \\
  --bind 0.0.0.0:8000 \\
  --workers 8 \\
  --worker-class uvloop \\
  --access-logfile access.log \\
  --error-logfile error.log \\
  --pid hypercorn.pid \\
  app:application""",
}


def _squash(text: str) -> str:
    return re.sub(r"\s+", "", text)


def test_pieces_are_verbatim() -> None:
    seeds = _seeds_dir()
    if seeds is None:
        pytest.skip("the seeds are not beside this checkout (set HYPERCORN_SEEDS)")
    texts: dict[str, str] = {}
    for path in seeds.glob("0*.txt"):
        text = path.read_text()
        if path.name.startswith("002"):
            # The rendering numbers every line: drop the number lines.
            text = "\n".join(line for line in text.splitlines() if not line.strip().isdigit())
        texts[path.name[:3]] = _squash(text)
    for example in EXAMPLES.values():
        for part in example.pieces:
            if part.seed:
                assert _squash(part.text) in texts[part.seed], (example.name, part.text)
    for command in COMMANDS_003.values():
        assert _squash(command) in texts["003"], command


# ---------------------------------------------------------------------------------------------
# Running them.

#: Puts the test's socket at fd 3 and names this very process in LISTEN_PID (exec keeps the
#: pid), as systemd does, then runs the example unchanged.
SHIM = (
    "import os, sys; fd = int(sys.argv[1]); fd == 3 or (os.dup2(fd, 3), os.close(fd)); "
    "os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS='1'); "
    "os.execv(sys.argv[2], sys.argv[2:])"
)


class Running:
    """One example process serving on the test's socket."""

    def __init__(self, argv: list[str], sock: socket.socket, cwd: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LISTEN_")}
        env.pop("PORT", None)
        env.pop("NOTIFY_SOCKET", None)
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        self.host, self.port = sock.getsockname()[:2]
        self.process = subprocess.Popen(
            [sys.executable, "-c", SHIM, str(sock.fileno()), *argv],
            cwd=cwd,
            env=env,
            pass_fds=(sock.fileno(),),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        sock.close()  # the example holds the only copy: its close is observable

    def get(self, *, scheme: str = "http", verify: ssl.SSLContext | bool = True) -> httpx.Response:
        # The socket already listens: the request waits in the backlog until the example's
        # server accepts it, so no readiness polling is needed.
        try:
            with httpx.Client(timeout=30, verify=verify) as client:
                return client.get(f"{scheme}://{self.host}:{self.port}/")
        except httpx.HTTPError as error:
            stdout, stderr = self.kill()
            raise AssertionError(f"{error!r}\nstdout:\n{stdout}\nstderr:\n{stderr}") from None

    def refused(self) -> bool:
        try:
            socket.create_connection((self.host, self.port), timeout=5).close()
        except (ConnectionRefusedError, ConnectionResetError):
            # (reset: the listener closed while this connection sat in its backlog)
            return True
        return False

    def stop(self, signum: int) -> tuple[int, str, str]:
        self.process.send_signal(signum)
        stdout, stderr = self.process.communicate(timeout=30)
        return self.process.returncode, stdout, stderr

    def kill(self) -> tuple[str, str]:
        if self.process.poll() is None:
            self.process.kill()
        return self.process.communicate(timeout=30)


@pytest.fixture
def start(bound_socket: socket.socket, tmp_path: Path) -> Iterator[list[Running]]:
    started: list[Running] = []
    yield started
    for running in started:
        running.kill()


def run_example(
    name: str, sock: socket.socket, cwd: Path, started: list[Running]
) -> tuple[Example, Running]:
    example = EXAMPLES[name]
    script = cwd / "example.py"
    script.write_text(example.script())
    (cwd / "app.py").write_text(APP_002.text)
    started.append(Running([sys.executable, str(script)], sock, cwd))
    return example, started[-1]


def lifespan_warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "does not support ASGI lifespan" in line]


def one_warning_per_worker(log: str) -> bool:
    """Each worker that booted said once that the app has no lifespan (the stop may come
    before every worker booted)."""
    pids = [re.findall(r"\[(\d+)\]", line)[0] for line in lifespan_warnings(log)]
    return len(pids) >= 1 and len(pids) == len(set(pids))


GRACEFUL = [
    ("000-asyncio", signal.SIGTERM),
    ("000-asyncio", signal.SIGINT),
    ("000-uvloop", signal.SIGTERM),
    ("000-graceful", signal.SIGTERM),
    ("002-basic", signal.SIGTERM),
    ("002-basic", signal.SIGINT),
    ("002-shutdown-trigger", signal.SIGINT),
    ("002-shutdown-trigger", signal.SIGTERM),
    ("002-custom-shutdown", signal.SIGTERM),
    ("002-wsgi", signal.SIGTERM),
    ("002-mixed-asgi", signal.SIGTERM),
    ("002-mixed-wsgi", signal.SIGTERM),
    ("004-quickstart", signal.SIGTERM),
]


@pytest.mark.parametrize(("name", "signum"), GRACEFUL)
def test_example_serves_and_stops_gracefully(
    start: list[Running], bound_socket: socket.socket, tmp_path: Path, name: str, signum: int
) -> None:
    if name == "000-uvloop":
        pytest.importorskip("uvloop")
    example, running = run_example(name, bound_socket, tmp_path, start)
    response = running.get()
    assert response.status_code == 200, running.kill()
    assert response.text == example.body
    returncode, stdout, stderr = running.stop(signum)
    assert returncode == 0, stderr
    assert "Traceback" not in stderr, stderr
    if "wsgi" in name:
        assert lifespan_warnings(stderr) == [], stderr  # the server answers for WSGI apps
    else:
        # The seeds' apps do not speak lifespan: the server says so once, and serves.
        assert len(lifespan_warnings(stderr)) == 1, stderr
    if name == "004-quickstart":
        assert stdout == "Serving on 0.0.0.0:8000...\n"


def test_no_signal_handling(
    start: list[Running], bound_socket: socket.socket, tmp_path: Path
) -> None:
    _, running = run_example("000-no-signal-handling", bound_socket, tmp_path, start)
    assert running.get().text == "Hello World"
    returncode, _, _ = running.stop(signal.SIGTERM)
    # No handler was installed, so SIGTERM's default action ended the process.
    assert returncode == -signal.SIGTERM


@pytest.mark.parametrize(
    "name", [pytest.param("003-run", marks=pytest.mark.slow), "003-run-in-process"]
)
def test_run(start: list[Running], bound_socket: socket.socket, tmp_path: Path, name: str) -> None:
    _, running = run_example(name, bound_socket, tmp_path, start)
    assert running.get().text == "Hello World"
    returncode, stdout, stderr = running.stop(signal.SIGTERM)
    assert returncode == 0, stderr
    assert stdout == "Server exited with code: 0\n"
    assert one_warning_per_worker(stderr), stderr


@TRIO_SKIP
def test_trio_run(start: list[Running], bound_socket: socket.socket, tmp_path: Path) -> None:
    _, running = run_example("000-trio", bound_socket, tmp_path, start)
    assert running.get().text == "Hello World"
    returncode, _, stderr = running.stop(signal.SIGTERM)
    assert returncode == 0, stderr
    assert "Traceback" not in stderr, stderr


@TRIO_SKIP
def test_trio_nursery(start: list[Running], bound_socket: socket.socket, tmp_path: Path) -> None:
    _, running = run_example("002-trio", bound_socket, tmp_path, start)
    assert running.get().text == "Hello World"
    # The example itself sleeps for 60 s whatever the server does; what it shows is that
    # the server stops serving on SIGTERM.
    running.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 30
    while not running.refused():
        assert time.monotonic() < deadline, "still accepting 30 s after SIGTERM"
    _, stderr = running.kill()
    assert "Traceback" not in stderr, stderr


# ---------------------------------------------------------------------------------------------
# 003's command lines.


def run_command(key: str, sock: socket.socket, cwd: Path, started: list[Running]) -> Running:
    argv = shlex.split(COMMANDS_003[key].replace("\\\n", " "))  # the shell's line joins
    assert argv[0] == "hypercorn"
    script = shutil.which("hypercorn", path=str(Path(sys.executable).parent))
    command = [script] if script is not None else [sys.executable, "-m", "hypercorn"]
    (cwd / "app.py").write_text(APP_002.text + "\n\napplication = app\n")
    started.append(Running([*command, *argv[1:]], sock, cwd))
    return started[-1]


COMMANDS = [
    pytest.param("basic", id="basic"),
    pytest.param("workers", marks=pytest.mark.slow, id="workers"),
    pytest.param("https", id="https"),
    pytest.param("reload", id="reload"),
    pytest.param("production", marks=pytest.mark.slow, id="production"),
]


@pytest.mark.parametrize("key", COMMANDS)
def test_command_line(
    start: list[Running], bound_socket: socket.socket, tmp_path: Path, key: str
) -> None:
    if key == "production":
        pytest.importorskip("uvloop")
    scheme, verify = "http", True
    if key == "https":
        trustme = pytest.importorskip("trustme")
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1")
        cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
        cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
        client_context = ssl.create_default_context()
        ca.configure_trust(client_context)
        scheme, verify = "https", client_context
    running = run_command(key, bound_socket, tmp_path, start)
    response = running.get(scheme=scheme, verify=verify)
    assert response.status_code == 200, running.kill()
    assert response.text == "Hello World"
    returncode, _, stderr = running.stop(signal.SIGTERM)
    assert returncode == 0, stderr
    assert "Traceback" not in stderr, stderr
    if key == "production":
        errors = (tmp_path / "error.log").read_text()
        assert one_warning_per_worker(errors), errors
        assert " 200 " in (tmp_path / "access.log").read_text()
        assert not (tmp_path / "hypercorn.pid").exists()  # removed on exit
    else:
        assert lifespan_warnings(stderr), stderr
