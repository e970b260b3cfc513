"""Probabilistic PCA by EM: posterior against a dense operator, subspace recovery, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.linalg import subspace_angles
from scipy.spatial.transform import Rotation

from cryoscape.errors import InputError
from cryoscape.imaging import FourierProjector, render
from cryoscape.inference.ppca_em import fit_ppca, frequency_weights, image_terms, posterior
from cryoscape.models.linear import LinearHyperMolecule
from cryoscape.particles.particle_set import ParticleSet
from cryoscape.reconstruct.backprojection import default_mask


def _blob(D: int, centre, sigma: float) -> np.ndarray:
    c = np.arange(D) - D // 2
    z, y, x = np.meshgrid(c, c, c, indexing="ij")
    r2 = (x - centre[0]) ** 2 + (y - centre[1]) ** 2 + (z - centre[2]) ** 2
    return np.exp(-r2 / (2 * sigma ** 2))


def _truth(D: int) -> tuple[np.ndarray, np.ndarray]:
    """A mean and two orthonormal (over voxels) smooth components, all inside the default mask."""
    s = D / 16
    mean = _blob(D, (0, 0, 0), 2.5 * s) + 0.6 * _blob(D, (3 * s, 0, 0), 1.5 * s)
    c1 = _blob(D, (0, 3 * s, 0), 1.5 * s) - _blob(D, (0, -3 * s, 0), 1.5 * s)
    c2 = _blob(D, (-3 * s, 0, 2 * s), 1.5 * s) + _blob(D, (1 * s, 1 * s, -3 * s), 1.5 * s)
    m = default_mask(D)
    mean, c1, c2 = mean * m, c1 * m, c2 * m
    W = np.stack([mean, c1, c2]).reshape(3, -1).T
    Q, _ = np.linalg.qr(W)  # components orthogonal to each other and to the mean
    return mean, Q[:, 1:].T.reshape(2, D, D, D)


def _rep(ps: ParticleSet, latent_dim: int) -> LinearHyperMolecule:
    """The representation PPCA fits to ``ps``: zero linear volumes at its box."""
    return LinearHyperMolecule.empty(ps.box, latent_dim, apix=ps.apix)


def _ctf(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    df = rng.uniform(3000, 6000, n)
    return {"defocus_u_A": df, "defocus_v_A": df * 0.98, "defocus_angle_deg": rng.uniform(0, 180, n),
            "voltage_kV": np.full(n, 300.0), "cs_mm": np.full(n, 2.7), "amplitude_contrast": np.full(n, 0.1),
            "phase_shift_deg": np.zeros(n), "bfactor_A2": np.zeros(n)}


def _ensemble(D=20, n=300, apix=3.0, amplitude=(6.0, 4.0), contrast_spread=0.2, seed=1):
    """Exact images of ``a_i (X0 + Σ b_ik X_k)`` rendered with the shared forward model."""
    rng = np.random.default_rng(seed)
    mean, comps = _truth(D)
    b = rng.standard_normal((n, 2)) * np.asarray(amplitude)
    a = 1.0 + contrast_spread * rng.uniform(-1, 1, n)
    R = Rotation.random(n, random_state=seed).as_matrix().astype(np.float32)
    shifts = rng.uniform(-2, 2, (n, 2)) * apix
    ctf = _ctf(n, rng)
    Rt, St = torch.as_tensor(R), torch.as_tensor(shifts, dtype=torch.float32)
    Ct = {k: torch.as_tensor(v, dtype=torch.float32) for k, v in ctf.items()}
    imgs = [render(FourierProjector(torch.as_tensor(v, dtype=torch.float32)), Rt, St, Ct, apix).numpy()
            for v in (mean, comps[0], comps[1])]
    images = a[:, None, None] * (imgs[0] + b[:, :1, None] * imgs[1] + b[:, 1:, None] * imgs[2])
    ps = ParticleSet.from_arrays(images.astype(np.float32), R, shifts, ctf=ctf, apix=apix, name="ensemble")
    return ps, mean, comps, b, a


def _dense_operator(D: int, R: np.ndarray, shifts: np.ndarray, ctf: dict, apix: float) -> np.ndarray:
    """Real-space matrix ``[B, D², D³]`` of the forward model, column ``j`` the images of basis volume ``e_j``."""
    Rt = torch.as_tensor(R, dtype=torch.float64)
    St = torch.as_tensor(shifts, dtype=torch.float64)
    Ct = {k: torch.as_tensor(v, dtype=torch.float64) for k, v in ctf.items()}
    cols = []
    for j in range(D ** 3):
        e = torch.zeros(D ** 3, dtype=torch.float64)
        e[j] = 1.0
        cols.append(render(FourierProjector(e.reshape(D, D, D)), Rt, St, Ct, apix).reshape(len(R), -1))
    return torch.stack(cols, dim=-1).numpy()


def test_estep_matches_dense_operator():
    D, B, K, apix = 8, 3, 2, 4.0
    rng = np.random.default_rng(3)
    R = Rotation.random(B, random_state=3).as_matrix()
    shifts = rng.uniform(-3, 3, (B, 2))
    ctf = _ctf(B, rng)
    mean = rng.standard_normal((D, D, D))
    comps = rng.standard_normal((K, D, D, D))
    model = LinearHyperMolecule(torch.as_tensor(mean), torch.as_tensor(comps))
    images = rng.standard_normal((B, D, D))
    a = np.array([0.7, 1.0, 1.3])
    s2_px = 0.37  # real-space noise variance per pixel
    Ct = {k: torch.as_tensor(v) for k, v in ctf.items()}
    terms = image_terms(model, torch.as_tensor(images), torch.as_tensor(R), torch.as_tensor(shifts), Ct, apix,
                        frequency_weights(D, apix, dtype=torch.float64))
    post = posterior(terms["C"], terms["d"], torch.as_tensor(a), s2_px * D * D)

    A = _dense_operator(D, R, shifts, ctf, apix)  # [B, D², D³]
    for i in range(B):
        G = A[i] @ comps.reshape(K, -1).T  # [D², K]
        m = A[i] @ mean.reshape(-1)
        lam = np.eye(K) + a[i] ** 2 * G.T @ G / s2_px
        mu = np.linalg.solve(lam, a[i] * G.T @ (images[i].reshape(-1) - a[i] * m) / s2_px)
        np.testing.assert_allclose(post.precision[i].numpy(), lam, rtol=1e-5, atol=1e-8 * np.abs(lam).max())
        np.testing.assert_allclose(post.mean[i].numpy(), mu, rtol=1e-5, atol=1e-8 * np.abs(mu).max())
        np.testing.assert_allclose(post.cov[i].numpy(), np.linalg.inv(lam), rtol=1e-5, atol=1e-10)


def test_resolution_limited_estep_matches_dense_low_pass():
    """With a resolution limit the E-step sees only frequencies up to it: the dense reference
    projects images and operator onto those frequencies (a real orthogonal projector)."""
    D, B, K, apix, res_A = 8, 3, 2, 4.0, 10.0
    rng = np.random.default_rng(4)
    R = Rotation.random(B, random_state=4).as_matrix()
    shifts = rng.uniform(-3, 3, (B, 2))
    ctf = _ctf(B, rng)
    mean, comps = rng.standard_normal((D, D, D)), rng.standard_normal((K, D, D, D))
    model = LinearHyperMolecule(torch.as_tensor(mean), torch.as_tensor(comps))
    images = rng.standard_normal((B, D, D))
    a, s2_px = np.array([0.8, 1.0, 1.2]), 0.5
    Ct = {k: torch.as_tensor(v) for k, v in ctf.items()}
    h = frequency_weights(D, apix, res_A, dtype=torch.float64)
    assert 0 < int((h > 0).sum()) < h.numel()
    terms = image_terms(model, torch.as_tensor(images), torch.as_tensor(R), torch.as_tensor(shifts), Ct, apix, h)
    post = posterior(terms["C"], terms["d"], torch.as_tensor(a), s2_px * D * D)

    n = np.fft.fftfreq(D) * D
    keep = np.sqrt(n[:, None] ** 2 + n[None, :] ** 2) / (D * apix) <= 1.0 / res_A
    low = lambda x: np.fft.ifft2(np.fft.fft2(x.reshape(*x.shape[:-1], D, D), axes=(-2, -1)) * keep,
                                 axes=(-2, -1)).real.reshape(x.shape)
    A = _dense_operator(D, R, shifts, ctf, apix)  # [B, D², D³]
    for i in range(B):
        G = low((A[i] @ comps.reshape(K, -1).T).T).T  # [D², K] low-passed component images
        m = low(A[i] @ mean.reshape(-1))
        y = low(images[i].reshape(-1))
        lam = np.eye(K) + a[i] ** 2 * G.T @ G / s2_px
        mu = np.linalg.solve(lam, a[i] * G.T @ (y - a[i] * m) / s2_px)
        np.testing.assert_allclose(post.precision[i].numpy(), lam, rtol=1e-5, atol=1e-8 * np.abs(lam).max())
        np.testing.assert_allclose(post.mean[i].numpy(), mu, rtol=1e-5, atol=1e-8 * np.abs(mu).max())


def test_latents_from_low_resolution_still_recover_the_subspace():
    ps, mean, comps, b, a = _ensemble(n=600, seed=2)
    res = fit_ppca(ps, _rep(ps, 2), n_iterations=8, ridge=1e-3, progress=False, latent_resolution_A=15.0)
    m = default_mask(mean.shape[0]).reshape(-1)
    truth = (comps.reshape(2, -1) * m).T
    found = (res.model.components.numpy().reshape(2, -1) * m).T
    assert np.degrees(subspace_angles(truth, found)).max() < 5.0
    X = np.column_stack([res.latents, np.ones(len(b))])
    pred = X @ np.linalg.lstsq(X, b, rcond=None)[0]
    assert min(abs(np.corrcoef(pred[:, k], b[:, k])[0, 1]) for k in range(2)) > 0.95


@pytest.fixture(scope="module")
def ensemble_fit():
    ps, mean, comps, b, a = _ensemble(n=1200)
    res = fit_ppca(ps, _rep(ps, 2), n_iterations=10, ridge=1e-3, progress=False)
    return res, mean, comps, b, a


def test_subspace_recovered(ensemble_fit):
    res, mean, comps, b, a = ensemble_fit
    D = mean.shape[0]
    m = default_mask(D).reshape(-1)
    truth = (comps.reshape(2, -1) * m).T
    found = (res.model.components.numpy().reshape(2, -1) * m).T
    angles = np.degrees(subspace_angles(truth, found))
    assert angles.max() < 5.0, angles
    gram = res.model.components.reshape(2, -1) @ res.model.components.reshape(2, -1).T
    np.testing.assert_allclose(gram.numpy(), np.eye(2), atol=1e-4)
    assert res.eigenvalues[0] >= res.eigenvalues[1] > 0


def test_latents_match_truth(ensemble_fit):
    res, mean, comps, b, a = ensemble_fit
    n = b.shape[0]
    X = np.column_stack([res.latents, np.ones(n)])
    coef, *_ = np.linalg.lstsq(X, b, rcond=None)
    pred = X @ coef
    for k in range(2):
        assert abs(np.corrcoef(pred[:, k], b[:, k])[0, 1]) > 0.95
    assert np.corrcoef(res.contrast, a)[0, 1] > 0.9
    assert abs(res.contrast.mean() - 1) < 1e-4
    assert res.latent_covariances.shape == (n, 2, 2)
    assert np.all(np.isfinite(res.objective)) and res.objective[-1] > res.objective[0]


def test_model_volume_and_state_dict():
    D = 8
    mean, comps = _truth(D)
    model = LinearHyperMolecule(torch.as_tensor(mean, dtype=torch.float32), torch.as_tensor(comps, dtype=torch.float32))
    b = torch.tensor([[0.5, -2.0]])
    vol = model.volume(b)[0]
    np.testing.assert_allclose(vol.numpy(), mean + 0.5 * comps[0] - 2.0 * comps[1], atol=1e-5)
    R = torch.as_tensor(Rotation.random(2, random_state=0).as_matrix(), dtype=torch.float32)
    direct = FourierProjector(vol).slice_half(R[:1])
    np.testing.assert_allclose(model.slices(R[:1], b).numpy(), direct.numpy(), atol=1e-3)
    again = LinearHyperMolecule.from_state_dict(model.state_dict())
    assert torch.equal(again.components, model.components)


def test_orthonormalise_keeps_span():
    D, K = 8, 3
    g = torch.Generator().manual_seed(0)
    comps = torch.randn(K, D, D, D, generator=g, dtype=torch.float64)
    model = LinearHyperMolecule(torch.zeros(D, D, D, dtype=torch.float64), comps.clone())
    b = torch.randn(5, K, generator=g, dtype=torch.float64)
    before = model.volume(b)
    T, ev = model.orthonormalise_components()
    after = model.volume(b @ T.T)
    torch.testing.assert_close(after, before)
    W = model.components.reshape(K, -1)
    torch.testing.assert_close(W @ W.T, torch.eye(K, dtype=torch.float64))
    assert torch.all(ev[:-1] >= ev[1:])
    # the prior N(0, I) of the old latents is N(0, T Tᵀ) in the new frame: same covariance of the volumes
    old = comps.reshape(K, -1)
    torch.testing.assert_close(W.T @ (T @ T.T) @ W, old.T @ old)


def test_result_carries_the_prior_of_its_frame(ensemble_fit):
    res = ensemble_fit[0]
    P = res.latent_prior_covariance
    assert P.shape == (2, 2) and np.all(np.linalg.eigvalsh(P) > 0)
    # each posterior includes that prior: posterior precision minus prior precision is the data's, PSD
    data_prec = np.linalg.inv(res.latent_covariances.astype(np.float64)) - np.linalg.inv(P)
    assert np.linalg.eigvalsh(0.5 * (data_prec + np.swapaxes(data_prec, 1, 2))).min() > -1e-3 * np.abs(data_prec).max()


def test_too_few_particles_and_no_poses():
    ps, *_ = _ensemble(D=16, n=4)
    with pytest.raises(InputError, match="more particles than components"):
        fit_ppca(ps[:2], _rep(ps[:2], 2), progress=False)
    unposed = ParticleSet.from_arrays(np.zeros((5, 16, 16), np.float32), apix=2.0, name="unposed")
    with pytest.raises(InputError, match="no particle orientations"):
        fit_ppca(unposed, _rep(unposed, 2), progress=False)


def test_representation_must_be_linear_in_its_latent_and_fit_the_box():
    ps, *_ = _ensemble(D=16, n=20)
    with pytest.raises(InputError, match="^EM over posteriors needs a representation linear in its latent$"):
        fit_ppca(ps, 2, progress=False)
    with pytest.raises(InputError, match="box 20 px but the particles 16 px"):
        fit_ppca(ps, LinearHyperMolecule.empty(20, 2), progress=False)


def test_fitted_model_is_built_from_the_template():
    """The result's model is the template's kind with its settings; the template itself is untouched."""
    ps, *_ = _ensemble(D=12, n=60, seed=3)
    template = LinearHyperMolecule.empty(12, 1, apix=ps.apix, oversampling=2.0)
    res = fit_ppca(ps, template, n_iterations=1, progress=False, fsc_filter=False)
    assert type(res.model) is LinearHyperMolecule and res.model is not template
    assert (res.model.box, res.model.latent_dim, res.model.apix) == (12, 1, ps.apix)
    assert float(template.mean.abs().sum()) == 0.0 and float(res.model.mean.abs().sum()) > 0


# ------------------------------------------------------------------ half-set FSC filter of the M-step
def _noisy(ps: ParticleSet, snr: float, seed: int = 5) -> ParticleSet:
    images = ps.read_images()
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal(images.shape) * images.std() / np.sqrt(snr)
    return ParticleSet.from_arrays((images + noise).astype(np.float32), ps.rotations, ps.shifts_A,
                                   ctf=ps.ctf_table(), apix=ps.apix, name="noisy")


def _outside_span(found: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> float:
    """Fraction of the recovered components' masked energy outside the true span."""
    T = (truth.reshape(len(truth), -1) * mask.reshape(-1)).T
    F = (found.reshape(len(found), -1) * mask.reshape(-1)).T
    Q, _ = np.linalg.qr(T)
    rest = F - Q @ (Q.T @ F)
    return float((rest ** 2).sum() / (F ** 2).sum())


def test_half_set_filter_keeps_noise_out_of_the_components():
    ps, mean, comps, b, a = _ensemble(n=1200, seed=4)
    noisy = _noisy(ps, snr=0.1)
    m = default_mask(mean.shape[0])
    fits = {f: fit_ppca(noisy, _rep(noisy, 2), n_iterations=4, progress=False, fsc_filter=f)
            for f in (False, True)}
    out = {f: _outside_span(r.model.components.numpy(), comps, m) for f, r in fits.items()}
    assert out[True] < 0.6 * out[False], out  # measured 0.22 against 0.42
    curves = fits[True].half_set_fsc
    assert curves.shape == (3, mean.shape[0] // 2 + 1) and fits[False].half_set_fsc is None
    assert np.all(curves[:, 1] > 0.8)  # the halves agree at low frequency, for the mean and both components


def test_cross_halves_keep_noise_from_being_reinforced():
    """Homogeneous particles in noise: with one shared model the EM finds 'heterogeneity' in the noise (each
    image's latent is its own noise on the fitted direction); taking each half's posteriors from the other
    half's model claims far less of it."""
    ps, *_ = _ensemble(n=600, seed=4, amplitude=(0.0, 0.0), contrast_spread=0.0)
    noisy = _noisy(ps, snr=0.02)
    spread = {c: fit_ppca(noisy, _rep(noisy, 2), n_iterations=6, progress=False, cross_halves=c,
                          estimate_contrast=False).latents.var(axis=0).sum() for c in (False, True)}
    assert spread[True] < 0.5 * spread[False], spread  # measured 1.1 against 3.5


def test_solve_with_ssnr_limits():
    """SSNR → ∞ leaves the ridge solve; SSNR at its floor in one channel all but zeroes that volume."""
    from cryoscape.inference.ppca_em import MStepAccumulator
    from cryoscape.inference.ppca_em import Posterior

    ps, mean, comps, b, a = _ensemble(D=12, n=80, seed=2)
    D, K = 12, 2
    acc = MStepAccumulator(D, K)
    mu = torch.as_tensor(b, dtype=torch.float32)
    cov = 0.1 * torch.eye(K).expand(len(b), K, K).clone()
    post = Posterior(mu, cov, cov, mu, torch.zeros(len(b)))
    R, sh = torch.as_tensor(ps.rotations, dtype=torch.float32), torch.as_tensor(ps.shifts_A, dtype=torch.float32)
    ctf = {k: torch.as_tensor(v, dtype=torch.float32) for k, v in ps.ctf_table().items()}
    acc.insert(torch.as_tensor(ps.read_images()), R, sh, ctf, ps.apix, torch.as_tensor(a, dtype=torch.float32), post)
    m0, c0 = acc.solve(1e-2, ps.apix)
    big = np.full((K + 1, D // 2 + 1), 1e12)
    m1, c1 = acc.solve(1e-2, ps.apix, ssnr=big)
    np.testing.assert_allclose(m1.numpy(), m0.numpy(), atol=1e-4 * float(m0.abs().max()))
    np.testing.assert_allclose(c1.numpy(), c0.numpy(), atol=1e-4 * float(c0.abs().max()))
    low = big.copy()
    low[2] = 1e-4  # second component: no signal anywhere
    m2, c2 = acc.solve(1e-2, ps.apix, ssnr=low)
    assert float(c2[1].norm()) < 1e-2 * float(c0[1].norm())
    assert float(c2[0].norm()) > 0.5 * float(c0[0].norm())


def test_half_set_fsc_of_identical_halves_is_one():
    from cryoscape.inference.ppca_em import half_set_fsc

    rng = np.random.default_rng(0)
    mean, comps = torch.as_tensor(rng.standard_normal((8, 8, 8))), torch.as_tensor(rng.standard_normal((2, 8, 8, 8)))
    curves = half_set_fsc([(mean, comps), (mean.clone(), comps.clone())], torch.ones(8, 8, 8, dtype=torch.float64))
    np.testing.assert_allclose(curves, 1.0, atol=1e-12)


# ------------------------------------------------------------------ contrast prior
def test_contrast_variance_matches_the_dense_inverse():
    from cryoscape.inference.ppca_em import contrast_estimate

    rng = np.random.default_rng(7)
    B, K1, s2, tau = 5, 3, 0.7, 0.25
    G = rng.standard_normal((B, 10, K1))
    C = torch.as_tensor(G.transpose(0, 2, 1) @ G)
    d = torch.as_tensor(rng.standard_normal((B, K1)) + 3.0)
    a, var = contrast_estimate(C, d, s2, tau, return_variance=True)
    np.testing.assert_allclose(a.numpy(), contrast_estimate(C, d, s2, tau).numpy(), rtol=1e-12)
    reg = np.diag([1 / tau ** 2] + [1.0] * (K1 - 1))
    for i in range(B):
        H = C[i].numpy() / s2 + reg
        np.testing.assert_allclose(var[i].item(), np.linalg.inv(H)[0, 0], rtol=1e-10)


def test_contrast_prior_is_learnt():
    """The learnt prior width follows the data: small without contrast variation, near the truth with it."""
    widths = {}
    for spread in (0.0, 0.3):
        ps, *_ = _ensemble(n=600, contrast_spread=spread, seed=6)
        noisy = _noisy(ps, snr=1.0)
        fit = fit_ppca(noisy, _rep(noisy, 2), n_iterations=8, contrast_warmup=2, progress=False)
        widths[spread] = fit.contrast_prior_std
    assert widths[0.0] < 0.1, widths  # measured 0.063 (it keeps falling with more iterations)
    assert 0.12 < widths[0.3] < 0.3, widths  # uniform on ±0.3: standard deviation 0.17; measured 0.185
    small = _noisy(_ensemble(n=300, seed=6)[0], snr=1.0)
    fixed = fit_ppca(small, _rep(small, 2), n_iterations=4, contrast_warmup=2,
                     progress=False, contrast_prior_std=0.3)
    assert fixed.contrast_prior_std == pytest.approx(0.3)


def _reference_solve(acc, ridge: float, ssnr=None):
    """The M-step solve on the whole completed grid, voxel by voxel in float64 (reference for the chunked one)."""
    from cryoscape.imaging import complete_channels
    from cryoscape.reconstruct.wiener import regulariser_from_ssnr, shell_mean_weight

    K1, N, h, D = acc.latent_dim + 1, acc.N, acc.N // 2, acc.D
    full = complete_channels(acc.acc.double(), odd_channels=[2 * p + 1 for p in range(K1)])
    half = full[:, :N, :N, h:].numpy()
    shell, radius = acc._shells("cpu")
    shell, radius = shell.numpy(), radius.numpy()
    diag = [shell_mean_weight(full[2 * K1 + acc.pairs.index((p, p))], D, 2).numpy() for p in range(K1)]
    ridge_lam = ridge * diag[0]
    wiener = [np.zeros_like(ridge_lam) if ssnr is None else
              regulariser_from_ssnr(torch.as_tensor(diag[p]), ssnr[p]).numpy() for p in range(K1)]
    out = np.zeros((K1, N, N, h + 1), dtype=np.complex128)
    gain_sum, count = np.zeros((K1, D // 2 + 1)), np.zeros(D // 2 + 1)
    for z, y, x in zip(*np.nonzero(radius <= D / 2)):
        s = min(shell[z, y, x], D // 2)
        A = np.zeros((K1, K1))
        for c, (p, q) in enumerate(acc.pairs):
            A[p, q] = A[q, p] = half[2 * K1 + c, z, y, x]
        base = np.diag(A) + ridge_lam[s]
        A += np.diag([ridge_lam[s] + wiener[p][s] for p in range(K1)])
        plane = 0.5 if x in (0, h) else 1.0  # the kx = 0 and kx = N/2 planes count half
        gain_sum[:, s] += plane * base / (base + np.array([wiener[p][s] for p in range(K1)]))
        count[s] += plane
        b = half[: 2 * K1, z, y, x].reshape(K1, 2)
        X = np.linalg.solve(A, b)
        out[:, z, y, x] = X[:, 0] + 1j * X[:, 1]
    if ssnr is None:
        vols = [acc._to_real(torch.as_tensor(out[p])).numpy() for p in range(K1)]
        return vols[0], np.stack(vols[1:])
    # the Wiener level goes on after the crop: unit gain per shell first, then each shell times its gain
    from cryoscape.geometry.fourier import scale_shells

    gain = gain_sum / count
    level = gain[:, np.minimum(shell, D // 2)]
    vols = [scale_shells(acc._to_real(torch.as_tensor(out[p] / level[p])), gain[p]).numpy() for p in range(K1)]
    return vols[0], np.stack(vols[1:])


@pytest.mark.parametrize("with_ssnr", [False, True])
def test_chunked_solve_matches_the_whole_grid_solve(with_ssnr):
    from cryoscape.inference.ppca_em import MStepAccumulator

    D, K = 8, 2
    acc = MStepAccumulator(D, K, dtype=torch.float64)
    rng = np.random.default_rng(11)
    M = acc.N + 1
    acc.acc[: 2 * (K + 1)] = torch.as_tensor(rng.standard_normal((2 * (K + 1), M, M, M)))
    L = rng.standard_normal((M, M, M, K + 1, K + 1))
    spd = L @ np.swapaxes(L, -1, -2) + 0.1 * np.eye(K + 1)  # positive definite weights per voxel
    for c, (p, q) in enumerate(acc.pairs):
        acc.acc[2 * (K + 1) + c] = torch.as_tensor(spd[..., p, q])
    ssnr = rng.uniform(0.01, 10.0, (K + 1, D // 2 + 1)) if with_ssnr else None
    mean, comps = acc.solve(0.05, 2.0, ssnr=ssnr)
    ref_mean, ref_comps = _reference_solve(acc, 0.05, ssnr)
    np.testing.assert_allclose(mean.numpy(), ref_mean, rtol=1e-7, atol=1e-9 * np.abs(ref_mean).max())
    np.testing.assert_allclose(comps.numpy(), ref_comps, rtol=1e-7, atol=1e-9 * np.abs(ref_comps).max())
    chunks = acc._plane_chunks(budget_bytes=1.0)  # one plane at a time gives the same volumes
    assert len(chunks) == acc.N
    acc._plane_chunks = lambda budget_bytes=64e6: chunks
    m1, c1 = acc.solve(0.05, 2.0, ssnr=ssnr)
    np.testing.assert_allclose(m1.numpy(), mean.numpy(), rtol=1e-12, atol=1e-14)
