"""The ASGI HTTP stream: one request/response exchange, for every HTTP version.

Theory of operation
-------------------
An ``AsgiHttpStream`` sits between a *wire* (HTTP/1.1 today; HTTP/2 and HTTP/3 reuse it) and
the ASGI application, and knows nothing about framing. The wire feeds it request facts
(``body_received``, ``end_received``, ``peer_closed``); the app's messages come in through
``app_send``, are checked against the ASGI rules, and go out through the wire's
``StreamWire`` methods. Received messages wait in ``inbox`` until the app's ``receive()``
takes them with ``receive_nowait``; when the inbox is empty the driver parks the app and sets
``waiter``, which the stream calls (once) when the next message arrives.

Response states (``AsgiHttpState``)::

    REQUEST --start--> STARTED --body--> RESPONSE --body(more_body=False)--> CLOSED
                          |                  \\--body(more_body=False), trailers--> TRAILERS
                          \\--body(more_body=False)--> CLOSED / TRAILERS       |
                                                                 trailers(more_trailers=False)
                                                                               v
                                                                            CLOSED

Rules:

1. The response head goes to the wire together with the first body message (ASGI: a server
   must not start the response before the first body message), so the wire can choose
   Content-Length when the whole body is known and write head and body at once.
2. Anything the app does wrong raises ``AppProtocolError`` out of ``app_send`` *after* the
   stream has cleaned up: a 500 if the head was not written yet, otherwise the wire aborts
   the stream (HTTP/1.1 closes the connection, so a truncated body never looks complete).
   The stream is then CLOSED and every later ``app_send`` raises again.
3. Once the peer is gone (``peer_closed``) the app gets ``http.disconnect``; the driver makes
   its later sends raise an OSError (ASGI 2.4), so an endless stream stops.
4. After the response is complete ``receive`` returns ``http.disconnect``, and a ``receive``
   already waiting when it completes returns it then.
5. A peer that shut its sending side after a complete request (``peer_half_closed``) may
   still read the response: sends go on, but ``receive`` returns ``http.disconnect`` from
   then on, since a peer that left altogether looks the same until a write fails. An app
   that watches for disconnects stops as it would for a peer gone; one that answers is read.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Mapping
from enum import Enum
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import unquote_to_bytes

from hypercorn.protocols.errors import AppProtocolError
from hypercorn.protocols.headers import check_status

if TYPE_CHECKING:
    from typing import TypeAlias

Message: TypeAlias = "dict[str, Any]"
Headers: TypeAlias = "list[tuple[bytes, bytes]]"

ASGI_SPEC_VERSION = "2.4"


class AsgiHttpState(Enum):
    REQUEST = "request"  # waiting for http.response.start
    STARTED = "started"  # start received, head not written (waits for the first body)
    RESPONSE = "response"  # head written, body streaming
    TRAILERS = "trailers"  # body complete, trailers expected
    CLOSED = "closed"  # response complete, failed, or the peer is gone


# Members as module globals (``Enum.MEMBER`` is slow on 3.11: ``EnumType.__getattr__``).
_CLOSED = AsgiHttpState.CLOSED
_REQUEST = AsgiHttpState.REQUEST
_RESPONSE = AsgiHttpState.RESPONSE
_STARTED = AsgiHttpState.STARTED
_TRAILERS = AsgiHttpState.TRAILERS


class StreamWire(Protocol):
    """What a stream needs from its wire protocol. Every call is synchronous.

    The wire validates what it serialises (header names/values) and raises
    ``AppProtocolError`` *before* writing anything when they are unacceptable.
    ``end=True`` completes the response; the wire may then recycle the connection.
    """

    def send_head(
        self,
        stream: AsgiHttpStream,
        status: int,
        headers: Iterable[tuple[bytes, bytes]],
        body: bytes,
        end: bool,
        now: float,
    ) -> None: ...

    def send_body(self, stream: AsgiHttpStream, data: bytes, end: bool, now: float) -> None: ...

    def send_trailers(
        self, stream: AsgiHttpStream, headers: Iterable[tuple[bytes, bytes]], now: float
    ) -> None: ...

    def send_error(self, stream: AsgiHttpStream, status: int, now: float) -> None:
        """Answer ``status`` with an empty body (only before the head was written)."""

    def send_informational(
        self, stream: AsgiHttpStream, status: int, headers: list[tuple[bytes, bytes]], now: float
    ) -> None:
        """An interim 1xx response (103 Early Hints) before the final head, where the
        protocol allows one (HTTP/1.0 does not: nothing is sent)."""

    def send_push(
        self, stream: AsgiHttpStream, path: str, headers: list[tuple[bytes, bytes]], now: float
    ) -> None:
        """Server push of a GET for ``path`` (HTTP/2, when the client allows it; otherwise
        nothing happens)."""

    def abort_stream(self, stream: AsgiHttpStream, now: float) -> None:
        """The response cannot be completed: make the peer see an incomplete response."""

    def app_reading(self, stream: AsgiHttpStream, now: float) -> None:
        """The app called ``receive()`` while ``stream.notify_on_read`` was set."""


_DISCONNECT_TYPE = "http.disconnect"


class AsgiHttpStream:
    """One ASGI HTTP exchange. See the module docstring."""

    __slots__ = (
        "_headers",
        "_trailers",
        "_wire",
        "app_done",
        "buffered",
        "disconnected",
        "end_unsent",
        "half_closed",
        "head_written",
        "inbox",
        "notify_on_read",
        "response_length",
        "scope",
        "send_blocked",
        "send_waiter",
        "start_time",
        "state",
        "status",
        "stream_id",
        "task",
        "trailers_expected",
        "waiter",
    )

    def __init__(self, wire: StreamWire, scope: dict[str, Any], stream_id: int, now: float) -> None:
        self._wire = wire
        self.scope = scope
        self.stream_id = stream_id
        self.start_time = now
        self.state = _REQUEST
        #: Made with the first message queued (a bodiless request may never need one).
        self.inbox: deque[Message] | None = None
        #: Called once when a message is queued; set by the driver while the app waits.
        self.waiter: Callable[[], object] | None = None
        #: Ask the wire (``app_reading``) the next time the app calls receive().
        self.notify_on_read = False
        #: Bytes of request body queued in ``inbox``.
        self.buffered = 0
        #: The request was complete at its head (no body): its one ``http.request`` is made
        #: when the app asks (many apps never read a bodiless request).
        self.end_unsent = False
        self.disconnected = False
        #: Rule 5: the peer will send nothing more; it may still read.
        self.half_closed = False
        self.head_written = False
        self.app_done = False
        self.trailers_expected = False
        self.status: int | None = None
        self.response_length = 0
        #: Set by a wire that could not send the app's last message yet (an HTTP/2 window is
        #: closed): the driver's ``send()`` parks the app until ``release_send``.
        self.send_blocked = False
        #: Called once by ``release_send``; set by the driver while the app waits.
        self.send_waiter: Callable[[], object] | None = None
        #: The driver's handle on the app task (anything with ``cancel()``), if any.
        self.task: object = None
        self._headers: Iterable[tuple[bytes, bytes]] = ()
        self._trailers: list[tuple[bytes, bytes]] | None = None  # (made when needed)

    # -- wire side -------------------------------------------------------------------------

    def _push(self, message: Message) -> None:
        inbox = self.inbox
        if inbox is None:
            inbox = self.inbox = deque()
        inbox.append(message)
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            waiter()

    def body_received(self, data: bytes) -> None:
        """A piece of request body arrived (``data`` is not empty)."""
        if self.disconnected:
            return
        self.buffered += len(data)
        self._push({"type": "http.request", "body": data, "more_body": True})

    def end_received(self, trailers: list[tuple[bytes, bytes]] | None = None) -> None:
        """The request is complete; ``trailers``: the request trailers, if it had any (they
        reach the app as the ``trailers`` key of its last ``http.request`` message)."""
        if self.disconnected:
            return
        message: Message = {"type": "http.request", "body": b"", "more_body": False}
        if trailers is not None:
            message["trailers"] = trailers
        self._push(message)

    def release_send(self) -> None:
        """The wire sent what blocked the app's ``send()`` (or gave up on it)."""
        self.send_blocked = False
        waiter = self.send_waiter
        if waiter is not None:
            self.send_waiter = None
            waiter()

    def peer_half_closed(self) -> None:
        """The peer shut its sending side after a complete request (rule 5)."""
        self.half_closed = True
        waiter = self.waiter
        if waiter is not None:  # (its receive_nowait finds the inbox empty: disconnect)
            self.waiter = None
            waiter()

    def peer_closed(self) -> None:
        """The peer went away (or the connection was closed under us): disconnect the app."""
        if self.send_blocked:
            self.release_send()
        if self.disconnected:
            return
        self.disconnected = True
        if self.state is not _CLOSED:
            self.state = _CLOSED
            self._push({"type": _DISCONNECT_TYPE})
        elif self.waiter is not None:
            # Response was complete: an app waiting in receive() is woken to see disconnect.
            self._push({"type": _DISCONNECT_TYPE})

    # -- app side --------------------------------------------------------------------------

    def receive_nowait(self, now: float) -> Message | None:
        """The next message for the app's ``receive()``, or None if it must wait."""
        inbox = self.inbox
        message: Message | None = None
        if self.end_unsent:  # (set only with nothing queued: it comes first)
            self.end_unsent = False
            message = {"type": "http.request", "body": b"", "more_body": False}
        elif inbox:
            message = inbox.popleft()
            if self.buffered:
                self.buffered -= len(message.get("body", b""))
        elif self.state is _CLOSED or self.half_closed:
            message = {"type": _DISCONNECT_TYPE}
        if self.notify_on_read:
            self.notify_on_read = False
            self._wire.app_reading(self, now)
        return message

    def app_send(self, message: Mapping[str, Any], now: float) -> None:
        """Carry out one message from the app's ``send()``; raises AppProtocolError."""
        if self.disconnected:
            return
        try:
            mtype = message["type"]
            state = self.state
            if mtype == "http.response.body":
                body = message.get("body", b"")
                if type(body) is not bytes:
                    if not isinstance(body, (bytearray, memoryview)):
                        raise AppProtocolError(f"body must be bytes, got {type(body).__name__}")
                    body = bytes(body)
                if message.get("more_body", False):
                    next_state = _RESPONSE
                elif self.trailers_expected:
                    next_state = _TRAILERS
                else:
                    next_state = _CLOSED
                end = next_state is _CLOSED
                if state is _RESPONSE:
                    self.state = next_state
                    self.response_length += len(body)
                    self._wire.send_body(self, body, end, now)
                elif state is _STARTED:
                    self.state = next_state
                    self.response_length += len(body)
                    self._wire.send_head(self, self.status, self._headers, body, end, now)  # type: ignore[arg-type]
                    self.head_written = True
                else:
                    raise AppProtocolError(f"unexpected {mtype!r} in state {state.value}")
                if end and self.waiter is not None:
                    self._wake()
            elif mtype == "http.response.start":
                if state is not _REQUEST:
                    raise AppProtocolError(f"unexpected {mtype!r} in state {state.value}")
                status = message["status"]
                if type(status) is not int or not 200 <= status <= 999:
                    status = check_status(status)
                self.status = status
                headers = message.get("headers", ())
                if type(headers) is not list and type(headers) is not tuple:
                    headers = list(headers)
                self._headers = headers
                if message.get("trailers"):
                    self.trailers_expected = True
                self.state = _STARTED
            elif mtype == "http.response.trailers":
                if state is not _TRAILERS:
                    raise AppProtocolError(f"unexpected {mtype!r} in state {state.value}")
                trailers = self._trailers
                if trailers is None:
                    trailers = self._trailers = []
                trailers.extend(message.get("headers", ()))
                if not message.get("more_trailers", False):
                    self.state = _CLOSED
                    self._wire.send_trailers(self, trailers, now)
                    if self.waiter is not None:
                        self._wake()
            elif mtype == "http.response.early_hint":
                # RFC 8297: 103 with the links, before the final response's head.
                if self.head_written or state is _CLOSED:
                    raise AppProtocolError(f"unexpected {mtype!r} in state {state.value}")
                links = message.get("links", ())
                if not all(type(link) is bytes for link in links):
                    raise AppProtocolError("early hint links must be bytes")
                self._wire.send_informational(self, 103, [(b"link", link) for link in links], now)
            elif mtype == "http.response.push":
                if state is _CLOSED or state is _TRAILERS:
                    raise AppProtocolError(f"unexpected {mtype!r} in state {state.value}")
                path = message["path"]
                if type(path) is not str:
                    raise AppProtocolError("push path must be a str")
                self._wire.send_push(self, path, list(message.get("headers", ())), now)
            else:
                raise AppProtocolError(f"unexpected {mtype!r} in state {state.value}")
        except AppProtocolError:
            self._fail(now)
            raise
        except (KeyError, TypeError, ValueError) as exc:
            self._fail(now)
            raise AppProtocolError(f"malformed ASGI message {message!r}: {exc!r}") from exc

    def _wake(self) -> None:
        """The response is complete (or failed) while the app waits in ``receive()``, as a
        disconnect watcher does: wake it. A waiter waits only on an empty inbox, so it finds
        the stream CLOSED and gets ``http.disconnect`` (rule 4) instead of waiting for good."""
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            waiter()

    def _fail(self, now: float) -> None:
        if self.disconnected:
            return
        self.state = _CLOSED
        self._wake()
        if self.head_written:
            self._wire.abort_stream(self, now)
        else:
            self.status = 500
            self._wire.send_error(self, 500, now)

    @property
    def response_headers(self) -> Iterable[tuple[bytes, bytes]]:
        """The headers the app started its response with (read by the access log)."""
        return self._headers

    def app_finished(self, now: float) -> str | None:
        """The app returned or raised. An unstarted response becomes a 500; an unfinished one
        is aborted. Returns what to log when an app that returned left it so (nothing: a
        500 or a truncated response speaks for itself in the access log)."""
        self.app_done = True
        if self.disconnected or self.state is _CLOSED:
            self.waiter = None
            return None
        self._fail(now)  # (which wakes a receive() the app left waiting in another task)
        return None


# -- scope building ------------------------------------------------------------------------

_HTTP_VERSIONS = {b"1.1": "1.1", b"1.0": "1.0", b"2": "2", b"3": "3"}


def split_target(target: bytes) -> tuple[bytes, bytes]:
    """(raw_path, query_string) from a request target, accepting absolute-form."""
    path, _, query = target.partition(b"?")
    if path[:1] != b"/" and path != b"*":
        # absolute-form ("http://host/path"): keep the path part only.
        scheme_sep = path.find(b"://")
        if scheme_sep != -1:
            slash = path.find(b"/", scheme_sep + 3)
            path = path[slash:] if slash != -1 else b"/"
    return path, query


#: ord("%"). ``int in bytes`` is one memchr; ``bytes in bytes`` first tries the argument as an
#: int, raising and clearing a TypeError (about 10x slower on 3.11).
_PERCENT = 0x25


def decode_path(raw_path: bytes) -> str:
    """Percent-decode ``raw_path`` and decode it as UTF-8 (invalid bytes replaced)."""
    if _PERCENT in raw_path:
        raw_path = unquote_to_bytes(raw_path)
    return raw_path.decode("utf-8", "replace")


def build_scope(
    http_version: bytes,
    method: bytes,
    target: bytes,
    headers: Headers,
    scheme: str,
    client: tuple[str, int] | None,
    server: tuple[str, int | None] | None,
    root_path: str,
    state: dict[str, Any] | None,
    tls: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The ASGI HTTP scope, built once per request (positional arguments: this is per
    request, and keyword calls cost more)."""
    # split_target and decode_path are inlined for the usual origin-form target without
    # escapes (a call each per request otherwise); the functions handle the rest.
    if target[:1] == b"/":
        raw_path, _, query_string = target.partition(b"?")
    else:
        raw_path, query_string = split_target(target)
    extensions: dict[str, Any] = {"http.response.trailers": {}, "http.response.early_hint": {}}
    if tls is not None:
        extensions["tls"] = dict(tls)
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": ASGI_SPEC_VERSION},
        "http_version": _HTTP_VERSIONS.get(http_version) or http_version.decode("ascii"),
        "method": method.decode("ascii").upper(),
        "scheme": scheme,
        "path": (
            decode_path(raw_path) if _PERCENT in raw_path else raw_path.decode("utf-8", "replace")
        ),
        "raw_path": raw_path,
        "query_string": query_string,
        "root_path": root_path,
        "headers": headers,
        "client": client,
        "server": server,
        "extensions": extensions,
    }
    if state is not None:
        scope["state"] = state.copy()
    return scope


def host_allowed(headers: Headers, server_names: tuple[str, ...]) -> bool:
    """Config ``server_names``: with names configured, the Host must be one of them."""
    if not server_names:
        return True
    for name, value in headers:
        if name.lower() == b"host" or name == b":authority":  # h11_pass_raw_headers keeps case
            return value.decode("latin-1") in server_names
    return False
