"""Rotation conventions and conversions.

A rotation matrix ``R`` (``(..., 3, 3)``) maps volume coordinates into the
particle's frame: a particle's central slice samples the volume's Fourier
transform at ``R.T @ (kx, ky, 0)``. Coordinate vectors are ordered
``(x, y, z)``.

Conventions pinned here (and by the tests):

* RELION Euler angles ``(rot, tilt, psi)`` in degrees (``_rlnAngleRot``,
  ``_rlnAngleTilt``, ``_rlnAnglePsi``) give
  ``R = Rotation.from_euler("ZYZ", [rot, tilt, psi], degrees=True).as_matrix().T``
  (RELION's ``Euler_angles2matrix``).
* Quaternions are ``(w, x, y, z)`` with ``w >= 0`` and describe the same
  active rotation as the matrix they convert to (``v' = R v``).
* Axis-angle vectors ``v`` (radians) give ``R = exp([v]_x)``.
* cryoSPARC's ``alignments3D/pose`` is an axis-angle vector of the transpose:
  ``R = exp([pose]_x).T``.

Every function takes numpy arrays (any leading batch dimensions) and returns
float64 numpy arrays; a torch tensor input gives a tensor of the same dtype
and device back.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import numpy as np

__all__ = [
    "euler_relion_to_matrix",
    "matrix_to_euler_relion",
    "matrix_to_quaternion",
    "quaternion_to_matrix",
    "matrix_to_axis_angle",
    "axis_angle_to_matrix",
    "cryosparc_pose_to_matrix",
    "matrix_to_cryosparc_pose",
    "random_rotations",
    "random_quaternions",
    "rotation_angle_deg",
    "geodesic_distance_deg",
]

_EPS = 1e-12


def _numpy_io(func: Callable[..., np.ndarray]) -> Callable[..., Any]:
    """Run ``func`` on float64 numpy; hand a torch input back as torch."""

    @functools.wraps(func)
    def wrapper(x: Any, *args: Any, **kwargs: Any) -> Any:
        if type(x).__module__.startswith("torch"):
            import torch

            out = func(np.asarray(x.detach().cpu().numpy(), dtype=np.float64), *args, **kwargs)
            dtype = x.dtype if x.is_floating_point() else torch.float64
            return torch.as_tensor(out, dtype=dtype, device=x.device)
        return func(np.asarray(x, dtype=np.float64), *args, **kwargs)

    return wrapper


def _check_last(x: np.ndarray, shape: tuple[int, ...], name: str) -> None:
    if x.shape[x.ndim - len(shape):] != shape:
        raise ValueError(f"{name} must have shape (..., {', '.join(map(str, shape))}); got {x.shape}")


@_numpy_io
def euler_relion_to_matrix(angles_deg: np.ndarray) -> np.ndarray:
    """RELION ``(rot, tilt, psi)`` in degrees ``(..., 3)`` -> rotation matrices ``(..., 3, 3)``.

    ``R = Rz(psi) Ry(tilt) Rz(rot)`` in the passive (coordinate) sense, equal to
    ``Rotation.from_euler("ZYZ", [rot, tilt, psi], degrees=True).as_matrix().T``.
    """
    _check_last(angles_deg, (3,), "angles_deg")
    a, b, g = np.moveaxis(np.deg2rad(angles_deg), -1, 0)
    ca, sa, cb, sb, cg, sg = np.cos(a), np.sin(a), np.cos(b), np.sin(b), np.cos(g), np.sin(g)
    cc, cs, sc, ss = cb * ca, cb * sa, sb * ca, sb * sa
    rows = [
        [cg * cc - sg * sa, cg * cs + sg * ca, -cg * sb],
        [-sg * cc - cg * sa, -sg * cs + cg * ca, sg * sb],
        [sc, ss, cb],
    ]
    return np.stack([np.stack(r, axis=-1) for r in rows], axis=-2)


@_numpy_io
def matrix_to_euler_relion(R: np.ndarray) -> np.ndarray:
    """Rotation matrices ``(..., 3, 3)`` -> RELION ``(rot, tilt, psi)`` in degrees ``(..., 3)``.

    Returns the representative with ``tilt`` in [0, 180] and ``rot``, ``psi``
    in (-180, 180]. At ``tilt`` = 0 or 180 (gimbal lock) ``rot`` is set to 0
    and the whole in-plane angle is put in ``psi``.
    """
    _check_last(R, (3, 3), "R")
    sin_tilt = np.hypot(R[..., 0, 2], R[..., 1, 2])
    regular = sin_tilt > 1e-9
    tilt = np.arctan2(sin_tilt, R[..., 2, 2])
    rot = np.where(regular, np.arctan2(R[..., 2, 1], R[..., 2, 0]), 0.0)
    psi_regular = np.arctan2(R[..., 1, 2], -R[..., 0, 2])
    psi_top = np.arctan2(-R[..., 1, 0], R[..., 0, 0])
    psi_bottom = np.arctan2(R[..., 1, 0], -R[..., 0, 0])
    psi = np.where(regular, psi_regular, np.where(R[..., 2, 2] > 0, psi_top, psi_bottom))
    tilt = np.where(regular, tilt, np.where(R[..., 2, 2] > 0, 0.0, np.pi))
    return np.rad2deg(np.stack([rot, tilt, psi], axis=-1))


@_numpy_io
def matrix_to_quaternion(R: np.ndarray) -> np.ndarray:
    """Rotation matrices ``(..., 3, 3)`` -> unit quaternions ``(..., 4)`` as ``(w, x, y, z)``, ``w >= 0``.

    Uses the numerically stable branch choice (largest of ``w, x, y, z``).
    """
    _check_last(R, (3, 3), "R")
    m = R
    tr = m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2]
    # 4 q_i^2 for each component, from the diagonal.
    sq = np.stack(
        [
            1.0 + tr,
            1.0 + m[..., 0, 0] - m[..., 1, 1] - m[..., 2, 2],
            1.0 - m[..., 0, 0] + m[..., 1, 1] - m[..., 2, 2],
            1.0 - m[..., 0, 0] - m[..., 1, 1] + m[..., 2, 2],
        ],
        axis=-1,
    )
    # Candidate quaternions (unnormalised, each 4*q_i times q) for every branch.
    d21, d02, d10 = m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]
    s21, s02, s10 = m[..., 2, 1] + m[..., 1, 2], m[..., 0, 2] + m[..., 2, 0], m[..., 1, 0] + m[..., 0, 1]
    cands = np.stack(
        [
            np.stack([sq[..., 0], d21, d02, d10], axis=-1),
            np.stack([d21, sq[..., 1], s10, s02], axis=-1),
            np.stack([d02, s10, sq[..., 2], s21], axis=-1),
            np.stack([d10, s02, s21, sq[..., 3]], axis=-1),
        ],
        axis=-2,
    )
    best = np.argmax(sq, axis=-1)
    q = np.take_along_axis(cands, best[..., None, None], axis=-2)[..., 0, :]
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    return np.where(q[..., :1] < 0, -q, q)


@_numpy_io
def quaternion_to_matrix(q: np.ndarray) -> np.ndarray:
    """Quaternions ``(..., 4)`` as ``(w, x, y, z)`` (normalised here) -> matrices ``(..., 3, 3)``."""
    _check_last(q, (4,), "q")
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    w, x, y, z = np.moveaxis(q, -1, 0)
    rows = [
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ]
    return np.stack([np.stack(r, axis=-1) for r in rows], axis=-2)


def _quaternion_to_axis_angle(q: np.ndarray) -> np.ndarray:
    q = np.where(q[..., :1] < 0, -q, q)
    vec = q[..., 1:]
    norm = np.linalg.norm(vec, axis=-1, keepdims=True)
    angle = 2.0 * np.arctan2(norm, q[..., :1])
    # angle / sin(angle / 2) -> 2 as angle -> 0.
    scale = np.where(norm > _EPS, angle / np.maximum(norm, _EPS), 2.0)
    return vec * scale


@_numpy_io
def matrix_to_axis_angle(R: np.ndarray) -> np.ndarray:
    """Rotation matrices ``(..., 3, 3)`` -> axis-angle vectors ``(..., 3)`` (radians, angle in [0, pi])."""
    _check_last(R, (3, 3), "R")
    return _quaternion_to_axis_angle(matrix_to_quaternion(R))


@_numpy_io
def axis_angle_to_matrix(v: np.ndarray) -> np.ndarray:
    """Axis-angle vectors ``(..., 3)`` (radians) -> ``R = exp([v]_x)`` ``(..., 3, 3)`` (Rodrigues)."""
    _check_last(v, (3,), "v")
    angle = np.linalg.norm(v, axis=-1, keepdims=True)
    half = 0.5 * angle
    # sin(half) / angle -> 1/2 as angle -> 0.
    sinc = np.where(angle > _EPS, np.sin(half) / np.maximum(angle, _EPS), 0.5 - angle**2 / 48.0)
    q = np.concatenate([np.cos(half), v * sinc], axis=-1)
    return quaternion_to_matrix(q)


def cryosparc_pose_to_matrix(rotvec: Any) -> Any:
    """cryoSPARC ``alignments3D/pose`` ``(..., 3)`` (radians) -> ``R = exp([pose]_x).T`` ``(..., 3, 3)``."""
    R = axis_angle_to_matrix(rotvec)
    return R.swapaxes(-1, -2) if isinstance(R, np.ndarray) else R.transpose(-1, -2)


def matrix_to_cryosparc_pose(R: Any) -> Any:
    """Rotation matrices ``(..., 3, 3)`` -> cryoSPARC ``alignments3D/pose`` vectors ``(..., 3)`` (radians)."""
    Rt = R.swapaxes(-1, -2) if isinstance(R, np.ndarray) else R.transpose(-1, -2)
    return matrix_to_axis_angle(Rt)


def random_quaternions(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` Haar-uniform unit quaternions ``(n, 4)`` ``(w, x, y, z)`` with ``w >= 0``."""
    q = rng.standard_normal((int(n), 4))
    q /= np.linalg.norm(q, axis=-1, keepdims=True)
    return np.where(q[:, :1] < 0, -q, q)


def random_rotations(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` Haar-uniform random rotation matrices ``(n, 3, 3)`` float64.

    Normalised 4D Gaussian vectors are uniform on S³, which covers SO(3)
    uniformly (twice).
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError("rng must be a numpy.random.Generator, e.g. np.random.default_rng(seed)")
    return quaternion_to_matrix(random_quaternions(n, rng))


@_numpy_io
def rotation_angle_deg(R: np.ndarray) -> np.ndarray:
    """Rotation angle of each matrix ``(..., 3, 3)`` in degrees, in [0, 180]."""
    _check_last(R, (3, 3), "R")
    q = matrix_to_quaternion(R)
    return np.rad2deg(2.0 * np.arctan2(np.linalg.norm(q[..., 1:], axis=-1), np.abs(q[..., 0])))


def geodesic_distance_deg(R1: Any, R2: Any) -> Any:
    """Angle of ``R1ᵀ R2`` in degrees (the geodesic distance on SO(3)); broadcasts ``(..., 3, 3)``."""
    R1 = np.asarray(R1, dtype=np.float64)
    R2 = np.asarray(R2, dtype=np.float64)
    return rotation_angle_deg(np.swapaxes(R1, -1, -2) @ R2)
