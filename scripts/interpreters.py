"""Where this machine's CPython interpreters are, for the test matrix and the benchmarks.

Standard library only: ``noxfile.py`` and ``bench/`` both use it. pyenv's versions come first
(``$PYENV_ROOT/versions/3.X.Y/bin``, default ``~/.pyenv``): CI's clean clone has no venv and
may not have them on ``PATH``, and pyenv's shims on ``PATH`` only run the *active* version
(for any other they exit with an error), so a shim is never taken for an interpreter.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

#: The versions ``requires-python`` promises; the matrix runs the suite on each.
SUPPORTED = ("3.10", "3.11", "3.12", "3.13")


def pyenv_bins() -> dict[str, Path]:
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


def find_python(version: str) -> str | None:
    """The ``pythonX.Y`` executable for ``version`` ("3.13"), or None."""
    pyenv = pyenv_bins()
    if version in pyenv:
        return str(pyenv[version] / f"python{version}")
    found = shutil.which(f"python{version}")
    if found is None or Path(found).parent.name == "shims":
        return None
    return found


def put_pyenv_first_on_path(versions: tuple[str, ...] = SUPPORTED) -> None:
    """Put pyenv's bin directories of ``versions`` first on ``PATH`` (before its shims), so
    tools that search ``PATH`` for ``pythonX.Y`` (nox) find them."""
    pyenv = pyenv_bins()
    extra = [str(pyenv[v]) for v in versions if v in pyenv]
    os.environ["PATH"] = os.pathsep.join([*extra, os.environ.get("PATH", "")])
