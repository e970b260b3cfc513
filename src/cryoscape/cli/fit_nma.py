"""``cryoscape fit nma``: an atomic model moved along its normal modes, fitted to every particle."""

from __future__ import annotations

import argparse

NMA_DESCRIPTION = """\
Normal-mode flexible fitting (HEMNMA-style). The atomic model (PDB or mmCIF,
fitted into the consensus map: coordinates in the map's frame with its origin
at voxel 0) is turned into an elastic network of its C-alpha atoms (springs
within --cutoff Å, the anisotropic network model); its --modes softest normal
modes are each scaled to its elastic spread (the softest moves the C-alpha
atoms by --mode-rms Å RMS at unit amplitude), so the amplitudes have the prior
N(0, 1). Every residue moves as a rigid block along the screw motion of its
block's velocity under the modes, which keeps rotating domains undistorted at
large amplitudes. Each particle's image is modelled as the moved model drawn
as Gaussian atoms (analytic Fourier coefficients), at the particle's pose
(refined locally by gradient) times its CTF; every particle's amplitudes are
fitted by gradient and polished by Gauss-Newton steps; the image contrast is
started by least squares against the consensus map.

Writes the run directory of `fit drgn` (latents.npy: the N x modes amplitudes)
plus modes.npz (eigenvalues, spreads, network nodes, the modes). Volumes of the
moved model: `cryoscape volume RUN --z ...`; the moved model itself: add --pdb.
"""

NMA_EPILOG = """\
examples:
  cryoscape fit nma run_data.star --model closed.pdb -o runs/nma
  cryoscape fit nma run_data.star --model closed.cif -o runs/nma --modes 6 --cutoff 8 --epochs 10
  cryoscape volume runs/nma --component 1 --steps 9 -o movie/ --pdb
"""


def add_nma_parser(methods: argparse._SubParsersAction) -> None:
    """The ``fit nma`` sub-command; defaults from :func:`cryoscape.methods.nma.run_nma`."""
    p = methods.add_parser("nma", help="an atomic model moved along its normal modes (HEMNMA-style)",
                           description=NMA_DESCRIPTION, epilog=NMA_EPILOG,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("particles", help="particle file with poses and CTF: .star or .cs")
    p.add_argument("--model", required=True, metavar="MODEL", help="atomic model fitted into the map: .pdb or .cif")
    p.add_argument("-o", "--output", required=True, metavar="RUN", help="run directory to write")
    p.add_argument("--modes", "--latent-dim", dest="latent_dim", type=int, default=10, metavar="K",
                   help="number of normal modes, the latent dimension (default 10)")
    p.add_argument("--cutoff", type=float, default=10.0, metavar="Å", help="spring cutoff of the C-alpha network (default 10)")
    p.add_argument("--mode-rms", type=float, default=2.0, metavar="Å",
                   help="RMS C-alpha displacement of the softest mode at unit amplitude (default 2)")
    p.add_argument("--epochs", type=int, default=8, metavar="N", help="passes over the particles (default 8)")
    p.add_argument("--batch-size", type=int, metavar="N", help="images per step (default 32)")
    p.add_argument("--latent-lr", type=float, metavar="LR", help="learning rate of the amplitudes (default 0.3)")
    p.add_argument("--max-freq", type=float, metavar="F",
                   help="fit frequencies below this fraction of Nyquist (default 0.3)")
    p.add_argument("--latent-refine-steps", type=int, metavar="N",
                   help="Gauss-Newton steps per particle after training (default 3)")
    p.add_argument("--no-refine-poses", action="store_true", help="keep the consensus poses as they are")
    p.add_argument("--invert", action="store_true", help="the stacks are dark on white: negate the images")
    p.add_argument("--datadir", metavar="DIR", help="folder holding the particle stacks, if the file's paths do not resolve")
    p.add_argument("--seed", type=int, help="seed of the batch order and the starting amplitudes (default 0)")
    p.add_argument("--device", choices=("cpu", "cuda"), help="where to compute (default cpu)")
    again = p.add_mutually_exclusive_group()
    again.add_argument("--force", action="store_true", help="overwrite an earlier run in RUN")
    again.add_argument("--resume", action="store_true", help="continue the run in RUN from its latest checkpoint")
    p.add_argument("--no-progress", action="store_true", help="do not show progress bars")


_NMA_OPTIONS = ("batch_size", "latent_lr", "max_freq", "latent_refine_steps", "seed", "device")


def run_nma_command(args: argparse.Namespace) -> int:
    """Fit the mode amplitudes, write the run, print a summary."""
    from cryoscape.methods.nma import run_nma

    options = {k: getattr(args, k) for k in _NMA_OPTIONS if getattr(args, k) is not None}
    out = run_nma(args.particles, args.output, args.model, args.latent_dim, args.epochs, cutoff_A=args.cutoff,
                  mode_rms_A=args.mode_rms, datadir=args.datadir, force=args.force, resume=args.resume,
                  progress=not args.no_progress, refine_poses=not args.no_refine_poses, invert=args.invert,
                  **options)
    h, run_dir = out.history, out.run
    print(f"particles: {len(out.latents)}; box {run_dir.box} px, {run_dir.apix:.4g} Å/px; {args.latent_dim} modes; "
          f"{out.epochs_run} epochs run now in {out.elapsed_s:.1f} s")
    if h.get("loss"):
        print(f"loss per pixel: {h['loss'][0]:.6g} -> {h['loss'][-1]:.6g}")
    print(f"wrote {run_dir.path}; next: cryoscape analyze {run_dir.path}")
    return 0
