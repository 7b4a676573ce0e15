"""Listening sockets: created once by the arbiter (or by serve() in-process) and inherited.

Sources, first match wins:

1. ``HYPERCORN_FDS`` (with ``HYPERCORN_FDS_PID`` equal to our pid): the listeners of the
   master that re-executed us on SIGUSR2, per slot. The port never closes during an upgrade.
2. systemd socket activation: ``LISTEN_FDS`` / ``LISTEN_PID`` / ``LISTEN_FDNAMES``. The
   configured binds are then ignored, as in gunicorn.
3. The configured binds: ``host:port`` (IPv4, ``[v6]:port``, upstream's unbracketed
   ``::1:8000``), ``unix:path`` (umask, user, group) and ``fd://N``.

Every failure to bind is a ``BootError`` whose one-line message names the address. This
module only imports the standard library so that ``import hypercorn.config`` stays cheap.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from hypercorn.errors import BootError

if TYPE_CHECKING:
    from hypercorn.config import Config

__all__ = [
    "Listeners",
    "Sockets",
    "adopt_fd",
    "all_sockets",
    "close_sockets",
    "create_listeners",
    "create_sockets",
    "describe",
    "quic_slot_clone",
    "reuse_port_clone",
    "running_messages",
    "split_host_port",
]

Kind = Literal["secure", "insecure", "quic"]
KINDS: tuple[Kind, ...] = ("secure", "insecure", "quic")

#: How a re-executed master (SIGUSR2) finds its parent's listeners.
FDS_ENV = "HYPERCORN_FDS"
FDS_PID_ENV = "HYPERCORN_FDS_PID"


@dataclass
class Sockets:
    """The listeners a worker serves; upstream Hypercorn's ``hypercorn.config.Sockets``."""

    secure_sockets: list[socket.socket] = field(default_factory=list)
    insecure_sockets: list[socket.socket] = field(default_factory=list)
    quic_sockets: list[socket.socket] = field(default_factory=list)

    def of_kind(self, kind: Kind) -> list[socket.socket]:
        if kind == "secure":
            return self.secure_sockets
        if kind == "insecure":
            return self.insecure_sockets
        return self.quic_sockets


@dataclass
class Listeners:
    """What the arbiter holds: slot 0's sockets plus, with ``reuse_port`` or after an upgrade,
    other slots' own SO_REUSEPORT sockets. ``unix_paths`` are files we created (and remove).

    ``retirable`` holds the ids of the per-slot TCP sockets this server bound itself with
    SO_REUSEPORT (never systemd's or an ``fd://`` one): a slot that has no live worker
    swaps them for bound, not yet listening twins (``retire``), so the kernel stops
    handing that slot connections; its next worker listens once it is ready.
    """

    base: Sockets
    slots: dict[int, Sockets] = field(default_factory=dict)
    unix_paths: list[str] = field(default_factory=list)
    source: Literal["bind", "systemd", "upgrade"] = "bind"
    retirable: set[int] = field(default_factory=set)

    def for_slot(self, slot: int) -> Sockets | None:
        return self.base if slot == 0 else self.slots.get(slot)

    def retire(self, slot: int, backlog: int) -> None:
        """Swap the slot's retirable sockets for twins that are bound but not listening."""
        sockets = self.for_slot(slot)
        if sockets is None:
            return
        for kind in KINDS:
            listed = sockets.of_kind(kind)
            for index, sock in enumerate(listed):
                if id(sock) not in self.retirable or sock.fileno() < 0:
                    continue
                twin = _clone_one(sock, backlog, listen=False)
                self.retirable.discard(id(sock))
                self.retirable.add(id(twin))
                listed[index] = twin
                # The last copy closes when the slot's old worker is gone: the socket then
                # leaves the SO_REUSEPORT group (net.ipv4.tcp_migrate_req=1 lets the kernel
                # move what it had queued to the other workers' sockets).
                sock.close()


def all_sockets(sockets: Sockets) -> Iterator[socket.socket]:
    yield from sockets.secure_sockets
    yield from sockets.insecure_sockets
    yield from sockets.quic_sockets


def close_sockets(sockets: Sockets) -> None:
    for sock in all_sockets(sockets):
        sock.close()


def create_sockets(config: Config) -> Sockets:
    """Bind (or inherit) the configured listeners; see the module docstring for the order."""
    listeners = create_listeners(config)
    for extra in listeners.slots.values():
        for sock in all_sockets(extra):
            if all(sock is not base for base in all_sockets(listeners.base)):
                sock.close()
    return listeners.base


def create_listeners(config: Config) -> Listeners:
    """Like ``create_sockets`` but keeps the per-slot sockets an upgrade handed over."""
    inherited = _from_upgrade_env()
    if inherited is not None:
        return inherited
    activated = _from_systemd(config)
    if activated is not None:
        return activated
    listeners = Listeners(base=Sockets())
    if config.ssl_enabled:
        plan: list[tuple[Kind, list[str]]] = [
            ("secure", config.bind),
            ("insecure", config.insecure_bind),
            ("quic", config.quic_bind),
        ]
    else:
        plan = [("insecure", config.bind)]
    try:
        for kind, binds in plan:
            for bind in binds:
                sock = _bind_one(config, bind, kind, listeners.unix_paths)
                listeners.base.of_kind(kind).append(sock)
                ours = not bind.startswith(("fd://", "unix:"))
                if config.reuse_port and ours and sock.type == socket.SOCK_STREAM:
                    listeners.retirable.add(id(sock))
    except BaseException:
        close_sockets(listeners.base)
        raise
    return listeners


# ------------------------------------------------------------------------------ binding


def _bind_one(config: Config, bind: str, kind: Kind, unix_paths: list[str]) -> socket.socket:
    type_ = socket.SOCK_DGRAM if kind == "quic" else socket.SOCK_STREAM
    if bind.startswith("fd://"):
        return adopt_fd(bind, type_, config.backlog)
    if bind.startswith("unix:"):
        return _bind_unix(config, bind, type_, unix_paths)
    host, port = split_host_port(bind)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, type_)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if config.reuse_port:
            _set_reuse_port(sock, bind)
        elif (config.workers > 1 or kind == "quic") and hasattr(socket, "SO_REUSEPORT"):
            # Upstream's rule: another instance may bind the same port (blue/green switch).
            # A QUIC socket always: each worker slot reads a twin of its own (quic_slot_clone).
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        _listen(sock, config.backlog, type_)
    except OSError as exc:
        sock.close()
        raise BootError(f"cannot bind to {bind}: {_explain(exc)}") from None
    sock.setblocking(False)
    return sock


def split_host_port(bind: str) -> tuple[str, int]:
    """``(host, port)`` of a TCP/UDP bind; the port defaults to 8000.

    Spellings: ``host``, ``host:port``, ``[v6]``, ``[v6]:port``, and upstream's unbracketed
    IPv6 forms, where the port is what follows the last colon when what precedes it is an
    IPv6 address (``:::8000``, ``::1:8000``); otherwise an unbracketed IPv6 address is the
    whole host (``::1``, ``fe80::1``).
    """
    text = bind
    if text.startswith("["):  # [v6]:port or [v6]
        host, _, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    elif ":" in text:  # unbracketed IPv6, with or without a port
        head, _, tail = text.rpartition(":")
        if tail.isdigit() and _is_ipv6(head):
            host, port_text = head, tail
        else:
            host, port_text = text, ""
    else:
        host, port_text = text, ""
    if not port_text:
        return host, 8000
    try:
        port = int(port_text)
    except ValueError:
        raise BootError(f"cannot bind to {bind}: {port_text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise BootError(f"cannot bind to {bind}: port {port} is out of range")
    return host, port


def _is_ipv6(text: str) -> bool:
    try:
        socket.inet_pton(socket.AF_INET6, text.partition("%")[0])
    except (OSError, ValueError):
        return False
    return True


def adopt_fd(bind: str, type_: int, backlog: int) -> socket.socket:
    """The socket ``fd://N`` names, checked to be of ``type_`` (a stream one listening)."""
    try:
        sock = socket.socket(fileno=int(bind[5:]))
    except (OSError, ValueError) as exc:
        detail = _explain(exc) if isinstance(exc, OSError) else "not a file descriptor"
        raise BootError(f"cannot use {bind}: {detail}") from None
    actual = sock.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE)
    if actual != type_:
        sock.detach()
        wanted = "stream (TCP)" if type_ == socket.SOCK_STREAM else "datagram (UDP)"
        raise BootError(f"cannot use {bind}: expected a {wanted} socket")
    if type_ == socket.SOCK_STREAM:
        try:
            # Already listening is fine; a bound-but-idle socket starts listening here.
            sock.listen(backlog)
        except OSError as exc:
            sock.detach()
            raise BootError(f"cannot use {bind}: {_explain(exc)}") from None
    sock.setblocking(False)
    return sock


def _bind_unix(config: Config, bind: str, type_: int, unix_paths: list[str]) -> socket.socket:
    path = bind[5:]
    _remove_stale_unix_socket(bind, path)
    sock = socket.socket(socket.AF_UNIX, type_)
    previous_umask = os.umask(config.umask) if config.umask is not None else None
    try:
        sock.bind(path)
    except OSError as exc:
        sock.close()
        raise BootError(f"cannot bind to {bind}: {_explain(exc)}") from None
    finally:
        if previous_umask is not None:
            os.umask(previous_umask)
    unix_paths.append(path)
    try:
        if config.user is not None and config.group is not None:  # both, as upstream
            os.chown(path, config.user, config.group)
        _listen(sock, config.backlog, type_)
    except OSError as exc:
        sock.close()
        raise BootError(f"cannot bind to {bind}: {_explain(exc)}") from None
    sock.setblocking(False)
    return sock


def _remove_stale_unix_socket(bind: str, path: str) -> None:
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise BootError(f"cannot bind to {bind}: {_explain(exc)}") from None
    if not stat.S_ISSOCK(mode):
        raise BootError(f"cannot bind to {bind}: the path exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        # Nobody answers: a leftover from a previous run.
        os.unlink(path)
    else:
        raise BootError(f"cannot bind to {bind}: address already in use")
    finally:
        probe.close()


def _set_reuse_port(sock: socket.socket, bind: str) -> None:
    option = getattr(socket, "SO_REUSEPORT", None)
    if option is None:
        raise BootError(f"cannot bind to {bind}: SO_REUSEPORT is not supported here")
    sock.setsockopt(socket.SOL_SOCKET, option, 1)


def _listen(sock: socket.socket, backlog: int, type_: int) -> None:
    if type_ == socket.SOCK_STREAM:
        sock.listen(backlog)


_REASONS = {
    errno.EADDRINUSE: "address already in use",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EADDRNOTAVAIL: "address not available on this host",
    errno.ENOENT: "no such file or directory",
    errno.ENOTDIR: "a parent path is not a directory",
    errno.EBADF: "not an open file descriptor",
    errno.ENOTSOCK: "not a socket",
    errno.EAFNOSUPPORT: "address family not supported",
}


def _explain(exc: OSError) -> str:
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host ({exc.strerror})"
    if exc.errno in _REASONS:
        return _REASONS[exc.errno]
    return exc.strerror or str(exc)


# ------------------------------------------------------------------------------ SO_REUSEPORT


def reuse_port_clone(sockets: Sockets, backlog: int, *, listen: bool = True) -> Sockets:
    """A new set for another worker slot: each SO_REUSEPORT inet socket gets a twin bound to
    the same address; sockets that cannot be cloned (unix, fd://, systemd) are shared.
    ``listen=False`` leaves the stream twins bound only: the kernel hands a socket
    connections once it listens, which its worker does when ready (``serve``)."""
    clone = Sockets()
    for kind in KINDS:
        for sock in sockets.of_kind(kind):
            clone.of_kind(kind).append(_clone_one(sock, backlog, listen=listen))
    return clone


def quic_slot_clone(sockets: Sockets) -> Sockets:
    """Another worker slot's set without ``reuse_port``: the stream listeners shared, and a
    SO_REUSEPORT twin of each QUIC socket. A QUIC connection's datagrams must all reach the
    worker holding it: the kernel keeps each client address on one socket of the group (as
    long as the group does not change), so each slot reads its own socket, kept for the
    life of the slot and inherited by its next worker."""
    return Sockets(
        secure_sockets=list(sockets.secure_sockets),
        insecure_sockets=list(sockets.insecure_sockets),
        quic_sockets=[_clone_one(sock, 0) for sock in sockets.quic_sockets],
    )


def _clone_one(sock: socket.socket, backlog: int, *, listen: bool = True) -> socket.socket:
    option = getattr(socket, "SO_REUSEPORT", None)
    if (
        option is None
        or sock.family not in (socket.AF_INET, socket.AF_INET6)
        or not sock.getsockopt(socket.SOL_SOCKET, option)
    ):
        return sock
    twin = socket.socket(sock.family, sock.type)
    try:
        twin.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        twin.setsockopt(socket.SOL_SOCKET, option, 1)
        twin.bind(sock.getsockname()[:2])
        if listen:
            _listen(twin, backlog, sock.type)
    except OSError as exc:
        twin.close()
        raise BootError(
            f"cannot bind another SO_REUSEPORT listener on {describe(sock)}: {_explain(exc)}"
        ) from None
    twin.setblocking(False)
    return twin


# ------------------------------------------------------------------------------ inheritance


def upgrade_env(
    listeners: dict[int, Sockets], retirable: set[int] | None = None
) -> tuple[str, list[int]]:
    """``HYPERCORN_FDS`` for a re-executed master, and the fds it must inherit. Entries are
    ``kind:slot:fd``, with ``:r`` for a socket the new master may retire too."""
    entries: list[str] = []
    fds: list[int] = []
    for slot, sockets in sorted(listeners.items()):
        for kind in KINDS:
            for sock in sockets.of_kind(kind):
                flag = ":r" if retirable and id(sock) in retirable else ""
                entries.append(f"{kind}:{slot}:{sock.fileno()}{flag}")
                fds.append(sock.fileno())
    return ",".join(entries), fds


def _from_upgrade_env() -> Listeners | None:
    value = os.environ.get(FDS_ENV)
    if value is None or os.environ.get(FDS_PID_ENV) != str(os.getpid()):
        return None
    listeners = Listeners(base=Sockets(), source="upgrade")
    adopted: dict[int, socket.socket] = {}
    for entry in filter(None, value.split(",")):
        kind_text, slot_text, fd_text, *flags = entry.split(":")
        if kind_text not in KINDS:
            continue
        kind: Kind = kind_text
        fd = int(fd_text)
        if fd not in adopted:  # several slots may share one socket
            adopted[fd] = socket.socket(fileno=fd)
            adopted[fd].setblocking(False)
        if "r" in flags:
            listeners.retirable.add(id(adopted[fd]))
        slot = int(slot_text)
        target = listeners.base if slot == 0 else listeners.slots.setdefault(slot, Sockets())
        target.of_kind(kind).append(adopted[fd])
    for sock in adopted.values():
        if sock.family == socket.AF_UNIX:
            name = sock.getsockname()
            if isinstance(name, str) and name:
                listeners.unix_paths.append(name)
    for name in (FDS_ENV, FDS_PID_ENV):
        os.environ.pop(name, None)
    return listeners


def _from_systemd(config: Config) -> Listeners | None:
    from hypercorn.arbiter.systemd import listen_fds

    activated = listen_fds()
    if activated is None:
        return None
    listeners = Listeners(base=Sockets(), source="systemd")
    for fd, name in activated:
        sock = socket.socket(fileno=fd)
        sock.setblocking(False)
        kind: Kind
        if sock.type == socket.SOCK_DGRAM:
            kind = "quic"
        elif name.lower() in ("insecure", "http"):
            kind = "insecure"
        elif name.lower() in ("secure", "https", "tls"):
            kind = "secure"
        else:
            kind = "secure" if config.ssl_enabled else "insecure"
        listeners.base.of_kind(kind).append(sock)
    return listeners


def describe(sock: socket.socket) -> str:
    """``127.0.0.1:8000``, ``[::1]:8000`` or ``unix:/run/app.sock`` for log lines."""
    try:
        name = sock.getsockname()
    except OSError:
        return f"fd {sock.fileno()}"
    if isinstance(name, str):
        return f"unix:{name}" if name else "unix:(unnamed)"
    if isinstance(name, bytes):
        return f"unix:{name!r}"
    host, port = name[0], name[1]
    return f"[{host}]:{port}" if sock.family == socket.AF_INET6 else f"{host}:{port}"


def running_messages(sockets: Sockets) -> list[str]:
    """Upstream's startup lines, one per listener: ``Running on http://127.0.0.1:8000 (CTRL +
    C to quit)``; scripts and tests wait for them."""
    plan: tuple[tuple[Kind, str, str], ...] = (
        ("secure", "https", ""),
        ("insecure", "http", ""),
        ("quic", "https", " (QUIC)"),
    )
    return [
        f"Running on {scheme}://{describe(sock)}{suffix} (CTRL + C to quit)"
        for kind, scheme, suffix in plan
        for sock in sockets.of_kind(kind)
    ]


def describe_all(sockets: Iterable[socket.socket]) -> list[str]:
    return [describe(sock) for sock in sockets]
