"""Command line -> Config: flags, sentinel semantics, and one-line errors with exit status 2."""

from __future__ import annotations

import io
import os
import ssl
import subprocess
import sys
from pathlib import Path

import pytest

from hypercorn.__main__ import main
from hypercorn.conf.cli import config_from_args
from hypercorn.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_flags_set_settings() -> None:
    config = config_from_args(
        [
            "examples.hello:app",
            "-b",
            "127.0.0.1:5000",
            "--bind",
            "unix:/tmp/hc.sock",
            "-w",
            "3",
            "-k",
            "uvloop",
            "--keep-alive",
            "7.5",
            "--graceful-timeout",
            "2",
            "--read-timeout",
            "none",
            "--max-requests",
            "100",
            "--max-requests-jitter",
            "10",
            "--reload",
            "--debug",
            "--access-logfile",
            "-",
            "--log-file",
            "/tmp/err.log",
            "--log-level",
            "warning",
            "--server-name",
            "a.example",
            "--server-name",
            "b.example",
            "--root-path",
            "/api/",
            "-m",
            "007",
            "--verify-mode",
            "CERT_REQUIRED",
            "--websocket-ping-interval",
            "15",
            "-p",
            "/tmp/hc.pid",
        ]
    )
    assert config.application_path == "examples.hello:app"
    assert config.bind == ["127.0.0.1:5000", "unix:/tmp/hc.sock"]
    assert config.workers == 3
    assert config.worker_class == "uvloop"
    assert config.keep_alive_timeout == 7.5
    assert config.graceful_timeout == 2.0
    assert config.read_timeout is None
    assert config.max_requests == 100
    assert config.max_requests_jitter == 10  # upstream copied max_requests here (a bug)
    assert config.use_reloader is True
    assert config.debug is True
    assert config.accesslog == "-"
    assert config.errorlog == "/tmp/err.log"
    assert config.loglevel == "WARNING"
    assert config.server_names == ["a.example", "b.example"]
    assert config.root_path == "/api"
    assert config.umask == 0o007
    assert config.verify_mode is ssl.VerifyMode.CERT_REQUIRED
    assert config.websocket_ping_interval == 15.0
    assert config.pid_path == "/tmp/hc.pid"


def test_new_flags() -> None:
    config = config_from_args(
        [
            "app:app",
            "--http1-parser",
            "h11",
            "--h11-max-request-line-size",
            "4096",
            "--h11-max-header-count",
            "50",
            "--header-read-timeout",
            "3",
            "--write-timeout",
            "20",
            "--max-connections",
            "500",
            "--reuse-port",
            "--preload",
            "-t",
            "45",
            "-D",
            "-n",
            "myapp",
            "--reload-dir",
            "src",
            "--reload-dir",
            "lib",
        ]
    )
    assert config.http1_parser == "h11"
    assert config.h11_max_request_line_size == 4096
    assert config.h11_max_header_count == 50
    assert config.header_read_timeout == 3.0
    assert config.write_timeout == 20.0
    assert config.max_connections == 500
    assert config.reuse_port is True
    assert config.preload_app is True
    assert config.timeout == 45.0
    assert config.daemon is True
    assert config.proc_name == "myapp"
    assert config.reload_dirs == ["src", "lib"]


def test_defaults_without_flags() -> None:
    config = config_from_args(["app:app"])
    assert config.bind == ["127.0.0.1:8000"]
    assert config.workers == 1
    assert config.statsd_prefix == ""


def test_config_file_values_survive_absent_flags(tmp_path: Path) -> None:
    path = tmp_path / "hypercorn.toml"
    path.write_text(
        'bind = ["127.0.0.1:6000"]\nworkers = 5\nstatsd_prefix = "svc"\ndebug = true\n'
        'application_path = "fromfile:app"\n',
        encoding="utf-8",
    )
    config = config_from_args(["-c", str(path), "--keep-alive", "9"])
    assert config.workers == 5
    assert config.bind == ["127.0.0.1:6000"]
    assert config.statsd_prefix == "svc"  # upstream reset it to "" when the flag was absent
    assert config.debug is True
    assert config.keep_alive_timeout == 9.0
    assert config.application_path == "fromfile:app"

    overridden = config_from_args(["other:app", "-c", str(path), "-w", "2", "-b", "127.0.0.1:7000"])
    assert overridden.workers == 2
    assert overridden.bind == ["127.0.0.1:7000"]
    assert overridden.application_path == "other:app"


def test_python_config_sources(tmp_path: Path) -> None:
    path = tmp_path / "conf.py"
    path.write_text("workers = 6\n", encoding="utf-8")
    assert config_from_args(["app:app", "-c", f"file:{path}"]).workers == 6


def test_deprecated_flags_warn_and_apply() -> None:
    stderr = io.StringIO()
    config = config_from_args(
        ["app:app", "--access-log", "access.log", "--error-log", "err.log", "--cert-reqs", "2"],
        stderr=stderr,
    )
    assert config.accesslog == "access.log"
    assert config.errorlog == "err.log"
    assert config.verify_mode is ssl.VerifyMode.CERT_REQUIRED
    lines = stderr.getvalue().splitlines()
    assert "hypercorn: warning: --access-log is deprecated, use --access-logfile" in lines
    assert len(lines) == 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["app:app", "-w", "x"], "argument -w/--workers: expected a non-negative integer, got 'x'"),
        (["app:app", "--keep-alive", "-1"], "argument --keep-alive: expected a non-negative"),
        (["app:app", "-k", "gevent"], "argument -k/--worker-class: expected one of 'asyncio'"),
        (["app:app", "--verify-mode", "SOMETIMES"], "argument --verify-mode: expected one of"),
        (["app:app", "--cert-reqs", "9"], "argument --cert-reqs: expected one of"),
        (["app:app", "--bogus"], "unrecognized arguments: --bogus"),
        (["app:app", "-w"], "argument -w/--workers: expected one argument"),
        ([], "the following arguments are required: application"),
        (["app:app", "--certfile", "c.pem"], "keyfile: TLS needs both certfile and keyfile"),
        (["app:app", "--quic-bind", "127.0.0.1:4433"], "quic_bind: HTTP/3 needs TLS"),
    ],
)
def test_bad_arguments_raise_config_error(args: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_args(args)
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


def test_main_prints_one_line_and_returns_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["app:app", "--workers", "lots"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        "hypercorn: error: argument -w/--workers: expected a non-negative integer, got 'lots'\n"
    )


def test_main_missing_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.toml"
    assert main(["app:app", "-c", str(missing)]) == 2
    assert capsys.readouterr().err.startswith(f"hypercorn: error: {missing}: cannot read")


def test_main_version_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("hypercorn ")
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "--keep-alive SECONDS" in out
    assert "Workers and lifecycle:" in out


def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "hypercorn", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        cwd=ROOT,
    )


def test_python_m_hypercorn_bad_value_exit_2() -> None:
    result = _run_cli("app:app", "-w", "x")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "hypercorn: error: argument -w/--workers: expected a non-negative integer, got 'x'"
    ]
    assert result.stdout == ""


def test_python_m_hypercorn_bad_toml_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('workers = "x"\n', encoding="utf-8")
    result = _run_cli("app:app", "-c", str(path))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"hypercorn: error: {path}: workers: expected a non-negative integer, got 'x'"
    ]
