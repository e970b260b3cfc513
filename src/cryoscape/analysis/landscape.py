"""Density and free-energy landscapes on a 2-D latent embedding (survey §9.4).

A Gaussian kernel density estimate ``p`` of the embedded particles is
evaluated on a regular grid and turned into a free energy by Boltzmann
inversion, ``G = −kT ln p``. ``G`` is reported **in units of kT** and shifted
so that its minimum on the grid is 0; it is capped at ``max_kT`` where the
density is vanishingly small. The inversion assumes the particle populations
reflect thermal equilibrium, and the energy of an embedding is only as
meaningful as distances in that embedding.

Grid layout: ``free_energy[iy, ix]`` is the value at ``(x[ix], y[iy])``, i.e.
rows follow ``y`` as ``imshow(..., origin="lower")`` expects.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.interpolate import RegularGridInterpolator
from scipy.stats import gaussian_kde

from cryoscape.analysis.latent import as_latents
from cryoscape.errors import InputError


@dataclass
class FreeEnergyLandscape:
    """A KDE density and its free energy on a grid, plus the density at each particle."""

    x: np.ndarray  # (gx,) grid axis of the first embedding coordinate
    y: np.ndarray  # (gy,) grid axis of the second embedding coordinate
    density: np.ndarray  # (gy, gx) KDE probability density (integrates to ≈1 over the plane)
    free_energy: np.ndarray  # (gy, gx) −ln(p / p_max) in kT, min 0, capped at max_kT
    particle_density: np.ndarray  # (N,) KDE density at each particle
    bandwidth: float  # kernel scale factor relative to the data covariance (Scott's by default)

    @property
    def minimum(self) -> tuple[float, float]:
        """``(x, y)`` of the grid point with the lowest free energy."""
        iy, ix = np.unravel_index(int(np.argmin(self.free_energy)), self.free_energy.shape)
        return float(self.x[ix]), float(self.y[iy])

    def particle_free_energy(self) -> np.ndarray:
        """Free energy (kT) at each particle, on the grid's scale, clipped to ``[0, grid max]``.

        A particle can sit between grid nodes where the density is slightly
        higher than at any node; clipping keeps the grid's minimum at 0.
        """
        p_max = float(self.density.max())
        cap = float(self.free_energy.max())
        return np.clip(-np.log(np.maximum(self.particle_density, np.finfo(float).tiny) / p_max), 0.0, cap)


def _grid_axes(points: np.ndarray, grid_size: int, padding: float) -> tuple[np.ndarray, np.ndarray]:
    """Regular axes covering the points' range widened by ``padding`` × range."""
    lo, hi = points.min(axis=0), points.max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    lo, hi = lo - padding * span, hi + padding * span
    return np.linspace(lo[0], hi[0], grid_size), np.linspace(lo[1], hi[1], grid_size)


def _fit_kde(points: np.ndarray, bandwidth: Any, max_points: int, seed: int) -> gaussian_kde:
    """A Gaussian KDE of at most ``max_points`` randomly chosen points."""
    fit = points
    if points.shape[0] > max_points:
        rng = np.random.default_rng(seed)
        fit = points[rng.choice(points.shape[0], size=max_points, replace=False)]
    try:
        return gaussian_kde(fit.T, bw_method=bandwidth)
    except np.linalg.LinAlgError:
        raise InputError("the embedding is degenerate (its points lie on a line); a 2-D density needs spread in both axes") from None


def free_energy_landscape(
    embedding: Any,
    grid_size: int = 100,
    bandwidth: str | float | None = None,
    padding: float = 0.1,
    max_kT: float = 30.0,
    max_points: int = 20000,
    seed: int = 0,
) -> FreeEnergyLandscape:
    """Gaussian KDE density and free energy ``G = −ln(p/p_max)`` (kT) of a 2-D embedding.

    ``bandwidth`` is passed to ``scipy.stats.gaussian_kde`` (``None`` → Scott's
    rule, ``n^{-1/6}`` × the data covariance in 2-D; a number is that factor).
    The KDE is fitted to at most ``max_points`` particles (a random subset
    drawn with ``seed``). The density at each particle is evaluated exactly
    when ``N ≤ max_points`` and interpolated from the grid otherwise.
    """
    pts = as_latents(embedding, "embedding")
    if pts.shape[1] != 2:
        raise InputError(f"a landscape needs a 2-D embedding (N×2); got N×{pts.shape[1]} — embed with PCA or UMAP first")
    if pts.shape[0] < 3 or grid_size < 2:
        raise InputError(f"a landscape needs at least 3 particles and grid_size ≥ 2 (got {pts.shape[0]}, {grid_size})")
    kde = _fit_kde(pts, bandwidth, int(max_points), seed)
    x, y = _grid_axes(pts, int(grid_size), float(padding))
    xx, yy = np.meshgrid(x, y)
    density = kde(np.vstack([xx.ravel(), yy.ravel()])).reshape(yy.shape)
    if pts.shape[0] <= max_points:
        at_particles = kde(pts.T)
    else:
        at_particles = RegularGridInterpolator((y, x), density)(pts[:, ::-1])
    return FreeEnergyLandscape(x, y, density, boltzmann_inversion(density, max_kT), at_particles, float(kde.factor))


def boltzmann_inversion(density: np.ndarray, max_kT: float = 30.0) -> np.ndarray:
    """``G = −ln(p / max p)`` in units of kT: 0 at the densest point, capped at ``max_kT``."""
    p = np.asarray(density, dtype=np.float64)
    p_max = float(p.max())
    if not p_max > 0:
        raise InputError("the density is zero everywhere; there is no landscape to invert")
    floor = p_max * np.exp(-float(max_kT))
    return -np.log(np.maximum(p, floor) / p_max)
