"""The error and access loggers, the access-log format atoms, and log-file reopening.

``Config.log`` builds one ``Logger(config)``. Workers call ``log_access`` only when
``access_enabled`` is True, so a server without an access log does no per-request logging
work at all. Everything a client controls (path, query, headers, method) is escaped before it
reaches a log line: control characters become ``\\xNN`` so a request cannot forge log lines or
send terminal escape sequences to whoever tails the log.
"""

from __future__ import annotations

import contextlib
import errno
import inspect
import json
import logging
import os
import re
import sys
import time
import traceback
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from http import HTTPStatus
from logging.config import dictConfig, fileConfig
from typing import IO, TYPE_CHECKING, Any

from hypercorn.errors import ConfigError

if TYPE_CHECKING:
    from hypercorn.config import Config
    from hypercorn.typing import ResponseSummary

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]

__all__ = ["MULTILINE", "AccessLogAtoms", "Logger", "escape_control", "log_sync"]

_LOG_FORMAT = "%(asctime)s [%(process)d] [%(levelname)s] %(message)s"
_DATE_FORMAT = "[%Y-%m-%d %H:%M:%S %z]"

# C0 controls, DEL and C1 controls -> "\xNN". Used only when str.isprintable() says a string
# needs it, so the common (clean) case costs one C-level scan.
_ESCAPES = {code: f"\\x{code:02x}" for code in (*range(0x20), *range(0x7F, 0xA0))}
# Text our own code marks as multi-line (``extra={MULTILINE: True}``) keeps tabs and newlines.
_MULTILINE_ESCAPES = {code: text for code, text in _ESCAPES.items() if code not in (0x09, 0x0A)}
# Tabs are harmless everywhere; every other control character is escaped.
_MESSAGE_ESCAPES = {code: text for code, text in _ESCAPES.items() if code != 0x09}

#: ``extra`` key for an error-log record whose message is trusted multi-line text.
MULTILINE = "hypercorn_multiline"


def escape_control(text: str) -> str:
    """Return ``text`` with control characters replaced by ``\\xNN`` escapes."""
    if text.isprintable():
        return text
    return text.translate(_ESCAPES)


def _escape(text: str, table: Mapping[int, str]) -> str:
    if text.isprintable():
        return text
    return text.translate(table)


def _safe_exception_text(exc_info: Any) -> str:
    """The traceback as ``Formatter.formatException`` renders it, except that exception
    messages and notes (which often quote client data) are escaped in full, newlines
    included, so they cannot forge log lines. Frame lines come from source files."""
    exc_type, exc_value, tb = exc_info
    try:
        root = traceback.TracebackException(exc_type, exc_value, tb)
    except Exception:  # pragma: no cover - a broken exception object
        return _escape(
            "".join(traceback.format_exception(exc_type, exc_value, tb)), _MULTILINE_ESCAPES
        )
    seen: set[int] = set()
    stack = [root]
    while stack:
        item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        text = getattr(item, "_str", None)
        if isinstance(text, str):
            setattr(item, "_str", _escape(text, _MESSAGE_ESCAPES))  # noqa: B010 - private
        notes = getattr(item, "__notes__", None)
        if isinstance(notes, list):
            setattr(item, "__notes__", [_escape(str(n), _MESSAGE_ESCAPES) for n in notes])  # noqa: B010
        if isinstance(getattr(item, "msg", None), str):  # SyntaxError details
            item.msg = _escape(str(item.msg), _MESSAGE_ESCAPES)
        if isinstance(getattr(item, "text", None), str):
            item.text = _escape(str(item.text), _MULTILINE_ESCAPES)
        stack.extend(linked for linked in (item.__cause__, item.__context__) if linked)
        stack.extend(getattr(item, "exceptions", None) or ())
    text = "".join(root.format())
    # Anything the per-part escaping missed still cannot carry raw control bytes.
    text = _escape(text, _MULTILINE_ESCAPES)
    return text[:-1] if text.endswith("\n") else text


class _EscapeControlFilter(logging.Filter):
    """Escapes control characters in the record's message and traceback, once, up front.

    The message is formatted here (``msg % args``) and escaped in full (newlines too, unless
    the record carries ``extra={MULTILINE: True}``); the traceback is pre-rendered into
    ``exc_text`` with escaped exception messages, which every standard formatter then uses.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and not record.exc_text:
            record.exc_text = _safe_exception_text(record.exc_info)
        table = _MULTILINE_ESCAPES if getattr(record, MULTILINE, False) else _MESSAGE_ESCAPES
        message = record.getMessage()
        escaped = _escape(message, table)
        if escaped is not message or record.args:
            record.msg = escaped
            record.args = None
        return True


_ESCAPE_FILTER = _EscapeControlFilter()


def _status_phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"<???{status}???>"


class _ClockCache:
    """The ``t`` atom, formatted at most once per second."""

    def __init__(self) -> None:
        self._second = -1
        self._text = ""

    def now(self) -> str:
        second = int(time.time())
        if second != self._second:
            self._second = second
            self._text = time.strftime("[%d/%b/%Y:%H:%M:%S %z]", time.localtime(second))
        return self._text


_CLOCK = _ClockCache()


def _remote_addr(client: Any) -> str:
    if client is None:
        return "-"
    if len(client) == 2:
        return f"{client[0]}:{client[1]}"
    if len(client) == 1:
        return str(client[0])
    return f"<???{client}???>"


def _header_value(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> str:
    values = [value for key, value in headers if key.lower() == name]
    if not values:
        return "-"
    return escape_control(b",".join(values).decode("latin-1"))


class _RequestFacts:
    """Lazily computed per-request values the atoms are made of."""

    __slots__ = (
        "request_headers",
        "request_time",
        "response_headers",
        "response_length",
        "scope",
        "status",
    )

    def __init__(
        self,
        scope: Mapping[str, Any],
        status: int,
        response_length: int | None,
        request_time: float,
        response_headers: Iterable[tuple[bytes, bytes]],
    ) -> None:
        self.scope = scope
        self.status = status
        self.response_length = response_length
        self.request_time = request_time
        self.request_headers: Iterable[tuple[bytes, bytes]] = scope.get("headers", ())
        self.response_headers = response_headers

    def method(self) -> str:
        if self.scope["type"] == "http":
            return escape_control(str(self.scope["method"]))
        return "GET"

    def protocol(self) -> str:
        return escape_control(str(self.scope.get("http_version", "ws")))

    def path(self) -> str:
        return escape_control(str(self.scope["path"]))

    def query(self) -> str:
        return escape_control(self.scope.get("query_string", b"").decode("latin-1"))

    def path_with_query(self) -> str:
        query = self.query()
        return self.path() + ("?" + query if query else "")

    def length_or_dash(self) -> str:
        if self.response_length is not None:
            return str(self.response_length)
        return _header_value(self.response_headers, b"content-length")


_Atom = Callable[[_RequestFacts], object]

_ATOMS: dict[str, _Atom] = {
    "h": lambda f: escape_control(_remote_addr(f.scope.get("client"))),
    "l": lambda f: "-",
    "u": lambda f: "-",
    "t": lambda f: _CLOCK.now(),
    "r": lambda f: f"{f.method()} {f.path()} {f.protocol()}",
    "R": lambda f: f"{f.method()} {f.path_with_query()} {f.protocol()}",
    "m": lambda f: f.method(),
    "U": lambda f: f.path(),
    "Uq": lambda f: f.path_with_query(),
    "q": lambda f: f.query(),
    "H": lambda f: f.protocol(),
    "s": lambda f: f.status,
    "st": lambda f: _status_phrase(f.status),
    "S": lambda f: escape_control(str(f.scope.get("scheme", "-"))),
    "b": lambda f: f.length_or_dash(),
    "B": lambda f: f.length_or_dash(),
    "f": lambda f: _header_value(f.request_headers, b"referer"),
    "a": lambda f: _header_value(f.request_headers, b"user-agent"),
    "T": lambda f: int(f.request_time),
    "D": lambda f: int(f.request_time * 1_000_000),
    "L": lambda f: f"{f.request_time:.6f}",
    "p": lambda f: f"<{os.getpid()}>",
}


def _dynamic_atom(key: str) -> _Atom | None:
    """``{name}i`` (request header), ``{name}o`` (response header), ``{name}e`` (environ)."""
    if len(key) < 3 or key[0] != "{" or key[-2] != "}":
        return None
    name = key[1:-2].lower()
    kind = key[-1]
    if kind == "i":
        encoded = name.encode("latin-1")
        return lambda f: _header_value(f.request_headers, encoded)
    if kind == "o":
        encoded = name.encode("latin-1")
        return lambda f: _header_value(f.response_headers, encoded)
    if kind == "e":
        return lambda f: escape_control(_environ_lower().get(name, "-"))
    return None


def _environ_lower() -> dict[str, str]:
    return {key.lower(): value for key, value in os.environ.items()}


class AccessLogAtoms(dict[str, Any]):
    """Upstream's mapping from access-log format keys to values (unknown keys give ``-``).

    ``Logger.atoms`` returns one of these; override it there to add custom atoms.
    """

    def __init__(
        self,
        request: Mapping[str, Any],
        response: ResponseSummary | Mapping[str, Any],
        request_time: float,
        *,
        response_length: int | None = None,
    ) -> None:
        super().__init__()
        response_headers: Iterable[tuple[bytes, bytes]] = response.get("headers", ()) or ()
        facts = _RequestFacts(
            request, int(response["status"]), response_length, request_time, response_headers
        )
        for name, value in facts.request_headers:
            self[f"{{{name.decode('latin-1').lower()}}}i"] = escape_control(value.decode("latin-1"))
        for name, value in response_headers:
            self[f"{{{name.decode('latin-1').lower()}}}o"] = escape_control(value.decode("latin-1"))
        for variable, text in os.environ.items():
            self[f"{{{variable.lower()}}}e"] = text
        for key, atom in _ATOMS.items():
            self[key] = atom(facts)

    def __getitem__(self, key: str) -> Any:
        try:
            if key.startswith("{"):
                return super().__getitem__(key.lower())
            return super().__getitem__(key)
        except KeyError:
            return "-"


def _level(level: str | int | None) -> int | None:
    if level is None:
        return None
    if isinstance(level, int):
        return level
    value = logging.getLevelName(level.upper())
    return value if isinstance(value, int) else None


# Handlers this module created (and so may close); others belong to the user's logconfig.
_OWNED_HANDLERS: weakref.WeakSet[logging.Handler] = weakref.WeakSet()


def _owned_handler(handler: logging.Handler) -> bool:
    return handler in _OWNED_HANDLERS


def _configure_logger(
    name: str,
    target: logging.Logger | str | None,
    level: str | int | None,
    stream: IO[str],
    *,
    propagate: bool,
) -> logging.Logger | None:
    if isinstance(target, logging.Logger):
        return target
    if not target:
        return None
    logger = logging.getLogger(name)
    # A previous Logger(config) may have installed handlers; close the ones we own so their
    # files are not leaked.
    for old in list(logger.handlers):
        logger.removeHandler(old)
        if _owned_handler(old) and isinstance(old, logging.FileHandler):
            old.close()
    handler: logging.Handler
    handler = logging.StreamHandler(stream) if target == "-" else logging.FileHandler(target)
    _OWNED_HANDLERS.add(handler)
    handler.setFormatter(logging.Formatter(_LOG_FORMAT, _DATE_FORMAT))
    logger.addHandler(handler)
    logger.propagate = propagate
    numeric = _level(level)
    if numeric is not None:
        logger.setLevel(numeric)
    return logger


def _apply_logconfig(logconfig: str) -> None:
    if logconfig.startswith("json:"):
        with open(logconfig[5:], encoding="utf-8") as file_:
            dictConfig(json.load(file_))
    elif logconfig.startswith("toml:"):
        with open(logconfig[5:], "rb") as binary:
            dictConfig(tomllib.load(binary))
    else:
        path = logconfig[5:] if logconfig.startswith("file:") else logconfig
        # fileConfig reads a missing file as an empty one (KeyError: 'formatters') before 3.12.
        if not os.path.isfile(path):
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
        defaults = {"__file__": path, "here": os.path.dirname(path)}
        fileConfig(path, defaults=defaults, disable_existing_loggers=False)


@contextlib.contextmanager
def _blame(setting: str, target: object) -> Iterator[None]:
    """Turn a failure to set up logging into one ``ConfigError`` line naming the setting
    (the CLI prints it and exits 2, before any worker is forked)."""
    try:
        yield
    except OSError as exc:
        where = f" {exc.filename!r}" if exc.filename else f" {target!r}" if target else ""
        raise ConfigError(f"{setting}: cannot open{where}: {exc.strerror or exc}") from None
    except Exception as exc:  # fileConfig/dictConfig/json/toml: any parse error
        text = " ".join(str(exc).split())
        where = f" in {target!r}" if isinstance(target, str) else ""
        raise ConfigError(
            f"{setting}: invalid logging configuration{where}: {type(exc).__name__}: {text}"
        ) from None


_FORMAT_KEY = re.compile(r"%\(([^)]*)\)")


class Logger:
    """Hypercorn's loggers: ``error_logger`` ("hypercorn.error"), ``access_logger``
    ("hypercorn.access"), the access-log atoms and the upstream async logging methods.

    Construction configures the ``hypercorn.error``/``hypercorn.access`` loggers from
    ``accesslog``/``errorlog`` ("-" for stdout/stderr, a path, or a ``logging.Logger``),
    ``loglevel``, then ``logconfig`` (an ``.ini`` path or ``file:``/``json:``/``toml:``
    prefixed path) or ``logconfig_dict``.
    """

    def __init__(self, config: Config) -> None:
        self.access_log_format: str = config.access_log_format
        with _blame("accesslog", config.accesslog):
            self.access_logger = _configure_logger(
                "hypercorn.access", config.accesslog, config.loglevel, sys.stdout, propagate=False
            )
        with _blame("errorlog", config.errorlog):
            self.error_logger = _configure_logger(
                "hypercorn.error", config.errorlog, config.loglevel, sys.stderr, propagate=True
            )
        if config.logconfig is not None:
            with _blame("logconfig", config.logconfig):
                _apply_logconfig(config.logconfig)
        elif config.logconfig_dict is not None:
            with _blame("logconfig_dict", None):
                dictConfig(config.logconfig_dict)
        if self.error_logger is not None and _ESCAPE_FILTER not in self.error_logger.filters:
            self.error_logger.addFilter(_ESCAPE_FILTER)

        keys = set(_FORMAT_KEY.findall(self.access_log_format)) or {"h"}
        self._atom_table: tuple[tuple[str, _Atom], ...] = tuple(
            (key, atom)
            for key in sorted(keys)
            if (atom := _ATOMS.get(key) or _dynamic_atom(key)) is not None
        )
        self._unknown_keys = tuple(sorted(key for key in keys if key not in dict(self._atom_table)))
        # A subclass that overrides atoms() gets it called, as upstream does.
        self._custom_atoms = type(self).atoms is not Logger.atoms
        self.access_enabled: bool = self.access_logger is not None and (
            self.access_logger.isEnabledFor(logging.INFO)
        )

    # -- the worker's hot path ----------------------------------------------------------------

    def log_access(
        self,
        scope: Mapping[str, Any],
        status: int,
        response_length: int | None,
        request_time: float,
        response_headers: Iterable[tuple[bytes, bytes]] = (),
    ) -> None:
        """Write one access-log line. ``request_time`` is in seconds."""
        logger = self.access_logger
        if logger is None:
            return
        atoms: Mapping[str, Any]
        if self._custom_atoms:
            summary: ResponseSummary = {"status": status, "headers": response_headers}
            atoms = self.atoms(scope, summary, request_time)
        else:
            facts = _RequestFacts(scope, status, response_length, request_time, response_headers)
            values = {key: atom(facts) for key, atom in self._atom_table}
            for key in self._unknown_keys:
                values[key] = "-"
            atoms = values
        logger.info(self.access_log_format, atoms)

    def atoms(
        self, request: Mapping[str, Any], response: ResponseSummary, request_time: float
    ) -> Mapping[str, Any]:
        """Return the access-log atoms mapping (override to customise, as upstream)."""
        return AccessLogAtoms(request, response, request_time)

    def reopen_files(self) -> None:
        """Reopen every log file this logger opened (after logrotate moved it; SIGUSR1)."""
        for logger in (self.access_logger, self.error_logger):
            if logger is None:
                continue
            for handler in logger.handlers:
                if isinstance(handler, logging.FileHandler):
                    handler.acquire()
                    try:
                        if handler.stream is not None:
                            handler.stream.close()
                        handler.stream = handler._open()
                    finally:
                        handler.release()

    # -- upstream's async API -----------------------------------------------------------------

    async def access(
        self, request: Mapping[str, Any], response: ResponseSummary, request_time: float
    ) -> None:
        if self.access_logger is not None:
            self.access_logger.info(
                self.access_log_format, self.atoms(request, response, request_time)
            )

    async def critical(self, message: str, *args: Any, **kwargs: Any) -> None:
        if self.error_logger is not None:
            self.error_logger.critical(message, *args, **kwargs)

    async def error(self, message: str, *args: Any, **kwargs: Any) -> None:
        if self.error_logger is not None:
            self.error_logger.error(message, *args, **kwargs)

    async def warning(self, message: str, *args: Any, **kwargs: Any) -> None:
        if self.error_logger is not None:
            self.error_logger.warning(message, *args, **kwargs)

    async def info(self, message: str, *args: Any, **kwargs: Any) -> None:
        if self.error_logger is not None:
            self.error_logger.info(message, *args, **kwargs)

    async def debug(self, message: str, *args: Any, **kwargs: Any) -> None:
        if self.error_logger is not None:
            self.error_logger.debug(message, *args, **kwargs)

    async def exception(self, message: str, *args: Any, **kwargs: Any) -> None:
        if self.error_logger is not None:
            self.error_logger.exception(message, *args, **kwargs)

    async def log(self, level: int, message: str, *args: Any, **kwargs: Any) -> None:
        if self.error_logger is not None:
            self.error_logger.log(level, message, *args, **kwargs)

    # -- upstream's delegation to the error logger --------------------------------------------

    def __getattr__(self, name: str) -> Any:
        """Anything not defined here is the error logger's (upstream forwards the same way), so
        code written for upstream can call ``config.log.setLevel(...)``,
        ``.isEnabledFor(...)``, ``.getEffectiveLevel()`` or read ``.handlers``.

        With no error logger (``errorlog = None``) the named ``hypercorn.error`` logger answers
        instead of ``None`` (where upstream raises AttributeError on NoneType).
        """
        if name.startswith("__") or "error_logger" not in self.__dict__:
            # Dunders (copy/pickle probes) and lookups during __init__ are not delegated.
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        target = self.__dict__["error_logger"] or logging.getLogger("hypercorn.error")
        return getattr(target, name)


def log_sync(log: Logger, level: str, message: str) -> None:
    """``await log.<level>(message)`` from synchronous code (the arbiter).

    Startup messages go through the configured ``Logger`` (or *logger_class*) methods, as
    upstream sends them, so a custom class sees them. Those methods are coroutines that
    normally complete without suspending; one that does wait on something cannot finish
    without a loop, so the message then goes to the error logger directly.
    """
    result = getattr(log, level)(message)
    if not inspect.isawaitable(result):
        return
    steps = result.__await__()
    try:
        steps.send(None)
    except StopIteration:
        return
    steps.close()
    logger = log.error_logger or logging.getLogger("hypercorn.error")
    logger.log(logging.getLevelName(level.upper()), message)


def reopen_log_files(log: object) -> None:
    """Reopen the files of ``log`` (``config.log``) after logrotate moved them (SIGUSR1).
    A custom logger without ``reopen_files`` is left alone; a failure is logged."""
    reopen = getattr(log, "reopen_files", None)
    if reopen is None:
        return
    try:
        reopen()
    except OSError as exc:
        logging.getLogger("hypercorn.error").error("cannot reopen the log files: %s", exc)
