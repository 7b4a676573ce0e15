"""A worker's request metrics: counted in plain Python, sent in batches (written once).

The driver calls ``WorkerContext.on_done(stream, now)`` as each request's app finishes, on
every protocol (HTTP/1.1, HTTP/2, HTTP/3, and WebSockets when the session ends) and every
backend. With metrics on, that is ``RequestMetrics.observer``, which calls the access log too
(when it is enabled); without metrics it is the access log's adapter (``access_observer``) or
nothing: no metric costs anything then.

Per request the observer does three things and nothing more (``bench/hotpath.py --metrics
...`` counts the instructions): one counter up in a list of counters per method, indexed by
status; the duration appended to a list; that list's length compared with ``_BATCH``.
Everything else happens per batch, in ``flush()``: at each heartbeat (every second at most),
at the end of the loop pass in which ``_BATCH`` durations accumulated, and when the worker
stops. There the durations are sorted once, which makes the latency histogram (for
``metrics_bind``) a ``bisect`` per bucket bound and the statsd timers (at most
``TIMER_SAMPLES``, evenly spaced over the sorted durations, with the sample rate ``|@0.25``
that tells statsd how many each one stands for) a slice; and the counters' increments since
the last send become statsd lines, packed into datagrams. (Formatting a float costs about what
counting a request does: formatting all of them would cost more than metrics may.)

The durations come from the event loop's clock: uvloop's counts whole milliseconds, so on
uvloop a request under a millisecond shows as 0 ms (asyncio's and trio's clocks are finer).

For the master (``metrics_bind``, and statsd's gauges) ``snapshot()`` encodes the cumulative
counters with each heartbeat; the master sums the workers' and keeps those of the workers
that exited (``hypercorn.arbiter.metrics``). The gauges (open connections, open WebSockets)
are read then, not counted per event: the connection set's size, and a walk over the
running apps' streams.
"""

from __future__ import annotations

import json
from bisect import bisect_right
from collections.abc import Callable
from itertools import compress
from operator import sub
from typing import TYPE_CHECKING, Any

from hypercorn.protocols.asgi_ws import AsgiWsState, AsgiWsStream
from hypercorn.statsd import StatsdClient, count_log_records

if TYPE_CHECKING:
    from hypercorn.config import Config
    from hypercorn.workers.backend import Backend
    from hypercorn.workers.driver import WorkerContext

__all__ = [
    "BOUNDS",
    "TIMER_SAMPLES",
    "RequestMetrics",
    "access_observer",
    "status_class",
    "worker_metrics",
]

#: The latency histogram's upper bounds in seconds (Prometheus ``le``); one more bucket above.
BOUNDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: Methods counted under their own name; any other (clients choose them) is "OTHER".
METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE")
#: Statuses are counted in lists this long; 0 stands for "no response".
_STATUSES = 1000
#: Durations held before a flush at the end of the loop pass (a busy worker; a quiet one
#: flushes with its heartbeat).
_BATCH = 2048
#: Durations sent as statsd timers per send, at most.
TIMER_SAMPLES = 50
_CONNECTED = AsgiWsState.CONNECTED


def status_class(status: int) -> str:
    """``"2xx"`` for 200..299 and so on; ``"none"`` for a request that got no response."""
    return f"{status // 100}xx" if 100 <= status < 600 else "none"


def access_observer(log: Any) -> Callable[[Any, float], None]:
    """``WorkerContext.on_done`` for the access log alone."""
    log_access = log.log_access

    def observe(stream: Any, now: float) -> None:
        log_access(
            stream.scope,
            stream.status or 0,
            stream.response_length,
            now - stream.start_time,
            stream.response_headers,
        )

    return observe


def websockets_open(ctx: WorkerContext) -> int:
    """Accepted WebSockets whose app still runs (over HTTP/1.1 or HTTP/2)."""
    return sum(
        1
        for driver in ctx.connections
        for stream in driver._streams
        if isinstance(stream, AsgiWsStream) and stream.state is _CONNECTED
    )


class RequestMetrics:
    """The worker's request counters; see the module docstring."""

    def __init__(
        self,
        backend: Backend,
        *,
        histogram: bool,
        statsd: StatsdClient | None = None,
        access_log: Any = None,
    ) -> None:
        self.backend = backend
        self.statsd = statsd
        self.histogram = histogram
        #: Requests by method, then status (cumulative).
        self.table: dict[str, list[int]] = {method: [0] * _STATUSES for method in METHODS}
        self.table["OTHER"] = [0] * _STATUSES
        #: Latency histogram (not cumulative): ``buckets[i]`` counts durations in
        #: (BOUNDS[i-1], BOUNDS[i]], the last one those above every bound; and their sum.
        self.buckets = [0] * (len(BOUNDS) + 1)
        self.seconds = 0.0
        #: Durations (seconds) since the last flush.
        self.durations: list[float] = []
        #: Set by ``serve()`` once the context exists (the gauges read it).
        self.context: WorkerContext | None = None
        #: statsd gauges come from here only when no master sums the workers' (-w 0).
        self.send_gauges = False
        # statsd: the counts already sent, log records not sent yet.
        self._sent: dict[str, list[int]] = {}
        self._logged: dict[str, int] = {}
        self._soon = False
        observe = self._observe
        if access_log is not None and access_log.access_enabled:
            log_request = access_observer(access_log)

            def observe_and_log(stream: Any, now: float) -> None:
                observe(stream, now)
                log_request(stream, now)

            #: ``WorkerContext.on_done``.
            self.observer: Callable[[Any, float], None] = observe_and_log
        else:
            self.observer = observe

    # -- the driver's hook (per request) ----------------------------------------------------

    def _observe(self, stream: Any, now: float) -> None:
        try:
            self.table[stream.scope["method"]][stream.status] += 1
        except (KeyError, IndexError, TypeError):  # (a WebSocket, an odd method or status)
            self._count_odd(stream)
        durations = self.durations
        durations.append(now - stream.start_time)
        if len(durations) >= _BATCH and not self._soon:
            self._soon = True
            self.backend.call_soon(self.flush)

    def _count_odd(self, stream: Any) -> None:
        method = stream.scope.get("method", "GET")  # (a WebSocket's handshake is a GET)
        row = self.table.get(method) or self.table["OTHER"]
        status = stream.status or 0
        row[status if 0 <= status < _STATUSES else 0] += 1

    # -- per batch -------------------------------------------------------------------------

    def count_log(self, name: str) -> None:
        """``count_log_records``' callback: a warning or worse was logged."""
        self._logged[name] = self._logged.get(name, 0) + 1

    def flush(self) -> None:
        """Fold the durations into the histogram; send statsd what it has not had yet."""
        self._soon = False
        durations = self.durations
        timers: list[float] = []
        rate = ""
        if durations:
            durations.sort()
            if self.histogram:
                buckets = self.buckets
                below = 0
                for index, bound in enumerate(BOUNDS):
                    upto = bisect_right(durations, bound, below)
                    buckets[index] += upto - below
                    below = upto
                buckets[-1] += len(durations) - below
                self.seconds += sum(durations)
            if self.statsd is not None:
                step = -(-len(durations) // TIMER_SAMPLES)
                timers = durations[step // 2 :: step]
                rate = "" if step == 1 else f"|@{1 / step:.6g}"
            durations.clear()
        if self.statsd is not None:
            self._send(timers, rate)

    def _send(self, timers: list[float], rate: str) -> None:
        statsd = self.statsd
        assert statsd is not None
        line = statsd.line
        lines: list[str] = []
        by_status: dict[int, int] = {}
        for method, row in self.table.items():
            sent = self._sent.get(method)
            if sent == row:
                continue
            if sent is None:
                sent = self._sent[method] = [0] * _STATUSES
            # (The thousand statuses are compared in C; Python sees the few that moved.)
            deltas = list(map(sub, row, sent))
            for status in compress(range(_STATUSES), deltas):
                by_status[status] = by_status.get(status, 0) + deltas[status]
            sent[:] = row
        requests = sum(by_status.values())
        if requests:
            lines.append(line("hypercorn.requests", requests, "c"))
            classes: dict[str, int] = {}
            for status, delta in sorted(by_status.items()):
                lines.append(line(f"hypercorn.request.status.{status}", delta, "c"))
                name = status_class(status)
                classes[name] = classes.get(name, 0) + delta
            lines.extend(
                line(f"hypercorn.request.status_class.{name}", delta, "c")
                for name, delta in classes.items()
            )
        lines.extend(
            line("hypercorn.request.duration", f"{d * 1000:.3f}", "ms") + rate for d in timers
        )
        if self._logged:
            lines.extend(line(name, value, "c") for name, value in self._logged.items())
            self._logged.clear()
        if lines:
            statsd.send(lines)

    def send_gauge_lines(self) -> None:
        """The gauges, for a worker that serves without a master (``send_gauges``)."""
        statsd, ctx = self.statsd, self.context
        if statsd is None or ctx is None:
            return
        statsd.send(
            [
                statsd.line("hypercorn.connections.open", len(ctx.connections), "g"),
                statsd.line("hypercorn.websockets.open", websockets_open(ctx), "g"),
            ]
        )

    # -- the master's report ----------------------------------------------------------------

    def snapshot(self) -> bytes:
        """The cumulative counters and the gauges, for the master (a heartbeat frame)."""
        requests: list[list[object]] = []
        for method, row in self.table.items():
            if not any(row):
                continue
            classes: dict[str, int] = {}
            for name, low, high in _CLASSES:
                classes[name] = classes.get(name, 0) + sum(row[low:high])
            requests.extend([method, name, value] for name, value in classes.items() if value)
        buckets = self.buckets
        ctx = self.context
        report = {
            "r": requests,
            "b": buckets,
            "s": self.seconds,
            "c": len(ctx.connections) if ctx is not None else 0,
            "w": websockets_open(ctx) if ctx is not None else 0,
        }
        return json.dumps(report, separators=(",", ":")).encode()

    # -- heartbeat and the end --------------------------------------------------------------

    def periodic(self, report: Callable[[bytes], None] | None) -> None:
        """Called with each heartbeat: a flush, the master's report or statsd's own gauges."""
        self.flush()
        if report is not None:
            report(self.snapshot())
        if self.send_gauges:
            self.send_gauge_lines()

    def close(self, report: Callable[[bytes], None] | None) -> None:
        """The worker stops: the last counts go out."""
        self.periodic(report)
        if self.statsd is not None:
            count_log_records(None)
            self.statsd.close()
            self.statsd = None


#: Status classes as index ranges of a status row: (label, first, past the last).
_CLASSES = (
    ("none", 0, 100),
    ("1xx", 100, 200),
    ("2xx", 200, 300),
    ("3xx", 300, 400),
    ("4xx", 400, 500),
    ("5xx", 500, 600),
    ("none", 600, _STATUSES),
)


def worker_metrics(
    config: Config, backend: Backend, *, master_reports: bool
) -> RequestMetrics | None:
    """The counters ``serve()`` installs, or None when nobody wants metrics (zero cost).

    ``master_reports``: the worker runs under a master that asks for snapshots.
    """
    statsd = None
    if config.statsd_host is not None:
        statsd = StatsdClient(config.statsd_host, config.statsd_prefix, config.dogstatsd_tags)
    if statsd is None and not master_reports:
        return None
    # The histogram only feeds /metrics; statsd computes its own from the timers.
    histogram = master_reports and config.metrics_bind is not None
    metrics = RequestMetrics(backend, histogram=histogram, statsd=statsd, access_log=config.log)
    if statsd is not None:
        count_log_records(metrics.count_log)
        metrics.send_gauges = not master_reports
    return metrics
