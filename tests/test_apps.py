"""Loading applications from "module:attr" paths, and telling ASGI 3, ASGI 2 and WSGI apart."""

from __future__ import annotations

import functools
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hypercorn.apps import ModedApp, app_kind, load_app
from hypercorn.errors import AppLoadError


@pytest.fixture
def app_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh working directory for app modules; sys.path and sys.modules restored after."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        del sys.modules[name]


def write(directory: Path, relative: str, source: str) -> Path:
    path = directory / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source))
    return path


ASGI_MODULE = """
    async def app(scope, receive, send):
        pass

    async def other(scope, receive, send):
        pass

    class Holder:
        async def inner(self, scope, receive, send):
            pass

    holder = Holder()

    def create_app(name="default", *, flag=False):
        async def created(scope, receive, send):
            pass
        created.name = name
        created.flag = flag
        return created
"""


def load_error(path: str) -> str:
    with pytest.raises(AppLoadError) as info:
        load_app(path)
    message = str(info.value)
    assert "\n" not in message, message
    assert info.value.exit_status == 4
    return message


# -- forms that load ------------------------------------------------------------------------


def test_module_alone_means_attribute_app(app_dir: Path) -> None:
    write(app_dir, "plainmod.py", ASGI_MODULE)
    app = load_app("plainmod")
    assert getattr(app, "__name__", None) == "app"


def test_module_and_attribute(app_dir: Path) -> None:
    write(app_dir, "attrmod.py", ASGI_MODULE)
    app = load_app("attrmod:other")
    assert getattr(app, "__name__", None) == "other"


def test_attribute_chain(app_dir: Path) -> None:
    write(app_dir, "chainmod.py", ASGI_MODULE)
    app = load_app("chainmod:holder.inner")
    assert getattr(app, "__name__", None) == "inner"


def test_factory_call_without_arguments(app_dir: Path) -> None:
    write(app_dir, "factorymod.py", ASGI_MODULE)
    app = load_app("factorymod:create_app()")
    assert getattr(app, "name", None) == "default"


def test_factory_call_with_literal_arguments(app_dir: Path) -> None:
    write(app_dir, "factoryargs.py", ASGI_MODULE)
    app = load_app("factoryargs:create_app('custom', flag=True)")
    assert getattr(app, "name", None) == "custom"
    assert getattr(app, "flag", None) is True


def test_dotted_package_module(app_dir: Path) -> None:
    write(app_dir, "pkgapp/__init__.py", "")
    write(app_dir, "pkgapp/web.py", ASGI_MODULE)
    app = load_app("pkgapp.web:other")
    assert getattr(app, "__name__", None) == "other"


def test_file_path_puts_its_directory_on_sys_path(app_dir: Path) -> None:
    write(app_dir, "sub/dir/fileapp.py", ASGI_MODULE)
    app = load_app("sub/dir/fileapp.py:app")
    assert getattr(app, "__name__", None) == "app"
    assert str((app_dir / "sub/dir").resolve()) in sys.path


def test_working_directory_is_put_on_sys_path(
    app_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(app_dir))])
    write(app_dir, "cwdmod.py", ASGI_MODULE)
    load_app("cwdmod:app")
    assert str(app_dir) in sys.path


@pytest.mark.parametrize("mode", ["asgi", "wsgi"])
def test_mode_prefix_returns_a_moded_app(app_dir: Path, mode: str) -> None:
    write(app_dir, f"mode{mode}.py", ASGI_MODULE)
    loaded = load_app(f"{mode}:mode{mode}:app")
    assert isinstance(loaded, ModedApp)
    assert loaded.mode == mode


# -- failures: always AppLoadError with one clear line -------------------------------------


def test_missing_module(app_dir: Path) -> None:
    assert load_error("nosuchmodule:app") == (
        "cannot import 'nosuchmodule:app': No module named 'nosuchmodule'"
    )


def test_missing_package_of_dotted_module(app_dir: Path) -> None:
    message = load_error("nosuchpkg.web:app")
    assert message == "cannot import 'nosuchpkg.web:app': No module named 'nosuchpkg'"


def test_missing_dependency_names_the_dependency_and_where(app_dir: Path) -> None:
    path = write(app_dir, "needsdep.py", "import not_installed_dependency_xyz\napp = None\n")
    message = load_error("needsdep:app")
    assert message.startswith("cannot import 'needsdep:app': ModuleNotFoundError: ")
    assert "No module named 'not_installed_dependency_xyz'" in message
    assert f"(at {path}:1)" in message


def test_syntax_error(app_dir: Path) -> None:
    path = write(app_dir, "badsyntax.py", "async def app(scope, receive, send):\n    return (\n")
    message = load_error("badsyntax:app")
    assert message.startswith("cannot import 'badsyntax:app': SyntaxError: ")
    assert message.endswith(f"(at {path}:2)")


def test_exception_while_importing(app_dir: Path) -> None:
    path = write(app_dir, "raising.py", "x = 1\nraise RuntimeError('database is down')\n")
    message = load_error("raising:app")
    assert message == (f"cannot import 'raising:app': RuntimeError: database is down (at {path}:2)")


def test_sys_exit_while_importing(app_dir: Path) -> None:
    write(app_dir, "exiting.py", "import sys\nsys.exit(3)\n")
    message = load_error("exiting:app")
    assert message.startswith("cannot import 'exiting:app': SystemExit: 3")


def test_missing_attribute(app_dir: Path) -> None:
    write(app_dir, "noattr.py", ASGI_MODULE)
    assert load_error("noattr:missing") == (
        "cannot load 'noattr:missing': module 'noattr' has no attribute 'missing'"
    )


def test_missing_attribute_in_chain(app_dir: Path) -> None:
    write(app_dir, "noattrchain.py", ASGI_MODULE)
    assert load_error("noattrchain:holder.nothing") == (
        "cannot load 'noattrchain:holder.nothing': 'holder' has no attribute 'nothing'"
    )


def test_factory_raises(app_dir: Path) -> None:
    path = write(
        app_dir,
        "badfactory.py",
        """
        def create_app():
            raise ValueError("missing SECRET_KEY")
        """,
    )
    message = load_error("badfactory:create_app()")
    assert message == (
        "cannot load 'badfactory:create_app()': create_app() raised "
        f"ValueError: missing SECRET_KEY (at {path}:3)"
    )


def test_not_callable(app_dir: Path) -> None:
    write(app_dir, "notcallable.py", "app = 42\n")
    assert load_error("notcallable:app") == (
        "cannot load 'notcallable:app': 'app' is not callable (got int)"
    )


@pytest.mark.parametrize(
    "expression", ["create_app(os.environ)", "app[0]", "lambda: 1", "a + b", "f()()"]
)
def test_expressions_other_than_names_and_literal_calls_are_refused(
    app_dir: Path, expression: str
) -> None:
    write(app_dir, "exprmod.py", ASGI_MODULE)
    message = load_error(f"exprmod:{expression}")
    assert message.startswith(f"invalid application path 'exprmod:{expression}'")


@pytest.mark.parametrize("path", ["", "  ", ":app", "module:"])
def test_malformed_paths(app_dir: Path, path: str) -> None:
    load_error(path)


def test_missing_file(app_dir: Path) -> None:
    assert load_error("nowhere/app.py:app") == (
        "cannot import 'nowhere/app.py:app': no such file 'nowhere/app.py'"
    )


# -- detection -------------------------------------------------------------------------------


async def asgi3_function(scope: Any, receive: Any, send: Any) -> None:
    pass


class ASGI3Object:
    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        pass


class ASGI2App:
    def __init__(self, scope: Any) -> None:
        self.scope = scope

    async def __call__(self, receive: Any, send: Any) -> None:
        pass


def wsgi_function(environ: Any, start_response: Any) -> list[bytes]:
    return []


class WSGIObject:
    def __call__(self, environ: Any, start_response: Any) -> list[bytes]:
        return []


class WSGIClass:
    def __init__(self, environ: Any, start_response: Any) -> None:
        pass

    def __iter__(self) -> Iterator[bytes]:
        return iter([])


def sync_asgi3(scope: Any, receive: Any, send: Any) -> Any:
    return asgi3_function(scope, receive, send)


@pytest.mark.parametrize(
    ("app", "kind"),
    [
        (asgi3_function, "asgi3"),
        (ASGI3Object(), "asgi3"),
        (functools.partial(asgi3_function), "asgi3"),
        (sync_asgi3, "asgi3"),
        (ASGI2App, "asgi2"),
        (wsgi_function, "wsgi"),
        (WSGIObject(), "wsgi"),
        (WSGIClass, "wsgi"),
        (ModedApp(asgi3_function, "wsgi"), "wsgi"),
    ],
)
def test_app_kind(app: object, kind: str) -> None:
    assert app_kind(app) == kind


def test_framework_apps_are_detected() -> None:
    flask = pytest.importorskip("flask")
    starlette_applications = pytest.importorskip("starlette.applications")
    fastapi = pytest.importorskip("fastapi")
    assert app_kind(flask.Flask("detect")) == "wsgi"
    assert app_kind(starlette_applications.Starlette()) == "asgi3"
    assert app_kind(fastapi.FastAPI()) == "asgi3"
