"""``cryoscape traverse``: a density-weighted path through a run's latent space between two particles."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "follow the density-weighted shortest path between two particles and make volumes along it"

DESCRIPTION = """\
Find the shortest path from one particle to another on the k-nearest-neighbour
graph of a run's latents, with edges weighted by distance / sqrt(density) so
the path follows populated conformations. Points equally spaced along the path
become volumes: from the method's model where it has one, otherwise (with
--local-volumes) local reconstructions from the particles nearest each point.

Writes OUT/path.json (particle indices and latent points of the path, its
resampled points, cost and length), OUT/path_points.npy, OUT/path.png (the
path on the run's 2-D embedding) and OUT/volumes/path_XX.mrc.
"""

EPILOG = """\
example:
  cryoscape traverse runs/pca --from-particle 10 --to-particle 900 -o path/ --local-volumes
"""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``traverse`` sub-command."""
    p = subparsers.add_parser("traverse", help=HELP, description=DESCRIPTION, epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, help="run directory (holds config.yaml and latents.npy)")
    p.add_argument("--from-particle", type=int, metavar="I", help="0-based index of the first particle (required)")
    p.add_argument("--to-particle", type=int, metavar="J", help="0-based index of the last particle (required)")
    p.add_argument("-o", "--output", type=Path, metavar="DIR", help="output folder (required)")
    p.add_argument("--k", type=int, default=10, help="neighbours per particle in the graph (default 10)")
    p.add_argument("--n-points", type=int, default=10, metavar="N", help="points (volumes) along the path (default 10)")
    p.add_argument("--density-power", type=float, default=1.0, metavar="A",
                   help="edge weight d / (rho_i rho_j)^(A/2); 0 = plain geodesic (default 1)")
    p.add_argument("--local-volumes", action="store_true",
                   help="reconstruct volumes from the nearest particles where the run has no model")
    p.add_argument("--neighbours", type=int, metavar="N", help="particles per local reconstruction (default max(100, N/n-points))")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where local reconstructions run (default cpu)")
    p.add_argument("--force", action="store_true", help="overwrite an existing path in OUT")
    return p


def _check(args: argparse.Namespace) -> None:
    """One-line errors for missing or impossible options."""
    from cryoscape.errors import InputError

    for flag, value in (("--from-particle", args.from_particle), ("--to-particle", args.to_particle), ("-o", args.output)):
        if value is None:
            raise InputError(f"{flag} is required; see cryoscape traverse --help")
    if args.k < 1 or args.n_points < 2:
        raise InputError(f"--k must be at least 1 and --n-points at least 2; got {args.k} and {args.n_points}")
    if args.neighbours is not None and args.neighbours < 1:
        raise InputError(f"--neighbours must be at least 1; got {args.neighbours}")


def run(args: argparse.Namespace) -> int:
    """Check every input and the output folder, then find the path, write it with its figure and volumes."""
    from cryoscape.analysis.traversal import check_traversal_inputs, check_traversal_outputs, save_traversal, traverse
    from cryoscape.io.run_dir import RunDirectory
    from cryoscape.methods.registry import volume_function
    from cryoscape.report.run_report import save_figure, traversal_figure

    _check(args)
    run_dir = RunDirectory.open(args.run)
    volume_fn = volume_function(run_dir.method)
    _, particles = check_traversal_inputs(run_dir, args.from_particle, args.to_particle, args.local_volumes, volume_fn)
    check_traversal_outputs(args.output, args.force)
    result = traverse(run_dir, args.from_particle, args.to_particle, k=args.k, n_points=args.n_points,
                      density_power=args.density_power, local_volumes=args.local_volumes,
                      n_neighbours=args.neighbours, device=args.device,
                      progress=lambda msg: print(f"  {msg}", flush=True), volume_fn=volume_fn, particles=particles)
    paths = save_traversal(result, args.output, args.force)
    paths.append(save_figure(traversal_figure(result), Path(args.output) / "path.png", args.force))
    run_dir.log(f"traverse {args.from_particle} -> {args.to_particle}: {len(result.path.indices)} particles -> {args.output}")
    print(f"path of {len(result.path.indices)} particles, length {result.path.length:.4g} (latent units), "
          f"{len(result.volumes)} volumes")
    for note in result.notes:
        print(f"note: {note}")
    print(f"wrote {len(paths)} files in {args.output}")
    return 0
