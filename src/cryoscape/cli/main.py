"""The ``cryoscape`` command: one sub-command per module in this package.

Each command module defines ``add_parser(subparsers) -> argparse.ArgumentParser``
and ``run(args) -> int``. Numerical work lives in the library; these modules
only parse arguments, call the library and report.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings
from contextlib import contextmanager
from typing import Iterator, Sequence, TextIO

from cryoscape.errors import CryoscapeError

COMMANDS: tuple[str, ...] = (
    "demo",
    "simulate",
    "info",
    "reconstruct",
    "refine",
    "fsc",
    "fit",
    "volume",
    "downsample",
    "analyze",
    "select",
    "traverse",
    "compare",
    "bench",
)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every sub-command registered."""
    from cryoscape import __version__

    parser = argparse.ArgumentParser(
        prog="cryoscape",
        description="Cryo-EM single-particle analysis of macromolecules that change shape.",
    )
    parser.add_argument("--version", action="version", version=f"cryoscape {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    for name in COMMANDS:
        module = importlib.import_module(f"cryoscape.cli.{name}")
        p = module.add_parser(sub)
        p.set_defaults(_run=module.run)
    return parser


def _note_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: TextIO | None = None, line: str | None = None) -> None:
    """Print a warning as one line ``cryoscape: note: <message>``, without its source file and line."""
    stream = sys.stderr if file is None else file
    text = " ".join(str(message).split())
    try:
        stream.write(f"cryoscape: note: {text}\n")
    except (OSError, ValueError):  # stderr closed or gone: the note is lost, the run goes on
        pass


@contextmanager
def warnings_as_notes() -> Iterator[None]:
    """Within the block, show each warning that reaches the user as one ``cryoscape: note:`` line.

    Warnings keep Python's own form (category, file and source line) when the
    user set ``PYTHONWARNINGS``, so that they can still be traced or filtered.
    The previous ``warnings.showwarning`` is restored on exit.
    """
    if os.environ.get("PYTHONWARNINGS"):
        yield
        return
    previous = warnings.showwarning
    warnings.showwarning = _note_warning
    try:
        yield
    finally:
        warnings.showwarning = previous


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; user errors print one line and return 2, warnings one ``cryoscape: note:`` line each."""
    with warnings_as_notes():
        return _main(argv)


def _main(argv: Sequence[str] | None) -> int:
    """Parse ``argv`` and run the chosen sub-command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return 1
    try:
        return int(args._run(args) or 0)
    except CryoscapeError as exc:
        print(f"cryoscape: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cryoscape: interrupted", file=sys.stderr)
        return 130


def entry() -> None:
    """The ``cryoscape`` console command: :func:`main`, then a quick exit with its status.

    When a command returns, its files are written and closed; what remains is the
    interpreter tearing down torch, numba and pandas module by module (about half a
    second on two cores). The exit handlers run and the standard streams are
    flushed, then the process ends without that teardown. (In-process callers of
    :func:`main`, such as the tests, are not affected.)
    """
    _quick_exit(main())


def _quick_exit(code: int) -> None:
    """Run the exit handlers, flush the streams and end the process with ``code`` (normally if that fails)."""
    import atexit
    import logging

    try:
        run_exit_handlers = getattr(atexit, "_run_exitfuncs", None)
        if run_exit_handlers is not None:
            run_exit_handlers()
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
    except Exception:  # noqa: BLE001 - e.g. a closed pipe: leave the normal way, which reports it
        sys.exit(code)
    os._exit(code)


if __name__ == "__main__":
    entry()
