"""How many workers run, of which kind, and how they start, stop and recycle."""

from __future__ import annotations

from hypercorn.conf import parsers as p
from hypercorn.conf.setting import Setting, SettingsHolder

__all__ = ["LIFESPAN_MODES", "WORKER_CLASSES", "WorkerSettings"]

WORKER_CLASSES = ("asyncio", "uvloop", "trio")
#: Values of ``lifespan`` (uvicorn's ``--lifespan``).
LIFESPAN_MODES = ("auto", "on", "off")


class WorkerSettings(SettingsHolder):
    """Worker processes and their lifecycle."""

    workers = Setting(
        1,
        parse=p.non_negative_int,
        section="workers",
        flags=("-w", "--workers"),
        metavar="INT",
        help="""The number of worker processes to spawn and use. 0 serves from the current
        process without an arbiter.""",
    )
    worker_class = Setting(
        "asyncio",
        parse=p.one_of(*WORKER_CLASSES),
        section="workers",
        flags=("-k", "--worker-class"),
        metavar="CLASS",
        help="""The type of worker to use. Options include asyncio, uvloop (pip install
        hypercorn[uvloop]), and trio (pip install hypercorn[trio]).""",
    )
    worker_user = Setting(
        None,
        parse=p.user_id,
        section="workers",
        flags=("--worker-user",),
        metavar="USER",
        help="""User (id or name) the worker processes switch to after the master has bound
        the sockets and before they import the application; the master keeps its own user.
        Needs a root master. Not the same as upstream's *user* (`-u`), which only owns unix
        sockets.""",
    )
    worker_group = Setting(
        None,
        parse=p.group_id,
        section="workers",
        flags=("--worker-group",),
        metavar="GROUP",
        help="""Group (id or name) the worker processes switch to, with *worker_user*.
        Defaults to *worker_user*'s primary group.""",
    )
    max_requests = Setting(
        None,
        parse=p.zero_disables(p.positive_int),
        section="workers",
        flags=("--max-requests",),
        metavar="INT",
        help="""Maximum number of requests a worker will process before restarting gracefully.
        Under the arbiter the worker serves on until its replacement is ready, so as many
        workers serve as configured. None (the default) or 0 disables recycling.""",
    )
    max_requests_jitter = Setting(
        0,
        parse=p.non_negative_int,
        section="workers",
        flags=("--max-requests-jitter",),
        metavar="INT",
        help="""Adds randint(0, max_requests_jitter) to max_requests per worker, so workers do
        not all restart at once.""",
    )
    max_connections = Setting(
        None,
        parse=p.optional(p.positive_int),
        section="workers",
        flags=("--max-connections",),
        metavar="INT",
        help="""Maximum number of simultaneous connections per worker; further connections wait
        in the listen backlog. None (the default) is unlimited.""",
    )
    graceful_timeout = Setting(
        3.0,
        parse=p.non_negative_float,
        section="workers",
        flags=("--graceful-timeout",),
        metavar="SECONDS",
        help="""Time to wait after SIGTERM or Ctrl-C for any remaining requests (tasks) to
        complete before they are cancelled.""",
    )
    timeout = Setting(
        30.0,
        parse=p.positive_float,
        section="workers",
        flags=("-t", "--timeout"),
        metavar="SECONDS",
        help="""Worker heartbeat timeout: a worker whose event loop has not reported for this
        long is killed and replaced.""",
    )
    lifespan = Setting(
        "auto",
        parse=p.one_of(*LIFESPAN_MODES),
        section="workers",
        flags=("--lifespan",),
        metavar="MODE",
        help="""ASGI lifespan protocol. "auto" runs it and, as the ASGI spec asks, serves without
        it (one warning line) when the application does not speak it: it raises, returns or
        sends a non-lifespan message. "on" makes it required: those cases fail the boot like
        `lifespan.startup.failed` does (exit status 3). "off" never calls the application with
        the lifespan scope.""",
    )
    startup_timeout = Setting(
        60.0,
        parse=p.positive_float,
        section="workers",
        metavar="SECONDS",
        help="Time the ASGI lifespan startup may take before the worker gives up.",
    )
    shutdown_timeout = Setting(
        60.0,
        parse=p.positive_float,
        section="workers",
        metavar="SECONDS",
        help="""Time the ASGI lifespan shutdown may take before it is abandoned. It runs after
        the drain (graceful_timeout), on every stop and every worker recycle; the arbiter
        kills a worker only once both have passed.""",
    )
    preload_app = Setting(
        False,
        parse=p.boolean,
        section="workers",
        flags=("--preload",),
        action="store_true",
        help="""Import the application in the arbiter before forking workers: faster worker
        boot and shared memory, but code reloads need a full restart.""",
    )
    use_reloader = Setting(
        False,
        parse=p.boolean,
        section="workers",
        flags=("--reload",),
        action="store_true",
        help="""Enable automatic reloads on code changes: the application's own directory (or
        its package, when installed elsewhere) and *reload_dirs* are watched, with watchfiles
        when it is installed (the `reload` extra), otherwise by polling modification times.""",
    )
    reload_dirs: Setting[list[str]] = Setting(
        [],
        parse=p.string_list,
        section="workers",
        flags=("--reload-dir",),
        action="append",
        metavar="DIR",
        help="""More directories to watch for changes when *use_reloader* is on, besides the
        application's own directory. Repeatable.""",
    )
