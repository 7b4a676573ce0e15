"""The pure arbiter core, driven with observations and a hand-advanced clock."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from hypercorn.arbiter.core import SIGNAL_TABLE, ArbiterCore, Phase, WorkerState
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
from hypercorn.errors import EXIT_APP_LOAD_ERROR, EXIT_BOOT_ERROR

SETTINGS = CoreSettings(
    workers=2,
    graceful_timeout=5.0,
    timeout=10.0,
    boot_timeout=20.0,
    kill_grace=1.0,
    quick_timeout=1.0,
    backoff_base=0.5,
    backoff_max=4.0,
    stable_after=30.0,
    max_boot_crashes=3,
)


class Harness:
    """An ArbiterCore plus a fake clock and the bookkeeping a runner would do."""

    def __init__(self, settings: CoreSettings = SETTINGS) -> None:
        self.now = 1000.0
        self.core = ArbiterCore(settings, self.now)
        self.log: list[Command] = []
        self.alive: set[int] = set()

    def _record(self, commands: list[Command]) -> list[Command]:
        self.log.extend(commands)
        for command in commands:
            if isinstance(command, Spawn):
                self.alive.add(command.wid)
        return commands

    def start(self) -> list[Command]:
        return self._record(self.core.start(self.now))

    def feed(self, observation: object, *, at: float | None = None) -> list[Command]:
        if at is not None:
            assert at >= self.now
            self.now = at
        return self._record(self.core.handle(observation, self.now))  # type: ignore[arg-type]

    def signal(self, sig: Sig) -> list[Command]:
        return self.feed(SignalReceived(sig))

    def advance(self, seconds: float) -> list[Command]:
        return self.feed(Tick(), at=self.now + seconds)

    def exit(self, wid: int, code: int | None = 0, signal: int | None = None) -> list[Command]:
        self.alive.discard(wid)
        if signal is not None:
            code = None
        return self.feed(ChildExited(wid, code=code, signal=signal))

    def booted(self) -> list[int]:
        """Start and bring every worker to READY; return the wids."""
        wids = [c.wid for c in self.start() if isinstance(c, Spawn)]
        for wid in wids:
            self.feed(WorkerReady(wid))
        assert self.core.phase is Phase.RUNNING
        return wids


def of(commands: Sequence[Command], kind: type) -> list:  # type: ignore[type-arg]
    return [c for c in commands if isinstance(c, kind)]


def kills(commands: Sequence[Command]) -> list[tuple[int, Sig]]:
    return [(c.wid, c.sig) for c in of(commands, Kill)]


def spawned(commands: Sequence[Command]) -> list[int]:
    return [c.wid for c in of(commands, Spawn)]


def notified(commands: Sequence[Command]) -> list[str]:
    return [c.message.split("\n")[0] for c in of(commands, Notify)]


# ---------------------------------------------------------------------------- booting


def test_start_spawns_every_slot_then_ready_notifies_once() -> None:
    h = Harness()
    cmds = h.start()
    assert of(cmds, Spawn) == [Spawn(1, 0, 0), Spawn(2, 1, 0)]
    assert h.core.phase is Phase.BOOTING
    assert of(h.feed(WorkerReady(1)), Booted) == []
    cmds = h.feed(WorkerReady(2))
    assert of(cmds, Booted) == [Booted()]
    assert notified(cmds) == ["READY=1"]
    assert h.core.phase is Phase.RUNNING
    assert h.core.next_deadline() == h.now + SETTINGS.timeout


def test_zero_workers_is_refused() -> None:
    with pytest.raises(ValueError):
        ArbiterCore(CoreSettings(workers=0), 0.0)


@pytest.mark.parametrize("code", [EXIT_APP_LOAD_ERROR, EXIT_BOOT_ERROR])
def test_boot_failure_halts_with_the_workers_reason_and_code(code: int) -> None:
    h = Harness()
    h.start()
    h.feed(WorkerFailed(1, "cannot import 'app:app': No module named 'app'"))
    cmds = h.exit(1, code)
    assert of(cmds, Halt) == [Halt(code, "cannot import 'app:app': No module named 'app'")]
    assert kills(cmds) == [(2, Sig.TERM)]
    assert spawned(cmds) == []  # no respawn loop
    assert notified(cmds) == ["STOPPING=1"]
    cmds = h.exit(2, 0)
    assert of(cmds, Exit) == [Exit(code)]
    assert h.core.finished


def test_workers_dying_before_ready_back_off_then_halt() -> None:
    h = Harness(CoreSettings(**{**SETTINGS.__dict__, "workers": 1}))
    h.start()
    cmds = h.exit(1, signal=9)
    assert spawned(cmds) == [2]  # first death: retry at once
    cmds = h.exit(2, code=1)
    assert spawned(cmds) == []  # second: back off
    assert h.core.next_deadline() == h.now + 0.5
    assert spawned(h.advance(0.5)) == [3]
    cmds = h.exit(3, code=1)
    assert of(cmds, Halt)[0].code == EXIT_BOOT_ERROR
    assert "keep dying before they are ready" in of(cmds, Halt)[0].reason
    assert of(cmds, Exit) == [Exit(EXIT_BOOT_ERROR)]


def test_slow_boot_is_dumped_then_killed() -> None:
    h = Harness()
    h.start()
    assert h.core.next_deadline() == h.now + SETTINGS.boot_timeout
    cmds = h.advance(SETTINGS.boot_timeout)
    assert kills(cmds) == [(1, Sig.ABRT), (2, Sig.ABRT)]
    cmds = h.advance(SETTINGS.kill_grace)
    assert kills(cmds) == [(1, Sig.KILL), (2, Sig.KILL)]


# ---------------------------------------------------------------------------- stopping


def test_graceful_stop_terms_all_then_kills_leftovers_at_deadline() -> None:
    h = Harness()
    h.booted()
    cmds = h.signal(Sig.TERM)
    assert kills(cmds) == [(1, Sig.TERM), (2, Sig.TERM)]
    assert notified(cmds) == ["STOPPING=1"]
    assert h.core.phase is Phase.STOPPING
    h.exit(1, 0)
    deadline = SETTINGS.graceful_timeout + SETTINGS.abort_grace + SETTINGS.kill_grace
    assert kills(h.advance(deadline - 0.1)) == []
    assert kills(h.advance(0.1)) == [(2, Sig.KILL)]
    cmds = h.exit(2, signal=9)
    assert of(cmds, Exit) == [Exit(0)]
    assert spawned(cmds) == []


@pytest.mark.parametrize("stop", ["TERM", "USR1"])
def test_lifespan_shutdown_gets_shutdown_timeout_after_the_drain(stop: str) -> None:
    h = Harness()
    h.booted()
    if stop == "TERM":
        h.signal(Sig.TERM)
    else:
        h.signal(Sig.USR1)
        h.feed(WorkerReady(3))  # 1 drains
    h.advance(SETTINGS.graceful_timeout)
    h.feed(WorkerShuttingDown(1))  # drained; the app's shutdown hook runs
    cmds = h.advance(SETTINGS.shutdown_timeout + SETTINGS.kill_grace - 0.1)
    assert (1, Sig.KILL) not in kills(cmds)
    if stop == "TERM":
        assert (2, Sig.KILL) in kills(cmds)  # 2 never said it got that far
    assert (1, Sig.KILL) in kills(h.advance(0.1))


def test_quick_stop_keeps_its_short_deadline_through_lifespan_shutdown() -> None:
    h = Harness()
    h.booted()
    h.signal(Sig.QUIT)
    h.feed(WorkerShuttingDown(1))
    assert kills(h.advance(SETTINGS.quick_timeout)) == [(1, Sig.KILL), (2, Sig.KILL)]


def test_every_stop_closes_the_masters_listeners_first() -> None:
    for sig in (Sig.TERM, Sig.INT, Sig.QUIT):
        h = Harness()
        h.booted()
        cmds = h.signal(sig)
        assert of(cmds, CloseListeners) == [CloseListeners()]
        assert cmds.index(CloseListeners()) < min(cmds.index(k) for k in of(cmds, Kill))


def test_second_interrupt_kills_at_once() -> None:
    h = Harness()
    h.booted()
    h.signal(Sig.INT)
    cmds = h.signal(Sig.INT)
    assert kills(cmds) == [(1, Sig.KILL), (2, Sig.KILL)]
    h.exit(1, signal=9)
    assert of(h.exit(2, signal=9), Exit) == [Exit(0)]


def test_quick_stop_sends_quit_with_short_deadline() -> None:
    h = Harness()
    h.booted()
    cmds = h.signal(Sig.QUIT)
    assert kills(cmds) == [(1, Sig.QUIT), (2, Sig.QUIT)]
    assert kills(h.advance(SETTINGS.quick_timeout)) == [(1, Sig.KILL), (2, Sig.KILL)]


def test_quit_during_graceful_stop_shortens_the_deadline() -> None:
    h = Harness()
    h.booted()
    h.signal(Sig.TERM)
    cmds = h.signal(Sig.QUIT)
    assert kills(cmds) == [(1, Sig.QUIT), (2, Sig.QUIT)]
    assert h.core.next_deadline() == h.now + SETTINGS.quick_timeout


def test_stop_while_booting_exits_zero_when_workers_go() -> None:
    h = Harness()
    h.start()
    h.signal(Sig.TERM)
    h.exit(1, signal=15)
    assert of(h.exit(2, signal=15), Exit) == [Exit(0)]


# ---------------------------------------------------------------------------- rolling restart


def test_rolling_restart_replaces_one_slot_at_a_time_after_ready() -> None:
    h = Harness()
    h.booted()
    cmds = h.signal(Sig.USR1)
    assert notified(cmds) == ["RELOADING=1"]
    assert of(cmds, Spawn) == [Spawn(3, 0, 1)]  # only one new worker at a time
    # The old one keeps serving until the new one is READY (USR1: reopen your log files).
    assert kills(cmds) == [(1, Sig.USR1), (2, Sig.USR1)]
    assert h.core.phase is Phase.ROLLING
    cmds = h.feed(WorkerReady(3))
    assert kills(cmds) == [(1, Sig.TERM)]
    # Slot 1 waits until 1 has drained: never more than workers + 1 alive.
    assert spawned(cmds) == []
    assert spawned(h.advance(SETTINGS.graceful_timeout / 2)) == []
    assert of(h.exit(1, 0), Spawn) == [Spawn(4, 1, 1)]
    cmds = h.feed(WorkerReady(4))
    assert kills(cmds) == [(2, Sig.TERM)]
    assert notified(cmds) == []  # 2 may still accept a connection
    cmds = h.feed(WorkerStopping(2))  # its accept loop ended
    assert notified(cmds) == ["READY=1"]
    assert h.core.phase is Phase.RUNNING
    # The old worker exits in its own time; nothing is respawned for it.
    assert spawned(h.exit(2, 0)) == []
    assert {s.current for s in h.core.slots.values()} == {3, 4}


def test_roll_waits_for_a_slow_drain_until_its_kill_deadline() -> None:
    h = Harness()
    h.booted()
    h.signal(Sig.USR1)
    h.feed(WorkerReady(3))  # 1 drains
    deadline = h.core.next_deadline()
    assert deadline is not None
    cmds = h.advance(deadline - h.now)
    assert kills(cmds) == [(1, Sig.KILL)]
    assert spawned(cmds) == []  # still alive until reaped
    assert of(h.exit(1, signal=9), Spawn) == [Spawn(4, 1, 1)]


def test_max_requests_worker_serves_until_its_replacement_is_ready() -> None:
    h = Harness()
    h.booted()
    cmds = h.feed(WorkerRetiring(1))
    assert of(cmds, Spawn) == [Spawn(3, 0, 0)]
    assert kills(cmds) == []  # 1 keeps serving while 3 boots
    cmds = h.feed(WorkerRetiring(2))  # waits its turn
    assert spawned(cmds) == []
    cmds = h.feed(WorkerReady(3))
    assert kills(cmds) == [(1, Sig.TERM)]
    assert spawned(cmds) == []
    assert of(h.exit(1, 0), Spawn) == [Spawn(4, 1, 0)]
    assert kills(h.feed(WorkerReady(4))) == [(2, Sig.TERM)]
    assert h.core.phase is Phase.RUNNING
    assert {s.current for s in h.core.slots.values()} == {3, 4}


def test_retiring_worker_keeps_serving_when_its_replacement_cannot_boot() -> None:
    h = Harness()
    h.booted()
    h.feed(WorkerRetiring(1))  # 3 boots for slot 0
    cmds = h.exit(3, EXIT_BOOT_ERROR)
    assert of(cmds, Halt) == []
    assert kills(cmds) == []
    assert h.core.slots[0].current == 1
    deadline = h.core.next_deadline()
    assert deadline is not None
    assert deadline > h.now
    # Tried again after a back-off.
    cmds = h.advance(deadline - h.now)
    assert spawned(cmds) == [4]


def test_a_replacement_that_asks_to_retire_before_it_is_ready_is_replaced_once_serving() -> None:
    h = Harness()
    h.booted()
    h.feed(WorkerRetiring(1))  # 3 boots for slot 0
    # 3 reached max_requests before the master read its READY (a beat can overtake it):
    # the ask is kept, not dropped, since 3 would never ask again.
    assert spawned(h.feed(WorkerRetiring(3))) == []
    assert kills(h.feed(WorkerReady(3))) == [(1, Sig.TERM)]
    assert of(h.exit(1, 0), Spawn) == [Spawn(4, 0, 0)]
    assert kills(h.feed(WorkerReady(4))) == [(3, Sig.TERM)]
    assert h.core.slots[0].current == 4


def test_usr1_reopens_every_log_file_before_the_roll() -> None:
    h = Harness()
    h.booted()
    cmds = h.signal(Sig.USR1)
    reopen = cmds.index(ReopenLogs())
    assert [(k.wid, k.sig) for k in cmds[reopen + 1 : reopen + 3]] == [
        (1, Sig.USR1),
        (2, Sig.USR1),
    ]
    assert reopen < cmds.index(Spawn(3, 0, 1))


def test_usr1_during_roll_restarts_it_with_a_newer_generation() -> None:
    h = Harness()
    h.booted()
    h.signal(Sig.USR1)  # spawns 3 (gen 1) for slot 0
    h.signal(Sig.USR1)  # target is now gen 2: 3 is already stale
    cmds = h.feed(WorkerReady(3))
    assert kills(cmds) == [(1, Sig.TERM)]
    assert of(h.exit(1, 0), Spawn) == [Spawn(4, 0, 2)]  # slot 0 again: 3 is gen 1 < 2
    cmds = h.feed(WorkerReady(4))
    assert kills(cmds) == [(3, Sig.TERM)]
    assert of(h.exit(3, 0), Spawn) == [Spawn(5, 1, 2)]
    h.feed(WorkerReady(5))
    assert notified(h.exit(2, 0)) == ["READY=1"]  # an exit counts as having stopped too


def test_replacement_that_fails_to_boot_aborts_the_roll_keeping_old_workers() -> None:
    h = Harness()
    h.booted()
    h.signal(Sig.USR1)
    h.feed(WorkerFailed(3, "cannot import 'app:app': SyntaxError: invalid syntax (app.py, line 3)"))
    cmds = h.exit(3, EXIT_APP_LOAD_ERROR)
    assert of(cmds, Halt) == []
    assert kills(cmds) == []
    assert spawned(cmds) == []
    assert h.core.phase is Phase.RUNNING
    assert notified(cmds) == ["READY=1"]
    assert any("rolling restart aborted" in c.message for c in of(cmds, Log))
    assert {s.current for s in h.core.slots.values()} == {1, 2}


def test_files_changed_rolls_only_when_running() -> None:
    h = Harness()
    h.start()
    assert spawned(h.feed(FilesChanged(("app.py",)))) == []
    for wid in (1, 2):
        h.feed(WorkerReady(wid))
    cmds = h.feed(FilesChanged(("app.py",)))
    assert spawned(cmds) == [3]
    assert h.core.phase is Phase.ROLLING


def test_crash_of_old_worker_during_roll_is_respawned_in_the_new_generation() -> None:
    h = Harness()
    h.booted()
    h.signal(Sig.USR1)  # 3 replaces slot 0
    cmds = h.exit(2, signal=9)  # slot 1's old worker crashes
    assert of(cmds, Spawn) == [Spawn(4, 1, 1)]
    h.feed(WorkerReady(4))
    cmds = h.feed(WorkerReady(3))
    assert kills(cmds) == [(1, Sig.TERM)]
    # Slot 1 is already new: the roll is done once 1 stops accepting.
    assert notified(h.feed(WorkerStopping(1))) == ["READY=1"]


def test_old_worker_dying_while_its_replacement_boots_leaves_no_past_deadline() -> None:
    h = Harness()
    h.booted()
    h.signal(Sig.USR1)  # 3 boots for slot 0
    cmds = h.exit(1, signal=9)  # slot 0's old worker is OOM-killed
    assert spawned(cmds) == []  # 3 takes the slot
    deadline = h.core.next_deadline()
    assert deadline is not None
    assert deadline > h.now
    cmds = h.feed(WorkerReady(3))
    assert h.core.slots[0].current == 3
    assert h.core.slots[0].respawn_at is None
    deadline = h.core.next_deadline()
    assert deadline is not None
    assert deadline > h.now


# ---------------------------------------------------------------------------- HUP


def test_hup_reloads_then_rolls_and_resizes() -> None:
    h = Harness()
    h.booted()
    cmds = h.signal(Sig.HUP)
    assert of(cmds, ReloadConfig) == [ReloadConfig()]
    assert notified(cmds) == ["RELOADING=1"]
    assert spawned(cmds) == []
    new = CoreSettings(**{**SETTINGS.__dict__, "workers": 3, "timeout": 7.0})
    cmds = h.feed(ConfigReloaded(new))
    assert h.core.settings.timeout == 7.0
    # The new slot 2 boots in the new generation; the roll starts with slot 0.
    assert sorted(of(cmds, Spawn), key=lambda s: s.slot) == [Spawn(4, 0, 1), Spawn(3, 2, 1)]
    assert h.core.phase is Phase.ROLLING


def test_hup_resize_says_so_without_naming_signals_nobody_sent() -> None:
    h = Harness()
    h.booted()
    h.signal(Sig.HUP)
    new = CoreSettings(**{**SETTINGS.__dict__, "workers": 3})
    messages = [c.message for c in of(h.feed(ConfigReloaded(new)), Log)]
    assert "configuration: workers: 3 (was 2)" in messages
    assert not any("SIGTT" in m for m in messages)


@pytest.mark.parametrize(
    ("sig", "expected"), [(Sig.USR1, Spawn), (Sig.HUP, ReloadConfig), (Sig.USR2, Reexec)]
)
def test_restart_signals_while_booting_run_once_ready(sig: Sig, expected: type) -> None:
    h = Harness()
    h.start()
    cmds = h.signal(sig) + h.signal(sig)  # twice: still once
    assert of(cmds, expected) == []
    assert any("will run once ready" in c.message for c in of(cmds, Log))
    h.feed(WorkerReady(1))
    cmds = h.feed(WorkerReady(2))
    assert notified(cmds)[0] == "READY=1"
    assert len(of(cmds, expected)) == 1
    assert cmds.index(of(cmds, Booted)[0]) < cmds.index(of(cmds, expected)[0])


def test_hup_with_a_bad_file_keeps_the_config_and_still_rolls() -> None:
    h = Harness()
    h.booted()
    h.signal(Sig.HUP)
    cmds = h.feed(ConfigReloaded(None, "config.toml: workers: expected an integer"))
    assert h.core.settings == SETTINGS
    assert any("keeping the old one" in c.message for c in of(cmds, Log))
    assert spawned(cmds) == [3]


def test_config_reloaded_without_a_pending_hup_is_ignored() -> None:
    h = Harness()
    h.booted()
    assert h.feed(ConfigReloaded(SETTINGS)) == []


# ---------------------------------------------------------------------------- crashes


def test_crash_after_ready_respawns_at_once_then_backs_off() -> None:
    h = Harness()
    h.booted()
    assert spawned(h.exit(1, signal=9)) == [3]
    h.feed(WorkerReady(3))
    assert spawned(h.exit(3, code=1)) == []
    assert spawned(h.advance(0.5)) == [4]
    h.feed(WorkerReady(4))
    assert spawned(h.exit(4, code=1)) == []
    assert spawned(h.advance(0.9)) == []
    assert spawned(h.advance(0.1)) == [5]
    h.feed(WorkerReady(5))
    # A worker that served for stable_after resets the count: replaced at once again.
    h.advance(SETTINGS.stable_after / 2)
    h.feed(WorkerBeat(5), at=h.now + SETTINGS.stable_after / 2)
    assert spawned(h.exit(5, code=1)) == [6]


def test_backoff_is_capped_and_resets_after_a_stable_run() -> None:
    h = Harness(CoreSettings(**{**SETTINGS.__dict__, "workers": 1}))
    wid = h.booted()[0]
    delays = []
    for _ in range(6):
        died_at = h.now
        cmds = h.exit(wid, code=1)
        if not spawned(cmds):
            deadline = h.core.next_deadline()
            assert deadline is not None
            cmds = h.advance(deadline - h.now)
        delays.append(round(h.now - died_at, 3))
        (wid,) = spawned(cmds)
        h.feed(WorkerReady(wid))
    assert delays == [0.0, 0.5, 1.0, 2.0, 4.0, 4.0]
    h.advance(SETTINGS.stable_after)
    h.feed(WorkerBeat(wid))
    assert spawned(h.exit(wid, code=1)) != []  # immediate again


def test_clean_exit_after_ready_is_replaced_without_backoff() -> None:
    h = Harness()
    h.booted()
    for wid in (1, 3, 4):
        cmds = h.exit(wid, 0)
        (new,) = spawned(cmds)
        h.feed(WorkerReady(new))
    assert h.core.slots[0].crashes == 0


def test_worker_stopped_by_someone_else_is_replaced_after_a_grace() -> None:
    h = Harness()
    h.booted()
    cmds = h.feed(WorkerStopping(1))  # e.g. `kill -TERM <worker>`
    assert spawned(cmds) == []
    assert kills(cmds) == []
    assert h.core.next_deadline() == h.now + SETTINGS.stray_stop_grace
    assert spawned(h.exit(1, 0)) == []  # still waiting
    assert spawned(h.advance(SETTINGS.stray_stop_grace)) == [3]
    h.feed(WorkerReady(3))
    assert h.core.slots[0].current == 3


@pytest.mark.parametrize("sig", [Sig.INT, Sig.TERM])
def test_group_signal_reaching_workers_first_is_one_stop(sig: Sig) -> None:
    """Ctrl-C: both workers report STOPPING before the master sees its own SIGINT."""
    h = Harness()
    h.booted()
    cmds = h.feed(WorkerStopping(1)) + h.feed(WorkerStopping(2))
    cmds += h.exit(2, 0)
    cmds += h.signal(sig)
    cmds += h.exit(1, 0) + h.advance(SETTINGS.stray_stop_grace)
    assert spawned(cmds) == []
    assert [c for c in of(cmds, Log) if c.level in ("warning", "error", "critical")] == []
    assert of(cmds, Exit) == [Exit(0)]


def test_booting_worker_ended_by_a_group_sigint_is_no_warning() -> None:
    h = Harness()
    h.start()
    cmds = h.signal(Sig.INT) + h.exit(1, signal=2) + h.exit(2, signal=15)
    assert [c for c in of(cmds, Log) if c.level == "warning"] == []
    assert of(cmds, Exit) == [Exit(0)]


def test_boot_failure_after_readiness_backs_off_and_is_reported_never_halts() -> None:
    """The database went down: replacements fail lifespan startup (exit 3). Halting would
    be a permanent outage under systemd's RestartPreventExitStatus=3."""
    h = Harness()
    h.booted()
    h.exit(1, signal=9)  # respawn 3
    h.feed(WorkerFailed(3, "lifespan startup failed: db is down"))
    cmds = h.exit(3, EXIT_BOOT_ERROR)
    assert of(cmds, Halt) == []
    assert any("db is down" in c.message and "retrying" in c.message for c in of(cmds, Log))
    assert any(m.startswith("STATUS=") and "db is down" in m for m in notified_all(cmds))
    h.exit(2, signal=9)  # nobody serves now: still no halt
    for _ in range(6):
        deadline = h.core.next_deadline()
        assert deadline is not None
        cmds = h.advance(deadline - h.now)
        for wid in spawned(cmds):
            cmds = h.exit(wid, EXIT_BOOT_ERROR)
            assert of(cmds, Halt) == []
    assert h.core.phase is Phase.RUNNING
    # The database is back: the next attempt starts and the status says so.
    deadline = h.core.next_deadline()
    assert deadline is not None
    new = spawned(h.advance(deadline - h.now))
    cmds = []
    for wid in new:
        cmds += h.feed(WorkerReady(wid))
    if len(new) < 2:
        deadline = h.core.next_deadline()
        assert deadline is not None
        for wid in spawned(h.advance(deadline - h.now)):
            cmds += h.feed(WorkerReady(wid))
    assert "STATUS=serving with 2 workers" in notified_all(cmds)


def notified_all(commands: Sequence[Command]) -> list[str]:
    return [line for c in of(commands, Notify) for line in c.message.split("\n")]


def test_a_slot_without_a_live_worker_retires_its_listeners_before_its_respawn() -> None:
    h = Harness()
    h.booted()
    cmds = h.exit(1, signal=9)
    assert of(cmds, RetireListeners) == [RetireListeners(0)]
    assert cmds.index(RetireListeners(0)) < cmds.index(Spawn(3, 0, 0))
    assert of(h.feed(WorkerReady(3)), RetireListeners) == []  # it listens again itself
    assert h.core.slots[0].quiet is False
    # Dying again: retired again.
    assert of(h.exit(3, code=1), RetireListeners) == [RetireListeners(0)]


def test_the_last_listening_slot_keeps_its_listeners() -> None:
    h = Harness(CoreSettings(**{**SETTINGS.__dict__, "workers": 1}))
    h.booted()
    assert of(h.exit(1, signal=9), RetireListeners) == []  # connections queue for -w 1
    h = Harness()
    h.booted()
    h.exit(1, signal=9)
    assert of(h.exit(2, signal=9), RetireListeners) == []  # slot 1 was the last one serving


def test_a_hung_worker_stops_getting_connections_when_it_times_out() -> None:
    h = Harness()
    h.booted()
    h.advance(SETTINGS.timeout - 1)
    h.feed(WorkerBeat(2))
    cmds = h.advance(1)
    assert kills(cmds) == [(1, Sig.ABRT)]
    assert of(cmds, RetireListeners) == [RetireListeners(0)]


# ---------------------------------------------------------------------------- heartbeats


def test_beats_read_after_a_stall_of_the_master_all_count_before_the_timeout() -> None:
    """The master was stopped (SIGSTOP, a paused VM) for longer than the timeout: when it
    wakes, both workers' beats are waiting in their pipes. Reading the first must not time
    out the second, whose beat is read a moment later in the same wake-up."""
    h = Harness()
    h.booted()
    stalled = h.now + SETTINGS.timeout * 3
    assert kills(h.feed(WorkerBeat(1), at=stalled)) == []
    assert kills(h.feed(WorkerBeat(2))) == []
    assert kills(h.advance(0)) == []
    # And a worker that really is silent is still caught on the wake-up's Tick.
    h.feed(WorkerBeat(2), at=h.now + SETTINGS.timeout - 1)
    assert kills(h.advance(1)) == [(1, Sig.ABRT)]


def test_heartbeat_timeout_dumps_stacks_then_kills_then_replaces() -> None:
    h = Harness()
    h.booted()
    h.advance(SETTINGS.timeout - 1)
    h.feed(WorkerBeat(2))
    cmds = h.advance(1)
    assert kills(cmds) == [(1, Sig.ABRT)]  # SIGABRT: faulthandler dumps every thread
    assert any(c.level == "critical" and "timed out" in c.message for c in of(cmds, Log))
    assert h.core.next_deadline() == h.now + SETTINGS.kill_grace
    cmds = h.advance(SETTINGS.kill_grace)
    assert kills(cmds) == [(1, Sig.KILL)]
    cmds = h.exit(1, signal=9)
    assert spawned(cmds) == [3]


def test_a_core_dump_is_named_in_the_exit_line() -> None:
    h = Harness()
    h.booted()
    cmds = h.feed(ChildExited(1, signal=11, core_dumped=True))
    assert any("killed by signal 11 (core dumped)" in c.message for c in of(cmds, Log))


def test_beats_keep_a_worker_alive() -> None:
    h = Harness()
    h.booted()
    for _ in range(5):
        h.advance(SETTINGS.timeout / 2)
        assert kills(h.feed(WorkerBeat(1)) + h.feed(WorkerBeat(2))) == []


def test_disabled_timeout_has_no_deadline() -> None:
    h = Harness(CoreSettings(**{**SETTINGS.__dict__, "timeout": 0}))
    h.booted()
    assert h.core.next_deadline() is None


# ---------------------------------------------------------------------------- TTIN / TTOU


def test_ttin_adds_a_slot_and_ttou_removes_the_oldest_worker() -> None:
    h = Harness()
    h.booted()
    cmds = h.signal(Sig.TTIN)
    assert of(cmds, Spawn) == [Spawn(3, 2, 0)]
    h.feed(WorkerReady(3))
    h.exit(1, signal=9)  # slot 0 now runs worker 4, younger than 2 and 3
    h.feed(WorkerReady(4))
    cmds = h.signal(Sig.TTOU)
    assert kills(cmds) == [(2, Sig.TERM)]  # the oldest
    assert of(cmds, CloseSlot) == [CloseSlot(1)]
    assert spawned(h.exit(2, 0)) == []
    cmds = h.signal(Sig.TTIN)
    assert of(cmds, Spawn) == [Spawn(5, 1, 0)]  # the lowest free slot index comes back


def test_ttou_keeps_one_worker() -> None:
    h = Harness(CoreSettings(**{**SETTINGS.__dict__, "workers": 1}))
    h.booted()
    cmds = h.signal(Sig.TTOU)
    assert kills(cmds) == []
    assert len(h.core.slots) == 1


def test_ttou_prefers_an_empty_slot() -> None:
    h = Harness()
    h.booted()
    h.exit(1, signal=9)
    h.feed(WorkerReady(3))
    h.exit(3, code=1)  # slot 0 is backing off, empty
    cmds = h.signal(Sig.TTOU)
    assert kills(cmds) == []
    assert of(cmds, CloseSlot) == [CloseSlot(0)]
    assert h.core.next_deadline() == h.now + SETTINGS.timeout


# ---------------------------------------------------------------------------- USR2


def test_upgrade_retires_this_master_once_the_new_one_is_ready() -> None:
    h = Harness()
    h.booted()
    cmds = h.signal(Sig.USR2)
    assert of(cmds, Reexec) == [Reexec()]
    assert of(h.signal(Sig.USR2), Reexec) == []  # one at a time
    cmds = h.feed(UpgradeReady())
    assert of(cmds, HandOver) == [HandOver()]
    assert kills(cmds) == [(1, Sig.TERM), (2, Sig.TERM)]
    assert notified(cmds) == []  # the new master owns systemd's attention now
    h.exit(1, 0)
    assert of(h.exit(2, 0), Exit) == [Exit(0)]


def test_failed_upgrade_keeps_serving_and_restores_the_pidfile() -> None:
    h = Harness()
    h.booted()
    h.signal(Sig.USR2)
    cmds = h.feed(UpgradeFailed("new master exited with code 3"))
    assert of(cmds, WritePidfile) == [WritePidfile()]
    assert h.core.phase is Phase.RUNNING
    assert of(h.signal(Sig.USR2), Reexec) == [Reexec()]


# ---------------------------------------------------------------------------- the table

PHASE_SIGNAL_EXPECTATIONS = {
    # phase: {signal: expected phase afterwards}
    Phase.BOOTING: {
        Sig.TERM: Phase.STOPPING,
        Sig.INT: Phase.STOPPING,
        Sig.QUIT: Phase.STOPPING,
        Sig.HUP: Phase.BOOTING,
        Sig.USR1: Phase.BOOTING,
        Sig.USR2: Phase.BOOTING,
        Sig.TTIN: Phase.BOOTING,
        Sig.TTOU: Phase.BOOTING,
    },
    Phase.RUNNING: {
        Sig.TERM: Phase.STOPPING,
        Sig.INT: Phase.STOPPING,
        Sig.QUIT: Phase.STOPPING,
        Sig.HUP: Phase.RUNNING,  # rolls once the config is re-read
        Sig.USR1: Phase.ROLLING,
        Sig.USR2: Phase.RUNNING,
        Sig.TTIN: Phase.RUNNING,
        Sig.TTOU: Phase.RUNNING,
    },
    Phase.ROLLING: {
        Sig.TERM: Phase.STOPPING,
        Sig.INT: Phase.STOPPING,
        Sig.QUIT: Phase.STOPPING,
        Sig.HUP: Phase.ROLLING,
        Sig.USR1: Phase.ROLLING,
        Sig.USR2: Phase.ROLLING,
        Sig.TTIN: Phase.ROLLING,
        Sig.TTOU: Phase.ROLLING,
    },
    Phase.STOPPING: {sig: Phase.STOPPING for sig in Sig if sig not in (Sig.ABRT, Sig.KILL)},
}


def harness_in(phase: Phase) -> Harness:
    h = Harness()
    if phase is Phase.BOOTING:
        h.start()
    else:
        h.booted()
    if phase is Phase.ROLLING:
        h.signal(Sig.USR1)
    elif phase is Phase.STOPPING:
        h.signal(Sig.TERM)
    assert h.core.phase is phase
    return h


@pytest.mark.parametrize(
    ("phase", "sig"),
    [(phase, sig) for phase, row in PHASE_SIGNAL_EXPECTATIONS.items() for sig in row],
)
def test_every_phase_signal_row(phase: Phase, sig: Sig) -> None:
    h = harness_in(phase)
    before = {wid: w.state for wid, w in h.core.workers.items()}
    cmds = h.signal(sig)
    assert h.core.phase is PHASE_SIGNAL_EXPECTATIONS[phase][sig]
    has_row = (phase, sig) in SIGNAL_TABLE
    if not has_row:
        # Ignored: nothing happens to any worker.
        assert kills(cmds) == []
        assert spawned(cmds) == []
        assert {wid: w.state for wid, w in h.core.workers.items()} == before
    if sig in (Sig.TERM, Sig.INT) and phase is not Phase.STOPPING:
        assert {s for _, s in kills(cmds)} == {Sig.TERM}
        assert all(w.state is WorkerState.DRAINING for w in h.core.workers.values())
    if phase is Phase.STOPPING:
        assert spawned(cmds) == []


def test_stopped_core_ignores_everything() -> None:
    h = Harness()
    h.booted()
    h.signal(Sig.TERM)
    h.exit(1, 0)
    h.exit(2, 0)
    assert h.core.finished
    for sig in Sig:
        assert of(h.signal(sig), Kill) == []
    assert h.core.next_deadline() is None
