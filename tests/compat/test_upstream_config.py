"""Upstream Hypercorn 0.18 configurations, loaded unchanged by this server (issue 12).

Bind spellings, config files and mappings with stray keys, values upstream accepts, and the
differences page. Where upstream's behaviour is only known by running it, the ``upstream``
fixture runs upstream Hypercorn 0.18 from its own venv and the two are compared directly.
"""

from __future__ import annotations

import io
import socket
import textwrap
import warnings
from pathlib import Path

import pytest

from hypercorn.arbiter.sockets import close_sockets, split_host_port
from hypercorn.conf import REGISTRY
from hypercorn.conf.cli import config_from_args
from hypercorn.config import Config, UnknownSettingWarning
from hypercorn.errors import BootError
from tests.compat.conftest import Upstream, hypercorn_cli
from tests.support.procs import http_get, running, write_app

# ------------------------------------------------------------------------------ bind spellings

BIND_SPELLINGS = [
    "127.0.0.1:8000",
    "localhost:8000",
    "127.0.0.1",
    ":::8000",
    "::1:8000",
    "[::1]:8000",
    "[::]:8000",
    "::ffff:127.0.0.1:8000",
    "fe80::1:8000",
]


@pytest.mark.timeout(600)  # the first use of `upstream` may install it
def test_bind_spellings_mean_what_they_mean_upstream(upstream: Upstream) -> None:
    """Every TCP bind spelling upstream binds, binds the same (host, port) here (item 2)."""
    theirs = upstream.run_json(
        f"""
        import json, socket
        from hypercorn.config import Config

        seen = []
        socket.socket.bind = lambda self, address: seen.append(list(address))
        result = {{}}
        for bind in {BIND_SPELLINGS!r}:
            seen.clear()
            Config()._create_sockets([bind])
            result[bind] = seen[0]
        print(json.dumps(result))
        """
    )
    ours = {bind: list(split_host_port(bind)) for bind in BIND_SPELLINGS}
    assert ours == theirs


@pytest.mark.parametrize("bind", ["::1:0", "[::1]:0"])
def test_unbracketed_ipv6_binds(bind: str) -> None:
    config = Config()
    config.bind = [bind]
    try:
        sockets = config.create_sockets()
    except BootError as exc:
        pytest.skip(f"IPv6 loopback unavailable: {exc}")
    try:
        (sock,) = sockets.insecure_sockets
        assert sock.family == socket.AF_INET6
        assert sock.getsockname()[0] == "::1"
    finally:
        close_sockets(sockets)


@pytest.mark.parametrize(("bind", "host"), [("::1", "::1"), ("fe80::1", "fe80::1"), ("::", "::")])
def test_bare_ipv6_addresses_take_the_default_port(bind: str, host: str) -> None:
    # Upstream reads "::1" as host ":" port 1 and fails; the whole address is meant.
    assert split_host_port(bind) == (host, 8000)


# ------------------------------------------------------------------------------ unknown keys

STRAY_TOML = """
workers = 2
keep_alive_timeout = 7
worker_connections = 1000

[tool.hypercorn]
bind = "127.0.0.1:9000"
"""

PYFILE = """
import os

PORT = 9000
bind = f"127.0.0.1:{PORT}"
keepalive_timeout = 10

def helper():
    return "helped"
"""

_READ_BACK = """
result = {
    "workers": config.workers,
    "keep_alive_timeout": config.keep_alive_timeout,
    "bind": config.bind,
    "worker_connections": config.worker_connections,
    "tool": config.tool,
    "bogus": mapped.bogus,
    "PORT": pyconfig.PORT,
    "keepalive_timeout": pyconfig.keepalive_timeout,
    "helper": pyconfig.helper(),
    "pybind": pyconfig.bind,
}
"""


@pytest.mark.timeout(600)  # the first use of `upstream` may install it
def test_stray_keys_load_as_they_do_upstream(upstream: Upstream, tmp_path: Path) -> None:
    """A stray TOML key, a [tool.hypercorn] table, an unknown mapping key and a Python
    config's helpers load as upstream loads them (item 5), with one warning per stray key."""
    toml_file = tmp_path / "hypercorn.toml"
    toml_file.write_text(STRAY_TOML)
    pyfile = tmp_path / "conf.py"
    pyfile.write_text(PYFILE)
    load = f"""
        import json
        from hypercorn.config import Config

        config = Config.from_toml({str(toml_file)!r})
        mapped = Config.from_mapping({{"bogus": 1}})
        pyconfig = Config.from_pyfile({str(pyfile)!r})
        """
    theirs = upstream.run_json(textwrap.dedent(load) + _READ_BACK + "print(json.dumps(result))\n")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        config = Config.from_toml(toml_file)
        mapped = Config.from_mapping({"bogus": 1})
        pyconfig = Config.from_pyfile(pyfile)
    assert {w.category for w in record} == {UnknownSettingWarning}
    namespace = {"config": config, "mapped": mapped, "pyconfig": pyconfig}
    exec(_READ_BACK, namespace)
    assert namespace["result"] == theirs
    assert [str(w.message) for w in record] == [
        f"{toml_file}: 'worker_connections' is not a Hypercorn setting"
        " (did you mean 'max_connections'?)",
        f"{toml_file}: 'tool' is not a Hypercorn setting",
        "'bogus' is not a Hypercorn setting",
        f"{pyfile}: 'keepalive_timeout' is not a Hypercorn setting"
        " (did you mean 'keep_alive_timeout'?)",
    ]


def test_cli_warns_once_per_stray_key_and_serves(tmp_path: Path) -> None:
    toml_file = tmp_path / "hypercorn.toml"
    toml_file.write_text(STRAY_TOML)
    err = io.StringIO()
    config = config_from_args(["-c", str(toml_file), "app:app"], stderr=err)
    assert config.workers == 2
    assert err.getvalue().splitlines() == [
        f"hypercorn: warning: {toml_file}: 'worker_connections' is not a Hypercorn setting"
        " (did you mean 'max_connections'?)",
        f"hypercorn: warning: {toml_file}: 'tool' is not a Hypercorn setting",
    ]


def test_strict_config_exits_2_with_one_line(tmp_path: Path) -> None:
    toml_file = tmp_path / "hypercorn.toml"
    toml_file.write_text(STRAY_TOML)
    result = hypercorn_cli(["--strict-config", "-c", str(toml_file), "app:app"], cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"hypercorn: error: {toml_file}: 'worker_connections' is not a Hypercorn setting"
        " (did you mean 'max_connections'?)"
    ]


# ------------------------------------------------------------------------------ values

ZERO_FLAGS = ["--max-requests", "0", "--backlog", "0", "--read-timeout", "0"]
ZERO_FLAGS += ["--websocket-ping-interval", "0"]
VALUES_TOML = "websocket_ping_interval = 0\nh2_max_inbound_frame_size = 1024\n"


@pytest.mark.timeout(600)  # the first use of `upstream` may install it
def test_values_upstream_accepts_are_accepted(upstream: Upstream, tmp_path: Path) -> None:
    """Upstream takes these flags and keys; so does this server, each with its meaning
    (0 disables; a frame size below HTTP/2's minimum becomes the minimum) (item 7)."""
    toml_file = tmp_path / "values.toml"
    toml_file.write_text(VALUES_TOML)
    theirs = upstream.run_json(
        f"""
        import json
        import hypercorn.__main__ as main

        seen = []
        main.run = lambda config: seen.append(config) or 0
        status = main.main([*{ZERO_FLAGS!r}, "-c", {str(toml_file)!r}, "app:app"])
        config = seen[0]
        print(json.dumps([status, config.max_requests, config.backlog, config.read_timeout,
                          config.websocket_ping_interval, config.h2_max_inbound_frame_size]))
        """
    )
    assert theirs == [0, 0, 0, 0, 0, 1024]
    err = io.StringIO()
    config = config_from_args([*ZERO_FLAGS, "-c", str(toml_file), "app:app"], stderr=err)
    assert config.max_requests is None
    assert config.backlog == 0
    assert config.read_timeout is None
    assert config.websocket_ping_interval is None
    assert config.h2_max_inbound_frame_size == 16384
    assert err.getvalue().splitlines() == [
        "hypercorn: warning: h2_max_inbound_frame_size: 1024 is outside HTTP/2's"
        " SETTINGS_MAX_FRAME_SIZE range (16384 to 16777215, RFC 9113 6.5.2); 16384 is used"
    ]


@pytest.mark.slow
def test_a_server_with_zero_values_serves_without_recycling(
    tmp_path: Path, bound_socket: socket.socket
) -> None:
    write_app(tmp_path)
    args = ["-w", "1", "--max-requests", "0", "--read-timeout", "0", "app:app"]
    with running(args, cwd=tmp_path, sock=bound_socket) as server:
        (worker,) = server.wait_ready()
        bodies = {http_get(server.port)[1] for _ in range(5)}
        assert bodies == {f"{worker} v1"}
        assert server.workers() == {worker}


# ------------------------------------------------------------------------------ the page

DIFFERENCES = Path(__file__).resolve().parents[2] / "docs" / "differences.md"


@pytest.mark.timeout(600)  # the first use of `upstream` may install it
def test_every_setting_upstream_lacks_or_defaults_differently_is_documented(
    upstream: Upstream,
) -> None:
    """docs/differences.md names each setting upstream 0.18 does not have and each default
    that differs from upstream's (item 9)."""
    theirs = upstream.run_json(
        """
        import json
        from hypercorn.config import Config

        config = Config()
        defaults = {}
        for name in dir(Config):
            if name.startswith("_"):
                continue
            try:
                value = getattr(config, name)
            except AttributeError:  # a write-only property
                defaults[name] = "<write-only>"
                continue
            if callable(value) and not isinstance(value, type):
                continue
            plain = isinstance(value, (bool, int, float, str, list, type(None)))
            defaults[name] = value if plain else repr(value)
        print(json.dumps(defaults))
        """
    )
    page = DIFFERENCES.read_text()
    undocumented = []
    for name, setting in REGISTRY.items():
        if name not in theirs:
            reason = "not upstream"
        elif isinstance(theirs[name], (bool, int, float, str, list, type(None))) and (
            setting.default != theirs[name]
        ):
            reason = f"default {setting.default!r}, upstream {theirs[name]!r}"
        else:
            continue
        if f"`{name}`" not in page:
            undocumented.append(f"{name} ({reason})")
    assert undocumented == []


@pytest.mark.parametrize(
    "topic",
    ["`-D/--daemon`", "`-m/--umask`", "`read_timeout`", "`header_read_timeout`", "eval()", "413"],
)
def test_the_deliberate_differences_the_issue_names_are_on_the_page(topic: str) -> None:
    assert topic in DIFFERENCES.read_text()
