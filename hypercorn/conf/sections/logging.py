"""Error log, access log, logging configuration and statsd metrics."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from hypercorn.conf import parsers as p
from hypercorn.conf.setting import Setting, SettingsHolder

if TYPE_CHECKING:
    from hypercorn.logging import Logger

__all__ = ["DEFAULT_ACCESS_LOG_FORMAT", "LoggingSettings"]

DEFAULT_ACCESS_LOG_FORMAT = '%(h)s %(l)s %(l)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"'


def _log_target(value: object) -> logging.Logger | str | None:
    if value is None or isinstance(value, (str, logging.Logger)):
        return value
    raise ValueError(f"expected a path, '-' or a logging.Logger, got {value!r}")


log_target = p.Parser(_log_target, type_name="str | logging.Logger | None", expects="a path or '-'")


_LEVELS = frozenset({"CRITICAL", "FATAL", "ERROR", "WARN", "WARNING", "INFO", "DEBUG", "NOTSET"})


def _log_level(value: object) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(logging.getLevelName(value))
    text = p.string(value).strip().upper()
    if text not in _LEVELS:
        raise ValueError(f"expected a log level such as INFO or DEBUG, got {value!r}")
    return text


log_level = p.Parser(_log_level, type_name="str", expects="a log level")


class LoggingSettings(SettingsHolder):
    """Where logs go and what they look like."""

    accesslog: Setting[logging.Logger | str | None] = Setting(
        None,
        parse=log_target,
        section="logging",
        flags=("--access-logfile",),
        deprecated_flags=("--access-log",),
        metavar="PATH",
        help="""The target location for the access log: a path, `-` for stdout, or (from
        Python) a logging.Logger. None (the default) disables access logging.""",
    )
    access_log_format = Setting(
        DEFAULT_ACCESS_LOG_FORMAT,
        parse=p.string,
        section="logging",
        flags=("--access-logformat",),
        metavar="FORMAT",
        help="""The access log format, using the gunicorn-style atoms (`%(h)s` remote
        address, `%(r)s` request line, `%(s)s` status, ...); see the logging docs.""",
    )
    errorlog: Setting[logging.Logger | str | None] = Setting(
        "-",
        parse=log_target,
        section="logging",
        flags=("--error-logfile", "--log-file"),
        deprecated_flags=("--error-log",),
        metavar="PATH",
        help="""The target location for the error log: a path, `-` for stderr, or (from
        Python) a logging.Logger. None disables it.""",
    )
    loglevel = Setting(
        "INFO",
        parse=log_level,
        section="logging",
        flags=("--log-level",),
        metavar="LEVEL",
        help="The (error) log level: DEBUG, INFO, WARNING, ERROR or CRITICAL.",
    )
    logconfig = Setting(
        None,
        parse=p.optional(p.string),
        section="logging",
        flags=("--log-config",),
        metavar="PATH",
        help="""A Python logging configuration file. This can be prefixed with 'json:' or
        'toml:' to load the configuration from a file in that format. Default is the logging
        ini format.""",
    )
    logconfig_dict = Setting(
        None,
        parse=p.dict_or_none,
        section="logging",
        help="A logging.config.dictConfig mapping, used when *logconfig* is not set.",
    )
    logger_class: Setting[type[Logger] | None] = Setting(
        None,
        parse=p.class_or_path("type[Logger] | None"),
        section="logging",
        toml=False,
        help="""The logger class to build `config.log` with, a subclass of
        hypercorn.logging.Logger (or an import path to one). None means that class itself.""",
    )
    statsd_host = Setting(
        None,
        parse=p.optional(p.host_port),
        section="logging",
        flags=("--statsd-host",),
        metavar="HOST:PORT",
        help="""The host:port of the statsd server; metrics are sent when set, over UDP,
        batched (each worker sends once a second, or sooner when busy):
        `hypercorn.requests`, `hypercorn.request.duration` (ms),
        `hypercorn.request.status.<code>` and `.status_class.<N>xx`, `hypercorn.log.<level>`
        from the workers; `hypercorn.connections.open`, `hypercorn.websockets.open`,
        `hypercorn.workers` and `hypercorn.worker.restart.<cause>` from the master.""",
    )
    statsd_prefix = Setting(
        "",
        parse=p.string,
        section="logging",
        flags=("--statsd-prefix",),
        metavar="PREFIX",
        help="Prefix for all statsd messages.",
    )
    dogstatsd_tags = Setting(
        "",
        parse=p.string,
        section="logging",
        metavar="TAGS",
        help="Comma-separated `key:value` DogStatsD tags added to every metric.",
    )
    metrics_bind = Setting(
        None,
        parse=p.optional(p.listen_address),
        section="logging",
        flags=("--metrics-bind",),
        metavar="HOST:PORT",
        help="""Serve Prometheus metrics at `http://HOST:PORT/metrics` from the master, summed
        over every worker: requests by method and status class, a latency histogram, open
        connections and WebSockets, worker restarts by cause, heartbeat ages. Counters are
        server totals (they survive worker restarts). `fd://N` serves on an inherited
        listening socket; port 0 lets the kernel choose (the address is logged). Needs
        workers (-w 1 or more) and the `metrics` extra (prometheus_client).""",
    )
