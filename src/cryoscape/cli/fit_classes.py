"""``cryoscape fit classes``: 3D classification of posed particles into K maps."""

from __future__ import annotations

import argparse

CLASSES_DESCRIPTION = """\
3D classification (as RELION's Class3D at fixed poses): every particle is a copy
of one of K maps. Expectation-maximisation at the particles' given poses: each
particle's posterior over the classes from its image (CTF, shift, noise white
within each frequency shell, estimated from the residuals), then every class's
map backprojected from its particles weighted by those posteriors into two
half-set accumulators and Wiener-filtered from the FSC of its own halves, as
`cryoscape reconstruct` does. The classes start from a random assignment of the
particles (--seed); EM stops after --iterations or when fewer than --tolerance of
the particles change class.

Writes into RUN: latents.npy and class_posteriors.npy (N x K posteriors),
classes.npy (N most likely classes, 0-based), class_01.mrc ... with
class_01_half1/2.mrc and class_01_fsc.txt, weights.pt, metrics.json (class sizes,
resolution per class, every iteration), config.yaml and log.txt. `cryoscape
select RUN --cluster` and `cryoscape analyze RUN` read the posteriors; a class
map is also `cryoscape volume RUN --z 0,1,0`.
"""

CLASSES_EPILOG = """\
examples:
  cryoscape fit classes run_data.star --classes 3 -o runs/class3d
  cryoscape fit classes run_data.star --classes 4 --iterations 30 --seed 2 -o runs/class3d_k4 --force
"""


def add_classes_parser(methods: argparse._SubParsersAction) -> None:
    """The ``fit classes`` sub-command; defaults from :func:`cryoscape.methods.classes.run_classes`."""
    p = methods.add_parser("classes", help="3D classification into K maps by EM at the given poses",
                           description=CLASSES_DESCRIPTION, epilog=CLASSES_EPILOG,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("particles", help="particle file with poses and CTF: .star or .cs")
    p.add_argument("-o", "--output", required=True, metavar="RUN", help="run directory to write")
    p.add_argument("--classes", "--latent-dim", dest="latent_dim", type=int, default=3, metavar="K",
                   help="number of classes (default 3)")
    p.add_argument("--iterations", type=int, default=20, metavar="N", help="most EM iterations (default 20)")
    p.add_argument("--tolerance", type=float, default=0.002, metavar="F",
                   help="stop when fewer than this fraction of particles change class (default 0.002)")
    p.add_argument("--pose-search", choices=("none",), default="none",
                   help="keep the given poses (the only choice so far; refine them first if needed)")
    p.add_argument("--batch-size", type=int, default=512, metavar="N", help="images per batch (default 512)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random start and the half sets (default 0)")
    p.add_argument("--datadir", metavar="DIR", help="folder holding the particle stacks, if the file's paths do not resolve")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where to compute (default cpu)")
    p.add_argument("--force", action="store_true", help="overwrite an earlier run in RUN")
    p.add_argument("--no-progress", action="store_true", help="do not show progress bars")


def run_classes_command(args: argparse.Namespace) -> int:
    """Classify, write the run, print a summary."""
    from cryoscape.methods.classes import run_classes

    out = run_classes(args.particles, args.output, latent_dim=args.latent_dim, iterations=args.iterations,
                      batch_size=args.batch_size, seed=args.seed, tolerance=args.tolerance,
                      pose_search=args.pose_search, datadir=args.datadir, device=args.device, force=args.force,
                      progress=not args.no_progress)
    sizes = [int((out.labels == k).sum()) for k in range(args.latent_dim)]
    res = ", ".join(f"{r:.2f}" for r in out.resolution_A)
    print(f"particles: {len(out.labels)}; {args.latent_dim} classes of {sizes} after {out.iterations_run} "
          f"iterations in {out.elapsed_s:.1f} s; resolution at FSC 0.143 per class: {res} Å")
    print(f"wrote {out.run.path}; next: cryoscape analyze {out.run.path}")
    return 0
