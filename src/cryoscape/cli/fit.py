"""``cryoscape fit METHOD``: fit a heterogeneity method to posed particles into a run directory."""

from __future__ import annotations

import argparse


DESCRIPTION = """\
Fit a method of continuous heterogeneity to particles with known poses (a
consensus refinement's _data.star or .cs) and write one run directory:
config.yaml, latents.npy (N x d, particle order) with their posterior spread,
weights.pt, metrics.json, log.txt and the method's maps. Analyse the run with
`cryoscape analyze RUN`, make volumes with `cryoscape volume RUN`.

methods:
  pca   probabilistic PCA by EM: V = mean + sum_k z_k X_k (latents z ~ N(0, I)),
        with a per-particle contrast. Writes mean.mrc, component_XX.mrc,
        latents_cov.npy and contrast.npy.
"""

PCA_DESCRIPTION = """\
Probabilistic PCA of the particles by expectation-maximisation: a mean volume
and K principal volumes, each particle's latent posterior (mean and
covariance) and contrast, and the noise variance. Principal volumes are
orthonormal inside the mask and ordered by latent variance (metrics.json
"eigenvalues"). Writes config.yaml, latents.npy, latents_cov.npy,
contrast.npy, weights.pt, metrics.json, mean.mrc, component_01.mrc ... and
log.txt into OUT. With --downsample the images are Fourier-cropped once into
OUT/particles_boxD.star/.mrcs, the particle file of the run.

The EM state is checkpointed after every iteration (OUT/checkpoints/): --resume
continues a stopped fit, or an ended one with a larger --iterations, with the
same result as an uninterrupted fit; --force starts over.
"""

EPILOG = """\
examples:
  cryoscape fit pca run_data.star -o runs/pca --components 4
  cryoscape fit pca run_data.star -o runs/pca --components 8 --downsample 64 --mask mask.mrc --force
"""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``fit`` sub-command and one sub-command per method."""
    p = subparsers.add_parser("fit", help="fit a heterogeneity method (pca) into a run directory",
                              description=DESCRIPTION, epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    methods = p.add_subparsers(dest="method", metavar="<method>", required=True)
    _add_pca(methods)
    return p


def _add_pca(methods: argparse._SubParsersAction) -> None:
    """The ``fit pca`` options."""
    p = methods.add_parser("pca", help="probabilistic PCA by EM (mean + principal volumes)",
                           description=PCA_DESCRIPTION, epilog=EPILOG,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("particles", help="particle file with poses (and CTF): .star or .cs")
    p.add_argument("-o", "--output", required=True, metavar="RUN", help="run directory to write")
    p.add_argument("--components", type=int, required=True, metavar="K", help="number of principal volumes")
    p.add_argument("--iterations", type=int, default=20, metavar="N", help="EM iterations (default 20)")
    p.add_argument("--mask", metavar="MASK.mrc", help="soft mask confining the components (default: a soft sphere)")
    p.add_argument("--resolution-limit", type=float, metavar="Å",
                   help="ignore frequencies finer than this resolution in Å (default: up to Nyquist)")
    p.add_argument("--downsample", type=int, metavar="BOX", help="Fourier-crop the images to this even box first")
    p.add_argument("--datadir", metavar="DIR", help="folder holding the particle stacks, if the file's paths do not resolve")
    p.add_argument("--seed", type=int, default=0, help="seed of the initial components (default 0)")
    p.add_argument("--batch-size", type=int, default=256, metavar="N", help="images processed at a time (default 256)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where to compute (default cpu)")
    again = p.add_mutually_exclusive_group()
    again.add_argument("--force", action="store_true", help="overwrite an earlier run in RUN")
    again.add_argument("--resume", action="store_true", help="continue the run in RUN from its last checkpoint")
    p.add_argument("--no-progress", action="store_true", help="do not show progress bars")


def run(args: argparse.Namespace) -> int:
    """Dispatch to the chosen method."""
    return {"pca": _run_pca}[args.method](args)


def _run_pca(args: argparse.Namespace) -> int:
    """Fit PCA, write the run, print a summary."""
    import torch

    from cryoscape.errors import InputError
    from cryoscape.methods.pca import run_pca

    if args.device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda was given but no CUDA GPU is available; use --device cpu")
    out = run_pca(args.particles, args.output, args.components, args.iterations, mask=args.mask,
                  resolution_limit_A=args.resolution_limit, downsample=args.downsample, datadir=args.datadir,
                  seed=args.seed, batch_size=args.batch_size, device=args.device, force=args.force,
                  resume=args.resume, progress=not args.no_progress)
    r, run_dir = out.result, out.run
    print(f"particles: {len(r.latents)}; box {run_dir.box} px, {run_dir.apix:.4g} Å/px; "
          f"{len(r.objective)} EM iterations in {out.elapsed_s:.1f} s")
    print("latent variances (eigenvalues): " + ", ".join(f"{v:.4g}" for v in r.eigenvalues))
    print(f"noise variance per pixel: {r.sigma2:.4g}; objective: {r.objective[0]:.6g} -> {r.objective[-1]:.6g}")
    print(f"wrote {run_dir.path}; next: cryoscape analyze {run_dir.path}")
    return 0
