"""Blocking HTTP/2 clients over real sockets, for end-to-end and attack tests.

``RawSocket`` writes hand-built frames (``tests/support/h2raw.py``) and reads frames back;
``h2_get`` is a small well-behaved client on the ``h2`` package. Both speak TLS with ALPN
``h2`` when given a context, and prior knowledge otherwise. Every read has a deadline.
"""

from __future__ import annotations

import socket
import ssl
import time

import h2.config
import h2.connection
import h2.events
from hyperframe.frame import Frame, GoAwayFrame

from tests.support.h2pair import PREFACE
from tests.support.h2raw import settings

DEADLINE = 10.0


def connect(
    host: str,
    port: int,
    context: ssl.SSLContext | None,
    timeout: float = DEADLINE,
    preamble: bytes = b"",
) -> socket.socket:
    """``preamble`` (a PROXY header) is sent before anything else, TLS included."""
    sock = socket.create_connection((host, port), timeout=timeout)
    if preamble:
        sock.sendall(preamble)
    if context is None:
        return sock
    tls = context.wrap_socket(sock, server_hostname=host)
    assert tls.selected_alpn_protocol() == "h2", tls.selected_alpn_protocol()
    return tls


def h2_context(base: ssl.SSLContext) -> ssl.SSLContext:
    base.set_alpn_protocols(["h2"])
    return base


class RawSocket:
    """Frames by hand over a socket; see the module docstring."""

    def __init__(
        self,
        host: str,
        port: int,
        context: ssl.SSLContext | None,
        *pairs: tuple[int, int],
        preface: bool = True,
    ) -> None:
        self.sock = connect(host, port, context)
        self._buffer = b""
        self.closed = False
        self.received: list[Frame] = []
        if preface:
            self.send(PREFACE + settings(*pairs))

    def send(self, data: bytes) -> bool:
        """False once the server closed the connection. What it sent before closing stays
        readable: a failed send does not end ``read`` (the GOAWAY may still be unread)."""
        try:
            self.sock.sendall(data)
        except OSError:
            return False
        return True

    def read(self, timeout: float = 0.2) -> list[Frame]:
        """Frames that arrive within ``timeout`` (fewer if the server closes)."""
        end = time.monotonic() + timeout
        out: list[Frame] = []
        while not self.closed:
            left = end - time.monotonic()
            if left <= 0:
                break
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                break
            except OSError:
                chunk = b""
            if not chunk:
                self.closed = True
                break
            self._buffer += chunk
            out.extend(self._parse())
        self.received.extend(out)
        return out

    def _parse(self) -> list[Frame]:
        out = []
        data = self._buffer
        while len(data) >= 9:
            parsed, length = Frame.parse_frame_header(memoryview(data[:9]))
            if len(data) < 9 + length:
                break
            parsed.parse_body(memoryview(data[9 : 9 + length]))
            out.append(parsed)
            data = data[9 + length :]
        self._buffer = data
        return out

    def wait_goaway(self, timeout: float = DEADLINE) -> GoAwayFrame | None:
        """Read until a GOAWAY with an error or a close; the last GOAWAY seen."""
        end = time.monotonic() + timeout
        while not self.closed and time.monotonic() < end:
            frames = self.read(0.2)
            if any(isinstance(f, GoAwayFrame) and f.error_code for f in frames):
                break
        goaways = [f for f in self.received if isinstance(f, GoAwayFrame)]
        return goaways[-1] if goaways else None

    def close(self) -> None:
        self.sock.close()


def h2_get(
    host: str,
    port: int,
    context: ssl.SSLContext | None,
    path: str = "/",
    timeout: float = DEADLINE,
    preamble: bytes = b"",
) -> tuple[int, bytes]:
    """One GET on a new connection with the h2 client: (status, body)."""
    sock = connect(host, port, context, timeout, preamble)
    try:
        config = h2.config.H2Configuration(client_side=True, header_encoding=None)
        conn = h2.connection.H2Connection(config=config)
        conn.initiate_connection()
        stream_id = conn.get_next_available_stream_id()
        conn.send_headers(
            stream_id,
            [
                (b":method", b"GET"),
                (b":path", path.encode()),
                (b":scheme", b"https" if context else b"http"),
                (b":authority", host.encode()),
            ],
            end_stream=True,
        )
        sock.sendall(conn.data_to_send())
        status = 0
        body = b""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            sock.settimeout(max(0.01, end - time.monotonic()))
            data = sock.recv(65536)
            if not data:
                break
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    status = int(dict(event.headers)[b":status"])
                elif isinstance(event, h2.events.DataReceived):
                    body += event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, stream_id)
                elif isinstance(event, h2.events.StreamEnded):
                    return status, body
            sock.sendall(conn.data_to_send())
        raise AssertionError("no complete response in time")
    finally:
        sock.close()
