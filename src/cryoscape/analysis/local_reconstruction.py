"""Volumes reconstructed from the particles near a point of a latent space (survey §9.1).

Any method that gives each particle a latent coordinate (N×d) can produce a
volume at a latent point ``z`` without an explicit model: weight every
particle by a kernel of its distance to ``z`` and backproject with the known
poses and CTF. Half maps come from the particles' half sets, so each local
map has its own gold-standard FSC. The same tool gives the true-label
"oracle" of the benchmarks: the particles whose *true* conformation is close.

Distances are Euclidean in the latent space, optionally scaled per particle
(``scale``: e.g. the posterior standard deviation, so the neighbourhood is
chosen by the posterior distance rather than the raw one).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cryoscape.errors import InputError


@dataclass
class Neighbourhood:
    """Particle weights (N,) for one latent point, and how they were chosen."""

    weights: np.ndarray
    indices: np.ndarray
    bandwidth: float

    @property
    def n_effective(self) -> float:
        """Kish effective number of particles, (Σw)²/Σw²."""
        w = self.weights[self.weights > 0]
        return float(w.sum() ** 2 / np.square(w).sum()) if w.size else 0.0


def latent_distances(latents: np.ndarray, z: np.ndarray, scale: np.ndarray | None = None) -> np.ndarray:
    """Distances (N,) from each row of ``latents`` (N×d) to the point ``z`` (d,).

    ``scale`` (N×d or N) divides the coordinate differences per particle, e.g.
    by the posterior standard deviation.
    """
    lat = np.asarray(latents, dtype=np.float64)
    if lat.ndim == 1:
        lat = lat[:, None]
    point = np.asarray(z, dtype=np.float64).reshape(-1)
    if point.size != lat.shape[1]:
        raise InputError(f"the latent point has {point.size} coordinates but the latents have {lat.shape[1]}; give one per dimension")
    diff = lat - point
    if scale is not None:
        s = np.asarray(scale, dtype=np.float64)
        diff = diff / (s if s.ndim == 2 else s[:, None])
    return np.sqrt(np.einsum("nd,nd->n", diff, diff))


def neighbourhood(
    latents: np.ndarray,
    z: np.ndarray,
    n_neighbours: int = 1000,
    kernel: str = "gaussian",
    scale: np.ndarray | None = None,
) -> Neighbourhood:
    """Weights for the ``n_neighbours`` particles nearest ``z``.

    ``kernel="flat"`` gives each of them weight 1; ``"gaussian"`` weights them
    by ``exp(−d²/2h²)`` with the bandwidth ``h`` set to the median distance of
    the selected particles (so the nearest count most, and the set is never
    empty). Particles outside the ``n_neighbours`` nearest get weight 0.
    """
    d = latent_distances(latents, z, scale)
    n = d.size
    if not 1 <= n_neighbours:
        raise InputError(f"n_neighbours must be at least 1 (got {n_neighbours})")
    k = min(int(n_neighbours), n)
    idx = np.argpartition(d, k - 1)[:k]
    weights = np.zeros(n, dtype=np.float64)
    if kernel == "flat":
        h = float(d[idx].max())
        weights[idx] = 1.0
    elif kernel == "gaussian":
        h = float(np.median(d[idx]))
        h = h if h > 0 else 1.0
        weights[idx] = np.exp(-0.5 * np.square(d[idx] / h))
    else:
        raise InputError(f"unknown kernel {kernel!r}; use 'gaussian' or 'flat'")
    return Neighbourhood(weights=weights, indices=np.sort(idx), bandwidth=h)


def reconstruct_near(
    particles: Any,
    latents: np.ndarray,
    z: np.ndarray,
    n_neighbours: int = 1000,
    kernel: str = "gaussian",
    scale: np.ndarray | None = None,
    **reconstruct_kwargs: Any,
):
    """Kernel-weighted reconstruction (with half maps and FSC) near the latent point ``z``.

    ``particles`` is a :class:`cryoscape.particles.ParticleSet` with poses
    (and CTF) in the same order as ``latents``. Extra keyword arguments go to
    :func:`cryoscape.reconstruct.reconstruct`. Returns its ``Reconstruction``.
    """
    from cryoscape.reconstruct import reconstruct

    if len(particles) != len(latents):
        raise InputError(f"{len(latents)} latent rows for {len(particles)} particles; they must be in the same order and number")
    hood = neighbourhood(latents, z, n_neighbours, kernel, scale)
    return reconstruct(particles, particle_weights=hood.weights, **reconstruct_kwargs)


def reconstruct_near_particle(particles: Any, latents: np.ndarray, index: int, **kwargs: Any):
    """:func:`reconstruct_near` at the latent coordinate of particle ``index``."""
    lat = np.asarray(latents)
    if not 0 <= index < len(lat):
        raise InputError(f"particle {index} does not exist; give an index from 0 to {len(lat) - 1}")
    return reconstruct_near(particles, lat, lat[index], **kwargs)
