"""WSGI (PEP 3333) environ building and ``start_response`` validation.

Pure functions: no threads, no event loop, no clock. The thread hop and the streaming of the
response live in ``hypercorn.workers.wsgi_bridge``; this module only turns an ASGI HTTP scope
plus the request body into an environ, and a WSGI status line plus header list into the
``(status_code, [(name, value), ...])`` pair an ASGI ``http.response.start`` message carries.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Mapping
from io import BytesIO
from typing import Any

__all__ = [
    "InvalidPathError",
    "UnderscoreHeaderError",
    "WSGIResponseError",
    "build_environ",
    "encode_response_head",
    "encode_response_headers",
    "parse_status",
]


class InvalidPathError(Exception):
    """The request path does not lie under the configured ``root_path`` (answered with 404)."""


class WSGIResponseError(Exception):
    """The application broke PEP 3333 in ``start_response`` (bad status or headers)."""


class UnderscoreHeaderError(Exception):
    """A request header name contains ``_`` and ``header_map`` is "refuse" (answered 400)."""


_DEFAULT_PORTS = {"http": "80", "https": "443", "ws": "80", "wss": "443"}

# RFC 9110 token characters for header names.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# CR, LF and NUL would let an application (or the data it echoes) split the response.
_FORBIDDEN_VALUE = re.compile(r"[\r\n\x00]")


def build_environ(
    scope: Mapping[str, Any], body: bytes, errors: Any = None, header_map: str = "drop"
) -> dict[str, Any]:
    """Build a PEP 3333 environ for an ASGI HTTP ``scope`` whose whole body is ``body``.

    ``SCRIPT_NAME`` is the scope's ``root_path`` and ``PATH_INFO`` the rest of the path, both
    as the latin-1 decoding of their UTF-8 bytes ("bytes-as-unicode"). Repeated request
    headers are joined with ``","``. Header names containing ``_`` are left out
    (``header_map="drop"``, as gunicorn and mod_wsgi do), raise ``UnderscoreHeaderError``
    ("refuse") or are mapped like the others ("dangerous"). Raises ``InvalidPathError`` when
    the path does not start with ``root_path``.
    """
    try:
        # Subscripts, not ``.get``: the server's scopes have every key, and a method call per
        # key costs several subscripts. A hand-made scope may leave the optional ones out.
        path: str = scope["path"]
        script_name: str | None = scope["root_path"]
        scheme: str | None = scope["scheme"]
        server = scope["server"]
        http_version: str = scope["http_version"]
        query_string: bytes = scope["query_string"]
        client = scope["client"]
        headers: Iterable[tuple[bytes, bytes]] = scope["headers"]
    except KeyError:
        if "path" not in scope:
            raise
        return build_environ({**_SCOPE_DEFAULTS, **scope}, body, errors, header_map)
    if script_name:
        if path == script_name or path.startswith(script_name + "/"):
            path = path[len(script_name) :] or "/"
        elif script_name.endswith("/") and path.startswith(script_name):
            path = "/" + path[len(script_name) :]
            script_name = script_name[:-1]
        else:
            raise InvalidPathError(path)
        script_name = _bytes_as_unicode(script_name)

    # What a connection's requests share comes from a template (a dict copy costs a fraction
    # of building the same dict key by key); the rest overwrites its placeholders in place.
    try:
        template = _TEMPLATES[scheme, server, http_version]
    except (KeyError, TypeError):  # (TypeError: an unhashable server in a hand-made scope)
        template = _template(scheme or "http", server, http_version)
    environ = template.copy()
    environ["REQUEST_METHOD"] = scope["method"]
    if script_name:
        environ["SCRIPT_NAME"] = script_name
    environ["PATH_INFO"] = path if path.isascii() else _bytes_as_unicode(path)
    if query_string:
        environ["QUERY_STRING"] = query_string.decode("latin-1")
    environ["wsgi.input"] = BytesIO(body)
    environ["wsgi.errors"] = errors if errors is not None else sys.stderr
    if client is not None:
        host = client[0]
        environ["REMOTE_ADDR"] = host if type(host) is str else str(host)
        if len(client) > 1 and client[1] is not None:
            environ["REMOTE_PORT"] = str(client[1])

    keys = _ENVIRON_KEYS
    for raw_name, raw_value in headers:
        key = keys.get(raw_name)
        if key is None:
            if b"_" in raw_name and header_map != "dangerous":
                if header_map == "refuse":
                    raise UnderscoreHeaderError(raw_name.decode("latin-1"))
                continue
            key = _environ_key(raw_name)
        value = raw_value.decode("latin-1")
        if key in environ:  # (no template key is a header's)
            environ[key] = environ[key] + "," + value
        else:
            environ[key] = value
    return environ


#: What a scope without the optional keys means (ASGI's defaults).
_SCOPE_DEFAULTS: dict[str, Any] = {
    "root_path": "",
    "scheme": "http",
    "server": None,
    "http_version": "1.1",
    "query_string": b"",
    "client": None,
    "headers": (),
}


_PROTOCOLS = {"1.1": "HTTP/1.1", "1.0": "HTTP/1.0", "2": "HTTP/2", "3": "HTTP/3"}
#: (scheme, server, http_version) -> the environ keys every request there shares, with
#: placeholders for the per-request ones (so that setting them does not grow the dict).
#: Bounded like the caches below (past the cap, templates are built every time).
_TEMPLATES: dict[tuple[str | None, Any, str], dict[str, Any]] = {}


def _template(scheme: str, server: Any, http_version: str) -> dict[str, Any]:
    if server is None:
        server_name, server_port = "localhost", _DEFAULT_PORTS.get(scheme, "80")
    else:
        server_name = str(server[0])
        port = server[1] if len(server) > 1 else None
        server_port = str(port) if port is not None else _DEFAULT_PORTS.get(scheme, "80")
    template: dict[str, Any] = {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": "/",
        "QUERY_STRING": "",
        "SERVER_NAME": server_name,
        "SERVER_PORT": server_port,
        "SERVER_PROTOCOL": _PROTOCOLS.get(http_version) or "HTTP/" + http_version,
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scheme,
        "wsgi.input": None,
        "wsgi.errors": None,
        "wsgi.input_terminated": True,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    if len(_TEMPLATES) < _CACHE_LIMIT:
        try:
            _TEMPLATES[scheme, server, http_version] = template
        except TypeError:
            pass
    return template


# Raw header name -> environ key. Bounded: a client sending endless distinct names cannot
# grow it without limit (after the cap, names are converted every time). Names with "_" are
# never cached, so that every lookup of one goes through the header_map check.
_ENVIRON_KEYS: dict[bytes, str] = {}
_CACHE_LIMIT = 512


def _environ_key(raw_name: bytes) -> str:
    name = raw_name.decode("latin-1").lower()
    if name == "content-length":
        key = "CONTENT_LENGTH"
    elif name == "content-type":
        key = "CONTENT_TYPE"
    else:
        key = "HTTP_" + name.upper().replace("-", "_")
    if len(_ENVIRON_KEYS) < _CACHE_LIMIT and b"_" not in raw_name:
        _ENVIRON_KEYS[raw_name] = key
    return key


def _bytes_as_unicode(text: str) -> str:
    # PEP 3333 "native strings": the UTF-8 bytes of the path, each byte one code point.
    return text if text.isascii() else text.encode("utf-8", "surrogateescape").decode("latin-1")


def parse_status(status: object) -> int:
    """Validate a WSGI status line (``"200 OK"``) and return its numeric code."""
    code = _STATUS_CODES.get(status) if type(status) is str else None
    if code is not None:
        return code
    if not isinstance(status, str):
        raise WSGIResponseError(f"status must be a str, got {type(status).__name__}")
    digits = status[:3]
    if (
        len(digits) != 3
        or not digits.isdigit()
        or not digits.isascii()
        or (len(status) > 3 and status[3] != " ")
        or _FORBIDDEN_VALUE.search(status) is not None
    ):
        raise WSGIResponseError(f"invalid status line {status!r}, expected e.g. '200 OK'")
    code = int(digits)
    if code < 100:
        raise WSGIResponseError(f"invalid status code {code} in {status!r}")
    if len(_STATUS_CODES) < _CACHE_LIMIT:
        _STATUS_CODES[status] = code
    return code


_STATUS_CODES: dict[object, int] = {}
# Validated header name -> its lower-case ASCII bytes.
_HEADER_NAMES: dict[str, bytes] = {}


def encode_response_headers(headers: object) -> list[tuple[bytes, bytes]]:
    """Validate a WSGI header list and encode it for ASGI (lower-case latin-1 names)."""
    return encode_response_head(headers)[0]


def encode_response_head(headers: object) -> tuple[list[tuple[bytes, bytes]], bool]:
    """``encode_response_headers``, and whether the list frames the body itself (has a
    Content-Length or Transfer-Encoding). Apps send the same few lists over and over: those
    seen before (hashable, valid) come from a bounded memo."""
    if type(headers) is list:
        try:
            known = _KNOWN_HEADS.get(tuple(headers))
        except TypeError:  # (unhashable items: validated below, which says what is wrong)
            known = None
        if known is not None:
            return list(known[0]), known[1]
    encoded = _encode_headers(headers)
    framed = any(name in _FRAMING_HEADERS for name, _ in encoded)
    if len(_KNOWN_HEADS) < _CACHE_LIMIT:
        try:
            _KNOWN_HEADS[tuple(headers)] = (tuple(encoded), framed)  # type: ignore[arg-type]
        except TypeError:
            pass
    return encoded, framed


_KNOWN_HEADS: dict[tuple[Any, ...], tuple[tuple[tuple[bytes, bytes], ...], bool]] = {}
_FRAMING_HEADERS = frozenset((b"content-length", b"transfer-encoding"))


def _encode_headers(headers: object) -> list[tuple[bytes, bytes]]:
    if not isinstance(headers, list):
        raise WSGIResponseError(f"headers must be a list, got {type(headers).__name__}")
    names = _HEADER_NAMES
    encoded: list[tuple[bytes, bytes]] = []
    for header in headers:
        if not isinstance(header, tuple) or len(header) != 2:
            raise WSGIResponseError(f"each header must be a (name, value) tuple, got {header!r}")
        name, value = header
        if type(value) is not str:
            raise WSGIResponseError(f"header name and value must be str, got {header!r}")
        raw_name = names.get(name) if type(name) is str else None
        if raw_name is None:
            raw_name = _validate_name(name, header)
        if "\n" in value or "\r" in value or "\x00" in value:
            raise WSGIResponseError(f"invalid character in header {name!r}: {value!r}")
        try:
            encoded.append((raw_name, value.encode("latin-1")))
        except UnicodeEncodeError as error:
            raise WSGIResponseError(f"header {name!r} is not latin-1: {value!r}") from error
    return encoded


def _validate_name(name: object, header: object) -> bytes:
    if not isinstance(name, str):
        raise WSGIResponseError(f"header name and value must be str, got {header!r}")
    if _TOKEN.fullmatch(name) is None:
        raise WSGIResponseError(f"invalid header name {name!r}")
    raw = name.lower().encode("ascii")
    if len(_HEADER_NAMES) < _CACHE_LIMIT:
        _HEADER_NAMES[name] = raw
    return raw


def has_header(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> bool:
    """True if the encoded (lower-case) header list contains ``name``."""
    return any(key == name for key, _ in headers)
