"""What each master signal does, by phase: ``SIGNAL_TABLE`` and its handlers (pure, no I/O).

``SignalHandlers`` is a mixin of ``ArbiterCore`` (``core.py``): the handlers read and change
the core's state and use its helpers, declared below for the type checker only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from hypercorn.arbiter.messages import (
    CloseSlot,
    Command,
    CoreSettings,
    Kill,
    LogLevel,
    Notify,
    Reexec,
    ReloadConfig,
    ReopenLogs,
    Sig,
)
from hypercorn.arbiter.state import Phase, SlotRecord, WorkerRecord

__all__ = ["SIGNAL_TABLE", "SignalHandlers"]


class SignalHandlers:
    settings: CoreSettings
    phase: Phase
    workers: dict[int, WorkerRecord]
    slots: dict[int, SlotRecord]
    upgrading: bool
    _reload_pending: bool
    #: Signals received while booting, run once every worker is ready.
    deferred: list[Sig]

    if TYPE_CHECKING:

        def _emit(self, command: Command) -> None: ...
        def _log(self, level: LogLevel, message: str) -> None: ...
        def _begin_stop(
            self, now: float, sig: Sig, *, quick: bool, notify: bool = True
        ) -> None: ...
        def _drain(self, worker: WorkerRecord, now: float, sig: Sig) -> None: ...
        def _start_roll(self, now: float, why: str, *, notify: bool = True) -> None: ...
        @staticmethod
        def _set_kill_at(worker: WorkerRecord, when: float) -> None: ...

    def _graceful_stop(self, now: float) -> None:
        self._log("info", "graceful stop requested; draining workers")
        self._begin_stop(now, Sig.TERM, quick=False)

    def _quick_stop(self, now: float) -> None:
        self._log("info", "quick stop requested")
        self._begin_stop(now, Sig.QUIT, quick=True)

    def _immediate_stop(self, now: float) -> None:
        self._log("warning", "second interrupt: killing workers now")
        for worker in self.workers.values():
            self._emit(Kill(worker.wid, Sig.KILL))
            worker.kill_at = None

    def _escalate_to_quick(self, now: float) -> None:
        self._log("info", "quick stop requested while stopping")
        for worker in self.workers.values():
            self._emit(Kill(worker.wid, Sig.QUIT))
            worker.quick = True
            self._set_kill_at(worker, now + self.settings.quick_timeout)

    def _reload(self, now: float) -> None:
        self._log("info", "SIGHUP: re-reading the configuration, then rolling restart")
        self._emit(Notify("RELOADING=1\nSTATUS=re-reading configuration"))
        self._emit(ReloadConfig())
        self._reload_pending = True

    def _roll(self, now: float) -> None:
        # logrotate's postrotate sends USR1: every process reopens its log files first
        # (workers forked from here on inherit the new ones).
        self._emit(ReopenLogs())
        for worker in self.workers.values():
            self._emit(Kill(worker.wid, Sig.USR1))
        self._start_roll(now, "SIGUSR1")

    def _upgrade(self, now: float) -> None:
        if self.upgrading:
            self._log("warning", "SIGUSR2 ignored: an upgrade is already in progress")
            return
        self.upgrading = True
        self._log("info", "SIGUSR2: starting a new master on the same listeners")
        self._emit(Reexec())

    def _add_worker(self, now: float) -> None:
        self._add_slot()
        self._log("info", f"SIGTTIN: adding a worker ({len(self.slots)} now)")

    def _remove_worker(self, now: float) -> None:
        if len(self.slots) <= 1:
            self._log("warning", "SIGTTOU ignored: keeping at least one worker")
            return
        self._remove_slot(now)
        self._log("info", f"SIGTTOU: removing a worker ({len(self.slots)} left)")

    def _add_slot(self) -> None:
        index = next(i for i in range(len(self.slots) + 1) if i not in self.slots)
        self.slots[index] = SlotRecord(index)

    def _remove_slot(self, now: float) -> None:
        def age(slot: SlotRecord) -> tuple[int, float, int]:
            # Empty slots first (nothing to drain), then the oldest worker (gunicorn).
            if slot.current is None:
                return (0, 0.0, slot.index)
            worker = self.workers[slot.current]
            return (1, worker.spawned_at, worker.wid)

        slot = min(self.slots.values(), key=age)
        del self.slots[slot.index]
        for wid in (slot.current, slot.incoming):
            if wid is not None:
                self._drain(self.workers[wid], now, Sig.TERM)
        self._emit(CloseSlot(slot.index))

    def _defer(self, sig: Sig) -> None:
        """USR1/HUP/USR2 while booting: run once every worker is ready (at most once each)."""
        if sig not in self.deferred:
            self.deferred.append(sig)
        self._log("info", f"SIG{sig.value} received while booting: it will run once ready")


Handler = Callable[[SignalHandlers, float], None]

_ACTIVE = (Phase.BOOTING, Phase.RUNNING, Phase.ROLLING)

#: (phase, signal) -> handler. A missing row means "ignored in that phase".
SIGNAL_TABLE: dict[tuple[Phase, Sig], Handler] = {
    **{(p, Sig.TERM): SignalHandlers._graceful_stop for p in _ACTIVE},
    **{(p, Sig.INT): SignalHandlers._graceful_stop for p in _ACTIVE},
    **{(p, Sig.QUIT): SignalHandlers._quick_stop for p in _ACTIVE},
    **{(p, Sig.TTIN): SignalHandlers._add_worker for p in _ACTIVE},
    **{(p, Sig.TTOU): SignalHandlers._remove_worker for p in _ACTIVE},
    (Phase.BOOTING, Sig.USR1): lambda core, now: core._defer(Sig.USR1),
    (Phase.BOOTING, Sig.HUP): lambda core, now: core._defer(Sig.HUP),
    (Phase.BOOTING, Sig.USR2): lambda core, now: core._defer(Sig.USR2),
    (Phase.RUNNING, Sig.USR1): SignalHandlers._roll,
    (Phase.ROLLING, Sig.USR1): SignalHandlers._roll,
    (Phase.RUNNING, Sig.HUP): SignalHandlers._reload,
    (Phase.ROLLING, Sig.HUP): SignalHandlers._reload,
    (Phase.RUNNING, Sig.USR2): SignalHandlers._upgrade,
    (Phase.ROLLING, Sig.USR2): SignalHandlers._upgrade,
    (Phase.STOPPING, Sig.INT): SignalHandlers._immediate_stop,
    (Phase.STOPPING, Sig.QUIT): SignalHandlers._escalate_to_quick,
}
