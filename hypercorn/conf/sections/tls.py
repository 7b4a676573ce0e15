"""TLS certificates, verification and protocol negotiation."""

from __future__ import annotations

import ssl

from hypercorn.conf import parsers as p
from hypercorn.conf.setting import Setting, SettingsHolder

__all__ = ["TLSSettings"]


class TLSSettings(SettingsHolder):
    """TLS is enabled when both *certfile* and *keyfile* are set."""

    certfile = Setting(
        None,
        parse=p.optional(p.string),
        section="tls",
        flags=("--certfile",),
        metavar="PATH",
        help="Path to the SSL certificate file (PEM; may include the chain).",
    )
    keyfile = Setting(
        None,
        parse=p.optional(p.string),
        section="tls",
        flags=("--keyfile",),
        metavar="PATH",
        help="Path to the SSL key file.",
    )
    keyfile_password = Setting(
        None,
        parse=p.optional(p.string),
        section="tls",
        flags=("--keyfile-password",),
        metavar="PASSWORD",
        secret=True,
        help="Password to decrypt the SSL key file.",
    )
    ca_certs = Setting(
        None,
        parse=p.optional(p.string),
        section="tls",
        flags=("--ca-certs",),
        metavar="PATH",
        help="Path to the CA certificates file used to verify client certificates.",
    )
    ciphers = Setting(
        "ECDHE+AESGCM",
        parse=p.string,
        section="tls",
        flags=("--ciphers",),
        metavar="CIPHERS",
        help="Ciphers to use for the SSL setup, in OpenSSL cipher list format.",
    )
    verify_mode = Setting(
        None,
        parse=p.enum_member(ssl.VerifyMode),
        section="tls",
        flags=("--verify-mode",),
        deprecated_flags=("--cert-reqs",),
        metavar="MODE",
        help="""SSL verify mode for the peer's certificate: CERT_NONE, CERT_OPTIONAL or
        CERT_REQUIRED (see the ssl.VerifyMode enum). `--cert-reqs` (an integer) is the
        deprecated spelling.""",
    )
    verify_flags = Setting(
        None,
        parse=p.enum_flags(ssl.VerifyFlags),
        section="tls",
        metavar="FLAGS",
        help="""SSL verify flags (ssl.VerifyFlags), e.g. `VERIFY_CRL_CHECK_LEAF`; several
        names may be joined with `|`.""",
    )
    alpn_protocols = Setting(
        ["h2", "http/1.1"],
        parse=p.string_list,
        section="tls",
        help="""ALPN protocols offered during the TLS handshake, in order of preference. Remove
        `h2` to serve HTTP/1.1 only over TLS.""",
    )
    ssl_handshake_timeout = Setting(
        60.0,
        parse=p.positive_float,
        section="tls",
        metavar="SECONDS",
        help="Time a TLS handshake may take before the connection is dropped.",
    )
