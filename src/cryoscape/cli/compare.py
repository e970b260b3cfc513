"""``cryoscape compare``: agreement between two runs on the same particles."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

HELP = "compare two runs on the same particles: neighbourhood overlap, canonical correlations, volumes"

DESCRIPTION = """\
Measure how far two runs (e.g. two methods) agree on the same particles,
without a ground truth: the mean fraction of each particle's k nearest
neighbours that both latent spaces share (with its chance level k/(N-1)),
the canonical correlations of the two latent spaces, and the FSC between the
two runs' volumes at sampled particles when both runs have a model.

Runs with different particle counts are refused. Prints a table and writes
the numbers as JSON.
"""

EPILOG = """\
example:
  cryoscape compare runs/pca runs/drgn -o pca_vs_drgn.json
"""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``compare`` sub-command."""
    p = subparsers.add_parser("compare", help=HELP, description=DESCRIPTION, epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_a", type=Path, help="first run directory")
    p.add_argument("run_b", type=Path, help="second run directory (same particles, same order)")
    p.add_argument("-o", "--output", type=Path, default=Path("compare.json"), metavar="OUT.json",
                   help="JSON output (default compare.json)")
    p.add_argument("--k", type=int, default=10, help="neighbours compared per particle (default 10)")
    p.add_argument("--n-query", type=int, metavar="N", help="compare the neighbourhoods of N random particles (default all)")
    p.add_argument("--n-volumes", type=int, default=5, metavar="N", help="particles at which volumes are compared (default 5)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random particle samples (default 0)")
    p.add_argument("--force", action="store_true", help="overwrite an existing JSON output")
    return p


def _check(args: argparse.Namespace) -> None:
    """One-line errors for impossible option values."""
    from cryoscape.errors import InputError

    if args.k < 1:
        raise InputError(f"--k must be at least 1; got {args.k}")
    if args.n_query is not None and args.n_query < 1:
        raise InputError(f"--n-query must be at least 1; got {args.n_query}")
    if args.n_volumes < 0:
        raise InputError(f"--n-volumes must be 0 (no volume comparison) or more; got {args.n_volumes}")


def _check_runs(run_a: Any, run_b: Any, k: int) -> None:
    """Both runs hold latents for the same number of particles N, and ``k < N``; one-line errors otherwise."""
    from cryoscape.errors import InputError

    na, nb = run_a.read_latents()[0].shape[0], run_b.read_latents()[0].shape[0]
    if na != nb:
        raise InputError(f"{run_a.path} has {na} particles and {run_b.path} has {nb}; "
                         "compare runs fitted on the same particles")
    if k >= na:
        raise InputError(f"--k must be between 1 and N − 1 = {na - 1} (got {k})")


def run(args: argparse.Namespace) -> int:
    """Check every input, then compare, print the table, write JSON."""
    from cryoscape.analysis.compare import compare_runs
    from cryoscape.io.atomic import check_output_path
    from cryoscape.io.plain import write_json
    from cryoscape.io.run_dir import RunDirectory
    from cryoscape.methods.registry import volume_function

    _check(args)
    run_a, run_b = RunDirectory.open(args.run_a), RunDirectory.open(args.run_b)
    check_output_path(args.output, args.force)
    _check_runs(run_a, run_b, args.k)
    result = compare_runs(run_a, run_b, k=args.k, n_query=args.n_query, n_volumes=args.n_volumes, seed=args.seed,
                          volume_fn_a=volume_function(run_a.method), volume_fn_b=volume_function(run_b.method))
    for line in result.table():
        print(line)
    for note in result.notes:
        print(f"note: {note}")
    out = write_json(args.output, result.to_dict(), args.force)
    print(f"wrote {out}")
    return 0
