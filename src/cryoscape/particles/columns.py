"""The vocabulary of a particle table: canonical field names, RELION column names, Euler conversions.

Also the rows of the original file kept aligned with the particles
(:class:`_Source`) and the small array checks shared by the readers and
:class:`~cryoscape.particles.ParticleSet`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cryoscape.errors import InputError
from cryoscape.geometry.rotations import euler_relion_to_matrix, matrix_to_euler_relion

__all__ = ["CTF_FIELDS", "euler_to_matrix", "matrix_to_euler"]


#: Canonical CTF fields, each ``(N,)`` float64.
CTF_FIELDS: tuple[str, ...] = (
    "defocus_u_A",
    "defocus_v_A",
    "defocus_angle_deg",
    "voltage_kV",
    "cs_mm",
    "amplitude_contrast",
    "phase_shift_deg",
    "bfactor_A2",
)

_ANGLE_COLS = ("rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi")
_OPTICS_ONLY_COLS = (
    "rlnVoltage",
    "rlnSphericalAberration",
    "rlnAmplitudeContrast",
    "rlnDetectorPixelSize",
    "rlnMagnification",
    "rlnImagePixelSize",
    "rlnImageSize",
    "rlnImageDimensionality",
    "rlnOriginX",
    "rlnOriginY",
)
_DEFAULT_Q = 0.1  # RELION's default amplitude contrast


def euler_to_matrix(angles_deg: np.ndarray) -> np.ndarray:
    """RELION (rot, tilt, psi) in degrees ``(N,3)`` → rotation matrices ``(N,3,3)``."""
    return euler_relion_to_matrix(np.asarray(angles_deg, dtype=np.float64).reshape(-1, 3))


def matrix_to_euler(rotations: np.ndarray) -> np.ndarray:
    """Rotation matrices ``(N,3,3)`` → RELION (rot, tilt, psi) in degrees ``(N,3)``."""
    return matrix_to_euler_relion(np.asarray(rotations, dtype=np.float64).reshape(-1, 3, 3))


@dataclass
class _Source:
    """Rows of the original file, aligned with the particles."""

    kind: str  # "star" | "cs"
    path: Path
    table: Any  # pandas DataFrame (star) or numpy structured array (cs)
    optics: pd.DataFrame | None = None
    other_blocks: dict[str, pd.DataFrame] = field(default_factory=dict)

    def take(self, idx: np.ndarray) -> "_Source":
        if self.kind == "star":
            return replace(self, table=self.table.iloc[idx].reset_index(drop=True))
        return replace(self, table=self.table[idx])


def _as_array(x: Any, n: int, dtype: Any = np.float64, name: str = "value") -> np.ndarray:
    arr = np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x, dtype=dtype)
    if arr.ndim == 0:
        arr = np.full(n, arr, dtype=dtype)
    if arr.shape[0] != n:
        raise InputError(f"{name} has {arr.shape[0]} entries for {n} particles; give one per particle")
    return arr


def _frames_equal(a: pd.DataFrame | None, b: pd.DataFrame | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return a.equals(b)
