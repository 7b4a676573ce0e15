"""The strict front door (``http1.frontdoor`` and ``http1.judge``): limits at their
boundaries, EOF, pipelining, the fast path against the reference judgement, and the parser
factory."""

from __future__ import annotations

import importlib
import pkgutil
import re
import sys
from typing import Any

import pytest

import hypercorn
from hypercorn.protocols.errors import RemoteProtocolError
from hypercorn.protocols.http1 import fieldlines, frontdoor, judge
from hypercorn.protocols.http1.frontdoor import StrictH1Parser
from hypercorn.protocols.http1.h11_tokeniser import H11HeadParser
from hypercorn.protocols.http1.httptools_tokeniser import HttptoolsHeadParser
from hypercorn.protocols.http1.judge import CHUNKED, judge_head, judge_head_slowly
from hypercorn.protocols.http1.parser import (
    CLOSED,
    END_OF_MESSAGE,
    NEED_DATA,
    PAUSED,
    H1Parser,
    ParserEvent,
    RequestHead,
)
from hypercorn.protocols.http1.selection import make_parser
from hypercorn.protocols.limits import ProtocolLimits
from tests.support.corpus import SPLITS, load_corpus, replay_parser, split_bytes

LIMITS = ProtocolLimits()
GET = b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"


@pytest.fixture(params=["h11", "httptools"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def events(parser: H1Parser) -> list[ParserEvent]:
    """Events until the parser needs something (data, a new cycle) or is closed."""
    out = []
    while True:
        event = parser.next_event()
        out.append(event)
        if event in (NEED_DATA, PAUSED, CLOSED):
            return out


def status_of(data: bytes, kind: str, limits: ProtocolLimits = LIMITS) -> set[int | None]:
    """The error status for ``data`` under every split (a set, to show disagreements)."""
    return {
        replay_parser(make_parser(kind, limits), split_bytes(data, split)).status
        for split in SPLITS
    }


def head_of(data: bytes) -> bytes:
    return data[: data.index(b"\r\n\r\n") + 4]


# -- the fast path is only a shortcut ---------------------------------------------------------


def _judge(judge: object, head: bytes) -> object:
    try:
        return judge(head, LIMITS)  # type: ignore[operator]
    except RemoteProtocolError as exc:
        return exc.status_hint


@pytest.mark.parametrize("case", load_corpus(), ids=str)
def test_fast_path_agrees_with_the_reference(case: object) -> None:
    data = case.data.lstrip(b"\r\n")  # type: ignore[attr-defined]
    if b"\r\n\r\n" in data:
        head = head_of(data)
        assert _judge(judge_head, head) == _judge(judge_head_slowly, head)


def test_fast_path_results() -> None:
    assert judge_head(GET, LIMITS) == 0
    post = b"POST / HTTP/1.1\r\ncontent-length:  12 \r\nHost: a\r\n\r\n"
    assert judge_head(post, LIMITS) == judge_head_slowly(post, LIMITS) == 12
    chunked = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    assert judge_head(chunked, LIMITS) == CHUNKED


@pytest.mark.parametrize(
    "head",
    [
        b"GET / HTTP/1.1\r\nHost:\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: \t \r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: \t:80 \t\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost:[::1]:8000\t\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX:  \t  \r\nY:\t v w \r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \t 7 \t\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 1234567890123456789\r\nHost: a\r\n\r\n",
    ],
)
def test_whitespace_around_values_is_judged_alike(head: bytes) -> None:
    assert _judge(judge_head, head) == _judge(judge_head_slowly, head)


# Heads built to make a backtracking regex take quadratic time (each ~1 MB: seconds per
# hundred KB if any pattern backtracked quadratically, so the per-test timeout catches it).
_N = 1_000_000
_BIG = ProtocolLimits(max_incomplete_size=4 * _N, max_request_line_size=4 * _N, max_header_count=_N)


@pytest.mark.parametrize(
    ("head", "verdict"),
    [
        (b"GET / HTTP/1.1\r\nHost:" + b" " * _N + b"x y\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost:" + b" \t" * (_N // 2) + b"\x01\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX:" + b" " * _N + b"\x01\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\n" + b"X-A: bbbbbbbbbb\r\n" * (_N // 16) + b"\r\n", 400),
        (
            b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n"
            + b"X-A: b\r\n" * (_N // 8)
            + b"Content-Length: 1\r\n\r\n",
            400,
        ),
        (b"GET / HTTP/1.1\r\nHost: a\r\n" + b"x" * _N + b"\r\n\r\n", 400),
        (b"GET /" + b"a" * _N + b" HTTP/1.1\r\nHost:  a  \r\n\r\n", 0),
    ],
)
def test_pathological_heads_are_judged_in_linear_time(head: bytes, verdict: int) -> None:
    for judge_it in (judge_head, judge_head_slowly):
        try:
            result = judge_it(head, _BIG)
        except RemoteProtocolError as exc:
            result = exc.status_hint
        assert result == verdict


def test_pathological_chunk_lines_and_trailers_are_judged_in_linear_time() -> None:
    for line, ok in [
        (b'1;a="' + b'\\"' * (_N // 2), False),
        (b"1" + b";a=b" * (_N // 4) + b";", False),
        (b"1;" + b"a" * _N + b"=", False),
        (b"1" + b';a="x"' * (_N // 6) + b'"', False),
        (b"1" + b';a="x\\""' * (_N // 8), True),
    ]:
        assert (judge.CHUNK_LINE_RE.fullmatch(line) is not None) is ok
    trailers = b"X: a\r\n" * (_N // 6) + b"X: \x01\r\n\r\n"
    assert judge._TRAILERS_RE.fullmatch(trailers) is None
    assert judge._FIELD_RE.fullmatch(b"X:" + b" \t" * (_N // 2) + b"\x7f") is None


def test_a_repeated_head_is_taken_from_the_memo(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    limits = ProtocolLimits()
    first = make_parser(kind, limits).take_head(GET)
    assert first is not None

    def judged_again(head: bytes, limits: ProtocolLimits) -> None:
        raise AssertionError("a head seen before was judged again")

    monkeypatch.setattr(frontdoor, "fast_match", judged_again)
    monkeypatch.setattr(frontdoor, "split_head", judged_again)
    first.headers.append((b"x-app", b"changed"))  # an app changing its scope's list
    parser = make_parser(kind, limits)
    second = parser.take_head(GET)
    assert second == first._replace(headers=[(b"host", b"example.com")])
    assert parser.next_event() is NEED_DATA  # complete, as on the first path
    parser.start_next_cycle()
    assert parser.take_head(GET) == second
    # A different head is judged (here: by the patched judge).
    with pytest.raises(AssertionError, match="judged again"):
        make_parser(kind, limits).take_head(GET.replace(b"/", b"/other", 1))


def test_the_memo_keeps_verdicts_apart_per_limits(kind: str) -> None:
    head = GET[:-2] + b"X-1: a\r\nX-2: b\r\n\r\n"
    tight = ProtocolLimits(max_header_count=2)
    assert make_parser(kind, LIMITS).take_head(head) is not None
    assert make_parser(kind, tight).take_head(head) is None
    assert status_of(head, kind, tight) == {431}


def test_the_memo_is_bounded() -> None:
    limits = ProtocolLimits()
    for i in range(frontdoor._KNOWN_HEADS_SIZE * 2):
        make_parser("httptools", limits).take_head(b"GET /%d HTTP/1.1\r\nHost: a\r\n\r\n" % i)
    known = frontdoor.known_heads_for(limits, HttptoolsHeadParser())
    assert 0 < len(known) <= frontdoor._KNOWN_HEADS_SIZE
    big = GET[:-2] + b"X: " + b"a" * frontdoor._KNOWN_HEAD_MAX + b"\r\n\r\n"
    assert make_parser("httptools", limits).take_head(big) is not None
    assert big not in known


def test_the_line_memo_is_bounded() -> None:
    # A client sending endless new lines and names only makes the memos restart.
    parser = make_parser("httptools", LIMITS)
    for i in range(fieldlines.KNOWN_LINES_SIZE * 3):
        head = b"GET / HTTP/1.1\r\nHost: a\r\nX-%d: %d\r\nX: %d\r\n\r\n" % (i, i, i)
        assert parser.take_head(head) is not None
        parser.start_next_cycle()
        assert 0 < len(fieldlines._known_lines) <= fieldlines.KNOWN_LINES_SIZE
        assert 0 < len(fieldlines._known_names) <= fieldlines.KNOWN_NAMES_SIZE
    long_line = b"X: " + b"a" * fieldlines.KNOWN_LINE_MAX
    assert parser.take_head(b"GET / HTTP/1.1\r\nHost: a\r\n" + long_line + b"\r\n\r\n")
    assert long_line not in fieldlines._known_lines


@pytest.mark.parametrize(
    ("bad", "status"),
    [
        (b" X-A: b", 400),  # obs-fold
        (b"X-A : b", 400),  # whitespace before the colon
        (b"X-A: b\x00", 400),
        (b"X-A: b\x7f", 400),
        (b"X-A: b\rc", 400),  # a bare CR inside the line
        (b"X-A: b\nc", 400),
        (b"X-A", 400),  # a known name without a colon
        (b"Host: a", 400),  # a second Host, identical to the first
        (b"Content-Length: 1", None),  # a body: the general path's
    ],
)
def test_a_known_line_lets_no_similar_line_through(
    kind: str, bad: bytes, status: int | None
) -> None:
    good = b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n\r\n"
    assert make_parser(kind, LIMITS).take_head(good) is not None  # now in the memos
    head = good[:-2] + bad + b"\r\n\r\n"
    assert make_parser(kind, LIMITS).take_head(head) is None
    if status is not None:
        assert status_of(head, kind) == {status}


def test_line_path_values_are_exact(kind: str) -> None:
    head = (
        b"GET /a?b HTTP/1.1\r\nHOST:  a:1 \r\nX-T:\t v\tw \t\r\nX-O: \xff\xfe\r\n"
        b"X-E:\r\nConnection: close\r\n\r\n"
    )
    taken = make_parser(kind, LIMITS).take_head(head)
    assert taken is not None
    assert taken.headers == [
        (b"host", b"a:1"),
        (b"x-t", b"v\tw"),
        (b"x-o", b"\xff\xfe"),
        (b"x-e", b""),
        (b"connection", b"close"),
    ]
    assert not taken.keep_alive


def test_pathological_host_lines_are_judged_in_linear_time() -> None:
    assert judge.HOST_FIELD_RE.fullmatch(b"Host:" + b" \t" * (_N // 2) + b"\x01") is None


# -- limits at their boundaries, whatever the segmentation --------------------------------------


def test_head_size_limit_boundary(kind: str) -> None:
    limits = ProtocolLimits(max_incomplete_size=200)
    filler = 200 - len(GET) - len(b"X: \r\n")
    fits = GET[:-2] + b"X: " + b"a" * filler + b"\r\n\r\n"
    assert len(fits) == 200
    assert status_of(fits, kind, limits) == {None}
    over = GET[:-2] + b"X: " + b"a" * (filler + 1) + b"\r\n\r\n"
    assert status_of(over, kind, limits) == {431}


def test_header_count_limit_boundary(kind: str) -> None:
    limits = ProtocolLimits(max_header_count=5)
    fields = b"".join(b"X-%d: v\r\n" % i for i in range(4))
    assert status_of(GET[:-2] + fields + b"\r\n", kind, limits) == {None}
    assert status_of(GET[:-2] + fields + b"Y: 1\r\n\r\n", kind, limits) == {431}


def test_request_line_limit_boundary(kind: str) -> None:
    limits = ProtocolLimits(max_request_line_size=40)
    target = b"/" + b"a" * (40 - len(b"GET  HTTP/1.1") - 1)
    line = b"GET " + target + b" HTTP/1.1"
    assert len(line) == 40
    assert status_of(line + b"\r\nHost: a\r\n\r\n", kind, limits) == {None}
    assert status_of(b"GET a" + target + b" HTTP/1.1\r\nHost: a\r\n\r\n", kind, limits) == {414}


def test_limits_hold_before_the_head_ends(kind: str) -> None:
    """A head that never ends is refused once it is certain to break a limit."""
    parser = make_parser(kind, LIMITS)
    parser.feed(b"GET / HTTP/1.1\r\nHost: a\r\nX: ")
    assert events(parser) == [NEED_DATA]
    for _ in range(15):
        parser.feed(b"a" * 1024)
        assert events(parser) == [NEED_DATA]
    parser.feed(b"a" * 1024)
    with pytest.raises(RemoteProtocolError) as info:
        parser.next_event()
    assert info.value.status_hint == 431
    parser = make_parser(kind, LIMITS)
    parser.feed(b"GET / HTTP/1.1\r\nHost: a\r\n" + b"X: 1\r\n" * 101)
    with pytest.raises(RemoteProtocolError) as info:
        parser.next_event()
    assert info.value.status_hint == 431


def test_bare_lf_is_refused_before_the_head_ends(kind: str) -> None:
    parser = make_parser(kind, LIMITS)
    parser.feed(b"GET / HTTP/1.1\nHost: a\n")
    with pytest.raises(RemoteProtocolError) as info:
        parser.next_event()
    assert info.value.status_hint == 400


def test_chunk_size_line_limit(kind: str) -> None:
    head = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    ext = b";x=" + b"y" * 5000
    assert status_of(head + b"1" + ext + b"\r\na\r\n0\r\n\r\n", kind) == {400}
    assert status_of(head + b"1;x=" + b"y" * 4000 + b"\r\na\r\n0\r\n\r\n", kind) == {None}


def test_trailer_limits(kind: str) -> None:
    limits = ProtocolLimits(max_header_count=3)
    head = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n"
    assert status_of(head + b"A: 1\r\nB: 2\r\nC: 3\r\n\r\n", kind, limits) == {None}
    assert status_of(head + b"A: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n", kind, limits) == {431}
    assert status_of(head + b"A : 1\r\n\r\n", kind, limits) == {400}


# -- EOF, pipelining and the cycle --------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\r\nHost: a\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhel",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: 1\r\n",
        b"\r",
    ],
)
def test_eof_inside_a_request_is_an_error(kind: str, data: bytes) -> None:
    parser = make_parser(kind, LIMITS)
    parser.feed(data)
    parser.feed(b"")
    with pytest.raises(RemoteProtocolError) as info:
        events(parser)
    assert info.value.status_hint == 400


def test_eof_between_requests_is_a_clean_close(kind: str) -> None:
    parser = make_parser(kind, LIMITS)
    parser.feed(b"")
    assert events(parser) == [CLOSED]
    assert parser.next_event() is CLOSED
    parser = make_parser(kind, LIMITS)
    parser.feed(GET + b"\r\n")
    parser.feed(b"")
    got = events(parser)
    assert got[1:] == [END_OF_MESSAGE, PAUSED]
    parser.start_next_cycle()
    assert events(parser) == [CLOSED]


def test_pipelined_bytes_wait_for_the_next_cycle(kind: str) -> None:
    parser = make_parser(kind, LIMITS)
    bad = b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"
    parser.feed(GET + bad)
    got = events(parser)
    assert isinstance(got[0], RequestHead)
    assert got[1:] == [END_OF_MESSAGE, PAUSED]
    assert parser.next_event() is PAUSED  # nothing is parsed before start_next_cycle
    assert parser.trailing_data == (bad, False)
    parser.start_next_cycle()
    with pytest.raises(RemoteProtocolError) as first:
        parser.next_event()
    with pytest.raises(RemoteProtocolError) as again:
        parser.next_event()
    assert again.value is first.value  # a dead parser stays dead
    parser.feed(GET)
    with pytest.raises(RemoteProtocolError):
        parser.next_event()


def test_upgrade_leaves_the_following_bytes_as_trailing_data(kind: str) -> None:
    parser = make_parser(kind, LIMITS)
    head = b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: WebSocket\r\n\r\n"
    parser.feed(head + b"\x81\x85frame")
    got = events(parser)
    assert isinstance(got[0], RequestHead)
    assert got[0].upgrade == b"websocket"
    assert got[1:] == [END_OF_MESSAGE, PAUSED]
    assert parser.trailing_data == (b"\x81\x85frame", False)


def test_upgrade_with_a_body_reads_the_body_first(kind: str) -> None:
    """llhttp would skip the body of an Upgrade request; the door frames it like h11."""
    parser = make_parser(kind, LIMITS)
    parser.feed(
        b"POST / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
        b"HTTP2-Settings: AAMAAABkAAQAAP__\r\nContent-Length: 3\r\n\r\nabcPRI"
    )
    got = events(parser)
    assert got[1:] == [b"abc", END_OF_MESSAGE, PAUSED]
    assert parser.trailing_data == (b"PRI", False)


def test_empty_lines_before_a_request_split_anywhere(kind: str) -> None:
    for split in SPLITS:
        outcome = replay_parser(
            make_parser(kind, LIMITS), split_bytes(b"\r\n\r\n" + GET + b"\r\n" + GET, split)
        )
        assert outcome.status is None
        assert len(outcome.requests) == 2


def test_request_facts(kind: str) -> None:
    parser = make_parser(kind, LIMITS)
    parser.feed(
        b"POST /x?y HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\nExpect: 100-continue\r\n"
        b"Content-Length: 1\r\n\r\nz"
    )
    head = parser.next_event()
    assert isinstance(head, RequestHead)
    assert (head.method, head.target, head.http_version) == (b"POST", b"/x?y", b"1.0")
    assert head.keep_alive is False  # HTTP/1.0 connections close (as with h11)
    assert head.expect_continue is False  # only on HTTP/1.1
    assert head.has_body is True
    parser = make_parser(kind, LIMITS)
    parser.feed(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: CHUNKED\r\n\r\n0\r\n\r\n")
    head = parser.next_event()
    assert isinstance(head, RequestHead)
    assert (b"transfer-encoding", b"chunked") in head.headers
    assert head.has_body is True


def test_httptools_parser_is_reused_only_at_a_message_start() -> None:
    head_parser = HttptoolsHeadParser()
    parser = StrictH1Parser(head_parser, LIMITS)
    post = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx"
    parser.feed(GET + post + b"GET /z HTTP/1.1\r\nHost: a\r\n\r\n")
    targets = []
    for _ in range(3):
        targets += [event.target for event in events(parser) if isinstance(event, RequestHead)]
        parser.start_next_cycle()
    assert targets == [b"/", b"/", b"/z"]


# -- the factory --------------------------------------------------------------------------------


def test_make_parser_kinds() -> None:
    assert isinstance(make_parser("auto", LIMITS), StrictH1Parser)
    auto = make_parser("auto", LIMITS)
    assert isinstance(auto._head_parser, HttptoolsHeadParser)  # type: ignore[attr-defined]
    h11 = make_parser("h11", LIMITS)
    assert isinstance(h11._head_parser, H11HeadParser)  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="http1_parser"):
        make_parser("llhttp", LIMITS)


def _needs_python_3_11(pattern: re.Pattern[Any]) -> bool:
    """Whether ``pattern`` uses a possessive quantifier or an atomic group (3.11+ only)."""
    parser = importlib.import_module("re._parser")  # 3.11+: only there can these compile

    def walk(node: Any) -> bool:
        if isinstance(node, (list, tuple)) or type(node).__name__ == "SubPattern":
            return any(walk(item) for item in node)
        return str(node) in ("POSSESSIVE_REPEAT", "ATOMIC_GROUP")

    return walk(parser.parse(pattern.pattern, pattern.flags))


@pytest.mark.skipif(sys.version_info < (3, 11), reason="3.10 fails to import such patterns")
def test_no_pattern_needs_python_3_11() -> None:
    """``make test`` runs one interpreter, so every compiled pattern of the package is checked
    here for syntax that CPython 3.10 cannot compile."""
    found = []
    for info in pkgutil.walk_packages(hypercorn.__path__, "hypercorn."):
        try:
            module = importlib.import_module(info.name)
        except ImportError:  # an optional extra that is not installed
            continue
        for name, value in vars(module).items():
            pattern = getattr(value, "__self__", value)  # a bound .match/.search counts too
            if isinstance(pattern, re.Pattern) and _needs_python_3_11(pattern):
                found.append(f"{info.name}.{name}")
    assert found == []


def test_a_connection_of_new_heads_stores_few_of_them() -> None:
    limits = ProtocolLimits()
    known = frontdoor.known_heads_for(limits, HttptoolsHeadParser())
    known.clear()
    parser = make_parser("httptools", limits)
    heads = [b"GET /%d HTTP/1.1\r\nHost: a\r\n\r\n" % i for i in range(64)]
    for head in heads:
        assert parser.take_head(head) is not None
        parser.start_next_cycle()
    retry = frontdoor._KNOWN_HEAD_RETRY
    assert sum(head in known for head in heads) == retry + (64 - retry) // retry
    # A head seen again is still found, and a new connection stores its first heads.
    assert parser.take_head(heads[-1]) is not None
    assert make_parser("httptools", limits).take_head(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
    assert b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n" in known


@pytest.mark.parametrize(
    "request_line",
    [
        b"GET  / HTTP/1.1",
        b"GET / x HTTP/1.1",
        b"GET /HTTP/1.1",
        b" / HTTP/1.1",
        b"GET / HTTP/1.1 ",
        b"GET /\t HTTP/1.1",
        b"GET /\xff HTTP/1.1",
        b"GET / HTTP/1.2",
    ],
)
def test_bad_request_lines_are_not_taken(kind: str, request_line: bytes) -> None:
    head = request_line + b"\r\nHost: a\r\n\r\n"
    assert make_parser(kind, LIMITS).take_head(head) is None
    assert status_of(head, kind) - {None} == status_of(head, kind)
