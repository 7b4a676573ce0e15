"""HTTP/2 attacks against a real worker: each one gets GOAWAY with its code, a victim on
another connection keeps being served, and the worker's memory stays bounded.

The worker runs in this process (``start_server``), so its resident set is ours: RSS is read
before and after each attack, with an attack volume that would cost far more than the bound
if the limit were missing. The limits are documented in ``hypercorn/protocols/h2_guard.py``.
"""

from __future__ import annotations

import gc
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hyperframe.frame import GoAwayFrame, RstStreamFrame

from tests.e2e.conftest import RunningServer, start_server
from tests.support.h2raw import (
    CANCEL,
    CONTINUATION,
    DATA,
    END_HEADERS,
    END_STREAM,
    ENHANCE_YOUR_CALM,
    HEADERS,
    REQUEST,
    frame,
    ping,
    rst_stream,
    settings,
    window_update,
)
from tests.support.h2socket import RawSocket, h2_context, h2_get

trustme = pytest.importorskip("trustme")

#: Every test runs on every HTTP/2 engine (Config h2_engine).
pytestmark = pytest.mark.usefixtures("every_h2_engine")


hpack = pytest.importorskip("hpack")

#: Resident-set growth allowed per attack (the attacks would cost far more unchecked).
RSS_BOUND = 48 * 1024 * 1024
#: A victim request on another connection must be answered within this, during the attack.
VICTIM_DEADLINE = 10.0
BIG = 1024 * 1024


def rss() -> int:
    gc.collect()
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    if scope["path"] == "/big":
        await send({"type": "http.response.start", "status": 200})
        await send({"type": "http.response.body", "body": b"b" * BIG})
        return
    if scope["method"] == "GET":
        message = await receive()
        if message["type"] == "http.disconnect":
            return
    await send({"type": "http.response.start", "status": 200})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.fixture(scope="module")
def cert_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path, Path]:
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1")
    folder = tmp_path_factory.mktemp("attack-certs")
    cert, key = folder / "cert.pem", folder / "key.pem"
    issued.cert_chain_pems[0].write_to_path(cert)
    issued.private_key_pem.write_to_path(key)
    return ca, cert, key


@pytest.fixture
def server(
    bound_socket: socket.socket, cert_files: tuple[Any, Path, Path], worker_class: str
) -> Iterator[tuple[RunningServer, ssl.SSLContext]]:
    ca, cert, key = cert_files
    running = start_server(
        app,
        bound_socket,
        worker_class=worker_class,
        secure=True,
        certfile=str(cert),
        keyfile=str(key),
        write_timeout=1.0,
        keep_alive_max_requests=10**9,
    )
    context = ssl.create_default_context()
    ca.configure_trust(context)
    yield running, h2_context(context)
    running.stop()


def attack(
    target: tuple[RunningServer, ssl.SSLContext],
    run: Callable[[RawSocket], None],
    *pairs: tuple[int, int],
) -> RawSocket:
    """Run ``run`` on a raw connection while a victim keeps making requests on others;
    check the victim and the memory; return the attacker's socket for the verdict."""
    server, context = target
    h2_get(server.host, server.port, context)  # warm up (imports, TLS, first app call)
    before = rss()
    done = threading.Event()
    victim: list[tuple[float, int]] = []
    failures: list[BaseException] = []

    def victimise() -> None:
        while not done.is_set():
            started = time.monotonic()
            try:
                status, _ = h2_get(server.host, server.port, context, timeout=VICTIM_DEADLINE)
            except BaseException as exc:  # (reported below)
                failures.append(exc)
                return
            victim.append((time.monotonic() - started, status))

    thread = threading.Thread(target=victimise, daemon=True)
    thread.start()
    raw = RawSocket(server.host, server.port, context, *pairs)
    raw.sock.settimeout(5.0)
    try:
        run(raw)
        raw.wait_goaway()
    finally:
        done.set()
        thread.join(VICTIM_DEADLINE + 5)
        raw.close()
    assert not failures, failures
    assert victim, "the victim was never served"
    assert all(status == 200 for _, status in victim)
    grown = rss() - before
    assert grown < RSS_BOUND, f"RSS grew by {grown / 2**20:.1f} MiB"
    return raw


def flood(raw: RawSocket, chunk: bytes, times: int) -> None:
    """Send ``chunk`` up to ``times`` times, in batches, until the server hangs up."""
    batch = chunk * max(1, 16384 // len(chunk))
    sent = 0
    while sent < times and raw.send(batch):
        sent += len(batch) // len(chunk)
        if any(isinstance(f, GoAwayFrame) for f in raw.read(0.001)):
            return


def verdict(raw: RawSocket, code: int) -> None:
    goaways = [f for f in raw.received if isinstance(f, GoAwayFrame)]
    assert goaways, f"no GOAWAY: {raw.received[-5:]}"
    assert goaways[-1].error_code == code
    raw.read(2.0)
    assert raw.closed


# -- the attacks -------------------------------------------------------------------------------


def test_rapid_reset(server: tuple[RunningServer, ssl.SSLContext]) -> None:
    encoder = hpack.Encoder()

    def run(raw: RawSocket) -> None:
        for index in range(50_000):
            stream_id = 2 * index + 1
            pair = frame(HEADERS, END_HEADERS, stream_id, encoder.encode(REQUEST))
            if not raw.send(pair + rst_stream(stream_id, CANCEL)):
                break
            if index % 256 == 0 and any(isinstance(f, GoAwayFrame) for f in raw.read(0.001)):
                return

    raw = attack(server, run)
    verdict(raw, ENHANCE_YOUR_CALM)


@pytest.mark.parametrize(
    "control",
    [
        pytest.param(ping(), id="ping"),
        pytest.param(settings((0x3, 100)), id="settings"),
        pytest.param(window_update(0, 1), id="window_update"),
    ],
)
def test_control_frame_flood(server: tuple[RunningServer, ssl.SSLContext], control: bytes) -> None:
    raw = attack(server, lambda raw: flood(raw, control, 1_000_000))
    verdict(raw, ENHANCE_YOUR_CALM)


def test_empty_data_flood(server: tuple[RunningServer, ssl.SSLContext]) -> None:
    encoder = hpack.Encoder()

    def run(raw: RawSocket) -> None:
        raw.send(
            frame(HEADERS, END_HEADERS, 1, encoder.encode([*REQUEST[1:], (b":method", b"POST")]))
        )
        flood(raw, frame(DATA, 0, 1, b""), 1_000_000)

    verdict(attack(server, run), ENHANCE_YOUR_CALM)


def test_continuation_flood(server: tuple[RunningServer, ssl.SSLContext]) -> None:
    encoder = hpack.Encoder()

    def run(raw: RawSocket) -> None:
        raw.send(frame(HEADERS, END_STREAM, 1, encoder.encode(REQUEST)))
        flood(raw, frame(CONTINUATION, 0, 1, b"\x00" * 16000), 100_000)

    verdict(attack(server, run), ENHANCE_YOUR_CALM)


def test_hpack_bomb(server: tuple[RunningServer, ssl.SSLContext]) -> None:
    encoder = hpack.Encoder()

    def run(raw: RawSocket) -> None:
        # One 4 KB field enters the dynamic table; then each 1-octet reference to it decodes
        # to 4 KB: 16 KB of frame would make 64 MB of headers.
        raw.send(
            frame(
                HEADERS,
                END_HEADERS | END_STREAM,
                1,
                encoder.encode([*REQUEST, (b"x-bomb", b"a" * 4000)]),
            )
        )
        block = b"\x82\x86\x84\xbf" + b"\xbe" * 16000  # GET http / :authority, then x-bomb...
        raw.send(frame(HEADERS, END_HEADERS | END_STREAM, 3, block))

    verdict(attack(server, run), ENHANCE_YOUR_CALM)


def test_zero_window_stall_releases_response_memory(
    server: tuple[RunningServer, ssl.SSLContext],
) -> None:
    encoder = hpack.Encoder()
    big = [(n, b"/big" if n == b":path" else v) for n, v in REQUEST]

    def run(raw: RawSocket) -> None:
        for stream_id in range(1, 80, 2):  # 40 streams x 1 MiB held by a window of 0
            raw.send(frame(HEADERS, END_HEADERS | END_STREAM, stream_id, encoder.encode(big)))
        # write_timeout is 1 s: every stream is reset and its message released.
        end = time.monotonic() + 15
        while time.monotonic() < end:
            raw.read(0.5)
            resets = [f for f in raw.received if isinstance(f, RstStreamFrame)]
            if len(resets) == 40:
                break

    raw = attack(server, run, (0x4, 0))
    resets = [f for f in raw.received if isinstance(f, RstStreamFrame)]
    assert len(resets) == 40
    assert {f.error_code for f in resets} == {CANCEL}
    assert not [f for f in raw.received if f.type == DATA and f.data]
