"""What the runner tells the arbiter core (observations) and what the core asks back (commands).

Both sides are plain frozen dataclasses so that the core stays pure: the runner turns real
signals, child exits and pipe messages into observations, feeds them to
``ArbiterCore.handle(observation, now)``, and carries out the commands it gets back in order.

Workers are named by a *worker id* (``wid``) chosen by the core, not by a pid: the core asks
for ``Spawn(wid=7, ...)`` and the runner keeps the ``pid -> wid`` map. That keeps the core
free of fork results and makes its tests read in the order things happen.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Literal, TypeAlias


class Sig(enum.Enum):
    """Signals, by name, without importing ``signal`` into the core."""

    TERM = "TERM"
    INT = "INT"
    QUIT = "QUIT"
    HUP = "HUP"
    USR1 = "USR1"
    USR2 = "USR2"
    TTIN = "TTIN"
    TTOU = "TTOU"
    # Only ever sent to workers:
    ABRT = "ABRT"
    KILL = "KILL"


@dataclass(frozen=True)
class CoreSettings:
    """The few numbers the core needs, taken from ``Config`` by the runner.

    ``timeout <= 0`` disables the heartbeat check (gunicorn's ``--timeout 0``).
    """

    workers: int
    graceful_timeout: float = 3.0
    timeout: float = 30.0
    #: How long a worker may take from fork to READY (import + lifespan startup).
    boot_timeout: float = 90.0
    #: After SIGABRT (stack dump) or the graceful deadline: this long until SIGKILL.
    kill_grace: float = 1.0
    #: SIGQUIT (fast stop) deadline before SIGKILL.
    quick_timeout: float = 1.0
    #: Crash back-off: 0 for the first crash, then base * 2**n, capped at max.
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    #: A worker that served this long before dying resets its slot's crash count.
    stable_after: float = 10.0
    #: Workers dying before READY (not with a boot-failure code) this many times in a row
    #: while booting halt the server.
    max_boot_crashes: int = 5
    #: A worker that stops without the master asking is replaced this much later: a signal
    #: sent to the whole process group reaches the master within that time.
    stray_stop_grace: float = 0.5
    #: How long a worker's aborted connections may take after graceful_timeout (the
    #: worker's own wait, ``serve._ABORT_GRACE``).
    abort_grace: float = 1.0
    #: The time lifespan shutdown may take, counted from when a worker reports it began.
    shutdown_timeout: float = 60.0


# --------------------------------------------------------------------------- observations


@dataclass(frozen=True)
class SignalReceived:
    sig: Sig


@dataclass(frozen=True)
class ChildExited:
    """A worker was reaped. Exactly one of ``code`` / ``signal`` is set."""

    wid: int
    code: int | None = None
    signal: int | None = None
    core_dumped: bool = False


@dataclass(frozen=True)
class WorkerReady:
    wid: int


@dataclass(frozen=True)
class WorkerBeat:
    wid: int


@dataclass(frozen=True)
class WorkerStopping:
    """The worker began a graceful stop on its own (``max_requests``, lost master)."""

    wid: int


@dataclass(frozen=True)
class WorkerRetiring:
    """The worker reached ``max_requests``: it keeps serving until the master replaces it."""

    wid: int


@dataclass(frozen=True)
class WorkerShuttingDown:
    """The worker drained and now runs the app's lifespan shutdown."""

    wid: int


@dataclass(frozen=True)
class WorkerFailed:
    """The worker explains why it is about to exit before READY (one line)."""

    wid: int
    reason: str


@dataclass(frozen=True)
class FilesChanged:
    paths: tuple[str, ...] = ()


@dataclass(frozen=True)
class ConfigReloaded:
    """Answer to ``ReloadConfig``: new settings, or the error that kept the old ones."""

    settings: CoreSettings | None
    error: str | None = None


@dataclass(frozen=True)
class UpgradeReady:
    """The master started by ``Reexec`` reports that all its workers are ready."""


@dataclass(frozen=True)
class UpgradeFailed:
    reason: str


@dataclass(frozen=True)
class Tick:
    """Time passed (the selector timed out at ``next_deadline``)."""


Observation: TypeAlias = (
    SignalReceived
    | ChildExited
    | WorkerReady
    | WorkerBeat
    | WorkerStopping
    | WorkerRetiring
    | WorkerShuttingDown
    | WorkerFailed
    | FilesChanged
    | ConfigReloaded
    | UpgradeReady
    | UpgradeFailed
    | Tick
)

# --------------------------------------------------------------------------- commands


@dataclass(frozen=True)
class Spawn:
    wid: int
    slot: int
    generation: int


@dataclass(frozen=True)
class Kill:
    wid: int
    sig: Sig


@dataclass(frozen=True)
class Notify:
    """An sd_notify payload, e.g. ``"READY=1\\nSTATUS=4 workers"``."""

    message: str


LogLevel = Literal["debug", "info", "warning", "error", "critical"]


@dataclass(frozen=True)
class Log:
    level: LogLevel
    message: str


@dataclass(frozen=True)
class ReloadConfig:
    """Re-read the configuration file and answer with ``ConfigReloaded``."""


@dataclass(frozen=True)
class ReopenLogs:
    """Reopen the master's log files (after logrotate moved them; SIGUSR1)."""


@dataclass(frozen=True)
class Reexec:
    """Start a new master that inherits every listener (USR2); answer later with
    ``UpgradeReady`` or ``UpgradeFailed``."""


@dataclass(frozen=True)
class Booted:
    """Every slot reported READY for the first time: tell whoever waits for this master."""


@dataclass(frozen=True)
class HandOver:
    """The upgraded master is ready: hand systemd's MAINPID over and retire quietly
    (leave the pid file and unix socket files to the new master)."""


@dataclass(frozen=True)
class WritePidfile:
    pass


@dataclass(frozen=True)
class CloseSlot:
    """The slot is gone (TTOU): close the master's copy of its SO_REUSEPORT listeners."""

    slot: int


@dataclass(frozen=True)
class RetireListeners:
    """The slot has no live worker while others do: stop the kernel from handing its
    SO_REUSEPORT listeners connections (its next worker listens again once ready)."""

    slot: int


@dataclass(frozen=True)
class CloseListeners:
    """A stop began: close the master's copy of every listener, so that once the workers
    have closed theirs new connections are refused (a socket another process still holds,
    systemd's or a new master's after SIGUSR2, stays open there)."""


@dataclass(frozen=True)
class Halt:
    """The server cannot run (boot failure): stop everything and exit with ``code``."""

    code: int
    reason: str


@dataclass(frozen=True)
class Exit:
    """All workers are gone: the runner returns ``code``."""

    code: int


Command: TypeAlias = (
    Spawn
    | Kill
    | Notify
    | Log
    | ReloadConfig
    | ReopenLogs
    | Reexec
    | Booted
    | HandOver
    | WritePidfile
    | CloseSlot
    | RetireListeners
    | CloseListeners
    | Halt
    | Exit
)
