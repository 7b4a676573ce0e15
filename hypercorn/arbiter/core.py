"""The arbiter's brain: observations in, commands out, no I/O (no fork, no signals, no clock).

Theory of operation
-------------------
The master keeps ``workers`` *slots*. Each slot holds at most one ``current`` worker (booting
or serving) and, during a rolling restart, one ``incoming`` replacement. A worker told to
stop leaves its slot and is *draining* until it is reaped. Workers are named by a core-chosen
worker id (``wid``); the runner maps pids to wids.

Phases::

    BOOTING ─► RUNNING ─► ROLLING ─► RUNNING
                  │  ▲        │
                  │  └────────┘ (every old-generation worker replaced)
                  └─► STOPPING(exit code, kill deadlines) ─► STOPPED

Rules, re-checked after every observation (``_settle``):

1. An empty slot outside STOPPING is refilled at once, or at its back-off deadline after a
   crash. Nothing is ever spawned while STOPPING.
2. BOOTING becomes RUNNING when every slot's current worker is READY (``Booted`` + READY=1).
3. ROLLING replaces one slot at a time: spawn generation N+1 as ``incoming``, wait for its
   READY, then TERM the old one, and start the next slot only once the old worker has
   exited: at most ``workers + 1`` workers are alive, and ``workers`` serve throughout. The
   roll ends when no slot's worker is older than the roll's generation. A worker that asks
   to retire (``max_requests``) is replaced the same way, in any phase but STOPPING, and
   serves until its replacement is READY.
4. A worker that dies before READY with a boot-failure exit code (3: boot, 4: app load)
   halts the server while BOOTING (the first start), aborts a roll (the old workers keep
   serving), and otherwise is retried with back-off and reported (log, STATUS=): once the
   server has been ready, a worker that cannot start is an outage of something the app
   needs, not a configuration mistake.
5. A worker that dies after READY is replaced; repeated quick deaths back off exponentially.
6. A worker silent for ``timeout`` gets SIGABRT (its faulthandler dumps every thread's stack)
   then SIGKILL ``kill_grace`` later. Draining workers get SIGKILL once their deadline
   passes: ``graceful_timeout`` plus grace for the drain, then ``shutdown_timeout`` for
   lifespan shutdown once the worker reports it began (a quick stop keeps its short one).
7. STOPPING begins by closing the master's listeners (the workers close theirs as their stop
   begins), so new connections are refused at once; it ends (``Exit``) when the last worker
   has been reaped.

Signals are dispatched through ``SIGNAL_TABLE`` (``signal_table.py``): a (phase, signal) pair
with no row is ignored.
"""

from __future__ import annotations

from hypercorn.arbiter.messages import (
    Booted,
    ChildExited,
    CloseListeners,
    Command,
    ConfigReloaded,
    CoreSettings,
    Exit,
    FilesChanged,
    Halt,
    HandOver,
    Kill,
    Log,
    LogLevel,
    Notify,
    Observation,
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
from hypercorn.arbiter.signal_table import SIGNAL_TABLE, SignalHandlers
from hypercorn.arbiter.state import Phase, SlotRecord, WorkerRecord, WorkerState
from hypercorn.errors import EXIT_APP_LOAD_ERROR, EXIT_BOOT_ERROR, EXIT_OK

__all__ = ["SIGNAL_TABLE", "ArbiterCore", "Phase", "SlotRecord", "WorkerRecord", "WorkerState"]

BOOT_FAILURE_CODES = frozenset({EXIT_BOOT_ERROR, EXIT_APP_LOAD_ERROR})
#: SIGINT, SIGQUIT, SIGTERM (the same numbers on every POSIX system).
STOP_SIGNAL_NUMBERS = frozenset({2, 3, 15})


class ArbiterCore(SignalHandlers):
    """Pure arbiter state machine. ``handle(observation, now) -> commands``."""

    def __init__(self, settings: CoreSettings, now: float) -> None:
        if settings.workers < 1:
            raise ValueError("the arbiter needs at least one worker")
        self.settings = settings
        self.phase = Phase.BOOTING
        self.workers: dict[int, WorkerRecord] = {}
        self.slots: dict[int, SlotRecord] = {i: SlotRecord(i) for i in range(settings.workers)}
        self.generation = 0
        self.exit_code: int | None = None
        self.halt_reason: str | None = None
        self.upgrading = False
        self.deferred: list[Sig] = []
        self._roll_target: int | None = None
        self._reload_pending = False
        self._boot_crashes = 0
        self._next_wid = 1
        self._out: list[Command] = []

    # ------------------------------------------------------------------ public surface

    def start(self, now: float) -> list[Command]:
        """The first commands: spawn every slot."""
        self._settle(now)
        return self._flush()

    def handle(self, observation: Observation, now: float) -> list[Command]:
        if self.phase is Phase.STOPPED:
            return []  # Exit was the last command (a late UpgradeReady must not stop again)
        match observation:
            case SignalReceived(sig=sig):
                handler = SIGNAL_TABLE.get((self.phase, sig))
                if handler is None:
                    self._log("debug", f"ignoring SIG{sig.value} while {self.phase.value}")
                else:
                    handler(self, now)
            case ChildExited():
                self._on_child_exit(observation, now)
            case WorkerReady(wid=wid):
                self._on_ready(wid, now)
            case WorkerBeat(wid=wid):
                worker = self.workers.get(wid)
                if worker is not None:
                    worker.last_beat = now
            case WorkerStopping(wid=wid):
                self._on_worker_stopping(wid, now)
            case WorkerRetiring(wid=wid):
                self._on_worker_retiring(wid)
            case WorkerShuttingDown(wid=wid):
                self._on_worker_shutting_down(wid, now)
            case WorkerFailed(wid=wid, reason=reason):
                worker = self.workers.get(wid)
                if worker is not None:
                    worker.failure = reason
            case FilesChanged(paths=paths):
                self._on_files_changed(paths, now)
            case ConfigReloaded(settings=settings, error=error):
                self._on_config_reloaded(settings, error, now)
            case UpgradeReady():
                self._on_upgrade_ready(now)
            case UpgradeFailed(reason=reason):
                self._on_upgrade_failed(reason)
            case Tick():
                # Deadlines only on a Tick, which the runner feeds after everything one wake-up
                # read: after a stall of the master, every worker's queued beats count first,
                # so a healthy worker whose beat sits behind another's is not timed out.
                self._check_deadlines(now)
            case _:  # pragma: no cover - exhaustiveness guard for mypy
                raise AssertionError(observation)
        self._settle(now)
        return self._flush()

    def set_pid(self, wid: int, pid: int) -> None:
        """Record the pid the runner forked for ``wid`` (only used in log lines)."""
        worker = self.workers.get(wid)
        if worker is not None:
            worker.pid = pid

    def next_deadline(self) -> float | None:
        """The earliest time at which ``handle(Tick(), now)`` has something to do."""
        deadlines: list[float] = []
        for worker in self.workers.values():
            if worker.kill_at is not None:
                deadlines.append(worker.kill_at)
            limit = self._heartbeat_limit(worker)
            if limit is not None:
                deadlines.append(limit)
        if self.phase not in (Phase.STOPPING, Phase.STOPPED):
            # (A back-off also delays the replacement of a retiring worker: any slot's counts.)
            deadlines.extend(s.respawn_at for s in self.slots.values() if s.respawn_at is not None)
        return min(deadlines, default=None)

    @property
    def finished(self) -> bool:
        return self.phase is Phase.STOPPED

    def ready_count(self) -> int:
        return sum(1 for w in self.workers.values() if w.state is WorkerState.READY)

    # ------------------------------------------------------------------ observations

    def _on_child_exit(self, exited: ChildExited, now: float) -> None:
        worker = self.workers.pop(exited.wid, None)
        if worker is None:
            return
        slot = self.slots.get(worker.slot)
        was_incoming = slot is not None and slot.incoming == worker.wid
        if slot is not None:
            if slot.current == worker.wid:
                slot.current = None
            if slot.incoming == worker.wid:
                slot.incoming = None
        how = _describe_exit(exited)

        if self.phase is Phase.STOPPING or worker.state is WorkerState.DRAINING:
            # A stop signal's default action ends a worker still booting (Ctrl-C reaches it).
            expected = exited.code == EXIT_OK or exited.signal in STOP_SIGNAL_NUMBERS
            level: LogLevel = "info" if expected else "warning"
            if self.halt_reason is not None:
                level = "debug"  # the halt reason is the one line that matters
            self._log(level, f"{worker.name} {how}")
            return
        if slot is None:
            return
        if worker.state is WorkerState.BOOTING:
            self._on_boot_death(worker, slot, exited, how, was_incoming, now)
            return

        # Died after READY, unasked.
        if worker.timed_out:
            self._log("error", f"{worker.name} {how} after a heartbeat timeout; replacing it")
        elif exited.code == EXIT_OK:
            self._log("info", f"{worker.name} exited; replacing it")
            return
        else:
            self._log("error", f"{worker.name} {how}; replacing it")
        self._count_crash(slot, worker, now)

    def _on_boot_death(
        self,
        worker: WorkerRecord,
        slot: SlotRecord,
        exited: ChildExited,
        how: str,
        was_incoming: bool,
        now: float,
    ) -> None:
        boot_failure = exited.code in BOOT_FAILURE_CODES
        reason = worker.failure or f"{worker.name} {how} before it was ready"
        if was_incoming:
            # The worker it was to replace still serves. A retiring one asks again after a
            # back-off, as a crash would.
            slot.crashes += 1
            slot.respawn_at = now + self._backoff(max(slot.crashes, 2))
            if self.phase is Phase.ROLLING:
                self._roll_target = None
                self.phase = Phase.RUNNING
                self._log("error", f"rolling restart aborted, keeping the old workers: {reason}")
                self._emit(Notify(f"READY=1\nSTATUS=rolling restart failed: {reason}"))
            else:
                self._log("error", f"{reason}; the worker it replaces keeps serving")
            return
        if self.phase is Phase.BOOTING:
            if boot_failure:
                assert exited.code is not None
                self._halt(exited.code, reason, now)
                return
            self._boot_crashes += 1
            if self._boot_crashes >= self.settings.max_boot_crashes:
                self._halt(
                    EXIT_BOOT_ERROR, f"workers keep dying before they are ready: {reason}", now
                )
                return
            self._log("error", reason)
            self._count_crash(slot, worker, now)
            return
        # RUNNING or ROLLING: the server has served, so this is no configuration mistake to
        # halt on (exit 3/4 would keep systemd from restarting it) but an outage of
        # something the app needs (a database): retry with back-off, say so, and let the
        # other workers serve meanwhile.
        self._count_crash(slot, worker, now, quiet=True)
        delay = max(0.0, (slot.respawn_at or now) - now)
        others = self.ready_count()
        serving = f"{others} other worker{'s' if others != 1 else ''} serving"
        self._log("error", f"{reason}; retrying in {delay:.1f}s ({serving})")
        self._emit(Notify(f"STATUS=a worker cannot start: {reason}; retrying ({serving})"))
        slot.failing = True

    def _count_crash(
        self, slot: SlotRecord, worker: WorkerRecord, now: float, *, quiet: bool = False
    ) -> None:
        if worker.ready_at is not None and now - worker.ready_at >= self.settings.stable_after:
            slot.crashes = 0
        slot.crashes += 1
        delay = self._backoff(slot.crashes)
        if delay and not quiet:
            self._log("warning", f"workers keep dying; next start in {delay:.1f}s")
        slot.respawn_at = now + delay

    def _backoff(self, crashes: int) -> float:
        """No wait after the first crash, then base * 2**n, capped."""
        if crashes <= 1:
            return 0.0
        return min(self.settings.backoff_max, self.settings.backoff_base * 2.0 ** (crashes - 2))

    def _on_ready(self, wid: int, now: float) -> None:
        worker = self.workers.get(wid)
        if worker is None or worker.state is not WorkerState.BOOTING:
            return
        worker.state = WorkerState.READY
        worker.ready_at = worker.last_beat = now
        self._boot_crashes = 0
        slot = self.slots.get(worker.slot)
        if slot is not None and slot.failing:
            slot.failing = False
            self._log("info", f"{worker.name} started after earlier failures")
            if not any(s.failing for s in self.slots.values()):
                self._emit(Notify(f"STATUS=serving with {len(self.slots)} workers"))
        if slot is None or slot.incoming != wid:
            return
        slot.incoming = None
        if slot.current is not None:
            old = self.workers[slot.current]
            self._log("info", f"{worker.name} ready; stopping {old.name}")
            self._drain(old, now, Sig.TERM)
        slot.current = wid

    def _on_worker_stopping(self, wid: int, now: float) -> None:
        worker = self.workers.get(wid)
        if worker is None:
            return
        # STOPPING is sent once the worker stopped accepting.
        worker.accepting = False
        if worker.state is not WorkerState.READY:
            return
        if self.phase not in (Phase.RUNNING, Phase.ROLLING, Phase.BOOTING):
            return
        slot = self.slots.get(worker.slot)
        # Nobody here asked it to stop: someone signalled it. Most often the signal went to
        # the whole process group (Ctrl-C, systemd's KillMode=control-group) and reaches the
        # master too, just now: the runner handles the master's pending signals before this
        # message, and the replacement waits a moment so that such a stop starts nothing.
        grace = self.settings.stray_stop_grace
        self._log(
            "info",
            f"{worker.name} was told to stop by someone else; replacing it in {grace:g}s "
            "unless the server stops too",
        )
        # Leave the slot now so a replacement boots while this one drains.
        if slot is not None and slot.current == wid:
            slot.current = None
            slot.respawn_at = now + grace
        worker.state = WorkerState.DRAINING
        self._set_kill_at(worker, now + self._drain_time())

    def _on_worker_retiring(self, wid: int) -> None:
        worker = self.workers.get(wid)
        if worker is None or worker.state is WorkerState.DRAINING or worker.retiring:
            return
        slot = self.slots.get(worker.slot)
        if slot is None or wid not in (slot.current, slot.incoming):
            return
        # (An incoming worker can ask before its READY is read; it would not ask again, so
        # the flag is kept and ``_outdated`` picks it once it is the slot's current worker.)
        worker.retiring = True
        self._log("info", f"{worker.name} asks to be replaced (max_requests); replacing it")

    def _on_files_changed(self, paths: tuple[str, ...], now: float) -> None:
        if self.phase not in (Phase.RUNNING, Phase.ROLLING):
            return
        shown = ", ".join(paths[:3]) + (" ..." if len(paths) > 3 else "")
        self._start_roll(now, f"changes detected ({shown})" if shown else "changes detected")

    def _on_config_reloaded(
        self, settings: CoreSettings | None, error: str | None, now: float
    ) -> None:
        if not self._reload_pending:
            return
        self._reload_pending = False
        if self.phase not in (Phase.RUNNING, Phase.ROLLING):
            return
        if settings is None:
            self._log("error", f"configuration not reloaded, keeping the old one: {error}")
        else:
            if settings.workers != self.settings.workers:
                self._resize(settings.workers, now)
            self.settings = settings
        self._start_roll(now, "SIGHUP", notify=False)

    def _on_upgrade_ready(self, now: float) -> None:
        if not self.upgrading:
            return
        self.upgrading = False
        self._log("info", "the new master is ready; this one retires")
        self._emit(HandOver())
        if self.phase is not Phase.STOPPING:
            self._begin_stop(now, Sig.TERM, quick=False, notify=False)

    def _on_upgrade_failed(self, reason: str) -> None:
        if not self.upgrading:
            return
        self.upgrading = False
        self._log("error", f"upgrade failed, this master keeps running: {reason}")
        self._emit(WritePidfile())

    # ------------------------------------------------------------------ helpers

    def _start_roll(self, now: float, why: str, *, notify: bool = True) -> None:
        self.generation += 1
        self._roll_target = self.generation
        self.phase = Phase.ROLLING
        self._log("info", f"{why}: rolling restart, one worker at a time")
        if notify:
            self._emit(Notify("RELOADING=1\nSTATUS=rolling restart"))

    def _resize(self, workers: int, now: float) -> None:
        self._log("info", f"configuration: workers: {workers} (was {len(self.slots)})")
        while len(self.slots) < workers:
            self._add_slot()
        while len(self.slots) > workers:
            self._remove_slot(now)

    def _begin_stop(self, now: float, sig: Sig, *, quick: bool, notify: bool = True) -> None:
        self.phase = Phase.STOPPING
        self._roll_target = None
        if self.exit_code is None:
            self.exit_code = EXIT_OK
        if notify:
            self._emit(Notify("STOPPING=1\nSTATUS=stopping"))
        self._emit(CloseListeners())
        for worker in self.workers.values():
            self._emit(Kill(worker.wid, sig))
            worker.state = WorkerState.DRAINING
            if quick:
                worker.quick = True
                self._set_kill_at(worker, now + self.settings.quick_timeout)
            else:
                self._set_kill_at(worker, now + self._drain_time())
        for slot in self.slots.values():
            slot.current = slot.incoming = slot.respawn_at = None

    def _halt(self, code: int, reason: str, now: float) -> None:
        self.exit_code = code
        self.halt_reason = reason
        self._emit(Halt(code, reason))
        # TERM, not QUIT: workers still importing have default dispositions, and SIGQUIT's
        # default action dumps core.
        self._begin_stop(now, Sig.TERM, quick=True)

    def _drain(self, worker: WorkerRecord, now: float, sig: Sig) -> None:
        worker.state = WorkerState.DRAINING
        self._emit(Kill(worker.wid, sig))
        self._set_kill_at(worker, now + self._drain_time())

    def _drain_time(self) -> float:
        """How long a draining worker may take before SIGKILL: graceful_timeout for its
        requests, then its own grace for aborted ones. Lifespan shutdown comes on top, once
        the worker says it began (``WorkerShuttingDown``)."""
        settings = self.settings
        return settings.graceful_timeout + settings.abort_grace + settings.kill_grace

    def _on_worker_shutting_down(self, wid: int, now: float) -> None:
        worker = self.workers.get(wid)
        if worker is None or worker.quick or worker.kill_at is None:
            return
        # (Never earlier; a stack dump's kill deadline is no drain: timed_out keeps it.)
        if worker.state is WorkerState.DRAINING and not worker.timed_out:
            limit = now + self.settings.shutdown_timeout + self.settings.kill_grace
            worker.kill_at = max(worker.kill_at, limit)

    @staticmethod
    def _set_kill_at(worker: WorkerRecord, when: float) -> None:
        if worker.kill_at is None or when < worker.kill_at:
            worker.kill_at = when

    def _heartbeat_limit(self, worker: WorkerRecord) -> float | None:
        if worker.timed_out or self.settings.timeout <= 0:
            return None
        if worker.state is WorkerState.BOOTING:
            return worker.spawned_at + self.settings.boot_timeout
        if worker.state is WorkerState.READY:
            return worker.last_beat + self.settings.timeout
        return None

    def _check_deadlines(self, now: float) -> None:
        for worker in self.workers.values():
            if worker.kill_at is not None and now >= worker.kill_at:
                worker.kill_at = None
                self._log("warning", f"{worker.name} did not stop in time; killing it")
                self._emit(Kill(worker.wid, Sig.KILL))
                continue
            limit = self._heartbeat_limit(worker)
            if limit is not None and now >= limit:
                worker.timed_out = True
                if worker.state is WorkerState.BOOTING:
                    silence = f"not ready after {self.settings.boot_timeout:g}s"
                else:
                    silence = f"silent for {now - worker.last_beat:.1f}s"
                self._log(
                    "critical",
                    f"{worker.name} timed out ({silence}); dumping its stacks, then killing it",
                )
                self._emit(Kill(worker.wid, Sig.ABRT))
                self._set_kill_at(worker, now + self.settings.kill_grace)

    def _settle(self, now: float) -> None:
        if self.phase is Phase.STOPPING:
            if not self.workers:
                self.phase = Phase.STOPPED
                self._emit(Exit(EXIT_OK if self.exit_code is None else self.exit_code))
            return
        if self.phase is Phase.STOPPED:
            return
        if self.phase is not Phase.BOOTING:
            self._quiet_dead_slots()  # (before a respawn, which gets the fresh sockets)
        for slot in self.slots.values():
            if slot.respawn_at is not None and slot.respawn_at <= now:
                # Passed: whatever waited for it happens now, or is waiting on something else
                # (a booting replacement whose predecessor died takes the slot).
                slot.respawn_at = None
            if _empty(slot) and slot.respawn_at is None:
                slot.current = self._spawn(slot.index, now)
        if self.phase is Phase.BOOTING:
            if all(self._current_ready(slot) for slot in self.slots.values()):
                self.phase = Phase.RUNNING
                count = len(self.slots)
                self._log("info", f"{count} worker{'s' if count != 1 else ''} ready")
                self._emit(Booted())
                self._emit(Notify(f"READY=1\nSTATUS=serving with {count} workers"))
                deferred, self.deferred = self.deferred, []
                for sig in deferred:
                    SIGNAL_TABLE[(Phase.RUNNING, sig)](self, now)
            if self.phase is Phase.BOOTING:
                return
        if self.phase is Phase.ROLLING and self._roll_done():
            self.phase = Phase.RUNNING
            self._roll_target = None
            self._log("info", "rolling restart complete")
            self._emit(Notify(f"READY=1\nSTATUS=serving with {len(self.slots)} workers"))
        self._replace_next(now)

    def _serving(self, slot: SlotRecord) -> bool:
        if slot.current is None:
            return False
        worker = self.workers[slot.current]
        return worker.state is WorkerState.READY and not worker.timed_out

    def _quiet_dead_slots(self) -> None:
        """A slot without a live worker must not be handed connections (SO_REUSEPORT): retire
        its listeners while another slot serves. The last listening slot keeps its socket,
        so connections queue for a replacement instead of being refused."""
        serving = {index for index, slot in self.slots.items() if self._serving(slot)}
        for index, slot in self.slots.items():
            if index in serving:
                slot.quiet = False
            elif serving and not slot.quiet:
                slot.quiet = True
                self._emit(RetireListeners(index))

    def _current_ready(self, slot: SlotRecord) -> bool:
        return slot.current is not None and self.workers[slot.current].state is WorkerState.READY

    def _roll_done(self) -> bool:
        """Every slot serves the roll's generation, and no older worker still accepts (so a
        client connecting after READY=1 reaches new code)."""
        target = self._roll_target
        assert target is not None
        return all(
            slot.incoming is None
            and (slot.current is None or self.workers[slot.current].generation >= target)
            for slot in self.slots.values()
        ) and not any(w.accepting and w.generation < target for w in self.workers.values())

    def _outdated(self) -> list[SlotRecord]:
        """Slots whose worker must be replaced: older than the roll, or asking to retire."""
        target = self._roll_target
        found = []
        for slot in sorted(self.slots.values(), key=lambda s: s.index):
            if slot.current is None:
                continue
            worker = self.workers[slot.current]
            if worker.retiring or (target is not None and worker.generation < target):
                found.append(slot)
        return found

    def _replace_next(self, now: float) -> None:
        """Start one replacement, if one is due and the worker budget allows it."""
        if any(slot.incoming is not None for slot in self.slots.values()):
            return
        if len(self.workers) > len(self.slots):
            return  # an old worker is still draining: at most workers + 1 alive
        for slot in self._outdated():
            # Replace a serving worker; an old one still booting gets its turn once READY.
            if self._current_ready(slot) and slot.respawn_at is None:
                slot.incoming = self._spawn(slot.index, now)
                return

    def _spawn(self, slot: int, now: float) -> int:
        wid = self._next_wid
        self._next_wid += 1
        self.workers[wid] = WorkerRecord(
            wid=wid, slot=slot, generation=self.generation, spawned_at=now, last_beat=now
        )
        self._emit(Spawn(wid, slot, self.generation))
        return wid

    def _emit(self, command: Command) -> None:
        self._out.append(command)

    def _log(self, level: LogLevel, message: str) -> None:
        self._out.append(Log(level, message))

    def _flush(self) -> list[Command]:
        out, self._out = self._out, []
        return out


def _empty(slot: SlotRecord) -> bool:
    return slot.current is None and slot.incoming is None


def _describe_exit(exited: ChildExited) -> str:
    if exited.signal is not None:
        dumped = " (core dumped)" if exited.core_dumped else ""
        return f"was killed by signal {exited.signal}{dumped}"
    return f"exited with code {exited.code}"
