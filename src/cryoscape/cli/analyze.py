"""``cryoscape analyze``: latent-space analysis and report of any method's run directory."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

if TYPE_CHECKING:
    from cryoscape.analysis.latent_analysis import AnalysisSettings, LatentAnalysis

HELP = "analyse a run's latent space: PCA/UMAP, clusters, landscape, trajectories, outliers, report"

DESCRIPTION = """\
Analyse the latents of a run directory written by any method, without
retraining: a 2-D embedding (PCA, or UMAP with --umap when umap-learn is
installed), k-means clusters in the latent space with the particle counts per
cluster, the free-energy landscape of the embedding, points along PC1 and PC2,
outlier scores, learning curves (any objective/loss/ELBO list in the run's
metrics.json), and latent plots coloured by density, cluster and (with a
ground truth) the true coordinate, whose |Spearman| with PC1 is reported.

The outlier score is the larger of two robust z-scores: low latent density and
a method-independent fit error, one minus the correlation of every image with
the projection of the consensus map (other half set, spherical average
removed) at its pose, shift and CTF. The fit reads the run's particles (two
passes over the images); where they cannot be read, the score uses the latent
density alone and a note says so. --no-fit-scores skips it.

Volumes at the cluster centres and the PC points come from the method's model
where it has one; otherwise --local-volumes reconstructs each from the
particles nearest the point (MRC with the voxel size, in analysis/volumes/).

Writes RUN/analysis/: *.png figures, embedding.npy, labels.npy, centres.npy,
log_density.npy, outlier_scores.npy, fit_correlation.npy, pc1_points.npy,
pc2_points.npy, analysis.json and one self-contained report.html. An earlier
analysis is kept unless --force is given.
"""

EPILOG = """\
examples:
  cryoscape analyze runs/pca --kmeans 20
  cryoscape analyze runs/pca --truth sim/truth.npz --local-volumes --force
"""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``analyze`` sub-command."""
    p = subparsers.add_parser("analyze", help=HELP, description=DESCRIPTION, epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, help="run directory (holds config.yaml and latents.npy)")
    p.add_argument("--kmeans", type=int, default=20, metavar="K", help="number of k-means clusters (default 20)")
    p.add_argument("--umap", action="store_true", help="embed with UMAP instead of PCA (needs umap-learn)")
    p.add_argument("--truth", type=Path, metavar="TRUTH.npz",
                   help="ground truth of a simulated dataset (default: the one recorded in the run config, if any)")
    p.add_argument("--local-volumes", action="store_true",
                   help="reconstruct volumes from the nearest particles where the run has no model")
    p.add_argument("--neighbours", type=int, metavar="N",
                   help="particles per local reconstruction (default max(100, N/K))")
    p.add_argument("--n-points", type=int, default=10, metavar="N", help="points along each principal component (default 10)")
    p.add_argument("--knn", type=int, default=10, metavar="K", help="neighbours for densities and outlier scores (default 10)")
    p.add_argument("--outlier-threshold", type=float, default=3.0, metavar="T", help="score marking outliers (default 3)")
    p.add_argument("--no-fit-scores", action="store_true",
                   help="outlier scores from the latent density only; do not read the particles to fit them to "
                        "the consensus map")
    p.add_argument("--seed", type=int, default=0, help="seed of k-means, UMAP and the landscape (default 0)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where local reconstructions run (default cpu)")
    p.add_argument("--particles", type=Path, metavar="FILE", help="particle file, if it moved since the run")
    p.add_argument("--datadir", type=Path, metavar="DIR", help="folder holding the particle stacks")
    p.add_argument("--no-progress", action="store_true", help="print only the summary, no progress messages")
    p.add_argument("--force", action="store_true", help="overwrite an earlier analysis")
    return p


def _progress(quiet: bool) -> Callable[[str], None] | None:
    """A progress printer (stdout; errors alone go to stderr), or None when quiet."""
    return None if quiet else (lambda msg: print(f"  {msg}", flush=True))


def _check(args: argparse.Namespace) -> None:
    """One-line errors for impossible option values."""
    from cryoscape.errors import InputError

    for name, value in (("--kmeans", args.kmeans), ("--n-points", args.n_points), ("--knn", args.knn)):
        if value < 1 or (name == "--n-points" and value < 2):
            raise InputError(f"{name} {value} is too small; give a positive count (--n-points at least 2)")
    if args.neighbours is not None and args.neighbours < 1:
        raise InputError(f"--neighbours must be at least 1; got {args.neighbours}")


def _settings(args: argparse.Namespace) -> "AnalysisSettings":
    """The analysis settings the options ask for."""
    from cryoscape.analysis.latent_analysis import AnalysisSettings

    return AnalysisSettings(n_clusters=args.kmeans, umap=args.umap, seed=args.seed, knn_k=args.knn,
                            n_points=args.n_points, local_volumes=args.local_volumes, n_neighbours=args.neighbours,
                            outlier_threshold=args.outlier_threshold, device=args.device,
                            fit_scores=not args.no_fit_scores)


def run(args: argparse.Namespace) -> int:
    """Check every input, then analyse the run, write the arrays, figures and report, print a summary."""
    from cryoscape.analysis.analysis_files import check_analysis_outputs, save_analysis
    from cryoscape.analysis.run_analysis import analyse_run, check_run_inputs
    from cryoscape.analysis.run_particles import run_particles
    from cryoscape.io.run_dir import RunDirectory
    from cryoscape.methods.registry import volume_function
    from cryoscape.report.run_report import REPORT_NAME, write_analysis_report

    _check(args)
    if args.umap:
        from cryoscape.analysis.latent import require_umap

        require_umap()  # fail before any work when umap-learn is missing
    run_dir = RunDirectory.open(args.run)
    check_analysis_outputs(run_dir, args.force)
    settings, volume_fn = _settings(args), volume_function(run_dir.method)
    particles = None
    if (args.local_volumes or not args.no_fit_scores) and (args.particles or args.datadir):
        particles = run_particles(run_dir, datadir=args.datadir, particles=args.particles)
    particles = check_run_inputs(run_dir, settings, args.truth, particles, volume_fn).particles
    progress = _progress(args.no_progress)
    with run_dir.log(f"analyze (k={args.kmeans}, umap={args.umap}, local volumes={args.local_volumes})"):
        result = analyse_run(run_dir, settings, args.truth, particles, progress, volume_fn)
        out = run_dir.analysis_dir
        if progress:
            progress(f"writing {out}")
        paths = save_analysis(result, out, args.force) + write_analysis_report(result, out, args.force)
    _print_summary(result, len(paths), out / REPORT_NAME)
    return 0


def _print_summary(result: "LatentAnalysis", n_files: int, report: Path) -> None:
    """A few lines on stdout: counts, notes, truth statistic, where the report is."""
    counts = result.cluster_counts
    print(f"{result.n_particles} particles, {result.latents.shape[1]}-D latents, "
          f"{result.embedding_method.upper()} embedding, {len(counts)} clusters "
          f"({int(counts.min())} to {int(counts.max())} particles each)")
    if result.spearman_pc1 is not None:
        print(f"|Spearman| of PC1 with the true coordinate: {result.spearman_pc1:.3f}")
    if result.fit_correlation is not None:
        print(f"fit to the consensus map: median correlation {float(np.median(result.fit_correlation)):.3f}; "
              f"{int(result.outliers.flagged(result.settings.outlier_threshold).sum())} outliers "
              f"(score > {result.settings.outlier_threshold:g})")
    for note in result.notes:
        print(f"note: {note}")
    print(f"wrote {n_files} files; report: {report}")
