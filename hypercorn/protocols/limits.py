"""ProtocolLimits: the frozen subset of Config the protocol core needs.

The worker builds one instance per process (``hypercorn.workers.driver.limits_from_config``)
and hands it to every connection; ``protocols/`` never imports ``conf/``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class ProtocolLimits:
    #: Largest request head (request line + headers) h11 buffers before answering 431
    #: (Config ``h11_max_incomplete_size``).
    max_incomplete_size: int = 16 * 1024
    #: Longest request line (method, target, version) before answering 414.
    max_request_line_size: int = 8192
    #: Most header fields in one request before answering 431.
    max_header_count: int = 100
    #: Seconds an idle keep-alive connection is kept open (Config ``keep_alive_timeout``).
    keep_alive_timeout: float = 5.0
    #: Seconds the whole request head may take to arrive, from its first byte (and, on a new
    #: connection, from the accept).
    header_read_timeout: float = 10.0
    #: Seconds without request-body progress, while the body is expected, before closing.
    #: None disables it.
    read_timeout: float | None = 60.0
    #: Seconds without write progress (the peer taking bytes) before the connection is
    #: aborted, while the write buffer is above its high-water mark or a closed connection
    #: still flushes (Config ``write_timeout``; the driver watches progress).
    write_timeout: float = 60.0
    #: Bytes of request body buffered for an app that is not reading before we stop reading.
    body_buffer_size: int = 64 * 1024
    #: The ASGI ``root_path``.
    root_path: str = ""
    #: Allowed Host values; empty means any (Config ``server_names``). Others get 404.
    server_names: tuple[str, ...] = ()
    #: Add a ``date`` header to responses (Config ``include_date_header``).
    include_date_header: bool = True
    #: Value of the ``server`` header for HTTP/1.1 responses, or None to send none
    #: (Config ``include_server_header``; upstream sends ``hypercorn-h11``).
    server_header: bytes | None = b"hypercorn-h11"
    #: Hand header names to the app with their wire case instead of lowercased
    #: (Config ``h11_pass_raw_headers``).
    pass_raw_headers: bool = False
    #: Value of the ``server`` header for HTTP/2 responses, or None (upstream:
    #: ``hypercorn-h2``).
    h2_server_header: bytes | None = b"hypercorn-h2"
    #: Value of the ``server`` header for HTTP/3 responses, or None (upstream:
    #: ``hypercorn-h3``).
    h3_server_header: bytes | None = b"hypercorn-h3"
    #: The HTTP/2 engine (Config ``h2_engine``): "auto" or "fast" (h2_fast.py), or "h2"
    #: (the h2 package, the reference).
    h2_engine: str = "auto"
    #: Streams a client may have open at once on one HTTP/2 connection (Config
    #: ``h2_max_concurrent_streams``); more are refused with REFUSED_STREAM.
    h2_max_concurrent_streams: int = 100
    #: Largest decoded request header list on HTTP/2, in RFC 9113 octets (Config
    #: ``h2_max_header_list_size``); larger ones end the connection (ENHANCE_YOUR_CALM).
    h2_max_header_list_size: int = 2**16
    #: Largest frame payload we accept on HTTP/2 (Config ``h2_max_inbound_frame_size``).
    h2_max_inbound_frame_size: int = 2**14
    #: Requests served on one HTTP/1.1 connection, the last answered with ``connection:
    #: close`` (Config ``keep_alive_max_requests``, as upstream); None means no limit.
    h1_max_requests: int | None = 1000
    #: Streams served on one HTTP/2 or HTTP/3 connection before GOAWAY (Config
    #: ``keep_alive_max_requests``); None means no limit.
    h2_max_streams: int | None = 1000
    #: Extra headers added to every response (for example ``alt-svc``).
    extra_headers: tuple[tuple[bytes, bytes], ...] = ()
    #: Largest WebSocket message, inflated (Config ``websocket_max_message_size``); larger
    #: ones close the WebSocket with 1009.
    websocket_max_message_size: int = 16 * 1024 * 1024
    #: Seconds between pings to a WebSocket peer, or None for none (Config
    #: ``websocket_ping_interval``); a peer that leaves one unanswered until the next is dropped.
    websocket_ping_interval: float | None = None
    #: Received WebSocket messages queued for an app that is not receiving before reading
    #: pauses (Config ``max_app_queue_size``; ``body_buffer_size`` bounds their bytes).
    websocket_queue_size: int = 10
    #: Accept permessage-deflate when a WebSocket client offers it.
    websocket_deflate: bool = True
    #: Read and write the common WebSocket data frames with ``ws_fast`` instead of wsproto
    #: (the reference; both pass the same suites).
    websocket_fast_path: bool = True
