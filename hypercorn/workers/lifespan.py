"""ASGI lifespan: startup before serving, shutdown after draining (written once, on Backend).

The application's lifespan coroutine runs as one task for the worker's whole life. Outcomes
of ``startup()``:

* ``lifespan.startup.complete``: serving starts; ``state`` holds what the app stored in
  ``scope["state"]`` and is shallow-copied into every request's scope by the driver.
* ``lifespan.startup.failed`` or an exception after the app received ``lifespan.startup``,
  or no answer within ``startup_timeout``: ``LifespanFailure`` with a one-line reason
  (``serve`` turns it into ``BootError``: one line on stderr, exit status 3).
* The app raises before it received anything, or returns without answering: it does not
  speak lifespan (Django, many WSGI adapters). Logged at debug level; serving continues
  and ``shutdown()`` does nothing.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import TYPE_CHECKING, Any

from hypercorn.logging import MULTILINE
from hypercorn.typing import ASGIApp, Message

if TYPE_CHECKING:
    from hypercorn.config import Config
    from hypercorn.workers.backend import AsyncEvent, Backend, TaskHandle

__all__ = ["Lifespan", "LifespanFailure"]


class LifespanFailure(Exception):
    """Lifespan startup failed; the message is one line meant for the operator."""


class _UnexpectedMessage(Exception):
    pass


class Lifespan:
    """Drive ``app``'s lifespan protocol with the timeouts in ``config``."""

    def __init__(self, app: ASGIApp, config: Config, backend: Backend) -> None:
        self.app = app
        self.config = config
        self.backend = backend
        self.state: dict[str, Any] = {}
        self.supported = True
        self._messages: deque[Message] = deque()
        self._message_ready: AsyncEvent | None = None
        self._received_startup = False
        self._startup_answered = backend.event()
        self._shutdown_answered = backend.event()
        self._startup_error: str | None = None
        self._shutdown_error: str | None = None
        self._task: TaskHandle | None = None
        self._finished = False

    @property
    def _logger(self) -> logging.Logger:
        logger = self.config.log.error_logger
        return logger if logger is not None else logging.getLogger("hypercorn.error")

    async def startup(self) -> None:
        """Run lifespan startup; raise ``LifespanFailure`` if the application reports failure."""
        self._put({"type": "lifespan.startup"})
        self._task = self.backend.spawn(self._run)
        timeout = self.config.startup_timeout
        if not await self.backend.wait_event(self._startup_answered, timeout):
            self._cancel()
            raise LifespanFailure(
                f"lifespan startup did not complete within startup_timeout ({timeout:g}s)"
            )
        if self._startup_error is not None:
            self._cancel()
            raise LifespanFailure(self._startup_error)

    async def shutdown(self) -> None:
        """Run lifespan shutdown (a failure or timeout is logged, never raised)."""
        try:
            if not self.supported or self._finished or self._task is None:
                return
            self._put({"type": "lifespan.shutdown"})
            timeout = self.config.shutdown_timeout
            if not await self.backend.wait_event(self._shutdown_answered, timeout):
                self._logger.error(
                    "lifespan shutdown did not complete within shutdown_timeout (%gs)", timeout
                )
            elif self._shutdown_error is not None:
                self._logger.error("%s", self._shutdown_error)
        finally:
            self._cancel()

    # -- the application task -----------------------------------------------------------------

    async def _run(self) -> None:
        scope = {
            "type": "lifespan",
            "asgi": {"version": "3.0", "spec_version": "2.0"},
            "state": self.state,
        }
        try:
            await self.app(scope, self._receive, self._send)
        except Exception as error:
            self._app_raised(error)
        else:
            if not self._startup_answered.is_set():
                self.supported = False
                self._logger.debug(
                    "ASGI lifespan is not supported by the application (it returned without "
                    "answering lifespan.startup); continuing without it"
                )
        finally:
            self._finished = True
            self._startup_answered.set()
            self._shutdown_answered.set()

    def _app_raised(self, error: Exception) -> None:
        text = " ".join(str(error).split())
        reason = f"{type(error).__name__}: {text}" if text else type(error).__name__
        if not self._startup_answered.is_set():
            if self._received_startup and not isinstance(error, _UnexpectedMessage):
                self._startup_error = f"lifespan startup failed: the application raised {reason}"
                self._logger.error("Lifespan startup failed", exc_info=error)
            elif isinstance(error, _UnexpectedMessage):
                self._startup_error = f"lifespan startup failed: {reason}"
            else:
                self.supported = False
                self._logger.debug(
                    "ASGI lifespan is not supported by the application (%s); continuing without it",
                    reason,
                    exc_info=error,
                )
        elif self._startup_error is not None:
            pass  # the app reported startup.failed and then re-raised; already reported
        else:
            self._logger.error("Lifespan errored: %s", reason, exc_info=error)

    async def _receive(self) -> Message:
        while not self._messages:
            self._message_ready = self.backend.event()
            await self._message_ready.wait()
        message = self._messages.popleft()
        if message["type"] == "lifespan.startup":
            self._received_startup = True
        return message

    async def _send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "lifespan.startup.complete":
            self._startup_answered.set()
        elif kind == "lifespan.startup.failed":
            self._startup_error = _failure("startup", message)
            if "\n" in str(message.get("message", "")):
                self._logger.error(
                    "Lifespan startup failed:\n%s", message["message"], extra={MULTILINE: True}
                )
            self._startup_answered.set()
        elif kind == "lifespan.shutdown.complete":
            self._shutdown_answered.set()
        elif kind == "lifespan.shutdown.failed":
            self._shutdown_error = _failure("shutdown", message)
            self._shutdown_answered.set()
        else:
            raise _UnexpectedMessage(f"unexpected ASGI message {kind!r} on the lifespan scope")

    def _put(self, message: Message) -> None:
        self._messages.append(message)
        if self._message_ready is not None:
            self._message_ready.set()

    def _cancel(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()


def _failure(stage: str, message: Message) -> str:
    """One line from a ``lifespan.*.failed`` message (Starlette sends a whole traceback)."""
    lines = [line.strip() for line in str(message.get("message", "") or "").splitlines()]
    lines = [line for line in lines if line]
    if len(lines) > 1 and lines[0].startswith("Traceback"):
        text = lines[-1]
    else:
        text = " ".join(" ".join(lines).split())
    return f"lifespan {stage} failed: {text}" if text else f"lifespan {stage} failed"
