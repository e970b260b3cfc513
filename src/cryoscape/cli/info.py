"""``cryoscape info``: summarise a particle file (RELION STAR or cryoSPARC .cs)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from cryoscape.errors import InputError

HELP = "summarise a particle file (.star or .cs): count, box, pixel size, poses, CTF, stacks"

DESCRIPTION = """\
Print a human summary of a particle file: the number of particles, box size,
pixel size, optics groups, whether orientations, CTF parameters and half-sets
are present, the defocus range, and the image stacks it refers to (and whether
they were found). Stack headers are read to check sizes; pixels are not read.

Examples:
  cryoscape info run_data.star
  cryoscape info particles.star --datadir /data/Extract
  cryoscape info cryosparc_P1_J20_particles.cs --datadir /data/P1
"""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``info`` on ``subparsers``."""
    p = subparsers.add_parser("info", help=HELP, description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("particles", type=Path, help="particle file: RELION .star (3.0 to 5) or cryoSPARC .cs")
    p.add_argument("--datadir", type=Path, default=None, help="folder holding the image stacks named in the particle file")
    p.add_argument("--apix", type=float, default=None, metavar="A",
                   help="pixel size in Å/px, overriding (or standing in for) the file's")
    return p


def _fmt_range(x: np.ndarray, unit: str, scale: float = 1.0, digits: int = 0) -> str:
    lo, hi = float(np.min(x)) * scale, float(np.max(x)) * scale
    return f"{lo:.{digits}f} to {hi:.{digits}f} {unit}" if lo != hi else f"{lo:.{digits}f} {unit}"


def summarise(path: Path, datadir: Path | None = None, apix: float | None = None) -> list[str]:
    """The summary lines printed by ``cryoscape info`` (``apix`` overrides the file's pixel size)."""
    from cryoscape.particles.image_source import StackImageSource
    from cryoscape.particles.particle_set import ParticleSet

    if apix is not None and not apix > 0:
        raise InputError(f"--apix {apix} must be a positive pixel size in Å")
    ps = ParticleSet.from_file(path, datadir=datadir, apix=apix)
    lines = [f"file            {path}"]
    kind = {"star": "RELION STAR", "cs": "cryoSPARC .cs"}.get(ps.source_kind or "", "?")
    if ps.source_kind == "star":
        kind += " (3.1+ with optics table)" if ps.optics_table is not None else " (3.0, no optics table)"
    lines.append(f"format          {kind}")
    lines.append(f"particles       {len(ps)}")

    stack_note = ""
    if isinstance(ps.images, StackImageSource):
        paths = ps.images.paths
        found = [p for p in paths if p.is_file()]
        if found and len(found) == len(paths):
            try:
                box_img, _ = ps.images.check()
                stack_note = f" (stacks hold {box_img}×{box_img} px images)"
            except InputError as exc:
                stack_note = f" (stack problem: {exc})"
    try:
        lines.append(f"box             {ps.box} px{stack_note}")
    except InputError:
        lines.append("box             unknown (not in the file and the stacks were not found; pass --datadir)")

    groups = np.unique(ps.optics_group)
    per_group = []
    for g in groups:
        sel = ps.optics_group == g
        a = ps.apix_per_particle[sel]
        apix = f"{float(a[0]):.4f} Å/px" if np.all(np.isfinite(a)) else "? Å/px"
        per_group.append(f"group {int(g)}: {int(sel.sum())} particles, {apix}")
    try:
        lines.append(f"pixel size      {ps.apix:.4f} Å/px")
    except InputError as exc:
        lines.append(f"pixel size      not single: {exc}")
    lines.append(f"optics groups   {len(groups)}")
    lines.extend(f"                {s}" for s in per_group)

    lines.append(f"poses           {'yes' if ps.has_poses else 'no'}")
    if ps.shifts_A is not None:
        mag = np.linalg.norm(ps.shifts_A, axis=1)
        lines.append(f"shifts          up to {float(mag.max()) if mag.size else 0.0:.2f} Å")
    if ps.has_ctf:
        ctf = ps.ctf_table()
        mean_df = 0.5 * (ctf["defocus_u_A"] + ctf["defocus_v_A"])
        lines.append("CTF             yes")
        lines.append(f"defocus         {_fmt_range(mean_df, 'µm', 1e-4, 2)} (mean of U and V)")
        lines.append(f"voltage         {_fmt_range(ctf['voltage_kV'], 'kV')}, Cs {_fmt_range(ctf['cs_mm'], 'mm', digits=2)},"
                     f" amplitude contrast {_fmt_range(ctf['amplitude_contrast'], '', digits=3).strip()}")
        if np.any(ctf["phase_shift_deg"] != 0):
            lines.append(f"phase shift     {_fmt_range(ctf['phase_shift_deg'], '°', digits=1)}")
    else:
        lines.append("CTF             no")
    if ps.has_half_sets:
        lines.append(f"half-sets       yes ({int((ps.half_set == 0).sum())} / {int((ps.half_set == 1).sum())})")
    elif np.any(ps.half_set >= 0):
        lines.append(f"half-sets       partial ({int((ps.half_set >= 0).sum())} of {len(ps)} assigned)")
    else:
        lines.append("half-sets       no")

    if isinstance(ps.images, StackImageSource):
        paths = ps.images.paths
        n_found = sum(p.is_file() for p in paths)
        lines.append(f"image stacks    {len(paths)} file(s), {n_found} found")
        for p in paths[:5]:
            lines.append(f"                {p}{'' if p.is_file() else '  (missing)'}")
        if len(paths) > 5:
            lines.append(f"                ... and {len(paths) - 5} more")
    else:
        lines.append("image stacks    none named in the file")
    return lines


def run(args: argparse.Namespace) -> int:
    """Print the summary of ``args.particles``."""
    for line in summarise(args.particles, args.datadir, args.apix):
        print(line)
    return 0
