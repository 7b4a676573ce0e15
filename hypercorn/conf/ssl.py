"""Config -> ``ssl.SSLContext``: the only place TLS settings turn into an OpenSSL context."""

from __future__ import annotations

import os
import ssl
from typing import TYPE_CHECKING

from hypercorn.errors import BootError

if TYPE_CHECKING:
    from hypercorn.config import Config

__all__ = ["create_ssl_context", "ssl_enabled"]


def ssl_enabled(config: Config) -> bool:
    """TLS is on when both a certificate and a key are configured (upstream's rule)."""
    return config.certfile is not None and config.keyfile is not None


def create_ssl_context(config: Config) -> ssl.SSLContext | None:
    """A server context for ``config``, or None when TLS is off.

    TLS 1.2 is the minimum and compression is off (RFC 9113 section 9.2 requires both for
    HTTP/2). Unreadable certificate or key files raise ``BootError`` naming the file, so the
    operator gets one line instead of an OpenSSL traceback.
    """
    if not ssl_enabled(config):
        return None
    assert config.certfile is not None
    assert config.keyfile is not None

    for name, path in (
        ("certfile", config.certfile),
        ("keyfile", config.keyfile),
        ("ca_certs", config.ca_certs),
    ):
        if path is not None and not os.access(path, os.R_OK):
            raise BootError(f"{name}: cannot read {path!r}")

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.set_ciphers(config.ciphers)
    except ssl.SSLError:
        raise BootError(f"ciphers: no usable cipher in {config.ciphers!r}") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_COMPRESSION
    context.set_alpn_protocols(config.alpn_protocols)

    try:
        context.load_cert_chain(
            certfile=config.certfile, keyfile=config.keyfile, password=config.keyfile_password
        )
    except (ssl.SSLError, OSError) as exc:
        raise BootError(
            f"cannot load TLS certificate {config.certfile!r} with key {config.keyfile!r}: {exc}"
        ) from None

    if config.ca_certs is not None:
        try:
            context.load_verify_locations(config.ca_certs)
        except (ssl.SSLError, OSError) as exc:
            raise BootError(f"cannot load CA certificates {config.ca_certs!r}: {exc}") from None
    if config.verify_mode is not None:
        context.verify_mode = config.verify_mode
    if config.verify_flags is not None:
        context.verify_flags = config.verify_flags
    return context
