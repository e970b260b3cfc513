"""Latent-space basics: PCA, k-means, k-NN density, UMAP (survey §9.3–9.4).

Every function takes the latents ``Z`` of one run as an ``N×d`` array, one row
per particle in particle order (a 1-D array is read as ``N×1``). Nothing here
depends on how the latents were obtained.

Conventions
-----------
- PCA centres the latents on their mean ``Z.mean(axis=0)``; components are
  unit rows, ordered by decreasing variance, each signed so that its largest
  absolute loading is positive (so a run gives the same axes every time).
- k-means labels are ``0..k-1``; their order is arbitrary but fixed for a
  given ``seed``.
- k-NN densities are returned as natural logarithms, in particles per unit
  latent volume, so they stay finite in many dimensions.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
from scipy.spatial import cKDTree
from scipy.special import gammaln

from cryoscape.errors import InputError


class PCAEmbedding(NamedTuple):
    """Result of :func:`pca_embedding` (unpacks as a 3-tuple)."""

    embedding: np.ndarray  # N×k coordinates of the centred latents on the components
    components: np.ndarray  # k×d unit rows
    explained_variance_ratio: np.ndarray  # (k,) fraction of the total variance


def as_latents(Z: Any, name: str = "latents") -> np.ndarray:
    """``Z`` as a finite float64 ``N×d`` array (1-D input becomes ``N×1``)."""
    arr = np.asarray(Z, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InputError(f"{name} must be an N×d array with N, d ≥ 1 (got shape {arr.shape})")
    if not np.all(np.isfinite(arr)):
        raise InputError(f"{name} contain NaN or infinite values; remove or fix those particles first")
    return arr


def pca_embedding(Z: Any, n_components: int = 2) -> PCAEmbedding:
    """Principal components of the latents by SVD of the centred ``N×d`` matrix.

    Returns ``(embedding N×k, components k×d, explained_variance_ratio k)``
    with ``k = min(n_components, d)``. The embedding is
    ``(Z − Z.mean(0)) @ components.T``; the ratio divides each component's
    variance by the total variance (1 for data on a line).
    """
    X = as_latents(Z)
    if n_components < 1:
        raise InputError(f"n_components must be at least 1 (got {n_components})")
    k = min(int(n_components), X.shape[1])
    centred = X - X.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    components = _fix_signs(vt[:k])
    var = s**2
    total = var.sum()
    ratio = var[:k] / total if total > 0 else np.zeros(k)
    return PCAEmbedding(centred @ components.T, components, ratio)


def _fix_signs(components: np.ndarray) -> np.ndarray:
    """Flip each row so its largest absolute entry is positive."""
    pivots = components[np.arange(components.shape[0]), np.argmax(np.abs(components), axis=1)]
    return components * np.where(pivots < 0, -1.0, 1.0)[:, None]


def _squared_distances(X: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances N×k between rows of ``X`` and ``centres``."""
    d2 = np.einsum("nd,nd->n", X, X)[:, None] - 2.0 * X @ centres.T + np.einsum("kd,kd->k", centres, centres)[None, :]
    return np.maximum(d2, 0.0)


def _kmeans_pp_init(X: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding (Arthur & Vassilvitskii 2007): next centre ∝ D(x)²."""
    centres = np.empty((k, X.shape[1]))
    centres[0] = X[rng.integers(X.shape[0])]
    closest = _squared_distances(X, centres[:1])[:, 0]
    for j in range(1, k):
        total = closest.sum()
        idx = rng.choice(X.shape[0], p=closest / total) if total > 0 else rng.integers(X.shape[0])
        centres[j] = X[idx]
        closest = np.minimum(closest, _squared_distances(X, centres[j : j + 1])[:, 0])
    return centres


def _lloyd(X: np.ndarray, centres: np.ndarray, max_iter: int, tol: float) -> tuple[np.ndarray, np.ndarray, float]:
    """Lloyd iterations from ``centres``; returns labels, centres and inertia."""
    for _ in range(max_iter):
        d2 = _squared_distances(X, centres)
        labels = np.argmin(d2, axis=1)
        new = _update_centres(X, labels, centres, d2)
        shift = float(np.square(new - centres).sum())
        centres = new
        if shift <= tol:
            break
    d2 = _squared_distances(X, centres)
    labels = np.argmin(d2, axis=1)
    return labels, centres, float(d2[np.arange(X.shape[0]), labels].sum())


def _update_centres(X: np.ndarray, labels: np.ndarray, old: np.ndarray, d2: np.ndarray) -> np.ndarray:
    """Cluster means; an empty cluster takes the point farthest from its centre."""
    k = old.shape[0]
    counts = np.bincount(labels, minlength=k).astype(np.float64)
    sums = np.zeros_like(old)
    np.add.at(sums, labels, X)
    new = sums / np.maximum(counts, 1.0)[:, None]
    own = d2[np.arange(X.shape[0]), labels].copy()
    for j in np.flatnonzero(counts == 0):
        far = int(np.argmax(own))
        new[j] = X[far]
        own[far] = -1.0
    return new


def kmeans(
    Z: Any, k: int, seed: int = 0, n_init: int = 4, max_iter: int = 100, tol: float = 1e-8
) -> tuple[np.ndarray, np.ndarray]:
    """k-means clustering (Lloyd's algorithm with k-means++ seeding).

    Runs ``n_init`` seedings drawn from ``numpy.random.default_rng(seed)`` and
    keeps the one with the lowest within-cluster sum of squares, so the result
    is the same for the same ``seed``. ``tol`` bounds the total squared centre
    movement at convergence (relative to the latents' total variance).
    Returns ``(labels (N,) int, centres k×d)``.
    """
    X = as_latents(Z)
    if not 1 <= k <= X.shape[0]:
        raise InputError(f"k must be between 1 and the number of particles ({X.shape[0]}); got {k}")
    if n_init < 1 or max_iter < 1:
        raise InputError(f"n_init and max_iter must be at least 1 (got {n_init}, {max_iter})")
    rng = np.random.default_rng(seed)
    scaled_tol = tol * max(float(np.square(X - X.mean(axis=0)).sum()), np.finfo(float).tiny)
    best: tuple[np.ndarray, np.ndarray, float] | None = None
    for _ in range(int(n_init)):
        run = _lloyd(X, _kmeans_pp_init(X, int(k), rng), int(max_iter), scaled_tol)
        if best is None or run[2] < best[2]:
            best = run
    assert best is not None
    return best[0].astype(np.int64), best[1]


def nearest_particle_to_centres(Z: Any, centres: Any) -> np.ndarray:
    """Index of the particle whose latent is closest (Euclidean) to each centre.

    ``centres`` is ``k×d`` (or ``d`` for one point); returns ``(k,)`` int
    indices into ``Z``, e.g. to generate the volume "at" each cluster centre
    from a real particle's latent.
    """
    X = as_latents(Z)
    C = np.asarray(centres, dtype=np.float64)
    C = C[None, :] if C.ndim == 1 else C
    if C.ndim != 2 or C.shape[1] != X.shape[1]:
        raise InputError(f"centres must be k×{X.shape[1]} to match the latents (got shape {C.shape})")
    _, idx = cKDTree(X).query(C, k=1, workers=-1)
    return np.asarray(idx, dtype=np.int64).reshape(-1)


def knn_neighbours(Z: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Distances and indices ``N×k`` of each particle's ``k`` nearest *other* particles.

    Rows are sorted by distance; the query runs on all CPU cores.
    """
    X = as_latents(Z)
    if not 1 <= k < X.shape[0]:
        raise InputError(f"k must be between 1 and N−1 = {X.shape[0] - 1} for k nearest neighbours (got {k})")
    dist, idx = cKDTree(X).query(X, k=int(k) + 1, workers=-1)
    return dist[:, 1:], idx[:, 1:]


def log_density_from_radii(radii: np.ndarray, n: int, d: int, k: int) -> np.ndarray:
    """``ln ρ = ln k − ln N − ln V_d − d ln r`` for k-th-neighbour radii ``r`` (see :func:`knn_log_density`)."""
    r = np.asarray(radii, dtype=np.float64)
    r = np.maximum(r, 1e-12 * max(float(np.median(r)), np.finfo(float).tiny))
    log_vd = 0.5 * d * np.log(np.pi) - gammaln(0.5 * d + 1.0)
    return np.log(k) - np.log(n) - log_vd - d * np.log(r)


def knn_log_density(Z: Any, k: int = 10) -> np.ndarray:
    """Natural log of the k-nearest-neighbour density at each particle.

    ``ρ_i = k / (N · V_d · r_k(i)^d)`` (Loftsgaarden & Quesenberry 1965), with
    ``r_k(i)`` the distance to the ``k``-th nearest *other* particle and
    ``V_d = π^{d/2} / Γ(d/2 + 1)`` the unit-ball volume. Radii are floored at
    ``1e-12`` × their median (duplicates would give an infinite density).
    """
    X = as_latents(Z)
    dist, _ = knn_neighbours(X, k)
    return log_density_from_radii(dist[:, -1], X.shape[0], X.shape[1], int(k))


def require_umap() -> Any:
    """The ``umap`` module; a one-line InputError naming the package when it is not installed."""
    try:
        import umap  # type: ignore[import-not-found]
    except ImportError:
        raise InputError("UMAP needs the optional package umap-learn: pip install umap-learn") from None
    return umap


def umap_embedding(
    Z: Any, n_components: int = 2, n_neighbors: int = 15, min_dist: float = 0.1, seed: int | None = 0
) -> np.ndarray:
    """UMAP embedding ``N×n_components`` (McInnes et al. 2018), if ``umap-learn`` is installed.

    A fixed ``seed`` makes the embedding reproducible (and single-threaded);
    ``seed=None`` lets UMAP run in parallel with a random state.
    """
    X = as_latents(Z)
    umap = require_umap()
    reducer = umap.UMAP(n_components=n_components, n_neighbors=n_neighbors, min_dist=min_dist, random_state=seed)
    return np.asarray(reducer.fit_transform(X), dtype=np.float64)
