"""Filling a Config from TOML files, Python files, objects and mappings.

Every loader goes through ``apply_mapping``, which sets values with ``setattr`` so each one is
validated by its ``Setting``. Errors come out as one ``ConfigError`` line that names the
source and the setting: ``config.toml: workers: expected a non-negative integer, got 'x'``.

Keys that are not settings are kept as plain attributes, as upstream does (a stray
``worker_connections = 1000`` or a ``[tool.hypercorn]`` table never stops the server), but a
typo silently ignored is a hazard too, so each unknown key of a TOML file or mapping gives one
``UnknownSettingWarning`` naming the nearest setting. Python files and objects are code, with
imports, helpers and constants next to the settings (as in gunicorn config files): their other
names are copied without a word unless they look like a misspelt setting. Strict mode
(``strict_config`` / ``--strict-config``, for CI) makes every such warning a ``ConfigError``.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import os
import sys
import types
import warnings
from collections.abc import Mapping
from typing import Any

from hypercorn.conf.setting import REGISTRY, SettingsHolder
from hypercorn.errors import ConfigError, UnknownSettingWarning

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]

__all__ = [
    "ALIASES",
    "UnknownSettingWarning",
    "apply_mapping",
    "load_object",
    "load_pyfile",
    "load_toml",
    "object_mapping",
]

FilePath = str | os.PathLike[str]

# Names upstream accepts that are not settings of their own.
ALIASES: dict[str, str] = {"cert_reqs": "verify_mode"}


#: How alike a Python file's name must be to a setting's to be reported as a likely typo.
_CODE_TYPO_CUTOFF = 0.8


def _nearest(key: str, cutoff: float) -> str | None:
    close = difflib.get_close_matches(key, REGISTRY, n=1, cutoff=cutoff)
    return close[0] if close else None


def _unknown_key(
    config: object, key: str, value: object, prefix: str, *, strict: bool, code: bool
) -> None:
    nearest = _nearest(key, _CODE_TYPO_CUTOFF if code else 0.6)
    if not code or nearest is not None:
        hint = f" (did you mean {nearest!r}?)" if nearest else ""
        message = f"{prefix}{key!r} is not a Hypercorn setting{hint}"
        if strict:
            raise ConfigError(message)
        warnings.warn(message, UnknownSettingWarning, stacklevel=4)
    # Kept as a plain attribute (upstream's from_mapping sets it), unless it would shadow
    # Config's own methods, properties or private state.
    if not hasattr(type(config), key):
        object.__setattr__(config, key, value)


def apply_mapping(
    config: object,
    mapping: Mapping[str, Any],
    *,
    source: str | None = None,
    strict: bool = False,
    toml: bool = False,
    code: bool = False,
) -> None:
    """Validate and set every item of ``mapping`` on ``config``.

    Unknown keys warn and are kept as plain attributes (see the module docstring); ``strict``
    (or a true ``strict_config`` key in ``mapping``) makes them errors. ``code`` marks a
    Python file or object, whose other names only warn when they look like a misspelt
    setting. ``toml`` rejects settings declared ``toml=False``. ``source`` prefixes messages.
    """
    prefix = f"{source}: " if source else ""
    if "strict_config" in mapping:
        try:
            strict = strict or bool(REGISTRY["strict_config"].validate(mapping["strict_config"]))
        except ConfigError as exc:
            raise ConfigError(f"{prefix}{exc}") from None
    for key, value in mapping.items():
        name = ALIASES.get(key, key)
        setting = REGISTRY.get(name)
        if setting is None:
            _unknown_key(config, key, value, prefix, strict=strict, code=code)
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
    """The public attributes of ``instance`` (upstream's ``from_object`` rule: every name not
    starting with ``__`` that is not a module; also not ``_private`` ones, which would
    overwrite Config's own state). From another Config, only its settings."""
    settings_only = isinstance(instance, SettingsHolder)
    mapping: dict[str, Any] = {}
    for key in dir(instance):
        if key.startswith("_"):
            continue
        if settings_only and key not in REGISTRY:
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
