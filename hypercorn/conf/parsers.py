"""Value parsers for settings: one small callable per kind of value.

A parser takes whatever a source hands over (a CLI string, a TOML value, a Python object) and
returns the typed value, or raises ``ValueError`` with a message of the form
``expected <what>, got <repr>``. ``Setting.validate`` prefixes the setting name and turns it into
a ``ConfigError``; the loaders prefix the source. Strings are accepted for every scalar kind
because the CLI only ever produces strings.

Each parser carries ``type_name`` (shown in ``docs/settings.md``) and ``expects`` (the phrase
used in error messages).
"""

from __future__ import annotations

import functools
import importlib
import ipaddress
import ssl
import warnings
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

from hypercorn.errors import ConfigWarning

T = TypeVar("T")

__all__ = [
    "Parser",
    "address_list",
    "boolean",
    "clamped_int",
    "class_or_path",
    "dict_or_none",
    "enum_flags",
    "enum_member",
    "group_id",
    "host_port",
    "int_range",
    "ip_networks",
    "listen_address",
    "non_negative_float",
    "non_negative_int",
    "one_of",
    "optional",
    "positive_float",
    "positive_int",
    "string",
    "string_list",
    "umask",
    "user_id",
    "zero_disables",
]

_TRUE = frozenset({"1", "true", "yes", "on", "y", "t"})
_FALSE = frozenset({"0", "false", "no", "off", "n", "f"})
_NONE = frozenset({"none", "null"})


class Parser(Generic[T]):
    """A named parse function: ``parser(value) -> T`` or ``ValueError``."""

    __slots__ = ("expects", "fn", "type_name")

    def __init__(self, fn: Callable[[object], T], *, type_name: str, expects: str) -> None:
        self.fn = fn
        self.type_name = type_name
        self.expects = expects

    def __call__(self, value: object) -> T:
        return self.fn(value)

    def __repr__(self) -> str:
        return f"<Parser {self.type_name}>"


def _fail(expects: str, value: object) -> ValueError:
    return ValueError(f"expected {expects}, got {value!r}")


# --- scalars -------------------------------------------------------------------------------


def _to_int(value: object, expects: str) -> int:
    if isinstance(value, bool):
        raise _fail(expects, value)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip().replace("_", ""), 10)
        except ValueError:
            raise _fail(expects, value) from None
    raise _fail(expects, value)


def _to_float(value: object, expects: str) -> float:
    if isinstance(value, bool):
        raise _fail(expects, value)
    if isinstance(value, (int, float)):
        result = float(value)
    elif isinstance(value, str):
        try:
            result = float(value.strip())
        except ValueError:
            raise _fail(expects, value) from None
    else:
        raise _fail(expects, value)
    if result != result or result in (float("inf"), float("-inf")):  # NaN / infinity
        raise _fail(expects, value)
    return result


def _int_parser(minimum: int, expects: str, type_name: str = "int") -> Parser[int]:
    def parse(value: object) -> int:
        result = _to_int(value, expects)
        if result < minimum:
            raise _fail(expects, value)
        return result

    return Parser(parse, type_name=type_name, expects=expects)


def _float_parser(strict: bool, expects: str) -> Parser[float]:
    def parse(value: object) -> float:
        result = _to_float(value, expects)
        if result < 0 or (strict and result == 0):
            raise _fail(expects, value)
        return result

    return Parser(parse, type_name="float", expects=expects)


def int_range(minimum: int, maximum: int) -> Parser[int]:
    expects = f"an integer from {minimum} to {maximum}"

    def parse(value: object) -> int:
        result = _to_int(value, expects)
        if not minimum <= result <= maximum:
            raise _fail(expects, value)
        return result

    return Parser(parse, type_name="int", expects=expects)


positive_int = _int_parser(1, "a positive integer")
non_negative_int = _int_parser(0, "a non-negative integer")
positive_float = _float_parser(True, "a positive number of seconds")
non_negative_float = _float_parser(False, "a non-negative number")


def _parse_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
    raise _fail("a boolean", value)


boolean: Parser[bool] = Parser(_parse_bool, type_name="bool", expects="a boolean")


def _parse_str(value: object) -> str:
    if isinstance(value, str):
        return value
    raise _fail("a string", value)


string: Parser[str] = Parser(_parse_str, type_name="str", expects="a string")


def optional(inner: Parser[T]) -> Parser[T | None]:
    """``None`` or whatever ``inner`` accepts. For non-string kinds the CLI may say ``none``."""
    textual = inner.type_name == "str"

    def parse(value: object) -> T | None:
        if value is None:
            return None
        if not textual and isinstance(value, str) and value.strip().lower() in _NONE:
            return None
        return inner(value)

    return Parser(parse, type_name=f"{inner.type_name} | None", expects=f"{inner.expects} or none")


def zero_disables(inner: Parser[T]) -> Parser[T | None]:
    """``optional(inner)``, where 0 also means None (disabled), as upstream means it."""
    base = optional(inner)
    expects = f"{inner.expects}, or 0 or none to disable"

    def parse(value: object) -> T | None:
        if not isinstance(value, bool) and isinstance(value, (int, float)) and value == 0:
            return None
        if isinstance(value, str):
            try:
                if float(value.strip()) == 0:
                    return None
            except ValueError:
                pass
        try:
            return base(value)
        except ValueError:
            raise _fail(expects, value) from None

    return Parser(parse, type_name=base.type_name, expects=expects)


def clamped_int(minimum: int, maximum: int, *, name: str, why: str) -> Parser[int]:
    """A positive integer raised to ``minimum`` or lowered to ``maximum`` with a
    ``ConfigWarning`` that names the setting and says ``why`` (upstream accepts any value
    where the protocol cannot)."""
    expects = "a positive integer"

    def parse(value: object) -> int:
        result = _to_int(value, expects)
        if result < 1:
            raise _fail(expects, value)
        clamped = min(max(result, minimum), maximum)
        if clamped != result:
            message = f"{name}: {result} is outside {why}; {clamped} is used"
            warnings.warn(message, ConfigWarning, stacklevel=3)
        return clamped

    return Parser(parse, type_name="int", expects=expects)


def one_of(*choices: str) -> Parser[str]:
    expects = "one of " + ", ".join(repr(choice) for choice in choices)

    def parse(value: object) -> str:
        if isinstance(value, str) and value.strip().lower() in choices:
            return value.strip().lower()
        raise _fail(expects, value)

    return Parser(parse, type_name=" | ".join(f'"{c}"' for c in choices), expects=expects)


# --- lists ---------------------------------------------------------------------------------


def _parse_string_list(value: object) -> list[str]:
    # Upstream accepts a single string for its list settings (``config.bind = "0.0.0.0:80"``).
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)) and all(isinstance(item, str) for item in value):
        return list(value)
    raise _fail("a string or a list of strings", value)


string_list: Parser[list[str]] = Parser(
    _parse_string_list, type_name="list[str]", expects="a string or a list of strings"
)


def _parse_address_list(value: object) -> list[str]:
    addresses = _parse_string_list(value)
    for address in addresses:
        if not address.strip():
            raise _fail("addresses like host:port, unix:path or fd://N", value)
        if address.startswith("fd://") and not address[5:].isdigit():
            raise ValueError(f"expected fd://<number>, got {address!r}")
    return [address.strip() for address in addresses]


address_list: Parser[list[str]] = Parser(
    _parse_address_list,
    type_name="list[str]",
    expects="a host:port, unix:path or fd://N address, or a list of them",
)


def _parse_ip_networks(value: object) -> list[str]:
    # gunicorn's spelling is one comma-separated string; a TOML list works as well.
    items = value.split(",") if isinstance(value, str) else _parse_string_list(value)
    networks = []
    for item in (item.strip() for item in items):
        if item != "*":
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise _fail("IP addresses or networks (10.0.0.0/8) or *", item) from None
        networks.append(item)
    return networks


ip_networks: Parser[list[str]] = Parser(
    _parse_ip_networks,
    type_name="list[str]",
    expects="comma-separated IP addresses or networks, or *",
)


def _parse_host_port(value: object, *, port_zero: bool = False) -> str:
    text = _parse_str(value).strip()
    if port_zero and text.startswith("fd://") and text[5:].isdigit():
        return text
    host, _, port = text.rpartition(":")
    lowest = 0 if port_zero else 1
    if not host.strip("[]") or not port.isdigit() or not lowest <= int(port) < 65536:
        raise _fail("host:port or fd://N" if port_zero else "host:port", value)
    return text


host_port: Parser[str] = Parser(_parse_host_port, type_name="str", expects="host:port")
#: A TCP address to listen on: ``host:port`` (port 0: the kernel picks) or ``fd://N``.
listen_address: Parser[str] = Parser(
    functools.partial(_parse_host_port, port_zero=True),
    type_name="str",
    expects="host:port or fd://N",
)


# --- structured values ---------------------------------------------------------------------


def _parse_dict(value: object) -> dict[str, Any] | None:
    if value is None:
        return None
    if isinstance(value, Mapping) and all(isinstance(key, str) for key in value):
        return dict(value)
    raise _fail("a mapping (dictConfig schema) or none", value)


dict_or_none: Parser[dict[str, Any] | None] = Parser(
    _parse_dict, type_name="dict | None", expects="a mapping or none"
)


def enum_member(enum: type[ssl.VerifyMode]) -> Parser[ssl.VerifyMode | None]:
    """``ssl.VerifyMode`` by member, value (``2``) or name (``CERT_REQUIRED``), or None."""
    names = ", ".join(member.name for member in enum)
    expects = f"one of {names} (or its integer value)"

    def parse(value: object) -> ssl.VerifyMode | None:
        if value is None or isinstance(value, enum):
            return value
        if isinstance(value, str):
            text = value.strip()
            if text.lower() in _NONE:
                return None
            if text in enum.__members__:
                return enum[text]
            if text.isdigit():
                value = int(text)
        if isinstance(value, int) and not isinstance(value, bool):
            try:
                return enum(value)
            except ValueError:
                pass
        raise _fail(expects, value)

    return Parser(parse, type_name=f"{enum.__name__} | None", expects=expects)


def enum_flags(enum: type[ssl.VerifyFlags]) -> Parser[ssl.VerifyFlags | None]:
    """``ssl.VerifyFlags`` by value, by name, or as ``NAME|NAME``; or None."""
    expects = f"{enum.__name__} names joined by '|' or an integer"

    def parse(value: object) -> ssl.VerifyFlags | None:
        if value is None or isinstance(value, enum):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return enum(value)
        if isinstance(value, str):
            text = value.strip()
            if text.lower() in _NONE:
                return None
            if text.isdigit():
                return enum(int(text))
            result = enum(0)
            for name in text.split("|"):
                name = name.strip()
                if name not in enum.__members__:
                    raise _fail(expects, value)
                result |= enum[name]
            return result
        raise _fail(expects, value)

    return Parser(parse, type_name=f"{enum.__name__} | None", expects=expects)


def _parse_umask(value: object) -> int | None:
    # A umask is always written in octal; "022" meaning decimal 22 is never what anyone wants.
    expects = "an octal permission mask such as 0o022"
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _NONE:
            return None
        try:
            if text.startswith("0o"):
                result = int(text, 8)
            elif text.startswith("0x"):
                result = int(text, 16)
            elif text.startswith("0") and len(text) > 1:
                result = int(text, 8)
            else:
                result = int(text, 10)
        except ValueError:
            raise _fail(expects, value) from None
    else:
        result = _to_int(value, expects)
    if not 0 <= result <= 0o777:
        raise _fail(expects, value)
    return result


umask: Parser[int | None] = Parser(_parse_umask, type_name="int | None", expects="an octal mask")


def _id_parser(kind: str) -> Parser[int | None]:
    expects = f"a numeric {kind} id or an existing {kind} name"

    def parse(value: object) -> int | None:
        if value is None:
            return None
        if isinstance(value, str):
            text = value.strip()
            if text.lower() in _NONE:
                return None
            if text.isdigit():
                return int(text)
            return _lookup_id(kind, text, expects, value)
        result = _to_int(value, expects)
        if result < 0:
            raise _fail(expects, value)
        return result

    return Parser(parse, type_name="int | None", expects=expects)


def _lookup_id(kind: str, name: str, expects: str, value: object) -> int:
    # Names are a convenience over upstream's integer-only flags; resolved once, at parse time.
    try:
        if kind == "user":
            import pwd

            return pwd.getpwnam(name).pw_uid
        import grp

        return grp.getgrnam(name).gr_gid
    except (KeyError, ImportError):
        raise _fail(expects, value) from None


user_id = _id_parser("user")
group_id = _id_parser("group")


def class_or_path(type_name: str) -> Parser[Any]:
    """A class, a `"module:Name"` / `"module.Name"` string naming one, or None."""
    expects = "a class or an import path such as 'package.module:Name'"

    def parse(value: object) -> Any:
        if value is None:
            return None
        if isinstance(value, str):
            value = import_string(value, expects)
        if not isinstance(value, type):
            raise _fail(expects, value)
        return value

    return Parser(parse, type_name=type_name, expects=expects)


def import_string(path: str, expects: str = "an import path such as 'module:name'") -> object:
    """Import ``module:attr`` (or ``module.attr``); ``ValueError`` on any failure."""
    module_name, sep, attr = path.strip().partition(":")
    if not sep:
        module_name, _, attr = module_name.rpartition(".")
    if not module_name or not attr:
        raise _fail(expects, path)
    try:
        obj: object = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot import {path!r}: {exc}") from None
    return obj
