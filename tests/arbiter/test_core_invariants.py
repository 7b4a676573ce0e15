"""Invariants of the pure arbiter core over random observation sequences (hypothesis).

The runner sleeps until ``next_deadline()``; a deadline that is already past when the core
has just handled an observation makes the master wake at once, again and again (a spinning
master). So after every observation the core's next deadline lies strictly in the future,
and the other bookkeeping rules hold.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from hypercorn.arbiter.core import ArbiterCore, Phase, WorkerState
from hypercorn.arbiter.messages import (
    ChildExited,
    Command,
    ConfigReloaded,
    CoreSettings,
    Exit,
    FilesChanged,
    Observation,
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
)
from hypercorn.errors import EXIT_APP_LOAD_ERROR, EXIT_BOOT_ERROR

SETTINGS = CoreSettings(
    workers=2,
    graceful_timeout=2.0,
    timeout=10.0,
    boot_timeout=15.0,
    kill_grace=1.0,
    quick_timeout=1.0,
    backoff_base=0.5,
    backoff_max=4.0,
    stable_after=8.0,
    max_boot_crashes=3,
)

MASTER_SIGNALS = [sig for sig in Sig if sig not in (Sig.ABRT, Sig.KILL)]
EXITS = st.one_of(
    st.sampled_from([0, 1, EXIT_BOOT_ERROR, EXIT_APP_LOAD_ERROR]).map(lambda c: (c, None)),
    st.sampled_from([6, 9, 15]).map(lambda s: (None, s)),
)


class ArbiterMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = 1000.0
        self.core = ArbiterCore(SETTINGS, self.now)
        self.alive: set[int] = set()
        self.exited = False
        self._record(self.core.start(self.now))

    def _record(self, commands: list[Command]) -> None:
        for command in commands:
            if isinstance(command, Spawn):
                assert command.wid not in self.alive
                self.alive.add(command.wid)
            elif isinstance(command, Exit):
                assert not self.exited, "Exit twice"
                assert not self.alive, "Exit with workers still alive"
                self.exited = True

    def _feed(self, observation: Observation) -> None:
        self._record(self.core.handle(observation, self.now))
        deadline = self.core.next_deadline()
        assert deadline is None or deadline > self.now, (
            f"deadline {deadline} is not after now ({self.now}) after {observation}"
        )

    # -- time and signals

    @rule(seconds=st.floats(min_value=0.0, max_value=40.0))
    def tick(self, seconds: float) -> None:
        self.now += seconds
        self._feed(Tick())

    @rule()
    def wake_at_deadline(self) -> None:
        deadline = self.core.next_deadline()
        if deadline is not None:
            self.now = max(self.now, deadline)
        self._feed(Tick())

    @rule(sig=st.sampled_from(MASTER_SIGNALS))
    def master_signal(self, sig: Sig) -> None:
        self._feed(SignalReceived(sig))

    # -- what workers do

    @precondition(lambda self: bool(self.alive))
    @rule(data=st.data(), how=EXITS)
    def child_exits(self, data: st.DataObject, how: tuple[int | None, int | None]) -> None:
        wid = data.draw(st.sampled_from(sorted(self.alive)))
        self.alive.discard(wid)
        code, sig = how
        self._feed(ChildExited(wid, code=code, signal=sig))

    @precondition(lambda self: bool(self.alive))
    @rule(
        data=st.data(),
        kind=st.sampled_from(["ready", "beat", "stopping", "retiring", "shutdown", "failed"]),
    )
    def worker_reports(self, data: st.DataObject, kind: str) -> None:
        wid = data.draw(st.sampled_from(sorted(self.alive)))
        observation: Observation
        if kind == "ready":
            observation = WorkerReady(wid)
        elif kind == "beat":
            observation = WorkerBeat(wid)
        elif kind == "stopping":
            observation = WorkerStopping(wid)
        elif kind == "retiring":
            observation = WorkerRetiring(wid)
        elif kind == "shutdown":
            observation = WorkerShuttingDown(wid)
        else:
            observation = WorkerFailed(wid, "db is down")
        self._feed(observation)

    @rule()
    def every_booting_worker_gets_ready(self) -> None:
        # (Most paths worth exploring start from workers that booted.)
        for wid, worker in sorted(self.core.workers.items()):
            if worker.state is WorkerState.BOOTING:
                self._feed(WorkerReady(wid))

    # -- the runner's answers

    @rule()
    def files_changed(self) -> None:
        self._feed(FilesChanged(("app.py",)))

    @rule(workers=st.one_of(st.none(), st.integers(min_value=1, max_value=4)))
    def config_reloaded(self, workers: int | None) -> None:
        if workers is None:
            self._feed(ConfigReloaded(None, "bad file"))
        else:
            self._feed(ConfigReloaded(CoreSettings(**{**SETTINGS.__dict__, "workers": workers})))

    @rule(ok=st.booleans())
    def upgrade_answers(self, ok: bool) -> None:
        self._feed(UpgradeReady() if ok else UpgradeFailed("new master died"))

    # -- invariants

    @invariant()
    def workers_known_to_the_core_are_alive(self) -> None:
        assert set(self.core.workers) <= self.alive

    @invariant()
    def slots_hold_live_workers(self) -> None:
        for slot in self.core.slots.values():
            for wid in (slot.current, slot.incoming):
                if wid is not None:
                    worker = self.core.workers[wid]
                    assert worker.slot == slot.index
                    assert worker.state is not WorkerState.DRAINING

    @invariant()
    def nothing_spawned_while_stopping(self) -> None:
        if self.core.phase in (Phase.STOPPING, Phase.STOPPED):
            assert all(s.current is None and s.incoming is None for s in self.core.slots.values())


ArbiterMachine.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestArbiterCoreInvariants = ArbiterMachine.TestCase
