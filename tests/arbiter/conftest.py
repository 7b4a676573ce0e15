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
