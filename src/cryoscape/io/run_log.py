"""A run's ``log.txt``: timestamped lines appended in single writes, and a timer that logs a step's duration."""

from __future__ import annotations

import logging
import os
import time
from datetime import datetime
from pathlib import Path
from typing import Callable

__all__ = ["append_log_line", "LogTimer"]

_log = logging.getLogger("cryoscape.run")


def append_log_line(path: Path, message: str) -> None:
    """Append ``<ISO time>  message`` (whitespace collapsed) to the log file ``path`` in one ``O_APPEND`` write.

    The line is also passed to the ``cryoscape.run`` logger at INFO level.
    """
    line = f"{datetime.now().astimezone().isoformat(timespec='seconds')}  {' '.join(str(message).split())}\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
    try:
        os.write(fd, line.encode("utf-8"))
    finally:
        os.close(fd)
    _log.info("%s: %s", path.parent, message)


class LogTimer:
    """As a context, logs ``message: done in X s`` (or ``failed after X s (error)``) through ``log``."""

    def __init__(self, log: Callable[[str], object], message: str) -> None:
        self._log, self._message, self._start = log, message, time.perf_counter()

    def __enter__(self) -> "LogTimer":
        self._start = time.perf_counter()
        return self

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: object) -> None:
        elapsed = time.perf_counter() - self._start
        if exc_type is None:
            self._log(f"{self._message}: done in {elapsed:.2f} s")
        else:
            self._log(f"{self._message}: failed after {elapsed:.2f} s ({exc_type.__name__}: {exc})")
