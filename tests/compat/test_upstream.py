"""Upstream Hypercorn 0.18 deployments, run unchanged against this server (issue 12).

Each test runs an upstream-style command line, config file or API call and asserts upstream's
documented outcome: socket owner, bound addresses, reload seen, parsed Config, exit status and
one-line errors. Where upstream's behaviour is only known by running it, the ``upstream``
fixture runs upstream Hypercorn 0.18 from its own venv and the two are compared directly.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.support.procs import APP_SOURCE, http_get, running, write_app

# ------------------------------------------------------------------------------ --reload


@pytest.fixture
def without_watchfiles(tmp_path: Path) -> dict[str, str]:
    """Environment for a server that cannot import watchfiles (the ``reload`` extra)."""
    shadow = tmp_path / "no-watchfiles" / "watchfiles"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('watchfiles is not installed')\n")
    return {"PYTHONPATH": str(shadow.parent)}


@pytest.mark.slow
def test_reload_without_watchfiles_sees_an_app_outside_the_working_directory(
    tmp_path: Path, bound_socket: socket.socket, without_watchfiles: dict[str, str]
) -> None:
    """`cd X; hypercorn --reload /other/app.py:app` reloads on edits to /other/app.py, with
    no extra installed (item 4)."""
    other = tmp_path / "other"
    elsewhere = tmp_path / "elsewhere"
    other.mkdir()
    elsewhere.mkdir()
    app_file = write_app(other)
    args = ["--reload", "--graceful-timeout", "1", f"{app_file}:app"]
    with running(args, cwd=elsewhere, sock=bound_socket, env=without_watchfiles) as server:
        server.wait_ready()
        assert http_get(server.port)[1].endswith("v1")
        assert "polling" in server.stderr()
        assert server.notify is not None
        app_file.write_text(APP_SOURCE.replace('VERSION = "v1"', 'VERSION = "v2"'))
        server.notify.wait_for("RELOADING=1")
        server.notify.wait_for("READY=1")
        assert http_get(server.port)[1].endswith("v2")
