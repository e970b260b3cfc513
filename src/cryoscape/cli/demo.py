"""``cryoscape demo``: simulate AdK, reconstruct the consensus, write a report."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from cryoscape.io.atomic import check_output_path


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "demo",
        help="simulate the built-in AdK dataset, reconstruct it, fit pca and write report.html",
        description=(
            "End-to-end demonstration on the built-in adenylate kinase closed→open trajectory: "
            "simulate particles with ground truth (RELION STAR + MRC stack + truth.npz), reconstruct "
            "the consensus map with known poses and CTF (half maps, gold-standard FSC), fit the linear "
            "family (cryoscape fit pca: mean, principal volumes and per-particle coordinates, on images "
            "cropped to --pca-box) and analyse its latent space against the true frame index "
            "(run_pca/analysis/report.html), and write a self-contained report.html. Takes about two "
            "minutes on 2 CPU cores (under a minute with --no-pca)."
        ),
    )
    p.add_argument("-o", "--out", default="demo_out", help="output folder (default: demo_out)")
    p.add_argument("--n-particles", type=int, default=20000, help="number of particles (default: 20000)")
    p.add_argument("--box", type=int, default=64, help="box size in px, even (default: 64)")
    p.add_argument("--apix", type=float, default=1.5, help="pixel size in Å/px (default: 1.5)")
    p.add_argument("--snr", type=float, default=0.05, help="signal-to-noise ratio (default: 0.05)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--no-pca", action="store_true", help="skip the heterogeneity analysis (pca fit)")
    p.add_argument("--pca-components", type=int, default=4, help="principal volumes of the pca fit (default: 4)")
    p.add_argument("--pca-iterations", type=int, default=8, help="EM iterations of the pca fit (default: 8)")
    p.add_argument("--pca-box", type=int, default=32, help="box the pca fit crops the images to (default: 32)")
    p.add_argument("--full", action="store_true",
                   help="also train the neural hyper-molecule (fit drgn, VAE) and analyse it (several more minutes)")
    p.add_argument("--drgn-epochs", type=int, default=16, help="training epochs of the drgn fit with --full (default: 16)")
    p.add_argument("--force", action="store_true", help="overwrite an existing output folder's files")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def run(args: argparse.Namespace) -> int:
    from cryoscape.demo import run_demo

    out = Path(args.out)
    if not args.no_pca:
        _check_pca(args)
    check_output_path(out / "report.html", args.force)
    t0 = time.perf_counter()
    result = run_demo(
        out,
        n_particles=args.n_particles,
        box=args.box,
        apix=args.apix,
        snr=args.snr,
        seed=args.seed,
        force=args.force,
        progress=not args.no_progress,
        heterogeneity=not args.no_pca,
        pca_components=args.pca_components,
        pca_iterations=args.pca_iterations,
        pca_box=args.pca_box,
        drgn_epochs=args.drgn_epochs if args.full else 0,
    )
    print(f"demo finished in {time.perf_counter() - t0:.0f} s")
    print(f"  particles:        {result['star']}")
    print(f"  consensus map:    {result['map']}  (resolution {result['resolution_A']:.2f} Å at FSC 0.143)")
    if "pca_run" in result:
        print(f"  pca run:          {result['pca_run']}  (|Spearman| of the first coordinate with the true "
              f"frame: {result['spearman']:.3f})")
        print(f"  pca report:       {result['pca_report']}")
    if "drgn_run" in result:
        print(f"  drgn run:         {result['drgn_run']}  (|Spearman| of the latents' PC1 with the true frame: "
              f"{result['drgn_spearman']:.3f})")
    print(f"  report:           {result['report']}")
    return 0


def _check_pca(args: argparse.Namespace) -> None:
    """One-line errors for pca settings that cannot work, before any simulation."""
    from cryoscape.errors import InputError

    if args.pca_box < 8 or args.pca_box % 2:
        raise InputError(f"--pca-box {args.pca_box} must be an even box of at least 8 px")
    if args.full and args.drgn_epochs < 1:
        raise InputError(f"--drgn-epochs {args.drgn_epochs} must be at least 1 with --full")
    if args.pca_components < 1 or args.pca_iterations < 1:
        raise InputError("--pca-components and --pca-iterations must be at least 1")
    if args.n_particles <= args.pca_components:
        raise InputError(f"--n-particles {args.n_particles} must exceed --pca-components {args.pca_components}; "
                         "simulate more particles or pass --no-pca")
