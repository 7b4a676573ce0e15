"""The arbiter: the long-lived master process that binds, forks and supervises workers.

``run_arbiter(config)`` is the only entry point (``hypercorn.run.run`` calls it when
``workers >= 1``). The decisions live in ``core.ArbiterCore`` (pure); ``runner.Runner`` does
the I/O. This module wires them: preload, pid file, binding, daemonising, the reloader, and
the clean-up that must happen however the master ends.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import TYPE_CHECKING

from hypercorn.errors import (
    EXIT_APP_LOAD_ERROR,
    EXIT_BOOT_ERROR,
    AppLoadError,
    BootError,
    ConfigError,
    HaltServer,
)

if TYPE_CHECKING:
    import logging

    from hypercorn.arbiter.daemon import DaemonReporter
    from hypercorn.arbiter.reloader import Reloader
    from hypercorn.arbiter.sockets import Listeners
    from hypercorn.config import Config

__all__ = ["run_arbiter"]


def run_arbiter(config: Config) -> int:
    """Run the master until it stops; return its exit status.

    Boot problems raise the error ``__main__`` prints as one line: ``BootError`` (bind
    failure, pid file held, lifespan startup failed in the workers) and ``AppLoadError``
    (the app does not import, in the master with ``--preload`` or in the workers).
    """
    from hypercorn.arbiter.pidfile import check_pidfile, write_pidfile
    from hypercorn.arbiter.proctitle import set_title, title_for
    from hypercorn.arbiter.runner import UPGRADE_FD_ENV, Runner
    from hypercorn.arbiter.sockets import create_listeners

    upgrade_fd = _take_upgrade_fd(UPGRADE_FD_ENV)
    cli_args = _cli_args()
    config_file = _config_file(cli_args)
    logger = _error_logger(config)

    app: object | None = None
    if config.preload_app:
        if config.use_reloader:
            logger.warning("--preload is ignored with --reload: workers import the app")
        else:
            from hypercorn.apps import load_app

            app = load_app(config.application_path)

    if config.pid_path:
        check_pidfile(config.pid_path, allowed=(os.getppid(),) if upgrade_fd is not None else ())
    listeners = create_listeners(config)
    reporter: DaemonReporter | None = None
    runner: Runner | None = None
    try:
        if config.daemon and upgrade_fd is None:
            from hypercorn.arbiter.daemon import daemonize

            errorlog = config.errorlog if isinstance(config.errorlog, str) else None
            reporter = daemonize(errorlog)
        set_title(title_for("master", config.proc_name or config.application_path))
        if config.pid_path:
            write_pidfile(config.pid_path)
        reloader = _make_reloader(config, config_file) if config.use_reloader else None
        _log_listeners(config, listeners)
        runner = Runner(
            config,
            listeners,
            app=app,
            reporter=reporter,
            upgrade_fd=upgrade_fd,
            cli_args=cli_args,
            reloader=reloader,
            config_file=config_file,
        )
        code = runner.run()
        if runner.halt is not None:
            raise _halt_error(runner.halt.code, runner.halt.reason)
        return code
    except (AppLoadError, BootError, ConfigError, HaltServer) as exc:
        if reporter is not None:
            reporter.failed(exc.exit_status, str(exc))
        raise
    finally:
        if runner is not None:
            _clean_up(config, runner.listeners, runner.owns_unix_paths)
        else:
            _clean_up(config, listeners, listeners.source != "upgrade")


def _halt_error(code: int, reason: str) -> AppLoadError | BootError | HaltServer:
    if code == EXIT_APP_LOAD_ERROR:
        return AppLoadError(reason)
    if code == EXIT_BOOT_ERROR:
        return BootError(reason)
    return HaltServer(reason, code)


def _clean_up(config: Config, listeners: Listeners, owns_unix_paths: bool) -> None:
    from hypercorn.arbiter.pidfile import remove_pidfile
    from hypercorn.arbiter.sockets import all_sockets

    if config.pid_path:
        remove_pidfile(config.pid_path)  # only if it still names us
    seen: set[int] = set()
    for sockets in (listeners.base, *listeners.slots.values()):
        for sock in all_sockets(sockets):
            if id(sock) not in seen:
                seen.add(id(sock))
                sock.close()
    if owns_unix_paths:  # (another master may serve on them: see Runner.owns_unix_paths)
        for path in listeners.unix_paths:
            with contextlib.suppress(OSError):
                os.unlink(path)


def _take_upgrade_fd(name: str) -> int | None:
    """The pipe to the master that re-executed us (SIGUSR2), if this process is that one."""
    from hypercorn.arbiter.sockets import FDS_PID_ENV

    value = os.environ.pop(name, None)
    if value is None or os.environ.get(FDS_PID_ENV) != str(os.getpid()):
        return None
    try:
        fd = int(value)
        os.set_inheritable(fd, False)
    except (ValueError, OSError):
        return None
    return fd


def _cli_args() -> list[str] | None:
    """The command line to re-read on SIGHUP, when this process is the ``hypercorn`` CLI."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name in ("hypercorn", "hypercorn.__main__"):
        return sys.argv[1:]
    if os.path.basename(sys.argv[0]) == "hypercorn":
        return sys.argv[1:]
    return None


def _config_file(cli_args: list[str] | None) -> str | None:
    if cli_args is None:
        return None
    try:
        from hypercorn.conf.cli import build_parser

        namespace, _ = build_parser().parse_known_args(cli_args)
    except (ConfigError, SystemExit):
        return None
    location = getattr(namespace, "config", None)
    if not isinstance(location, str) or location.startswith("python:"):
        return None
    return location.removeprefix("file:")


def _make_reloader(config: Config, config_file: str | None) -> Reloader:
    from hypercorn.apps import source_roots
    from hypercorn.arbiter.reloader import POLL_INTERVAL, Reloader

    # The application's own code, wherever it lives (not the working directory), and the
    # directories the operator named.
    roots = source_roots(config.application_path)
    files = [root for root in roots if os.path.isfile(root)]
    if config_file:
        files.append(config_file)
    directories = [*(root for root in roots if root not in files), *config.reload_dirs]
    reloader = Reloader(directories, files)
    logger = _error_logger(config)
    for missing in reloader.missing:
        logger.warning("--reload: %s is not a directory; not watched", missing)
    how = (
        "watchfiles"
        if reloader.mechanism == "watchfiles"
        else f"polling every {POLL_INTERVAL:g} s; install watchfiles for change notifications"
    )
    watched = ", ".join([*reloader.directories, *sorted(reloader.extra_files)])
    logger.info("--reload: watching %s (%s)", watched, how)
    return reloader


def _log_listeners(config: Config, listeners: Listeners) -> None:
    from hypercorn.logging import log_sync

    # "Running on ..." waits for the workers (Runner._on_booted): only then are the app and
    # the certificate known to load.
    source = f" (sockets from {listeners.source})" if listeners.source != "bind" else ""
    plural = "" if config.workers == 1 else "s"
    log_sync(
        config.log,
        "info",
        f"master {os.getpid()}: {config.workers} {config.worker_class} worker{plural}{source}",
    )


def _error_logger(config: Config) -> logging.Logger:
    import logging

    with contextlib.suppress(Exception):
        logger = config.log.error_logger
        if logger is not None:
            return logger
    return logging.getLogger("hypercorn.error")
