"""Where a particle set's pixel size comes from: the metadata, ``--apix``, or the stack header.

The readers take the pixel size from the metadata (``_rlnImagePixelSize``,
``_rlnDetectorPixelSize`` with ``_rlnMagnification``, ``blob/psize_A``); a
zero or missing value is recorded as NaN. :func:`override_apix` applies a
pixel size given by the user; :func:`fill_apix_from_header` takes it from the
first image stack's MRC header where the metadata has none, and says so in one
warning line naming the value and the file. Where neither gives one,
:attr:`ParticleSet.apix` raises an InputError asking for ``--apix``.

RELION 3.0 origins are in pixels: shifts in Å are recomputed with the pixel
size finally chosen.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from cryoscape.errors import InputError
from cryoscape.io.mrc import read_stack_header
from cryoscape.particles.image_source import StackImageSource

__all__ = ["override_apix", "fill_apix_from_header", "missing_apix_reason"]


def _pixel_origins(fields: dict[str, Any]) -> np.ndarray | None:
    """RELION 3.0 origins in pixels ``(N, 2)`` when the STAR has them (and no Å origins), else None."""
    source = fields.get("source")
    if fields.get("shifts_A") is None or source is None or source.kind != "star":
        return None
    cols = source.table.columns
    if "rlnOriginX" not in cols or "rlnOriginXAngst" in cols:
        return None
    return source.table[["rlnOriginX", "rlnOriginY"]].to_numpy(np.float64)


def override_apix(fields: dict[str, Any], apix: float) -> None:
    """Use ``apix`` Å/px for every particle (InputError unless positive and finite)."""
    if not (apix > 0 and np.isfinite(apix)):
        raise InputError(f"pixel size {apix} Å given for {fields['name']} is not positive; pass the right --apix")
    px = _pixel_origins(fields)
    if px is not None:
        fields["shifts_A"] = px * apix
    fields["apix_per_particle"] = np.full(int(fields["n"]), apix)


def missing_apix_reason(fields: dict[str, Any]) -> str:
    """``"records no pixel size"`` or ``"records pixel size 0 (column)"``: how the metadata lacks one (for messages)."""
    source = fields.get("source")
    if source is not None and source.kind == "star":
        for col in ("rlnImagePixelSize", "rlnDetectorPixelSize"):
            for table in (source.table, source.optics):
                if table is not None and col in table.columns:
                    return f"records pixel size 0 ({col})"
    if source is not None and source.kind == "cs" and "blob/psize_A" in (source.table.dtype.names or ()):
        return "records pixel size 0 (blob/psize_A)"
    return "records no pixel size"


def fill_apix_from_header(fields: dict[str, Any], stacklevel: int = 3) -> None:
    """Where the metadata has no pixel size, take it (with a one-line warning) from the first stack header."""
    apix = np.asarray(fields["apix_per_particle"], dtype=np.float64)
    missing = ~(np.isfinite(apix) & (apix > 0))
    images = fields.get("images")
    if not missing.any() or not isinstance(images, StackImageSource) or not images.paths:
        return
    path = images.paths[int(images.file_index[np.flatnonzero(missing)[0]])]
    if not path.is_file():
        return
    header_apix = read_stack_header(path).apix
    if not header_apix > 0:
        return
    warnings.warn(
        f"{fields['name']} {missing_apix_reason(fields)}; using {header_apix:.4g} Å/px from the MRC header of {path}"
        " (pass --apix to set it)",
        stacklevel=stacklevel,
    )
    fields["apix_per_particle"] = np.where(missing, header_apix, apix)
    px = _pixel_origins(fields)
    if px is not None:
        fields["shifts_A"] = px * fields["apix_per_particle"][:, None]
