"""Fixtures for the arbiter's process tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.procs import write_app


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    """A directory holding ``app.py`` (see ``tests.support.procs.APP_SOURCE``)."""
    write_app(tmp_path)
    return tmp_path


@pytest.fixture(params=["asyncio", "trio"])
def worker_args(request: pytest.FixtureRequest) -> list[str]:
    """``-k`` for the tests that run on each worker class (the default is asyncio)."""
    return ["-k", str(request.param)]
