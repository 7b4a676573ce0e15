"""ASGI lifespan: startup before serving, shutdown after draining (written once, on Backend).

The application's lifespan coroutine runs as one task for the worker's whole life. What
``startup()`` does with each outcome follows the ASGI lifespan spec and the ``lifespan``
setting (uvicorn's ``--lifespan auto|on|off``):

* ``lifespan.startup.complete``: serving starts; ``state`` holds what the app stored in
  ``scope["state"]`` and is shallow-copied into every request's scope by the driver.
* ``lifespan.startup.failed``, or no answer within ``startup_timeout``: ``LifespanFailure``
  with a one-line reason (``serve`` turns it into ``BootError``: one line on stderr, exit
  status 3). The same in every mode.
* Anything else: the app raises (before or after receiving ``lifespan.startup``), sends a
  message that is not a lifespan answer (an HTTP-only app's ``http.response.start``) or
  returns without answering. The spec says the server "must continue but not send any
  lifespan events": with ``lifespan = "auto"`` (the default) that is one warning line and
  serving continues without lifespan (``shutdown()`` does nothing); with ``"on"`` it is a
  ``LifespanFailure`` like an explicit failure.
* ``lifespan = "off"``: the app is never called with the lifespan scope.
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

#: Messages an application may send on the lifespan scope.
_ANSWERS = frozenset(
    {
        "lifespan.startup.complete",
        "lifespan.startup.failed",
        "lifespan.shutdown.complete",
        "lifespan.shutdown.failed",
    }
)


class LifespanFailure(Exception):
    """Lifespan startup failed; the message is one line meant for the operator."""


class _UnexpectedMessage(Exception):
    pass


class Lifespan:
    """Drive ``app``'s lifespan protocol with the mode and timeouts in ``config``."""

    def __init__(self, app: ASGIApp, config: Config, backend: Backend) -> None:
        self.app = app
        self.config = config
        self.backend = backend
        self.state: dict[str, Any] = {}
        self.supported = config.lifespan != "off"
        self._messages: deque[Message] = deque()
        self._message_ready: AsyncEvent | None = None
        self._received_startup = False
        self._startup_answered = backend.event()
        self._shutdown_answered = backend.event()
        self._startup_error: str | None = None
        self._shutdown_error: str | None = None
        #: Why the application does not speak lifespan (set before startup is answered).
        self._unsupported: str | None = None
        self._unsupported_error: BaseException | None = None
        self._task: TaskHandle | None = None
        self._finished = False

    @property
    def _logger(self) -> logging.Logger:
        logger = self.config.log.error_logger
        return logger if logger is not None else logging.getLogger("hypercorn.error")

    async def startup(self) -> None:
        """Run lifespan startup; raise ``LifespanFailure`` if it failed (see the module doc)."""
        if not self.supported:
            return
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
        if self._unsupported is not None:
            self._cancel()
            self._no_lifespan(self._unsupported, self._unsupported_error)

    def _no_lifespan(self, reason: str, error: BaseException | None) -> None:
        self.supported = False
        if self.config.lifespan == "on":
            if error is not None:
                self._logger.error("Lifespan startup failed", exc_info=error)
            raise LifespanFailure(
                f"lifespan startup failed: the application {reason} (lifespan is 'on')"
            )
        self._logger.warning(
            "The application does not support ASGI lifespan (it %s); serving without it "
            "(lifespan 'on' makes it required, 'off' skips it)",
            reason,
        )
        if error is not None:
            self._logger.debug("The application's lifespan error", exc_info=error)

    @property
    def will_shut_down(self) -> bool:
        """Whether ``shutdown()`` will send the app ``lifespan.shutdown`` (and wait)."""
        return self.supported and not self._finished and self._task is not None

    async def shutdown(self) -> None:
        """Run lifespan shutdown (a failure or timeout is logged, never raised)."""
        try:
            if not self.will_shut_down:
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
                self._unsupported = "returned without answering lifespan.startup"
        finally:
            self._finished = True
            self._startup_answered.set()
            self._shutdown_answered.set()

    def _app_raised(self, error: Exception) -> None:
        if self._startup_answered.is_set():
            if self._startup_error is None and self._unsupported is None:
                reason = _describe(error)
                self._logger.error("Lifespan errored: %s", reason, exc_info=error)
            # else: already reported (startup.failed, or the unexpected message it raised)
            return
        when = "after receiving" if self._received_startup else "before receiving"
        self._unsupported = f"raised {_describe(error)} {when} lifespan.startup"
        self._unsupported_error = error

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
        if kind not in _ANSWERS:
            if not self._startup_answered.is_set():
                self._unsupported = f"sent {kind!r} on the lifespan scope"
                self._startup_answered.set()
            raise _UnexpectedMessage(f"unexpected ASGI message {kind!r} on the lifespan scope")
        if self._unsupported is not None:
            return  # serving goes on without lifespan: nothing more counts
        if kind == "lifespan.startup.complete":
            self._startup_answered.set()
        elif kind == "lifespan.startup.failed":
            if self._startup_answered.is_set():
                return  # too late to fail a startup that completed
            self._startup_error = _failure("startup", message)
            if "\n" in str(message.get("message", "")):
                self._logger.error(
                    "Lifespan startup failed:\n%s", message["message"], extra={MULTILINE: True}
                )
            self._startup_answered.set()
        elif kind == "lifespan.shutdown.complete":
            self._shutdown_answered.set()
        else:
            self._shutdown_error = _failure("shutdown", message)
            self._shutdown_answered.set()

    def _put(self, message: Message) -> None:
        self._messages.append(message)
        if self._message_ready is not None:
            self._message_ready.set()

    def _cancel(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()


def _describe(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _failure(stage: str, message: Message) -> str:
    """One line from a ``lifespan.*.failed`` message (Starlette sends a whole traceback)."""
    lines = [line.strip() for line in str(message.get("message", "") or "").splitlines()]
    lines = [line for line in lines if line]
    if len(lines) > 1 and lines[0].startswith("Traceback"):
        text = lines[-1]
    else:
        text = " ".join(" ".join(lines).split())
    return f"lifespan {stage} failed: {text}" if text else f"lifespan {stage} failed"
