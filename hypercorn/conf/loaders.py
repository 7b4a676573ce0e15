"""Filling a Config from TOML files, Python files, objects and mappings.

Every loader goes through ``apply_mapping``, which sets values with ``setattr`` so each one is
validated by its ``Setting``. Errors come out as one ``ConfigError`` line that names the
source and the setting: ``config.toml: workers: expected a non-negative integer, got 'x'``.

Strictness differs on purpose. TOML files and mappings contain nothing but settings, so an
unknown key is an error (a typo would otherwise be silently ignored). Python files and objects
are code, with imports, helpers and constants next to the settings (as in gunicorn config
files), so only names that are settings are used and the rest is ignored.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import os
import sys
import types
from collections.abc import Mapping
from typing import Any

from hypercorn.conf.setting import REGISTRY
from hypercorn.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]

__all__ = [
    "ALIASES",
    "apply_mapping",
    "load_object",
    "load_pyfile",
    "load_toml",
    "object_mapping",
]

FilePath = str | os.PathLike[str]

# Names upstream accepts that are not settings of their own.
ALIASES: dict[str, str] = {"cert_reqs": "verify_mode"}


def _unknown(key: str) -> str:
    close = difflib.get_close_matches(key, REGISTRY, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown setting {key!r}{hint}"


def apply_mapping(
    config: object,
    mapping: Mapping[str, Any],
    *,
    source: str | None = None,
    strict: bool = True,
    toml: bool = False,
) -> None:
    """Validate and set every item of ``mapping`` on ``config``.

    ``strict`` makes unknown keys an error (otherwise they are skipped); ``toml`` also rejects
    settings declared ``toml=False``. ``source`` prefixes error messages.
    """
    prefix = f"{source}: " if source else ""
    for key, value in mapping.items():
        name = ALIASES.get(key, key)
        setting = REGISTRY.get(name)
        if setting is None:
            if strict:
                raise ConfigError(prefix + _unknown(key))
            continue
        if toml and not setting.toml:
            raise ConfigError(f"{prefix}{key}: can only be set from Python, not from TOML")
        try:
            setattr(config, name, value)
        except ConfigError as exc:
            raise ConfigError(f"{prefix}{exc}") from None


def load_toml(filename: FilePath) -> tuple[str, dict[str, Any]]:
    """Read a TOML file; return (source name for messages, data)."""
    path = os.fspath(filename)
    try:
        with open(path, "rb") as file:
            data = tomllib.load(file)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    return path, data


def object_mapping(instance: object) -> dict[str, Any]:
    """The attributes of ``instance`` that name settings (upstream's ``from_object`` rule,
    minus everything that is not a setting: imports, helpers, constants, properties)."""
    mapping: dict[str, Any] = {}
    for key in dir(instance):
        if key not in REGISTRY and key not in ALIASES:
            continue
        try:
            value = getattr(instance, key)
        except AttributeError:  # e.g. a write-only property such as Config.cert_reqs
            continue
        if not isinstance(value, types.ModuleType):
            mapping[key] = value
    return mapping


def load_pyfile(filename: FilePath) -> tuple[str, dict[str, Any]]:
    """Execute a Python config file; return (source name, its settings-like globals)."""
    path = os.fspath(filename)
    if not os.path.isfile(path):
        raise ConfigError(f"{path}: cannot read config file: no such file")
    spec = importlib.util.spec_from_file_location("hypercorn_config", path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"{path}: cannot load as a Python file")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # the user's code: any error is a config error, in one line
        raise ConfigError(f"{path}: {_describe(exc)}") from None
    return path, object_mapping(module)


def load_object(instance: object | str) -> tuple[str, dict[str, Any]]:
    """Resolve ``module``, ``module.attr`` or an object; return (source name, attributes)."""
    if not isinstance(instance, str):
        return type(instance).__name__, object_mapping(instance)
    name = instance
    try:
        try:
            target: object = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            # "module.attr": only fall back when the missing module is the full dotted name.
            if exc.name != name or "." not in name:
                raise
            module_name, attr = name.rsplit(".", 1)
            target = getattr(importlib.import_module(module_name), attr)
    except AttributeError as exc:
        raise ConfigError(f"python:{name}: {exc}") from None
    except Exception as exc:  # the user's code: any import-time error is a config error
        raise ConfigError(f"python:{name}: {_describe(exc)}") from None
    return f"python:{name}", object_mapping(target)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, SyntaxError):
        return f"SyntaxError: {exc.msg} (line {exc.lineno})"
    return f"{type(exc).__name__}: {exc}"
