"""Loading the user's application and adapting it to the one ASGI 3 shape the worker runs.

``load_app("module:attr")`` imports and resolves the application; every way that can fail
becomes an ``AppLoadError`` whose message is one line naming the path, what went wrong and,
for exceptions raised by the user's code, where (``file:line``). The CLI prints that line and
exits with status 4; the arbiter halts instead of respawning a worker that can never boot.

``wrap_app(app, config, backend, mode)`` detects ASGI 3, ASGI 2 (a class taking the scope)
and WSGI (two positional parameters, not a coroutine function), as upstream Hypercorn does,
and returns an ASGI 3 callable. ``mode`` ("asgi" / "wsgi") overrides the detection.
"""

from __future__ import annotations

import ast
import importlib.machinery
import inspect
import os
import sys
import traceback
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from types import ModuleType, TracebackType
from typing import TYPE_CHECKING, Any, Literal, cast

from hypercorn.errors import AppLoadError
from hypercorn.typing import ASGIApp, ASGIReceive, ASGISend, WSGIApp

if TYPE_CHECKING:
    from hypercorn.config import Config
    from hypercorn.workers.backend import Backend

__all__ = ["AppKind", "ModedApp", "app_kind", "load_app", "source_roots", "wrap_app"]

Mode = Literal["asgi", "wsgi"]
AppKind = Literal["asgi3", "asgi2", "wsgi"]


@dataclass(frozen=True)
class ModedApp:
    """An application loaded from ``"asgi:module:app"`` / ``"wsgi:module:app"`` (upstream's
    mode prefix): ``wrap_app`` uses ``mode`` unless the caller forces another one."""

    app: object
    mode: Mode


# ---------------------------------------------------------------------------------------------
# Loading


def load_app(path: str) -> object:
    """Import and return the application named by ``path``.

    Accepted forms: ``module`` (attribute ``app``), ``module:attr``, ``module:obj.attr``,
    ``module:factory()`` / ``module:factory("arg", key=1)`` (literal arguments only),
    ``path/to/file.py:attr``, and upstream's ``asgi:``/``wsgi:`` prefixes (which return a
    ``ModedApp``). The directory holding the module (the working directory for a plain
    module name) is put first on ``sys.path``, as upstream does.
    """
    mode, module_name, expression = _split_path(path)
    tree = _parse_expression(path, expression)
    module = _import(path, module_name)
    app = _evaluate(path, module, tree)
    if not callable(app):
        raise AppLoadError(
            f"cannot load {path!r}: {expression!r} is not callable (got {type(app).__name__})"
        )
    return app if mode is None else ModedApp(app, mode)


def _split_path(path: str) -> tuple[Mode | None, str, str]:
    if not path or not path.strip():
        raise AppLoadError("no application given: expected 'module:app'")
    mode: Mode | None = None
    rest = path
    head, sep, tail = path.partition(":")
    if sep and head in ("asgi", "wsgi") and tail:
        mode = cast(Mode, head)
        rest = tail
    module_name, sep, expression = rest.partition(":")
    if not sep:
        expression = "app"
    if not module_name or not expression:
        raise AppLoadError(f"invalid application path {path!r}: expected 'module:app'")
    return mode, module_name, expression


def _parse_expression(path: str, expression: str) -> ast.expr:
    try:
        tree = ast.parse(expression.strip(), mode="eval").body
    except SyntaxError:
        tree = None
    if tree is None or not _allowed(tree):
        raise AppLoadError(
            f"invalid application path {path!r}: after ':' expected a name, a dotted name "
            "or a call with literal arguments such as 'create_app()'"
        )
    return tree


def _allowed(node: ast.expr) -> bool:
    if isinstance(node, ast.Name):
        return True
    if isinstance(node, ast.Attribute):
        return _allowed(node.value)
    if isinstance(node, ast.Call):
        if not _allowed(node.func) or isinstance(node.func, ast.Call):
            return False
        arguments = [*node.args, *(keyword.value for keyword in node.keywords)]
        if any(keyword.arg is None for keyword in node.keywords):
            return False
        return all(_is_literal(argument) for argument in arguments)
    return False


def _is_literal(node: ast.expr) -> bool:
    try:
        ast.literal_eval(node)
    except ValueError:
        return False
    return True


def _import(path: str, module_name: str) -> ModuleType:
    module_path = Path(module_name)
    if module_path.suffix == ".py" or len(module_path.parts) > 1:
        resolved = module_path.resolve()
        directory = str(resolved.parent)
        import_name = resolved.stem if resolved.suffix == ".py" else resolved.name
        if resolved.suffix == ".py" and not resolved.is_file():
            raise AppLoadError(f"cannot import {path!r}: no such file {str(module_path)!r}")
    else:
        directory = str(Path.cwd())
        import_name = module_name
    if directory not in sys.path:
        sys.path.insert(0, directory)
    try:
        return import_module(import_name)
    except ModuleNotFoundError as error:
        if error.name is not None and _is_own_module(import_name, error.name):
            denied = _unreadable(directory, import_name)
            if denied is not None:
                raise AppLoadError(
                    f"cannot import {path!r}: permission denied: {denied} cannot be read by "
                    f"{_current_user()}"
                ) from None
            raise AppLoadError(f"cannot import {path!r}: No module named {error.name!r}") from None
        raise AppLoadError(f"cannot import {path!r}: {_describe(error)}") from None
    except PermissionError as error:
        where = error.filename or directory
        raise AppLoadError(
            f"cannot import {path!r}: permission denied: {where} cannot be read by "
            f"{_current_user()}"
        ) from None
    except SyntaxError as error:
        where = f" (at {error.filename}:{error.lineno})" if error.filename else ""
        text = " ".join(str(error.msg).split())
        raise AppLoadError(
            f"cannot import {path!r}: {type(error).__name__}: {text}{where}"
        ) from None
    except (Exception, SystemExit) as error:
        raise AppLoadError(f"cannot import {path!r}: {_describe(error)}") from None


def source_roots(path: str) -> list[str]:
    """Where the application named by ``path`` keeps its own code, without importing it.

    For ``--reload``: the directory ``load_app`` imports from (the file's directory for
    ``dir/app.py:app``, the working directory for ``module:app``) when the module is found
    there; otherwise, for a module installed elsewhere, its package directory (or its file).
    """
    try:
        _, module_name, _ = _split_path(path)
    except AppLoadError:
        return [str(Path.cwd())]
    module_path = Path(module_name)
    if module_path.suffix == ".py" or len(module_path.parts) > 1:
        return [str(module_path.resolve().parent)]
    directory = str(Path.cwd())
    top = module_name.split(".")[0]
    if importlib.machinery.PathFinder.find_spec(top, [directory]) is not None:
        return [directory]
    spec = importlib.machinery.PathFinder.find_spec(top, sys.path)
    if spec is None:
        return [directory]
    if spec.submodule_search_locations:
        return list(spec.submodule_search_locations)
    return [spec.origin] if spec.origin else [directory]


def _unreadable(directory: str, import_name: str) -> str | None:
    """The path that hides the module from this process for lack of permission, if any
    (the import system reports such a module as missing)."""
    if not os.access(directory, os.R_OK | os.X_OK):
        return directory
    top = import_name.split(".")[0]
    for candidate in (os.path.join(directory, top), os.path.join(directory, f"{top}.py")):
        if os.path.exists(candidate) and not os.access(candidate, os.R_OK):
            return candidate
    return None


def _current_user() -> str:
    uid = os.getuid()
    try:
        import pwd

        return f"user {pwd.getpwuid(uid).pw_name!r} (uid {uid})"
    except (ImportError, KeyError):
        return f"uid {uid}"


def _is_own_module(import_name: str, missing: str) -> bool:
    # "pkg.app" where "pkg" (or "pkg.app") itself is missing, not something it imports.
    return import_name == missing or import_name.startswith(missing + ".")


def _evaluate(path: str, module: ModuleType, node: ast.expr) -> object:
    if isinstance(node, ast.Name):
        try:
            return getattr(module, node.id)
        except AttributeError:
            raise AppLoadError(
                f"cannot load {path!r}: module {module.__name__!r} has no attribute {node.id!r}"
            ) from None
    if isinstance(node, ast.Attribute):
        owner = _evaluate(path, module, node.value)
        try:
            return getattr(owner, node.attr)
        except AttributeError:
            raise AppLoadError(
                f"cannot load {path!r}: {ast.unparse(node.value)!r} has no attribute {node.attr!r}"
            ) from None
        except Exception as error:
            raise AppLoadError(f"cannot load {path!r}: {_describe(error)}") from None
    assert isinstance(node, ast.Call)
    factory = _evaluate(path, module, node.func)
    name = ast.unparse(node.func)
    if not callable(factory):
        raise AppLoadError(
            f"cannot load {path!r}: {name!r} is not callable (got {type(factory).__name__})"
        )
    args = [ast.literal_eval(argument) for argument in node.args]
    kwargs = {kw.arg: ast.literal_eval(kw.value) for kw in node.keywords if kw.arg is not None}
    try:
        return factory(*args, **kwargs)
    except (Exception, SystemExit) as error:
        raise AppLoadError(f"cannot load {path!r}: {name}() raised {_describe(error)}") from None


def _describe(error: BaseException) -> str:
    """``Type: message (at file:line)`` on one line, the location being the innermost frame."""
    text = _one_line(error)
    location = _location(error.__traceback__)
    return (
        f"{type(error).__name__}: {text}{location}" if text else f"{type(error).__name__}{location}"
    )


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


def _location(tb: TracebackType | None) -> str:
    frames = [
        frame for frame in traceback.extract_tb(tb) if not frame.filename.startswith("<frozen ")
    ]
    if not frames:
        return ""
    frame = frames[-1]
    return f" (at {frame.filename}:{frame.lineno})"


# ---------------------------------------------------------------------------------------------
# Detection and wrapping


def app_kind(app: object) -> AppKind:
    """Classify ``app`` as ``"asgi3"``, ``"asgi2"`` or ``"wsgi"`` (upstream's rules).

    A class is ASGI 2 if its constructor takes the scope alone, WSGI if it takes
    ``(environ, start_response)``. A coroutine function (or an object whose ``__call__`` is
    one) is ASGI 3. Otherwise the number of positional parameters decides: three is ASGI 3
    (a sync callable returning an awaitable), two is WSGI, one is ASGI 2; anything else is
    treated as WSGI, as upstream does.
    """
    if isinstance(app, ModedApp):
        return "wsgi" if app.mode == "wsgi" else app_kind(app.app)
    if inspect.isclass(app):
        return "wsgi" if _positional_count(app) >= 2 else "asgi2"
    if _is_coroutine_callable(app):
        return "asgi3"
    count = _positional_count(app)
    if count == 3:
        return "asgi3"
    if count == 1:
        return "asgi2"
    return "wsgi"


def _is_coroutine_callable(app: object) -> bool:
    if inspect.iscoroutinefunction(app):
        return True
    call = getattr(app, "__call__", None)  # noqa: B004 - we want the bound __call__ itself
    return call is not None and inspect.iscoroutinefunction(call)


def _positional_count(app: object) -> int:
    try:
        signature = inspect.signature(cast(Callable[..., Any], app))
    except (TypeError, ValueError):
        return -1
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    parameters = signature.parameters.values()
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in parameters):
        return -1
    return sum(1 for p in parameters if p.kind in kinds)


def wrap_app(app: object, config: Config, backend: Backend, mode: Mode | None = None) -> ASGIApp:
    """Return ``app`` as an ASGI 3 callable the worker can run.

    ``mode`` forces "asgi" or "wsgi"; otherwise a ``ModedApp``'s mode, otherwise detection
    (``app_kind``). WSGI applications are wrapped in the thread-pool bridge
    (``hypercorn.workers.wsgi_bridge.WSGIBridge``) running on ``backend.run_sync``.
    """
    if isinstance(app, ModedApp):
        mode = mode or app.mode
        app = app.app
    if mode is not None and mode not in ("asgi", "wsgi"):
        raise AppLoadError(f"invalid mode {mode!r}: expected 'asgi' or 'wsgi'")
    if not callable(app):
        raise AppLoadError(f"the application is not callable (got {type(app).__name__})")
    kind = app_kind(app)
    if mode == "wsgi" or (mode is None and kind == "wsgi"):
        from hypercorn.workers.wsgi_bridge import WSGIBridge

        return WSGIBridge(cast(WSGIApp, app), backend, config.wsgi_max_body_size, config.header_map)
    if kind == "asgi2":
        return _ASGI2Adapter(cast(Callable[[Any], Any], app))
    return cast(ASGIApp, app)


class _ASGI2Adapter:
    """Runs an ASGI 2 ("double callable") application as ASGI 3."""

    __slots__ = ("app",)

    def __init__(self, app: Callable[[Any], Any]) -> None:
        self.app = app

    async def __call__(
        self, scope: MutableMapping[str, Any], receive: ASGIReceive, send: ASGISend
    ) -> None:
        asgi = dict(scope.get("asgi") or {})
        asgi["version"] = "2.0"
        scope["asgi"] = asgi
        instance = cast(Callable[[ASGIReceive, ASGISend], Awaitable[None]], self.app(scope))
        await instance(receive, send)
