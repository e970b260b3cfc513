"""Reading RELION STAR and cryoSPARC ``.cs`` tables into the fields of a particle set.

:func:`read_particle_file` returns the keyword arguments of
:class:`~cryoscape.particles.ParticleSet` (``n``, ``images``, ``rotations``,
``shifts_A``, ``ctf``, ``apix_per_particle``, ...); the set itself is built by
:meth:`ParticleSet.from_file`, so this module does not depend on it.

RELION: Euler angles (rot, tilt, psi) → rotation matrices (``Euler_angles2matrix``),
origins in Å (``_rlnOriginXAngst``, 3.1+) or pixels (``_rlnOriginX``, 3.0),
CTF columns from the particle rows or the optics table, ``_rlnRandomSubset``
1/2 → half sets 0/1. cryoSPARC: ``alignments3D/pose`` axis-angle → matrices
(transposed), ``alignments3D/shift`` in pixels (RELION's origin sign),
``ctf/*`` fields, ``blob/path`` and ``blob/idx`` (0-based) for the images,
``alignments3D/split`` → half sets.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from cryoscape.errors import InputError
from cryoscape.io import cryosparc as _cs
from cryoscape.io import star as _star
from cryoscape.particles.image_source import StackImageSource
from cryoscape.particles.columns import _ANGLE_COLS, _DEFAULT_Q, _Source, euler_to_matrix

__all__ = ["read_particle_file"]


def read_particle_file(path: Path, datadir: Path | None) -> dict[str, Any]:
    """The :class:`~cryoscape.particles.ParticleSet` fields of a ``.star`` or ``.cs`` file (InputError otherwise)."""
    suffix = path.suffix.lower()
    if suffix == ".star":
        return _from_star(_star.read_star(path), datadir)
    if suffix == ".cs":
        return _from_cs(path, _cs.read_cs(path), datadir)
    if suffix == ".pkl":
        raise InputError(f"{path} is a cryoDRGN pickle; use ParticleSet.from_cryodrgn(images, poses=..., ctf=...)")
    raise InputError(f"{path}: unknown particle file type {suffix!r}; pass a RELION .star or cryoSPARC .cs file")


def _stack_source(stack_names: Any, frames: np.ndarray, meta_path: Path, datadir: Path | None,
                  warn_unlisted: bool = False) -> StackImageSource:
    """Lazy images from per-particle stack names and 0-based frame indices, resolved as in :func:`_resolve_stacks`."""
    codes, uniques = pd.factorize(stack_names)
    paths = _resolve_stacks(list(uniques), meta_path.parent, datadir)
    return StackImageSource(paths, codes, frames, referenced_by=meta_path, warn_unlisted=warn_unlisted)


def _resolve_stacks(names: Sequence[str], meta_dir: Path, datadir: Path | None) -> list[Path]:
    """Find each referenced stack: ``datadir/name``, ``datadir/basename``, then beside the metadata file."""
    out = []
    for name in names:
        p = Path(name)
        candidates: list[Path] = []
        if datadir is not None:
            if not p.is_absolute():
                candidates.append(datadir / p)
            candidates.append(datadir / p.name)
        candidates.append(p if p.is_absolute() else meta_dir / p)
        candidates.append(meta_dir / p.name)
        found = next((c for c in candidates if c.is_file()), candidates[0])
        out.append(found)
    return out


# ---------------------------------------------------------------------- STAR
def _star_optics_groups(df: pd.DataFrame, optics: pd.DataFrame | None, path: Path) -> np.ndarray:
    """Each particle's optics group ``(N,)`` (1 without an optics table); InputError for an undefined group."""
    if optics is not None and "rlnOpticsGroup" in df.columns:
        og = pd.to_numeric(df["rlnOpticsGroup"], errors="coerce").fillna(1).to_numpy(np.int64)
    else:
        og = np.ones(len(df), np.int64)
    if optics is not None and "rlnOpticsGroup" in optics.columns:
        known = set(pd.to_numeric(optics["rlnOpticsGroup"]).astype(int))
        missing = sorted(set(og.tolist()) - known)
        if missing:
            raise InputError(f"{path}: particles use optics group {missing[0]}, which data_optics does not define; fix the optics table")
    return og


def _star_columns(df: pd.DataFrame, optics: pd.DataFrame | None, og: np.ndarray) -> Callable[[str], np.ndarray | None]:
    """``col(name)``: a numeric column ``(N,)`` from the particle rows, else from the optics table by group, else None."""
    n = len(df)

    def col(name: str) -> np.ndarray | None:
        if name in df.columns:
            return pd.to_numeric(df[name], errors="coerce").to_numpy(np.float64)
        if optics is not None and name in optics.columns:
            if "rlnOpticsGroup" in optics.columns:
                lut = pd.Series(
                    pd.to_numeric(optics[name], errors="coerce").to_numpy(np.float64),
                    index=pd.to_numeric(optics["rlnOpticsGroup"]).astype(int).to_numpy(),
                )
                return pd.Series(og).map(lut).to_numpy(np.float64)
            return np.full(n, float(pd.to_numeric(optics[name]).iloc[0]))
        return None

    return col


def _star_pixel_size(col: Callable[[str], np.ndarray | None], n: int) -> np.ndarray:
    """``_rlnImagePixelSize``, else ``_rlnDetectorPixelSize · 10⁴ / _rlnMagnification``; NaN where missing or not positive."""
    apix = col("rlnImagePixelSize")
    if apix is None:
        det, mag = col("rlnDetectorPixelSize"), col("rlnMagnification")
        if det is not None and mag is not None:
            with np.errstate(divide="ignore", invalid="ignore"):
                apix = det * 1e4 / mag
    if apix is None:
        apix = np.full(n, np.nan)
    return np.where(np.isfinite(apix) & (apix > 0), apix, np.nan)


def _star_shifts(col: Callable[[str], np.ndarray | None], apix: np.ndarray, has_poses: bool, n: int) -> np.ndarray | None:
    """Origins in Å ``(N, 2)``: ``_rlnOriginX/YAngst``, else ``_rlnOriginX/Y`` px × apix, else 0 with poses, else None."""
    ox, oy = col("rlnOriginXAngst"), col("rlnOriginYAngst")
    if ox is not None and oy is not None:
        return np.stack([ox, oy], axis=1)
    px, py = col("rlnOriginX"), col("rlnOriginY")
    if px is not None and py is not None:
        return np.stack([px, py], axis=1) * apix[:, None]
    return np.zeros((n, 2)) if has_poses else None


def _from_star(star: _star.RelionStar, datadir: Path | None) -> dict[str, Any]:
    df, optics, path = star.particles, star.optics, star.path
    n = len(df)
    og = _star_optics_groups(df, optics, path)
    col = _star_columns(df, optics, og)
    apix = _star_pixel_size(col, n)
    size = col("rlnImageSize")
    box = np.zeros(n, np.int64) if size is None else np.nan_to_num(size, nan=0).astype(np.int64)
    rotations = None
    if all(c in df.columns for c in _ANGLE_COLS):
        rotations = euler_to_matrix(df[list(_ANGLE_COLS)].to_numpy(np.float64))
    ctf, ctf_missing = _star_ctf(col, path, n)
    half = np.full(n, -1, np.int8)
    rs = col("rlnRandomSubset")
    if rs is not None:
        half = np.where(rs == 1, 0, np.where(rs == 2, 1, -1)).astype(np.int8)
    images = None
    if "rlnImageName" in df.columns:
        idx, stack = _star.split_image_names(df["rlnImageName"], path)
        images = _stack_source(stack, idx.to_numpy() - 1, path, datadir, warn_unlisted=True)
    return dict(
        n=n,
        images=images,
        rotations=rotations,
        shifts_A=_star_shifts(col, apix, rotations is not None, n),
        ctf=ctf,
        apix_per_particle=apix,
        box_per_particle=box,
        optics_group=og,
        half_set=half,
        name=str(path),
        source=_Source("star", path, df, optics, star.other_blocks),
        ctf_missing=ctf_missing,
    )


def _star_ctf(col: Any, path: Path, n: int) -> tuple[dict[str, np.ndarray] | None, str]:
    du = col("rlnDefocusU")
    if du is None:
        return None, ""
    kv, cs = col("rlnVoltage"), col("rlnSphericalAberration")
    if kv is None or cs is None:
        miss = "_rlnVoltage" if kv is None else "_rlnSphericalAberration"
        warnings.warn(f"{path} has defocus values but no {miss}; its CTF is ignored (add {miss} to use it)", stacklevel=5)
        return None, f"{miss} is missing"
    dv = col("rlnDefocusV")
    q = col("rlnAmplitudeContrast")
    if q is None:
        warnings.warn(f"{path} has no _rlnAmplitudeContrast; using RELION's default {_DEFAULT_Q}", stacklevel=5)
        q = np.full(n, _DEFAULT_Q)

    def or_zero(x: np.ndarray | None) -> np.ndarray:
        return np.zeros(n) if x is None else np.nan_to_num(x, nan=0.0)

    return {
        "defocus_u_A": du,
        "defocus_v_A": du.copy() if dv is None else dv,
        "defocus_angle_deg": or_zero(col("rlnDefocusAngle")),
        "voltage_kV": kv,
        "cs_mm": cs,
        "amplitude_contrast": q,
        "phase_shift_deg": or_zero(col("rlnPhaseShift")),
        "bfactor_A2": or_zero(col("rlnCtfBfactor")),
    }, ""


# ------------------------------------------------------------------------ .cs
def _from_cs(path: Path, arr: np.ndarray, datadir: Path | None) -> dict[str, Any]:
    names = arr.dtype.names or ()
    n = len(arr)
    apix = np.asarray(arr["blob/psize_A"], np.float64) if "blob/psize_A" in names else np.full(n, np.nan)
    apix = np.where(np.isfinite(apix) & (apix > 0), apix, np.nan)
    box = np.zeros(n, np.int64)
    if "blob/shape" in names:
        shape = np.asarray(arr["blob/shape"]).reshape(n, -1)
        if shape.size and np.any(shape[:, 0] != shape[:, -1]):
            raise InputError(f"{path} lists non-square particle images {shape[0].tolist()}; re-extract with a square box")
        box = shape[:, -1].astype(np.int64)
    rotations = shifts = None
    half = np.full(n, -1, np.int8)
    if _cs.cs_has_poses(arr):
        rotations, shift_px = _cs.cs_poses(arr)
        shifts = shift_px * apix[:, None]
        if "alignments3D/split" in names:
            sp = np.asarray(arr["alignments3D/split"]).astype(np.int64)
            half = np.where((sp == 0) | (sp == 1), sp, -1).astype(np.int8)
    ctf = _cs.cs_ctf(arr) if _cs.cs_has_ctf(arr) else None
    og = (np.asarray(arr["ctf/exp_group_id"]).astype(np.int64) + 1) if "ctf/exp_group_id" in names else np.ones(n, np.int64)
    images = None
    if "blob/path" in names and "blob/idx" in names:
        images = _stack_source(_cs.cs_blob_paths(arr), np.asarray(arr["blob/idx"]).astype(np.int64), path, datadir)
    return dict(
        n=n,
        images=images,
        rotations=rotations,
        shifts_A=shifts,
        ctf=ctf,
        apix_per_particle=apix,
        box_per_particle=box,
        optics_group=og,
        half_set=half,
        name=str(path),
        source=_Source("cs", path, arr),
    )
