"""The ``cryoscape`` command: one sub-command per module in this package.

Each command module defines ``add_parser(subparsers) -> argparse.ArgumentParser``
and ``run(args) -> int``. Numerical work lives in the library; these modules
only parse arguments, call the library and report.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from cryoscape.errors import CryoscapeError

COMMANDS: tuple[str, ...] = (
    "demo",
    "simulate",
    "info",
    "reconstruct",
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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; user errors print one line and return 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return 1
    try:
        import cryoscape.methods  # noqa: F401  registers each method's model (volume hook) for analyze, traverse, volume

        return int(args._run(args) or 0)
    except CryoscapeError as exc:
        print(f"cryoscape: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cryoscape: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
