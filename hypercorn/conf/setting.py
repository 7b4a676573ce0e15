"""`Setting[T]`: one declaration per setting, read by Config, the CLI, the loaders and the docs.

A `Setting` is declared on a section mixin (`conf/sections/*.py`). It registers itself in the
ordered module-level `REGISTRY` from `__set_name__` (no metaclass), keeps each value in the
instance `__dict__` (a list default is copied per instance, so no two configs share one), and
runs its parser on every assignment, so a bad value raises `ConfigError` naming the setting
at the point it was set, not later in a worker.

Why reads are plain attribute reads: at runtime `Setting` is a *non-data* descriptor. Its
`__get__` runs only until a value is in the instance `__dict__` (it stores the default there on
first read); after that `config.keep_alive_timeout` is an ordinary C-level lookup (measured
~33 ns here, against ~130-200 ns through a Python-level data-descriptor `__get__`), which
matters because workers read settings on the request path. Assignments are validated by
`SettingsHolder.__setattr__`, which every section mixin inherits. For type checkers `Setting`
also declares `__set__` (under TYPE_CHECKING), so mypy treats it as the data descriptor it
behaves like.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar, overload

from hypercorn.errors import ConfigError

__all__ = ["REGISTRY", "SECTIONS", "CliAction", "Setting", "SettingsHolder", "settings"]

T = TypeVar("T")

CliAction = Literal["store", "store_true", "append"]

# Display titles, in the order the docs and `--help` list them.
SECTIONS: dict[str, str] = {
    "server": "Server and sockets",
    "workers": "Workers and lifecycle",
    "http": "HTTP, HTTP/2 and WebSocket",
    "tls": "TLS",
    "process": "Process",
    "logging": "Logging and metrics",
}

# name -> Setting, in import order; ``settings()`` gives the documented order.
REGISTRY: dict[str, Setting[Any]] = {}


def settings() -> list[Setting[Any]]:
    """Every declared setting, grouped by section (``SECTIONS`` order), declaration order within."""
    order = list(SECTIONS)
    return sorted(REGISTRY.values(), key=lambda setting: order.index(setting.section))


class Setting(Generic[T]):
    """A typed, validated, documented configuration value.

    ``parse`` receives the raw value from any source (CLI strings, TOML values, Python objects)
    and returns the typed value or raises ``ValueError("expected ..., got ...")``.
    ``flags`` are the CLI option strings, written out so they match upstream Hypercorn exactly;
    ``deprecated_flags`` still work but print a notice. ``action`` is the argparse action kind.
    ``toml=False`` keeps a setting out of TOML files (values that only make sense as Python
    objects); ``secret=True`` keeps its value out of ``repr(config)``.
    """

    __slots__ = (
        "action",
        "default",
        "deprecated_flags",
        "flags",
        "help",
        "metavar",
        "name",
        "owner",
        "parse",
        "secret",
        "section",
        "toml",
        "type_name",
    )

    def __init__(
        self,
        default: T,
        *,
        parse: Callable[[object], T],
        help: str,
        section: str,
        flags: tuple[str, ...] = (),
        deprecated_flags: tuple[str, ...] = (),
        metavar: str | None = None,
        action: CliAction = "store",
        toml: bool = True,
        secret: bool = False,
        type_name: str | None = None,
    ) -> None:
        if section not in SECTIONS:
            raise ValueError(f"unknown settings section {section!r}")
        self.default = default
        self.parse = parse
        self.help = " ".join(help.split())
        self.section = section
        self.flags = flags
        self.deprecated_flags = deprecated_flags
        self.metavar = metavar
        self.action = action
        self.toml = toml
        self.secret = secret
        self.type_name: str = type_name or str(getattr(parse, "type_name", type(default).__name__))
        self.name = ""
        self.owner: type[Any] | None = None

    def __set_name__(self, owner: type[Any], name: str) -> None:
        existing = REGISTRY.get(name)
        if existing is not None and existing is not self:
            raise RuntimeError(f"setting {name!r} declared twice ({existing.owner} and {owner})")
        self.name = name
        self.owner = owner
        REGISTRY[name] = self

    @overload
    def __get__(self, obj: None, owner: type[Any] | None = None) -> Setting[T]: ...

    @overload
    def __get__(self, obj: object, owner: type[Any] | None = None) -> T: ...

    def __get__(self, obj: object | None, owner: type[Any] | None = None) -> Setting[T] | T:
        if obj is None:
            return self
        values = obj.__dict__
        try:
            return values[self.name]  # type: ignore[no-any-return]
        except KeyError:
            value = self.fresh_default()
            values[self.name] = value
            return value

    if TYPE_CHECKING:
        # Runtime assignment goes through SettingsHolder.__setattr__ (see the module docstring).
        def __set__(self, obj: object, value: object) -> None: ...

    def validate(self, value: object) -> T:
        """Parse ``value``; raise ``ConfigError("<name>: expected ..., got ...")``."""
        try:
            return self.parse(value)
        except ValueError as exc:
            raise ConfigError(f"{self.name}: {exc}") from None

    def fresh_default(self) -> T:
        """The default, copied when mutable so instances never share a list or dict."""
        if isinstance(self.default, (list, dict, set)):
            return copy.copy(self.default)
        return self.default

    @property
    def cli_flags(self) -> tuple[str, ...]:
        return self.flags + self.deprecated_flags

    def __repr__(self) -> str:
        return f"<Setting {self.name}={self.default!r}>"


class SettingsHolder:
    """Base of the section mixins: validates every assignment to a registered setting.

    A subclass may still replace a setting with a property of its own; then the property's
    setter runs instead.
    """

    __slots__ = ()

    def __setattr__(self, name: str, value: object) -> None:
        setting = REGISTRY.get(name)
        if setting is not None:
            declared = getattr(type(self), name, None)
            if declared is setting or not hasattr(type(declared), "__set__"):
                value = setting.validate(value)
        object.__setattr__(self, name, value)
