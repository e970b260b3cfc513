"""``cryoscape downsample``: Fourier-crop a particle stack or a volume to a smaller box."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from cryoscape.errors import InputError

HELP = "downsample (Fourier crop) particles (STAR/.cs) or a volume; normalise, invert contrast"

DESCRIPTION = """\
Fourier-crop particle images or a volume to a smaller box.

Cropping keeps the low frequencies up to the new Nyquist limit; the pixel size
becomes apix * D / BOX and real-space values keep their scale.

Particles (.star, .cs): every image is cropped in batches (memory does not grow
with the number of particles) into OUT/particles.mrcs, and OUT/particles.star
(RELION 3.1) is written with the new _rlnImagePixelSize and _rlnImageSize and
image names pointing at the new stack; every other column is kept.

Volume (.mrc, .map): the cropped volume is written to the path given by -o.

Examples:
  cryoscape downsample particles.star --box 64 -o small/
  cryoscape downsample particles.star --datadir /data/stacks --box 128 -o p128/
  cryoscape downsample map.mrc --box 64 -o map_64.mrc
"""

_VOLUME_SUFFIXES = (".mrc", ".map")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``downsample`` on ``subparsers``."""
    p = subparsers.add_parser(
        "downsample",
        help=HELP,
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("input", type=Path, help="particle file (.star or .cs) or a volume (.mrc/.map)")
    p.add_argument("--box", "-D", type=int, default=None,
                   help="new box size in pixels (even, smaller than the current box; default: keep the box)")
    p.add_argument("--normalise", "--normalize", action="store_true",
                   help="scale each image to mean 0, std 1 from the background outside the particle circle")
    p.add_argument("--invert", action="store_true", help="invert the contrast (for stacks stored dark on white)")
    p.add_argument(
        "-o",
        "--out",
        type=Path,
        required=True,
        help="output folder for particles (gets particles.mrcs and particles.star); output .mrc path for a volume",
    )
    p.add_argument("--datadir", type=Path, default=None, help="folder holding the image stacks named in the particle file")
    p.add_argument("--apix", type=float, default=None, metavar="A",
                   help="pixel size in Å/px of the input, overriding (or standing in for) the file's or header's")
    p.add_argument("--batch-size", type=int, default=1024, help="images cropped per batch (default 1024)")
    p.add_argument("--force", action="store_true", help="overwrite existing output files")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _check_args(args: argparse.Namespace) -> None:
    """Refuse bad options before any file is read."""
    if args.batch_size < 1:
        raise InputError(f"--batch-size {args.batch_size} must be at least 1")
    if args.box is None and not (args.normalise or args.invert):
        raise InputError("nothing to do: give --box N to downsample, and/or --normalise / --invert")
    if args.box is not None and (args.box <= 0 or args.box % 2):
        raise InputError(f"--box {args.box} must be a positive even number of pixels")
    if args.apix is not None and not args.apix > 0:
        raise InputError(f"--apix {args.apix} must be a positive pixel size in Å")
    if not args.input.exists():
        raise InputError(f"{args.input} not found; check the path")


def _run_volume(args: argparse.Namespace) -> int:
    from cryoscape.particles import preprocess

    if args.box is None:
        raise InputError(f"give --box N to downsample the volume {args.input}")
    if args.out.suffix.lower() not in _VOLUME_SUFFIXES:
        raise InputError(f"-o {args.out} must be an .mrc path when the input {args.input} is a volume")
    preprocess._refuse_existing([args.out], args.force)
    new_apix = preprocess.downsample_volume_file(args.input, args.out, args.box, force=args.force, apix=args.apix)
    print(f"wrote {args.out} ({args.box}^3 voxels, {new_apix:.4f} Å/voxel)")
    return 0


def _check_particle_outputs(args: argparse.Namespace, box: int, current: int) -> None:
    from cryoscape.particles import preprocess

    if box != current and box >= current:
        raise InputError(f"--box {box} must be smaller than the box {current} of {args.input}; choose an even box below {current}")
    if args.out.exists() and not args.out.is_dir():
        raise InputError(f"-o {args.out} is a file; pass a folder for the downsampled particles")
    preprocess._refuse_existing([args.out / "particles.mrcs", args.out / "particles.star"], args.force)


def run(args: argparse.Namespace) -> int:
    """Crop the particles or the volume named in ``args``; print what was written."""
    from cryoscape.particles import preprocess
    from cryoscape.particles.particle_set import ParticleSet

    _check_args(args)
    if args.input.suffix.lower() in _VOLUME_SUFFIXES:
        return _run_volume(args)
    ps = ParticleSet.from_file(args.input, datadir=args.datadir, apix=args.apix)
    box = ps.box if args.box is None else args.box
    _ = ps.apix  # an unknown or mixed pixel size fails here, before any image is read
    ps.check_images()
    _check_particle_outputs(args, box, ps.box)
    small = preprocess.downsample_particles(
        ps, box, args.out, force=args.force, batch_size=args.batch_size, progress=not args.no_progress,
        normalise=args.normalise, invert=args.invert,
    )
    print(
        f"wrote {len(small)} particles of {box}x{box} px at {small.apix:.4f} Å/px "
        f"to {args.out / 'particles.mrcs'} and {args.out / 'particles.star'}"
    )
    return 0
