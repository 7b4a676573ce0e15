"""TOML / Python file / object / mapping loaders and their one-line errors."""

from __future__ import annotations

import re
import ssl
import textwrap
from pathlib import Path

import pytest

from hypercorn.config import Config, ConfigWarning, UnknownSettingWarning
from hypercorn.errors import ConfigError


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_from_toml(tmp_path: Path) -> None:
    path = write(
        tmp_path / "hypercorn.toml",
        """
        bind = ["127.0.0.1:5000", "unix:/tmp/hc.sock"]
        workers = 3
        keep_alive_timeout = 10
        worker_class = "trio"
        verify_mode = "CERT_OPTIONAL"
        umask = "0o077"

        [logconfig_dict]
        version = 1
        """,
    )
    config = Config.from_toml(path)
    assert config.bind == ["127.0.0.1:5000", "unix:/tmp/hc.sock"]
    assert config.workers == 3
    assert config.keep_alive_timeout == 10.0
    assert config.worker_class == "trio"
    assert config.verify_mode is ssl.VerifyMode.CERT_OPTIONAL
    assert config.umask == 0o077
    assert config.logconfig_dict == {"version": 1}
    assert config.backlog == 100


def test_toml_bad_value_names_file_and_setting(tmp_path: Path) -> None:
    path = write(tmp_path / "config.toml", 'workers = "x"\n')
    with pytest.raises(ConfigError) as info:
        Config.from_toml(path)
    assert str(info.value) == f"{path}: workers: expected a non-negative integer, got 'x'"


def test_toml_unknown_key_warns_suggests_and_is_kept(tmp_path: Path) -> None:
    path = write(tmp_path / "config.toml", "wrokers = 2\nworkers = 3\n")
    message = f"{path}: 'wrokers' is not a Hypercorn setting (did you mean 'workers'?)"
    with pytest.warns(UnknownSettingWarning) as record:
        config = Config.from_toml(path)
    assert [str(w.message) for w in record] == [message]
    assert config.workers == 3
    assert config.wrokers == 2  # type: ignore[attr-defined]  # kept, as upstream


def test_strict_mode_makes_unknown_keys_errors(tmp_path: Path) -> None:
    path = write(tmp_path / "config.toml", "wrokers = 2\n")
    message = f"{path}: 'wrokers' is not a Hypercorn setting (did you mean 'workers'?)"
    with pytest.raises(ConfigError) as info:
        Config.from_toml(path, strict=True)
    assert str(info.value) == message
    path = write(tmp_path / "strict.toml", "strict_config = true\nwrokers = 2\n")
    with pytest.raises(ConfigError, match="'wrokers' is not a Hypercorn setting"):
        Config.from_toml(path)
    with pytest.raises(ConfigError, match="'bogus' is not a Hypercorn setting"):
        Config.from_mapping({"bogus": 1, "strict_config": True})


def test_toml_rejects_python_only_settings(tmp_path: Path) -> None:
    path = write(tmp_path / "config.toml", 'logger_class = "hypercorn.logging:Logger"\n')
    with pytest.raises(ConfigError, match=re.escape(f"{path}: logger_class: can only be set")):
        Config.from_toml(path)


def test_toml_syntax_error_and_missing_file(tmp_path: Path) -> None:
    path = write(tmp_path / "broken.toml", "workers = = 2\n")
    with pytest.raises(ConfigError, match=re.escape(f"{path}: invalid TOML: ")):
        Config.from_toml(path)
    missing = tmp_path / "missing.toml"
    with pytest.raises(ConfigError, match=re.escape(f"{missing}: cannot read config file")):
        Config.from_toml(missing)


def test_from_mapping_and_kwargs() -> None:
    config = Config.from_mapping({"keep_alive_timeout": 10}, workers=2, cert_reqs=2)
    assert config.keep_alive_timeout == 10.0
    assert config.workers == 2
    assert config.verify_mode is ssl.VerifyMode.CERT_REQUIRED
    assert Config.from_mapping().workers == 1


def test_from_mapping_errors() -> None:
    with pytest.warns(UnknownSettingWarning, match=r"^'keep_alive' is not a Hypercorn setting"):
        Config.from_mapping(keep_alive=5)
    with pytest.raises(ConfigError) as info:
        Config.from_mapping(backlog=-1)
    assert str(info.value) == "backlog: expected a non-negative integer, got -1"


def test_from_pyfile_uses_settings_and_ignores_the_rest(tmp_path: Path) -> None:
    path = write(
        tmp_path / "conf.py",
        """
        import os

        PORT = 9000
        bind = f"127.0.0.1:{PORT}"
        workers = 2

        def helper():
            return 1

        class MyLogger:
            pass

        logger_class = MyLogger
        """,
    )
    config = Config.from_pyfile(path)
    assert config.bind == ["127.0.0.1:9000"]
    assert config.workers == 2
    assert config.logger_class is not None
    assert config.logger_class.__name__ == "MyLogger"
    # The other public names are kept as plain attributes (upstream copies them), quietly.
    assert config.PORT == 9000  # type: ignore[attr-defined]
    assert config.helper() == 1  # type: ignore[attr-defined]
    assert not hasattr(config, "os")


def test_from_pyfile_warns_about_a_misspelt_setting(tmp_path: Path) -> None:
    path = write(tmp_path / "conf.py", "keepalive_timeout = 10\n_private = 1\n")
    with pytest.warns(UnknownSettingWarning, match="did you mean 'keep_alive_timeout'"):
        config = Config.from_pyfile(path)
    assert config.keep_alive_timeout == 5.0
    assert config._log is None  # a private name never overwrites Config's own state
    with pytest.raises(ConfigError, match="'keepalive_timeout' is not a Hypercorn setting"):
        Config.from_pyfile(path, strict=True)


def test_names_that_would_shadow_config_methods_are_not_kept() -> None:
    with pytest.warns(UnknownSettingWarning) as record:
        config = Config.from_mapping(ssl_enabled=True, create_sockets=None)
    assert len(record) == 2
    assert config.ssl_enabled is False
    assert callable(config.create_sockets)


def test_from_pyfile_errors_are_one_line(tmp_path: Path) -> None:
    path = write(tmp_path / "conf.py", "workers = 'many'\n")
    with pytest.raises(ConfigError) as info:
        Config.from_pyfile(path)
    assert str(info.value) == f"{path}: workers: expected a non-negative integer, got 'many'"

    path = write(tmp_path / "boom.py", "workers = 1\nraise RuntimeError('nope')\n")
    with pytest.raises(ConfigError) as info:
        Config.from_pyfile(path)
    assert str(info.value) == f"{path}: RuntimeError: nope"

    path = write(tmp_path / "syntax.py", "workers = (\n")
    with pytest.raises(ConfigError, match=re.escape(f"{path}: SyntaxError: ")):
        Config.from_pyfile(path)

    with pytest.raises(ConfigError, match="cannot read config file"):
        Config.from_pyfile(tmp_path / "missing.py")


@pytest.fixture
def config_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    package = tmp_path / "hc_test_settings"
    package.mkdir()
    write(package / "__init__.py", "")
    write(
        package / "prod.py",
        """
        workers = 5
        graceful_timeout = 20

        class Staging:
            workers = 2
            keep_alive_timeout = 1
        """,
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return "hc_test_settings.prod"


def test_from_object_module_and_attribute(config_module: str) -> None:
    config = Config.from_object(config_module)
    assert config.workers == 5
    assert config.graceful_timeout == 20.0
    staging = Config.from_object(f"{config_module}.Staging")
    assert staging.workers == 2
    assert staging.keep_alive_timeout == 1.0


def test_from_object_instance() -> None:
    class Settings:
        workers = 4
        _private = "ignored"
        unrelated = "ignored too"

    assert Config.from_object(Settings()).workers == 4


def test_from_object_errors(config_module: str) -> None:
    with pytest.raises(ConfigError, match=r"^python:hc_test_settings\.nope: "):
        Config.from_object("hc_test_settings.nope")
    with pytest.raises(ConfigError, match=r"^python:no_such_module_xyz: ModuleNotFoundError"):
        Config.from_object("no_such_module_xyz")


def test_load_dispatches(tmp_path: Path, config_module: str) -> None:
    toml = write(tmp_path / "a.toml", "workers = 7\n")
    pyfile = write(tmp_path / "b.py", "workers = 8\n")
    assert Config.load(str(toml)).workers == 7
    assert Config.load(f"file:{pyfile}").workers == 8
    assert Config.load(f"python:{config_module}").workers == 5


def test_subclass_is_returned(tmp_path: Path) -> None:
    class MyConfig(Config):
        pass

    assert isinstance(MyConfig.from_mapping(workers=2), MyConfig)
    assert isinstance(MyConfig.from_toml(write(tmp_path / "c.toml", "")), MyConfig)


def test_from_object_copies_another_config() -> None:
    source = Config()
    source.workers = 9
    source.bind = ["127.0.0.1:1"]
    copy = Config.from_object(source)
    assert copy.workers == 9
    assert copy.bind == ["127.0.0.1:1"]
    assert copy.bind is not source.bind
    assert source._log is None  # reading it did not build a Logger


def test_h2_frame_size_range() -> None:
    assert Config.from_mapping(h2_max_inbound_frame_size=2**20).h2_max_inbound_frame_size == 2**20
    # Upstream accepts any value (and leaves h2's default in force); HTTP/2 allows only this
    # range, so other values are moved into it, with a warning.
    with pytest.warns(ConfigWarning, match=r"1024 is outside .* 16384 is used"):
        assert (
            Config.from_mapping(h2_max_inbound_frame_size=1024).h2_max_inbound_frame_size == 2**14
        )
    with pytest.warns(ConfigWarning, match="16777215 is used"):
        config = Config.from_mapping(h2_max_inbound_frame_size=2**30)
    assert config.h2_max_inbound_frame_size == 2**24 - 1
    with pytest.raises(ConfigError, match="expected a positive integer"):
        Config.from_mapping(h2_max_inbound_frame_size=0)


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("max_requests", 0, None),
        ("max_requests", "0", None),
        ("read_timeout", 0, None),
        ("read_timeout", "0.0", None),
        ("websocket_ping_interval", 0, None),
        ("websocket_ping_interval", "none", None),
        ("websocket_ping_interval", "2.5", 2.5),
        ("backlog", 0, 0),
    ],
)
def test_zero_means_what_it_means_upstream(name: str, value: object, expected: object) -> None:
    config = Config.from_mapping({name: value})
    assert getattr(config, name) == expected


@pytest.mark.parametrize("name", ["max_requests", "read_timeout", "websocket_ping_interval"])
def test_negative_values_still_say_what_is_expected(name: str) -> None:
    with pytest.raises(ConfigError, match="or 0 or none to disable"):
        Config.from_mapping({name: -1})
