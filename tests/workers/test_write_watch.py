"""The write watch alone (``workers/write_watch.py``): progress, stalls, restarts."""

from __future__ import annotations

from hypercorn.workers.write_watch import SAMPLES, WriteWatch

TIMEOUT = 8.0
PERIOD = TIMEOUT / SAMPLES


class Progress:
    """The one Transport property the watch reads."""

    def __init__(self) -> None:
        self.write_progress = 0


def watch(now: float = 100.0) -> tuple[WriteWatch, Progress]:
    transport = Progress()
    return WriteWatch(transport, TIMEOUT, now), transport  # type: ignore[arg-type]


def test_samples_every_quarter_of_the_timeout() -> None:
    writes, _ = watch()
    assert writes.due == 100.0 + PERIOD
    writes.sample(writes.due)
    assert writes.due == 100.0 + 2 * PERIOD


def test_a_slow_but_steady_peer_never_stalls() -> None:
    writes, transport = watch()
    now = 100.0
    for _ in range(40):  # ten timeouts long, a little progress per sample
        now = writes.due
        transport.write_progress += 1
        assert writes.sample(now)
        assert not writes.stalled(now)


def test_a_stall_is_write_timeout_after_the_last_progress() -> None:
    writes, transport = watch()
    transport.write_progress += 1
    assert writes.sample(writes.due)  # progress seen at 102
    now = writes.due
    while not writes.stalled(now):
        assert not writes.sample(now)
        now = writes.due
    assert now == 102.0 + TIMEOUT


def test_restart_counts_from_now() -> None:
    writes, transport = watch()
    transport.write_progress = -500  # (a fallback count: minus the buffer, which grew)
    writes.restart(150.0)
    assert writes.due == 150.0 + PERIOD
    assert not writes.stalled(150.0 + TIMEOUT - 0.5)
    assert writes.stalled(150.0 + TIMEOUT)
    transport.write_progress = -400
    assert writes.sample(151.0)
