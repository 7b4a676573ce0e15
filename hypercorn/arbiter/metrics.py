"""The master's metrics: the workers' reports summed, /metrics served, statsd's gauges.

Each worker sends its cumulative counters with its heartbeat (``RequestMetrics.snapshot``,
a ``METRICS`` frame on its pipe). The master keeps the last report of every live worker and
adds a worker's last report to the *retired* totals when it exits, so the counters are server
totals: they survive worker restarts. (A worker killed outright loses what it counted since
its last report, at most one heartbeat interval; a worker that stops gracefully reports once
more on its way out.)

``--metrics-bind`` serves ``GET /metrics`` in the Prometheus text format, rendered by
``prometheus_client`` from a collector over those sums. The HTTP exchanges run on
non-blocking sockets in the master's own selector: a slow or silent scraper never holds up
the master, and a bounded number of them is kept (the oldest is dropped).

With ``statsd_host`` the master sends what only it can count right: the gauges summed over
the workers, as each report arrives, and each worker restart with its cause.
"""

from __future__ import annotations

import contextlib
import json
import selectors
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from hypercorn.arbiter.messages import ChildExited
from hypercorn.arbiter.sockets import adopt_fd, describe, split_host_port
from hypercorn.arbiter.state import Phase, WorkerState
from hypercorn.errors import BootError
from hypercorn.workers.metrics import BOUNDS

if TYPE_CHECKING:
    from collections.abc import Iterator

    from hypercorn.arbiter.core import ArbiterCore
    from hypercorn.config import Config
    from hypercorn.statsd import StatsdClient

__all__ = ["MasterMetrics", "master_metrics", "restart_cause"]

#: Scrapers served at once; a further one drops the oldest (which never finished asking).
_MAX_EXCHANGES = 16
_MAX_REQUEST = 8192


def restart_cause(core: ArbiterCore, exited: ChildExited) -> str | None:
    """Why the worker that just exited is being replaced, or None if it is not (the server
    stops, or TTOU removed its slot). Asked before the core hears of the exit."""
    worker = core.workers.get(exited.wid)
    if worker is None or core.phase in (Phase.STOPPING, Phase.STOPPED):
        return None
    if worker.timed_out:
        return "timeout"
    if worker.state is WorkerState.BOOTING:
        return "boot_failure"
    if worker.state is WorkerState.DRAINING:
        if worker.slot not in core.slots:
            return None
        if worker.retiring:
            return "max_requests"
        if worker.generation < core.generation:
            return "reload"
        return "stopped"  # someone else told it to stop
    return "exit" if exited.code == 0 else "crash"


class _Report:
    """One worker's last report, or the retired workers' sums."""

    __slots__ = ("buckets", "connections", "requests", "seconds", "websockets")

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str], int] = {}
        self.buckets = [0] * (len(BOUNDS) + 1)
        self.seconds = 0.0
        self.connections = 0
        self.websockets = 0

    @classmethod
    def parse(cls, data: bytes) -> _Report | None:
        try:
            raw = json.loads(data)
            report = cls()
            for method, status, value in raw["r"]:
                report.requests[(str(method), str(status))] = int(value)
            buckets = [int(value) for value in raw["b"]]
            if len(buckets) != len(report.buckets):
                return None
            report.buckets = buckets
            report.seconds = float(raw["s"])
            report.connections = int(raw["c"])
            report.websockets = int(raw["w"])
        except (ValueError, TypeError, KeyError):
            return None
        return report

    def add(self, other: _Report) -> None:
        for key, value in other.requests.items():
            self.requests[key] = self.requests.get(key, 0) + value
        self.buckets = [a + b for a, b in zip(self.buckets, other.buckets, strict=True)]
        self.seconds += other.seconds
        self.connections += other.connections
        self.websockets += other.websockets


class MasterMetrics:
    """Owned by the runner: fed reports and exits, served from its selector."""

    def __init__(
        self, core: ArbiterCore, statsd: StatsdClient | None, listener: socket.socket | None
    ) -> None:
        self.core = core
        self.statsd = statsd
        self.live: dict[int, _Report] = {}
        self.retired = _Report()
        self.restarts: dict[str, int] = {}
        self._server = _Server(listener, self.render) if listener is not None else None

    # -- inputs from the runner --------------------------------------------------------------

    def update(self, wid: int, data: bytes) -> None:
        report = _Report.parse(data)
        if report is None:
            return
        self.live[wid] = report
        statsd = self.statsd
        if statsd is not None:
            total = self._total()
            line = statsd.line
            statsd.send(
                [
                    line("hypercorn.connections.open", total.connections, "g"),
                    line("hypercorn.websockets.open", total.websockets, "g"),
                    line("hypercorn.workers", self.core.ready_count(), "g"),
                ]
            )

    def worker_exited(self, wid: int, cause: str | None) -> None:
        report = self.live.pop(wid, None)
        if report is not None:
            report.connections = report.websockets = 0
            self.retired.add(report)
        if cause is not None:
            self.restarts[cause] = self.restarts.get(cause, 0) + 1
            if self.statsd is not None:
                self.statsd.send([self.statsd.line(f"hypercorn.worker.restart.{cause}", 1, "c")])

    # -- the selector ----------------------------------------------------------------------

    def register(self, selector: selectors.BaseSelector) -> None:
        if self._server is not None:
            self._server.register(selector)

    @property
    def url(self) -> str | None:
        """Where /metrics is served (for the log), if it is."""
        if self._server is None:
            return None
        return f"http://{describe(self._server.sock)}/metrics"

    def fds(self) -> list[int]:
        """Descriptors a forked worker must close."""
        fds = self._server.fds() if self._server is not None else []
        if self.statsd is not None and self.statsd.fileno() >= 0:
            fds.append(self.statsd.fileno())
        return fds

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        if self.statsd is not None:
            self.statsd.close()

    # -- Prometheus ------------------------------------------------------------------------

    def _total(self) -> _Report:
        total = _Report()
        total.add(self.retired)
        for report in self.live.values():
            total.add(report)
        return total

    def collect(self) -> Iterator[Any]:
        """The metric families (``prometheus_client``'s collector protocol)."""
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        total = self._total()
        requests = CounterMetricFamily(
            "hypercorn_requests",
            "Requests answered (WebSockets count once, when they end), by method and status class.",
            labels=["method", "status"],
        )
        for (method, status), value in sorted(total.requests.items()):
            requests.add_metric([method, status], value)
        yield requests
        cumulative = 0
        buckets = []
        for bound, count in zip((*BOUNDS, float("inf")), total.buckets, strict=True):
            cumulative += count
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
        yield HistogramMetricFamily(
            "hypercorn_request_duration_seconds",
            "Time from a request's arrival to the end of its app.",
            buckets=buckets,
            sum_value=total.seconds,
        )
        yield GaugeMetricFamily(
            "hypercorn_connections_open", "Open client connections.", value=total.connections
        )
        yield GaugeMetricFamily(
            "hypercorn_websockets_open", "Accepted WebSockets still open.", value=total.websockets
        )
        yield GaugeMetricFamily(
            "hypercorn_workers", "Workers ready and serving.", value=self.core.ready_count()
        )
        restarts = CounterMetricFamily(
            "hypercorn_worker_restarts",
            "Workers replaced, by cause: crash, exit, timeout, boot_failure, max_requests, "
            "reload, stopped.",
            labels=["cause"],
        )
        for cause, value in sorted(self.restarts.items()):
            restarts.add_metric([cause], value)
        yield restarts
        ages = GaugeMetricFamily(
            "hypercorn_worker_heartbeat_age_seconds",
            "Seconds since each slot's serving worker last reported alive.",
            labels=["slot"],
        )
        now = time.monotonic()
        oldest: dict[int, float] = {}
        for worker in self.core.workers.values():
            if worker.state is WorkerState.READY:
                age = max(0.0, now - worker.last_beat)
                oldest[worker.slot] = max(age, oldest.get(worker.slot, 0.0))
        for slot, age in sorted(oldest.items()):
            ages.add_metric([str(slot)], age)
        yield ages

    def render(self, accept: str = "") -> tuple[bytes, str]:
        """The exposition the ``Accept`` header asks for, and its content type."""
        from prometheus_client import CollectorRegistry
        from prometheus_client.exposition import choose_encoder

        registry = CollectorRegistry(auto_describe=False)
        registry.register(self)
        encode, content_type = choose_encoder(accept)
        return encode(registry), content_type


def _listen(address: str, backlog: int) -> socket.socket:
    if address.startswith("fd://"):
        return adopt_fd(address, socket.SOCK_STREAM, backlog)
    host, port = split_host_port(address)
    try:
        family, kind, proto, _, target = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise BootError(f"metrics_bind: cannot listen on {address}: {exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # A master started by SIGUSR2 listens beside this one until it takes over.
        if hasattr(socket, "SO_REUSEPORT"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(target)
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise BootError(
            f"metrics_bind: cannot listen on {address}: {exc.strerror or exc}"
        ) from None
    return sock


class _Server:
    """HTTP/1.x ``GET /metrics`` on non-blocking sockets; each answer closes its connection."""

    def __init__(self, sock: socket.socket, render: Callable[[str], tuple[bytes, str]]) -> None:
        self.sock = sock
        self.render = render
        self.selector: selectors.BaseSelector | None = None
        self.exchanges: dict[int, _Exchange] = {}  # by fd, oldest first

    def register(self, selector: selectors.BaseSelector) -> None:
        self.selector = selector
        selector.register(self.sock, selectors.EVENT_READ, self._on_accept)

    def fds(self) -> list[int]:
        return [self.sock.fileno(), *self.exchanges]

    def _on_accept(self, events: int) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # (EMFILE and the like: the next readiness tries again)
            conn.setblocking(False)
            if len(self.exchanges) >= _MAX_EXCHANGES:
                self.exchanges[next(iter(self.exchanges))].close()
            exchange = _Exchange(self, conn)
            self.exchanges[conn.fileno()] = exchange
            assert self.selector is not None
            self.selector.register(conn, selectors.EVENT_READ, exchange.on_event)

    def close(self) -> None:
        for exchange in list(self.exchanges.values()):
            exchange.close()
        if self.selector is not None:
            with contextlib.suppress(KeyError, ValueError):
                self.selector.unregister(self.sock)
        self.sock.close()


class _Exchange:
    """One scrape: read the request head, answer, close."""

    def __init__(self, server: _Server, conn: socket.socket) -> None:
        self.server = server
        self.conn = conn
        self.fd = conn.fileno()
        self.received = b""
        self.out: bytes | None = None

    def on_event(self, events: int) -> None:
        try:
            if self.out is None:
                self._read()
            if self.out is not None:
                self._write()
        except OSError:
            self.close()

    def _read(self) -> None:
        try:
            data = self.conn.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        if not data:
            self.close()
            return
        self.received += data
        if b"\r\n\r\n" in self.received or b"\n\n" in self.received:
            self.out = self._answer(self.received.decode("latin-1"))
            assert self.server.selector is not None
            self.server.selector.modify(self.conn, selectors.EVENT_WRITE, self.on_event)
        elif len(self.received) > _MAX_REQUEST:
            self.out = _response(431, b"request header too large\n")
            assert self.server.selector is not None
            self.server.selector.modify(self.conn, selectors.EVENT_WRITE, self.on_event)

    def _answer(self, head: str) -> bytes:
        request_line, *fields = head.split("\n")
        parts = request_line.split()
        if len(parts) != 3:
            return _response(400, b"bad request\n")
        method, target, _ = parts
        if target.split("?", 1)[0] != "/metrics":
            return _response(404, b"not found: the metrics are at /metrics\n")
        if method not in ("GET", "HEAD"):
            return _response(405, b"method not allowed\n", [("Allow", "GET, HEAD")])
        accept = ""
        for field in fields:
            name, _, value = field.partition(":")
            if name.strip().lower() == "accept":
                accept = value.strip()
        # Prometheus asks for OpenMetrics in Accept; curl and older scrapers get text 0.0.4.
        body, content_type = self.server.render(accept)
        return _response(200, body, [("Content-Type", content_type)], head=method == "HEAD")

    def _write(self) -> None:
        assert self.out is not None
        try:
            sent = self.conn.send(self.out)
        except (BlockingIOError, InterruptedError):
            return
        self.out = self.out[sent:]
        if not self.out:
            self.close()

    def close(self) -> None:
        if self.server.exchanges.pop(self.fd, None) is None:
            return
        if self.server.selector is not None:
            with contextlib.suppress(KeyError, ValueError):
                self.server.selector.unregister(self.conn)
        self.conn.close()


_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}


def _response(
    status: int, body: bytes, headers: list[tuple[str, str]] | None = None, *, head: bool = False
) -> bytes:
    reason = _REASONS.get(status, "Request Header Fields Too Large")
    lines = [f"HTTP/1.1 {status} {reason}"]
    lines.extend(f"{name}: {value}" for name, value in headers or [("Content-Type", "text/plain")])
    lines += [f"Content-Length: {len(body)}", "Connection: close", "", ""]
    return "\r\n".join(lines).encode("latin-1") + (b"" if head else body)


def master_metrics(config: Config, core: ArbiterCore) -> MasterMetrics | None:
    """The runner's metrics, or None when neither ``metrics_bind`` nor statsd is set.

    Raises ``BootError`` when the metrics address cannot be listened on.
    """
    if config.metrics_bind is None and config.statsd_host is None:
        return None
    listener = None
    if config.metrics_bind is not None:
        listener = _listen(config.metrics_bind, 16)
    statsd = None
    if config.statsd_host is not None:
        from hypercorn.statsd import StatsdClient, count_log_records

        client = statsd = StatsdClient(
            config.statsd_host, config.statsd_prefix, config.dogstatsd_tags
        )
        count_log_records(lambda name: client.send([client.line(name, 1, "c")]))
    return MasterMetrics(core, statsd, listener)
