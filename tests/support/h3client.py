"""A small HTTP/3 client on aioquic's asyncio API, for end-to-end tests.

``fetch`` opens a fresh QUIC connection, sends one or more requests on it and returns their
responses. A request the server did not serve - rejected after its GOAWAY
(H3_REQUEST_REJECTED), or on a connection that closed before any answer - raises
``NotServed``: the client may retry it on a new connection (RFC 9114 sections 5.2 and 8.1),
which is what ``fetch_retrying`` does.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from aioquic.asyncio import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, ErrorCode, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ConnectionTerminated, QuicEvent, StreamReset


class NotServed(Exception):
    """The server did not process the request; it is safe to send it again."""


@dataclass
class Response:
    status: int = 0
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""
    trailers: list[tuple[bytes, bytes]] = field(default_factory=list)
    #: (headers of 1xx responses, in order)
    interim: list[list[tuple[bytes, bytes]]] = field(default_factory=list)

    def header(self, name: bytes) -> bytes | None:
        return next((value for key, value in self.headers if key == name), None)


class H3Protocol(QuicConnectionProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.h3 = H3Connection(self._quic)
        self._responses: dict[int, tuple[Response, asyncio.Future[Response]]] = {}

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, StreamReset) and event.stream_id in self._responses:
            response, done = self._responses.pop(event.stream_id)
            if not done.done():
                if event.error_code == ErrorCode.H3_REQUEST_REJECTED and not response.status:
                    done.set_exception(NotServed(f"stream {event.stream_id} rejected"))
                else:
                    done.set_exception(ConnectionError(f"reset 0x{event.error_code:x}"))
        if isinstance(event, ConnectionTerminated):
            for response, done in self._responses.values():
                if not done.done():
                    if response.status:
                        done.set_exception(ConnectionError(f"closed: {event.reason_phrase}"))
                    else:
                        done.set_exception(NotServed(f"closed: {event.reason_phrase}"))
            self._responses.clear()
        for h3_event in self.h3.handle_event(event):
            entry = self._responses.get(getattr(h3_event, "stream_id", -1))
            if entry is None:
                continue
            response, done = entry
            if isinstance(h3_event, HeadersReceived):
                status = dict(h3_event.headers).get(b":status", b"")
                if response.status:
                    response.trailers = list(h3_event.headers)
                elif status.startswith(b"1"):
                    response.interim.append(list(h3_event.headers))
                else:
                    response.status = int(status)
                    response.headers = list(h3_event.headers)
            elif isinstance(h3_event, DataReceived):
                response.body += h3_event.data
            if getattr(h3_event, "stream_ended", False):
                self._responses.pop(h3_event.stream_id, None)
                if not done.done():
                    done.set_result(response)

    async def request(
        self,
        method: str,
        authority: str,
        path: str,
        *,
        headers: list[tuple[bytes, bytes]] | None = None,
        body: bytes = b"",
        chunks: list[bytes] | None = None,
        trailers: list[tuple[bytes, bytes]] | None = None,
    ) -> Response:
        stream_id = self._quic.get_next_available_stream_id()
        done: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self._responses[stream_id] = (Response(), done)
        pieces = list(chunks) if chunks is not None else ([body] if body else [])
        self.h3.send_headers(
            stream_id,
            [
                (b":method", method.encode()),
                (b":scheme", b"https"),
                (b":authority", authority.encode()),
                (b":path", path.encode()),
                *(headers or []),
            ],
            end_stream=not pieces and not trailers,
        )
        for index, piece in enumerate(pieces):
            last = index == len(pieces) - 1
            self.h3.send_data(stream_id, piece, end_stream=last and not trailers)
            self.transmit()
            if not last:
                await asyncio.sleep(0)  # (really in pieces: one transmit each)
        if trailers:
            self.h3.send_headers(stream_id, trailers, end_stream=True)
        self.transmit()
        return await done


def client_configuration(cafile: str) -> QuicConfiguration:
    configuration = QuicConfiguration(is_client=True, alpn_protocols=list(H3_ALPN))
    configuration.load_verify_locations(cafile)
    configuration.server_name = "localhost"
    return configuration


async def fetch(
    port: int,
    cafile: str,
    requests: list[dict[str, Any]],
    *,
    host: str = "127.0.0.1",
    timeout: float = 10.0,
) -> list[Response]:
    """Each of ``requests`` (``H3Protocol.request`` keyword arguments, plus ``path`` and
    ``method``) concurrently, on one new connection."""
    return await asyncio.wait_for(_fetch(host, port, cafile, requests), timeout)


async def _fetch(
    host: str, port: int, cafile: str, requests: list[dict[str, Any]]
) -> list[Response]:
    async with connect(
        host, port, configuration=client_configuration(cafile), create_protocol=H3Protocol
    ) as protocol:
        assert isinstance(protocol, H3Protocol)
        authority = f"localhost:{port}"
        return list(
            await asyncio.gather(
                *(
                    protocol.request(
                        request.get("method", "GET"),
                        authority,
                        request["path"],
                        **{k: v for k, v in request.items() if k not in ("method", "path")},
                    )
                    for request in requests
                )
            )
        )


async def fetch_retrying(
    port: int, cafile: str, request: dict[str, Any], *, attempts: int = 5, timeout: float = 10.0
) -> tuple[Response, int]:
    """One request on a fresh connection, sent again (on another fresh one) while the server
    did not serve it; returns the response and how many attempts it took."""
    for attempt in range(1, attempts + 1):
        try:
            (response,) = await fetch(port, cafile, [request], timeout=timeout)
        except (NotServed, ConnectionError):
            if attempt == attempts:
                raise
            continue
        return response, attempt
    raise AssertionError("unreachable")
