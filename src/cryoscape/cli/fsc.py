"""``cryoscape fsc``: Fourier shell correlation between two maps."""

from __future__ import annotations

import argparse

DESCRIPTION = """\
Compute the Fourier shell correlation between two maps of the same box and
voxel size (e.g. two half maps) and print the resolution where it first falls
below the threshold. With --mask, the masked FSC is also computed and
corrected for the mask by phase randomisation (Chen et al. 2013).
With -o, the curve is written as a plot (.png) or a table (.json, .txt, .csv).
"""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``fsc`` sub-command."""
    p = subparsers.add_parser(
        "fsc",
        help="FSC and resolution between two maps (optionally masked)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("map_a", help="first map (.mrc)")
    p.add_argument("map_b", help="second map (.mrc), same box and voxel size")
    p.add_argument("--mask", metavar="MASK.mrc", help="soft mask for a masked, phase-randomisation corrected FSC")
    p.add_argument("-o", "--output", metavar="FILE", help="write the curve: .png plot, or .json/.txt/.csv table")
    p.add_argument("--threshold", type=float, default=0.143, help="FSC threshold for the resolution (default 0.143)")
    p.add_argument("--apix", type=float, help="voxel size in Å, when the headers record none")
    p.add_argument("--seed", type=int, default=0, help="seed for the phase randomisation (default 0)")
    p.add_argument("--force", action="store_true", help="overwrite an existing output")
    return p


def _read_pair(path_a: str, path_b: str, apix_override: float | None):
    import warnings

    import numpy as np

    from cryoscape.errors import InputError
    from cryoscape.io.mrc import read_mrc

    a, apix_a = read_mrc(path_a)
    b, apix_b = read_mrc(path_b)
    for path, vol in ((path_a, a), (path_b, b)):
        if vol.ndim != 3 or len(set(vol.shape)) != 1 or vol.shape[0] % 2:
            raise InputError(f"{path} is {vol.shape}; the FSC needs cubic maps with an even box")
    if a.shape != b.shape:
        raise InputError(f"{path_a} is {a.shape[0]}³ but {path_b} is {b.shape[0]}³; resample one map to the other's box")
    if apix_override is not None:
        apix = float(apix_override)
    else:
        if apix_a > 0 and apix_b > 0 and abs(apix_a - apix_b) > 1e-3 * max(apix_a, apix_b):
            raise InputError(
                f"{path_a} has voxel size {apix_a:g} Å but {path_b} has {apix_b:g} Å; resample one map or pass --apix"
            )
        apix = apix_a if apix_a > 0 else apix_b
        if apix > 0 and not (apix_a > 0 and apix_b > 0):
            bare, other = (path_a, path_b) if apix_b > 0 else (path_b, path_a)
            warnings.warn(f"{bare} records no voxel size; using {apix:.4g} Å from the header of {other}", stacklevel=2)
    if not apix > 0:
        raise InputError(f"{path_a} and {path_b} record no voxel size; pass --apix")
    return np.asarray(a), np.asarray(b), apix


def run(args: argparse.Namespace) -> int:
    """Compute the FSC, print the resolution, write the curve if asked."""
    from pathlib import Path

    import numpy as np

    from cryoscape.errors import InputError
    from cryoscape.io.atomic import check_output_path
    from cryoscape.reconstruct import load_mask
    from cryoscape.validate.fsc import corrected_masked_fsc, fsc, resolution_at, save_fsc_plot, write_fsc_table

    if not 0.0 < args.threshold < 1.0:
        raise InputError(f"--threshold must lie between 0 and 1; got {args.threshold}")
    out = None
    if args.output:
        out = Path(args.output)
        if out.suffix.lower() not in (".png", ".json", ".txt", ".csv"):
            raise InputError(f"{out}: unknown output type; use a .png, .json, .txt or .csv name")
        check_output_path(out, args.force)
    if args.apix is not None and not args.apix > 0:
        raise InputError(f"--apix {args.apix} must be a positive voxel size in Å")
    for path in (args.map_a, args.map_b) + ((args.mask,) if args.mask else ()):
        if not Path(path).is_file():
            raise InputError(f"{path} not found; check the path")
    a, b, apix = _read_pair(args.map_a, args.map_b, args.apix)
    D = a.shape[0]
    mask = load_mask(args.mask, D, apix) if args.mask else None  # checked before any FSC is computed
    curves = {"fsc_unmasked": fsc(a, b)}
    if mask is not None:
        masked = corrected_masked_fsc(a, b, mask, rng=np.random.default_rng(args.seed))
        curves["fsc_masked"] = masked.corrected
    for label, curve in curves.items():
        res = resolution_at(curve, D, apix, args.threshold)
        what = "unmasked" if label == "fsc_unmasked" else "masked (corrected)"
        print(f"resolution at FSC {args.threshold:g} ({what}): {res:.2f} Å")
    if out is not None:
        if out.suffix.lower() == ".png":
            save_fsc_plot(out, curves, D, apix, thresholds=(args.threshold,), force=args.force)
        else:
            write_fsc_table(out, curves, D, apix, force=args.force)
        print(f"wrote: {out}")
    return 0
