"""``cryoscape select``: write a subset of a run's particles chosen in its latent space."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "select particles of a run by cluster, embedding region, outlier score or index file"

DESCRIPTION = """\
Choose particles of a run directory with exactly one of
  --cluster C [C ...]   k-means clusters (numbered as in `cryoscape analyze`)
  --region X0 X1 Y0 Y1  a box on the 2-D embedding
  --outliers-above T    outlier score at least T (add --invert to keep the rest)
  --indices FILE        0-based indices (.txt, .csv, .npy or cryoDRGN .pkl)
and write them as a RELION .star subset (all columns and the optics table
kept), a cryoSPARC .cs subset, a cryoDRGN .pkl index file, or a .txt/.npy
index list; the type follows the output's suffix.

Image paths in a .star output (_rlnImageName, written as index@path) are
for RELION, which opens them relative to the folder it runs in, the project
folder, wherever the .star lies: a stack below the project folder (--project,
default: the current folder) is written relative to it, e.g.
000012@Extract/job007/Movies/mic_001.mrcs, any other stack by its absolute
path. Run `cryoscape select` from the RELION project folder (or pass
--project) and the subset can be written anywhere inside it; cryoscape
commands reading it find the stacks with --datadir <project folder>.

Clusters, embedding and scores are read from RUN/analysis when that analysis
was made from the run's current latents (with the same k and seed), and are
otherwise recomputed exactly as `cryoscape analyze` computes them (PCA
embedding).
"""

EPILOG = """\
examples:
  cryoscape select runs/pca --cluster 3 -o cluster3.star
  cryoscape select runs/pca --outliers-above 3 --invert -o clean.star
  cryoscape select runs/pca --region -1 1 -0.5 2 -o region.pkl
  cd /data/relion_project && cryoscape select runs/pca --cluster 3 -o Select/cryoscape/cluster3.star
"""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``select`` sub-command."""
    p = subparsers.add_parser("select", help=HELP, description=DESCRIPTION, epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, help="run directory (holds config.yaml and latents.npy)")
    p.add_argument("--cluster", type=int, nargs="+", metavar="C", help="k-means cluster(s) to keep")
    p.add_argument("--kmeans", type=int, metavar="K",
                   help="number of k-means clusters (default: the saved analysis' K, else 20)")
    p.add_argument("--region", type=float, nargs=4, metavar=("X0", "X1", "Y0", "Y1"), help="box on the 2-D embedding")
    p.add_argument("--outliers-above", type=float, metavar="T", help="keep particles whose outlier score is at least T")
    p.add_argument("--indices", type=Path, metavar="FILE", help="file of 0-based particle indices")
    p.add_argument("-o", "--output", type=Path, metavar="OUT",
                   help="output: .star, .cs, .pkl (cryoDRGN indices), .txt or .npy (indices)")
    p.add_argument("--invert", action="store_true", help="keep the particles NOT selected")
    p.add_argument("--seed", type=int, default=0, help="seed of k-means (default 0, as in analyze)")
    p.add_argument("--particles", type=Path, metavar="FILE", help="particle file, if it moved since the run")
    p.add_argument("--datadir", type=Path, metavar="DIR", help="folder holding the particle stacks")
    p.add_argument("--project", type=Path, metavar="DIR",
                   help="RELION project folder that .star image paths are written relative to (default: the current folder)")
    p.add_argument("--force", action="store_true", help="overwrite an existing output")
    return p


def run(args: argparse.Namespace) -> int:
    """Select, export, print the count."""
    from cryoscape.analysis.pipeline import SelectionCriterion, selection_indices
    from cryoscape.analysis.select import export_selection
    from cryoscape.errors import InputError
    from cryoscape.io.atomic import check_output_path
    from cryoscape.io.run_dir import RunDirectory

    if args.output is None:
        raise InputError("no output given; pass -o OUT.star (or .cs, .pkl, .txt, .npy)")
    if args.kmeans is not None and args.kmeans < 1:
        raise InputError(f"--kmeans must be at least 1; got {args.kmeans}")
    criterion = SelectionCriterion(clusters=args.cluster, n_clusters=args.kmeans, region=args.region,
                                   outliers_above=args.outliers_above, indices_file=args.indices, seed=args.seed)
    criterion.kind()  # exactly one criterion, before any work
    run_dir = RunDirectory.open(args.run)
    check_output_path(args.output, args.force)
    from cryoscape.analysis.run_particles import run_particles

    particles = run_particles(run_dir, datadir=args.datadir, particles=args.particles)
    idx = selection_indices(run_dir, criterion, args.invert, lambda msg: print(f"  {msg}", flush=True))
    out = export_selection(particles, idx, args.output, force=args.force, project_dir=args.project)
    run_dir.log(f"select: {idx.size} of {len(particles)} particles -> {out}")
    print(f"selected {idx.size} of {len(particles)} particles; wrote {out}")
    return 0
