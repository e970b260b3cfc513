"""The amortised objective against closed forms: the Gaussian KL term, and the expected reconstruction
error of a representation linear in its latent, ``E_q ½‖y − A z‖²_w = ½‖y − A μ‖²_w + ½ Σ_j σ_j² ‖A e_j‖²_w``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from _particle_data import two_state_adk
from cryoscape.inference.batches import ParticleBatches, fit_points
from cryoscape.inference.latent_model import LatentModel, batch_loss, kl_divergence

DRAWS = 600


def test_kl_matches_torch_distributions_and_a_monte_carlo_estimate() -> None:
    gen = torch.Generator().manual_seed(0)
    mu = torch.randn(5, 3, generator=gen, dtype=torch.float64)
    logvar = torch.randn(5, 3, generator=gen, dtype=torch.float64)
    q = torch.distributions.Normal(mu, torch.exp(0.5 * logvar))
    p = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    torch.testing.assert_close(kl_divergence(mu, logvar), torch.distributions.kl_divergence(q, p).sum(-1))
    z = q.sample((200_000,))
    mc = (q.log_prob(z) - p.log_prob(z)).sum(-1)
    se = mc.std(0) / np.sqrt(mc.shape[0])
    assert torch.all((mc.mean(0) - kl_divergence(mu, logvar)).abs() < 4 * se)
    assert torch.all(kl_divergence(torch.zeros(2, 4), torch.zeros(2, 4)) == 0)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return two_state_adk(tmp_path_factory.mktemp("elbo_tiny") / "sim", 16, seed=3)


def _linear_model(star: Path, latent_dim: int = 2):
    from cryoscape.models.encoder import MLPEncoder
    from cryoscape.models.linear import LinearHyperMolecule
    from cryoscape.particles import ParticleSet

    ps = ParticleSet.from_file(star)
    box = int(ps.box)
    gen = torch.Generator().manual_seed(1)
    rep = LinearHyperMolecule(torch.randn(box, box, box, generator=gen),
                              torch.randn(latent_dim, box, box, box, generator=gen), apix=8.0)
    data = ParticleBatches(ps, fit_points(box, 0.8, 0.5), 1000.0, True, False, False, "cpu")
    torch.manual_seed(2)
    encoder = MLPEncoder(int(data.enc_idx.numel()), latent_dim, 16, 2)
    with torch.no_grad():  # a clearly non-zero posterior spread
        for prm in encoder.parameters():
            prm.mul_(3.0)
    return LatentModel(rep, encoder, len(ps)), data, data.batch(np.arange(len(ps)))


def _weighted_sq(model, data, batch, z, y) -> torch.Tensor:
    """``½ Σ_p w_p |y_p − (A z)_p|²`` per image, A the CTF x shift x slice of the representation."""
    R, shifts = model.poses(batch, False)
    pred = model.decoder.slice_half(R, z, points=data.fit_idx) * data.phase(shifts) * batch.ctf
    return 0.5 * ((y - pred).abs() ** 2 * data.weights).sum(-1)


def test_sampled_loss_averages_to_the_closed_form_elbo(tiny) -> None:
    model, data, batch = _linear_model(tiny)
    beta, n = 0.7, data.points.n_disc
    with torch.no_grad():
        mu, logvar = model.encoder(*data.encoder_input(model.decoder, batch))
        d = mu.shape[1]
        zero = torch.zeros_like(mu)
        # A e_j from the volume differences, independently of the encoder's sampling path
        a_cols = [_weighted_sq(model, data, batch, torch.eye(d)[j].expand_as(mu), _slice(model, data, batch, zero))
                  for j in range(d)]
        spread = sum(2 * a_cols[j] * logvar[:, j].exp() for j in range(d))
        closed = ((_weighted_sq(model, data, batch, mu, batch.y) + 0.5 * spread + beta * kl_divergence(mu, logvar))
                  .mean() / n)
        deterministic, parts = batch_loss(model, data, batch, beta, sample=False)
        torch.testing.assert_close(deterministic, closed - 0.5 * spread.mean() / n, rtol=1e-5, atol=0)
        gen = torch.Generator().manual_seed(5)
        draws = torch.stack([batch_loss(model, data, batch, beta, gen=gen)[0] for _ in range(DRAWS)])
    se = float(draws.std()) / np.sqrt(draws.numel())
    assert float(spread.mean() / n) > 30 * se  # the spread term is resolved by the test
    assert abs(float(draws.mean()) - float(closed)) < 4 * se
    assert parts["kl"] == pytest.approx(float(kl_divergence(mu, logvar).mean()) / n, rel=1e-6)


def _slice(model, data, batch, z) -> torch.Tensor:
    """``A z`` (CTF x shift x slice) per image."""
    R, shifts = model.poses(batch, False)
    return model.decoder.slice_half(R, z, points=data.fit_idx) * data.phase(shifts) * batch.ctf


def test_batch_transfer_is_the_forward_models_at_the_fitted_points(tiny) -> None:
    """The batches' CTF and shift phase equal :func:`transfer_half` over the whole half set, taken at the
    fit and encoder points (one transfer for every layer)."""
    from cryoscape.imaging.forward import transfer_half
    from cryoscape.particles import ParticleSet

    ps = ParticleSet.from_file(tiny)
    _, data, batch = _linear_model(tiny)
    table = ps.ctf_table()
    params = {k: torch.as_tensor(np.asarray(table[k], dtype=np.float32)) for k in table}
    ctf, phase = transfer_half(int(ps.box), float(ps.apix), batch.shifts_A, params)
    for idx, got_ctf, encoder in ((data.fit_idx, batch.ctf, False), (data.enc_idx, batch.ctf_enc, True)):
        torch.testing.assert_close(got_ctf, ctf[:, idx], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(data.phase(batch.shifts_A, encoder=encoder), phase[:, idx], rtol=1e-5, atol=1e-6)
