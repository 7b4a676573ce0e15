"""``hypercorn`` / ``python -m hypercorn``: parse the command line and run the server."""

from __future__ import annotations

import sys

from hypercorn.errors import AppLoadError, BootError, ConfigError, HaltServer

__all__ = ["main"]


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def main(sys_args: list[str] | None = None) -> int:
    """Run Hypercorn with ``sys_args`` (default ``sys.argv[1:]``); return the exit status.

    Operator errors (bad settings, an application that does not import, a failed boot) print
    one line, ``hypercorn: error: <message>``, on stderr and return their exit status (2, 4,
    3) without a traceback.
    """
    from hypercorn.conf.cli import config_from_args

    args = sys.argv[1:] if sys_args is None else sys_args
    try:
        try:
            config = config_from_args(args)
        except SystemExit as exc:  # --help / --version
            return exc.code if isinstance(exc.code, int) else 0
        from hypercorn.run import run

        return run(config)
    except (ConfigError, AppLoadError, BootError) as exc:
        print(f"hypercorn: error: {_one_line(exc)}", file=sys.stderr)
        return exc.exit_status
    except HaltServer as exc:
        print(f"hypercorn: error: {_one_line(exc)}", file=sys.stderr)
        return exc.exit_status


if __name__ == "__main__":
    sys.exit(main())
