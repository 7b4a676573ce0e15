"""An HTTP/2 load client that follows RFC 9113 section 6.8 to the letter, for restart tests.

Neither h2load (it does not reconnect) nor httpx (httpcore fails every in-flight stream on any
GOAWAY) can judge a graceful HTTP/2 restart, so this client does what the RFC asks:

* it keeps up to ``concurrency`` streams in flight on one connection, each a GET;
* on GOAWAY it opens no new stream there; streams with ids up to the GOAWAY's last stream id
  are read to their end (the server promised to process them), later ones were not
  processed and are sent again on a new connection; a second GOAWAY lowers the id again;
* a stream reset with REFUSED_STREAM was not processed either: sent again;
* anything else - another reset, a close before a promised stream ended, a status other
  than 200 - is a failure.

``GracefulLoad`` runs clients in threads, bounded in requests and in time, and counts how
many streams were in flight when a GOAWAY arrived and completed anyway.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions

from tests.support.h2socket import connect


@dataclass
class GracefulResult:
    ok: int = 0
    retried: int = 0
    failures: list[str] = field(default_factory=list)
    #: Streams that were open when their connection's (first) GOAWAY arrived, and completed.
    finished_after_goaway: int = 0
    goaways: int = 0
    bodies: set[str] = field(default_factory=set)


class _Connection:
    """One HTTP/2 connection of a client (see the module docstring)."""

    def __init__(self, host: str, port: int, context: ssl.SSLContext | None) -> None:
        self.sock = connect(host, port, context)
        config = h2.config.H2Configuration(client_side=True, header_encoding=None)
        self.conn = h2.connection.H2Connection(config=config)
        self.conn.initiate_connection()
        self.sock.sendall(self.conn.data_to_send())
        self.buffer = b""
        self.authority = f"{host}:{port}".encode()
        self.scheme = b"https" if context else b"http"
        #: stream id -> [request number, body, status, open when GOAWAY came]
        self.streams: dict[int, list[object]] = {}
        self.last_stream_id: int | None = None  # from the latest GOAWAY
        self.closed = False

    @property
    def usable(self) -> bool:
        return not self.closed and self.last_stream_id is None

    def send_request(self, number: int, path: str) -> None:
        stream_id = self.conn.get_next_available_stream_id()
        headers = [
            (b":method", b"GET"),
            (b":path", path.encode()),
            (b":scheme", self.scheme),
            (b":authority", self.authority),
        ]
        self.conn.send_headers(stream_id, headers, end_stream=True)
        self.streams[stream_id] = [number, b"", 0, False]
        self.flush()

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data and not self.closed:
            try:
                self.sock.sendall(data)
            except OSError:
                self.closed = True

    def receive(self, timeout: float) -> list[object]:
        """Events of the frames that arrive within ``timeout`` (frame by frame, so a graceful
        GOAWAY does not make h2 refuse what follows it)."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return []
        except OSError:
            data = b""
        if not data:
            self.closed = True
            return []
        self.buffer += data
        events: list[object] = []
        while len(self.buffer) >= 9:
            end = 9 + int.from_bytes(self.buffer[:3], "big")
            if len(self.buffer) < end:
                break
            frame, self.buffer = self.buffer[:end], self.buffer[end:]
            for event in self.conn.receive_data(frame):
                events.append(event)
                if isinstance(event, h2.events.ConnectionTerminated):
                    self.conn.state_machine.state = h2.connection.ConnectionState.CLIENT_OPEN
        self.flush()
        return events

    def close(self) -> None:
        self.closed = True
        self.sock.close()


class GracefulClient:
    def __init__(
        self,
        host: str,
        port: int,
        context: ssl.SSLContext | None,
        result: GracefulResult,
        lock: threading.Lock,
        take: Callable[[], bool],
        *,
        path: str = "/",
        concurrency: int = 8,
    ) -> None:
        self.host, self.port, self.context = host, port, context
        self.result, self.lock, self.take = result, lock, take
        self.path = path
        self.concurrency = concurrency
        self.queue: list[int] = []  # requests to send again
        self.connections: list[_Connection] = []

    def _fail(self, why: str) -> None:
        with self.lock:
            self.result.failures.append(why)

    def run(self, stop: threading.Event, deadline: float) -> None:
        number = 0
        conns: list[_Connection] = []
        try:
            while time.monotonic() < deadline:
                current = conns[-1] if conns and conns[-1].usable else None
                if current is None and (self.queue or not stop.is_set()):
                    try:
                        current = _Connection(self.host, self.port, self.context)
                    except OSError as exc:
                        self._fail(f"connect: {exc}")
                        return
                    conns.append(current)
                while current is not None and len(current.streams) < self.concurrency:
                    if self.queue:
                        request = self.queue.pop()
                    elif not stop.is_set() and self.take():
                        number += 1
                        request = number
                    else:
                        break
                    current.send_request(request, self.path)
                busy = [conn for conn in conns if conn.streams]
                for conn in busy:
                    self._drive(conn, 0.05 / len(busy))
                for conn in list(conns):
                    done = not conn.streams and (not conn.usable or stop.is_set())
                    if conn.closed or done:
                        conns.remove(conn)
                        conn.close()
                if not busy:
                    if stop.is_set() and not self.queue and not conns:
                        break
                    stop.wait(0.01)  # (budget spent: idle until told to stop)
        finally:
            for conn in conns:
                if conn.streams:
                    self._fail(f"{len(conn.streams)} streams unanswered at the deadline")
                conn.close()

    def _drive(self, conn: _Connection, timeout: float) -> None:
        for event in conn.receive(timeout):
            if isinstance(event, h2.events.ResponseReceived):
                state = conn.streams.get(event.stream_id)
                if state is not None:
                    state[2] = int(dict(event.headers)[b":status"])
            elif isinstance(event, h2.events.DataReceived):
                state = conn.streams.get(event.stream_id)
                if state is not None:
                    state[1] = bytes(state[1]) + event.data  # type: ignore[operator]
                conn.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                state = conn.streams.pop(event.stream_id, None)
                if state is None:
                    continue
                if state[2] != 200:
                    self._fail(f"status {state[2]}")
                    continue
                with self.lock:
                    self.result.ok += 1
                    self.result.bodies.add(bytes(state[1]).decode())  # type: ignore[arg-type]
                    if state[3]:
                        self.result.finished_after_goaway += 1
            elif isinstance(event, h2.events.StreamReset):
                state = conn.streams.pop(event.stream_id, None)
                if state is None:
                    continue
                if event.error_code == h2.errors.ErrorCodes.REFUSED_STREAM:
                    self.queue.append(state[0])  # type: ignore[arg-type]
                    with self.lock:
                        self.result.retried += 1
                else:
                    self._fail(f"stream reset {event.error_code!r}")
            elif isinstance(event, h2.events.ConnectionTerminated):
                if event.error_code:
                    self._fail(f"GOAWAY {event.error_code!r}")
                with self.lock:
                    self.result.goaways += 1
                first = conn.last_stream_id is None
                conn.last_stream_id = event.last_stream_id
                for stream_id in list(conn.streams):
                    if stream_id > event.last_stream_id:
                        # Not processed: the RFC lets (and wants) us send it again.
                        self.queue.append(conn.streams.pop(stream_id)[0])  # type: ignore[arg-type]
                        with self.lock:
                            self.result.retried += 1
                    elif first:
                        conn.streams[stream_id][3] = True
        conn.flush()
        if conn.closed and conn.streams:
            promised = conn.last_stream_id
            for stream_id in list(conn.streams):
                number = conn.streams.pop(stream_id)[0]
                if promised is not None and stream_id > promised:
                    self.queue.append(number)  # type: ignore[arg-type]
                else:
                    self._fail(f"stream {stream_id} cut by a close (GOAWAY said {promised})")


class GracefulLoad:
    """Clients in threads until stopped; bounded in requests and in time."""

    def __init__(
        self,
        host: str,
        port: int,
        context: ssl.SSLContext | None,
        *,
        clients: int = 2,
        max_requests: int = 20_000,
        seconds: float = 60.0,
        path: str = "/",
    ) -> None:
        self.result = GracefulResult()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._budget = max_requests
        self._deadline = time.monotonic() + seconds
        self._clients = [
            GracefulClient(host, port, context, self.result, self._lock, self._take, path=path)
            for _ in range(clients)
        ]
        self._threads = [
            threading.Thread(target=c.run, args=(self._stop, self._deadline), daemon=True)
            for c in self._clients
        ]

    def _take(self) -> bool:
        with self._lock:
            if self._budget <= 0:
                return False
            self._budget -= 1
            return True

    def __enter__(self) -> GracefulLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> GracefulResult:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=max(1.0, self._deadline - time.monotonic() + 5))
        return self.result


__all__ = ["GracefulLoad", "GracefulResult"]
