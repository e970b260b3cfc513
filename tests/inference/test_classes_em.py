"""3D classification by EM: the likelihood against a direct sum, and three AdK states separated."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cryoscape.inference.classes_em import class_log_likelihoods, fit_classes, shell_index
from cryoscape.models.discrete import DiscreteVolumes
from cryoscape.particles import ParticleSet
from cryoscape.validate.clustering import adjusted_rand_index


def test_log_likelihood_is_the_weighted_residual_sum() -> None:
    g = torch.Generator().manual_seed(0)
    y = torch.randn(2, 5, dtype=torch.complex128, generator=g)
    F = torch.randn(2, 3, 5, dtype=torch.complex128, generator=g)
    inv = torch.rand(5, dtype=torch.float64, generator=g) + 0.5
    h = torch.tensor([1.0, 2.0, 2.0, 2.0, 2.0], dtype=torch.float64)
    ll, power = class_log_likelihoods(y, F, inv, h)
    for b in range(2):
        for k in range(3):
            direct = -0.5 * sum(float(h[p] * inv[p] * abs(y[b, p] - F[b, k, p]) ** 2) for p in range(5))
            assert ll[b, k].item() == pytest.approx(direct, rel=1e-12)
    assert power.shape == (2, 3, 5)
    shells = shell_index(16)
    assert int(shells[0]) == 0 and int(shells.max()) == 7


def test_three_states_are_separated(tmp_path) -> None:
    """Closed, half-way and open AdK at known poses: the classes recover the states."""
    from cryoscape.simulate import simulate_dataset

    sim = tmp_path / "sim"
    simulate_dataset("adk", n_particles=450, box=32, apix=3.0, snr=0.5, conformations="0,48,97",
                     out_dir=sim, progress=False, seed=4)
    ps = ParticleSet.from_file(sim / "particles.star")
    truth = np.load(sim / "truth.npz")["conformation"]
    model = DiscreteVolumes(torch.zeros(3, 32, 32, 32), ps.apix)
    result = fit_classes(model, ps, iterations=12, batch_size=128, seed=1)
    assert adjusted_rand_index(result.labels, truth) >= 0.9
    assert np.allclose(result.posteriors.sum(1), 1.0, atol=1e-5)
    assert result.volumes.shape == (3, 32, 32, 32) and result.half_maps.shape == (3, 2, 32, 32, 32)
    assert result.fsc.shape == (3, 17) and np.all(result.fsc[:, 1] > 0.9)
    assert torch.allclose(model.class_volumes, torch.as_tensor(result.volumes))
