"""HTTP/1.1, HTTP/2 and WebSocket limits, timeouts and response headers."""

from __future__ import annotations

from hypercorn.conf import parsers as p
from hypercorn.conf.setting import Setting, SettingsHolder

__all__ = ["H2_ENGINES", "HEADER_MAPS", "HTTP1_PARSERS", "HTTPSettings"]

HTTP1_PARSERS = ("auto", "h11", "httptools")
H2_ENGINES = ("auto", "fast", "h2")
#: Values of ``header_map`` (gunicorn's): what becomes of a request header whose name contains
#: ``_`` in a WSGI environ (see ``hypercorn.protocols.wsgi.build_environ``).
HEADER_MAPS = ("drop", "refuse", "dangerous")


class HTTPSettings(SettingsHolder):
    """Protocol limits and timeouts shared by every worker class."""

    keep_alive_timeout = Setting(
        5.0,
        parse=p.non_negative_float,
        section="http",
        flags=("--keep-alive",),
        metavar="SECONDS",
        help="Seconds an idle keep-alive connection is held open before it is closed.",
    )
    keep_alive_max_requests = Setting(
        1000,
        parse=p.positive_int,
        section="http",
        metavar="INT",
        help="""Maximum number of requests served on one HTTP/1.1 keep-alive connection (the
        last one is answered with `Connection: close`), or of HTTP/2 streams on one connection
        (then GOAWAY), before it is closed.""",
    )
    header_read_timeout = Setting(
        10.0,
        parse=p.positive_float,
        section="http",
        flags=("--header-read-timeout",),
        metavar="SECONDS",
        help="""The whole request head (request line and headers) must arrive within this many
        seconds of its first byte, or the connection is closed (slowloris protection).""",
    )
    read_timeout: Setting[float | None] = Setting(
        60.0,
        parse=p.zero_disables(p.positive_float),
        section="http",
        flags=("--read-timeout",),
        metavar="SECONDS",
        help="""Seconds to wait for the next chunk of a request body (or other client data the
        application is waiting on) before timing out the read. None or 0 disables it.""",
    )
    write_timeout = Setting(
        60.0,
        parse=p.positive_float,
        section="http",
        flags=("--write-timeout",),
        metavar="SECONDS",
        help="""A client that stops reading is disconnected after this many seconds without any
        write progress.""",
    )
    http1_parser = Setting(
        "auto",
        parse=p.one_of(*HTTP1_PARSERS),
        section="http",
        flags=("--http1-parser",),
        metavar="PARSER",
        help="""The HTTP/1.1 parser: h11 (pure Python), httptools (the `fast` extra) or auto
        (httptools when installed, else h11).""",
    )
    h11_max_incomplete_size = Setting(
        16 * 1024,
        parse=p.positive_int,
        section="http",
        metavar="BYTES",
        help="""Maximum size in bytes of an incomplete HTTP/1.1 request head; larger heads are
        rejected with 431.""",
    )
    h11_max_request_line_size = Setting(
        8192,
        parse=p.positive_int,
        section="http",
        flags=("--h11-max-request-line-size",),
        metavar="BYTES",
        help="Maximum HTTP/1.1 request line length in bytes; longer request lines get 414.",
    )
    h11_max_header_count = Setting(
        100,
        parse=p.positive_int,
        section="http",
        flags=("--h11-max-header-count",),
        metavar="INT",
        help="Maximum number of HTTP/1.1 request header fields; more get 431.",
    )
    h11_pass_raw_headers = Setting(
        False,
        parse=p.boolean,
        section="http",
        help="""Pass HTTP/1.1 request headers to the application with their original case
        instead of lower-cased (the ASGI spec asks for lower case).""",
    )
    h2_engine = Setting(
        "auto",
        parse=p.one_of(*H2_ENGINES),
        section="http",
        flags=("--h2-engine",),
        metavar="ENGINE",
        help="""The HTTP/2 engine: fast (this server's own frame codec with memoised HPACK;
        what auto picks) or h2 (the h2 package, the reference both are tested against).""",
    )
    h2_max_concurrent_streams = Setting(
        100,
        parse=p.positive_int,
        section="http",
        metavar="INT",
        help="Maximum number of concurrent HTTP/2 streams a client may open per connection.",
    )
    h2_max_header_list_size = Setting(
        2**16,
        parse=p.positive_int,
        section="http",
        metavar="BYTES",
        help="Maximum size in octets of an HTTP/2 header list (SETTINGS_MAX_HEADER_LIST_SIZE).",
    )
    h2_max_inbound_frame_size = Setting(
        2**14,
        parse=p.clamped_int(
            2**14,
            2**24 - 1,
            name="h2_max_inbound_frame_size",
            why="HTTP/2's SETTINGS_MAX_FRAME_SIZE range (16384 to 16777215, RFC 9113 6.5.2)",
        ),
        section="http",
        metavar="BYTES",
        help="""Maximum HTTP/2 frame payload size the server accepts (SETTINGS_MAX_FRAME_SIZE).
        HTTP/2 allows 16384 to 16777215; other values are moved into that range with a
        warning (upstream accepts them and leaves h2's default in force).""",
    )
    websocket_max_message_size = Setting(
        16 * 1024 * 1024,
        parse=p.positive_int,
        section="http",
        metavar="BYTES",
        help="Maximum size in bytes of a WebSocket message; larger messages close with 1009.",
    )
    websocket_ping_interval = Setting(
        None,
        parse=p.zero_disables(p.positive_float),
        section="http",
        flags=("--websocket-ping-interval",),
        metavar="SECONDS",
        help="""If set, the time in seconds between pings sent to the client. This can be used
        to keep the websocket connection alive. None or 0 sends no pings.""",
    )
    max_app_queue_size = Setting(
        10,
        parse=p.positive_int,
        section="http",
        metavar="INT",
        help="""Maximum number of received messages buffered for an application before reading
        from the client pauses (back-pressure).""",
    )
    wsgi_max_body_size = Setting(
        16 * 1024 * 1024,
        parse=p.positive_int,
        section="http",
        metavar="BYTES",
        help="""Maximum request body size in bytes for WSGI applications (the body is buffered);
        larger bodies get 413.""",
    )
    header_map = Setting(
        "drop",
        parse=p.one_of(*HEADER_MAPS),
        section="http",
        flags=("--header-map",),
        metavar="MODE",
        help="""What WSGI applications see of request headers whose names contain `_`
        (gunicorn's setting). WSGI maps `X_Auth_User` and `X-Auth-User` to the same
        `HTTP_X_AUTH_USER`, so a client could pass off its own value as a header that a
        proxy sets (most proxies strip or overwrite only the dashed spelling). "drop" (the
        default, as gunicorn and mod_wsgi) leaves such headers out of the environ, "refuse"
        answers 400, and "dangerous" maps them like any other header, which is dangerous behind a
        proxy: use it only when nothing in front of the server sets a header the client must
        not. ASGI
        applications always get header names as sent.""",
    )
    include_date_header = Setting(
        True,
        parse=p.boolean,
        section="http",
        help="Add a `date` header to every response.",
    )
    include_server_header = Setting(
        True,
        parse=p.boolean,
        section="http",
        help="Add a `server: hypercorn-<protocol>` header to every response.",
    )
    alt_svc_headers: Setting[list[str]] = Setting(
        [],
        parse=p.string_list,
        section="http",
        help="""`alt-svc` header values added to every response. When empty and *quic_bind*
        is set, the HTTP/3 endpoints are advertised automatically.""",
    )
