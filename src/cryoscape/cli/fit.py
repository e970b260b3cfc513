"""``cryoscape fit METHOD``: fit a heterogeneity method to posed particles into a run directory."""

from __future__ import annotations

import argparse

from cryoscape.cli.fit_compose import add_compose_parser, run_compose
from cryoscape.cli.fit_classes import add_classes_parser, run_classes_command
from cryoscape.cli.fit_nma import add_nma_parser, run_nma_command


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
  drgn  neural hyper-molecule: an MLP over positional-encoded 3D frequencies and
        a latent z, trained with an amortised encoder (VAE) or explicit
        per-particle latents. Writes latents_var.npy, mean.mrc and checkpoints/;
        --resume continues an interrupted fit.
  nma   an atomic model (--model PDB/mmCIF) moved along its elastic-network normal
        modes; each particle's mode amplitudes fitted to its image (HEMNMA-style).
        Writes the files of drgn plus modes.npz; `volume --pdb` gives deformed models.
  classes  3D classification into K maps (--classes K) by EM over class posteriors
        at the given poses. Writes class_posteriors.npy (also latents.npy), classes.npy,
        class_01.mrc ... with half maps and FSC per class.
  compose  any representation (linear, neural, normal-modes) with any inference scheme (em,
        amortised, explicit) that makes sense; `fit compose --help` lists the pairs.
"""

PCA_DESCRIPTION = """\
Probabilistic PCA of the particles by expectation-maximisation: a mean volume
and K principal volumes, each particle's latent posterior (mean and
covariance) and contrast, and the noise variance. By default the consensus map
is reconstructed first (half sets, Wiener filter from their FSC), a solvent
mask is derived from it, and EM starts from the top principal volumes of the
low-resolution covariance (Katsevich-Singer least squares at 15 A). Each
particle's latents are inferred from frequencies up to 8 A (--latent-resolution);
the volumes use every frequency. After the fit, a diffusion map of the latents gives spectral coordinates
(spectral_coordinates.npy) and the spectral volumes regressed on them, and a
smooth curve fitted through the latent posteriors from the first spectral
coordinate gives each particle's place along one motion (curve_coordinate.npy,
in [0, 1], with curve_coordinate_sd.npy; the curve's latent points in
curve_points.npy). Principal volumes are
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
  cryoscape fit drgn run_data.star -o runs/drgn --zdim 8 --epochs 30
  cryoscape fit drgn run_data.star -o runs/dec --zdim 8 --latents explicit
  cryoscape fit drgn run_data.star -o runs/drgn --zdim 8 --epochs 40 --resume
  cryoscape fit compose run_data.star -o runs/lin_vae --representation linear --inference amortised
"""

DRGN_DESCRIPTION = """\
A neural hyper-molecule: the centred 3D Fourier transform of the volume of
conformation z is an MLP over a positional encoding of the frequency and z,
with Hermitian symmetry built in. Each particle's image is modelled on its
central slice (consensus pose), times its CTF and shift phase, on the in-circle
half-plane frequencies only. Latents come from an amortised encoder trained on
the ELBO with a beta-weighted KL term (--latents amortised, default) or from a
table of per-particle latents optimised with the decoder (--latents explicit;
--warmup-epochs N starts the table at the means of an encoder trained for the
first N epochs). After training, each latent (the encoder's mean, or the
table's entry) is re-fitted to the final decoder by --latent-refine-steps
Gauss-Newton steps.
--refine-poses also refines each particle's rotation and shift by gradient.

Writes config.yaml (rebuilds the model), latents.npy, latents_var.npy,
weights.pt, metrics.json, mean.mrc (the volume at the mean latent), log.txt
and checkpoints/ (every epoch) into OUT. --resume continues from the latest
checkpoint (or from CHECKPOINT) with the same settings; only --epochs and
--device may change. Checkpoints are read as tensors only: a file holding
other objects, such as another program's pickled checkpoint, is refused.
"""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``fit`` sub-command and one sub-command per method."""
    p = subparsers.add_parser("fit", help="fit a heterogeneity method (pca, drgn, nma, classes, or any pair by compose) into a run directory",
                              description=DESCRIPTION, epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    methods = p.add_subparsers(dest="method", metavar="<method>", required=True)
    _add_pca(methods)
    _add_drgn(methods)
    add_nma_parser(methods)
    add_classes_parser(methods)
    add_compose_parser(methods)
    return p


def _add_pca(methods: argparse._SubParsersAction) -> None:
    """The ``fit pca`` options."""
    p = methods.add_parser("pca", help="probabilistic PCA by EM (mean + principal volumes)",
                           description=PCA_DESCRIPTION, epilog=EPILOG,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("particles", help="particle file with poses (and CTF): .star or .cs")
    p.add_argument("-o", "--output", required=True, metavar="RUN", help="run directory to write")
    p.add_argument("--components", "--latent-dim", dest="latent_dim", type=int, required=True, metavar="K",
                   help="number of principal volumes, the latent dimension")
    p.add_argument("--iterations", type=int, default=12, metavar="N",
                   help="EM iterations (default 12; from the covariance start the objective settles within about 8)")
    p.add_argument("--mask", metavar="MASK.mrc", default="auto",
                   help="soft mask confining the components: an MRC file, 'sphere', or 'auto' (default: a solvent "
                        "mask derived from the consensus map, reconstructed from half sets with their FSC's Wiener filter)")
    p.add_argument("--resolution-limit", type=float, metavar="Å",
                   help="ignore frequencies finer than this resolution in Å (default: up to Nyquist)")
    p.add_argument("--latent-resolution", type=float, default=8.0, metavar="Å",
                   help="infer each particle's coordinates from frequencies up to this resolution in Å only; the "
                        "volumes still use every frequency (default 8; 0: every frequency for both). Finer "
                        "variation that is not low-rank otherwise pulls the coordinates away from the motion")
    p.add_argument("--downsample", type=int, metavar="BOX", help="Fourier-crop the images to this even box first")
    p.add_argument("--datadir", metavar="DIR", help="folder holding the particle stacks, if the file's paths do not resolve")
    p.add_argument("--seed", type=int, default=0, help="seed of a random start (default 0)")
    p.add_argument("--init", choices=("covariance", "random"), default="covariance",
                   help="start EM from the top principal volumes of the low-resolution (15 Å) covariance estimate "
                        "(default), or from random smooth volumes")
    p.add_argument("--spectral-components", type=int, default=2, metavar="J",
                   help="diffusion-map coordinates of the latents and spectral volumes to write (default 2; 0: none)")
    p.add_argument("--curve-basis", type=int, default=5, metavar="J",
                   help="spline coefficients of the latent curve fitted through the posteriors from the first "
                        "spectral coordinate; each particle's place on it is curve_coordinate.npy (default 5: "
                        "a stiff curve for one motion; 0: none; it starts from the spectral coordinates, so "
                        "--spectral-components 0 skips it too)")
    p.add_argument("--shared-halves", dest="cross_halves", action="store_false",
                   help="take every image's posterior from the model of all particles (default: from the other "
                        "half set's model, which keeps the components from fitting the images' own noise)")
    p.add_argument("--no-fsc-filter", dest="fsc_filter", action="store_false",
                   help="M-step with the ridge alone (default: the mean and each component are filtered by their "
                        "half-set FSC every iteration, which keeps noise out of the principal volumes)")
    p.add_argument("--batch-size", type=int, default=256, metavar="N", help="images processed at a time (default 256)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where to compute (default cpu)")
    again = p.add_mutually_exclusive_group()
    again.add_argument("--force", action="store_true", help="overwrite an earlier run in RUN")
    again.add_argument("--resume", action="store_true", help="continue the run in RUN from its last checkpoint")
    p.add_argument("--no-progress", action="store_true", help="do not show progress bars")


def _add_drgn(methods: argparse._SubParsersAction) -> None:
    """The ``fit drgn`` options; defaults come from :class:`cryoscape.methods.drgn.DrgnSettings`."""
    from cryoscape.methods.drgn import DrgnSettings

    d = DrgnSettings()
    p = methods.add_parser("drgn", help="neural hyper-molecule with a VAE encoder or explicit latents",
                           description=DRGN_DESCRIPTION, epilog=EPILOG,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("particles", help="particle file with poses and CTF: .star or .cs")
    p.add_argument("-o", "--output", required=True, metavar="RUN", help="run directory to write")
    p.add_argument("--zdim", "--latent-dim", dest="latent_dim", type=int, default=d.latent_dim, metavar="D",
                   help=f"latent dimension (default {d.latent_dim})")
    p.add_argument("--epochs", type=int, default=d.epochs, metavar="N",
                   help=f"passes over the particles (default {d.epochs})")
    p.add_argument("--latents", choices=("amortised", "explicit"), default=d.latents,
                   help=f"amortised encoder (VAE) or explicit per-particle latents (default {d.latents})")
    p.add_argument("--base", choices=("consensus", "none"),
                   help="decoder = consensus reconstruction + network, or the network alone "
                        f"(default {d.base})")
    p.add_argument("--encoder", choices=("mlp", "cnn"), help=f"encoder network (default {d.encoder})")
    p.add_argument("--beta", type=float, help=f"weight of the KL / prior term (default {d.beta:g})")
    p.add_argument("--batch-size", type=int, metavar="N", help=f"images per step (default {d.batch_size})")
    p.add_argument("--lr", type=float, help=f"Adam learning rate of the networks (default {d.lr:g})")
    p.add_argument("--latent-lr", type=float, help=f"learning rate of explicit latents (default {d.latent_lr:g})")
    p.add_argument("--latent-refine-steps", type=int, metavar="N",
                   help="after training, N Gauss-Newton steps per particle against the final decoder, from "
                        f"the encoder's mean or the explicit latent (0: off; default {d.latent_refine_steps})")
    p.add_argument("--warmup-epochs", type=int, metavar="N",
                   help="explicit latents: train an encoder for the first N epochs, then start each particle's "
                        f"latent at the encoder's mean (default {d.warmup_epochs})")
    p.add_argument("--dec-hidden", type=int, metavar="W", help=f"decoder width (default {d.dec_hidden})")
    p.add_argument("--dec-layers", type=int, metavar="L", help=f"decoder hidden layers (default {d.dec_layers})")
    p.add_argument("--enc-hidden", type=int, metavar="W", help=f"encoder width (default {d.enc_hidden})")
    p.add_argument("--enc-layers", type=int, metavar="L", help=f"encoder hidden layers (default {d.enc_layers})")
    p.add_argument("--pe", choices=("geometric", "gaussian"),
                   help=f"positional encoding: sin/cos geometric series or random Gaussian features (default {d.pe})")
    p.add_argument("--pe-dim", type=int, metavar="N",
                   help="frequencies per axis (geometric; default box/2) or features (gaussian; default 3 box/2)")
    p.add_argument("--pe-max-px", type=float, metavar="PX", help="geometric: largest real-space distance (default box/8)")
    p.add_argument("--pe-sigma-px", type=float, metavar="PX", help="gaussian: feature scale in px (default box/16)")
    p.add_argument("--max-freq", type=float, metavar="F",
                   help=f"fit frequencies below this fraction of Nyquist (default {d.max_freq:g})")
    p.add_argument("--encoder-max-freq", type=float, metavar="F",
                   help=f"the encoder sees frequencies below this fraction of Nyquist (default {d.encoder_max_freq:g})")
    p.add_argument("--refine-poses", action="store_true", help="refine rotations and shifts by gradient")
    p.add_argument("--invert", action="store_true", help="the stacks are dark on white: negate the images")
    p.add_argument("--no-ctf", action="store_true", help="fit without a CTF (particles without CTF parameters)")
    p.add_argument("--datadir", metavar="DIR", help="folder holding the particle stacks, if the file's paths do not resolve")
    p.add_argument("--seed", type=int, help=f"seed of weights, batch order and noise (default {d.seed})")
    p.add_argument("--device", choices=("cpu", "cuda"), help="where to compute (default cpu)")
    again = p.add_mutually_exclusive_group()
    again.add_argument("--force", action="store_true", help="overwrite an earlier run in RUN")
    again.add_argument("--resume", nargs="?", const=True, default=False, metavar="CHECKPOINT",
                       help="continue the run in RUN from its latest checkpoint (or from CHECKPOINT)")
    p.add_argument("--no-progress", action="store_true", help="do not show progress bars")


_DRGN_OPTIONS = ("base", "encoder", "beta", "batch_size", "lr", "latent_lr", "warmup_epochs", "latent_refine_steps",
                 "dec_hidden", "dec_layers", "enc_hidden", "enc_layers", "pe", "pe_dim", "pe_max_px", "pe_sigma_px",
                 "max_freq", "encoder_max_freq", "seed", "device")
"""``fit drgn`` options passed on only when given (otherwise the recipe's defaults apply)."""


def run(args: argparse.Namespace) -> int:
    """Dispatch to the chosen method."""
    return {"pca": _run_pca, "drgn": _run_drgn, "nma": run_nma_command, "classes": run_classes_command,
            "compose": run_compose}[args.method](args)


def _run_drgn(args: argparse.Namespace) -> int:
    """Fit the neural hyper-molecule, write the run, print a summary."""
    from cryoscape.methods.drgn import run_drgn

    options = {k: getattr(args, k) for k in _DRGN_OPTIONS if getattr(args, k) is not None}
    options.update(refine_poses=args.refine_poses, invert=args.invert, use_ctf=not args.no_ctf)
    out = run_drgn(args.particles, args.output, args.latent_dim, args.epochs, args.latents, datadir=args.datadir,
                   force=args.force, resume=args.resume, progress=not args.no_progress, **options)
    h, run_dir = out.history, out.run
    print(f"particles: {len(out.latents)}; box {run_dir.box} px, {run_dir.apix:.4g} Å/px; "
          f"{out.epochs_run} epochs run now ({len(h.get('loss', []))} in all) in {out.elapsed_s:.1f} s")
    if h.get("loss"):
        print(f"loss per pixel: {h['loss'][0]:.6g} -> {h['loss'][-1]:.6g}; "
              f"{h['images_per_s'][-1]:.0f} images/s in the last epoch")
    print(f"wrote {run_dir.path}; next: cryoscape analyze {run_dir.path}")
    return 0


def _run_pca(args: argparse.Namespace) -> int:
    """Fit PCA, write the run, print a summary."""
    import torch

    from cryoscape.errors import InputError
    from cryoscape.methods.pca import run_pca

    if args.device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda was given but no CUDA GPU is available; use --device cpu")
    out = run_pca(args.particles, args.output, args.latent_dim, args.iterations, mask=args.mask,
                  resolution_limit_A=args.resolution_limit, downsample=args.downsample, datadir=args.datadir,
                  seed=args.seed, init=args.init, spectral_components=args.spectral_components,
                  curve_basis=args.curve_basis, batch_size=args.batch_size, device=args.device,
                  fsc_filter=args.fsc_filter, cross_halves=args.cross_halves,
                  latent_resolution_A=args.latent_resolution or None, force=args.force,
                  resume=args.resume, progress=not args.no_progress)
    r, run_dir = out.result, out.run
    print(f"particles: {len(r.latents)}; box {run_dir.box} px, {run_dir.apix:.4g} Å/px; "
          f"{len(r.objective)} EM iterations in {out.elapsed_s:.1f} s")
    print("latent variances (eigenvalues): " + ", ".join(f"{v:.4g}" for v in r.eigenvalues))
    print(f"noise variance per pixel: {r.sigma2:.4g}; objective: {r.objective[0]:.6g} -> {r.objective[-1]:.6g}")
    print(f"wrote {run_dir.path}; next: cryoscape analyze {run_dir.path}")
    return 0
