"""The raw HTTP/1.1 request corpus (gunicorn's ``tests/requests`` idea) and its replays.

``tests/protocols/corpus/{valid,invalid}/NNN.http`` hold raw bytes exactly as sent (CRLF
included); ``NNN.toml`` next to each states the expected outcome (format in the corpus
``README.md``). Every case is replayed whole, byte by byte and in seeded random chunks
(``SPLITS``), through a bare ``H1Parser`` (``replay_parser``) or through the whole HTTP/1.1
core, ``H1Connection`` with a recording sink standing in for the driver (``replay_core``).
Both return an ``Outcome`` that tests compare with the case's expectation, and with each
other across parsers and splits.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypercorn.protocols.errors import RemoteProtocolError
from hypercorn.protocols.headers import DateCache
from hypercorn.protocols.http1.connection import H1Connection
from hypercorn.protocols.http1.parser import (
    CLOSED,
    END_OF_MESSAGE,
    NEED_DATA,
    H1Parser,
    RequestHead,
)
from hypercorn.protocols.limits import ProtocolLimits
from tests.support.pairs import RecordingSink, parse_responses

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib  # type: ignore[import-not-found, no-redef, unused-ignore]

CORPUS = Path(__file__).resolve().parent.parent / "protocols" / "corpus"
SPLITS = ("whole", "bytewise", "random-1", "random-2", "random-3")


def _bytes(text: str) -> bytes:
    """TOML strings are Unicode; the corpus maps them to bytes one code point per byte."""
    return text.encode("latin-1")


@dataclass
class SeenRequest:
    """A request as the application (or the parser's consumer) saw it."""

    method: bytes
    target: bytes
    version: bytes
    headers: list[tuple[bytes, bytes]]
    keep_alive: bool
    expect_continue: bool = False
    upgrade: bytes | None = None
    body: bytes = b""
    complete: bool = False


@dataclass(frozen=True)
class CorpusCase:
    name: str  # "valid/003"
    description: str
    data: bytes
    valid: bool
    requests: tuple[SeenRequest, ...]  # valid: every request, in order
    status: int | None  # invalid: the status answered
    dispatched: int  # invalid: requests handed on before the bad one was found
    limits: ProtocolLimits
    #: Through the whole core the connection changes protocol instead (e.g. "h2": the
    #: HTTP/2 preface, which the parser stacks alone answer with ``status``).
    switch: str | None = None

    def __str__(self) -> str:
        return self.name


@dataclass
class Outcome:
    requests: list[SeenRequest] = field(default_factory=list)
    status: int | None = None  # the error's status, when there was one
    closed: bool = False  # the connection ended (error, Connection: close, or EOF)
    switch: str | None = None  # the protocol the connection handed over to

    def verdict(self) -> tuple[Any, ...]:
        """What must not depend on parser or split (body pieces are joined already)."""
        return (
            [
                (r.method, r.target, r.version, r.headers, r.body, r.keep_alive, r.complete)
                for r in self.requests
            ],
            self.status,
            self.switch,
        )


def load_corpus(kind: str | None = None) -> list[CorpusCase]:
    kinds = ("valid", "invalid") if kind is None else (kind,)
    cases = []
    for sub in kinds:
        for toml_path in sorted((CORPUS / sub).glob("*.toml")):
            spec = tomllib.loads(toml_path.read_text("utf-8"))
            requests = tuple(
                SeenRequest(
                    method=_bytes(r["method"]),
                    target=_bytes(r["target"]),
                    version=_bytes(r["version"]),
                    headers=[(_bytes(n), _bytes(v)) for n, v in r["headers"]],
                    keep_alive=r["keep_alive"],
                    expect_continue=r.get("expect_continue", False),
                    upgrade=_bytes(r["upgrade"]) if "upgrade" in r else None,
                    body=_bytes(r["body"]),
                    complete=True,
                )
                for r in spec.get("request", ())
            )
            cases.append(
                CorpusCase(
                    name=f"{sub}/{toml_path.stem}",
                    description=spec["description"],
                    data=toml_path.with_suffix(".http").read_bytes(),
                    valid=sub == "valid",
                    requests=requests,
                    status=spec.get("status"),
                    dispatched=spec.get("dispatched", len(requests)),
                    limits=ProtocolLimits(**spec.get("limits", {})),
                    switch=spec.get("switch"),
                )
            )
    return cases


def split_bytes(data: bytes, how: str) -> Iterator[bytes]:
    """``whole``, ``bytewise`` or ``random-<seed>`` (pieces of 1-64 bytes, then the rest)."""
    if how == "whole":
        yield data
    elif how == "bytewise":
        for index in range(len(data)):
            yield data[index : index + 1]
    elif how.startswith("random-"):
        rng = random.Random(int(how[7:]))
        pos = 0
        while pos < len(data):
            step = rng.choice((1, 2, 3, 5, 8, 13, 64, 1000))
            yield data[pos : pos + step]
            pos += step
    else:
        raise ValueError(how)


# -- through a bare parser ---------------------------------------------------------------------


def replay_parser(parser: H1Parser, pieces: Iterator[bytes] | list[bytes]) -> Outcome:
    """Feed ``pieces`` then EOF, consuming events as the HTTP/1.1 core would: the next cycle
    starts as soon as a request is complete, and a request that does not keep the
    connection alive ends it."""
    outcome = Outcome()
    for piece in [*pieces, b""]:
        parser.feed(piece)
        try:
            _drain(parser, outcome)
        except RemoteProtocolError as exc:
            outcome.status = exc.status_hint
            outcome.closed = True
        if outcome.closed:
            break
    return outcome


def _drain(parser: H1Parser, outcome: Outcome) -> None:
    while True:
        event = parser.next_event()
        if type(event) is RequestHead:
            outcome.requests.append(
                SeenRequest(
                    event.method,
                    event.target,
                    event.http_version,
                    event.headers,
                    event.keep_alive,
                    event.expect_continue,
                    event.upgrade,
                )
            )
        elif type(event) is bytes:
            assert event, "empty body piece"
            outcome.requests[-1].body += event
        elif event is END_OF_MESSAGE:
            request = outcome.requests[-1]
            request.complete = True
            if not request.keep_alive or request.upgrade is not None:
                outcome.closed = True
                return
            parser.start_next_cycle()
        elif event is NEED_DATA:
            return
        elif event is CLOSED:
            outcome.closed = True
            return
        else:
            raise AssertionError(f"unexpected event {event!r}")  # PAUSED cannot happen here


# -- through the whole HTTP/1.1 core ----------------------------------------------------------


def replay_core(
    make_parser: Callable[[ProtocolLimits], H1Parser],
    limits: ProtocolLimits,
    pieces: Iterator[bytes] | list[bytes],
) -> Outcome:
    """Drive ``H1Connection`` with ``pieces`` then EOF; an app that reads each whole body and
    answers 200. The outcome's requests are what the app saw; ``status`` is the status of
    the last response when it is an error."""
    now = 1000.0
    sink = RecordingSink()
    conn = H1Connection(
        sink=sink,
        parser=make_parser(limits),
        limits=limits,
        dates=DateCache(wall_offset=0.0),
        client=("127.0.0.1", 50000),
        server=("127.0.0.1", 8000),
        ssl=False,
        tls=None,
        state=None,
        now=now,
    )
    seen: dict[int, SeenRequest] = {}
    for piece in [*pieces, b""]:
        conn.receive_data(piece, now)
        _play_app(sink, seen, now)
        if sink.closed or sink.switched:
            break
    outcome = Outcome(closed=sink.closed)
    if sink.switched:
        outcome.switch = sink.switched[0].to
    outcome.requests = [seen[index] for index in range(len(sink.started))]
    responses = parse_responses(bytes(sink.out)) if sink.out else []
    statuses = [
        event.status_code
        for response in responses
        for event in response
        if hasattr(event, "status_code") and event.status_code >= 200
    ]
    if statuses and statuses[-1] >= 400:
        outcome.status = statuses[-1]
    return outcome


def _play_app(sink: RecordingSink, seen: dict[int, SeenRequest], now: float) -> None:
    for index, stream in enumerate(sink.started):
        request = seen.get(index)
        if request is None:
            scope = stream.scope
            target = scope["raw_path"]
            if scope["query_string"]:
                target += b"?" + scope["query_string"]
            request = seen[index] = SeenRequest(
                # (A WebSocket handshake's scope has no method: it is a GET.)
                method=scope.get("method", "GET").encode("ascii"),
                target=target,
                version=scope["http_version"].encode("ascii"),
                headers=list(scope["headers"]),
                keep_alive=True,
            )
        if request.complete:
            continue
        if stream.scope["type"] == "websocket":
            # The app refuses the WebSocket with an ordinary response (ASGI's denial
            # response extension): the request is then served like any other.
            assert stream.receive_nowait(now) == {"type": "websocket.connect"}
            request.complete = True
            stream.app_send({"type": "websocket.http.response.start", "status": 200}, now)
            stream.app_send({"type": "websocket.http.response.body", "body": b"ok"}, now)
            continue
        while True:
            message = stream.receive_nowait(now)
            if message is None or message["type"] == "http.disconnect":
                break
            request.body += message.get("body", b"")
            if not message.get("more_body", False):
                request.complete = True
                stream.app_send({"type": "http.response.start", "status": 200, "headers": []}, now)
                stream.app_send({"type": "http.response.body", "body": b"ok"}, now)
                break
