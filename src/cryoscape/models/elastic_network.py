"""Elastic network normal modes: the anisotropic network model (ANM) of an atomic structure.

Nodes ``r_i`` (Å; usually the C-alpha atoms) within ``cutoff_A`` of each other
are joined by identical Hookean springs (the Tirion potential in the ANM
form): ``E(x) = (γ/2) Σ_{i<j, |r⁰_ij| < cutoff} (|x_i − x_j| − |r⁰_ij|)²``.
Its Hessian at the rest structure has, for every spring, the 3 × 3 block
``−γ u uᵀ`` (``u`` the unit vector from ``i`` to ``j``) off the diagonal and
the negative sum of a node's off-diagonal blocks on its diagonal.

:func:`normal_modes` returns the lowest non-rigid eigenpairs: eigenvalues in
``γ`` units (per Å²) and modes as unit vectors over all ``3n`` coordinates
(the six zero modes of rigid motion are dropped). A mode's equilibrium
amplitude at temperature ``T`` is ``sqrt(kT / λ)``: :func:`mode_spreads`.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from cryoscape.errors import InputError

__all__ = ["anm_hessian", "anm_energy", "normal_modes", "mode_spreads", "block_twists", "DEFAULT_CUTOFF_A",
           "DEFAULT_BLOCK_RADIUS_A"]

#: Default spring cutoff (Å) for a C-alpha network (8–15 Å are the usual ANM choices; 10 Å as in HEMNMA's
#: C-alpha networks).
DEFAULT_CUTOFF_A: float = 10.0
#: Default radius (Å) of the rigid block around each node (:func:`block_twists`).
DEFAULT_BLOCK_RADIUS_A: float = 7.5


def _pairs(coords: np.ndarray, cutoff_A: float) -> np.ndarray:
    """``[m, 2]`` index pairs ``i < j`` closer than ``cutoff_A``."""
    pairs = cKDTree(coords).query_pairs(float(cutoff_A), output_type="ndarray")
    return np.asarray(pairs, dtype=np.int64).reshape(-1, 2)


def anm_hessian(coords: np.ndarray, cutoff_A: float = DEFAULT_CUTOFF_A, gamma: float = 1.0) -> np.ndarray:
    """The ANM Hessian ``[3n, 3n]`` float64 at the rest structure ``coords [n, 3]`` (Å), coordinate order
    ``(x₀, y₀, z₀, x₁, ...)``."""
    x = np.asarray(coords, dtype=np.float64)
    n = x.shape[0]
    pairs = _pairs(x, cutoff_A)
    d = x[pairs[:, 1]] - x[pairs[:, 0]]
    u = d / np.linalg.norm(d, axis=1, keepdims=True)
    blocks = -gamma * u[:, :, None] * u[:, None, :]  # [m, 3, 3]
    H = np.zeros((n, 3, n, 3))
    i, j = pairs[:, 0], pairs[:, 1]
    np.add.at(H, (i, slice(None), j, slice(None)), blocks)
    np.add.at(H, (j, slice(None), i, slice(None)), blocks)
    np.add.at(H, (i, slice(None), i, slice(None)), -blocks)
    np.add.at(H, (j, slice(None), j, slice(None)), -blocks)
    return H.reshape(3 * n, 3 * n)


def anm_energy(x: np.ndarray, rest: np.ndarray, cutoff_A: float = DEFAULT_CUTOFF_A, gamma: float = 1.0) -> float:
    """The spring energy of positions ``x [n, 3]`` for the network of ``rest [n, 3]`` (Å; in ``γ`` Å² units)."""
    rest = np.asarray(rest, dtype=np.float64)
    pairs = _pairs(rest, cutoff_A)
    r0 = np.linalg.norm(rest[pairs[:, 1]] - rest[pairs[:, 0]], axis=1)
    r = np.linalg.norm(np.asarray(x, dtype=np.float64)[pairs[:, 1]] - np.asarray(x, dtype=np.float64)[pairs[:, 0]],
                       axis=1)
    return float(0.5 * gamma * np.sum((r - r0) ** 2))


def normal_modes(coords: np.ndarray, n_modes: int, cutoff_A: float = DEFAULT_CUTOFF_A
                 ) -> tuple[np.ndarray, np.ndarray]:
    """The ``n_modes`` softest non-rigid modes: eigenvalues ``(K,)`` ascending and modes ``[K, n, 3]`` (unit norm).

    One-line :class:`InputError` when the network is not connected (more than six zero modes: raise the
    cutoff) or has too few nodes for ``n_modes``.
    """
    x = np.asarray(coords, dtype=np.float64)
    n = x.shape[0]
    if n < 3 or 3 * n - 6 < n_modes:
        raise InputError(f"{n} network nodes give {max(3 * n - 6, 0)} normal modes; {n_modes} were asked for")
    H = anm_hessian(x, cutoff_A)
    evals, evecs = np.linalg.eigh(H)
    scale = max(float(np.abs(evals).max()), 1e-12)
    n_zero = int(np.sum(evals < 1e-8 * scale))
    if n_zero > 6:
        raise InputError(f"the elastic network with a {cutoff_A:g} Å cutoff falls apart ({n_zero - 6} extra "
                         "zero modes); raise --cutoff")
    keep = slice(6, 6 + int(n_modes))
    modes = evecs[:, keep].T.reshape(-1, n, 3)
    # a sign convention, so the same structure always gives the same modes: largest coordinate positive
    flat = modes.reshape(modes.shape[0], -1)
    signs = np.sign(flat[np.arange(flat.shape[0]), np.abs(flat).argmax(axis=1)])
    return evals[keep], modes * signs[:, None, None]


def mode_spreads(eigenvalues: np.ndarray, rms_A: float) -> np.ndarray:
    """Amplitude scales ``(K,)`` (Å) ``∝ 1/sqrt(λ)``, normalised so the softest mode's RMS displacement per
    node is ``rms_A`` at unit amplitude (for ``n`` nodes, a unit mode vector times ``sqrt(n)`` has RMS 1 Å)."""
    lam = np.asarray(eigenvalues, dtype=np.float64)
    return rms_A * np.sqrt(lam[0] / lam)


def block_twists(nodes: np.ndarray, modes: np.ndarray, radius_A: float = DEFAULT_BLOCK_RADIUS_A
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Each mode as a rigid-body velocity (twist) of the block of nodes within ``radius_A`` of every node.

    For node ``i`` and mode ``k`` the least-squares rigid motion of its block,
    ``d_j ≈ v_ik + ω_ik × (x_j − x_i)``, gives the angular velocity ``ω [K, n, 3]``
    (rad per unit amplitude) and the velocity of the node itself ``v [K, n, 3]`` (Å).
    Moving each block by the exponential of its twist (a screw motion) extends a
    mode beyond small amplitudes without stretching the blocks that rotate, as
    nonlinear normal-mode methods do (see :mod:`cryoscape.models.normal_modes`).
    """
    x = np.asarray(nodes, dtype=np.float64)
    m = np.asarray(modes, dtype=np.float64)
    tree = cKDTree(x)
    K, n = m.shape[0], x.shape[0]
    omega, vel = np.zeros((K, n, 3)), np.zeros((K, n, 3))
    for i, block in enumerate(tree.query_ball_point(x, float(radius_A))):
        r = x[block] - x[i]  # [b, 3]
        A = np.zeros((3 * len(block), 6))
        A[:, :3] = np.tile(np.eye(3), (len(block), 1))
        cross = np.zeros((len(block), 3, 3))  # -[r]x, so that -[r]x w = w x r
        cross[:, 0, 1], cross[:, 0, 2] = r[:, 2], -r[:, 1]
        cross[:, 1, 0], cross[:, 1, 2] = -r[:, 2], r[:, 0]
        cross[:, 2, 0], cross[:, 2, 1] = r[:, 1], -r[:, 0]
        A[:, 3:] = cross.reshape(-1, 3)
        reg = 1e-6 * np.trace(A.T @ A) / 6
        lhs = A.T @ A + reg * np.eye(6)
        rhs = A.T @ m[:, block].reshape(K, -1).T  # [6, K]
        sol = np.linalg.solve(lhs, rhs).T  # [K, 6]
        vel[:, i], omega[:, i] = sol[:, :3], sol[:, 3:]
    return omega, vel
