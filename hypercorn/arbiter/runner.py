"""The arbiter's I/O loop: fork, waitpid, signals, pipes, carried out for ``ArbiterCore``.

One ``selectors`` wait covers the signal wakeup pipe, every worker's heartbeat pipe, the
reloader's pipe and (during SIGUSR2) the new master's readiness pipe. Its timeout is the
core's next deadline, so the master sleeps until something happens: no polling interval.
Everything the loop learns becomes an observation for the core; the commands that come
back are carried out in order. Observations produced while carrying out commands (a failed
fork, a re-read configuration) are queued, never handled re-entrantly.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import signal
import socket
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from hypercorn.arbiter import systemd
from hypercorn.arbiter.core import ArbiterCore
from hypercorn.arbiter.messages import (
    Booted,
    ChildExited,
    CloseListeners,
    CloseSlot,
    Command,
    ConfigReloaded,
    CoreSettings,
    Exit,
    FilesChanged,
    Halt,
    HandOver,
    Kill,
    Log,
    Notify,
    Observation,
    Reexec,
    ReloadConfig,
    ReopenLogs,
    RetireListeners,
    Sig,
    SignalReceived,
    Spawn,
    Tick,
    UpgradeFailed,
    UpgradeReady,
    WorkerBeat,
    WorkerFailed,
    WorkerReady,
    WorkerRetiring,
    WorkerShuttingDown,
    WorkerStopping,
    WritePidfile,
)
from hypercorn.arbiter.metrics import master_metrics, restart_cause
from hypercorn.arbiter.signals import (
    MASTER_SIGNALS,
    SignalQueue,
    fork_blocking_signals,
    reset_worker_signals,
    to_signal,
)
from hypercorn.arbiter.sockets import (
    FDS_ENV,
    FDS_PID_ENV,
    Listeners,
    Sockets,
    all_sockets,
    close_sockets,
    quic_slot_clone,
    reuse_port_clone,
    upgrade_env,
)
from hypercorn.errors import EXIT_BOOT_ERROR, EXIT_FAILURE, BootError
from hypercorn.logging import reopen_log_files
from hypercorn.workers.heartbeat import MessageDecoder, MessageKind

if TYPE_CHECKING:
    from hypercorn.arbiter.daemon import DaemonReporter
    from hypercorn.arbiter.reloader import Reloader
    from hypercorn.config import Config

__all__ = ["UPGRADE_FD_ENV", "Runner", "core_settings"]

#: The write end of the pipe on which a re-executed master reports READY to its parent.
UPGRADE_FD_ENV = "HYPERCORN_UPGRADE_FD"

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}


def core_settings(config: Config) -> CoreSettings:
    return CoreSettings(
        workers=max(1, config.workers),
        graceful_timeout=config.graceful_timeout,
        timeout=config.timeout,
        boot_timeout=config.startup_timeout + config.timeout,
        shutdown_timeout=config.shutdown_timeout,
    )


@dataclass
class _Worker:
    wid: int
    pid: int
    fd: int | None
    decoder: MessageDecoder = field(default_factory=MessageDecoder)


class Runner:
    """Carries out the core's commands; ``run()`` returns the exit status."""

    def __init__(
        self,
        config: Config,
        listeners: Listeners,
        *,
        app: object | None = None,
        reporter: DaemonReporter | None = None,
        upgrade_fd: int | None = None,
        cli_args: list[str] | None = None,
        reloader: Reloader | None = None,
        config_file: str | None = None,
    ) -> None:
        self.config = config
        self.listeners = listeners
        self.app = app
        self.reporter = reporter
        self.upgrade_fd = upgrade_fd
        self.cli_args = cli_args
        self.reloader = reloader
        self.config_file = config_file
        self.master_pid = os.getpid()
        self.core = ArbiterCore(core_settings(config), time.monotonic())
        self.workers: dict[int, _Worker] = {}  # by pid
        self.pids: dict[int, int] = {}  # wid -> pid
        self.handed_over = False
        self._booted = False
        self.halt: Halt | None = None
        self.exit_code: int | None = None
        self._pending: deque[Observation] = deque()
        self._busy = False
        self._upgrade_pid: int | None = None
        self._upgrade_read_fd: int | None = None
        self._selector = selectors.DefaultSelector()
        self._signals: SignalQueue | None = None
        self._announced = False
        self.metrics = master_metrics(config, self.core)

    # ------------------------------------------------------------------ logging

    @property
    def logger(self) -> logging.Logger:
        with contextlib.suppress(Exception):
            logger = self.config.log.error_logger
            if logger is not None:
                return logger
        return logging.getLogger("hypercorn.error")

    # ------------------------------------------------------------------ main loop

    def run(self) -> int:
        self._signals = SignalQueue()
        try:
            self._selector.register(self._signals.fileno(), selectors.EVENT_READ, "signals")
            if self.reloader is not None:
                self._selector.register(self.reloader.fileno(), selectors.EVENT_READ, "reload")
                self.reloader.start()
            if self.metrics is not None:
                self.metrics.register(self._selector)
                if self.metrics.url is not None:
                    self.logger.info("Prometheus metrics at %s", self.metrics.url)
            self._execute(self.core.start(time.monotonic()))
            self._drain_pending()
            while self.exit_code is None:
                self._wait_once()
            return self.exit_code
        finally:
            self._shutdown()

    def _wait_once(self) -> None:
        deadline = self.core.next_deadline()
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        for key, events in self._selector.select(timeout):
            tag = key.data
            if callable(tag):  # (the metrics server's sockets)
                tag(events)
            elif tag == "signals":
                self._take_signals()
            elif tag == "reload":
                self._on_reload_wakeup()
            elif tag == "upgrade":
                self._on_upgrade_pipe()
            else:
                self._read_worker(tag)
        self._reap()
        self._feed(Tick())

    def _take_signals(self) -> None:
        assert self._signals is not None
        for signum in self._signals.drain():
            sig = MASTER_SIGNALS.get(signum)
            if sig is not None:
                self._feed(SignalReceived(sig))

    def _feed(self, observation: Observation) -> None:
        self._pending.append(observation)
        self._drain_pending()

    def _drain_pending(self) -> None:
        if self._busy:
            return
        self._busy = True
        try:
            while self._pending:
                observation = self._pending.popleft()
                self._execute(self.core.handle(observation, time.monotonic()))
        finally:
            self._busy = False

    # ------------------------------------------------------------------ inputs

    def _read_worker(self, pid: int) -> None:
        worker = self.workers.get(pid)
        if worker is None or worker.fd is None:
            return
        while True:
            try:
                data = os.read(worker.fd, 4096)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data = b""
            if not data:
                self._close_worker_pipe(worker)
                return
            for message in worker.decoder.feed(data):
                if message.kind is MessageKind.READY:
                    self._feed(WorkerReady(worker.wid))
                elif message.kind is MessageKind.BEAT:
                    self._feed(WorkerBeat(worker.wid))
                elif message.kind is MessageKind.STOPPING:
                    # A signal to the process group reached us as well: it counts first.
                    self._take_signals()
                    self._feed(WorkerStopping(worker.wid))
                elif message.kind is MessageKind.RETIRE:
                    self._feed(WorkerRetiring(worker.wid))
                elif message.kind is MessageKind.SHUTDOWN:
                    self._feed(WorkerShuttingDown(worker.wid))
                elif message.kind is MessageKind.METRICS and self.metrics is not None:
                    self.metrics.update(worker.wid, message.data)
                else:
                    self._feed(WorkerFailed(worker.wid, message.reason))

    def _close_worker_pipe(self, worker: _Worker) -> None:
        if worker.fd is None:
            return
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(worker.fd)
        with contextlib.suppress(OSError):
            os.close(worker.fd)
        worker.fd = None

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            code = os.waitstatus_to_exitcode(status)
            if pid == self._upgrade_pid:
                self._on_upgrade_exit(code)
                continue
            worker = self.workers.get(pid)
            if worker is None:
                continue
            self._read_worker(pid)  # messages written just before the exit come first
            del self.workers[pid]
            self._close_worker_pipe(worker)
            self.pids.pop(worker.wid, None)
            if code < 0:
                dumped = os.WIFSIGNALED(status) and os.WCOREDUMP(status)
                exited = ChildExited(worker.wid, signal=-code, core_dumped=dumped)
            else:
                exited = ChildExited(worker.wid, code=code)
            if self.metrics is not None:  # (asks the core why, before the core hears of it)
                self.metrics.worker_exited(exited.wid, restart_cause(self.core, exited))
            self._feed(exited)

    def _on_reload_wakeup(self) -> None:
        assert self.reloader is not None
        changed = self.reloader.drain()
        if self.reloader.error is not None:
            self.logger.error("--reload: %s", self.reloader.error)
            self.reloader.error = None
        if not changed:
            return
        config_file = os.path.abspath(self.config_file) if self.config_file else None
        if config_file is not None and config_file in changed:
            self._feed(SignalReceived(Sig.HUP))
        else:
            cwd = os.getcwd()
            self._feed(FilesChanged(tuple(os.path.relpath(p, cwd) for p in changed)))

    # ------------------------------------------------------------------ commands

    def _execute(self, commands: list[Command]) -> None:
        for command in commands:
            match command:
                case Spawn():
                    self._spawn(command)
                case Kill(wid=wid, sig=sig):
                    pid = self.pids.get(wid)
                    if pid is not None:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, to_signal(sig))
                case Notify(message=message):
                    systemd.notify(message)
                case Log(level=level, message=message):
                    self.logger.log(_LEVELS[level], message)
                case ReloadConfig():
                    self._pending.append(self._reload_config())
                case ReopenLogs():
                    reopen_log_files(self.config.log)
                case Reexec():
                    self._reexec()
                case Booted():
                    self._on_booted()
                case HandOver():
                    self.handed_over = True
                    if self._upgrade_pid is not None:
                        systemd.notify(f"MAINPID={self._upgrade_pid}")
                case WritePidfile():
                    if self.config.pid_path:
                        from hypercorn.arbiter.pidfile import write_pidfile

                        with contextlib.suppress(BootError):
                            write_pidfile(self.config.pid_path)
                case CloseSlot(slot=slot):
                    self._close_slot(slot)
                case RetireListeners(slot=slot):
                    self.listeners.retire(slot, self.config.backlog)
                case CloseListeners():
                    for sockets in (self.listeners.base, *self.listeners.slots.values()):
                        close_sockets(sockets)
                case Halt():
                    self.halt = command
                case Exit(code=code):
                    self.exit_code = code
                case _:  # pragma: no cover
                    raise AssertionError(command)

    def _sockets_for(self, slot: int) -> Sockets:
        listeners = self.listeners
        sockets = listeners.for_slot(slot)
        if sockets is not None:
            return sockets
        if not self.config.reuse_port:
            if not listeners.base.quic_sockets:
                return listeners.base
            # The stream listeners are shared; QUIC needs a UDP socket per slot.
            sockets = listeners.slots[slot] = quic_slot_clone(listeners.base)
            return sockets
        # Not listening yet: the worker listens once ready, so a booting worker holds no
        # connections.
        sockets = reuse_port_clone(listeners.base, self.config.backlog, listen=False)
        shared = {id(sock) for sock in all_sockets(listeners.base)}
        listeners.retirable.update(
            id(sock)
            for sock in all_sockets(sockets)
            if id(sock) not in shared and sock.type == socket.SOCK_STREAM
        )
        listeners.slots[slot] = sockets
        return sockets

    def _master_fds(self) -> list[int]:
        fds = [w.fd for w in self.workers.values() if w.fd is not None]
        if self._signals is not None:
            fds.extend(self._signals.fds)
        if self.reloader is not None:
            fds.extend(self.reloader.fds)
        reporter_fd = self.reporter.fd if self.reporter is not None else None
        fds.extend(
            fd for fd in (self._upgrade_read_fd, self.upgrade_fd, reporter_fd) if fd is not None
        )
        fds.extend(self.metrics.fds() if self.metrics is not None else ())
        selector_fileno = getattr(self._selector, "fileno", None)
        if selector_fileno is not None:
            fds.append(selector_fileno())
        return fds

    def _spawn(self, command: Spawn) -> None:
        from hypercorn.workers.process import WorkerSpec, worker_main

        try:
            sockets = self._sockets_for(command.slot)
        except BootError as exc:
            self._pending.append(WorkerFailed(command.wid, str(exc)))
            self._pending.append(ChildExited(command.wid, code=EXIT_BOOT_ERROR))
            return
        mine = {id(sock) for sock in all_sockets(sockets)}
        others = [
            sock
            for extra in (self.listeners.base, *self.listeners.slots.values())
            for sock in all_sockets(extra)
            if id(sock) not in mine
        ]
        read_fd, write_fd = os.pipe()
        spec = WorkerSpec(
            config=self.config,
            sockets=sockets,
            channel_fd=write_fd,
            master_pid=self.master_pid,
            slot=command.slot,
            generation=command.generation,
            app=self.app,
            close_fds=[read_fd, *self._master_fds()],
            close_sockets=list({id(s): s for s in others}.values()),
        )
        try:
            pid, mask = fork_blocking_signals()
        except OSError as exc:
            os.close(read_fd)
            os.close(write_fd)
            self._pending.append(WorkerFailed(command.wid, f"cannot fork a worker: {exc}"))
            self._pending.append(ChildExited(command.wid, code=EXIT_FAILURE))
            return
        if pid == 0:
            reset_worker_signals()
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            worker_main(spec)  # never returns
        os.close(write_fd)
        os.set_blocking(read_fd, False)
        self.workers[pid] = _Worker(command.wid, pid, read_fd)
        self.pids[command.wid] = pid
        self.core.set_pid(command.wid, pid)
        self._selector.register(read_fd, selectors.EVENT_READ, pid)

    def _close_slot(self, slot: int) -> None:
        if slot == 0:
            # Slot 0's sockets are the base set (logged, cloned, handed to a new master):
            # they stay bound, not listening, for a slot 0 that TTIN may bring back.
            self.listeners.retire(0, self.config.backlog)
            return
        sockets = self.listeners.slots.pop(slot, None)
        if sockets is None:
            return
        keep = {id(sock) for sock in all_sockets(self.listeners.base)}
        for extra in self.listeners.slots.values():
            keep.update(id(sock) for sock in all_sockets(extra))
        for sock in all_sockets(sockets):
            if id(sock) not in keep:
                sock.close()

    def _reload_config(self) -> ConfigReloaded:
        if self.cli_args is None:
            return ConfigReloaded(
                None, "started from Python rather than the command line: nothing to re-read"
            )
        from hypercorn.conf.cli import config_from_args

        try:
            new = config_from_args(self.cli_args)
        except Exception as exc:  # ConfigError, or anything a Python config file raises
            return ConfigReloaded(None, " ".join(str(exc).split()) or type(exc).__name__)
        except SystemExit:
            return ConfigReloaded(None, "the configuration exited instead of loading")
        if (new.bind, new.insecure_bind, new.quic_bind) != (
            self.config.bind,
            self.config.insecure_bind,
            self.config.quic_bind,
        ):
            self.logger.warning("bind changes take effect on restart or SIGUSR2 only")
        self.config = new
        return ConfigReloaded(core_settings(new))

    @property
    def owns_unix_paths(self) -> bool:
        """Whether this master may remove its unix socket files on the way out.

        Only the master that serves them at the end may. That is not this one while a new
        master started by SIGUSR2 runs (it inherited the sockets: whether it comes up or
        this one is stopped first, the paths are its to keep), nor once it took over; and a
        master that inherited the sockets owns them only once it is ready (if it fails,
        the old master still serves them).
        """
        if self.handed_over or self._upgrade_pid is not None:
            return False
        return self.listeners.source != "upgrade" or self._booted

    def _on_booted(self) -> None:
        self._booted = True
        if not self._announced:
            # Upstream's startup lines, once every worker has loaded the app (and the
            # certificate) and listens; through the configured Logger's own methods.
            from hypercorn.arbiter.sockets import running_messages
            from hypercorn.logging import log_sync

            self._announced = True
            for message in running_messages(self.listeners.base):
                log_sync(self.config.log, "info", message)
        if self.reporter is not None:
            self.reporter.ready()
        if self.upgrade_fd is not None:
            with contextlib.suppress(OSError):
                os.write(self.upgrade_fd, b"R")
            with contextlib.suppress(OSError):
                os.close(self.upgrade_fd)
            self.upgrade_fd = None

    # ------------------------------------------------------------------ SIGUSR2

    def _reexec(self) -> None:
        slots = {0: self.listeners.base, **self.listeners.slots}
        fds_value, fds = upgrade_env(slots, self.listeners.retirable)
        read_fd, write_fd = os.pipe()
        env = {k: v for k, v in os.environ.items() if not k.startswith("LISTEN_")}
        env[FDS_ENV] = fds_value
        env[UPGRADE_FD_ENV] = str(write_fd)
        argv = [sys.executable, *sys.orig_argv[1:]]
        try:
            pid, mask = fork_blocking_signals()
        except OSError as exc:
            os.close(read_fd)
            os.close(write_fd)
            self._pending.append(UpgradeFailed(f"cannot fork: {exc}"))
            return
        if pid == 0:  # pragma: no cover - replaced by exec
            try:
                signal.pthread_sigmask(signal.SIG_SETMASK, mask)
                env[FDS_PID_ENV] = str(os.getpid())
                for fd in (*fds, write_fd):
                    os.set_inheritable(fd, True)
                os.close(read_fd)
                os.execve(sys.executable, argv, env)
            finally:
                os._exit(127)
        os.close(write_fd)
        os.set_blocking(read_fd, False)
        self._upgrade_pid = pid
        self._upgrade_read_fd = read_fd
        self._selector.register(read_fd, selectors.EVENT_READ, "upgrade")
        self.logger.info("new master %d started", pid)

    def _on_upgrade_pipe(self) -> None:
        fd = self._upgrade_read_fd
        if fd is None:
            return
        try:
            data = os.read(fd, 64)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if b"R" in data:
            self._feed(UpgradeReady())
        if not data or b"R" in data:
            self._close_upgrade_pipe()

    def _close_upgrade_pipe(self) -> None:
        fd, self._upgrade_read_fd = self._upgrade_read_fd, None
        if fd is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(fd)
            with contextlib.suppress(OSError):
                os.close(fd)

    def _on_upgrade_exit(self, code: int) -> None:
        self._upgrade_pid = None
        self._close_upgrade_pipe()
        if self.handed_over:
            return
        how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
        self._feed(UpgradeFailed(f"the new master {how} before it was ready"))

    # ------------------------------------------------------------------ shutdown

    def _shutdown(self) -> None:
        # Normally every worker has been reaped by now; after a crash of the loop itself,
        # make sure none is left behind holding the port.
        for pid in list(self.workers):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        for worker in self.workers.values():
            self._close_worker_pipe(worker)
        self._close_upgrade_pipe()
        if self.reloader is not None:
            self.reloader.close()
        if self.metrics is not None:
            self.metrics.close()
        if self._signals is not None:
            self._signals.close()
        with contextlib.suppress(Exception):
            self._selector.close()
