"""Process titles (``hypercorn: master [app:app]``) via the optional setproctitle package."""

from __future__ import annotations

__all__ = ["set_title", "title_for"]


def title_for(role: str, name: str, state: str = "") -> str:
    """``hypercorn: worker [app:app]``, with `` (booting)`` / `` (draining)`` when given:
    ``ps`` then tells a serving worker from one that is starting or on its way out."""
    title = f"hypercorn: {role} [{name}]" if name else f"hypercorn: {role}"
    return f"{title} ({state})" if state else title


def set_title(title: str) -> bool:
    """Set this process's title; False when setproctitle is not installed."""
    try:
        from setproctitle import setproctitle
    except ImportError:
        return False
    setproctitle(title)
    return True
