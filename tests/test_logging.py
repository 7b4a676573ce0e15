"""Access-log atoms, control-character escaping, log targets, logconfig and file reopening."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hypercorn.config import Config
from hypercorn.logging import MULTILINE, AccessLogAtoms, Logger, escape_control


class ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    @property
    def messages(self) -> list[str]:
        return [record.getMessage() for record in self.records]


@pytest.fixture(autouse=True)
def restore_hypercorn_loggers() -> Iterator[None]:
    """Each Logger(config) reconfigures the named loggers; put them back afterwards."""
    saved = {}
    for name in ("hypercorn.error", "hypercorn.access"):
        logger = logging.getLogger(name)
        saved[name] = (list(logger.handlers), list(logger.filters), logger.level, logger.propagate)
    yield
    for name, (handlers, filters, level, propagate) in saved.items():
        logger = logging.getLogger(name)
        for handler in logger.handlers:
            if handler not in handlers:
                handler.close()
        logger.handlers = handlers
        logger.filters = filters
        logger.setLevel(level)
        logger.propagate = propagate
        logger.disabled = False


@pytest.fixture
def access() -> Iterator[tuple[logging.Logger, ListHandler]]:
    logger = logging.getLogger("tests.access")
    handler = ListHandler()
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield logger, handler
    logger.removeHandler(handler)


def http_scope(**overrides: Any) -> dict[str, Any]:
    scope: dict[str, Any] = {
        "type": "http",
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/items/1",
        "raw_path": b"/items/1",
        "query_string": b"q=2&r=3",
        "root_path": "",
        "headers": [
            (b"host", b"example.com"),
            (b"user-agent", b"curl/8.0"),
            (b"referer", b"http://ref.example/"),
            (b"x-multi", b"a"),
            (b"x-multi", b"b"),
        ],
        "client": ("127.0.0.1", 51234),
        "server": ("127.0.0.1", 8000),
    }
    scope.update(overrides)
    return scope


def access_line(
    access: tuple[logging.Logger, ListHandler],
    fmt: str,
    scope: dict[str, Any] | None = None,
    *,
    status: int = 200,
    length: int | None = 12,
    request_time: float = 1.5,
    response_headers: list[tuple[bytes, bytes]] | None = None,
) -> str:
    logger, handler = access
    config = Config()
    config.accesslog = logger
    config.access_log_format = fmt
    log = Logger(config)
    assert log.access_enabled
    log.log_access(
        scope or http_scope(),
        status,
        length,
        request_time,
        response_headers=response_headers or [(b"content-type", b"text/plain")],
    )
    return handler.messages[-1]


def test_default_format(access: tuple[logging.Logger, ListHandler]) -> None:
    line = access_line(access, Config().access_log_format)
    assert line.startswith("127.0.0.1:51234 - - [")
    assert line.endswith('] "GET /items/1 1.1" 200 12 "http://ref.example/" "curl/8.0"')


@pytest.mark.parametrize(
    ("atom", "expected"),
    [
        ("h", "127.0.0.1:51234"),
        ("l", "-"),
        ("u", "-"),
        ("r", "GET /items/1 1.1"),
        ("R", "GET /items/1?q=2&r=3 1.1"),
        ("m", "GET"),
        ("U", "/items/1"),
        ("Uq", "/items/1?q=2&r=3"),
        ("q", "q=2&r=3"),
        ("H", "1.1"),
        ("s", "201"),
        ("st", "Created"),
        ("S", "http"),
        ("b", "12"),
        ("B", "12"),
        ("f", "http://ref.example/"),
        ("a", "curl/8.0"),
        ("T", "1"),
        ("D", "1500000"),
        ("L", "1.500000"),
        ("p", f"<{os.getpid()}>"),
        ("{host}i", "example.com"),
        ("{User-Agent}i", "curl/8.0"),
        ("{x-multi}i", "a,b"),
        ("{absent}i", "-"),
        ("{content-type}o", "text/plain"),
        ("nonsense", "-"),
    ],
)
def test_atoms(access: tuple[logging.Logger, ListHandler], atom: str, expected: str) -> None:
    assert access_line(access, f"%({atom})s", status=201) == expected


def test_time_atom(access: tuple[logging.Logger, ListHandler]) -> None:
    line = access_line(access, "%(t)s")
    assert line.startswith("[")
    assert line.endswith("]")
    assert len(line.split(":")) == 4  # [dd/Mon/yyyy:HH:MM:SS +zzzz]


def test_environ_atom(
    access: tuple[logging.Logger, ListHandler], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HC_TEST_REGION", "eu-west")
    assert access_line(access, "%({hc_test_region}e)s") == "eu-west"


def test_length_falls_back_to_content_length_header(
    access: tuple[logging.Logger, ListHandler],
) -> None:
    headers = [(b"content-length", b"99")]
    assert access_line(access, "%(b)s", length=None, response_headers=headers) == "99"
    assert access_line(access, "%(b)s", length=None) == "-"


def test_unknown_status_phrase(access: tuple[logging.Logger, ListHandler]) -> None:
    assert access_line(access, "%(st)s", status=599) == "<???599???>"


def test_websocket_scope(access: tuple[logging.Logger, ListHandler]) -> None:
    scope = http_scope(type="websocket", scheme="ws")
    del scope["method"]
    assert access_line(access, "%(r)s %(S)s", scope) == "GET /items/1 1.1 ws"


def test_client_shapes(access: tuple[logging.Logger, ListHandler]) -> None:
    assert access_line(access, "%(h)s", http_scope(client=None)) == "-"
    assert access_line(access, "%(h)s", http_scope(client=("/tmp/sock",))) == "/tmp/sock"


def test_control_characters_in_request_are_escaped(
    access: tuple[logging.Logger, ListHandler],
) -> None:
    scope = http_scope(
        path="/\x1b[31mred\r\nfake line",
        query_string=b"a=\x07",
        headers=[(b"user-agent", b"evil\x1b]0;title\x07"), (b"referer", b"\x00")],
    )
    line = access_line(access, '"%(r)s" "%(q)s" "%(a)s" "%(f)s" %(U)s', scope)
    assert "\x1b" not in line
    assert "\r" not in line
    assert "\n" not in line
    assert "\x07" not in line
    assert "\\x1b[31mred\\x0d\\x0afake line" in line
    assert '"a=\\x07"' in line
    assert '"evil\\x1b]0;title\\x07"' in line
    assert '"\\x00"' in line


def test_escape_control() -> None:
    assert escape_control("plain text é") == "plain text é"
    assert escape_control("a\x1bb\x7fc\x85") == "a\\x1bb\\x7fc\\x85"


def error_file_logger(tmp_path: Path) -> tuple[logging.Logger, Path]:
    path = tmp_path / "error.log"
    config = Config()
    config.errorlog = str(path)
    log = Logger(config)
    assert log.error_logger is not None
    return log.error_logger, path


def test_error_log_escapes_control_characters_in_messages(tmp_path: Path) -> None:
    logger, path = error_file_logger(tmp_path)
    logger.warning("bad request %r: %s", "x", "\x1b[2Jgone\r\n[forged] line\tTab")
    text = path.read_text()
    assert "\x1b" not in text
    assert "\\x1b[2Jgone\\x0d\\x0a[forged] line\tTab" in text
    assert text.count("\n") == 1


def test_error_log_escapes_exception_messages_but_keeps_the_traceback(tmp_path: Path) -> None:
    logger, path = error_file_logger(tmp_path)
    try:
        try:
            raise KeyError("inner\x1b")
        except KeyError as inner:
            raise LookupError("no route for /c\n[2030-01-01] [INFO] forged") from inner
    except LookupError:
        logger.exception("Error in ASGI Framework")
    text = path.read_text()
    assert "\x1b" not in text
    assert "LookupError: no route for /c\\x0a[2030-01-01] [INFO] forged\n" in text
    assert "KeyError: 'inner\\x1b'" in text
    assert "The above exception was the direct cause" in text
    assert "Traceback (most recent call last):\n" in text
    assert not [line for line in text.splitlines() if line.startswith("[2030")]


def test_trusted_multiline_messages_keep_newlines(tmp_path: Path) -> None:
    logger, path = error_file_logger(tmp_path)
    logger.error("first\nsecond\x1b", extra={MULTILINE: True})
    text = path.read_text()
    assert "first\nsecond\\x1b" in text


def test_access_disabled_without_accesslog() -> None:
    config = Config()
    assert config.accesslog is None
    log = Logger(config)
    assert log.access_enabled is False
    assert log.access_logger is None
    log.log_access(http_scope(), 200, 0, 0.1)  # a no-op, not an error


def test_access_disabled_by_log_level(access: tuple[logging.Logger, ListHandler]) -> None:
    logger, _ = access
    logger.setLevel(logging.WARNING)
    config = Config()
    config.accesslog = logger
    assert Logger(config).access_enabled is False


def test_access_and_error_log_targets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = Config()
    config.accesslog = "-"
    config.errorlog = str(tmp_path / "errors.log")
    log = Logger(config)
    log.log_access(http_scope(), 200, 5, 0.01)
    assert log.error_logger is not None
    log.error_logger.info("to the file")
    captured = capsys.readouterr()
    assert '"GET /items/1 1.1" 200 5' in captured.out
    assert "to the file" in (tmp_path / "errors.log").read_text()
    assert "to the file" not in captured.err


def test_error_log_to_stderr_with_level(capsys: pytest.CaptureFixture[str]) -> None:
    config = Config()
    config.loglevel = "WARNING"
    log = Logger(config)
    assert log.error_logger is not None
    log.error_logger.info("hidden")
    log.error_logger.warning("shown")
    err = capsys.readouterr().err
    assert "shown" in err
    assert "[WARNING]" in err
    assert "hidden" not in err


def test_reopen_files(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    config = Config()
    config.accesslog = str(path)
    log = Logger(config)
    log.log_access(http_scope(), 200, 1, 0.0)
    rotated = tmp_path / "access.log.1"
    path.rename(rotated)
    log.reopen_files()
    log.log_access(http_scope(path="/after"), 200, 1, 0.0)
    assert "/items/1" in rotated.read_text()
    assert "/after" in path.read_text()
    assert "/after" not in rotated.read_text()


def test_building_twice_closes_the_first_files(tmp_path: Path) -> None:
    config = Config()
    config.accesslog = str(tmp_path / "a.log")
    first = Logger(config)
    assert first.access_logger is not None
    (handler,) = first.access_logger.handlers
    assert isinstance(handler, logging.FileHandler)
    Logger(config)
    assert handler.stream is None  # closed


def test_custom_atoms_override(access: tuple[logging.Logger, ListHandler]) -> None:
    logger, handler = access

    class TaggingLogger(Logger):
        def atoms(self, request: Any, response: Any, request_time: float) -> Any:
            atoms = dict(super().atoms(request, response, request_time))
            atoms["tag"] = "custom"
            return atoms

    config = Config()
    config.accesslog = logger
    config.access_log_format = "%(tag)s %(s)s %(m)s"
    TaggingLogger(config).log_access(http_scope(), 204, None, 0.0)
    assert handler.messages[-1] == "custom 204 GET"


def test_access_log_atoms_mapping() -> None:
    atoms = AccessLogAtoms(
        http_scope(), {"status": 200, "headers": [(b"Content-Length", b"7")]}, 0.25
    )
    assert atoms["s"] == 200
    assert atoms["{content-length}o"] == "7"
    assert atoms["{HOST}i"] == "example.com"
    assert atoms["missing"] == "-"


def test_upstream_async_methods(access: tuple[logging.Logger, ListHandler]) -> None:
    logger, handler = access
    config = Config()
    config.errorlog = logger
    config.accesslog = logger
    log = Logger(config)

    async def main() -> None:
        await log.info("info %s", 1)
        await log.warning("warning")
        await log.error("error")
        await log.critical("critical")
        await log.debug("debug")  # below INFO
        await log.log(logging.INFO, "log")
        try:
            raise ValueError("x")
        except ValueError:
            await log.exception("exception")
        await log.access(http_scope(), {"status": 200, "headers": []}, 0.0)

    asyncio.run(main())
    messages = handler.messages
    assert messages[:6] == ["info 1", "warning", "error", "critical", "log", "exception"]
    assert messages[6].startswith("127.0.0.1:51234 - - [")


def test_logconfig_dict() -> None:
    handler_name = "tests.logconfig_dict"
    config = Config()
    config.logconfig_dict = {
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {handler_name: {"class": "logging.NullHandler"}},
        "loggers": {"hypercorn.error": {"handlers": [handler_name], "level": "DEBUG"}},
    }
    log = Logger(config)
    assert log.error_logger is not None
    assert log.error_logger.level == logging.DEBUG
    assert [type(h) for h in log.error_logger.handlers] == [logging.NullHandler]


def _dict_config(level: str) -> dict[str, Any]:
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "loggers": {"hypercorn.error": {"level": level}},
    }


def test_logconfig_json(tmp_path: Path) -> None:
    path = tmp_path / "log.json"
    path.write_text(json.dumps(_dict_config("ERROR")))
    config = Config()
    config.logconfig = f"json:{path}"
    log = Logger(config)
    assert log.error_logger is not None
    assert log.error_logger.level == logging.ERROR


def test_logconfig_toml(tmp_path: Path) -> None:
    path = tmp_path / "log.toml"
    path.write_text(
        "version = 1\ndisable_existing_loggers = false\n"
        '[loggers."hypercorn.error"]\nlevel = "CRITICAL"\n'
    )
    config = Config()
    config.logconfig = f"toml:{path}"
    log = Logger(config)
    assert log.error_logger is not None
    assert log.error_logger.level == logging.CRITICAL


@pytest.mark.parametrize("prefix", ["", "file:"])
def test_logconfig_ini(tmp_path: Path, prefix: str) -> None:
    path = tmp_path / "log.ini"
    path.write_text(
        "[loggers]\nkeys=root,error\n\n"
        "[handlers]\nkeys=null\n\n"
        "[formatters]\nkeys=\n\n"
        "[logger_root]\nhandlers=\n\n"
        "[logger_error]\nlevel=DEBUG\nhandlers=null\nqualname=hypercorn.error\n\n"
        "[handler_null]\nclass=NullHandler\nargs=()\n"
    )
    config = Config()
    config.logconfig = f"{prefix}{path}"
    log = Logger(config)
    assert log.error_logger is not None
    assert log.error_logger.level == logging.DEBUG
    assert [type(h) for h in log.error_logger.handlers] == [logging.NullHandler]


def test_config_log_is_a_logger() -> None:
    assert isinstance(Config().log, Logger)


def test_unknown_attributes_are_the_error_loggers(
    access: tuple[logging.Logger, ListHandler],
) -> None:
    """Upstream's Logger forwards unknown attributes to its error logger (issue 10 item 7)."""
    logger, handler = access
    config = Config()
    config.errorlog = logger
    log = Logger(config)
    assert log.getEffectiveLevel() == logging.INFO
    assert log.isEnabledFor(logging.INFO)
    assert not log.isEnabledFor(logging.DEBUG)
    log.setLevel(logging.DEBUG)
    assert logger.level == logging.DEBUG
    assert log.isEnabledFor(logging.DEBUG)
    assert handler in log.handlers
    assert log.name == "tests.access"
    with pytest.raises(AttributeError, match="no_such_thing"):
        log.no_such_thing  # noqa: B018 - the lookup is the test


def test_delegation_without_an_error_log() -> None:
    config = Config()
    config.errorlog = None
    log = Logger(config)
    assert log.error_logger is None
    assert log.name == "hypercorn.error"
    assert isinstance(log.getEffectiveLevel(), int)


def test_delegation_keeps_the_logger_copyable() -> None:
    import copy

    log = Config().log
    assert copy.copy(log).error_logger is log.error_logger


def test_bad_logging_setup_is_one_config_error_naming_the_setting(tmp_path: Path) -> None:
    from hypercorn.errors import ConfigError

    broken = tmp_path / "log.json"
    broken.write_text("{not json")
    config = Config()
    config.logconfig = f"json:{broken}"
    with pytest.raises(ConfigError, match=r"^logconfig: invalid logging configuration in "):
        Logger(config)
    config = Config()
    config.logconfig_dict = {"version": 99}
    with pytest.raises(ConfigError, match=r"^logconfig_dict: invalid logging configuration: "):
        Logger(config)
    config = Config()
    config.accesslog = str(tmp_path / "missing-dir" / "access.log")
    with pytest.raises(ConfigError, match=r"^accesslog: cannot open '.*access\.log': No such"):
        Logger(config)
