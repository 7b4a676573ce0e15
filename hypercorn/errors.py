"""Errors that end a process, each carrying the exit status that tells the operator why.

Protocol errors live in ``hypercorn.protocols.errors`` and transport errors in
``hypercorn.workers.backend``; these are the ones ``__main__`` and the arbiter turn into one
line on stderr and a non-zero exit.
"""

from __future__ import annotations

# Exit statuses. A worker that exits with APP_LOAD_ERROR or BOOT_ERROR before it reported
# READY makes the arbiter halt instead of respawning it forever (gunicorn's 3 and 4).
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG_ERROR = 2
EXIT_BOOT_ERROR = 3
EXIT_APP_LOAD_ERROR = 4


class ConfigError(Exception):
    """A setting has a bad value. The message names the source and the setting, in one line:
    ``config.toml: workers: expected a positive integer, got 'x'``."""

    exit_status = EXIT_CONFIG_ERROR


class ConfigWarning(UserWarning):
    """A setting was accepted but means less than it says (e.g. a value raised to a protocol
    minimum). The CLI prints it as one ``hypercorn: warning:`` line."""


class UnknownSettingWarning(ConfigWarning):
    """A configuration key that is not a Hypercorn setting (kept, but with no effect on the
    server). ``-W error::hypercorn.config.UnknownSettingWarning`` or ``strict_config`` turns
    it into an error."""


class AppLoadError(Exception):
    """The application could not be imported or built (bad path, ImportError, factory error)."""

    exit_status = EXIT_APP_LOAD_ERROR


class BootError(Exception):
    """The server could not start: a bind failed, lifespan startup failed, TLS files unreadable."""

    exit_status = EXIT_BOOT_ERROR


class HaltServer(BaseException):  # gunicorn's name, kept for familiarity
    """Raised inside the arbiter to stop it with ``exit_status`` after logging ``reason``.

    Derives from BaseException so that no ``except Exception`` in between swallows it.
    """

    def __init__(self, reason: str, exit_status: int = EXIT_FAILURE) -> None:
        super().__init__(reason)
        self.reason = reason
        self.exit_status = exit_status
