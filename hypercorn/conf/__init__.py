"""The settings system: ``Setting`` descriptors, their parsers, section mixins, CLI, loaders.

``hypercorn.config.Config`` is the public face; this package imports no event loop, socket or
worker module, so building a Config is cheap in the arbiter and in tools.
"""

from __future__ import annotations

from hypercorn.conf.setting import REGISTRY, SECTIONS, Setting, settings

__all__ = ["REGISTRY", "SECTIONS", "Setting", "settings"]
