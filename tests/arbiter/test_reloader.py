"""The --reload watcher: watchfiles when installed, polling otherwise; what it watches."""

from __future__ import annotations

import os
import selectors
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from hypercorn.apps import source_roots
from hypercorn.arbiter.reloader import POLL_INTERVAL, Reloader


@pytest.fixture(params=["polling", "watchfiles"])
def mechanism(request: pytest.FixtureRequest) -> str:
    if request.param == "watchfiles":
        pytest.importorskip("watchfiles")
    return str(request.param)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "views.py").write_text("A = 1\n")
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / ".git").mkdir()
    (tmp_path / "venv").mkdir()
    (tmp_path / "venv" / "pyvenv.cfg").write_text("home = /usr\n")
    (tmp_path / "notes.txt").write_text("")
    return tmp_path


def _start(directories: list[Path], mechanism: str, extra: Sequence[Path] = ()) -> Reloader:
    reloader = Reloader(
        [str(d) for d in directories],
        [str(f) for f in extra],
        use_watchfiles=mechanism == "watchfiles",
    )
    assert reloader.mechanism == mechanism
    reloader.start()
    return reloader


@pytest.fixture
def selector() -> Iterator[selectors.DefaultSelector]:
    with selectors.DefaultSelector() as sel:
        yield sel


def _changes(reloader: Reloader, sel: selectors.DefaultSelector, timeout: float) -> set[str]:
    """Wait (bounded) for the reloader's pipe; return what it reports."""
    sel.register(reloader.fileno(), selectors.EVENT_READ)
    try:
        if not sel.select(timeout):
            return set()
        return set(reloader.drain())
    finally:
        sel.unregister(reloader.fileno())


def _edit_until_seen(
    reloader: Reloader, sel: selectors.DefaultSelector, path: Path, timeout: float = 10.0
) -> set[str]:
    """Write ``path`` until the reloader reports it (bounded). watchfiles' thread starts
    watching some time after ``start()`` and has no readiness signal, so one early edit may
    land before it watches."""
    deadline = time.monotonic() + timeout
    attempt = 0
    while time.monotonic() < deadline:
        attempt += 1
        path.write_text(f"EDIT = {attempt}\n")
        seen = _changes(reloader, sel, 1.0)
        if str(path) in seen:
            return seen
    raise AssertionError(f"{path} was never reported")


def test_a_source_edit_is_reported(
    tree: Path, mechanism: str, selector: selectors.DefaultSelector
) -> None:
    reloader = _start([tree], mechanism)
    try:
        _edit_until_seen(reloader, selector, tree / "pkg" / "views.py")
        _edit_until_seen(reloader, selector, tree / "pkg" / "new.py")
    finally:
        reloader.close()


def test_ignored_places_are_not_reported(
    tree: Path, mechanism: str, selector: selectors.DefaultSelector
) -> None:
    reloader = _start([tree], mechanism)
    try:
        _edit_until_seen(reloader, selector, tree / "pkg" / "views.py")  # watching now
        for ignored in (
            tree / "__pycache__" / "views.py",
            tree / ".git" / "hook.py",
            tree / "venv" / "lib.py",
            tree / "notes.txt",
        ):
            ignored.write_text("x = 1\n")
        # Several poll intervals: nothing to report.
        assert _changes(reloader, selector, POLL_INTERVAL * 4) == set()
        assert _edit_until_seen(reloader, selector, tree / "pkg" / "views.py") == {
            str(tree / "pkg" / "views.py")
        }
    finally:
        reloader.close()


def test_extra_files_are_watched_whatever_their_suffix(
    tmp_path: Path, mechanism: str, selector: selectors.DefaultSelector
) -> None:
    config_file = tmp_path / "conf" / "hypercorn.toml"
    config_file.parent.mkdir()
    config_file.write_text("workers = 1\n")
    reloader = _start([tmp_path / "src"], mechanism, [config_file])
    try:
        assert reloader.missing == [str(tmp_path / "src")]
        _edit_until_seen(reloader, selector, config_file)
    finally:
        reloader.close()


def test_polling_needs_no_watchfiles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "watchfiles", None)  # "import watchfiles" fails
    reloader = Reloader([str(tmp_path)])
    try:
        assert reloader.mechanism == "polling"
    finally:
        reloader.close()
    with pytest.raises(ImportError):
        Reloader([str(tmp_path)], use_watchfiles=True)


def test_nested_directories_are_scanned_once(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    reloader = Reloader([str(tmp_path / "a"), str(tmp_path)], use_watchfiles=False)
    try:
        assert reloader.directories == [str(tmp_path)]
    finally:
        reloader.close()


# ------------------------------------------------------------------------------ source roots


def test_source_root_of_a_file_path_is_its_directory(tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    (other / "app.py").write_text("app = None\n")
    assert source_roots(f"{other / 'app.py'}:app") == [str(other)]
    assert source_roots(f"wsgi:{other / 'app.py'}:app") == [str(other)]


def test_source_root_of_a_module_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "main.py").write_text("app = None\n")
    monkeypatch.chdir(tmp_path)
    assert source_roots("pkg.main:app") == [str(tmp_path)]
    assert source_roots("missing:app") == [str(tmp_path)]


def test_source_root_of_an_installed_package_is_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    import h11

    assert source_roots("h11:app") == [os.path.dirname(h11.__file__)]
