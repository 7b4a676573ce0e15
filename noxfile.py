"""The interpreter matrix: ``make test-matrix`` runs mypy and pytest on every supported CPython.

Each interpreter gets its own venv under ``.nox/`` with the package (editable) and the
``all`` and ``test`` extras. Interpreters are found in pyenv's versions directory and on
``PATH`` (``scripts/interpreters.py``); nothing is ever downloaded. Which interpreters were
found is printed first; a missing one is skipped locally and fails the run in CI (``CI``
set; nox's default), so CI cannot pass on fewer versions than the package claims.

Lint, formatting and the settings-docs check do not depend on the interpreter: the Makefile
runs them once, on the default one.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import nox

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scripts.interpreters import SUPPORTED, put_pyenv_first_on_path

nox.options.sessions = ["tests"]
nox.options.download_python = "never"
# Venvs are kept between local runs (``pip install`` is quick when nothing changed);
# ``nox --reuse-venv=no`` rebuilds them.
nox.options.reuse_venv = "yes"

put_pyenv_first_on_path()
_FOUND = {v: shutil.which(f"python{v}") for v in SUPPORTED}
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
