"""The arbiter process itself: pid file, daemonising, its name, debug mode."""

from __future__ import annotations

from hypercorn.conf import parsers as p
from hypercorn.conf.setting import Setting, SettingsHolder

__all__ = ["ProcessSettings"]


class ProcessSettings(SettingsHolder):
    """How the server process presents itself to the operating system."""

    pid_path = Setting(
        None,
        parse=p.optional(p.string),
        section="process",
        flags=("-p", "--pid"),
        metavar="PATH",
        help="Location to write the PID (Program ID) of the arbiter to.",
    )
    daemon = Setting(
        False,
        parse=p.boolean,
        section="process",
        flags=("-D", "--daemon"),
        action="store_true",
        help="""Detach from the terminal and run in the background (double fork; stdio is
        redirected to /dev/null, so set *errorlog* to a file).""",
    )
    proc_name = Setting(
        None,
        parse=p.optional(p.string),
        section="process",
        flags=("-n", "--name"),
        metavar="NAME",
        help="""A name for the process titles (`hypercorn: master [NAME]`); needs
        setproctitle. Defaults to the application path.""",
    )
    debug = Setting(
        False,
        parse=p.boolean,
        section="process",
        flags=("--debug",),
        action="store_true",
        help="Enable debug mode, i.e. extra logging and checks (including asyncio debug mode).",
    )
    strict_config = Setting(
        False,
        parse=p.boolean,
        section="process",
        flags=("--strict-config",),
        action="store_true",
        help="""Treat configuration keys that are not settings (in the `-c` file, a mapping
        or a Python config that has a misspelt setting name) as errors, exit status 2, instead
        of warning and ignoring them. For CI.""",
    )
