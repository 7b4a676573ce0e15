"""The arbiter core's bookkeeping: phases, worker records and slots (plain data, no I/O)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["Phase", "SlotRecord", "WorkerRecord", "WorkerState"]


class Phase(enum.Enum):
    BOOTING = "booting"
    RUNNING = "running"
    ROLLING = "rolling"
    STOPPING = "stopping"
    STOPPED = "stopped"


class WorkerState(enum.Enum):
    BOOTING = "booting"  # forked, not READY yet
    READY = "ready"  # serving, heartbeating
    DRAINING = "draining"  # told to stop (or announced it is stopping); not in a slot


@dataclass
class WorkerRecord:
    wid: int
    slot: int
    generation: int
    spawned_at: float
    last_beat: float
    state: WorkerState = WorkerState.BOOTING
    pid: int | None = None
    ready_at: float | None = None
    #: SIGKILL at this time (graceful deadline passed, or stack dump sent).
    kill_at: float | None = None
    #: SIGABRT already sent for a missed heartbeat.
    timed_out: bool = False
    #: The one-line reason the worker gave before exiting (WorkerFailed).
    failure: str | None = None
    #: The worker asked to be replaced (max_requests); it serves until its successor is READY.
    retiring: bool = False
    #: Until it reports STOPPING (sent once its accept loop ended) or exits.
    accepting: bool = True
    #: Told to stop quickly (QUIT, halt): its short kill deadline is not extended.
    quick: bool = False

    @property
    def name(self) -> str:
        return f"worker {self.pid}" if self.pid is not None else f"worker #{self.wid}"


@dataclass
class SlotRecord:
    index: int
    current: int | None = None
    incoming: int | None = None
    crashes: int = 0
    respawn_at: float | None = None
    #: Its listeners were retired (no live worker); set again once a worker of it is READY.
    quiet: bool = False
    #: A worker of it failed to start after the server was ready (reported until one does).
    failing: bool = False
