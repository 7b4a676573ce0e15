"""A thread pool for blocking work (WSGI), with one cheap hand-off each way (written once).

``Backend.run_sync`` goes through asyncio's ``run_in_executor`` or trio's ``to_thread``:
per call a ``concurrent.futures.Future`` (a Python ``Condition``), a work item, a loop
future chained to it, a check that the callable is no coroutine function, and one loop
wake-up per result. A WSGI request is that hop and little else, so this pool does the least
that keeps the same guarantees:

* The loop hands a *job* (an object with ``run()`` and ``done()``, the WSGI exchange
  itself: nothing is allocated for the hand-off) to a ``queue.SimpleQueue`` (C) and starts
  a thread only when no idle one is left, up to ``max_threads``; beyond that, jobs wait in
  the queue (the back-pressure a bounded executor puts on WSGI applications).
* A pool thread runs ``job.run()`` (which must not raise), appends the job to a list of
  finished jobs and wakes the loop with ``call_soon_threadsafe`` only if no wake-up is
  pending already: under load one wake-up delivers many results. The loop calls each
  finished job's ``done()`` in order.
* Threads are daemon threads that leave after ``IDLE_TIMEOUT`` seconds without work (trio's
  thread cache does the same), so a pool needs no shutdown and never holds up the exit;
  the worker's graceful shutdown waits for the requests (the tasks awaiting their jobs).

Rules: ``_threads``, ``_spare``, ``_finished`` and ``_wake_pending`` are read and written under
``_lock``. A job's ``run`` is called in a pool thread, its ``done`` from the loop, each once.
"""

from __future__ import annotations

import os
import queue
import threading
import weakref
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Callable

    from hypercorn.workers.backend import Backend

__all__ = ["IDLE_TIMEOUT", "MAX_THREADS", "Job", "ThreadPool", "thread_pool"]

#: Threads per pool: as many as asyncio's default executor and the trio backend's
#: ``run_sync`` use, so that WSGI applications see the same concurrency on every backend.
MAX_THREADS = min(32, (os.cpu_count() or 1) + 4)
#: Seconds an idle thread waits for work before it leaves.
IDLE_TIMEOUT = 10.0


class Job(Protocol):
    """Work for the pool."""

    def run(self) -> None:
        """Called once in a pool thread. Must not raise (keep the error for ``done``)."""

    def done(self) -> None:
        """Called once from the loop after ``run`` returned."""


class ThreadPool:
    """Runs jobs in up to ``max_threads`` threads; see the module docstring."""

    __slots__ = (
        "__weakref__",
        "_call_soon_threadsafe",
        "_finished",
        "_jobs",
        "_lock",
        "_max_threads",
        "_spare",
        "_threads",
        "_wake_pending",
    )

    def __init__(self, backend: Backend, max_threads: int = MAX_THREADS) -> None:
        self._call_soon_threadsafe: Callable[[Callable[[], object]], None] = (
            backend.call_soon_threadsafe
        )
        self._max_threads = max_threads
        self._jobs: queue.SimpleQueue[Job] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        #: Threads waiting for a job (or about to) minus jobs queued and not yet taken: below
        #: zero, a job waits for a thread. (Taking a job changes neither count's difference,
        #: so a thread touches it only when it finishes a job and when it leaves.)
        self._spare = 0
        self._finished: list[Job] = []
        self._wake_pending = False

    @property
    def threads(self) -> int:
        """Threads alive now (idle or busy)."""
        return self._threads

    def submit(self, job: Job) -> None:
        """Queue ``job`` (from the loop); its ``done()`` is called from the loop later."""
        start = False
        with self._lock:
            spare = self._spare - 1
            if spare < 0 and self._threads < self._max_threads:
                self._threads += 1
                spare += 1
                start = True
            self._spare = spare
        if start:
            try:
                threading.Thread(target=self._work, name="hypercorn-wsgi", daemon=True).start()
            except BaseException:  # (no thread to be had: the job is not queued)
                with self._lock:
                    self._threads -= 1  # (``_spare``: the job's -1 and the thread's +1 cancel)
                raise
        self._jobs.put(job)

    def _work(self) -> None:
        get = self._jobs.get
        lock = self._lock
        finished = self._finished
        while True:
            try:
                job = get(timeout=IDLE_TIMEOUT)
            except queue.Empty:
                with lock:
                    if self._spare <= 0:
                        continue  # a job was queued counting on this thread: take it
                    self._spare -= 1
                    self._threads -= 1
                return
            job.run()
            with lock:
                finished.append(job)
                wake = not self._wake_pending
                self._wake_pending = True
                self._spare += 1
            if wake:
                try:
                    self._call_soon_threadsafe(self._deliver)
                except RuntimeError:  # the loop is closed: nobody is waiting any more
                    with lock:
                        finished.clear()
                        self._wake_pending = False
            del job  # (the next wait must not keep the finished job alive)

    def _deliver(self) -> None:
        with self._lock:
            jobs = self._finished[:]
            self._finished.clear()
            self._wake_pending = False
        for job in jobs:
            job.done()


_POOLS: weakref.WeakKeyDictionary[object, ThreadPool] = weakref.WeakKeyDictionary()


def thread_pool(backend: Backend) -> ThreadPool:
    """The pool of ``backend`` (one per running loop, made on first use)."""
    try:
        pool = _POOLS.get(backend)
    except TypeError:  # (a backend that takes no weak references: a pool of its own)
        return ThreadPool(backend)
    if pool is None:
        pool = _POOLS[backend] = ThreadPool(backend)
    return pool
