"""A production ASGI/WSGI server compatible with Hypercorn's public API."""

from __future__ import annotations

import gc as _gc

__version__ = "0.18.0"

#: The collector's thresholds before any app code ran (the first hypercorn import precedes the
#: app's): workers tune the collector only where the app left them as they were. The default
#: differs by version (700 young objects up to 3.12, 2000 in 3.13).
_gc_threshold_at_import = _gc.get_threshold()

__all__ = ["Config", "__version__"]


def __getattr__(name: str) -> object:
    # Config pulls in the settings registry; keep `import hypercorn` cheap for the CLI and forks.
    if name == "Config":
        from hypercorn.config import Config

        return Config
    raise AttributeError(name)
