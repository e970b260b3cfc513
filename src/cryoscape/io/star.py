"""RELION STAR files through :mod:`starfile`.

Two layouts exist:

- RELION 3.0: one particle table (block ``data_images`` or ``data_``), origins
  in pixels (``_rlnOriginX/Y``), pixel size from ``_rlnDetectorPixelSize`` (µm)
  and ``_rlnMagnification`` or from ``_rlnImagePixelSize``, CTF constants per
  particle.
- RELION 3.1, 4 and 5: a ``data_optics`` table (per optics group pixel size,
  image size, voltage, Cs, amplitude contrast) and ``data_particles`` with
  origins in Å (``_rlnOriginXAngst/YAngst``).

Column names are kept as :mod:`starfile` gives them (``rlnImageName`` etc.);
every column is kept on reading and written back on writing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import starfile

from cryoscape.errors import InputError
from cryoscape.io.atomic import atomic_path

__all__ = ["RelionStar", "read_star", "write_star", "split_image_names", "STRING_COLUMNS"]

#: Columns always read as text (file names and labels that may look numeric).
STRING_COLUMNS: list[str] = [
    "rlnImageName",
    "rlnImageOriginalName",
    "rlnMicrographName",
    "rlnMicrographOriginalName",
    "rlnOpticsGroupName",
    "rlnCtfImage",
    "rlnReconstructImageName",
]


@dataclass
class RelionStar:
    """A parsed RELION particle STAR file.

    ``particles``: one row per particle; ``optics``: one row per optics group
    (``None`` for RELION 3.0 files); ``version``: ``"3.0"`` or ``"3.1+"``;
    ``other_blocks``: any further data blocks, kept for writing back.
    """

    path: Path
    particles: pd.DataFrame
    optics: pd.DataFrame | None
    version: str
    particles_block: str = "particles"
    other_blocks: dict[str, pd.DataFrame] = field(default_factory=dict)


def _pick_particles_block(blocks: dict[str, pd.DataFrame], path: Path) -> str:
    for name in ("particles", "images"):
        if name in blocks and isinstance(blocks[name], pd.DataFrame):
            return name
    for name, df in blocks.items():
        if isinstance(df, pd.DataFrame) and name != "optics" and "rlnImageName" in df.columns:
            return name
    for name, df in blocks.items():
        if isinstance(df, pd.DataFrame) and name != "optics" and len(df.columns) > 0:
            return name
    raise InputError(f"{path} has no particle table (no data_particles / data_images loop); pass a RELION particle STAR file")


def read_star(path: str | os.PathLike) -> RelionStar:
    """Read a RELION particle STAR file (any version) keeping every column and block."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"STAR file {p} not found; check the path")
    try:
        blocks = starfile.read(p, always_dict=True, parse_as_string=STRING_COLUMNS)
    except Exception as exc:
        raise InputError(f"cannot parse {p} as a STAR file ({type(exc).__name__}: {exc}); check the file") from exc
    blocks = {k: v for k, v in blocks.items()}
    name = _pick_particles_block(blocks, p)
    particles = blocks.pop(name).reset_index(drop=True)
    optics = blocks.pop("optics", None)
    if optics is not None:
        if not isinstance(optics, pd.DataFrame):
            optics = pd.DataFrame([optics]) if isinstance(optics, dict) else None
        else:
            optics = optics.reset_index(drop=True)
    others = {k: v for k, v in blocks.items() if isinstance(v, pd.DataFrame)}
    version = "3.1+" if optics is not None else "3.0"
    return RelionStar(path=p, particles=particles, optics=optics, version=version, particles_block=name, other_blocks=others)


def write_star(
    path: str | os.PathLike,
    optics_df: pd.DataFrame | None,
    particles_df: pd.DataFrame,
    force: bool = False,
    other_blocks: dict[str, pd.DataFrame] | None = None,
) -> Path:
    """Write a particle STAR atomically: ``data_optics`` (when given) then ``data_particles``.

    Floats are written with 9 significant digits so round trips keep precision.
    """
    blocks: dict[str, pd.DataFrame] = {}
    if optics_df is not None:
        blocks["optics"] = optics_df.reset_index(drop=True)
    blocks["particles"] = particles_df.reset_index(drop=True)
    for k, v in (other_blocks or {}).items():
        if k not in blocks:
            blocks[k] = v
    with atomic_path(path, force) as tmp:
        starfile.write(blocks, tmp, float_format="%.9g", sep=" ")
    return Path(path)


def split_image_names(names: pd.Series, path: Path) -> tuple[pd.Series, pd.Series]:
    """Split ``_rlnImageName`` values ``"index@stack"`` into (1-based index int64, stack str).

    A name without ``@`` is a single-image file (index 1).
    """
    s = names.astype(str).str.strip()
    has_at = s.str.contains("@", regex=False)
    parts = s.str.split("@", n=1, expand=True)
    if parts.shape[1] == 1:
        parts[1] = None
    stack = parts[1].where(has_at, s)
    idx_text = parts[0].where(has_at, "1")
    idx = pd.to_numeric(idx_text, errors="coerce")
    if idx.isna().any():
        bad = s[idx.isna()].iloc[0]
        raise InputError(f"{path}: _rlnImageName {bad!r} is not of the form index@stack; fix the image names")
    return idx.astype("int64"), stack.astype(str)
