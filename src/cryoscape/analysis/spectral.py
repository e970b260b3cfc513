"""Diffusion maps of per-particle coordinates and spectral volumes.

Spectral volumes (Moscovich, Halevi, Andén & Singer 2020) describe a
heterogeneous particle set by a low-dimensional embedding of its particles and
volumes that vary *linearly* in the embedding coordinates,
``V(ψ) = W_0 + Σ_j ψ_j W_j``. Here the embedding is a diffusion map
(Coifman & Lafon 2006) of any per-particle coordinates (``N x d`` latents of a
method, e.g. PPCA coordinates), and the volumes are fitted to the images by
least squares with the coordinates fixed.

Diffusion map (:func:`diffusion_map`)
-------------------------------------
1. kNN graph: each point's ``n_neighbors`` nearest neighbours (Euclidean,
   :class:`scipy.spatial.cKDTree`), made symmetric (an edge is kept if either end
   lists it).
2. Gaussian kernel ``K_ij = exp(−‖z_i − z_j‖² / ε)`` on the edges. Bandwidth rule:
   ``ε = bandwidth_scale · median_i d_i²`` where ``d_i`` is the distance from
   point ``i`` to its ``n_neighbors``-th neighbour (so a typical neighbourhood
   sits at one ``ε``), unless ``epsilon`` is given.
3. Density normalisation (Coifman–Lafon ``α``): ``K⁽ᵅ⁾_ij = K_ij / (q_i q_j)^α``
   with ``q_i = Σ_j K_ij``; ``α = 1`` removes the sampling density (Laplace–
   Beltrami), ``α = 0`` is the classical normalised graph Laplacian.
4. Markov matrix ``P = D⁻¹ K⁽ᵅ⁾`` (``D = diag(Σ_j K⁽ᵅ⁾_ij)``). Its eigenpairs come
   from the symmetric ``S = D^{-1/2} K⁽ᵅ⁾ D^{-1/2}`` by
   :func:`scipy.sparse.linalg.eigsh` in shift-invert mode about ``1 + SHIFT``
   (``S φ = λ φ``, ``ψ = D^{-1/2} φ``); the
   constant eigenvector (``λ = 1``) is dropped.
5. Diffusion coordinates ``λ_j^t ψ_j`` (``t = diffusion_time``), each ``ψ_j``
   normalised to unit mean square over the points and signed so that its
   largest-magnitude entry is positive.

Large sets (``N > max_points``): steps 1–4 run on ``max_points`` landmarks drawn
at random (seeded), and every other point gets the Nyström extension of the
landmarks' eigenvectors, ``ψ_j(x) = λ_j⁻¹ Σ_l P(x, l) ψ_j(l)``, with
``P(x, l) ∝ K(x, l) / q_l^α`` over the ``n_neighbors`` nearest landmarks of ``x``
(the same kernel and bandwidth; the row sums to 1). This is the eigen-equation
``P ψ = λ ψ`` read at a new point, so it reproduces the landmarks' own values up
to the graph's symmetrisation. It bounds the memory and time of the sparse
shift-invert solve, whose factorisation fill-in grows much faster than ``N``
(100 000 points in 4 dimensions: 18 GB and 40 min; 20 000: seconds).

Spectral volumes (:func:`spectral_volumes`)
-------------------------------------------
With the coordinates ``ψ_i`` fixed, ``W = (W_0, .., W_K)`` minimises
``Σ_i ‖y_i − A_i (W_0 + Σ_j ψ_ij W_j)‖²`` plus a ridge: this is the M-step of
probabilistic PCA (:mod:`cryoscape.inference.ppca_em`) with a unit contrast, latent
means ``ψ_i`` and zero posterior covariance, so it reuses
:class:`~cryoscape.inference.ppca_em.MStepAccumulator` (per-voxel
``(K+1) x (K+1)`` systems on the padded Fourier grid, one pass over the images).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from cryoscape.errors import InputError

__all__ = ["DiffusionMap", "diffusion_map", "SpectralVolumes", "spectral_volumes"]

#: Shift above 1 for the shift-invert eigen-solve of the symmetric Markov matrix.
SHIFT = 1e-8


@dataclass
class DiffusionMap:
    """A diffusion-map embedding.

    coordinates ``[N, K]``: ``λ_j^t ψ_j`` (float64); eigenvectors ``[N, K]``: ``ψ_j``
    (unit mean square); eigenvalues ``[K]`` of the Markov matrix (descending, the
    trivial 1 excluded); epsilon: the kernel bandwidth (latent units²);
    n_neighbors, alpha, diffusion_time: the settings used.
    """

    coordinates: np.ndarray
    eigenvectors: np.ndarray
    eigenvalues: np.ndarray
    epsilon: float
    n_neighbors: int
    alpha: float
    diffusion_time: float
    landmarks: np.ndarray | None = None


#: Default largest number of points solved directly; larger sets use landmarks (see the module docstring).
MAX_POINTS = 20_000


def _points(latents) -> np.ndarray:
    """Finite ``(N, d)`` float64 latents with ``N >= 3`` (:func:`~cryoscape.validate.metrics.as_point_array`),
    bad input as a one-line :class:`InputError`."""
    from cryoscape.validate.metrics import as_point_array

    try:
        z = as_point_array(latents, "latents")
    except ValueError as exc:
        bad = "non-finite" in str(exc)
        raise InputError("latents hold NaN or Inf; remove those particles first" if bad else str(exc)) from None
    if z.shape[0] < 3:
        raise InputError(f"latents must hold at least 3 points for a diffusion map; got {z.shape[0]}")
    return z


def _knn_kernel(z: np.ndarray, k: int, epsilon: float | None, scale: float):
    """Symmetric sparse Gaussian kernel on the kNN graph and the bandwidth used."""
    from scipy.sparse import coo_matrix, diags, identity
    from scipy.spatial import cKDTree

    n = z.shape[0]
    dist, idx = cKDTree(z).query(z, k=k + 1)  # first column: the point itself
    dist, idx = dist[:, 1:], idx[:, 1:]
    if epsilon is None:
        epsilon = scale * float(np.median(dist[:, -1] ** 2))
    if not epsilon > 0:
        raise InputError("the latents have (nearly) coincident neighbourhoods, so the kernel bandwidth is 0; "
                         "pass epsilon explicitly or remove duplicate points")
    rows = np.repeat(np.arange(n), k)
    vals = np.exp(-(dist.reshape(-1) ** 2) / epsilon)
    K = coo_matrix((vals, (rows, idx.reshape(-1))), shape=(n, n)).tocsr()
    K = K.maximum(K.T)  # an edge listed by either end
    K = K - diags(K.diagonal()) + identity(n, format="csr")  # self-loops exp(0) = 1
    return K.tocsr(), float(epsilon)


def diffusion_map(latents, n_components: int = 2, *, n_neighbors: int = 15, alpha: float = 1.0,
                  epsilon: float | None = None, bandwidth_scale: float = 1.0, diffusion_time: float = 1.0,
                  seed: int = 0, max_points: int | None = MAX_POINTS) -> DiffusionMap:
    """Diffusion-map embedding of per-particle coordinates (see the module docstring).

    Args:
        latents: ``(N,)`` or ``(N, d)`` coordinates.
        n_components: non-trivial eigenvectors to return (``< N − 1``).
        n_neighbors: graph degree (``< N``). alpha: density normalisation in ``[0, 1]``.
        epsilon: kernel bandwidth (latent units²); None uses the median rule times
            ``bandwidth_scale``. diffusion_time: ``t``. seed: starting vector of ``eigsh``
            and the landmark draw.
        max_points: above this many points, solve on this many random landmarks and
            extend to the rest (Nyström); None always solves directly.
    Returns:
        :class:`DiffusionMap` (``landmarks``: the landmark indices, or None when solved directly).
    """
    from scipy.sparse import diags
    from scipy.sparse.linalg import eigsh

    z = _points(latents)
    n = z.shape[0]
    if not 1 <= n_neighbors < n:
        raise InputError(f"n_neighbors is {n_neighbors}; it must lie in [1, {n - 1}] for {n} points")
    if not 1 <= n_components < n - 1:
        raise InputError(f"n_components is {n_components}; it must lie in [1, {n - 2}] for {n} points")
    if not 0.0 <= alpha <= 1.0:
        raise InputError(f"alpha is {alpha}; use a value in [0, 1]")
    if max_points is not None and max_points <= max(n_neighbors, n_components + 1):
        raise InputError(f"max_points is {max_points}; use more than n_neighbors ({n_neighbors}) "
                         f"and n_components + 1, or None")
    landmarks = None
    if max_points is not None and n > max_points:
        landmarks = np.sort(np.random.default_rng(seed).choice(n, max_points, replace=False))
        z_all, z = z, z[landmarks]
        n = z.shape[0]
    K, eps = _knn_kernel(z, n_neighbors, epsilon, bandwidth_scale)
    q = np.asarray(K.sum(axis=1)).reshape(-1)
    Ka = diags(q ** -alpha) @ K @ diags(q ** -alpha)
    d = np.asarray(Ka.sum(axis=1)).reshape(-1)
    S = diags(d ** -0.5) @ Ka @ diags(d ** -0.5)
    S = 0.5 * (S + S.T)
    v0 = np.random.default_rng(seed).standard_normal(n)
    # shift-invert just above the top eigenvalue 1: the slow modes cluster near 1, where plain
    # Lanczos on S converges very slowly for large graphs
    vals, vecs = eigsh(S.tocsc(), k=n_components + 1, sigma=1.0 + SHIFT, which="LM", v0=v0)
    order = np.argsort(vals)[::-1]
    vals, vecs = vals[order][1:], vecs[:, order][:, 1:]
    psi = vecs / np.sqrt(d)[:, None]
    if landmarks is not None:
        psi = _nystrom(z_all, landmarks, z, psi, vals, q ** -alpha, n_neighbors, eps)
    psi = psi / np.sqrt(np.mean(psi ** 2, axis=0))[None, :]
    sign = np.sign(psi[np.argmax(np.abs(psi), axis=0), np.arange(psi.shape[1])])
    psi = psi * np.where(sign == 0, 1.0, sign)[None, :]
    coords = psi * (np.clip(vals, 0.0, None) ** diffusion_time)[None, :]
    return DiffusionMap(coords, psi, vals, eps, int(n_neighbors), float(alpha), float(diffusion_time), landmarks)


def _nystrom(z_all: np.ndarray, landmarks: np.ndarray, z_land: np.ndarray, psi_land: np.ndarray,
             vals: np.ndarray, inv_density: np.ndarray, k: int, epsilon: float,
             chunk: int = 50_000) -> np.ndarray:
    """``[N, K]`` eigenvectors: the landmarks' own rows, the Nyström extension
    ``λ_j⁻¹ Σ_l P(x, l) ψ_j(l)`` elsewhere (``P(x, ·)`` over ``x``'s ``k`` nearest
    landmarks, weights ``exp(−d²/ε) · inv_density_l`` normalised to sum 1)."""
    from scipy.spatial import cKDTree

    out = np.empty((z_all.shape[0], psi_land.shape[1]))
    out[landmarks] = psi_land
    rest = np.setdiff1d(np.arange(z_all.shape[0]), landmarks)
    tree = cKDTree(z_land)
    lam = np.where(np.abs(vals) > 1e-12, vals, 1e-12)
    for a in range(0, rest.size, chunk):
        idx = rest[a:a + chunk]
        dist, nb = tree.query(z_all[idx], k=k)
        d2 = dist ** 2
        w = np.exp(-(d2 - d2[:, :1]) / epsilon) * inv_density[nb]  # the nearest term is exp(0): no underflow
        w /= w.sum(axis=1, keepdims=True)
        out[idx] = np.einsum("nk,nkj->nj", w, psi_land[nb]) / lam[None, :]
    return out


@dataclass
class SpectralVolumes:
    """``V(ψ) = W_0 + Σ_j ψ_j W_j``: mean ``[D, D, D]`` (``W_0``), volumes ``[K, D, D, D]``
    (``W_1 .. W_K``, float32, not orthonormalised: their scale is that of the
    coordinates), the coordinates ``[N, K]`` used, and apix (Å/px)."""

    mean: np.ndarray
    volumes: np.ndarray
    coordinates: np.ndarray
    apix: float

    def volume(self, psi) -> np.ndarray:
        """``W_0 + Σ_j ψ_j W_j`` for coordinates ``ψ [..., K]`` -> ``[..., D, D, D]``."""
        p = np.asarray(psi, dtype=np.float64)
        if p.shape[-1] != self.volumes.shape[0]:
            raise InputError(f"the point has {p.shape[-1]} coordinates but there are "
                             f"{self.volumes.shape[0]} spectral volumes; give one per volume")
        return (self.mean + np.tensordot(p, self.volumes, axes=([-1], [0]))).astype(np.float32)


def spectral_volumes(particles, coordinates, *, ridge: float = 1e-2, resolution_limit_A: float | None = None,
                     mask=None, use_ctf: bool = True, oversampling: int = 2, batch_size: int = 256,
                     device="cpu", dtype: torch.dtype = torch.float32) -> SpectralVolumes:
    """Least-squares volumes linear in fixed per-particle ``coordinates`` (see the module docstring).

    Args:
        particles: posed :class:`~cryoscape.particles.ParticleSet` (CTF used when present).
        coordinates: ``[N, K]`` per-particle coordinates in particle order (e.g.
            :attr:`DiffusionMap.coordinates`).
        ridge: the per-voxel ridge relative to the shell-mean weight of ``W_0``
            (as in :func:`~cryoscape.inference.ppca_em.fit_ppca`).
        resolution_limit_A: zero frequencies finer than this (Å); None keeps all.
        mask: optional real-space mask ``[D, D, D]`` (array or MRC path) applied to ``W_1..K``.
        use_ctf, oversampling, batch_size, device, dtype: as in PPCA.
    Returns:
        :class:`SpectralVolumes`.
    """
    from cryoscape.inference.ppca_em import MStepAccumulator, Posterior, batch_inputs

    particles.require_poses("spectral volumes")
    n = len(particles)
    psi = np.asarray(coordinates, dtype=np.float64)
    if psi.ndim == 1:
        psi = psi[:, None]
    if psi.ndim != 2 or psi.shape[0] != n:
        raise InputError(f"coordinates have shape {psi.shape}; give one row per particle ({n})")
    if not np.all(np.isfinite(psi)):
        raise InputError("coordinates hold NaN or Inf; give finite values for every particle")
    D, apix, K = int(particles.box), float(particles.apix), psi.shape[1]
    use_ctf = use_ctf and bool(particles.has_ctf)
    acc = MStepAccumulator(D, K, oversampling, device, dtype)
    for idx, images in particles.iter_batches(batch_size):
        idx = np.asarray(idx)
        R, sh, ctf = batch_inputs(particles, idx, use_ctf, device, dtype)
        mean = torch.as_tensor(psi[idx], dtype=dtype, device=device)
        zeros = torch.zeros(len(idx), K, K, dtype=dtype, device=device)
        post = Posterior(mean, zeros, zeros, mean, torch.zeros(len(idx), dtype=dtype, device=device))
        acc.insert(torch.as_tensor(np.asarray(images)), R, sh, ctf, apix,
                   torch.ones(len(idx), dtype=dtype, device=device), post)
    w0, ws = acc.solve(ridge, apix, resolution_limit_A)
    if mask is not None:
        from cryoscape.reconstruct.backprojection import load_mask

        ws = ws * torch.as_tensor(load_mask(mask, D, apix), dtype=ws.dtype, device=ws.device)
    return SpectralVolumes(w0.cpu().numpy().astype(np.float32), ws.cpu().numpy().astype(np.float32),
                           psi, apix)
