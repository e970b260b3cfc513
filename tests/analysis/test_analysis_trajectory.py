"""Trajectories: PC traversal on a line; density-weighted graph paths follow the populated bridge."""

from __future__ import annotations

import numpy as np
import pytest

from cryoscape.analysis.trajectory import graph_path, knn_graph, pc_trajectory, resample_polyline
from cryoscape.errors import InputError


def bridge_and_shortcut(seed: int = 0) -> np.ndarray:
    """Blobs at (0,0) and (6,0); a dense arc over y>0 joins them, a sparse line y=0 too.

    Rows 0 and 1 are the blob centres (the path's ends).
    """
    rng = np.random.default_rng(seed)
    ends = np.array([[0.0, 0.0], [6.0, 0.0]])
    blob_a = 0.3 * rng.standard_normal((300, 2))
    blob_b = np.array([6.0, 0.0]) + 0.3 * rng.standard_normal((300, 2))
    theta = rng.uniform(0, np.pi, 400)
    arc = np.stack([3.0 + 3.0 * np.cos(theta), 3.0 * np.sin(theta)], axis=1) + 0.05 * rng.standard_normal((400, 2))
    shortcut = np.stack([np.arange(1.0, 5.01, 0.4), np.zeros(11)], axis=1)
    return np.vstack([ends, blob_a, blob_b, arc, shortcut])


def test_path_goes_through_dense_bridge():
    Z = bridge_and_shortcut()
    path = graph_path(Z, 0, 1, k=10, n_points=25)
    assert path.indices[0] == 0 and path.indices[-1] == 1
    assert path.points[:, 1].max() > 2.5  # over the arc
    assert path.length > 8.0
    assert path.resampled.shape == (25, 2)
    assert np.allclose(path.resampled[0], Z[0]) and np.allclose(path.resampled[-1], Z[1])
    steps = np.linalg.norm(np.diff(path.resampled, axis=0), axis=1)
    assert np.allclose(steps, steps.mean(), rtol=0.05)  # equal spacing in arc length


def test_plain_geodesic_takes_the_shortcut():
    Z = bridge_and_shortcut()
    path = graph_path(Z, 0, 1, k=10, density_power=0.0)
    assert np.abs(path.points[:, 1]).max() < 1.0 and path.length < 7.0


def test_disconnected_graph_asks_for_larger_k():
    rng = np.random.default_rng(0)
    Z = np.vstack([rng.standard_normal((30, 2)), 100 + rng.standard_normal((30, 2))])
    with pytest.raises(InputError, match="larger k"):
        graph_path(Z, 0, 59, k=5)


def test_knn_graph_is_symmetric_with_positive_weights():
    Z = np.random.default_rng(1).standard_normal((80, 3))
    g = knn_graph(Z, k=4)
    assert (abs(g - g.T)).max() == 0 and g.data.min() > 0
    assert np.all(np.diff(g.indptr) >= 4)


def test_pc_trajectory_on_a_line():
    rng = np.random.default_rng(0)
    direction = np.array([0.6, 0.8, 0.0])
    t = rng.uniform(-1, 1, 1000)
    Z = np.array([1.0, 2.0, 3.0]) + t[:, None] * direction
    traj = pc_trajectory(Z, component=0, n_points=10)
    assert traj.points.shape == (10, 3) and np.all(np.diff(traj.pc_values) > 0)
    assert np.allclose(traj.percentiles, np.linspace(5, 95, 10))
    offsets = traj.points - Z.mean(axis=0)
    assert np.allclose(np.cross(offsets, direction), 0.0, atol=1e-10)  # on the line
    assert abs(traj.pc_values[0] + 0.9) < 0.1 and abs(traj.pc_values[-1] - 0.9) < 0.1


def test_resample_polyline_and_bad_input():
    pts = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]])
    assert np.allclose(resample_polyline(pts, 5), [[0, 0], [0.5, 0], [1, 0], [1, 0.5], [1, 1]])
    with pytest.raises(InputError, match="component"):
        pc_trajectory(pts, component=2)
