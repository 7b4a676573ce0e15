"""Listening sockets: created once by the arbiter (or by serve() in-process) and inherited."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field


@dataclass
class Sockets:
    """The listeners a worker serves; upstream Hypercorn's ``hypercorn.config.Sockets``."""

    secure_sockets: list[socket.socket] = field(default_factory=list)
    insecure_sockets: list[socket.socket] = field(default_factory=list)
    quic_sockets: list[socket.socket] = field(default_factory=list)
