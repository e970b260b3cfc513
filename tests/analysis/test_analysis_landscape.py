"""The KDE free-energy landscape has its minimum at the densest blob."""

from __future__ import annotations

import numpy as np
import pytest

from cryoscape.analysis.landscape import boltzmann_inversion, free_energy_landscape
from cryoscape.errors import InputError


def blobs_2d(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    dense = np.array([2.0, 2.0]) + 0.3 * rng.standard_normal((600, 2))
    a = np.array([-2.0, 0.0]) + 0.5 * rng.standard_normal((150, 2))
    b = np.array([0.0, -3.0]) + 0.5 * rng.standard_normal((150, 2))
    return np.vstack([dense, a, b]), np.repeat([0, 1, 2], [600, 150, 150])


def test_minimum_at_densest_blob():
    Z, which = blobs_2d()
    land = free_energy_landscape(Z, grid_size=80)
    mx, my = land.minimum
    assert np.hypot(mx - 2.0, my - 2.0) < 0.3
    assert land.free_energy.shape == (80, 80) and land.free_energy.min() == 0.0
    assert land.free_energy.max() <= 30.0
    # particles in the dense blob have the highest density and the lowest energy
    assert np.median(land.particle_density[which == 0]) > 3 * np.median(land.particle_density[which != 0])
    g = land.particle_free_energy()
    assert g.min() >= 0 and np.median(g[which == 0]) < np.median(g[which != 0])


def test_density_integrates_to_one_and_grid_layout():
    Z, _ = blobs_2d()
    land = free_energy_landscape(Z, grid_size=120, padding=0.5)
    dx, dy = np.diff(land.x[:2])[0], np.diff(land.y[:2])[0]
    assert abs(land.density.sum() * dx * dy - 1.0) < 0.02
    iy, ix = np.unravel_index(np.argmax(land.density), land.density.shape)
    assert abs(land.x[ix] - 2.0) < 0.3 and abs(land.y[iy] - 2.0) < 0.3  # rows follow y


def test_subsampled_kde_interpolates_particle_density():
    Z, _ = blobs_2d()
    exact = free_energy_landscape(Z, grid_size=150)
    approx = free_energy_landscape(Z, grid_size=150, max_points=899)
    assert np.corrcoef(exact.particle_density, approx.particle_density)[0, 1] > 0.98


def test_boltzmann_inversion_in_kT():
    p = np.array([1.0, np.exp(-2.0), 0.0])
    assert np.allclose(boltzmann_inversion(p, max_kT=10.0), [0.0, 2.0, 10.0])


def test_landscape_needs_2d():
    with pytest.raises(InputError, match="2-D embedding"):
        free_energy_landscape(np.zeros((10, 3)))
