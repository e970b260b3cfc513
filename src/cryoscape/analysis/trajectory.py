"""Trajectories through a latent space (survey §9.4).

Two kinds of path, both returned as points in the original ``d``-dimensional
latent space so a decoder (or a local reconstruction) can turn each point
into a volume:

- **Principal-component traversal**: points along one principal axis at
  percentiles of the particles' coordinates on it; the other coordinates sit
  at the latent mean.
- **Density-weighted graph geodesic**: the shortest path between two
  particles on the symmetrised k-nearest-neighbour graph, with edge weights

      w_ij = d_ij / (ρ_i ρ_j)^{α/2}

  where ``d_ij`` is the Euclidean latent distance, ``ρ`` the k-NN density of
  :func:`cryoscape.analysis.latent.knn_log_density` (divided by its maximum,
  which rescales all weights alike and leaves the path unchanged) and ``α``
  the ``density_power`` (1 gives ``d_ij / sqrt(ρ_i ρ_j)``; 0 the plain
  Euclidean graph geodesic). Dense regions are cheap to cross, so the path
  follows populated conformations instead of cutting across empty space.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple, Sequence

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import dijkstra

from cryoscape.analysis.latent import as_latents, knn_neighbours, log_density_from_radii, pca_embedding
from cryoscape.errors import InputError


class PCTrajectory(NamedTuple):
    """Points along one principal component (see :func:`pc_trajectory`)."""

    points: np.ndarray  # n×d latent points
    pc_values: np.ndarray  # (n,) coordinate of each point on the component
    percentiles: np.ndarray  # (n,) percentile of the particles' PC coordinates


@dataclass
class GraphPath:
    """A particle-to-particle path on the k-NN graph (see :func:`graph_path`)."""

    indices: np.ndarray  # (m,) particle indices along the path, start to end
    points: np.ndarray  # m×d latents of those particles
    resampled: np.ndarray  # n×d points equally spaced in arc length along the path
    cost: float  # total density-weighted edge weight of the path
    length: float  # Euclidean arc length of the path in latent units


def pc_trajectory(
    Z: Any, component: int = 0, percentiles: Sequence[float] | None = None, n_points: int = 10
) -> PCTrajectory:
    """Latent points along principal component ``component`` (0-based).

    Point ``j`` is ``mean + s_j · v`` with ``v`` the unit component (signed as in
    :func:`~cryoscape.analysis.latent.pca_embedding`) and ``s_j`` the
    ``percentiles[j]``-th percentile of the particles' coordinates on it
    (default: ``n_points`` percentiles evenly spaced from 5 to 95).
    """
    X = as_latents(Z)
    if not 0 <= component < X.shape[1]:
        raise InputError(f"component must be between 0 and {X.shape[1] - 1} for {X.shape[1]}-D latents (got {component})")
    pct = np.linspace(5.0, 95.0, int(n_points)) if percentiles is None else np.asarray(percentiles, dtype=np.float64)
    if pct.size == 0 or np.any((pct < 0) | (pct > 100)):
        raise InputError("percentiles must be a non-empty list of values between 0 and 100")
    emb, comps, _ = pca_embedding(X, n_components=component + 1)
    values = np.percentile(emb[:, component], pct)
    return PCTrajectory(X.mean(axis=0) + values[:, None] * comps[component][None, :], values, pct)


def knn_graph(Z: Any, k: int = 10, density_power: float = 1.0) -> Any:
    """Symmetric sparse k-NN graph (CSR, N×N) with density-weighted edges ``w_ij``.

    An edge joins ``i`` and ``j`` when either is among the other's ``k``
    nearest neighbours; weights follow the formula in the module docstring.
    """
    X = as_latents(Z)
    n = X.shape[0]
    dist, nbr = knn_neighbours(X, k)
    rows = np.repeat(np.arange(n), k)
    cols, d = nbr.ravel(), dist.ravel()
    log_rho = log_density_from_radii(dist[:, -1], n, X.shape[1], int(k))
    log_rho = log_rho - log_rho.max()
    w = d * np.exp(-0.5 * float(density_power) * (log_rho[rows] + log_rho[cols]))
    w = np.maximum(w, np.finfo(float).tiny)  # a zero weight would read as "no edge"
    graph = coo_matrix((w, (rows, cols)), shape=(n, n)).tocsr()
    return graph.maximum(graph.T)


def graph_path(
    Z: Any, start: int, end: int, k: int = 10, density_power: float = 1.0, n_points: int = 20
) -> GraphPath:
    """Density-weighted shortest path from particle ``start`` to particle ``end``.

    Dijkstra on :func:`knn_graph`; the visited particles' latents are then
    resampled to ``n_points`` points equally spaced in Euclidean arc length.
    Raises :class:`InputError` when the two particles lie in different
    components of the graph.
    """
    X = as_latents(Z)
    n = X.shape[0]
    for name, i in (("start", start), ("end", end)):
        if not 0 <= i < n:
            raise InputError(f"{name} must be a particle index between 0 and {n - 1} (got {i})")
    graph = knn_graph(X, k, density_power)
    cost, pred = dijkstra(graph, directed=False, indices=int(start), return_predecessors=True)
    if not np.isfinite(cost[end]):
        raise InputError(f"particles {start} and {end} are not connected in the {k}-nearest-neighbour graph; use a larger k")
    idx = _walk_back(pred, int(start), int(end))
    pts = X[idx]
    return GraphPath(idx, pts, resample_polyline(pts, n_points), float(cost[end]), _arc_length(pts)[-1])


def _walk_back(predecessors: np.ndarray, start: int, end: int) -> np.ndarray:
    """Node indices from ``start`` to ``end`` following Dijkstra predecessors."""
    path = [end]
    while path[-1] != start:
        path.append(int(predecessors[path[-1]]))
    return np.asarray(path[::-1], dtype=np.int64)


def _arc_length(points: np.ndarray) -> np.ndarray:
    """Cumulative Euclidean length (m,) along a polyline m×d, starting at 0."""
    steps = np.linalg.norm(np.diff(points, axis=0), axis=1)
    return np.concatenate([[0.0], np.cumsum(steps)])


def resample_polyline(points: Any, n_points: int) -> np.ndarray:
    """``n_points`` points equally spaced in arc length along a polyline (m×d).

    The first and last points are kept; a single-point (or zero-length)
    polyline is repeated.
    """
    P = as_latents(points, "path points")
    if n_points < 2:
        raise InputError(f"n_points must be at least 2 (got {n_points})")
    s = _arc_length(P)
    if s[-1] == 0:
        return np.repeat(P[:1], n_points, axis=0)
    target = np.linspace(0.0, s[-1], int(n_points))
    return np.stack([np.interp(target, s, P[:, j]) for j in range(P.shape[1])], axis=1)
