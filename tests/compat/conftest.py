"""Fixtures and helpers for the upstream-compatibility tests: upstream Hypercorn 0.18 in its
own venv, and this server's CLI run to completion.

Upstream is installed the way bench/ installs its peers (``bench/run.py``'s ``ensure_env``:
``bench/.peers/hypercorn/``, git-ignored, reused while its pinned requirements are unchanged),
never into the project's .venv where it would shadow this package. When it cannot be
installed (no package index), the tests that compare against it skip and say why.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _bench_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("hypercorn_bench_run", ROOT / "bench" / "run.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)
    spec.loader.exec_module(module)
    return module


class Upstream:
    """Runs Python snippets with upstream Hypercorn importable (and nothing of ours)."""

    def __init__(self, python: Path, version: str) -> None:
        self.python = python
        self.version = version
        self.bin = python.parent

    def run_json(self, code: str, *, cwd: Path | None = None, timeout: float = 30) -> Any:
        """Run ``code`` (which prints one JSON document last) and return what it printed.

        Isolated mode (``-I``): neither the working directory nor PYTHONPATH can put this
        project's ``hypercorn`` in front of upstream's."""
        result = subprocess.run(
            [str(self.python), "-I", "-c", textwrap.dedent(code)],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout.strip().splitlines()[-1])


def hypercorn_cli(
    args: list[str], *, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m hypercorn ARGS`` run to completion (for commands that must not serve)."""
    return subprocess.run(
        [sys.executable, "-m", "hypercorn", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.fixture(scope="session")
def upstream() -> Upstream:
    bench = _bench_module()
    try:
        versions = bench.ensure_env("hypercorn", bench.RUNNING, install=True)
    except (bench.SetupError, OSError) as exc:  # not AttributeError: a renamed API must fail
        pytest.skip(f"cannot install upstream Hypercorn for comparison: {exc}")
    python = bench.env_bin("hypercorn", bench.RUNNING) / "python"
    version = versions.get("hypercorn", "missing")
    assert version.startswith("0.18"), f"expected upstream Hypercorn 0.18, found {version}"
    found = Upstream(python, version)
    # Our version string is upstream's too: make sure the package is really upstream's.
    where = found.run_json("import hypercorn, json; print(json.dumps(hypercorn.__file__))")
    assert Path(where).is_relative_to(python.parent.parent), where
    return found
