"""Test certificates from trustme: a CA, a server certificate for 127.0.0.1 and localhost, and
client contexts that trust the CA. Nothing private is committed: keys are made per session."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Certs:
    ca: Any
    cert: Path
    key: Path

    def client_context(self, alpn: list[str] | None = None) -> ssl.SSLContext:
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        if alpn is not None:
            context.set_alpn_protocols(alpn)
        return context

    @property
    def server_settings(self) -> dict[str, Any]:
        """The Config settings that serve this certificate."""
        return {"certfile": str(self.cert), "keyfile": str(self.key)}


def make_certs(folder: Path) -> Certs:
    import trustme

    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1", "localhost")
    cert, key = folder / "cert.pem", folder / "key.pem"
    issued.cert_chain_pems[0].write_to_path(cert)
    issued.private_key_pem.write_to_path(key)
    return Certs(ca, cert, key)
