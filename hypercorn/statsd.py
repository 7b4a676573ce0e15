"""statsd over UDP: metric lines packed into datagrams, sent without ever blocking.

Names follow upstream Hypercorn where it has one: ``hypercorn.requests`` (counter),
``hypercorn.request.duration`` (timer, milliseconds), ``hypercorn.request.status.<code>``
(counter) and ``hypercorn.log.<level>`` (counter). Ours beside them:
``hypercorn.request.status_class.<N>xx``, the gauges ``hypercorn.connections.open``,
``hypercorn.websockets.open`` and ``hypercorn.workers`` (sent by the master, which sums the
workers; each worker sending its own gauge would overwrite the others' in statsd), and
``hypercorn.worker.restart.<cause>`` (master). ``statsd_prefix`` goes in front of every name
and ``dogstatsd_tags`` after every line (``|#key:value,...``).

The socket is non-blocking and connected once: a send that would block, or that fails (no
statsd listening, a full buffer), drops its datagram. Metrics never cost the server more than
the send call. Who calls ``send`` decides the batching: the workers once per loop pass at most
(``hypercorn.workers.metrics``), the master for its rare events.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Callable, Iterable

from hypercorn.arbiter.sockets import split_host_port

__all__ = ["MAX_DATAGRAM", "StatsdClient", "count_log_records"]

#: The payload that fits one Ethernet frame with room for IP/UDP headers (DogStatsD's and
#: most clients' default).
MAX_DATAGRAM = 1432

_logger = logging.getLogger("hypercorn.error")


class StatsdClient:
    """Formats and sends statsd lines to ``address`` (``host:port``)."""

    def __init__(self, address: str, prefix: str = "", tags: str = "") -> None:
        if prefix and not prefix.endswith("."):
            prefix += "."
        self.prefix = prefix
        self.suffix = f"|#{tags}" if tags else ""
        #: Datagrams that could not be sent (dropped).
        self.dropped = 0
        self._sock: socket.socket | None = None
        host, port = split_host_port(address)
        try:
            family, kind, proto, _, target = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[
                0
            ]
            sock = socket.socket(family, kind, proto)
        except OSError as exc:
            _logger.warning("statsd_host %s: %s; no metrics will be sent", address, exc)
            return
        sock.setblocking(False)
        try:
            sock.connect(target)
        except OSError as exc:
            sock.close()
            _logger.warning("statsd_host %s: %s; no metrics will be sent", address, exc)
            return
        self._sock = sock

    def fileno(self) -> int:
        return self._sock.fileno() if self._sock is not None else -1

    def line(self, name: str, value: object, kind: str) -> str:
        """One metric line: ``kind`` is ``c`` (counter), ``g`` (gauge) or ``ms`` (timer)."""
        return f"{self.prefix}{name}:{value}|{kind}{self.suffix}"

    def send(self, lines: Iterable[str]) -> None:
        """Send ``lines``, as many to a datagram as fit (newline-separated)."""
        batch: list[str] = []
        size = 0
        for line in lines:
            if batch and size + len(line) + 1 > MAX_DATAGRAM:
                self._send("\n".join(batch))
                batch.clear()
                size = 0
            batch.append(line)
            size += len(line) + 1
        if batch:
            self._send("\n".join(batch))

    def _send(self, text: str) -> None:
        sock = self._sock
        if sock is None:
            return
        try:
            sock.send(text.encode("ascii", "replace"))
        except OSError:  # BlockingIOError (full buffer), ECONNREFUSED (nobody listens), ...
            self.dropped += 1

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()


class _LogCounter(logging.Handler):
    """Counts the error log's warnings, errors, exceptions and criticals (upstream's
    ``hypercorn.log.<level>``)."""

    def __init__(self, count: Callable[[str], None]) -> None:
        super().__init__(logging.WARNING)
        self.count = count

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.CRITICAL:
            name = "critical"
        elif record.levelno >= logging.ERROR:
            name = "exception" if record.exc_info else "error"
        else:
            name = "warning"
        with contextlib.suppress(Exception):
            self.count(f"hypercorn.log.{name}")


_installed: _LogCounter | None = None


def count_log_records(count: Callable[[str], None] | None) -> None:
    """Call ``count(metric_name)`` for every warning or worse on ``hypercorn.error``.

    One counter per process: installing replaces the previous one (a worker replaces the one
    it inherited from the master at fork); ``None`` removes it.
    """
    global _installed
    logger = logging.getLogger("hypercorn.error")
    if _installed is not None:
        logger.removeHandler(_installed)
        _installed = None
    if count is not None:
        _installed = _LogCounter(count)
        logger.addHandler(_installed)
