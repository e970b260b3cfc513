"""Agreement between two methods' results on the same particles (survey §10).

Without a ground truth, two methods can still be compared particle by
particle: do they give each particle the same neighbours
(:func:`neighbourhood_overlap`), are their latent spaces linearly related
(:func:`canonical_correlations`), and do they generate the same volume for the
same particle (:func:`volume_agreement`)? Latents are ``(N, d)`` arrays in
particle order; both inputs must list the same particles in the same order.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from cryoscape.validate.metrics import (
    NeighbourOverlap,
    SampledFSC,
    VolumeFn,
    as_point_array,
    fsc_at_indices,
    knn_overlap,
)

__all__ = ["neighbourhood_overlap", "canonical_correlations", "volume_agreement"]


def neighbourhood_overlap(
    latents_a: Any,
    latents_b: Any,
    k: int = 10,
    n_query: int | None = None,
    seed: int = 0,
) -> NeighbourOverlap:
    """Mean fraction of shared ``k``-nearest-neighbours of each particle in two latent spaces.

    Value: mean over the queries (all particles, or ``n_query`` random ones
    drawn with ``seed``) of ``|kNN_a(i) ∩ kNN_b(i)| / k`` (Euclidean, a point
    is not its own neighbour; symmetric in ``a`` and ``b``). 1: the same
    neighbourhoods; ``result.chance = k / (N − 1)``: unrelated spaces.
    """
    return knn_overlap(latents_a, latents_b, k=k, n_query=n_query, seed=seed, tie_aware=False)


def _whitened_basis(x: np.ndarray, ridge: float) -> np.ndarray:
    """Orthogonal basis ``(N, r)`` of the centred columns of ``x``, each scaled by ``s / sqrt(s² + λ)``.

    ``s`` are the singular values of the centred block and ``λ = ridge · max(s)²``;
    directions with ``s = 0`` are dropped. For ``ridge = 0`` this is the left
    singular basis, i.e. the whitened data up to a rotation.
    """
    xc = x - x.mean(axis=0)
    u, s, _ = np.linalg.svd(xc, full_matrices=False)
    if s.size == 0 or s[0] == 0:
        raise ValueError("a latent block is constant; canonical correlations are undefined")
    keep = s > s[0] * 1e-12
    lam = ridge * s[0] ** 2
    return u[:, keep] * (s[keep] / np.sqrt(s[keep] ** 2 + lam))


def canonical_correlations(latents_a: Any, latents_b: Any, ridge: float = 1e-8) -> np.ndarray:
    """Canonical correlation coefficients of two latent blocks, sorted descending.

    ``latents_a`` ``(N, d_a)``, ``latents_b`` ``(N, d_b)`` for the same
    particles. Each block is centred and whitened (SVD, with the ridge
    ``λ = ridge · s_max²`` added to its covariance's eigenvalues ``s²``); the
    coefficients are the singular values of the cross-product of the two
    whitened blocks, clipped to [0, 1]. Returns ``min(r_a, r_b)`` values with
    ``r`` each block's numerical rank. 1: a linear map relates the blocks in
    that direction; for independent blocks the values are of order
    ``sqrt(d / N)``, so use ``N ≫ d_a + d_b``.
    """
    a, b = as_point_array(latents_a, "latents_a"), as_point_array(latents_b, "latents_b")
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"the blocks have {a.shape[0]} and {b.shape[0]} rows; they must list the same particles")
    if ridge < 0:
        raise ValueError(f"ridge must be non-negative; got {ridge}")
    wa, wb = _whitened_basis(a, ridge), _whitened_basis(b, ridge)
    rho = np.linalg.svd(wa.T @ wb, compute_uv=False)
    return np.clip(np.sort(rho)[::-1], 0.0, 1.0)


def volume_agreement(
    volume_fn_a: VolumeFn,
    volume_fn_b: VolumeFn,
    particle_indices: Sequence[int] | np.ndarray,
    mask: Any = None,
    apix: float | None = None,
) -> SampledFSC:
    """FSC between two methods' volumes generated at the same particles.

    For each index ``i``, ``volume_fn_a(i)`` and ``volume_fn_b(i)`` are each
    method's volume ``[D, D, D]`` at particle ``i``'s latent; result curves,
    AUCs (``result.mean ± result.std``) and, with ``apix`` (Å/px), 0.5-FSC
    resolutions (Å). Mask: None = soft sphere, False = none, or an array
    (see :mod:`cryoscape.validate.metrics`). Both methods' volumes must share
    box, pixel size and alignment (same reference frame).
    """
    return fsc_at_indices(volume_fn_a, volume_fn_b, particle_indices, mask=mask, apix=apix)
