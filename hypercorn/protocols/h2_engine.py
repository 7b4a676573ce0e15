"""The HTTP/2 engine seam: framing, HPACK and stream states behind one small interface.

``H2Connection`` (``http2.py``) owns everything ASGI-facing - the stream table, flow-control
*policy*, limits, deadlines, shutdown - and talks to an *engine* that owns the wire: frame
parsing and serialisation, HPACK, the RFC 9113 stream and connection state machines and
the flow-control windows. ``H2LibEngine`` below is the reference engine, built on the ``h2``
package. A faster engine (a codec for the common frames with an HPACK memo, say) plugs in
beside it by implementing ``H2Engine``; the whole HTTP/2 test suite runs on every engine.

Contract
--------
* ``receive_data(data, events)`` parses ``data`` and reports what the peer did by calling
  ``events`` (an ``H2Events``, implemented by ``H2Connection``) synchronously, in wire
  order. The handler may call the engine's ``send_*`` methods from inside those calls.
  After ``events.connection_error`` the engine has queued its GOAWAY and ignores all
  further input.
* Frames the engine answers by itself (SETTINGS ACK, PING ACK, RST_STREAM for frames on
  closed streams) and everything the ``send_*`` methods produce go to one output buffer,
  taken with ``data_to_send()``.
* Inbound flow control is manual: the engine never returns window space by itself (not even
  for padding or for DATA on closed streams); the connection calls ``open_window``.
* Sending on a stream the engine already considers closed (the peer reset it) is a no-op.
* Request headers arrive validated (RFC 9113 section 8.2 and 8.3: lowercase names, no
  connection-specific fields, pseudo-headers present, unique and first) and with cookie
  crumbs joined; response headers are handed over already validated and lowercased.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import hpack
import hyperframe.exceptions
from hyperframe.frame import GoAwayFrame

if TYPE_CHECKING:
    from typing import TypeAlias

Headers: TypeAlias = "Sequence[tuple[bytes, bytes]]"

#: RFC 9113 section 7 error codes used by the core.
NO_ERROR = 0x0
PROTOCOL_ERROR = 0x1
INTERNAL_ERROR = 0x2
FLOW_CONTROL_ERROR = 0x3
STREAM_CLOSED = 0x5
FRAME_SIZE_ERROR = 0x6
REFUSED_STREAM = 0x7
CANCEL = 0x8
ENHANCE_YOUR_CALM = 0xB

#: The largest stream id (2^31 - 1): the first GOAWAY of a graceful close names it.
MAX_STREAM_ID = 2**31 - 1
#: Flow-control windows start at 65,535 octets (RFC 9113 section 6.9.2).
DEFAULT_WINDOW = 65_535
#: The largest window a WINDOW_UPDATE may open (RFC 9113 section 6.9.1).
MAX_WINDOW = 2**31 - 1


class H2Events(Protocol):
    """What the peer did, reported by the engine during ``receive_data`` (in wire order)."""

    def request_received(
        self, stream_id: int, headers: list[tuple[bytes, bytes]], end_stream: bool
    ) -> None:
        """A request head opened ``stream_id``; ``end_stream``: it has no body."""

    def data_received(
        self, stream_id: int, data: bytes, flow_length: int, end_stream: bool
    ) -> None:
        """A DATA frame; ``flow_length`` counts its padding too (for the windows)."""

    def trailers_received(self, stream_id: int, headers: list[tuple[bytes, bytes]]) -> None:
        """Request trailers; they end the stream."""

    def stream_reset(self, stream_id: int, error_code: int) -> None:
        """The peer sent RST_STREAM."""

    def window_opened(self, stream_id: int) -> None:
        """More may be sent on ``stream_id`` (0: on the connection, or on every stream)."""

    def ping_acked(self, data: bytes) -> None: ...

    def goaway_received(self, last_stream_id: int, error_code: int) -> None: ...

    def connection_error(self, error_code: int, message: str) -> None:
        """The peer broke the protocol; the engine queued GOAWAY(``error_code``)."""


class H2Engine(Protocol):
    """One server-side HTTP/2 connection's wire state. See the module docstring."""

    #: The largest DATA payload the peer accepts per frame.
    @property
    def max_frame_size(self) -> int: ...

    @property
    def push_enabled(self) -> bool:
        """The peer allows server push (SETTINGS_ENABLE_PUSH)."""

    def initiate(self, upgrade_settings: bytes | None = None) -> None:
        """Queue the server preface. ``upgrade_settings``: the decoded payload of the
        ``HTTP2-Settings`` header of an ``Upgrade: h2c`` request, whose stream 1 is then
        half-closed (remote)."""

    def receive_data(self, data: bytes, events: H2Events) -> None: ...

    def data_to_send(self) -> bytes: ...

    def send_headers(self, stream_id: int, headers: Headers, end_stream: bool) -> None: ...

    def send_data(self, stream_id: int, data: bytes, end_stream: bool) -> None:
        """One DATA frame: ``data`` fits ``send_window`` and ``max_frame_size``."""

    def send_window(self, stream_id: int) -> int:
        """Bytes that may be sent on ``stream_id`` now (its window and the connection's)."""

    def reset_stream(self, stream_id: int, error_code: int) -> None: ...

    def push_stream(self, stream_id: int, headers: Headers) -> int | None:
        """PUSH_PROMISE on ``stream_id`` for a request with ``headers``: the promised stream's
        id, or None when no push is possible (disabled, ids exhausted, stream closed)."""

    def open_window(self, stream_id: int, increment: int) -> None:
        """WINDOW_UPDATE: let the peer send ``increment`` more bytes (0: the connection)."""

    def ping(self, data: bytes) -> None: ...

    def goaway(self, last_stream_id: int, error_code: int) -> None:
        """Queue GOAWAY without closing: streams up to ``last_stream_id`` go on."""


_GOAWAY_TYPE = 0x7
COMPRESSION_ERROR = 0x9


def _rfc_error_code(exc: h2.exceptions.ProtocolError, code: int) -> int:
    """The RFC 9113 code for an error h2 reports with another one."""
    cause = exc.__cause__
    if type(exc) is h2.exceptions.ProtocolError:
        if isinstance(cause, (hpack.HPACKError, IndexError, TypeError, UnicodeDecodeError)):
            # h2 says PROTOCOL_ERROR; section 4.3 says a field block that cannot be decoded
            # is a COMPRESSION_ERROR.
            return COMPRESSION_ERROR
        if isinstance(cause, hyperframe.exceptions.InvalidDataError) and "payload" in str(cause):
            # A SETTINGS ACK with a payload: FRAME_SIZE_ERROR (section 6.5).
            return FRAME_SIZE_ERROR
        if "continuation" in str(exc).lower() and "too many" in str(exc).lower():
            # A header block longer than h2's CONTINUATION backlog: a flood (CVE-2024-27316
            # class), answered like the other floods (h2_guard).
            return ENHANCE_YOUR_CALM
    return code


def decode_settings_header(value: bytes) -> bytes | None:
    """The SETTINGS payload of an ``HTTP2-Settings`` header (token68, base64url without
    padding), or None when it is not one (RFC 9113 section 3.2 of RFC 7540)."""
    value = value.strip()
    try:
        payload = base64.urlsafe_b64decode(value + b"=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        return None
    if len(payload) % 6:
        return None
    return payload


class H2LibEngine:
    """The reference engine, on ``h2.connection.H2Connection``."""

    __slots__ = ("_conn", "_error", "_extra")

    def __init__(
        self,
        *,
        max_concurrent_streams: int,
        max_header_list_size: int,
        max_inbound_frame_size: int,
    ) -> None:
        config = h2.config.H2Configuration(
            client_side=False,
            header_encoding=None,
            # Response headers arrive validated and lowercased (http2.py does it once, for
            # every engine).
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
        )
        conn = h2.connection.H2Connection(config=config)
        self._conn = conn
        initial = {
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: max_concurrent_streams,
            h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: max_header_list_size,
            h2.settings.SettingCodes.MAX_FRAME_SIZE: max_inbound_frame_size,
            # RFC 8441: extended CONNECT, for WebSockets over HTTP/2 (protocols/h2_ws.py).
            h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL: 1,
        }
        conn.local_settings = h2.settings.Settings(client=False, initial_values=initial)
        conn.max_inbound_frame_size = max_inbound_frame_size
        conn.decoder.max_header_list_size = max_header_list_size
        #: Output queued before h2's own buffer (our GOAWAY frames keep their place).
        self._extra = b""
        self._error = False

    @property
    def max_frame_size(self) -> int:
        return self._conn.max_outbound_frame_size

    @property
    def push_enabled(self) -> bool:
        return bool(self._conn.remote_settings.enable_push)

    def initiate(self, upgrade_settings: bytes | None = None) -> None:
        conn = self._conn
        # Advertise the configured stream limit, but let h2 itself accept more: the
        # connection refuses streams over the limit with REFUSED_STREAM (a stream error
        # the client retries) instead of h2's connection error.
        advertised = conn.local_settings
        if upgrade_settings is None:
            conn.initiate_connection()
        else:
            conn.initiate_upgrade_connection(base64.urlsafe_b64encode(upgrade_settings))
        values: dict[Any, int] = {code: advertised[code] for code in advertised}
        values[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS] = 2**31 - 1
        conn.local_settings = h2.settings.Settings(client=False, initial_values=values)

    def data_to_send(self) -> bytes:
        extra = self._extra
        if extra:
            self._extra = b""
            return extra + self._conn.data_to_send()
        return self._conn.data_to_send()

    def receive_data(self, data: bytes, events: H2Events) -> None:
        if self._error:
            return
        conn = self._conn
        try:
            received = conn.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            self._error = True
            code = int(exc.error_code)
            rfc_code = _rfc_error_code(exc, code)
            if rfc_code != code:
                # h2 queued GOAWAY(code) last (_terminate_connection): correct its code.
                out = conn.data_to_send()
                if len(out) >= 17 and out[-14] == _GOAWAY_TYPE:
                    out = out[:-4] + rfc_code.to_bytes(4, "big")
                self._extra += out
            events.connection_error(rfc_code, str(exc))
            return
        skip: object = None
        for event in received:
            kind = type(event)
            if event is skip:
                continue
            if kind is h2.events.RequestReceived:
                ended = event.stream_ended  # type: ignore[attr-defined]
                skip = ended
                events.request_received(
                    event.stream_id,  # type: ignore[attr-defined]
                    event.headers,  # type: ignore[attr-defined]
                    ended is not None,
                )
            elif kind is h2.events.DataReceived:
                ended = event.stream_ended  # type: ignore[attr-defined]
                skip = ended
                data = event.data  # type: ignore[attr-defined]
                events.data_received(
                    event.stream_id,  # type: ignore[attr-defined]
                    data,
                    event.flow_controlled_length,  # type: ignore[attr-defined]
                    ended is not None,
                )
            elif kind is h2.events.TrailersReceived:
                skip = event.stream_ended  # type: ignore[attr-defined]
                events.trailers_received(event.stream_id, event.headers)  # type: ignore[attr-defined]
            elif kind is h2.events.StreamEnded:
                # Only after an event that did not carry it (an empty DATA frame's is carried).
                events.data_received(event.stream_id, b"", 0, True)  # type: ignore[attr-defined]
            elif kind is h2.events.WindowUpdated:
                events.window_opened(event.stream_id or 0)  # type: ignore[attr-defined]
            elif kind is h2.events.StreamReset:
                events.stream_reset(event.stream_id, int(event.error_code))  # type: ignore[attr-defined]
            elif kind is h2.events.RemoteSettingsChanged:
                changed = event.changed_settings  # type: ignore[attr-defined]
                if (
                    h2.settings.SettingCodes.INITIAL_WINDOW_SIZE in changed
                    or h2.settings.SettingCodes.MAX_FRAME_SIZE in changed
                ):
                    events.window_opened(0)
            elif kind is h2.events.PingAckReceived:
                events.ping_acked(event.ping_data)  # type: ignore[attr-defined]
            elif kind is h2.events.ConnectionTerminated:
                code = int(event.error_code or 0)  # type: ignore[attr-defined]
                if code == NO_ERROR:
                    # h2 stops all sending once GOAWAY arrived, but a graceful GOAWAY lets
                    # the streams already open finish (RFC 9113 section 6.8).
                    conn.state_machine.state = h2.connection.ConnectionState.SERVER_OPEN
                events.goaway_received(event.last_stream_id or 0, code)  # type: ignore[attr-defined]
            # (Anything else - PingReceived, which h2 acknowledged, SettingsAcknowledged,
            # PriorityUpdated, UnknownFrameReceived - needs nothing from the connection.)

    def send_headers(self, stream_id: int, headers: Headers, end_stream: bool) -> None:
        try:
            self._conn.send_headers(stream_id, headers, end_stream=end_stream)
        except h2.exceptions.StreamClosedError:
            pass

    def send_data(self, stream_id: int, data: bytes, end_stream: bool) -> None:
        try:
            self._conn.send_data(stream_id, data, end_stream=end_stream)
        except h2.exceptions.StreamClosedError:
            pass

    def send_window(self, stream_id: int) -> int:
        try:
            return self._conn.local_flow_control_window(stream_id)
        except h2.exceptions.StreamClosedError:
            return 0

    def reset_stream(self, stream_id: int, error_code: int) -> None:
        try:
            self._conn.reset_stream(stream_id, error_code)
        except h2.exceptions.StreamClosedError:
            pass

    def push_stream(self, stream_id: int, headers: Headers) -> int | None:
        conn = self._conn
        try:
            promised = conn.get_next_available_stream_id()
            conn.push_stream(stream_id, promised, list(headers))
        except (h2.exceptions.ProtocolError, h2.exceptions.NoAvailableStreamIDError):
            return None
        return promised

    def open_window(self, stream_id: int, increment: int) -> None:
        try:
            self._conn.increment_flow_control_window(increment, stream_id or None)
        except (h2.exceptions.StreamClosedError, KeyError):
            pass

    def ping(self, data: bytes) -> None:
        self._conn.ping(data)

    def goaway(self, last_stream_id: int, error_code: int) -> None:
        frame = GoAwayFrame(0)
        frame.last_stream_id = last_stream_id
        frame.error_code = error_code
        # (Not through h2's close_connection: h2 would then refuse to send the responses of
        # the streams a graceful GOAWAY lets finish.)
        self._extra = self.data_to_send() + frame.serialize()


__all__ = [
    "CANCEL",
    "DEFAULT_WINDOW",
    "ENHANCE_YOUR_CALM",
    "INTERNAL_ERROR",
    "MAX_STREAM_ID",
    "NO_ERROR",
    "PROTOCOL_ERROR",
    "REFUSED_STREAM",
    "H2Engine",
    "H2Events",
    "H2LibEngine",
    "decode_settings_header",
]
