"""The interpreter matrix: ``make test-matrix`` runs mypy and pytest on every supported CPython.

Each interpreter gets its own venv under ``.nox/`` with the package (editable) and the
``all`` and ``test`` extras. Interpreters are found on ``PATH`` and in pyenv's versions
directory (``$PYENV_ROOT/versions/3.X.Y/bin``, default ``~/.pyenv``): a clean clone in CI has
neither a venv nor pyenv's versions on ``PATH``, and pyenv's shims only run the *active*
version. Nothing is ever downloaded. Which interpreters were found is printed first; a
missing one is skipped locally and fails the run in CI (``CI`` set; nox's default), so CI
cannot pass on fewer versions than the package claims.

Lint, formatting and the settings-docs check do not depend on the interpreter: the Makefile
runs them once, on the default one.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

import nox

#: The versions ``requires-python`` promises; CI fails if any is missing or fails.
SUPPORTED = ("3.10", "3.11", "3.12", "3.13")

nox.options.sessions = ["tests"]
nox.options.download_python = "never"
# Venvs are kept between local runs (``pip install`` is quick when nothing changed);
# ``nox --reuse-venv=no`` rebuilds them.
nox.options.reuse_venv = "yes"


def _pyenv_bins() -> dict[str, Path]:
    """``{"3.12": .../versions/3.12.1/bin}``: the newest CPython patch release per minor
    version installed under pyenv (no free-threaded ``t`` builds, no pyenv-virtualenvs)."""
    root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"
    best: dict[str, tuple[int, Path]] = {}
    try:
        entries = list(root.iterdir())
    except OSError:
        return {}
    for entry in entries:
        match = re.fullmatch(r"3\.(\d+)\.(\d+)", entry.name)
        if match is None:
            continue
        minor = f"3.{match[1]}"
        if not os.access(entry / "bin" / f"python{minor}", os.X_OK):
            continue
        patch = int(match[2])
        if minor not in best or patch > best[minor][0]:
            best[minor] = (patch, entry / "bin")
    return {minor: path for minor, (_, path) in best.items()}


def _locate() -> dict[str, str | None]:
    """Put pyenv's interpreters of the supported versions first on ``PATH`` (before its
    shims, which fail for an inactive version), and say where each version was found."""
    pyenv = _pyenv_bins()
    extra = [str(pyenv[v]) for v in SUPPORTED if v in pyenv]
    os.environ["PATH"] = os.pathsep.join([*extra, os.environ.get("PATH", "")])
    return {v: shutil.which(f"python{v}") for v in SUPPORTED}


_FOUND = _locate()
print(
    "test matrix: "
    + "; ".join(f"{v} at {path}" if path else f"{v} NOT FOUND" for v, path in _FOUND.items()),
    file=sys.stderr,
)


@nox.session(python=list(SUPPORTED))
def tests(session: nox.Session) -> None:
    """mypy (strict, for this interpreter's version) and the whole pytest suite."""
    session.install("--quiet", "-e", ".[all,test]")
    session.run("mypy", "--python-version", str(session.python))
    session.run("python", "-m", "pytest", "-q", "-p", "no:cacheprovider", *session.posargs)
