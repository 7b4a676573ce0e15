"""Running a WSGI application as ASGI: one thread hop per small response (written once).

Theory of operation
-------------------
The loop reads the whole request body (at most ``wsgi_max_body_size`` bytes, else 413), then
hands the exchange (``_Exchange``) to the loop's thread pool (``workers/threads.py``: one
queue put there, one batched ``call_soon_threadsafe`` back). The pool thread builds the
environ, calls the app and iterates its result, appending each chunk to a buffer shared with
the loop, and finally calls ``close()`` on the result.

* Fast path: if the thread finishes before ``STREAM_AFTER`` seconds, the loop sends the
  start message and the whole body at once (with a Content-Length when the app gave none).
  The only thread hops are the pool's.
* Streaming: if the thread is still running after ``STREAM_AFTER`` (one timer per bridge
  sweeps the running exchanges every ``STREAM_AFTER / 2``, so a thread that ran that long
  streams within 1.5 ``STREAM_AFTER``), or it buffered more than ``HIGH_WATER`` bytes, the
  loop starts a sender task. From then on
  the thread wakes the sender with ``call_soon_threadsafe`` when it buffers a chunk (at most
  one pending wake-up at a time), and the sender forwards buffered chunks through the ASGI
  ``send`` (which applies the transport's back-pressure). Back-pressure reaches the thread
  through the buffer: above ``HIGH_WATER`` unsent bytes it waits until the sender brings the
  buffer below ``LOW_WATER``. So a slow generator's chunks reach the client promptly and a
  fast one never outruns a slow client by more than ``HIGH_WATER``.

Rules: every field of ``_Exchange`` that both sides touch is read and written under its
lock. The thread never calls into the loop except through ``Backend.call_soon_threadsafe``.

The first non-empty chunk (yielded or ``write()``-n) *commits* the response, as PEP 3333
counts headers "sent", whichever path later puts the bytes on the wire: from then on
``start_response(..., exc_info)`` re-raises, and an application error sends the committed
head and chunks and then aborts the connection, never a 500. ``committed`` is the thread's
own fact (the loop reads it only once the thread is done), so neither outcome depends on
how fast the loop was.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Callable, Iterable, MutableMapping
from typing import TYPE_CHECKING, Any

from hypercorn.protocols.wsgi import (
    InvalidPathError,
    UnderscoreHeaderError,
    WSGIResponseError,
    build_environ,
    encode_response_head,
    parse_status,
)
from hypercorn.typing import ASGIReceive, ASGISend, WSGIApp
from hypercorn.workers.threads import thread_pool

if TYPE_CHECKING:
    from types import TracebackType

    from hypercorn.workers.backend import AsyncEvent, Backend, TaskHandle
    from hypercorn.workers.threads import ThreadPool

__all__ = ["HIGH_WATER", "LOW_WATER", "STREAM_AFTER", "WSGIBridge"]

_error_logger = logging.getLogger("hypercorn.error")

#: Seconds an application may run (in its thread, not counting time queued for a thread)
#: before its output is streamed chunk by chunk. Well above the GIL switch interval (5 ms),
#: so a busy worker's quick responses keep the one-hop fast path.
STREAM_AFTER = 0.02
#: How often the bridge looks for exchanges that ran ``STREAM_AFTER`` (while any run).
_SWEEP_EVERY = STREAM_AFTER / 2
#: Unsent bytes at which the application thread waits for the client to catch up.
HIGH_WATER = 256 * 1024
#: ...and the level it waits for.
LOW_WATER = 64 * 1024

_NO_BODY_STATUSES = frozenset({204, 304})

ExcInfo = tuple[type[BaseException], BaseException, "TracebackType | None"]


class WSGIBridge:
    """An ASGI 3 application running the WSGI application ``app`` in ``backend``'s threads.

    Request bodies above ``max_body_size`` bytes are refused with 413 (``wsgi_max_body_size``).
    ``header_map`` says what becomes of header names containing ``_`` (see ``build_environ``).
    """

    __slots__ = ("_running", "_sweeping", "app", "backend", "header_map", "max_body_size", "pool")

    def __init__(
        self, app: WSGIApp, backend: Backend, max_body_size: int, header_map: str = "drop"
    ) -> None:
        self.app = app
        self.backend = backend
        self.max_body_size = max_body_size
        self.header_map = header_map
        self.pool: ThreadPool = thread_pool(backend)
        #: Exchanges whose thread runs (or waits for a thread) and that do not stream yet.
        self._running: set[_Exchange] = set()
        #: The sweep timer is armed (it is while ``_running`` is not empty).
        self._sweeping = False

    async def __call__(
        self, scope: MutableMapping[str, Any], receive: ASGIReceive, send: ASGISend
    ) -> None:
        kind = scope["type"]
        if kind == "http":
            # (inline, not a coroutine of its own: each is a frame per request)
            body = await self._read_body(scope, receive, send)
            if body is not None:
                await _Exchange(self, receive, send, scope, body).serve()
        elif kind == "websocket":
            # WSGI has no WebSockets: deny the handshake (403).
            await send({"type": "websocket.close", "code": 1000})
        elif kind == "lifespan":
            await _lifespan(receive, send)
        else:
            raise RuntimeError(f"unknown ASGI scope type {kind!r}")

    def _watch(self, exchange: _Exchange) -> None:
        self._running.add(exchange)
        if not self._sweeping:
            self._sweeping = True
            backend = self.backend
            backend.call_at(backend.now() + _SWEEP_EVERY, self._sweep)

    def _sweep(self) -> None:
        running = self._running
        if running:
            now = time.monotonic()
            for exchange in list(running):
                if exchange.check_time(now):
                    running.discard(exchange)
        if running:
            backend = self.backend
            backend.call_at(backend.now() + _SWEEP_EVERY, self._sweep)
        else:
            self._sweeping = False

    async def _read_body(
        self, scope: MutableMapping[str, Any], receive: ASGIReceive, send: ASGISend
    ) -> bytes | None:
        """The whole request body, or None if the client left or it was too large (413 sent)."""
        limit = self.max_body_size
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                if value.isdigit() and int(value) > limit:
                    await _send_too_large(send)
                    return None
                break
        message = await receive()
        if message["type"] != "http.request":
            return None  # http.disconnect
        body: bytes = message.get("body", b"")
        if not message.get("more_body", False):
            if len(body) > limit:
                await _send_too_large(send)
                return None
            return body
        buffer = bytearray(body)
        while True:
            if len(buffer) > limit:
                await _send_too_large(send)
                return None
            message = await receive()
            if message["type"] != "http.request":
                return None
            buffer += message.get("body", b"")
            if not message.get("more_body", False):
                break
        if len(buffer) > limit:
            await _send_too_large(send)
            return None
        return bytes(buffer)


async def _lifespan(receive: ASGIReceive, send: ASGISend) -> None:
    # A WSGI application has nothing to start or stop: answer for it, so that it boots
    # quietly and also with lifespan "on".
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _send_too_large(send: ASGISend) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", b"24"),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": b"Request body too large.\n"})


class _Exchange:
    """One request/response between the loop and an application thread (see module doc).

    It is the pool's job itself: ``run`` in the thread, ``done`` back on the loop."""

    __slots__ = (
        "aborted",
        "body",
        "bridge",
        "buffered",
        "chunks",
        "committed",
        "context",
        "error",
        "finished",
        "framed",
        "headers",
        "headers_sent",
        "lock",
        "notified",
        "receive",
        "scope",
        "send",
        "sender",
        "sender_done",
        "space",
        "started_at",
        "status",
        "streaming",
        "thread_done",
        "wake",
        "watcher",
    )

    def __init__(
        self,
        bridge: WSGIBridge,
        receive: ASGIReceive,
        send: ASGISend,
        scope: MutableMapping[str, Any],
        body: bytes,
    ) -> None:
        self.bridge = bridge
        self.receive = receive
        self.send = send
        self.scope = scope
        self.body = body
        self.lock = threading.Lock()
        self.space: threading.Condition | None = None  # created when the thread must wait
        # Set by start_response (thread) and read by the loop once the thread is done or under
        # the lock while streaming.
        self.status: int | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        #: The headers carry a Content-Length or Transfer-Encoding.
        self.framed = False
        self.headers_sent = False
        #: A non-empty chunk was produced (thread-only until the thread is done).
        self.committed = False
        self.chunks: list[bytes] = []
        self.buffered = 0
        self.streaming = False
        self.notified = False
        self.finished = False
        self.aborted = False
        # Loop-only fields.
        self.wake: AsyncEvent | None = None
        self.sender: TaskHandle | None = None
        self.sender_done: AsyncEvent | None = None
        self.watcher: TaskHandle | None = None
        #: time.monotonic() when a pool thread began running the application; None before
        #: that and again once it returned (written by the thread, one store each).
        self.started_at: float | None = None
        self.thread_done: AsyncEvent = bridge.backend.event()
        #: The context the application runs in (a copy of the request task's: this is
        #: made in it).
        self.context = contextvars.copy_context()
        #: What the application thread raised (given to the loop by ``done``).
        self.error: BaseException | None = None

    @property
    def backend(self) -> Backend:
        return self.bridge.backend

    # -- loop side ----------------------------------------------------------------------------

    async def serve(self) -> None:
        try:
            bridge = self.bridge
            bridge.pool.submit(self)
            bridge._watch(self)
            try:
                await self.thread_done.wait()
            except BaseException:
                # Cancelled: the thread runs on (nothing can stop it) and hears of the abort.
                bridge._running.discard(self)
                await self._stop_streaming(abort=True)
                raise
            error = self.error
            if error is not None:
                self.error = None  # (no cycle through the traceback's frames)
                try:
                    await self._after_error(error)
                finally:
                    del error
                return
            # The sweep may have started streaming between the thread finishing and this
            # coroutine resuming. (No sender is started now: one that never ran has sent
            # nothing, and the whole response goes out below.)
            if self.streaming:
                await self._stop_streaming(abort=False)
                if self.aborted:
                    return
                if self.headers_sent:
                    await self.send({"type": "http.response.body", "body": b"", "more_body": False})
                    return
            # The thread is done and nothing was sent yet: the whole response in one go.
            await self._send_complete()
        finally:
            if self.watcher is not None:
                self.watcher.cancel()

    async def _after_error(self, exc: BaseException) -> None:
        if not isinstance(exc, Exception):
            await self._stop_streaming(abort=True)
            raise exc
        # A committed response goes out as far as it got, then the driver aborts the
        # connection (the response has started); otherwise the driver answers 500.
        if self.streaming:
            self._ensure_sender()
        await self._stop_streaming(abort=False)
        if self.committed and not self.aborted:
            await self._send_committed()
        elif isinstance(exc, WSGIResponseError) and not self.headers_sent:
            # The application broke PEP 3333 before anything was sent (a header that is
            # not safe to send, no start_response): one line says what, and the 500 is
            # an ordinary response, so the connection serves the next request.
            _error_logger.error("WSGI app error: %s", exc)
            await self.send({"type": "http.response.start", "status": 500, "headers": []})
            await self.send({"type": "http.response.body", "body": b""})
            return
        raise exc

    async def _send_complete(self) -> None:
        chunks = self.chunks
        self.chunks = []
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        headers = self.headers
        status = self.status
        assert status is not None  # _call_app raised otherwise
        if (
            status not in _NO_BODY_STATUSES
            and status >= 200
            and not self.framed
            and self.scope.get("method") != "HEAD"
        ):
            headers.append((b"content-length", str(len(body)).encode("ascii")))
        self.headers_sent = True
        await self.send({"type": "http.response.start", "status": status, "headers": headers})
        await self.send({"type": "http.response.body", "body": body, "more_body": False})

    async def _send_committed(self) -> None:
        """After an application error: whatever was committed and not yet sent."""
        chunks = self.chunks
        self.chunks = []
        try:
            if not self.headers_sent:
                await self._send_start()
            if chunks:
                body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                await self.send({"type": "http.response.body", "body": body, "more_body": True})
        except Exception:
            return  # the client left: the application's error is what gets reported

    async def _stop_streaming(self, *, abort: bool) -> None:
        """Tell the sender the thread is done (or abort it) and wait until it has finished."""
        with self.lock:
            self.finished = True
            if abort:
                self._abort_locked()
        if self.wake is not None:
            self.wake.set()
        if self.sender is not None and self.sender_done is not None:
            try:
                await self.sender_done.wait()
            except BaseException:
                self.sender.cancel()
                with self.lock:
                    self._abort_locked()
                raise

    def check_time(self, now: float) -> bool:
        """The bridge's sweep (``now`` is ``time.monotonic()``): start streaming if the
        application ran ``STREAM_AFTER``. True once there is nothing left to watch."""
        with self.lock:
            if self.finished or self.streaming:
                return True
            started = self.started_at
            # Time spent queued for a pool thread does not count: under load every request
            # waits there, and streaming them all would cost a task and a hop per chunk.
            if started is None or now - started < STREAM_AFTER:
                return False
            self.streaming = True
            if not self.chunks:
                # Nothing to send yet: the thread's next chunk wakes the loop, whose
                # ``_on_wake`` starts the sender. An application that was slow to start
                # (waiting for the GIL under load, say) and then returns its whole body
                # costs no tasks.
                return True
            self.notified = True
        self._ensure_sender()
        return True

    def done(self) -> None:
        """The pool's ``Job.done``: the thread finished (from the loop)."""
        self.bridge._running.discard(self)
        self.thread_done.set()

    def _ensure_sender(self) -> None:
        if self.sender is None and not self.aborted and not self.finished:
            self.sender_done = self.backend.event()
            self.sender = self.backend.spawn(self._sender)
            # The whole body was read, so the next message is http.disconnect: the client
            # left, and the application's iteration should stop.
            self.watcher = self.backend.spawn(self._watch_disconnect)

    async def _watch_disconnect(self) -> None:
        try:
            message = await self.receive()
        except Exception:
            return
        if message["type"] != "http.disconnect":
            return  # nothing else can follow a complete request body
        with self.lock:
            if self.finished and not self.chunks:
                return
            self._abort_locked()
        if self.wake is not None:
            self.wake.set()

    def _on_wake(self) -> None:
        self._ensure_sender()
        if self.wake is not None:
            self.wake.set()

    async def _sender(self) -> None:
        try:
            while True:
                with self.lock:
                    if self.finished and not self.headers_sent:
                        return  # run() sends the whole response, with a Content-Length
                    chunks = self.chunks
                    size = self.buffered
                    finished = self.finished
                    aborted = self.aborted
                    if chunks:
                        self.chunks = []
                    elif not finished and not aborted:
                        self.notified = False
                        self.wake = self.backend.event()
                if aborted:
                    return
                if chunks:
                    if not self.headers_sent:
                        await self._send_start()
                    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                    await self.send({"type": "http.response.body", "body": body, "more_body": True})
                    with self.lock:
                        self.buffered -= size
                        if self.space is not None and self.buffered <= LOW_WATER:
                            self.space.notify_all()
                    continue
                if finished:
                    return
                assert self.wake is not None
                await self.wake.wait()
        except Exception:
            # The client went away (or send refused): stop the application's iteration.
            with self.lock:
                self._abort_locked()
        finally:
            assert self.sender_done is not None
            self.sender_done.set()

    async def _send_start(self) -> None:
        with self.lock:
            status = self.status
            headers = self.headers
            self.headers_sent = True
        if status is None:
            raise RuntimeError("WSGI application produced a body before calling start_response")
        await self.send({"type": "http.response.start", "status": status, "headers": headers})

    def _abort_locked(self) -> None:
        self.aborted = True
        if self.space is not None:
            self.space.notify_all()

    # -- thread side --------------------------------------------------------------------------

    def run(self) -> None:
        """The pool's ``Job.run``: the application, in the request's context."""
        try:
            self.context.run(self._call_app)
        except BaseException as exc:  # (for the loop: ``done`` hands it over)
            self.error = exc
        # Done: the sweep must not start streaming while the loop has yet to hear of it
        # (a loop busy with other connections may take longer than STREAM_AFTER).
        self.started_at = None

    def _call_app(self) -> None:
        self.started_at = time.monotonic()
        try:
            environ = build_environ(self.scope, self.body, None, self.bridge.header_map)
        except InvalidPathError:
            self._answer(404, b"Not Found\n")
            return
        except UnderscoreHeaderError:
            self._answer(400, b"Header names with underscores are refused.\n")
            return
        result: Iterable[bytes] = self.bridge.app(environ, self.start_response)
        if type(result) in (list, tuple) and self.status is not None:
            # The whole body is known: hand it over at once, without waking the sender,
            # so that run() can send it with a Content-Length. (A list or tuple itself has
            # no close() to call.)
            self._push_all(result)  # type: ignore[arg-type]
            return
        try:
            for chunk in result:
                if chunk:
                    self._push(chunk)
                if self.aborted:
                    break
            if self.status is None:
                raise WSGIResponseError("WSGI application did not call start_response")
        finally:
            close: Callable[[], object] | None = getattr(result, "close", None)
            if close is not None:
                close()

    def _answer(self, status: int, body: bytes) -> None:
        """The server's own response, instead of calling the application."""
        self.status = status
        self.headers = [(b"content-type", b"text/plain; charset=utf-8")]
        self._push(body)

    def start_response(
        self,
        status: str,
        headers: list[tuple[str, str]],
        exc_info: ExcInfo | None = None,
    ) -> Callable[[bytes], None]:
        """PEP 3333 ``start_response``; validates the status line and headers."""
        if exc_info is not None:
            try:
                if self.committed:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None  # break the frame <-> traceback cycle
        elif self.status is not None:
            raise WSGIResponseError("start_response called a second time without exc_info")
        code = parse_status(status)
        encoded, framed = encode_response_head(headers)
        with self.lock:
            self.status = code
            self.headers = encoded
            self.framed = framed
        return self._write

    def _write(self, data: object) -> None:
        """The legacy ``write`` callable start_response returns."""
        if data:
            self._push(data)

    def _push_all(self, chunks: list[object] | tuple[object, ...]) -> None:
        if len(chunks) == 1 and type(chunks[0]) is bytes:  # (the usual ``[body]``)
            body: bytes = chunks[0]
            if not body:
                return
        else:
            parts: list[bytes] = []
            for chunk in chunks:
                if not isinstance(chunk, bytes):
                    if not isinstance(chunk, (bytearray, memoryview)):
                        raise TypeError(
                            f"WSGI application must produce bytes, got {type(chunk).__name__}"
                        )
                    chunk = bytes(chunk)
                if chunk:
                    parts.append(chunk)
            if not parts:
                return
            body = parts[0] if len(parts) == 1 else b"".join(parts)
        self.committed = True
        with self.lock:
            if self.aborted:
                return
            self.chunks.append(body)
            self.buffered += len(body)
        # No wake-up: the thread returns right after this and run() takes over.

    def _push(self, chunk: object) -> None:
        if not isinstance(chunk, bytes):
            if isinstance(chunk, (bytearray, memoryview)):
                chunk = bytes(chunk)
            else:
                raise TypeError(f"WSGI application must produce bytes, got {type(chunk).__name__}")
        if self.status is None:
            raise WSGIResponseError("WSGI application produced a body before start_response")
        self.committed = True
        notify = False
        with self.lock:
            if self.aborted:
                return
            self.chunks.append(chunk)
            self.buffered += len(chunk)
            if self.buffered > HIGH_WATER and not self.streaming:
                self.streaming = True
            if self.streaming and not self.notified:
                self.notified = True
                notify = True
        if notify:
            self.backend.call_soon_threadsafe(self._on_wake)
        if self.buffered > HIGH_WATER:
            with self.lock:
                if self.space is None:
                    self.space = threading.Condition(self.lock)
                while self.buffered > LOW_WATER and not self.aborted:
                    self.space.wait()
