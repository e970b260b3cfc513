"""The latent curve: evidence from posteriors, E- and M-steps against direct computations, recovery of a known curve."""

import numpy as np
import pytest
from scipy.stats import spearmanr

from cryoscape.analysis.latent_curve import (_e_step, _evidence, _m_step, _quadratic_forms, fit_latent_curve,
                                              spline_basis)
from cryoscape.errors import InputError
from cryoscape.validate.metrics import spearman_abs


def _random_spd(rng, n, K, lo=0.2, hi=3.0):
    """``n`` random SPD ``K × K`` matrices with eigenvalues in ``[lo, hi]``."""
    Q, _ = np.linalg.qr(rng.standard_normal((n, K, K)))
    w = rng.uniform(lo, hi, (n, K))
    return np.einsum("nik,nk,njk->nij", Q, w, Q)


def _bent_curve(s):
    """An arc of 216° of radius 3 in the first two latent axes plus a small third: ``[N, 3]``
    (no linear coordinate orders it)."""
    t = 1.2 * np.pi * s
    return np.stack([3 * np.cos(t), 3 * np.sin(t), 0.5 * s], axis=-1)


def _posteriors(rng, n, prior_cov, noise_scale=0.3):
    """True positions, true latents on the curve, and Gaussian posteriors under the prior ``N(0, prior_cov)``
    from observations with random anisotropic noise (precision ``Λ_i``)."""
    s = rng.uniform(0, 1, n)
    x = _bent_curve(s)
    K = x.shape[1]
    lam = _random_spd(rng, n, K) / noise_scale ** 2
    obs = x + np.stack([rng.multivariate_normal(np.zeros(K), np.linalg.inv(l)) for l in lam])
    post_prec = lam + np.linalg.inv(prior_cov)
    cov = np.linalg.inv(post_prec)
    z = np.einsum("nij,nj->ni", cov, np.einsum("nij,nj->ni", lam, obs))
    return s, lam, obs, z, cov


def test_evidence_divides_the_prior_out():
    rng = np.random.default_rng(0)
    prior = np.diag([4.0, 2.0, 1.0])
    _, lam, obs, z, cov = _posteriors(rng, 50, prior)
    lam_hat, h = _evidence(z, cov, prior)
    np.testing.assert_allclose(lam_hat, lam, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(np.linalg.solve(lam_hat, h[..., None])[..., 0], obs, rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("kappa", [1.0, 2.5])
def test_e_step_matches_direct_quadratic_forms(kappa):
    rng = np.random.default_rng(1)
    N, M, K = 7, 5, 3
    lam = _random_spd(rng, N, K)
    mu = rng.standard_normal((N, K))
    pts = rng.standard_normal((M, K))
    h = np.einsum("nij,nj->ni", lam, mu)
    const = np.einsum("ni,nij,nj->n", mu, lam, mu)
    q_fast = _quadratic_forms(pts, lam.reshape(N, K * K), h, const)
    q = np.array([[(pts[m] - mu[i]) @ lam[i] @ (pts[m] - mu[i]) for m in range(M)] for i in range(N)])
    np.testing.assert_allclose(q_fast, q, rtol=1e-9, atol=1e-9)
    r, ll = _e_step(q, kappa)
    expect = np.exp(-0.5 * q / kappa) / np.exp(-0.5 * q / kappa).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(r, expect, rtol=1e-10)
    np.testing.assert_allclose(ll, np.mean(np.log(np.mean(np.exp(-0.5 * q / kappa), axis=1))), rtol=1e-10)


def test_m_step_is_the_penalised_least_squares_solution():
    """Against an independent dense least-squares problem: rows ``sqrt(r_im) L_iᵀ (B_m θ − μ_i)`` and penalty rows."""
    rng = np.random.default_rng(2)
    N, M, K, J, rho = 9, 6, 2, 5, 0.3
    lam = _random_spd(rng, N, K)
    mu = rng.standard_normal((N, K))
    r = rng.dirichlet(np.ones(M), N)
    B = spline_basis(np.linspace(0, 1, M), J)
    theta = _m_step(r, lam.reshape(N, K * K), np.einsum("nij,nj->ni", lam, mu), B, K, rho)
    rows, rhs = [], []
    for i in range(N):
        Lt = np.linalg.cholesky(lam[i]).T
        for m in range(M):
            w = np.sqrt(r[i, m])
            rows.append(w * Lt @ np.kron(B[m][None, :], np.eye(K)))  # acts on θ flattened as [J, K] -> (j, a)
            rhs.append(w * Lt @ mu[i])
    scale = np.trace(sum(r[i, m] * lam[i] for i in range(N) for m in range(M))) / K
    D2 = np.diff(np.eye(J), 2, axis=0)
    rows.append(np.sqrt(rho * scale) * np.kron(D2, np.eye(K)))
    rhs.append(np.zeros(D2.shape[0] * K))
    ref = np.linalg.lstsq(np.vstack(rows), np.concatenate(rhs), rcond=None)[0].reshape(J, K)
    np.testing.assert_allclose(theta, ref, rtol=1e-8, atol=1e-10)


def test_spline_basis_is_a_partition_of_unity_with_clamped_ends():
    s = np.linspace(0, 1, 11)
    B = spline_basis(s, 6)
    np.testing.assert_allclose(B.sum(axis=1), 1.0, atol=1e-12)
    assert B[0, 0] == pytest.approx(1.0) and B[-1, -1] == pytest.approx(1.0)


def test_recovers_the_order_along_a_bent_curve_better_than_a_linear_coordinate():
    rng = np.random.default_rng(3)
    prior = np.diag([9.0, 9.0, 1.0])
    s, _, _, z, cov = _posteriors(rng, 1500, prior)
    start = s + 0.5 * rng.standard_normal(s.size)  # a poor ordering to start from
    curve = fit_latent_curve(z, cov, prior, init=start)
    rho_curve = spearmanr(curve.coordinate, s)[0]
    rho_pc1 = spearman_abs(z, s)  # the best linear coordinate's
    assert rho_curve > 0.97 and rho_curve > rho_pc1 + 0.015 and rho_curve > spearmanr(start, s)[0] + 0.2
    assert np.all((curve.coordinate >= 0) & (curve.coordinate <= 1)) and np.all(curve.coordinate_sd >= 0)
    # the fitted curve passes near the true one at its ends and middle
    ends = curve.point([0.0, 0.5, 1.0])
    truth = _bent_curve(np.array([0.0, 0.5, 1.0]))
    assert np.max(np.linalg.norm(ends - truth, axis=1)) < 0.35
    np.testing.assert_allclose(curve.point(curve.positions), curve.points, atol=1e-12)
    # EM gains likelihood; the curvature penalty (not in the likelihood) may cost a trace of it at the end
    ll = np.asarray(curve.log_likelihood)
    assert ll[-1] > ll[0] + 1.0 and ll.max() - ll[-1] < 0.02
    assert curve.scale == pytest.approx(1.0, abs=0.15)  # calibrated posteriors: no inflation learnt
    fixed = fit_latent_curve(z, cov, prior, init=start, learn_scale=False)
    assert fixed.scale == 1.0 and spearmanr(fixed.coordinate, s)[0] > 0.97


def test_orientation_follows_the_start_and_isotropic_noise_is_learnt():
    rng = np.random.default_rng(4)
    s = rng.uniform(0, 1, 800)
    z = _bent_curve(s) + 0.1 * rng.standard_normal((800, 3))
    up = fit_latent_curve(z, init=s)
    down = fit_latent_curve(z, init=-s)
    assert spearmanr(up.coordinate, s)[0] > 0.98 and spearmanr(down.coordinate, s)[0] < -0.98
    np.testing.assert_allclose(up.point(0.0), down.point(1.0), atol=1e-6)
    assert up.scale == pytest.approx(0.01, rel=0.3)  # the noise variance


@pytest.mark.parametrize("kwargs, message", [
    (dict(latents=np.zeros((2, 3))), "at least 3 particles"),
    (dict(latents=np.ones((10, 2)), covariances=np.ones((10, 3, 3))), "covariances must be finite"),
    (dict(latents=np.ones((10, 2)), prior_covariance=np.eye(3)), "prior covariance"),
    (dict(latents=np.ones((10, 2)), init=np.ones(4)), "one finite value per particle"),
    (dict(latents=np.ones((10, 2)), n_basis=3), "at least 4"),
    (dict(latents=np.full((10, 2), np.nan)), "latents"),
])
def test_bad_input_is_refused_in_one_line(kwargs, message):
    with pytest.raises(InputError, match=message) as exc:
        fit_latent_curve(**kwargs)
    assert "\n" not in str(exc.value)
    with pytest.raises(InputError, match="lie in"):
        fit_latent_curve(np.random.default_rng(0).standard_normal((20, 2))).point(1.5)


def test_prior_whitened_latents_have_the_identity_prior():
    """``z P^{-1/2}``: samples of N(0, P) come out with identity covariance; None leaves the latents alone."""
    from cryoscape.methods.pca import prior_whitened

    rng = np.random.default_rng(5)
    A = rng.standard_normal((3, 3))
    P = A @ A.T + 0.5 * np.eye(3)
    z = rng.multivariate_normal(np.zeros(3), P, size=200_000)
    np.testing.assert_allclose(np.cov(prior_whitened(z, P).T), np.eye(3), atol=0.02)
    np.testing.assert_array_equal(prior_whitened(z[:5], None), z[:5])
