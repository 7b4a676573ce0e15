"""Headless Chromium (Debian's ``chromium``) driven over the DevTools protocol, for e2e tests.

The browser starts with a fresh profile in a temp dir and ``--remote-debugging-port=0``: it
picks its own port and writes it to ``DevToolsActivePort`` in the profile, so nothing is
guessed. ``Browser.evaluate`` opens a page and awaits a JavaScript promise in it (the
protocol's ``Runtime.evaluate`` with ``awaitPromise``), bounded by a deadline. The browser is
killed by pid at the end, with every process it started.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect

from tests.support.procs import children_of, wait_for

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    # The test's certificate is from its own CA: acceptable for loopback only.
    "--ignore-certificate-errors",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
)
START_TIMEOUT = 30.0


def skip_reason() -> str | None:
    if CHROMIUM is None:
        return "chromium is not installed (.ci/run installs Debian's chromium with apt-get)"
    return None


class Browser:
    """One DevTools connection to the browser; see the module docstring."""

    def __init__(self, connection: ClientConnection) -> None:
        self._connection = connection
        self._ids = itertools.count(1)

    def call(
        self, method: str, session: str | None = None, wait: float = 30.0, **params: Any
    ) -> dict[str, Any]:
        """Send one DevTools command (to the page ``session``, or the browser) and return its
        result; ``wait`` bounds the wait for the reply."""
        message_id = next(self._ids)
        message: dict[str, Any] = {"id": message_id, "method": method, "params": params}
        if session is not None:
            message["sessionId"] = session
        self._connection.send(json.dumps(message))
        while True:  # (events arrive too: skip them)
            reply = json.loads(self._connection.recv(timeout=wait))
            if reply.get("id") == message_id:
                if "error" in reply:
                    raise AssertionError(f"{method}: {reply['error']}")
                result: dict[str, Any] = reply["result"]
                return result

    def evaluate(self, url: str, expression: str, timeout: float = 30.0) -> Any:
        """Open ``url`` in a new tab and return the value ``expression`` (a promise, awaited;
        it may refer to what the page defines once loaded) comes to."""
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        navigated = self.call("Page.navigate", session, url=url)
        assert "errorText" not in navigated, navigated
        # (Evaluated in the new document; until the page has defined what the expression
        # names, it is undefined or throws: try again, bounded.)
        waited = f"""new Promise((resolve, reject) => {{
            const started = Date.now();
            const attempt = () => {{
                let value;
                try {{ value = {expression}; }} catch (error) {{ value = undefined; }}
                if (value !== undefined) resolve(value);
                else if (Date.now() - started > {timeout * 1000}) reject(new Error("timeout"));
                else setTimeout(attempt, 50);
            }};
            attempt();
        }})"""
        reply = self.call(
            "Runtime.evaluate",
            session,
            timeout + 5,
            expression=waited,
            awaitPromise=True,
            returnByValue=True,
            timeout=timeout * 1000,
        )
        if "exceptionDetails" in reply:
            raise AssertionError(f"the page failed: {reply['exceptionDetails']}")
        return reply["result"].get("value")


@contextlib.contextmanager
def running_browser(profile: Path) -> Iterator[Browser]:
    assert CHROMIUM is not None
    profile.mkdir(parents=True, exist_ok=True)
    log = open(profile.parent / "chromium.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:

        def endpoint() -> str | None:
            assert process.poll() is None, (profile.parent / "chromium.log").read_text()
            lines = (
                (profile / "DevToolsActivePort").read_text().split()
                if (profile / "DevToolsActivePort").exists()
                else []
            )
            return f"ws://127.0.0.1:{lines[0]}{lines[1]}" if len(lines) == 2 else None

        url = wait_for(endpoint, START_TIMEOUT, "chromium's DevTools endpoint")
        with ws_connect(url, max_size=None, open_timeout=START_TIMEOUT) as connection:
            yield Browser(connection)
    finally:
        pids = {process.pid, *children_of(process.pid)}
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # (its own group: every helper process)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        process.wait(10)
        log.close()
