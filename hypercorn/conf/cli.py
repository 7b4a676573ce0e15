"""The ``hypercorn`` command line, built from the settings registry.

Every option's default is ``argparse.SUPPRESS`` (our sentinel): an option that was not given
leaves no attribute in the namespace, so only flags actually typed override the values loaded
from ``-c/--config``. Values reach ``Config`` through the same ``Setting`` parsers as every
other source; argparse does no type conversion of its own, so a bad value produces the same
one-line ``ConfigError`` as a bad TOML value, naming the flag instead of the file.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from typing import Any, NoReturn

from hypercorn import __version__
from hypercorn.conf.setting import REGISTRY, SECTIONS, Setting, settings
from hypercorn.config import Config, ConfigWarning
from hypercorn.errors import ConfigError

__all__ = ["build_parser", "config_from_args", "cross_check"]

_DEPRECATED = "deprecated:"


class _ArgumentParser(argparse.ArgumentParser):
    """Usage errors become a one-line ``ConfigError`` instead of usage text and exit(2)."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(message)


def _help(setting: Setting[Any]) -> str:
    text = setting.help
    default = setting.default
    if default not in (None, False, "", []) and setting.action != "store_true":
        shown = " ".join(default) if isinstance(default, list) else default
        text += f" [default: {shown}]"
    return text.replace("%", "%%")  # argparse %-formats help strings


def build_parser() -> argparse.ArgumentParser:
    """An argparse parser with one option per flagged setting, grouped by section."""
    parser = _ArgumentParser(
        prog="hypercorn",
        description="Serve an ASGI or WSGI application with Hypercorn.",
        argument_default=argparse.SUPPRESS,
    )
    parser.add_argument(
        "application",
        nargs="?",
        help="The application to dispatch to as path.to.module:instance.path",
    )
    parser.add_argument(
        "-c",
        "--config",
        metavar="CONFIG",
        help="""Location of a TOML config file, or when prefixed with `file:` a Python file, or
        when prefixed with `python:` a Python module. Flags given on the command line override
        its values.""",
    )
    parser.add_argument("--version", action="version", version=f"hypercorn {__version__}")
    groups = {key: parser.add_argument_group(title) for key, title in SECTIONS.items()}
    for setting in settings():
        if not setting.cli_flags:
            continue
        group = groups[setting.section]
        kwargs: dict[str, Any] = {"dest": setting.name, "default": argparse.SUPPRESS}
        if setting.action == "store_true":
            kwargs["action"] = "store_true"
        else:
            kwargs["action"] = setting.action
            kwargs["metavar"] = setting.metavar or setting.name.upper()
        if setting.flags:
            group.add_argument(*setting.flags, help=_help(setting), **kwargs)
        for flag in setting.deprecated_flags:
            kwargs["dest"] = f"{_DEPRECATED}{setting.name}:{flag}"
            replacement = setting.flags[-1] if setting.flags else setting.name
            group.add_argument(flag, help=f"Deprecated, see {replacement}", **kwargs)
    return parser


def config_from_args(args: Sequence[str], *, stderr: Any = None) -> Config:
    """Parse ``args`` into a ``Config``: ``-c`` file first, then the flags given, then checks."""
    parser = build_parser()
    namespace = vars(parser.parse_args(list(args)))
    out = stderr if stderr is not None else sys.stderr
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConfigWarning)
        config = _build(namespace, out)
    for warning in caught:
        if issubclass(warning.category, ConfigWarning):
            print(f"hypercorn: warning: {warning.message}", file=out)
        else:  # not ours to format: hand it back to the warnings machinery
            warnings.warn_explicit(
                warning.message, warning.category, warning.filename, warning.lineno
            )
    cross_check(config)
    return config


def _build(namespace: dict[str, Any], out: Any) -> Config:
    location = namespace.pop("config", None)
    strict = bool(namespace.get("strict_config", False))
    config = Config.load(location, strict=strict) if location is not None else Config()
    application = namespace.pop("application", None)
    if application is not None:
        config.application_path = application

    for dest, value in namespace.items():
        if dest.startswith(_DEPRECATED):
            name, flag = dest[len(_DEPRECATED) :].split(":", 1)
            setting = REGISTRY[name]
            replacement = setting.flags[-1] if setting.flags else name
            print(f"hypercorn: warning: {flag} is deprecated, use {replacement}", file=out)
            used = flag
        else:
            name = dest
            setting = REGISTRY[name]
            used = "/".join(setting.flags)
        try:
            setattr(config, name, value)
        except ConfigError as exc:
            detail = str(exc).removeprefix(f"{name}: ")
            raise ConfigError(f"argument {used}: {detail}") from None
    return config


def cross_check(config: Config) -> None:
    """Checks that involve more than one setting (each setting validates itself)."""
    if not config.application_path:
        raise ConfigError(
            "the following arguments are required: application (e.g. hypercorn module:app)"
        )
    if (config.certfile is None) != (config.keyfile is None):
        missing = "keyfile" if config.keyfile is None else "certfile"
        raise ConfigError(f"{missing}: TLS needs both certfile and keyfile")
    if config.quic_bind and not config.ssl_enabled:
        raise ConfigError("quic_bind: HTTP/3 needs TLS; set certfile and keyfile")
