"""Local reconstructions near a latent point pick the right particles and the right volume."""

from __future__ import annotations

import numpy as np
import pytest

from cryoscape.analysis.local_reconstruction import (
    latent_distances,
    neighbourhood,
    reconstruct_near,
    reconstruct_near_particle,
)
from cryoscape.errors import InputError
from cryoscape.simulate import ground_truth_volume, simulate_dataset
from cryoscape.validate.fsc import fsc


def test_neighbourhood_weights_nearest_first():
    lat = np.array([[0.0], [1.0], [2.0], [3.0], [10.0]])
    flat = neighbourhood(lat, [0.4], n_neighbours=3, kernel="flat")
    assert flat.weights.tolist() == [1, 1, 1, 0, 0]
    gauss = neighbourhood(lat, [0.0], n_neighbours=3, kernel="gaussian")
    assert gauss.weights[0] > gauss.weights[1] > gauss.weights[2] > 0 and gauss.weights[3:].sum() == 0
    assert 1.0 < gauss.n_effective < 3.0


def test_scaled_distance_and_bad_input():
    lat = np.array([[0.0, 0.0], [2.0, 0.0]])
    assert np.allclose(latent_distances(lat, [0, 0], scale=np.array([1.0, 2.0])), [0.0, 1.0])
    with pytest.raises(InputError, match="coordinates"):
        latent_distances(lat, [0.0, 0.0, 0.0])
    with pytest.raises(InputError, match="kernel"):
        neighbourhood(lat, [0, 0], 1, kernel="box")


def test_local_map_matches_its_own_conformation(tmp_path):
    sim = simulate_dataset("adk", n_particles=1200, box=32, apix=3.0, snr=float("inf"), conformations="0,97",
                           out_dir=tmp_path / "sim", progress=False, seed=3)
    particles = sim.particles()
    conf = sim.truth["conformation"]
    latents = (conf == 97).astype(float)[:, None] + 0.01 * np.random.default_rng(0).standard_normal((len(conf), 1))
    closed, _ = ground_truth_volume(sim.truth, 0)
    opened, _ = ground_truth_volume(sim.truth, 97)
    i_open = int(np.flatnonzero(conf == 97)[0])
    rec = reconstruct_near_particle(particles, latents, i_open, n_neighbours=500, kernel="flat", progress=False)
    auc_open, auc_closed = fsc(rec.volume, opened)[1:].mean(), fsc(rec.volume, closed)[1:].mean()
    assert auc_open > auc_closed + 0.05
    assert rec.n_particles == 500
    with pytest.raises(InputError, match="same order"):
        reconstruct_near(particles, latents[:10], [1.0], progress=False)
