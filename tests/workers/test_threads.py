"""The WSGI thread pool on every backend: hand-off, results on the loop, bounds, idle exit."""

from __future__ import annotations

import threading
import time

import pytest

from hypercorn.workers import run_with_backend, threads
from hypercorn.workers.backend import AsyncEvent, Backend
from hypercorn.workers.threads import ThreadPool, thread_pool


@pytest.fixture(params=["asyncio", "uvloop", "trio"])
def worker_class(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class Recorder:
    """A job that records where it ran and where it was told it finished."""

    def __init__(self, backend: Backend, gate: threading.Event | None = None) -> None:
        self.ran_in: threading.Thread | None = None
        self.done_in: threading.Thread | None = None
        self.gate = gate
        self.finished: AsyncEvent = backend.event()

    def run(self) -> None:
        self.ran_in = threading.current_thread()
        if self.gate is not None:
            self.gate.wait(30)

    def done(self) -> None:
        self.done_in = threading.current_thread()
        self.finished.set()


def test_jobs_run_in_threads_and_finish_on_the_loop(worker_class: str) -> None:
    async def main(backend: Backend) -> None:
        pool = thread_pool(backend)
        assert thread_pool(backend) is pool  # one per backend
        jobs = [Recorder(backend) for _ in range(200)]
        for job in jobs:
            pool.submit(job)
        for job in jobs:
            await job.finished.wait()
        loop_thread = threading.current_thread()
        assert all(job.done_in is loop_thread for job in jobs)
        workers = {job.ran_in for job in jobs}
        assert loop_thread not in workers
        assert 1 <= len(workers) <= threads.MAX_THREADS
        assert pool.threads <= threads.MAX_THREADS

    run_with_backend(worker_class, main)


def test_jobs_beyond_the_threads_wait_for_one(worker_class: str) -> None:
    gate = threading.Event()

    async def main(backend: Backend) -> None:
        pool = ThreadPool(backend, max_threads=2)
        blocked = [Recorder(backend, gate), Recorder(backend, gate)]
        for job in blocked:
            pool.submit(job)
        queued = Recorder(backend)
        pool.submit(queued)
        deadline = time.monotonic() + 10
        while not all(job.ran_in for job in blocked) and time.monotonic() < deadline:
            await backend.sleep(0.005)
        assert all(job.ran_in for job in blocked)
        assert queued.ran_in is None  # both threads are busy: it waits in the queue
        assert pool.threads == 2
        gate.set()
        await queued.finished.wait()
        assert queued.ran_in in {job.ran_in for job in blocked}

    try:
        run_with_backend(worker_class, main)
    finally:
        gate.set()


def test_idle_threads_leave(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(threads, "IDLE_TIMEOUT", 0.02)

    async def main(backend: Backend) -> None:
        pool = ThreadPool(backend, max_threads=4)
        gate = threading.Event()
        jobs = [Recorder(backend, gate) for _ in range(4)]
        for job in jobs:
            pool.submit(job)
        gate.set()
        for job in jobs:
            await job.finished.wait()
        deadline = time.monotonic() + 10
        while pool.threads and time.monotonic() < deadline:
            await backend.sleep(0.01)
        assert pool.threads == 0
        # ...and the pool still works afterwards (a new thread is started).
        again = Recorder(backend)
        pool.submit(again)
        await again.finished.wait()
        assert again.ran_in is not None

    run_with_backend("asyncio", main)
