"""``cryoscape volume``: volumes from a run directory, from its model or from its particles."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


DESCRIPTION = """\
Make volumes from a fitted run directory, in one of five ways:

  --z Z1 Z2 ...      one volume from the run's model at that latent point (OUT.mrc)
  --z-file Z.txt     one volume per row of a text file (OUT/vol_000.mrc, ...)
  --component K      a movie along latent coordinate K (1-based): --steps volumes at
                     evenly spaced percentiles (5th to 95th) of that coordinate, the
                     others at their mean (OUT/componentK_00.mrc, ...; the points in
                     OUT/componentK_points.txt)
  --curve            a movie along the run's latent curve (pca: curve_points.npy):
                     --steps volumes at evenly spaced percentiles (5th to 95th) of the
                     particles' positions on it (OUT/curve_00.mrc, ...; the latent points
                     in OUT/curve_points.txt)
  --near-particle I  a local reconstruction from the --n-neighbours particles whose
                     latents are nearest particle I's (kernel-weighted), for any method,
                     with half maps and FSC (OUT.mrc, OUT_half1/2.mrc, OUT_fsc.*)

The model modes need a method with a model (pca, drgn); every map is written with
the run's voxel size. Existing outputs are kept unless --force is given.
"""

EPILOG = """\
examples:
  cryoscape volume runs/pca --z 0 0 0 0 -o mean.mrc
  cryoscape volume runs/pca --component 1 --steps 9 -o movie/
  cryoscape volume runs/pca --curve --steps 9 -o curve_movie/
  cryoscape volume runs/nma --z 1.5 0 0 0 0 0 0 0 0 0 -o open.mrc --pdb open.pdb
  cryoscape volume runs/pca --near-particle 123 --n-neighbours 1000 -o local.mrc
"""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``volume`` sub-command."""
    p = subparsers.add_parser("volume", help="volumes from a run: at latent points, along a component, or locally reconstructed",
                              description=DESCRIPTION, epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, help="run directory (holds config.yaml and latents.npy)")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--z", type=float, nargs="+", metavar="Z", help="latent point, one value per dimension")
    mode.add_argument("--z-file", type=Path, metavar="Z.txt", help="text file with one latent point per row")
    mode.add_argument("--component", type=int, metavar="K", help="latent coordinate (1-based) for a movie")
    mode.add_argument("--curve", action="store_true", help="a movie along the run's latent curve (curve_points.npy)")
    mode.add_argument("--near-particle", type=int, metavar="I", help="local reconstruction around particle I (0-based)")
    p.add_argument("-o", "--output", required=True, type=Path, metavar="OUT",
                   help="OUT.mrc (--z, --near-particle) or a folder (--z-file, --component, --curve)")
    p.add_argument("--pdb", nargs="?", const=True, default=None, metavar="OUT.pdb",
                   help="nma runs: also write the deformed atomic model of each map (with --z: OUT.pdb or the "
                        "path given; otherwise beside each map, same name)")
    p.add_argument("--steps", type=int, default=9, metavar="N", help="volumes along --component or --curve (default 9)")
    p.add_argument("--n-neighbours", type=int, default=1000, metavar="N",
                   help="particles in a --near-particle reconstruction (default 1000)")
    p.add_argument("--particles", type=Path, metavar="FILE", help="particle file, if it moved since the run")
    p.add_argument("--datadir", type=Path, metavar="DIR", help="folder holding the particle stacks")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where a local reconstruction runs (default cpu)")
    p.add_argument("--no-progress", action="store_true", help="do not show a progress bar")
    p.add_argument("--force", action="store_true", help="overwrite existing outputs")
    return p


def run(args: argparse.Namespace) -> int:
    """Open the run and write the volumes of the chosen mode."""
    from cryoscape.errors import InputError
    from cryoscape.io.run_dir import RunDirectory

    run_dir = RunDirectory.open(args.run)
    if args.near_particle is not None:
        if args.pdb:
            raise InputError("--pdb goes with the model modes (--z, --z-file, --component, --curve), "
                             "not with --near-particle")
        paths = _near_particle(run_dir, args)
    else:
        names, points = _model_points(run_dir, args)
        pdbs = _pdb_paths(run_dir, args, names)
        paths = _write_model_volumes(run_dir, names, points, args.force)
        if pdbs:
            from cryoscape.methods.nma import write_deformed_models

            paths += write_deformed_models(run_dir, points, pdbs, args.force)
        if args.component is not None:
            paths.append(_write_points(args.output / f"component{args.component}_points.txt", points, args.force))
        if args.curve:
            paths.append(_write_points(args.output / "curve_points.txt", points, args.force))
    run_dir.log(f"volume: wrote {len(paths)} files to {args.output}")
    print(f"wrote {len(paths)} files: " + ", ".join(str(p) for p in paths[:4]) + (" ..." if len(paths) > 4 else ""))
    return 0


def _pdb_paths(run_dir: Any, args: argparse.Namespace, names: list[Path]) -> list[Path]:
    """Where the deformed models go (``--pdb``), checked before any map is written; [] without ``--pdb``."""
    if not args.pdb:
        return []
    from cryoscape.methods.nma import check_deformed_models

    pdbs = [Path(args.pdb)] if isinstance(args.pdb, str) and args.z is not None else [n.with_suffix(".pdb") for n in names]
    check_deformed_models(run_dir, pdbs, args.force)
    return pdbs


def _model_points(run_dir: Any, args: argparse.Namespace) -> tuple[list[Path], Any]:
    """Output paths and latent points ``[n, d]`` for the model modes."""
    import numpy as np

    from cryoscape.errors import InputError
    from cryoscape.methods import component_sweep, curve_sweep

    if args.z is not None:
        return [args.output], np.asarray([args.z], dtype=np.float64)
    if args.z_file is not None:
        if not args.z_file.is_file():
            raise InputError(f"{args.z_file} not found; give a text file with one latent point per row")
        try:
            points = np.loadtxt(args.z_file, ndmin=2, dtype=np.float64)
        except ValueError as exc:
            raise InputError(f"{args.z_file} is not a table of numbers ({' '.join(str(exc).split())}); "
                             "write one latent point per row") from exc
        return [args.output / f"vol_{j:03d}.mrc" for j in range(len(points))], points
    if args.curve:
        points, _ = curve_sweep(*run_dir.read_curve(), args.steps)
        return [args.output / f"curve_{j:02d}.mrc" for j in range(len(points))], points
    points, _ = component_sweep(run_dir.read_latents()[0], args.component, args.steps)
    return [args.output / f"component{args.component}_{j:02d}.mrc" for j in range(len(points))], points


def _write_model_volumes(run_dir: Any, names: list[Path], points: Any, force: bool) -> list[Path]:
    """One MRC per latent point from the run's model (outputs checked before any work)."""
    from cryoscape.io.atomic import check_output_path
    from cryoscape.io.mrc import write_mrc
    from cryoscape.methods import model_volume

    for p in names:
        check_output_path(p, force)
    vols = [model_volume(run_dir, z) for z in points]
    apix = float(run_dir.apix or 1.0)
    return [write_mrc(p, v, apix, force=force) for p, v in zip(names, vols)]


def _write_points(path: Path, points: Any, force: bool) -> Path:
    """The latent points of a movie as a text table, one row per volume."""
    import numpy as np

    from cryoscape.io.atomic import write_text_atomic

    rows = "\n".join(" ".join(f"{v:.6g}" for v in row) for row in np.asarray(points))
    return write_text_atomic(path, rows + "\n", force)


def _near_particle(run_dir: Any, args: argparse.Namespace) -> list[Path]:
    """Local reconstruction around one particle's latent point, with half maps and FSC."""
    import torch

    from cryoscape.analysis.local_reconstruction import reconstruct_near_particle
    from cryoscape.errors import InputError
    from cryoscape.reconstruct import check_outputs

    if args.n_neighbours < 1:
        raise InputError(f"--n-neighbours must be at least 1; got {args.n_neighbours}")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda was given but no CUDA GPU is available; use --device cpu")
    check_outputs(args.output, args.force)
    latents = run_dir.read_latents()[0]
    from cryoscape.analysis.run_particles import run_particles

    particles = run_particles(run_dir, datadir=args.datadir, particles=args.particles)
    rec = reconstruct_near_particle(particles, latents, args.near_particle, n_neighbours=args.n_neighbours,
                                    progress=not args.no_progress, device=args.device)
    print(f"local reconstruction at particle {args.near_particle}: resolution at FSC 0.143 "
          f"{rec.resolution_A:.2f} Å unmasked, {rec.resolution_masked_A:.2f} Å masked")
    return list(rec.save(args.output, force=args.force).values())
