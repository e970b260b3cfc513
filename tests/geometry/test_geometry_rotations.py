"""Rotation conventions: RELION Euler, quaternions, axis-angle, cryoSPARC poses, Haar sampling."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.spatial.transform import Rotation

from cryoscape.geometry import rotations as rot


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def angles(rng: np.random.Generator) -> np.ndarray:
    n = 500
    return np.c_[rng.uniform(-180, 180, n), rng.uniform(0, 180, n), rng.uniform(-180, 180, n)]


def test_euler_matches_scipy_convention(angles: np.ndarray) -> None:
    R = rot.euler_relion_to_matrix(angles)
    ref = Rotation.from_euler("ZYZ", angles, degrees=True).as_matrix().transpose(0, 2, 1)
    np.testing.assert_allclose(R, ref, atol=1e-12)


def test_euler_round_trip(angles: np.ndarray) -> None:
    R = rot.euler_relion_to_matrix(angles)
    back = rot.matrix_to_euler_relion(R)
    np.testing.assert_allclose(back, angles, atol=1e-9)
    np.testing.assert_allclose(rot.euler_relion_to_matrix(back), R, atol=1e-12)


@pytest.mark.parametrize("tilt", [0.0, 180.0])
def test_euler_gimbal_lock(tilt: float) -> None:
    R = rot.euler_relion_to_matrix(np.array([[30.0, tilt, 50.0], [-120.0, tilt, 10.0]]))
    back = rot.matrix_to_euler_relion(R)
    np.testing.assert_allclose(back[:, 0], 0.0)
    np.testing.assert_allclose(back[:, 1], tilt)
    np.testing.assert_allclose(rot.euler_relion_to_matrix(back), R, atol=1e-12)


def test_orthonormal_det_one(rng: np.random.Generator) -> None:
    R = rot.random_rotations(1000, rng)
    assert R.shape == (1000, 3, 3) and R.dtype == np.float64
    np.testing.assert_allclose(R @ R.transpose(0, 2, 1), np.broadcast_to(np.eye(3), R.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=1e-12)


def test_quaternion_matches_scipy_and_round_trips(rng: np.random.Generator) -> None:
    R = rot.random_rotations(1000, rng)
    q = rot.matrix_to_quaternion(R)
    ref = Rotation.from_matrix(R).as_quat()[:, [3, 0, 1, 2]]
    ref *= np.sign(ref[:, :1])
    assert np.all(q[:, 0] >= 0)
    np.testing.assert_allclose(q, ref, atol=1e-12)
    np.testing.assert_allclose(rot.quaternion_to_matrix(q), R, atol=1e-12)
    np.testing.assert_allclose(rot.quaternion_to_matrix(-q), R, atol=1e-12)


def test_quaternion_near_pi_rotations() -> None:
    v = np.array([[np.pi, 0, 0], [0, np.pi, 0], [0, 0, np.pi], [np.pi / np.sqrt(2), np.pi / np.sqrt(2), 0]])
    R = rot.axis_angle_to_matrix(v)
    np.testing.assert_allclose(rot.quaternion_to_matrix(rot.matrix_to_quaternion(R)), R, atol=1e-12)
    np.testing.assert_allclose(rot.rotation_angle_deg(R), 180.0, atol=1e-9)


def test_axis_angle_matches_scipy(rng: np.random.Generator) -> None:
    R = rot.random_rotations(1000, rng)
    v = rot.matrix_to_axis_angle(R)
    np.testing.assert_allclose(v, Rotation.from_matrix(R).as_rotvec(), atol=1e-10)
    np.testing.assert_allclose(rot.axis_angle_to_matrix(v), R, atol=1e-12)
    np.testing.assert_allclose(rot.axis_angle_to_matrix(np.zeros(3)), np.eye(3), atol=1e-15)
    small = np.array([1e-9, -2e-9, 0.5e-9])
    np.testing.assert_allclose(rot.axis_angle_to_matrix(small), Rotation.from_rotvec(small).as_matrix(), atol=1e-15)


def test_cryosparc_pose(rng: np.random.Generator) -> None:
    pose = Rotation.random(50, random_state=3).as_rotvec()
    R = rot.cryosparc_pose_to_matrix(pose)
    np.testing.assert_allclose(R, Rotation.from_rotvec(pose).as_matrix().transpose(0, 2, 1), atol=1e-12)
    np.testing.assert_allclose(rot.matrix_to_cryosparc_pose(R), pose, atol=1e-10)


def test_torch_in_torch_out(angles: np.ndarray) -> None:
    t = torch.as_tensor(angles, dtype=torch.float32)
    R = rot.euler_relion_to_matrix(t)
    assert isinstance(R, torch.Tensor) and R.dtype == torch.float32 and R.shape == (len(angles), 3, 3)
    np.testing.assert_allclose(R.numpy(), rot.euler_relion_to_matrix(angles), atol=1e-6)
    Rt = rot.cryosparc_pose_to_matrix(torch.zeros(2, 3, dtype=torch.float64))
    assert isinstance(Rt, torch.Tensor)


def test_random_rotations_are_uniform(rng: np.random.Generator) -> None:
    n = 20000
    R = rot.random_rotations(n, rng)
    # E[R] = 0 for the Haar measure; each entry has variance 1/3.
    assert np.abs(R.mean(axis=0)).max() < 5 * np.sqrt(1 / 3 / n)
    # Rotation angle density (1 - cos θ) / π on [0, π].
    theta = np.deg2rad(rot.rotation_angle_deg(R))
    cdf = lambda t: (t - np.sin(t)) / np.pi  # noqa: E731
    assert stats.kstest(theta, cdf).pvalue > 1e-3
    # Viewing directions (third rows) are uniform on S²: z uniform in [-1, 1].
    assert stats.kstest(R[:, 2, 2], "uniform", args=(-1, 2)).pvalue > 1e-3


def test_random_rotations_deterministic() -> None:
    a = rot.random_rotations(10, np.random.default_rng(5))
    b = rot.random_rotations(10, np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)
    with pytest.raises(TypeError):
        rot.random_rotations(3, 5)  # type: ignore[arg-type]


def test_geodesic_distance() -> None:
    R1 = rot.axis_angle_to_matrix(np.array([0.0, 0.0, 0.3]))
    R2 = rot.axis_angle_to_matrix(np.array([0.0, 0.0, -0.2]))
    assert rot.geodesic_distance_deg(R1, R2) == pytest.approx(np.rad2deg(0.5))
