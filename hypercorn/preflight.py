"""Checks run before serving, in the process that was started (the master, before forking).

Some settings only fail where they are used: a logging configuration in every worker's
``Config.log``, a worker class in every worker's event loop. Checked there, each worker prints
its own traceback, the master respawns it, and the operator reads "workers keep dying". Here
each is checked once, up front, and becomes one ``ConfigError`` line naming the setting (the
CLI exits with status 2).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hypercorn.errors import ConfigError

if TYPE_CHECKING:
    from hypercorn.config import Config

__all__ = ["preflight"]


def preflight(config: Config) -> None:
    """Raise ``ConfigError`` for what would otherwise fail only in the workers."""
    from hypercorn.workers import unavailable_reason

    reason = unavailable_reason(config.worker_class)
    if reason is not None:
        raise ConfigError(f"worker_class: {reason}")
    if config.quic_bind:
        _check_quic()
    if config.use_reloader and config.workers == 0:
        # Upstream refuses this too ("Cannot reload without workers").
        raise ConfigError("use_reloader: --reload needs workers (-w 1 or more)")
    _check_worker_identity(config)
    _check_metrics(config)
    config.log  # noqa: B018 - builds the loggers: log files and logconfig fail here, named
    # TLS files: a BootError (exit 3) from the master rather than from every worker.
    config.create_ssl_context()


def _check_quic() -> None:
    try:
        import aioquic  # noqa: F401
    except ImportError:
        raise ConfigError(
            "quic_bind: HTTP/3 needs the aioquic package: pip install 'hypercorn[h3]'"
        ) from None


def _check_metrics(config: Config) -> None:
    if config.metrics_bind is None:
        return
    if config.workers == 0:
        raise ConfigError(
            "metrics_bind: the master serves /metrics: it needs workers (-w 1 or more)"
        )
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        raise ConfigError(
            "metrics_bind: needs prometheus_client: pip install 'hypercorn[metrics]'"
        ) from None


def _check_worker_identity(config: Config) -> None:
    import os

    wanted = [
        (name, value, current)
        for name, value, current in (
            ("worker_user", config.worker_user, os.geteuid()),
            ("worker_group", config.worker_group, os.getegid()),
        )
        if value is not None and value != current
    ]
    if not wanted:
        return
    name = wanted[0][0]
    if config.workers == 0:
        raise ConfigError(f"{name}: switching the workers' user needs workers (-w 1 or more)")
    if os.geteuid() != 0:
        raise ConfigError(f"{name}: switching the workers' user needs a master started as root")
