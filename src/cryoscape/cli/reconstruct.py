"""``cryoscape reconstruct``: a gold-standard map from particles with known poses and CTF."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

DESCRIPTION = """\
Reconstruct one 3D map from particles with known orientations, shifts and CTF
(e.g. a RELION refinement's _data.star or a cryoSPARC .cs) by CTF-weighted
Fourier backprojection. Particles are split into two half sets
(_rlnRandomSubset where present, random halves otherwise), reconstructed
independently and compared by FSC; the spectral SNR that FSC measures weighs the
voxels of each shell and sets the filter of the half maps and the full map.

Filters (--filter): wiener (default) multiplies each shell by its mean Wiener
gain, SSNR/(1+SSNR): the map closest to the truth in mean square, the usual
choice to look at or to start from; fsc multiplies the full map by its expected
FSC against the truth, sqrt(2 FSC/(1+FSC)) (half maps by sqrt(FSC)), for
sharpening afterwards; none keeps the plain CTF-weighted inverse. The filter
acts per shell on the finished map, so no filter changes any FSC, and no
frequency is cut unless --lowpass asks. Every map is multiplied by a soft
sphere of --particle-diameter (default the box width), which removes the noise
of the box corners.

Writes OUT (the full map), OUT_half1.mrc, OUT_half2.mrc, the gold-standard
FSC as OUT_fsc.txt, OUT_fsc.json and OUT_fsc.png (unmasked and masked with
phase-randomisation correction), the filter's weights per shell as
OUT_filter.txt, and prints the resolution at FSC = 0.143.
"""

EPILOG = """\
example:
  cryoscape reconstruct run_data.star -o consensus.mrc --datadir Extract/
"""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``reconstruct`` sub-command."""
    p = subparsers.add_parser(
        "reconstruct",
        help="reconstruct a map from particles with known poses and CTF",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("particles", help="particle file with poses and CTF (.star, .cs)")
    p.add_argument("-o", "--output", required=True, metavar="OUT.mrc", help="output map; half maps and FSC files are written beside it")
    p.add_argument("--datadir", metavar="DIR", help="folder holding the particle stacks, if the file's paths do not resolve")
    p.add_argument("--apix", type=float, metavar="A", help="pixel size in Å/px, overriding (or standing in for) the file's")
    p.add_argument("--mask", metavar="MASK.mrc", help="mask for the masked FSC (default: a soft sphere of radius 0.4 box)")
    p.add_argument("--filter", choices=("wiener", "fsc", "none"), default="wiener",
                   help="per-shell filter of the maps (default wiener: closest to the truth in mean square)")
    p.add_argument("--lowpass", type=float, metavar="Å", help="also cut the full map beyond this resolution")
    p.add_argument("--particle-diameter", type=float, metavar="Å",
                   help="diameter of the soft spherical support of the maps (default the box width; 0: none)")
    p.add_argument("--oversampling", type=int, choices=(1, 2), default=2,
                   help="Fourier grid oversampling (default 2; 1 is about twice as fast and slightly less accurate)")
    p.add_argument("--batch-size", type=int, default=1024, metavar="N", help="images read and processed at a time (default 1024)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where to compute (default cpu)")
    p.add_argument("--seed", type=int, default=0, help="seed for random half sets and the FSC phase randomisation (default 0)")
    p.add_argument("--skip-bad", action="store_true", help="leave out images with NaN/Inf pixels instead of stopping")
    p.add_argument("--no-progress", action="store_true", help="do not show a progress bar")
    p.add_argument("--force", action="store_true", help="overwrite existing outputs")
    return p


def _check_args(args: argparse.Namespace) -> None:
    """Refuse bad options and taken outputs before any file is read."""
    import torch

    from cryoscape.errors import InputError
    from cryoscape.reconstruct import check_outputs

    if args.batch_size < 1:
        raise InputError(f"--batch-size must be at least 1; got {args.batch_size}")
    if args.apix is not None and not args.apix > 0:
        raise InputError(f"--apix {args.apix} must be a positive pixel size in Å")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda was given but no CUDA GPU is available; use --device cpu")
    if args.mask is not None and not Path(args.mask).is_file():
        raise InputError(f"mask {args.mask} not found; check the path or omit --mask for a soft sphere")
    out = Path(args.output)
    if out.parent.exists() and not out.parent.is_dir():
        raise InputError(f"-o {out}: {out.parent} is a file, not a folder; choose another output path")
    check_outputs(out, args.force)


def prepare(args: argparse.Namespace) -> Any:
    """The particle set, with every input checked before any image is read (poses, CTF, stacks, mask, halves)."""
    from cryoscape.particles import ParticleSet
    from cryoscape.reconstruct import check_reconstruction_inputs

    _check_args(args)
    particles = ParticleSet.from_file(args.particles, datadir=args.datadir, apix=args.apix)
    particles.require_poses("cryoscape reconstruct")
    particles.require_ctf("cryoscape reconstruct")
    check_reconstruction_inputs(particles, args.mask, seed=args.seed, filter=args.filter,
                                particle_diameter_A=args.particle_diameter, lowpass_A=args.lowpass)
    return particles


def run(args: argparse.Namespace) -> int:
    """Read the particles, reconstruct, write the maps and FSC, print a summary."""
    from cryoscape.validate.plot_worker import PlotWorker

    with PlotWorker() as plots:  # imports matplotlib in a helper process while the map is computed
        return _run(args, plots)


def _run(args: argparse.Namespace, plots: Any) -> int:
    """The command's work, the FSC plot drawn by ``plots``."""
    from cryoscape.reconstruct import reconstruct

    particles = prepare(args)
    start = time.perf_counter()
    rec = reconstruct(
        particles,
        batch_size=args.batch_size,
        device=args.device,
        mask=args.mask,
        seed=args.seed,
        progress=not args.no_progress,
        skip_bad=args.skip_bad,
        filter=args.filter,
        oversampling=args.oversampling,
        particle_diameter_A=args.particle_diameter,
        lowpass_A=args.lowpass,
    )
    elapsed = time.perf_counter() - start
    paths = rec.save(args.output, force=args.force, plot=plots.submit_fsc_plot)
    skipped = f", {rec.n_skipped} left out for NaN/Inf pixels" if rec.n_skipped else ""
    print(f"particles: {rec.n_particles} (half sets {rec.n_half[0]} + {rec.n_half[1]}){skipped}")
    print(f"box {rec.box} px, {rec.apix:.4g} Å/px; reconstructed in {elapsed:.1f} s")
    print(f"resolution at FSC 0.143: {rec.resolution_A:.2f} Å unmasked, {rec.resolution_masked_A:.2f} Å masked (corrected)")
    print("wrote: " + ", ".join(str(p) for p in paths.values()))
    return 0
