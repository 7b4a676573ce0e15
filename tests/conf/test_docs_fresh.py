"""docs/settings.md is generated from the registry; it must match the generator's output."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

from hypercorn.conf.setting import settings

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gen_settings_docs.py"


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_settings_docs", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_docs_match_registry() -> None:
    expected = _generator().render()
    current = (ROOT / "docs" / "settings.md").read_text(encoding="utf-8")
    assert current == expected, "docs/settings.md is stale: run python scripts/gen_settings_docs.py"


def test_every_setting_and_flag_is_documented() -> None:
    text = _generator().render()
    for setting in settings():
        assert f"### `{setting.name}`" in text
        for flag in setting.cli_flags:
            assert f"`{flag}`" in text


def test_check_mode_exit_status() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stdout
