"""Where and how the server listens."""

from __future__ import annotations

from hypercorn.conf import parsers as p
from hypercorn.conf.setting import Setting, SettingsHolder

__all__ = ["ServerSettings"]


def _root_path(value: object) -> str:
    # Upstream strips trailing slashes on assignment so "/api/" and "/api" behave the same.
    return p.string(value).rstrip("/")


root_path_parser = p.Parser(_root_path, type_name="str", expects="a string")


class ServerSettings(SettingsHolder):
    """Listening sockets and the application they serve."""

    application_path = Setting(
        "",
        parse=p.string,
        section="server",
        metavar="MODULE:APP",
        help="""The application to serve, as `path.to.module:attribute` (`module` alone means
        `module:app`; `module:factory()` calls a factory). Set by the positional CLI argument,
        or in a config file.""",
    )
    bind = Setting(
        ["127.0.0.1:8000"],
        parse=p.address_list,
        section="server",
        flags=("-b", "--bind"),
        action="append",
        metavar="ADDRESS",
        help="""The TCP host/address to bind to. Should be either host:port, host, unix:path or
        fd://num, e.g. 127.0.0.1:5000, 127.0.0.1, unix:/tmp/socket or fd://33 respectively.
        Repeat the flag to bind several addresses. When TLS is configured these are the secure
        binds.""",
    )
    insecure_bind: Setting[list[str]] = Setting(
        [],
        parse=p.address_list,
        section="server",
        flags=("--insecure-bind",),
        action="append",
        metavar="ADDRESS",
        help="""The TCP host/address to bind to without TLS, even when TLS is configured. See
        *bind* for the formats. Take care: see the HTTP to HTTPS redirection docs.""",
    )
    quic_bind: Setting[list[str]] = Setting(
        [],
        parse=p.address_list,
        section="server",
        flags=("--quic-bind",),
        action="append",
        metavar="ADDRESS",
        help="""The UDP host/address to serve HTTP/3 (QUIC) on, with the TLS certificate.
        Requires TLS and the `h3` extra. See *bind* for the formats. With several workers each
        worker gets its own SO_REUSEPORT socket on the address, so a client's datagrams keep
        reaching the worker that holds its connection.""",
    )
    quic_retry = Setting(
        False,
        parse=p.boolean,
        section="server",
        flags=("--quic-retry",),
        action="store_true",
        help="""Validate a QUIC client's address with a Retry packet before keeping any state
        for its connection (RFC 9000 section 8.1.2). Costs new connections one round trip;
        stops spoofed Initial packets from making the server start handshakes.""",
    )
    backlog = Setting(
        100,
        parse=p.non_negative_int,
        section="server",
        flags=("--backlog",),
        metavar="INT",
        help="""The maximum number of pending connections queued by the kernel per listener
        (passed to listen(); the kernel caps it at net.core.somaxconn).""",
    )
    reuse_port = Setting(
        False,
        parse=p.boolean,
        section="server",
        flags=("--reuse-port",),
        action="store_true",
        help="""Give each worker its own SO_REUSEPORT listening socket, so the kernel balances
        new connections across workers. A worker listens once it is ready, and a worker that
        dies, hangs or is removed (TTOU) takes its socket out of the kernel's group while
        others serve, so no connection waits for a dead worker; connections the kernel had
        already queued on it are reset, or moved to the other sockets with the Linux sysctl
        net.ipv4.tcp_migrate_req=1. Without it the workers share one listener, which has
        SO_REUSEPORT set when *workers* > 1 (as upstream), so another instance can bind the
        same port.""",
    )
    proxy_protocol = Setting(
        False,
        parse=p.boolean,
        section="server",
        flags=("--proxy-protocol",),
        action="store_true",
        help="""Every connection on the stream listeners (TCP and unix sockets) starts with a
        PROXY protocol header, version 1 or 2 (HAProxy `send-proxy`, AWS NLB proxy protocol
        v2, nginx `proxy_protocol on`), read before the TLS handshake. The scope's `client`
        (WSGI `REMOTE_ADDR`) and `server` are then the addresses the header names. A
        connection from a source not in *proxy_allow_ips*, or whose header is missing,
        malformed, larger than 4 KiB or not complete within *header_read_timeout*, is closed
        unanswered (logged at debug level).""",
    )
    proxy_allow_ips: Setting[list[str]] = Setting(
        ["127.0.0.1", "::1"],
        parse=p.ip_networks,
        section="server",
        flags=("--proxy-allow-ips",),
        metavar="ADDRESSES",
        help="""With *proxy_protocol*, the sources trusted to send a PROXY header:
        comma-separated IP addresses or networks (`10.0.0.0/8`), or `*` for any. Connections
        from elsewhere are closed. Unix socket peers are always trusted.""",
    )
    root_path = Setting(
        "",
        parse=root_path_parser,
        section="server",
        flags=("--root-path",),
        metavar="PATH",
        help="""The ASGI `root_path` given to the application, for serving under a URL
        prefix. A trailing slash is removed.""",
    )
    server_names: Setting[list[str]] = Setting(
        [],
        parse=p.string_list,
        section="server",
        flags=("--server-name",),
        action="append",
        metavar="HOSTNAME",
        help="""The hostnames that can be served; requests for any other host are answered with
        404. Empty (the default) serves every host.""",
    )
    umask = Setting(
        None,
        parse=p.umask,
        section="server",
        flags=("-m", "--umask"),
        metavar="MASK",
        help="""The permission bit mask applied while creating unix sockets, e.g. 0o007. Strings
        with a leading zero are read as octal.""",
    )
    user = Setting(
        None,
        parse=p.user_id,
        section="server",
        flags=("-u", "--user"),
        metavar="UID",
        help="""User (id or name) to own any unix sockets (upstream's meaning: applied only
        when *group* is set too). The workers keep the server's user; see *worker_user*.""",
    )
    group = Setting(
        None,
        parse=p.group_id,
        section="server",
        flags=("-g", "--group"),
        metavar="GID",
        help="""Group (id or name) to own any unix sockets (applied only when *user* is set
        too, as upstream). The workers keep the server's group; see *worker_group*.""",
    )
