"""Protocol errors. Each carries its own remedy: the HTTP status to answer with (``status_hint``,
as in h11) or the wire error code (``error_code``, as in h2).

``RemoteProtocolError``
    The peer sent something we cannot accept. The core answers with ``status_hint`` (when a
    response is still possible) and closes. Never logged with a traceback at the default
    level: bad input from the network is not a server bug.
``LocalProtocolError``
    We were about to put something invalid on the wire (a bug in hypercorn, or input that
    slipped past validation). Logged with a traceback.
``AppProtocolError``
    The ASGI application broke the ASGI rules (body before start, bad header types, a CR/LF
    in a header, ...). Raised from the app's ``send()``; the core has already queued a 500
    (if the response had not started) or a close, so the driver only has to log it.
"""

from __future__ import annotations


class ProtocolError(Exception):
    """Base of the protocol error tree."""

    def __init__(self, message: str, *, status_hint: int = 400, error_code: int = 0) -> None:
        super().__init__(message)
        self.message = message
        #: HTTP status to answer with, when an answer is still possible (HTTP/1.x).
        self.status_hint = status_hint
        #: Wire error code for RST_STREAM / GOAWAY / CONNECTION_CLOSE (HTTP/2 and HTTP/3).
        self.error_code = error_code


class RemoteProtocolError(ProtocolError):
    """The peer violated the protocol; answer with ``status_hint`` and close."""


class LocalProtocolError(ProtocolError):
    """We tried to violate the protocol; a bug on our side."""

    def __init__(self, message: str, *, status_hint: int = 500, error_code: int = 0) -> None:
        super().__init__(message, status_hint=status_hint, error_code=error_code)


class AppProtocolError(Exception):
    """The ASGI application misused the ASGI HTTP/WebSocket message protocol."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
