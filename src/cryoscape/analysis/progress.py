"""Progress lines of the run analyses: the callback type and the helper that calls it."""

from __future__ import annotations

from typing import Callable

Progress = Callable[[str], None]
"""Receives one human-readable line per step."""


def say(progress: Progress | None, message: str) -> None:
    """Pass one progress line on, if anyone listens."""
    if progress is not None:
        progress(message)
