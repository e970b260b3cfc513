"""Locating and starting a peer program: where it lives, and running it with its output in a log.

A peer is *run*, never imported: each lives in its own virtual environment
and is started as a separate program (:mod:`subprocess`). It is found at
``$CRYOSCAPE_CRYODRGN`` (``$CRYOSCAPE_RECOVAR``): a virtual environment folder
or the program itself; else ``benchmarks/_envs/cryodrgn``
(``benchmarks/_envs/recovar``) under the current working directory, as
``benchmarks/setup_envs.sh`` makes them.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from cryoscape.errors import CryoscapeError, InputError

__all__ = ["PeerError", "Peer", "CRYODRGN", "RECOVAR", "find_program", "unavailable_reason", "run_program"]


class PeerError(CryoscapeError):
    """A peer program failed or left no usable output (one line, with where its log is)."""


# ----------------------------------------------------------------------------- locating programs


@dataclass(frozen=True)
class Peer:
    """A peer program: registry name, executable name and the environment variable that points at it."""

    name: str
    program: str
    env_var: str

    def default_location(self) -> Path:
        """``benchmarks/_envs/<name>`` under the current working directory (read at call time)."""
        return Path.cwd() / "benchmarks" / "_envs" / self.name


CRYODRGN = Peer("cryodrgn", "cryodrgn", "CRYOSCAPE_CRYODRGN")
RECOVAR = Peer("recovar", "recovar", "CRYOSCAPE_RECOVAR")


def _candidate(peer: Peer) -> tuple[Path, str]:
    """Where the program should be and a phrase saying why we looked there."""
    value = os.environ.get(peer.env_var)
    base = Path(value).expanduser() if value else peer.default_location()
    origin = f"${peer.env_var}={value}" if value else f"{base} (set ${peer.env_var} to its venv or program)"
    exe = base / "bin" / peer.program if base.is_dir() else base
    return exe, origin


def unavailable_reason(peer: Peer) -> str | None:
    """None when ``peer``'s program is found and executable, else a one-line reason."""
    exe, origin = _candidate(peer)
    if exe.is_file() and os.access(exe, os.X_OK):
        return None
    return (f"{peer.program} not found at {exe} (from {origin}); "
            f"run benchmarks/setup_envs.sh or point ${peer.env_var} at its virtual environment")


def find_program(peer: Peer) -> Path:
    """The peer's executable; :class:`InputError` with the reason when it is missing."""
    reason = unavailable_reason(peer)
    if reason:
        raise InputError(reason)
    return _candidate(peer)[0]


# ----------------------------------------------------------------------------- running programs


def _thread_env(threads: int | None) -> dict[str, str]:
    """The current environment, with thread counts limited to ``threads`` where given."""
    env = dict(os.environ)
    if threads is not None:
        for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
            env[key] = str(int(threads))
    return env


def _last_line(log: Path) -> str:
    """The last non-empty line of ``log`` (for one-line errors)."""
    try:
        lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "no log"
    return lines[-1] if lines else "empty log"


def run_program(cmd: Sequence[str | os.PathLike], log: Path, threads: int | None = None,
                what: str = "peer program") -> float:
    """Run ``cmd`` with stdout and stderr appended to ``log``; wall seconds. :class:`PeerError` on failure."""
    log.parent.mkdir(parents=True, exist_ok=True)
    argv = [str(c) for c in cmd]
    t0 = time.perf_counter()
    with open(log, "ab") as fh:
        fh.write(f"$ {shlex.join(argv)}\n".encode())
        fh.flush()
        try:
            code = subprocess.run(argv, stdout=fh, stderr=subprocess.STDOUT, env=_thread_env(threads),
                                  stdin=subprocess.DEVNULL).returncode
        except OSError as exc:
            raise PeerError(f"cannot start {what} {argv[0]} ({exc}); reinstall it with benchmarks/setup_envs.sh") from exc
    if code != 0:
        raise PeerError(f"{what} failed (exit {code}): {_last_line(log)}; full log in {log}")
    return time.perf_counter() - t0
