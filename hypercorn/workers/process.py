"""A worker process's life after ``fork``: set up, load the app, serve, exit with a meaning.

Exit statuses tell the arbiter what happened (``hypercorn.errors``):

- ``EXIT_APP_LOAD_ERROR`` (4): the application could not be imported or built;
- ``EXIT_BOOT_ERROR`` (3): lifespan startup (or another part of booting) failed;
- ``EXIT_OK`` (0): a graceful stop (signal, ``max_requests``, master gone);
- ``EXIT_FAILURE`` (1): anything unexpected (logged with its traceback).

Before a boot-failure exit the worker sends its one-line reason over the heartbeat pipe, so
the master prints one clear line instead of every worker printing its own.

``worker_main`` never returns: it ends with ``os._exit`` so nothing of the master's stack
(atexit hooks, finalisers, pid file removal) runs in the child.
"""

from __future__ import annotations

import contextlib
import faulthandler
import gc
import logging
import os
import signal
import socket
import sys
import traceback
from dataclasses import dataclass, field
from types import FrameType
from typing import IO, TYPE_CHECKING, Any, NoReturn

import hypercorn
from hypercorn.errors import (
    EXIT_APP_LOAD_ERROR,
    EXIT_BOOT_ERROR,
    EXIT_FAILURE,
    EXIT_OK,
    AppLoadError,
    BootError,
)

if TYPE_CHECKING:
    from hypercorn.arbiter.sockets import Sockets
    from hypercorn.config import Config

__all__ = ["WorkerSpec", "beat_interval", "worker_main"]


@dataclass
class WorkerSpec:
    """Everything a forked worker needs, prepared by the runner before ``fork``."""

    config: Config
    sockets: Sockets
    channel_fd: int
    master_pid: int
    slot: int = 0
    generation: int = 0
    #: The application when ``--preload`` imported it in the master.
    app: object | None = None
    #: Master-only file descriptors (other workers' pipes, the wakeup pipe, the selector).
    close_fds: list[int] = field(default_factory=list)
    #: Listeners of other slots (SO_REUSEPORT): this worker must not keep them open.
    close_sockets: list[socket.socket] = field(default_factory=list)


def _exit_after_stack_dump(signum: int, frame: FrameType | None) -> None:
    os._exit(EXIT_FAILURE)  # (gunicorn's worker exits 1 on SIGABRT too)


def beat_interval(timeout: float) -> float:
    """Beat often enough that a few lost beats never look like a hang."""
    if timeout <= 0:
        return 1.0
    return max(0.05, min(1.0, timeout / 4))


def worker_main(spec: WorkerSpec) -> NoReturn:
    """Run the worker in this (freshly forked) process and exit with a meaningful status."""
    code = EXIT_FAILURE
    try:
        code = _run(spec)
    except BaseException:  # nothing may escape into the master's stack
        with contextlib.suppress(BaseException):
            _error_logger(spec.config).error("worker crashed:\n%s", traceback.format_exc())
    finally:
        with contextlib.suppress(BaseException):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _run(spec: WorkerSpec) -> int:
    from hypercorn.arbiter.proctitle import set_title, title_for
    from hypercorn.arbiter.signals import reset_worker_signals, take_reopen_request
    from hypercorn.workers.heartbeat import WorkerChannel

    reset_worker_signals()
    for fd in spec.close_fds:
        with contextlib.suppress(OSError):
            os.close(fd)
    for sock in spec.close_sockets:
        with contextlib.suppress(OSError):
            os.close(sock.detach())
    config = spec.config
    channel = WorkerChannel(spec.channel_fd, spec.master_pid)
    # SIGABRT from the master (heartbeat timeout) dumps every thread's stack to the error
    # log before the process dies: the operator learns where the event loop was stuck.
    # faulthandler then hands the signal back to the handler that was there before: ours,
    # which exits without SIGABRT's default action (a core file the size of the worker
    # for every hung worker, under `ulimit -c unlimited`). A worker stuck outside Python
    # never runs it and is SIGKILLed by the master a moment later; abort() from C code
    # still dumps core (it restores the default action itself).
    signal.signal(signal.SIGABRT, _exit_after_stack_dump)
    faulthandler.enable(file=_dump_target(config), all_threads=True)
    name = config.proc_name or config.application_path
    set_title(title_for("worker", name, "booting"))

    # Import the serving machinery while we may still read everything; the app itself is
    # imported after dropping privileges (it should never run as root).
    from hypercorn.logging import reopen_log_files
    from hypercorn.workers.serve import WorkerHooks, run_worker_loop

    _preimport_serving(config.worker_class)
    try:
        _drop_privileges(config)
    except OSError as exc:
        who = f"{config.worker_user}/{config.worker_group}"
        channel.failed(f"worker_user/worker_group: cannot switch the worker to {who}: {exc}")
        return EXIT_BOOT_ERROR

    app = spec.app
    if app is None:
        from hypercorn.apps import load_app

        try:
            app = load_app(config.application_path)
        except AppLoadError as exc:
            channel.failed(str(exc))
            return EXIT_APP_LOAD_ERROR

    def reopen_logs() -> None:
        reopen_log_files(config.log)
        faulthandler.enable(file=_dump_target(config), all_threads=True)

    def on_ready() -> None:
        settle_gc()
        set_title(title_for("worker", name))
        if take_reopen_request():  # SIGUSR1 came while we booted
            reopen_logs()
        channel.ready()

    def on_stopping() -> None:
        set_title(title_for("worker", name, "draining"))
        channel.stopping()

    hooks = WorkerHooks(
        on_ready=on_ready,
        on_beat=channel.beat,
        beat_interval=beat_interval(config.timeout),
        on_stopping=on_stopping,
        on_retire=channel.retire,
        on_lifespan_shutdown=channel.shutting_down,
        on_reopen_logs=reopen_logs,
        # The master sums the workers' metrics for /metrics and for statsd's gauges.
        on_metrics=channel.metrics if config.metrics_bind or config.statsd_host else None,
    )
    try:
        run_worker_loop(app, config, spec.sockets, worker_class=config.worker_class, hooks=hooks)
    except BootError as exc:
        channel.failed(str(exc))
        return EXIT_BOOT_ERROR
    except AppLoadError as exc:  # e.g. a factory that fails once the loop runs
        channel.failed(str(exc))
        return EXIT_APP_LOAD_ERROR
    finally:
        channel.close()
    return EXIT_OK


#: The threshold for young collections that workers use instead of CPython's default.
_WORKER_GEN0 = 10_000


def settle_gc() -> None:
    """Tune the collector once a worker has started (the app is loaded and started up).

    Everything alive now (modules, the app, its startup state) lives as long as the worker:
    ``gc.freeze`` moves it out of the collector's sight, so full collections stop walking it
    (about 3.5% of a keep-alive request's CPU otherwise; the gc docs' pre-fork advice).

    Requests free their objects by reference counting, but a loop pass holds every in-flight
    request's objects at once (about 25 each), so under load the default threshold of 700
    runs young collections that walk live requests and free nothing (about 5% of a request).
    Workers raise it, unless the app chose its own thresholds: they are no longer what they
    were when hypercorn was first imported (not a fixed number: 3.13's default is 2000).
    """
    gc.collect()
    gc.freeze()
    thresholds = gc.get_threshold()
    if thresholds == hypercorn._gc_threshold_at_import:
        gc.set_threshold(_WORKER_GEN0, *thresholds[1:])


def _preimport_serving(worker_class: str) -> None:
    """Import every module serving imports lazily, while we may still read the install:
    after dropping privileges the package may be unreadable (a root-only directory)."""
    import importlib

    names = {"asyncio": ("asyncio",), "uvloop": ("asyncio", "uvloop"), "trio": ("trio",)}
    modules = [f"hypercorn.workers.{name}_backend" for name in names.get(worker_class, ())]
    modules += [
        "hypercorn.apps",
        "hypercorn.workers.lifespan",
        "hypercorn.workers.wsgi_bridge",
        "hypercorn.protocols.http1.httptools_tokeniser",  # (needs the optional httptools)
    ]
    for module in modules:
        with contextlib.suppress(ImportError):
            importlib.import_module(module)


def _drop_privileges(config: Config) -> None:
    """Switch to *worker_user* / *worker_group* (not upstream's -u/-g, which only own unix
    sockets)."""
    group, user = config.worker_group, config.worker_user
    if user is not None and group is None and os.geteuid() == 0:
        import pwd

        with contextlib.suppress(KeyError):
            group = pwd.getpwuid(user).pw_gid  # the user's primary group, as su does
    if group is not None and group != os.getegid():
        os.setgid(group)
    if user is not None and user != os.geteuid():
        if os.geteuid() == 0:
            import pwd

            with contextlib.suppress(KeyError):
                name = pwd.getpwuid(user).pw_name
                os.initgroups(name, os.getegid())
        os.setuid(user)


_dump_file: IO[Any] | None = None


def _dump_target(config: Config) -> IO[Any]:
    """Where faulthandler writes: the error log file when there is one, else stderr."""
    global _dump_file
    errorlog = config.errorlog
    if isinstance(errorlog, str) and errorlog not in ("", "-"):
        with contextlib.suppress(OSError):
            previous, _dump_file = _dump_file, open(errorlog, "a")  # noqa: SIM115 - kept
            if previous is not None:  # (reopened after log rotation)
                previous.close()
            return _dump_file
    return sys.stderr


def _error_logger(config: Config) -> logging.Logger:
    with contextlib.suppress(Exception):
        logger = config.log.error_logger
        if logger is not None:
            return logger
    return logging.getLogger("hypercorn.error")
