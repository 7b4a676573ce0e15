"""REDbot (https://redbot.org) checks the server's responses: fixed length, chunked, HEAD,
204, 304 and 404, including the conditional and range sub-requests REDbot makes itself.

REDbot runs in a subprocess (it drives its own ``thor`` event loop) against ``serve()`` on
127.0.0.1; it needs no network beyond that. Skipped, with the reason, when REDbot is not
installed (it needs Python 3.11+; ``pip install redbot``, in the ``test`` extra).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap
from collections.abc import Callable
from typing import Any

import pytest

from tests.e2e.conftest import RunningServer

Scope = dict[str, Any]
RunServer = Callable[..., RunningServer]

pytestmark = pytest.mark.skipif(
    sys.version_info < (3, 11) or importlib.util.find_spec("redbot") is None,
    reason="REDbot is not installed (pip install redbot; it needs Python 3.11+)",
)

#: REDbot notes that mean the message framing is wrong, whatever their level.
FRAMING_NOTES = frozenset(
    {
        "BAD_CHUNK",
        "BODY_NOT_ALLOWED",
        "CL_AND_TE_PRESENT",
        "CL_BAD_SYNTAX",
        "CL_INCORRECT",
        "CONTENT_NOT_ALLOWED",
        "EXTRA_DATA",
        "HEADER_NAME_SPACE",
        "SINGLE_HEADER_REPEAT",
        "TRANSFER_CODING_UNWANTED",
        "FIELD_NAME_BAD_SYNTAX",
        "BAD_SYNTAX",
        "BAD_SYNTAX_DETAILED",
    }
)

RUNNER = textwrap.dedent(
    """
    import json
    import sys
    from configparser import ConfigParser

    import thor
    from redbot.resource import HttpResource

    parser = ConfigParser()
    parser.read_dict({"redbot": {"enable_local_access": "True"}})
    config = parser["redbot"]
    pending = json.loads(sys.argv[1])
    results = []


    def notes(fetcher):
        return [
            {"id": type(n).__name__, "level": n.level.name, "summary": str(n.summary)}
            for n in fetcher.response.notes
        ]


    def describe(fetcher):
        error = fetcher.fetch_error
        return {
            "status": fetcher.response.status_code,
            "error": None if error is None else f"{type(error).__name__}: {error.desc}",
            "notes": notes(fetcher),
        }


    def run_next():
        if not pending:
            thor.stop()
            return
        method, url = pending.pop(0)
        resource = HttpResource(config)
        resource.set_request(url, method=method)

        @thor.events.on(resource)
        def check_done():
            result = {"method": method, "url": url, **describe(resource)}
            result["subrequests"] = {
                name: describe(sub) for name, sub in resource.subreqs.items() if sub.fetch_started
            }
            results.append(result)
            thor.schedule(0, run_next)

        resource.check()


    thor.schedule(0, run_next)
    thor.schedule(50, thor.stop)
    thor.run()
    print(json.dumps(results))
    """
)

ETAG = b'"v1"'
LAST_MODIFIED = b"Mon, 01 Jan 2024 00:00:00 GMT"
BODY = b"redbot checks this body\n" * 40


async def app(scope: Scope, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    headers = dict(scope["headers"])
    path = scope["path"]
    common = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"cache-control", b"max-age=60"),
        (b"etag", ETAG),
        (b"last-modified", LAST_MODIFIED),
    ]
    status = 200
    if path == "/204":
        status = 204
    elif path == "/304" or headers.get(b"if-none-match") == ETAG:
        status = 304
    elif path == "/404":
        status = 404
    if path == "/chunked":
        await send({"type": "http.response.start", "status": status, "headers": common})
        for start in range(0, len(BODY), 100):
            piece = BODY[start : start + 100]
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    # Deliberately sends a body on 204/304/HEAD: the server must drop it.
    length = [(b"content-length", str(len(BODY)).encode())] if status == 200 else []
    await send({"type": "http.response.start", "status": status, "headers": common + length})
    await send({"type": "http.response.body", "body": BODY})


CHECKS = [
    ("GET", "/fixed", 200),
    ("GET", "/chunked", 200),
    ("HEAD", "/fixed", 200),
    ("HEAD", "/chunked", 200),
    ("GET", "/204", 204),
    ("GET", "/304", 304),
    ("GET", "/404", 404),
]


@pytest.fixture(params=["uvloop"])
def worker_class(request: pytest.FixtureRequest) -> str:
    """One loop is enough here: framing is decided above the backend."""
    return str(request.param)


def test_redbot_finds_no_framing_problems(run_server: RunServer) -> None:
    server = run_server(app)
    targets = [[method, server.url + path] for method, path, _ in CHECKS]
    completed = subprocess.run(
        [sys.executable, "-c", RUNNER, json.dumps(targets)],
        capture_output=True,
        text=True,
        timeout=55,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    results = json.loads(completed.stdout.strip().splitlines()[-1])
    assert len(results) == len(CHECKS), completed.stdout

    problems = []
    for (method, path, status), result in zip(CHECKS, results, strict=True):
        fetches = {"": result, **result["subrequests"]}
        if result["status"] != status:
            problems.append(f"{method} {path}: status {result['status']}, expected {status}")
        for name, fetch in fetches.items():
            where = f"{method} {path}" + (f" ({name} sub-request)" if name else "")
            if fetch["error"]:
                problems.append(f"{where}: {fetch['error']}")
            for note in fetch["notes"]:
                if note["level"] == "BAD" or note["id"] in FRAMING_NOTES:
                    problems.append(f"{where}: {note['id']} {note['level']}: {note['summary']}")
    assert not problems, "\n".join(problems)
