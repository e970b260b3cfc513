"""The canonical frame of a linear representation fitted by gradient: same volumes at every latent,
orthonormal components ordered by latent variance, latents centred."""

from __future__ import annotations

import numpy as np
import torch

from cryoscape.methods.drgn_model import canonical_latents
from cryoscape.models.linear import LinearHyperMolecule


def test_canonical_frame_keeps_every_volume_and_orders_the_components() -> None:
    D, d, N = 8, 3, 50
    gen = torch.Generator().manual_seed(0)
    rep = LinearHyperMolecule(torch.randn(D, D, D, generator=gen, dtype=torch.float64),
                              torch.randn(d, D, D, D, generator=gen, dtype=torch.float64) * torch.tensor(
                                  [0.2, 3.0, 1.0], dtype=torch.float64)[:, None, None, None], trainable=True)
    rng = np.random.default_rng(1)
    z = rng.normal(size=(N, d)) + np.array([0.5, -1.0, 2.0])
    var = rng.uniform(0.01, 0.1, size=(N, d))
    before = rep.volumes(torch.as_tensor(z)).numpy()
    z2, var2, evals = canonical_latents(rep, z, var)
    after = rep.volumes(torch.as_tensor(z2, dtype=torch.float64)).numpy()
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-5 * np.abs(before).max())
    W = rep.components.detach().reshape(d, -1).numpy()
    np.testing.assert_allclose(W @ W.T, np.eye(d), atol=1e-10)
    assert np.all(np.diff(evals) <= 0) and np.all(evals > 0)
    np.testing.assert_allclose(z2.mean(0), 0, atol=1e-5)
    second = (z2.astype(np.float64).T @ z2) / N + np.diag(var2.mean(0))
    np.testing.assert_allclose(np.diag(second), evals, rtol=1e-3)  # latent variance along each component
    assert var2.shape == (N, d) and np.all(var2 > 0)
    assert rep.components.requires_grad  # still a trainable representation


def test_other_representations_pass_through() -> None:
    z, var = np.zeros((4, 2), np.float32), np.ones((4, 2), np.float32)
    out = canonical_latents(object(), z, var)
    assert out[0] is z and out[1] is var and out[2] is None
