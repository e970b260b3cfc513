"""SO(3) grids: determinism, size growth, covering radius."""

from __future__ import annotations

import numpy as np
import pytest

from cryoscape.geometry.rotations import matrix_to_quaternion, random_rotations
from cryoscape.geometry.so3_grid import grid_size, grid_spacing_deg, s2_grid, so3_grid, so3_grid_euler


def _covering_distances_deg(grid: np.ndarray, R: np.ndarray) -> np.ndarray:
    qg = matrix_to_quaternion(grid)
    q = matrix_to_quaternion(R)
    dots = np.clip(np.abs(q @ qg.T).max(axis=1), 0.0, 1.0)
    return np.rad2deg(2.0 * np.arccos(dots))


def test_deterministic_and_valid() -> None:
    a, b = so3_grid(1), so3_grid(1)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (grid_size(1), 3, 3) and a.dtype == np.float64
    np.testing.assert_allclose(a @ a.transpose(0, 2, 1), np.broadcast_to(np.eye(3), a.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(a), 1.0, atol=1e-12)
    a[0] = 0  # a copy: the cached grid is untouched
    assert np.all(so3_grid(1)[0] == b[0])


def test_size_grows_eightfold() -> None:
    sizes = [len(so3_grid(level)) for level in range(3)]
    assert sizes == [72, 576, 4608]
    assert grid_size(4) == 72 * 8**4
    assert [grid_spacing_deg(level) for level in range(3)] == [60.0, 30.0, 15.0]


def test_no_duplicates() -> None:
    G = so3_grid(1)
    q = matrix_to_quaternion(G)
    d = np.abs(q @ q.T) - 2 * np.eye(len(q))
    assert d.max() < np.cos(np.deg2rad(1.0) / 2)


@pytest.mark.parametrize("level", [0, 1, 2])
def test_covering_radius(level: int) -> None:
    R = random_rotations(2000, np.random.default_rng(level))
    d = _covering_distances_deg(so3_grid(level), R)
    assert d.max() < grid_spacing_deg(level)
    assert d.mean() < 0.6 * grid_spacing_deg(level)


def test_s2_directions_near_uniform() -> None:
    rot_tilt = s2_grid(2)
    z = np.cos(np.deg2rad(rot_tilt[:, 1]))
    # Equal-area: z is evenly spread in (-1, 1).
    np.testing.assert_allclose(np.sort(z), np.linspace(-1, 1, len(z) + 1)[:-1] + 1 / len(z), atol=1e-12)
    eul = so3_grid_euler(0)
    assert eul.shape == (72, 3)


def test_bad_level() -> None:
    with pytest.raises(ValueError):
        so3_grid(-1)
