"""Drawing a command's plots in a helper process that imports matplotlib while the command computes.

Importing matplotlib costs most of a second, about a tenth of a short
reconstruction. :class:`PlotWorker` forks a child at the start of a command;
the child imports the plotting modules at once (on its own core: no GIL is
shared) and then waits for the curves, draws them with
:func:`cryoscape.validate.fsc.save_fsc_plot` (the same function, so the same
file) and answers with the path. The command waits for that answer before it
returns, so the plot exists when the command ends. Where ``fork`` is not the
platform's way (not Linux) or the child is gone, the plot is drawn in the
command's own process: the same file, only later.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from pathlib import Path
from typing import Any, Callable

__all__ = ["PlotWorker"]

#: Seconds to wait for the helper's answer before drawing in this process.
_ANSWER_TIMEOUT_S = 120.0


def _serve(conn: Any) -> None:  # pragma: no cover - runs in the child process
    try:
        import matplotlib.backends.backend_agg  # noqa: F401
        import matplotlib.figure  # noqa: F401

        from cryoscape.validate.fsc import save_fsc_plot

        while True:
            request = conn.recv()
            if request is None:
                return
            try:
                conn.send(("ok", str(save_fsc_plot(**request))))
            except Exception as exc:  # noqa: BLE001 - reported to the parent, which draws the plot itself
                conn.send(("error", f"{type(exc).__name__}: {exc}"))
    except (EOFError, KeyboardInterrupt, BrokenPipeError):
        return
    finally:
        conn.close()


class PlotWorker:
    """A forked plotting helper (see the module docstring); use as a context manager."""

    def __init__(self) -> None:
        self._proc = None
        self._conn = None
        if not sys.platform.startswith("linux") or os.environ.get("CRYOSCAPE_NO_PLOT_WORKER"):
            return
        ctx = multiprocessing.get_context("fork")
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_serve, args=(child,), name="cryoscape-plots", daemon=True)
        proc.start()
        child.close()
        self._proc, self._conn = proc, parent

    @property
    def forked(self) -> bool:
        """Whether a helper process is running."""
        return self._proc is not None and self._proc.is_alive()

    def save_fsc_plot(self, path: str | os.PathLike, curves: Any, D: int, apix: float, **options: Any) -> Path:
        """:func:`cryoscape.validate.fsc.save_fsc_plot` drawn by the helper (in this process without one).

        An error of the helper's is raised again by drawing here, so it reads as it would without a helper.
        """
        return self.submit_fsc_plot(path, curves, D, apix, **options)()

    def submit_fsc_plot(self, path: str | os.PathLike, curves: Any, D: int, apix: float,
                        **options: Any) -> Callable[[], Path]:
        """Hand the plot to the helper now; the returned function waits for it and gives its path.

        The caller does other work (writing maps) while the helper draws. Without a
        helper, or when it fails, the plot is drawn in this process when the function is called.
        """
        from cryoscape.validate.fsc import save_fsc_plot

        request = {"path": str(path), "curves": {k: list(map(float, v)) for k, v in curves.items()},
                   "D": int(D), "apix": float(apix), **options}
        sent = False
        if self.forked:
            try:
                self._conn.send(request)
                sent = True
            except (OSError, BrokenPipeError):
                self.close()

        def finish() -> Path:
            if sent and self._conn is not None:
                try:
                    if self._conn.poll(_ANSWER_TIMEOUT_S):
                        status, value = self._conn.recv()
                        if status == "ok":
                            return Path(value)
                except (EOFError, OSError, BrokenPipeError):
                    pass
                self.close()
            return save_fsc_plot(**request)

        return finish

    def close(self) -> None:
        """Stop the helper (idempotent)."""
        if self._conn is not None:
            try:
                self._conn.send(None)
            except (OSError, BrokenPipeError):
                pass
            self._conn.close()
            self._conn = None
        if self._proc is not None:
            self._proc.join(timeout=5.0)
            if self._proc.is_alive():
                self._proc.terminate()
            self._proc = None

    def __enter__(self) -> "PlotWorker":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
