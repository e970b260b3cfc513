"""Deterministic near-uniform grids on SO(3) for pose search.

The grid follows the Hopf fibration SO(3) -> S²: a rotation is a viewing
direction on the sphere plus an in-plane angle. Level ``L`` uses

* ``12 · 4^L`` viewing directions from a spherical Fibonacci lattice
  (near-uniform, no polar clustering), and
* ``6 · 2^L`` equally spaced in-plane angles ``psi``,

so ``M(L) = 72 · 8^L`` rotations (72, 576, 4608, 36864, ...), each level
halving the spacing. The viewing direction of a RELION rotation
``(rot, tilt, psi)`` is ``(sin tilt cos rot, sin tilt sin rot, cos tilt)``
(the third row of ``R``, i.e. ``Rᵀ e_z`` in volume coordinates), so a
direction with polar angle ``tilt`` and azimuth ``rot`` combined with each
``psi`` gives ``R = euler_relion_to_matrix(rot, tilt, psi)``.

Grid order: direction-major, ``index = i_direction · n_psi + i_psi``.
"""

from __future__ import annotations

import functools

import numpy as np

from cryoscape.geometry.rotations import euler_relion_to_matrix

__all__ = [
    "so3_grid",
    "so3_grid_euler",
    "grid_size",
    "grid_spacing_deg",
    "n_directions",
    "n_inplane",
    "s2_grid",
    "inplane_grid_deg",
]

_GOLDEN_ANGLE = np.pi * (3.0 - np.sqrt(5.0))


def _check_level(level: int) -> int:
    level = int(level)
    if level < 0 or level > 6:
        raise ValueError(f"SO(3) grid level must be in 0..6; got {level}")
    return level


def n_directions(level: int) -> int:
    """Number of viewing directions on S² at ``level``: ``12 · 4^level``."""
    return 12 * 4 ** _check_level(level)


def n_inplane(level: int) -> int:
    """Number of in-plane angles at ``level``: ``6 · 2^level``."""
    return 6 * 2 ** _check_level(level)


def grid_size(level: int) -> int:
    """Number of rotations in ``so3_grid(level)``: ``72 · 8^level``."""
    return n_directions(level) * n_inplane(level)


def grid_spacing_deg(level: int) -> float:
    """Nominal spacing of the level-``level`` grid in degrees: ``60 / 2^level``.

    This is the in-plane step; the mean distance between neighbouring viewing
    directions is about the same (``sqrt(4π / N_dir)`` ≈ 58.6° / 2^level).
    Every rotation lies within about this angle (geodesic distance on SO(3))
    of a grid point; the covering radius measured on random rotations is
    below ``grid_spacing_deg(level)``.
    """
    return 60.0 / 2 ** _check_level(level)


def s2_grid(level: int) -> np.ndarray:
    """Spherical Fibonacci viewing directions ``(n_directions(level), 2)`` as ``(rot, tilt)`` degrees.

    ``tilt`` is the polar angle from +z in (0, 180) and ``rot`` the azimuth
    from +x in [0, 360).
    """
    n = n_directions(level)
    i = np.arange(n, dtype=np.float64)
    z = 1.0 - (2.0 * i + 1.0) / n
    tilt = np.rad2deg(np.arccos(z))
    rot = np.rad2deg(np.mod(i * _GOLDEN_ANGLE, 2.0 * np.pi))
    return np.stack([rot, tilt], axis=-1)


def inplane_grid_deg(level: int) -> np.ndarray:
    """Equally spaced in-plane angles ``psi`` ``(n_inplane(level),)`` in degrees, in [0, 360)."""
    n = n_inplane(level)
    return np.arange(n, dtype=np.float64) * (360.0 / n)


def so3_grid_euler(level: int) -> np.ndarray:
    """RELION Euler angles ``(M, 3)`` ``(rot, tilt, psi)`` in degrees of ``so3_grid(level)``."""
    dirs = s2_grid(level)
    psi = inplane_grid_deg(level)
    nd, npsi = len(dirs), len(psi)
    return np.concatenate([np.repeat(dirs, npsi, axis=0), np.tile(psi, nd)[:, None]], axis=-1)


@functools.lru_cache(maxsize=8)
def _so3_grid_cached(level: int) -> np.ndarray:
    R = euler_relion_to_matrix(so3_grid_euler(level))
    R.setflags(write=False)
    return R


def so3_grid(level: int) -> np.ndarray:
    """Deterministic near-uniform rotation grid ``(72 · 8^level, 3, 3)`` float64.

    Rotations map volume coordinates into the particle frame (RELION
    convention). The result is a fresh writable copy.
    """
    return _so3_grid_cached(_check_level(level)).copy()
