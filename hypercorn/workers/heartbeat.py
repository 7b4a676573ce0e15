"""Worker → arbiter channel: one pipe per worker carrying tiny framed messages.

Frames are one kind byte, except FAILED which carries a reason::

    b"R"                      READY     app loaded, lifespan started, listening
    b"B"                      BEAT      sent by a task inside the event loop
    b"S"                      STOPPING  a graceful stop began on the worker's own account
    b"X"                      RETIRE    max_requests reached: replace me (I keep serving)
    b"L"                      SHUTDOWN  drained; lifespan shutdown runs now
    b"F" + len(2, BE) + utf8  FAILED    one-line reason, sent just before a boot-failure exit
    b"M" + len(2, BE) + json  METRICS   cumulative request metrics (``metrics_bind``, statsd)

Every frame is far below PIPE_BUF, so writes are atomic. The worker's end is non-blocking: a
full pipe (a stuck master) drops beats rather than stalling the event loop, and a closed pipe
(the master died) tells the worker to stop, as does a changed parent pid.
"""

from __future__ import annotations

import contextlib
import enum
import os
import struct
from dataclasses import dataclass

__all__ = ["Message", "MessageDecoder", "MessageKind", "WorkerChannel", "encode"]

_MAX_REASON = 1024
#: A frame must stay within PIPE_BUF (4096 on Linux) to be written whole or not at all.
_MAX_PAYLOAD = 4000


class MessageKind(enum.Enum):
    READY = b"R"
    BEAT = b"B"
    STOPPING = b"S"
    RETIRE = b"X"
    SHUTDOWN = b"L"
    FAILED = b"F"
    METRICS = b"M"


@dataclass(frozen=True)
class Message:
    kind: MessageKind
    reason: str = ""
    data: bytes = b""


def encode(kind: MessageKind, reason: str = "", data: bytes = b"") -> bytes:
    tag: bytes = kind.value
    if kind is MessageKind.METRICS:
        return tag + struct.pack(">H", len(data)) + data
    if kind is not MessageKind.FAILED:
        return tag
    payload = reason.encode("utf-8", "replace")[:_MAX_REASON]
    return tag + struct.pack(">H", len(payload)) + payload


_WITH_PAYLOAD = (MessageKind.FAILED.value, MessageKind.METRICS.value)


class MessageDecoder:
    """Master side: feed raw pipe bytes, get whole messages; partial frames are kept."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> list[Message]:
        buffer = self._buffer + data
        messages: list[Message] = []
        index = 0
        while index < len(buffer):
            tag = buffer[index : index + 1]
            if tag in _WITH_PAYLOAD:
                if len(buffer) - index < 3:
                    break
                (length,) = struct.unpack(">H", buffer[index + 1 : index + 3])
                if len(buffer) - index < 3 + length:
                    break
                payload = buffer[index + 3 : index + 3 + length]
                if tag == MessageKind.METRICS.value:
                    messages.append(Message(MessageKind.METRICS, data=payload))
                else:
                    reason = payload.decode("utf-8", "replace")
                    messages.append(Message(MessageKind.FAILED, reason))
                index += 3 + length
                continue
            try:
                messages.append(Message(MessageKind(tag)))
            except ValueError:
                pass  # not ours: skip the byte rather than wedge the channel
            index += 1
        self._buffer = buffer[index:]
        return messages


class WorkerChannel:
    """Worker side of the pipe; its methods are the ``WorkerHooks`` callbacks."""

    def __init__(self, fd: int, master_pid: int) -> None:
        self._fd: int | None = fd
        self._master_pid = master_pid
        os.set_blocking(fd, False)

    def master_alive(self) -> bool:
        return self._fd is not None and os.getppid() == self._master_pid

    def ready(self) -> None:
        self._write(encode(MessageKind.READY))

    def beat(self) -> bool:
        """Send a heartbeat; False (meaning "stop gracefully") once the master is gone."""
        if not self.master_alive():
            return False
        return self._write(encode(MessageKind.BEAT))

    def stopping(self) -> None:
        self._write(encode(MessageKind.STOPPING))

    def retire(self) -> None:
        self._write(encode(MessageKind.RETIRE))

    def shutting_down(self) -> None:
        self._write(encode(MessageKind.SHUTDOWN))

    def metrics(self, data: bytes) -> None:
        """A metrics report; one too large for an atomic write is not sent (its successor,
        cumulative like it, makes up for a lost one)."""
        if len(data) <= _MAX_PAYLOAD:
            self._write(encode(MessageKind.METRICS, data=data))

    def failed(self, reason: str) -> None:
        self._write(encode(MessageKind.FAILED, " ".join(reason.split())))

    def _write(self, frame: bytes) -> bool:
        if self._fd is None:
            return False
        try:
            os.write(self._fd, frame)
        except BlockingIOError:
            return True  # the master is busy; a dropped beat is harmless
        except OSError:  # EPIPE: nobody reads any more
            self.close()
            return False
        return True

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
