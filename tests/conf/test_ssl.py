"""Config -> SSLContext with trustme certificates, checked by real in-memory handshakes."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme
from cryptography.hazmat.primitives import serialization

from hypercorn.config import Config
from hypercorn.errors import BootError


@dataclass
class Certs:
    ca: trustme.CA
    certfile: str
    keyfile: str
    ca_file: str


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    directory = tmp_path_factory.mktemp("certs")
    ca = trustme.CA()
    server = ca.issue_cert("localhost")
    certfile = directory / "server.pem"
    keyfile = directory / "server.key"
    ca_file = directory / "ca.pem"
    server.cert_chain_pems[0].write_to_path(str(certfile))
    for pem in server.cert_chain_pems[1:]:
        pem.write_to_path(str(certfile), append=True)
    server.private_key_pem.write_to_path(str(keyfile))
    ca.cert_pem.write_to_path(str(ca_file))
    return Certs(ca, str(certfile), str(keyfile), str(ca_file))


def tls_config(certs: Certs, **values: object) -> Config:
    return Config.from_mapping({"certfile": certs.certfile, "keyfile": certs.keyfile, **values})


def client_context(certs: Certs, alpn: list[str]) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    certs.ca.configure_trust(context)
    context.set_alpn_protocols(alpn)
    return context


def handshake(server: ssl.SSLContext, client: ssl.SSLContext) -> tuple[ssl.SSLObject, ...]:
    """Run a TLS handshake between two SSLObjects over memory BIOs."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client_obj = client.wrap_bio(c_in, c_out, server_hostname="localhost")
    server_obj = server.wrap_bio(s_in, s_out, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(10):
        for name, obj in (("client", client_obj), ("server", server_obj)):
            if not done[name]:
                try:
                    obj.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            return client_obj, server_obj
    raise AssertionError("handshake did not finish")


def test_no_tls_without_cert_and_key() -> None:
    config = Config()
    assert config.ssl_enabled is False
    assert config.create_ssl_context() is None
    config.certfile = "cert.pem"
    assert config.ssl_enabled is False


def test_context_defaults(certs: Certs) -> None:
    config = tls_config(certs)
    assert config.ssl_enabled is True
    context = config.create_ssl_context()
    assert context is not None
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.options & ssl.OP_NO_COMPRESSION
    assert context.verify_mode == ssl.CERT_NONE


@pytest.mark.parametrize(
    ("server_alpn", "client_alpn", "selected"),
    [
        (["h2", "http/1.1"], ["h2", "http/1.1"], "h2"),
        (["h2", "http/1.1"], ["http/1.1"], "http/1.1"),
        (["http/1.1"], ["h2", "http/1.1"], "http/1.1"),
    ],
)
def test_alpn_negotiation(
    certs: Certs, server_alpn: list[str], client_alpn: list[str], selected: str
) -> None:
    server = tls_config(certs, alpn_protocols=server_alpn).create_ssl_context()
    assert server is not None
    client_obj, server_obj = handshake(server, client_context(certs, client_alpn))
    assert client_obj.selected_alpn_protocol() == selected
    assert server_obj.selected_alpn_protocol() == selected
    assert server_obj.version() in ("TLSv1.2", "TLSv1.3")


def test_client_certificates_required(certs: Certs) -> None:
    server = tls_config(
        certs, ca_certs=certs.ca_file, verify_mode="CERT_REQUIRED"
    ).create_ssl_context()
    assert server is not None
    assert server.verify_mode == ssl.CERT_REQUIRED
    client = client_context(certs, ["h2"])
    certs.ca.issue_cert("client@example.com").configure_cert(client)
    _, server_obj = handshake(server, client)
    assert server_obj.getpeercert() is not None


def test_encrypted_key_with_password(certs: Certs, tmp_path: Path) -> None:
    key = serialization.load_pem_private_key(Path(certs.keyfile).read_bytes(), password=None)
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"s3cret"),
    )
    keyfile = tmp_path / "encrypted.key"
    keyfile.write_bytes(encrypted)
    config = tls_config(certs, keyfile=str(keyfile), keyfile_password="s3cret")
    server = config.create_ssl_context()
    assert server is not None
    handshake(server, client_context(certs, ["http/1.1"]))

    config.keyfile_password = "wrong"
    with pytest.raises(BootError, match="cannot load TLS certificate"):
        config.create_ssl_context()


def test_unreadable_files_are_boot_errors(certs: Certs, tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.pem")
    with pytest.raises(BootError) as info:
        tls_config(certs, certfile=missing).create_ssl_context()
    assert str(info.value) == f"certfile: cannot read {missing!r}"
    with pytest.raises(BootError, match=r"^ca_certs: cannot read "):
        tls_config(certs, ca_certs=missing).create_ssl_context()
    with pytest.raises(BootError, match="cannot load CA certificates"):
        tls_config(certs, ca_certs=certs.keyfile).create_ssl_context()
    with pytest.raises(BootError, match=r"^ciphers: "):
        tls_config(certs, ciphers="NOT-A-CIPHER").create_ssl_context()
