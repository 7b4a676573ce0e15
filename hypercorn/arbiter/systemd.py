"""systemd integration without libsystemd: ``sd_notify`` and socket activation.

``notify("READY=1")`` sends one datagram to ``$NOTIFY_SOCKET`` (a path, or ``@name`` for the
abstract namespace). ``listen_fds()`` returns the sockets systemd passed us when
``LISTEN_PID`` names this very process (so forked workers and the app's subprocesses never
mistake them for their own).
"""

from __future__ import annotations

import os
import socket
import time

__all__ = ["listen_fds", "notify"]

SD_LISTEN_FDS_START = 3


def _address(value: str) -> str | None:
    if value.startswith("@"):
        return "\0" + value[1:]  # abstract namespace
    if value.startswith("/"):
        return value
    return None  # vsock: and friends are not supported


def notify(message: str) -> bool:
    """Send ``message`` (``KEY=value`` lines) to systemd; False when not under systemd or the
    send failed. ``RELOADING=1`` gets the ``MONOTONIC_USEC`` that ``Type=notify-reload``
    requires."""
    value = os.environ.get("NOTIFY_SOCKET")
    if not value:
        return False
    address = _address(value)
    if address is None:
        return False
    if "RELOADING=1" in message.split("\n"):
        message += f"\nMONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}"
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(message.encode("utf-8"), address)
    except OSError:
        return False
    return True


def listen_fds() -> list[tuple[int, str]] | None:
    """``[(fd, name), ...]`` from ``LISTEN_FDS``/``LISTEN_FDNAMES``, or None when systemd did
    not activate this process. The fds are made close-on-exec, as ``sd_listen_fds`` does."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return None
    try:
        count = int(os.environ.get("LISTEN_FDS", ""))
    except ValueError:
        return None
    if count <= 0:
        return None
    names = os.environ.get("LISTEN_FDNAMES", "").split(":")
    result: list[tuple[int, str]] = []
    for index in range(count):
        fd = SD_LISTEN_FDS_START + index
        os.set_inheritable(fd, False)
        result.append((fd, names[index] if index < len(names) else "unknown"))
    return result
