"""What the benchmark reads from a dataset's truth: the sampled particles, half sets by conformation, true volumes.

* :func:`sample_particles` — the :data:`N_SAMPLES` evenly spaced true
  particles (junk left out) at which the per-image FSC is measured; peer runs
  use the same indices as their volume hints.
* :func:`_particles` — the particle set with half sets alternating within each
  true conformation, so every window of the oracle has both halves.
* :func:`_true_volume_fn` — ``conformation -> true volume``, each computed once.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np

__all__ = ["N_SAMPLES", "sample_particles"]

N_SAMPLES = 100
"""Particles sampled for the per-image FSC."""


def _particles(dataset: Any) -> Any:
    """The dataset's particle set with half sets alternating within each true conformation."""
    from cryoscape.particles import ParticleSet

    ps = ParticleSet.from_file(dataset.star_path)
    ps.half_set = _alternating_halves(np.asarray(dataset.truth["conformation"]))
    return ps


def _alternating_halves(conformation: np.ndarray) -> np.ndarray:
    """``(N,)`` int8 half-set labels 0, 1, 0, ... in particle order within each conformation."""
    halves = np.zeros(conformation.size, dtype=np.int8)
    for c in np.unique(conformation):
        idx = np.flatnonzero(conformation == c)
        halves[idx] = np.arange(idx.size) % 2
    return halves


def sample_particles(truth: Mapping[str, np.ndarray], n_samples: int = N_SAMPLES) -> np.ndarray:
    """Indices of ``n_samples`` evenly spaced true particles (junk, with conformation −1, left out)."""
    from cryoscape.validate.metrics import evenly_spaced_indices

    real = np.flatnonzero(np.asarray(truth["conformation"]) >= 0)
    return real[evenly_spaced_indices(real.size, n_samples)]


def _true_volume_fn(dataset: Any) -> Callable[[int], np.ndarray]:
    """``conformation -> true volume`` on the dataset's grid, each computed once."""
    cache: dict[int, np.ndarray] = {}

    def get(c: int) -> np.ndarray:
        if c not in cache:
            cache[c] = dataset.true_volume(int(c))[0]
        return cache[c]

    return get
