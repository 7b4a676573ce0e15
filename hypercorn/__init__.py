"""A production ASGI/WSGI server compatible with Hypercorn's public API."""

from __future__ import annotations

__version__ = "0.18.0"

__all__ = ["Config", "__version__"]


def __getattr__(name: str) -> object:
    # Config pulls in the settings registry; keep `import hypercorn` cheap for the CLI and forks.
    if name == "Config":
        from hypercorn.config import Config

        return Config
    raise AttributeError(name)
