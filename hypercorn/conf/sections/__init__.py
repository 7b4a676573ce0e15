"""Section mixins; `Config` inherits all of them. `settings()` orders them by `SECTIONS`."""

from __future__ import annotations

from hypercorn.conf.sections.http import HTTPSettings
from hypercorn.conf.sections.logging import LoggingSettings
from hypercorn.conf.sections.process import ProcessSettings
from hypercorn.conf.sections.server import ServerSettings
from hypercorn.conf.sections.tls import TLSSettings
from hypercorn.conf.sections.workers import WorkerSettings

__all__ = [
    "HTTPSettings",
    "LoggingSettings",
    "ProcessSettings",
    "ServerSettings",
    "TLSSettings",
    "WorkerSettings",
]
