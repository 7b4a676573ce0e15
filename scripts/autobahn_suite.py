"""Autobahn|Testsuite's fuzzing client against this server's WebSockets.

    .venv/bin/python scripts/autobahn_suite.py            # every case; report in autobahn/
    .venv/bin/python scripts/autobahn_suite.py --ci       # the CI selection (tests/e2e)

The fuzzing client (``wstest -m fuzzingclient``) runs on Python 2.7 (found as
``$AUTOBAHN_PYTHON``, pyenv's 2.7.18, or ``python2.7`` on PATH). Its packages are installed
once, pinned (``scripts/autobahn-py27.txt``), with that interpreter's pip into
``.autobahn/py27`` (git-ignored; reinstalled when the pins change). The server is this
project's ``hypercorn`` on 127.0.0.1 with an echo app (``echo`` below), on a port the
kernel picked. The summary counts the verdicts; the exit status is 1 if any case FAILED (or
is UNIMPLEMENTED: permessage-deflate not negotiated), and the HTML/JSON report is in
``autobahn/report/`` (git-ignored).
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".autobahn"
PINS = Path(__file__).resolve().parent / "autobahn-py27.txt"
#: The cases CI runs: the core protocol, 64 KiB to 1 MiB messages, and compression.
CI_CASES = ["1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "9.1.1", "9.1.2", "9.1.3", "10.*"]
CI_CASES += ["12.1.*"]
#: Verdicts that fail the run (NON-STRICT and INFORMATIONAL are fine).
BAD = frozenset(("FAILED", "UNIMPLEMENTED", "WRONG CODE", "UNCLEAN"))
# wstest's entry point, run with the cached packages as a site dir (their .pth files make the
# zope namespace package importable, which PYTHONPATH alone would not).
_SHIM = (
    "import site, sys; site.addsitedir(sys.argv.pop(1)); "
    "from autobahntestsuite.wstest import run; run()"
)


async def echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Echoes every WebSocket message (the testee Autobahn expects)."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["type"] != "websocket":
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    await receive()
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        await send({"type": "websocket.send", "bytes": message["bytes"], "text": message["text"]})


def python27() -> str | None:
    """The Python 2.7 interpreter to run wstest with, or None."""
    for candidate in (
        os.environ.get("AUTOBAHN_PYTHON"),
        str(Path.home() / ".pyenv/versions/2.7.18/bin/python"),
        shutil.which("python2.7"),
    ):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def ensure_wstest(python: str) -> list[str]:
    """The wstest command line, installing the pinned packages first if needed."""
    target = CACHE / "py27"
    stamp = target / ".pins"
    pins = PINS.read_bytes()
    digest = hashlib.sha256(pins + python.encode()).hexdigest()
    if not stamp.is_file() or stamp.read_text() != digest:
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        subprocess.run(
            [
                python,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--no-deps",
                "--target",
                str(target),
                "-r",
                str(PINS),
            ],
            check=True,
            timeout=900,
        )
        stamp.write_text(digest)
    return [python, "-c", _SHIM, str(target)]


def run_cases(
    wstest: list[str], url: str, cases: list[str], outdir: Path, timeout: float
) -> dict[str, tuple[str, str]]:
    """Run ``cases`` against ``url``; {case: (behavior, behaviorClose)} from the report."""
    outdir.mkdir(parents=True, exist_ok=True)
    spec = {
        "outdir": str(outdir),
        "servers": [{"agent": "hypercorn", "url": url}],
        "cases": cases,
        "exclude-cases": [],
        "exclude-agent-cases": {},
    }
    with tempfile.TemporaryDirectory() as scratch:
        spec_file = Path(scratch) / "spec.json"
        spec_file.write_text(json.dumps(spec))
        log = outdir / "wstest.log"
        with log.open("wb") as out:
            subprocess.run(
                [*wstest, "-m", "fuzzingclient", "-s", str(spec_file)],
                cwd=scratch,
                stdout=out,
                stderr=subprocess.STDOUT,
                check=True,
                timeout=timeout,
            )
    index = json.loads((outdir / "index.json").read_text())["hypercorn"]
    return {case: (v["behavior"], v["behaviorClose"]) for case, v in index.items()}


def failures(results: dict[str, tuple[str, str]]) -> list[str]:
    return sorted(
        (f"{case}: {behavior} / close {close}")
        for case, (behavior, close) in results.items()
        if behavior in BAD or close in BAD
    )


def summary(results: dict[str, tuple[str, str]]) -> str:
    counts = collections.Counter(behavior for behavior, _ in results.values())
    closes = collections.Counter(close for _, close in results.values())
    return (
        f"{len(results)} cases: "
        + ", ".join(f"{n} {verdict}" for verdict, n in sorted(counts.items()))
        + "; closing handshake: "
        + ", ".join(f"{n} {verdict}" for verdict, n in sorted(closes.items()))
    )


def _serve(port_sock: socket.socket) -> subprocess.Popen[bytes]:
    """This project's hypercorn on the bound socket (fd://), serving ``echo``."""
    hypercorn = Path(sys.executable).parent / "hypercorn"
    return subprocess.Popen(
        [
            str(hypercorn),
            *("--bind", f"fd://{port_sock.fileno()}", "--graceful-timeout", "2"),
            "autobahn_suite:echo",
        ],
        cwd=Path(__file__).resolve().parent,
        pass_fds=(port_sock.fileno(),),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ci", action="store_true", help="only the CI selection of cases")
    parser.add_argument("--cases", nargs="*", help="case patterns (default: all, or --ci's)")
    parser.add_argument("--out", type=Path, default=ROOT / "autobahn" / "report")
    args = parser.parse_args(argv)
    python = python27()
    if python is None:
        print("Python 2.7 not found (set AUTOBAHN_PYTHON): Autobahn|Testsuite needs it")
        return 2
    wstest = ensure_wstest(python)
    cases = args.cases or (CI_CASES if args.ci else ["*"])
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    server = _serve(sock)
    try:
        port = sock.getsockname()[1]
        results = run_cases(wstest, f"ws://127.0.0.1:{port}", cases, args.out, 3600)
    finally:
        server.terminate()
        server.wait(30)
        sock.close()
    print(summary(results))
    bad = failures(results)
    for line in bad:
        print("  " + line)
    print(f"report: {args.out / 'index.html'}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
