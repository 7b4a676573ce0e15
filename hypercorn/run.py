"""``hypercorn.run.run(config)``: run the server the CLI describes, from Python."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hypercorn.errors import EXIT_OK

if TYPE_CHECKING:
    from hypercorn.config import Config

__all__ = ["run"]


def run(config: Config) -> int:
    """Serve ``config.application_path`` as configured and return the exit status.

    ``config.workers == 0`` serves in this process, on a loop of ``config.worker_class``,
    until SIGINT/SIGTERM (graceful) or SIGQUIT (fast), with the pid file (``pid_path``)
    written for the duration. Otherwise the arbiter forks and
    supervises ``config.workers`` worker processes. ``AppLoadError``, ``BootError`` and
    ``ConfigError`` propagate (the CLI prints their one-line message and exits with their
    ``exit_status``).
    """
    from hypercorn.preflight import preflight

    preflight(config)
    if config.workers == 0:
        from hypercorn.apps import load_app
        from hypercorn.arbiter.pidfile import check_pidfile, remove_pidfile, write_pidfile
        from hypercorn.workers.serve import run_worker_loop

        app = load_app(config.application_path)
        if config.pid_path:
            check_pidfile(config.pid_path)
        sockets = config.create_sockets()
        try:
            if config.pid_path:
                write_pidfile(config.pid_path)
            run_worker_loop(app, config, sockets, worker_class=config.worker_class)
        finally:
            if config.pid_path:
                remove_pidfile(config.pid_path)
            for sock in (
                *sockets.secure_sockets,
                *sockets.insecure_sockets,
                *sockets.quic_sockets,
            ):
                sock.close()
        return EXIT_OK

    from hypercorn.arbiter import run_arbiter

    return run_arbiter(config)
