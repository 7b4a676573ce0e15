"""Layering guard (AST): event-loop libraries only where the architecture allows them.

* asyncio / trio / uvloop / anyio: only in ``hypercorn/workers/*_backend.py`` and the thin
  public ``hypercorn/asyncio/`` and ``hypercorn/trio/`` packages. Everything else (driver,
  serve, lifespan, WSGI bridge, protocols, arbiter) is written once against ``Backend``.
* ``hypercorn/protocols/``, ``hypercorn/conf/`` and the arbiter's pure core also never
  import socket or selectors; they and the arbiter core never read the clock (no ``time``).

Imports are found anywhere in a module (including inside functions and ``TYPE_CHECKING``
blocks), so a lazy import cannot slip through.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "hypercorn"

LOOP_LIBRARIES = frozenset({"asyncio", "trio", "uvloop", "anyio"})
IO_MODULES = frozenset({"socket", "selectors"})
CLOCK_MODULES = frozenset({"time"})


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def imported_roots(path: Path) -> Iterator[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module.split(".")[0]
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "__import__"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ) or (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            yield node.lineno, node.args[0].value.split(".")[0]


def relative(path: Path) -> str:
    return path.relative_to(PACKAGE.parent).as_posix()


def loop_library_allowed(rel: str) -> bool:
    if rel.startswith(("hypercorn/asyncio/", "hypercorn/trio/")):
        return True
    return rel.startswith("hypercorn/workers/") and rel.endswith("_backend.py")


#: The arbiter's sans-IO brain: observations in, commands out, no I/O and no clock.
PURE_ARBITER = {
    f"hypercorn/arbiter/{name}.py" for name in ("core", "signal_table", "state", "messages")
}


def is_pure_layer(rel: str) -> bool:
    return rel.startswith(("hypercorn/protocols/", "hypercorn/conf/")) or rel in PURE_ARBITER


def takes_time_as_input(rel: str) -> bool:
    return rel.startswith("hypercorn/protocols/") or rel in PURE_ARBITER


@pytest.mark.parametrize("path", modules(), ids=relative)
def test_layering(path: Path) -> None:
    rel = relative(path)
    problems = []
    for lineno, root in imported_roots(path):
        if root in LOOP_LIBRARIES and not loop_library_allowed(rel):
            problems.append(f"{rel}:{lineno} imports {root} (only backends may)")
        if root in IO_MODULES and is_pure_layer(rel):
            problems.append(f"{rel}:{lineno} imports {root} (this layer does no I/O)")
        if root in CLOCK_MODULES and takes_time_as_input(rel):
            problems.append(f"{rel}:{lineno} imports {root} (the core takes `now` as input)")
    assert not problems, "\n".join(problems)


def test_guard_sees_the_package() -> None:
    rels = {relative(path) for path in modules()}
    assert "hypercorn/protocols/http1/connection.py" in rels
    assert "hypercorn/workers/driver.py" in rels


def test_guard_catches_lazy_imports(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text(
        "def f():\n    import asyncio\n    from trio import lowlevel\n"
        "    __import__('uvloop')\n    importlib.import_module('anyio.abc')\n"
    )
    assert {root for _, root in imported_roots(source)} == LOOP_LIBRARIES
