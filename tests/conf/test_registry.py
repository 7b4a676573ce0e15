"""The registry is the single declaration of every setting: check it is complete and sane."""

from __future__ import annotations

import pickle
import ssl
import subprocess
import sys
from typing import Any

import pytest

from hypercorn.conf.cli import build_parser
from hypercorn.conf.setting import REGISTRY, SECTIONS, Setting, settings
from hypercorn.config import Config
from hypercorn.errors import ConfigError

# Upstream Hypercorn 0.17 `Config` attributes and their defaults (src/hypercorn/config.py).
# `read_timeout` is the one deliberate change (None upstream, 60 s here: see CONTRACTS.md).
UPSTREAM_DEFAULTS: dict[str, Any] = {
    "access_log_format": '%(h)s %(l)s %(l)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"',
    "accesslog": None,
    "alpn_protocols": ["h2", "http/1.1"],
    "alt_svc_headers": [],
    "backlog": 100,
    "bind": ["127.0.0.1:8000"],
    "ca_certs": None,
    "certfile": None,
    "ciphers": "ECDHE+AESGCM",
    "debug": False,
    "dogstatsd_tags": "",
    "errorlog": "-",
    "graceful_timeout": 3.0,
    "group": None,
    "h11_max_incomplete_size": 16 * 1024,
    "h11_pass_raw_headers": False,
    "h2_max_concurrent_streams": 100,
    "h2_max_header_list_size": 2**16,
    "h2_max_inbound_frame_size": 2**14,
    "include_date_header": True,
    "include_server_header": True,
    "insecure_bind": [],
    "keep_alive_max_requests": 1000,
    "keep_alive_timeout": 5.0,
    "keyfile": None,
    "keyfile_password": None,
    "logconfig": None,
    "logconfig_dict": None,
    "loglevel": "INFO",
    "max_app_queue_size": 10,
    "max_requests": None,
    "max_requests_jitter": 0,
    "pid_path": None,
    "quic_bind": [],
    "root_path": "",
    "server_names": [],
    "shutdown_timeout": 60.0,
    "ssl_handshake_timeout": 60.0,
    "startup_timeout": 60.0,
    "statsd_host": None,
    "statsd_prefix": "",
    "umask": None,
    "use_reloader": False,
    "user": None,
    "verify_flags": None,
    "verify_mode": None,
    "websocket_max_message_size": 16 * 1024 * 1024,
    "websocket_ping_interval": None,
    "worker_class": "asyncio",
    "workers": 1,
    "wsgi_max_body_size": 16 * 1024 * 1024,
}
UPSTREAM_OTHER_ATTRIBUTES = [
    "application_path",
    "logger_class",
    "log",
    "ssl_enabled",
    "create_ssl_context",
    "create_sockets",
    "response_headers",
    "set_statsd_logger_class",
    "from_mapping",
    "from_pyfile",
    "from_toml",
    "from_object",
]
# Upstream `hypercorn --help` (src/hypercorn/__main__.py).
UPSTREAM_FLAGS = [
    "--access-log",
    "--access-logfile",
    "--access-logformat",
    "--backlog",
    "-b",
    "--bind",
    "--ca-certs",
    "--certfile",
    "--cert-reqs",
    "--ciphers",
    "-c",
    "--config",
    "--debug",
    "--error-log",
    "--error-logfile",
    "--log-file",
    "--graceful-timeout",
    "--read-timeout",
    "--max-requests",
    "--max-requests-jitter",
    "-g",
    "--group",
    "-k",
    "--worker-class",
    "--keep-alive",
    "--keyfile",
    "--keyfile-password",
    "--insecure-bind",
    "--log-config",
    "--log-level",
    "-p",
    "--pid",
    "--quic-bind",
    "--reload",
    "--root-path",
    "--server-name",
    "--statsd-host",
    "--statsd-prefix",
    "-m",
    "--umask",
    "-u",
    "--user",
    "--verify-mode",
    "--websocket-ping-interval",
    "-w",
    "--workers",
]
# The settings CONTRACTS.md section 1 adds, with their defaults and flags.
NEW_SETTINGS: dict[str, tuple[Any, tuple[str, ...]]] = {
    "application_path": ("", ()),
    "http1_parser": ("auto", ("--http1-parser",)),
    "h11_max_request_line_size": (8192, ("--h11-max-request-line-size",)),
    "h11_max_header_count": (100, ("--h11-max-header-count",)),
    "header_read_timeout": (10.0, ("--header-read-timeout",)),
    "read_timeout": (60.0, ("--read-timeout",)),
    "write_timeout": (60.0, ("--write-timeout",)),
    "max_connections": (None, ("--max-connections",)),
    "reuse_port": (False, ("--reuse-port",)),
    "preload_app": (False, ("--preload",)),
    "timeout": (30.0, ("-t", "--timeout")),
    "daemon": (False, ("-D", "--daemon")),
    "proc_name": (None, ("-n", "--name")),
    "reload_dirs": ([], ("--reload-dir",)),
    "worker_user": (None, ("--worker-user",)),
    "worker_group": (None, ("--worker-group",)),
    "strict_config": (False, ("--strict-config",)),
}


@pytest.mark.parametrize("setting", settings(), ids=lambda s: s.name)
def test_setting_is_documented(setting: Setting[Any]) -> None:
    assert setting.help.strip(), setting.name
    assert setting.help.rstrip().endswith((".", ")")), setting.name
    assert setting.section in SECTIONS
    assert setting.type_name
    assert getattr(Config, setting.name) is setting


@pytest.mark.parametrize("setting", settings(), ids=lambda s: s.name)
def test_default_survives_its_own_parser(setting: Setting[Any]) -> None:
    assert setting.parse(setting.default) == setting.default


def test_flags_are_unique() -> None:
    seen: dict[str, str] = {"-h": "help", "--help": "help", "-c": "config", "--config": "config"}
    seen["--version"] = "version"
    for setting in settings():
        for flag in setting.cli_flags:
            assert flag not in seen, f"{flag} used by {seen[flag]} and {setting.name}"
            seen[flag] = setting.name


def test_upstream_attributes_and_defaults() -> None:
    config = Config()
    for name, default in UPSTREAM_DEFAULTS.items():
        expected = 60.0 if name == "read_timeout" else default
        assert getattr(config, name) == expected, name
    for name in UPSTREAM_OTHER_ATTRIBUTES:
        assert hasattr(Config, name), name


def test_upstream_flags_exist() -> None:
    option_strings = set(build_parser()._option_string_actions)
    missing = [flag for flag in UPSTREAM_FLAGS if flag not in option_strings]
    assert missing == []


@pytest.mark.parametrize("name", sorted(NEW_SETTINGS))
def test_new_settings(name: str) -> None:
    default, flags = NEW_SETTINGS[name]
    assert REGISTRY[name].default == default
    assert REGISTRY[name].flags == flags


def test_worker_class_choices() -> None:
    config = Config()
    for choice in ("asyncio", "uvloop", "trio"):
        config.worker_class = choice
        assert config.worker_class == choice
    with pytest.raises(ConfigError, match=r"^worker_class: expected one of"):
        config.worker_class = "gevent"


def test_list_defaults_are_not_shared() -> None:
    first, second = Config(), Config()
    first.bind.append("0.0.0.0:80")
    first.alpn_protocols.remove("h2")
    assert second.bind == ["127.0.0.1:8000"]
    assert second.alpn_protocols == ["h2", "http/1.1"]
    assert REGISTRY["bind"].default == ["127.0.0.1:8000"]


def test_assignment_is_validated() -> None:
    config = Config()
    with pytest.raises(ConfigError) as info:
        config.workers = -1
    assert str(info.value) == "workers: expected a non-negative integer, got -1"
    with pytest.raises(ConfigError, match=r"^keep_alive_timeout: "):
        config.keep_alive_timeout = "soon"
    with pytest.raises(ConfigError, match=r"^bind: "):
        config.bind = 8000
    assert config.workers == 1  # unchanged after a failed assignment


def test_upstream_assignment_conveniences() -> None:
    config = Config()
    config.bind = "0.0.0.0:80"
    assert config.bind == ["0.0.0.0:80"]
    config.root_path = "/api/"
    assert config.root_path == "/api"
    config.verify_mode = "CERT_REQUIRED"
    assert config.verify_mode is ssl.VerifyMode.CERT_REQUIRED
    with pytest.warns(DeprecationWarning, match="verify_mode"):
        config.cert_reqs = ssl.CERT_OPTIONAL
    assert Config.verify_mode.__get__(config) is ssl.VerifyMode.CERT_OPTIONAL
    config.verify_flags = "VERIFY_X509_STRICT|VERIFY_CRL_CHECK_LEAF"
    assert config.verify_flags == ssl.VERIFY_X509_STRICT | ssl.VERIFY_CRL_CHECK_LEAF
    config.umask = "022"
    assert config.umask == 0o22
    config.user = "root"
    assert config.user == 0
    config.loglevel = "debug"
    assert config.loglevel == "DEBUG"
    config.max_requests = "none"
    assert config.max_requests is None
    config.keep_alive_timeout = 10
    assert config.keep_alive_timeout == 10.0
    assert isinstance(config.keep_alive_timeout, float)


def test_pickles_without_the_logger() -> None:
    config = Config()
    config.workers = 4
    config.bind = ["127.0.0.1:0", "unix:/tmp/x.sock"]
    copy = pickle.loads(pickle.dumps(config))
    assert copy.workers == 4
    assert copy.bind == ["127.0.0.1:0", "unix:/tmp/x.sock"]
    assert copy.keep_alive_timeout == 5.0


def test_response_headers() -> None:
    config = Config()
    headers = dict(config.response_headers("h11"))
    assert headers[b"server"] == b"hypercorn-h11"
    assert headers[b"date"].endswith(b" GMT")
    config.include_server_header = False
    config.include_date_header = False
    config.alt_svc_headers = ['h3=":443"; ma=3600']
    assert config.response_headers("h2") == [(b"alt-svc", b'h3=":443"; ma=3600')]


def test_log_is_built_lazily_and_cached() -> None:
    from hypercorn.logging import Logger

    class MyLogger(Logger):
        pass

    config = Config()
    config.errorlog = None
    config.logger_class = MyLogger
    assert isinstance(config.log, MyLogger)
    assert config.log is config.log
    with pytest.raises(ConfigError, match=r"^logger_class: "):
        config.logger_class = 42


def test_conf_imports_no_event_loop_or_worker_modules() -> None:
    code = (
        "import sys, hypercorn.config, hypercorn.conf.cli;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('asyncio', 'trio', 'uvloop', 'anyio') "
        "or m.startswith(('hypercorn.workers', 'hypercorn.arbiter', 'hypercorn.protocols'))))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30
    )
    assert result.stdout.strip() == "[]"


def test_subclass_class_attributes_still_work_and_validate() -> None:
    class MyConfig(Config):
        workers = 4
        keep_alive_timeout = 30.0

    config = MyConfig()
    assert config.workers == 4
    assert config.keep_alive_timeout == 30.0
    with pytest.raises(ConfigError, match=r"^workers: "):
        setattr(config, "workers", "x")  # noqa: B010 - the class attribute is a plain int here
    setattr(config, "workers", "2")  # noqa: B010
    assert config.workers == 2


def test_repr_shows_changes_and_hides_secrets() -> None:
    config = Config()
    config.workers = 3
    config.keyfile_password = "hunter2"
    assert config.keep_alive_timeout == 5.0  # a read stores the default; not a change
    assert repr(config) == "Config(workers=3, keyfile_password=***)"
