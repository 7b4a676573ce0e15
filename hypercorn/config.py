"""``Config``: every setting, upstream Hypercorn's methods, and the loaders as classmethods.

The settings themselves are declared once, in the section mixins under ``hypercorn.conf``;
this class only adds behaviour. Values live in the instance ``__dict__``; assigning a bad
value raises ``hypercorn.errors.ConfigError`` naming the setting.
"""

from __future__ import annotations

import os
import ssl
import warnings
from collections.abc import Mapping
from time import time
from typing import TYPE_CHECKING, Any, TypeVar
from wsgiref.handlers import format_date_time

from hypercorn.conf import loaders
from hypercorn.conf import ssl as conf_ssl
from hypercorn.conf.sections import (
    HTTPSettings,
    LoggingSettings,
    ProcessSettings,
    ServerSettings,
    TLSSettings,
    WorkerSettings,
)
from hypercorn.conf.setting import REGISTRY
from hypercorn.errors import ConfigWarning, UnknownSettingWarning

if TYPE_CHECKING:
    from hypercorn.arbiter.sockets import Sockets
    from hypercorn.logging import Logger

__all__ = [
    "BYTES",
    "OCTETS",
    "SECONDS",
    "Config",
    "ConfigWarning",
    "Sockets",
    "UnknownSettingWarning",
]

# Upstream's unit constants, kept for config files that use them.
BYTES = 1
OCTETS = 1
SECONDS = 1.0

C = TypeVar("C", bound="Config")


class Config(
    ServerSettings,
    WorkerSettings,
    HTTPSettings,
    TLSSettings,
    ProcessSettings,
    LoggingSettings,
):
    """Hypercorn's configuration. ``Config()`` holds the defaults; set attributes to change them.

    Build one from a file with ``Config.load("hypercorn.toml")`` (or ``"python:module"``,
    ``"file:conf.py"``), or with ``from_toml`` / ``from_pyfile`` / ``from_object`` /
    ``from_mapping``.
    """

    # Private state, not settings. Class-level defaults are immutable, so a subclass with its
    # own __init__ that never calls ours still works (upstream Config has no __init__).
    _log: Logger | None = None
    # (host, port) of each QUIC listener, for the automatic alt-svc header.
    _quic_addresses: tuple[tuple[Any, ...], ...] = ()
    _date_second = -1
    _date_value = b""

    # --- pickling: the cached Logger holds open handlers; rebuild it on the other side ------

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_log"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    # --- upstream compatibility --------------------------------------------------------------

    def set_cert_reqs(self, value: int) -> None:
        warnings.warn("Please use verify_mode instead", DeprecationWarning, stacklevel=2)
        self.verify_mode = ssl.VerifyMode(value)

    cert_reqs = property(None, set_cert_reqs, doc="Deprecated: write-only alias of verify_mode.")

    @property
    def log(self) -> Logger:
        """The ``hypercorn.logging.Logger`` (or *logger_class*) for this config, built once."""
        if self._log is None:
            logger_class = self.logger_class
            if logger_class is None:
                from hypercorn.logging import Logger

                logger_class = Logger
            self._log = logger_class(self)
        return self._log

    def set_statsd_logger_class(self, statsd_logger: type[Logger]) -> None:
        """Use ``statsd_logger`` when statsd is configured and no custom logger class is set."""
        if self.logger_class is None and self.statsd_host is not None:
            self.logger_class = statsd_logger

    @property
    def ssl_enabled(self) -> bool:
        return conf_ssl.ssl_enabled(self)

    def create_ssl_context(self) -> ssl.SSLContext | None:
        return conf_ssl.create_ssl_context(self)

    def create_sockets(self) -> Sockets:
        """Bind (or inherit) the configured listeners. Bind failures raise ``BootError``."""
        from hypercorn.arbiter.sockets import create_sockets

        sockets: Sockets = create_sockets(self)
        self.set_quic_addresses(sockets.quic_sockets)
        return sockets

    def set_quic_addresses(self, quic_sockets: list[Any]) -> None:
        """Remember the QUIC listeners' ports so responses advertise them in `alt-svc`.

        `create_sockets` calls this; code that creates the sockets another way calls it too.
        """
        addresses: list[tuple[Any, ...]] = []
        for sock in quic_sockets:
            name = sock.getsockname()
            if isinstance(name, tuple) and len(name) >= 2:
                addresses.append(name)
            else:
                warnings.warn(
                    f"Cannot create an alt-svc header for the QUIC socket with address {name!r}",
                    Warning,
                    stacklevel=2,
                )
        self._quic_addresses = tuple(addresses)

    _set_quic_addresses = set_quic_addresses  # upstream's private name

    def __repr__(self) -> str:
        changed = []
        for name, value in self.__dict__.items():
            setting = REGISTRY.get(name)
            if setting is not None and value != setting.default:
                changed.append(f"{name}={'***' if setting.secret else repr(value)}")
        return f"{type(self).__name__}({', '.join(changed)})"

    def response_headers(self, protocol: str) -> list[tuple[bytes, bytes]]:
        """The headers the server adds to every response: date, server and alt-svc."""
        headers: list[tuple[bytes, bytes]] = []
        if self.include_date_header:
            now = int(time())
            if now != self._date_second:
                self._date_value = format_date_time(now).encode("ascii")
                self._date_second = now
            headers.append((b"date", self._date_value))
        if self.include_server_header:
            headers.append((b"server", f"hypercorn-{protocol}".encode("ascii")))
        headers.extend((b"alt-svc", value.encode()) for value in self.alt_svc_headers)
        if not self.alt_svc_headers and self._quic_addresses:
            from aioquic.h3.connection import H3_ALPN

            headers.extend(
                (b"alt-svc", b'%s=":%d"; ma=3600' % (version.encode(), address[1]))
                for version in H3_ALPN
                for address in self._quic_addresses
            )
        return headers

    # --- loaders -----------------------------------------------------------------------------

    @classmethod
    def from_mapping(cls: type[C], mapping: Mapping[str, Any] | None = None, **kwargs: Any) -> C:
        """Create a configuration from a mapping and/or keyword arguments.

        ``Config.from_mapping({"keep_alive_timeout": 10})`` or
        ``Config.from_mapping(keep_alive_timeout=10)``. A key that is not a setting gives an
        ``UnknownSettingWarning`` and is kept as a plain attribute (as upstream); with
        ``strict_config=True`` in the mapping it raises ``ConfigError`` instead.
        """
        values: dict[str, Any] = {}
        if mapping is not None:
            values.update(mapping)
        values.update(kwargs)
        config = cls()
        loaders.apply_mapping(config, values)
        return config

    @classmethod
    def from_toml(cls: type[C], filename: str | os.PathLike[str], *, strict: bool = False) -> C:
        """Load the configuration values from a TOML file (keys are setting names).

        Unknown keys warn (``UnknownSettingWarning``); ``strict`` (or ``strict_config = true``
        in the file) makes them errors.
        """
        source, data = loaders.load_toml(filename)
        config = cls()
        loaders.apply_mapping(config, data, source=source, toml=True, strict=strict)
        return config

    @classmethod
    def from_pyfile(cls: type[C], filename: str | os.PathLike[str], *, strict: bool = False) -> C:
        """Create a configuration from a Python file: its setting-named globals configure the
        server; its other public names are kept as plain attributes (as upstream)."""
        source, data = loaders.load_pyfile(filename)
        config = cls()
        loaders.apply_mapping(config, data, source=source, code=True, strict=strict)
        return config

    @classmethod
    def from_object(cls: type[C], instance: object | str, *, strict: bool = False) -> C:
        """Create a configuration from a Python object, or a ``module`` / ``module.attr`` name
        (its public attributes, as ``from_pyfile``)."""
        source, data = loaders.load_object(instance)
        config = cls()
        loaders.apply_mapping(config, data, source=source, code=True, strict=strict)
        return config

    @classmethod
    def load(cls: type[C], location: str, *, strict: bool = False) -> C:
        """``python:module.name``, ``file:path/to/conf.py`` or a TOML file path (``-c``)."""
        if location.startswith("python:"):
            return cls.from_object(location[len("python:") :], strict=strict)
        if location.startswith("file:"):
            return cls.from_pyfile(location[len("file:") :], strict=strict)
        return cls.from_toml(location, strict=strict)


def __getattr__(name: str) -> object:
    # ``from hypercorn.config import Sockets`` (upstream API) without importing the arbiter
    # package, and without an import cycle, when only Config is wanted.
    if name == "Sockets":
        from hypercorn.arbiter.sockets import Sockets

        return Sockets
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
