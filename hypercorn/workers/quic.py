"""HTTP/3 in a worker: a QUIC endpoint per UDP socket, a driver per QUIC connection.

Written once, against the backend contract (``Backend.open_datagrams``): nothing here knows
asyncio or trio. For each ``quic_bind`` socket a ``QuicServer`` feeds the socket's
datagrams to its ``QuicEndpoint`` (``protocols/quic.py``). Each QUIC connection the endpoint
accepts gets an ``Http3Connection`` core run by an ordinary ``ConnectionDriver`` (the same
apps, timers, back-pressure and shutdown as a TCP connection); a ``QuicLink`` stands in for
the driver's transport:

* the core sends its datagrams through the endpoint, so the link's ``write`` is never used;
* the apps' back-pressure is the UDP socket's (``writing_paused`` / ``drain``), on top of
  the per-stream waiting the core does itself;
* ``close`` / ``abort`` (the core's connection ended, or the worker gave up waiting) tell
  the driver its connection is lost, from the loop, as a transport would.

The retry-token key is derived from the TLS key file (``retry_key``): every worker of the
server has the same one, so a token issued by a worker is good at its replacement.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from aioquic.h3.connection import H3_ALPN
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection

from hypercorn.errors import BootError
from hypercorn.protocols.http3 import Http3Connection
from hypercorn.protocols.quic import Address, QuicEndpoint, RetryTokens, retry_key
from hypercorn.workers.backend import (
    ConnectionInfo,
    TransportClosed,
    joined_writelines,
    peer_address,
)
from hypercorn.workers.driver import ConnectionDriver, _AppStream, _AppWsStream

if TYPE_CHECKING:
    import socket
    from collections.abc import Callable

    from hypercorn.config import Config
    from hypercorn.workers.backend import Backend, DatagramTransport
    from hypercorn.workers.driver import WorkerContext

_logger = logging.getLogger("hypercorn.error")

#: The ``tls`` scope extension of an HTTP/3 request (QUIC is always TLS 1.3).
_TLS_INFO: dict[str, Any] = {
    "server_cert": None,
    "client_cert_chain": [],
    "client_cert_name": None,
    "client_cert_error": None,
    "tls_version": 0x0304,
    "cipher_suite": None,
}


def quic_configuration(config: Config) -> QuicConfiguration:
    """aioquic's server configuration: the TLS settings' certificate, ALPN ``h3``."""
    assert config.certfile is not None
    configuration = QuicConfiguration(alpn_protocols=list(H3_ALPN), is_client=False)
    try:
        configuration.load_cert_chain(
            config.certfile, config.keyfile, config.keyfile_password or None
        )
    except (OSError, ValueError) as exc:
        raise BootError(f"quic_bind: cannot load the certificate for HTTP/3: {exc}") from None
    return configuration


def retry_tokens(config: Config) -> RetryTokens | None:
    if not config.quic_retry:
        return None
    path = config.keyfile or config.certfile
    assert path is not None
    with open(path, "rb") as key_file:
        return RetryTokens(retry_key(key_file.read()))


async def open_quic(
    ctx: WorkerContext, config: Config, backend: Backend, socks: Sequence[socket.socket]
) -> list[QuicServer]:
    """A serving ``QuicServer`` for each of ``socks`` (none without ``quic_bind``)."""
    if not socks:
        return []
    configuration = quic_configuration(config)
    retry = retry_tokens(config)
    servers = []
    for sock in socks:
        server = QuicServer(ctx, configuration, retry, config.max_connections)
        await backend.open_datagrams(sock, server.attach)
        servers.append(server)
    return servers


class QuicServer:
    """One UDP socket's QUIC endpoint, and the drivers of its connections."""

    def __init__(
        self,
        ctx: WorkerContext,
        configuration: QuicConfiguration,
        retry: RetryTokens | None,
        max_connections: int | None,
    ) -> None:
        self._ctx = ctx
        self._configuration = configuration
        self._retry = retry
        self._max_connections = max_connections
        self._now = ctx.backend.now
        self.transport: DatagramTransport | None = None
        self.endpoint: QuicEndpoint | None = None
        self._server: tuple[str, int | None] | None = None

    def attach(self, transport: DatagramTransport) -> QuicServer:
        """The backend's ``OnDatagrams``."""
        self.transport = transport
        self._server = peer_address(transport.local_address)
        self.endpoint = QuicEndpoint(
            configuration=self._configuration,
            send=transport.sendto,
            accept=self._accept,
            retry=self._retry,
            max_connections=self._max_connections,
        )
        return self

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        assert self.endpoint is not None
        self.endpoint.datagram_received(data, addr, self._now())

    def _accept(self, quic: QuicConnection, addr: Address, now: float) -> QuicLink:
        endpoint = self.endpoint
        assert endpoint is not None
        client = peer_address(addr)
        link = QuicLink(
            self,
            ConnectionInfo(
                client=client, server=self._server, ssl=True, alpn_protocol="h3", tls=_TLS_INFO
            ),
        )
        ctx = self._ctx

        def core(driver: ConnectionDriver) -> Http3Connection:
            return Http3Connection(
                quic=quic,
                routes=endpoint,
                route=link,
                sink=driver,
                limits=ctx.limits,
                dates=ctx.dates,
                client=client,
                server=self._server,
                tls=_TLS_INFO,
                state=ctx.state,
                now=now,
                stream_class=_AppStream,
                ws_stream_class=_AppWsStream,
            )

        link.attach(ConnectionDriver(ctx, link, core))
        return link

    def stop_accepting(self) -> None:
        """New connections are refused; the open ones are served until they end, and the
        socket is let go as soon as none is left (``connection_ended``)."""
        if self.endpoint is not None:
            self.endpoint.stop_accepting()
        self.connection_ended()

    def connection_ended(self) -> None:
        """A connection ended: once stopping with none left, stop reading the socket. In a
        rolling restart the replacement worker reads the same socket (the slot's): every
        datagram this worker still reads is one the replacement does not get."""
        endpoint = self.endpoint
        if endpoint is not None and not endpoint.accepting and not endpoint.connections:
            self.close()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class QuicLink:
    """One QUIC connection: the endpoint's route to its core, the driver's transport."""

    __slots__ = ("_backend", "_core", "_driver", "_server", "info", "is_closing")

    def __init__(self, server: QuicServer, info: ConnectionInfo) -> None:
        self._server = server
        self._backend = server._ctx.backend
        self.info = info
        self.is_closing = False
        self._driver: ConnectionDriver | None = None
        self._core: Http3Connection | None = None

    def attach(self, driver: ConnectionDriver) -> None:
        self._driver = driver
        core = driver.core
        assert isinstance(core, Http3Connection)
        self._core = core

    # -- EndpointConnection --------------------------------------------------------------------

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        core = self._core
        driver = self._driver
        if core is None or driver is None or self.is_closing:
            return
        core.receive_datagram(data, addr, now)
        driver.core_fed()

    # -- Transport (for the driver) ------------------------------------------------------------

    @property
    def writing_paused(self) -> bool:
        transport = self._server.transport
        return transport is not None and transport.writing_paused

    @property
    def write_buffer_size(self) -> int:
        """(Nothing waits here: QUIC's own loss recovery and flow control pace the peer.)"""
        return 0

    @property
    def write_progress(self) -> int:
        return 0

    def write(self, data: bytes) -> None:
        """(Never called: the core sends datagrams through the endpoint.)"""

    @property
    def raw_write(self) -> Callable[[bytes], None]:
        return self.write

    @property
    def raw_writelines(self) -> Callable[[Sequence[bytes]], None]:
        return joined_writelines(self.write)

    async def drain(self) -> None:
        transport = self._server.transport
        if transport is not None:
            await transport.drain()
        if self.is_closing:
            raise TransportClosed("the QUIC connection is closed")

    def pause_reading(self) -> None:
        """(Datagrams cannot wait: QUIC's flow control holds the peer back.)"""

    def resume_reading(self) -> None:
        pass

    def close(self, *, linger: bool = True) -> None:
        if not self.is_closing:
            self.is_closing = True
            driver = self._driver
            if driver is not None:
                # (From the loop: the core that asked is still on the stack.)
                self._backend.call_soon(driver.connection_lost)
            self._backend.call_soon(self._server.connection_ended)

    def abort(self) -> None:
        self.close()
