"""Covariance estimation: operators against dense matrices, CG, eigen-decomposition, subspace recovery."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.linalg import subspace_angles
from scipy.spatial.transform import Rotation

from cryoscape.errors import InputError
from cryoscape.imaging import FourierProjector, render
from cryoscape.inference import covariance as cv
from cryoscape.models.linear import LinearHyperMolecule
from cryoscape.particles.particle_set import ParticleSet
from cryoscape.reconstruct.backprojection import default_mask


def _ctf(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    df = rng.uniform(3000, 6000, n)
    return {"defocus_u_A": df, "defocus_v_A": df * 0.98, "defocus_angle_deg": rng.uniform(0, 180, n),
            "voltage_kV": np.full(n, 300.0), "cs_mm": np.full(n, 2.7), "amplitude_contrast": np.full(n, 0.1)}


def _dense_slices(grid: cv.BallGrid, R: np.ndarray, transfer: np.ndarray) -> np.ndarray:
    """``A_i [B, P, n]`` from the tent / nearest formula written out voxel by voxel."""
    v = grid.voxels.numpy().astype(float)
    kx, ky = grid.kx.numpy(), grid.ky.numpy()
    A = np.zeros((len(R), grid.P, grid.n), complex)
    for i in range(len(R)):
        q = R[i, 0][None, :] * kx[:, None] + R[i, 1][None, :] * ky[:, None]  # Rᵀ (kx, ky, 0)
        if grid.interpolation == "trilinear":
            t = np.prod(np.clip(1 - np.abs(q[:, None, :] - v[None, :, :]), 0, None), -1)
        else:
            t = np.all(np.round(q)[:, None, :] == v[None, :, :], -1).astype(float)
        A[i] = transfer[i][:, None] * t
    return A


def _batch(D=8, B=3, seed=0):
    rng = np.random.default_rng(seed)
    R = Rotation.random(B, random_state=seed + 1).as_matrix()
    shifts = rng.uniform(-3, 3, (B, 2))
    ctf = _ctf(B, rng)
    return rng, R, shifts, ctf


@pytest.mark.parametrize("interpolation", ["nearest", "trilinear"])
def test_operators_match_dense_matrices(interpolation):
    D, apix = 8, 4.0
    rng, R, shifts, ctf = _batch(D)
    grid = cv.ball_grid(D, 2.6, interpolation)
    op = cv.slice_operator(grid, torch.as_tensor(R), torch.as_tensor(shifts),
                           {k: torch.as_tensor(v) for k, v in ctf.items()}, apix)
    A = _dense_slices(grid, R, op.transfer.numpy())
    n = grid.n
    x = rng.standard_normal(n) + 1j * rng.standard_normal(n)
    np.testing.assert_allclose(op.apply(torch.as_tensor(x)).numpy(), A @ x, atol=1e-12)
    y = rng.standard_normal((3, grid.P)) + 1j * rng.standard_normal((3, grid.P))
    np.testing.assert_allclose(op.adjoint(torch.as_tensor(y), n).numpy(), np.einsum("bpn,bp->bn", A.conj(), y),
                               atol=1e-12)
    X = rng.standard_normal((n, n)) + 1j * rng.standard_normal((n, n))
    X = X + X.conj().T
    gram = [a.conj().T @ a for a in A]
    ref = sum(g @ X @ g for g in gram)
    got = cv.normal_operator(torch.as_tensor(X), [op]).numpy()
    np.testing.assert_allclose(got, ref, atol=1e-10 * np.abs(ref).max())
    rows = torch.zeros(len(grid.half), n, dtype=torch.float64)
    cv._gram_rows(op, grid, rows)
    np.testing.assert_allclose(rows.numpy(), sum(gram)[grid.half.numpy()].real, atol=1e-12)
    if interpolation == "nearest":  # AᴴA is diagonal: the normal equations act pair by pair
        w = op.gram_diagonal(n).numpy()
        np.testing.assert_allclose(sum(gram), np.diag(w.sum(0)), atol=1e-12)


def test_normal_operator_is_self_adjoint_and_positive():
    rng, R, shifts, ctf = _batch(8, B=4, seed=5)
    grid = cv.ball_grid(8, 2.2, "trilinear")
    op = cv.slice_operator(grid, torch.as_tensor(R), torch.as_tensor(shifts),
                           {k: torch.as_tensor(v) for k, v in ctf.items()}, 3.0)
    n = grid.n
    herm = lambda M: torch.as_tensor(M + M.conj().T)
    X = herm(rng.standard_normal((n, n)) + 1j * rng.standard_normal((n, n)))
    Y = herm(rng.standard_normal((n, n)) + 1j * rng.standard_normal((n, n)))
    dot = lambda a, b: float((a.conj() * b).real.sum())
    LX, LY = cv.normal_operator(X, [op]), cv.normal_operator(Y, [op])
    assert abs(dot(LX, Y) - dot(X, LY)) < 1e-10 * abs(dot(LX, Y))
    assert dot(LX, X) > 0
    x = torch.as_tensor(rng.standard_normal(n) + 1j * rng.standard_normal(n))
    y = torch.as_tensor(rng.standard_normal((4, grid.P)) + 1j * rng.standard_normal((4, grid.P)))
    lhs = (op.apply(x).conj() * y).sum()
    rhs = (x.conj() * op.adjoint(y, n)).sum()
    assert abs(complex(lhs - rhs)) < 1e-10 * abs(complex(lhs))


def _random_set(D: int, n: int, seed: int, apix: float = 4.0) -> ParticleSet:
    rng = np.random.default_rng(seed)
    R = Rotation.random(n, random_state=seed).as_matrix().astype(np.float32)
    return ParticleSet.from_arrays(rng.standard_normal((n, D, D)).astype(np.float32), R,
                                   rng.uniform(-2, 2, (n, 2)), ctf=_ctf(n, rng), apix=apix)


def test_statistics_half_rows_fill_the_whole_matrix():
    D = 8
    ps = _random_set(D, 7, seed=2)
    grid = cv.ball_grid(D, 2.6, "trilinear")
    stats = cv.accumulate_statistics(ps, None, grid, dtype=torch.float64, batch_size=4)
    R = torch.as_tensor(np.asarray(ps.rotations), dtype=torch.float64)
    ctf = {k: torch.as_tensor(np.asarray(v, dtype=np.float64)) for k, v in ps.ctf_table().items() if v is not None}
    op = cv.slice_operator(grid, R, torch.as_tensor(ps.shifts_A), ctf, ps.apix)
    b = op.adjoint(cv.pixel_values(torch.as_tensor(ps.read_images(), dtype=torch.float64), grid.pix_index), grid.n)
    np.testing.assert_allclose(cv.hermitian_fill(stats.num, grid).numpy(), (b.T @ b.conj()).numpy(), atol=1e-8)
    w = op.gram_diagonal(grid.n)
    np.testing.assert_allclose(cv.hermitian_fill(stats.pair_weight, grid).numpy(), (w.T @ w).numpy(), atol=1e-8)


@pytest.mark.parametrize("interpolation", ["nearest", "trilinear"])
def test_cg_solves_the_normal_equations(interpolation):
    D = 8
    ps = _random_set(D, 40, seed=3)
    grid = cv.ball_grid(D, 1.8, interpolation)
    stats = cv.accumulate_statistics(ps, None, grid, dtype=torch.float64)
    s2 = 0.5 * D * D
    lam = cv._regulariser(stats, s2, 0.3, None)
    rhs = cv.hermitian_fill(stats.num, grid) - s2 * cv.hermitian_fill(stats.gram, grid)
    den = cv.hermitian_fill(stats.pair_weight, grid) + lam
    R = torch.as_tensor(np.asarray(ps.rotations), dtype=torch.float64)
    ctf = {k: torch.as_tensor(np.asarray(v, dtype=np.float64)) for k, v in ps.ctf_table().items() if v is not None}
    op = cv.slice_operator(grid, R, torch.as_tensor(ps.shifts_A), ctf, ps.apix)
    sigma, info = cv.cg_solve(lambda X: cv.normal_operator(X, [op]), rhs, lam, den.clamp(min=1e-12), 60, tol=1e-9)
    # residual checked with the dense operator
    A = _dense_slices(grid, R.numpy(), op.transfer.numpy())
    gram = [a.conj().T @ a for a in A]
    S = sigma.numpy()
    res = sum(g @ S @ g for g in gram) + lam.numpy() * S - rhs.numpy()
    assert np.linalg.norm(res) < 1e-6 * np.linalg.norm(rhs.numpy()), info.residuals[-5:]
    if interpolation == "nearest":  # diagonal operator: CG's answer is the pairwise solution
        np.testing.assert_allclose(S, cv.pairwise_solve(stats, s2, 0.3).numpy(), atol=1e-8 * np.abs(S).max())
        assert len(info.residuals) <= 2


def test_principal_volumes_match_dense_real_space_covariance():
    D = 8
    grid = cv.ball_grid(D, 2.6, "nearest")
    rng = np.random.default_rng(4)
    sel = torch.nonzero(grid.keep).reshape(-1)
    vols = rng.standard_normal((6, D, D, D)) * np.linspace(3, 0.5, 6)[:, None, None, None]
    ft = torch.stack([cv._sample(grid, cv.fftn_c(torch.as_tensor(v), 3)[None], torch.arange(grid.n))[0] for v in vols])
    Sigma = ft.T @ ft.conj()  # Σ_j x_j x_jᴴ: the Fourier covariance of real volumes
    mask = default_mask(D)
    comps, evals = cv.principal_volumes(Sigma, grid, 3, mask, "divide")
    # dense Φ = diag(m / g) · IDFT on the kept voxels
    h = (torch.as_tensor(mask, dtype=torch.float64) / cv._grid_profile(D, "nearest")).numpy().reshape(-1)
    x = np.stack(np.meshgrid(*(np.arange(D) - D // 2,) * 3, indexing="ij"), -1).reshape(-1, 3)[:, ::-1]  # (x, y, z)
    v = grid.voxels[sel].numpy()
    Phi = h[:, None] * np.exp(2j * np.pi * x @ v.T / D) / D ** 3
    C = (Phi @ Sigma[sel][:, sel].numpy() @ Phi.conj().T)
    assert np.abs(C.imag).max() < 1e-10 * np.abs(C).max()
    w, U = np.linalg.eigh(C.real)
    np.testing.assert_allclose(evals, w[::-1][:3], rtol=1e-8)
    for k in range(3):
        assert abs(abs(U[:, -1 - k] @ comps[k].reshape(-1)) - 1) < 1e-5
    np.testing.assert_allclose(comps.reshape(3, -1) @ comps.reshape(3, -1).T, np.eye(3), atol=1e-5)
    assert np.abs(comps[:, mask == 0]).max() == 0


def test_randomized_eigh_matches_eigh():
    rng = np.random.default_rng(6)
    Q, _ = np.linalg.qr(rng.standard_normal((300, 300)))
    lam = np.concatenate([[10.0, 7.0, 5.0, 3.0, 2.0], 0.1 * 10.0 ** -np.linspace(0, 4, 295)])
    M = torch.as_tensor((Q * lam) @ Q.T)
    evals, vecs = cv.randomized_eigh(lambda X: M @ X, 300, 5, oversample=10, n_power=3)
    np.testing.assert_allclose(evals.numpy(), lam[:5], rtol=1e-6)
    np.testing.assert_allclose(np.abs(np.sum(vecs.numpy() * Q[:, :5], 0)), 1.0, atol=1e-6)


# ---------------------------------------------------------------- synthetic linear ensemble
def _blob(D: int, centre, sigma: float) -> np.ndarray:
    c = np.arange(D) - D // 2
    z, y, x = np.meshgrid(c, c, c, indexing="ij")
    return np.exp(-((x - centre[0]) ** 2 + (y - centre[1]) ** 2 + (z - centre[2]) ** 2) / (2 * sigma ** 2))


def _ensemble(D: int, n: int, apix: float = 3.0, seed: int = 1):
    """Exact images of ``X0 + b_1 X_1 + b_2 X_2`` (``X_k`` orthonormal in the mask, ``b ~ N(0, diag(36, 16))``)."""
    s = D / 16
    rng = np.random.default_rng(seed)
    m = default_mask(D)
    mean = (_blob(D, (0, 0, 0), 2.5 * s) + 0.6 * _blob(D, (3 * s, 0, 0), 1.5 * s)) * m
    c1 = (_blob(D, (0, 3 * s, 0), 1.5 * s) - _blob(D, (0, -3 * s, 0), 1.5 * s)) * m
    c2 = (_blob(D, (-3 * s, 0, 2 * s), 1.5 * s) + _blob(D, (s, s, -3 * s), 1.5 * s)) * m
    Q, _ = np.linalg.qr(np.stack([c1, c2]).reshape(2, -1).T)
    comps = Q.T.reshape(2, D, D, D)
    b = rng.standard_normal((n, 2)) * np.array([6.0, 4.0])
    R = Rotation.random(n, random_state=seed + 1).as_matrix().astype(np.float32)
    shifts = rng.uniform(-1, 1, (n, 2)) * apix
    ctf = _ctf(n, rng)
    Ct = {k: torch.as_tensor(v, dtype=torch.float32) for k, v in ctf.items()}
    imgs = [render(FourierProjector(torch.as_tensor(v, dtype=torch.float32)), torch.as_tensor(R),
                   torch.as_tensor(shifts, dtype=torch.float32), Ct, apix).numpy() for v in (mean, *comps)]
    images = imgs[0] + b[:, :1, None] * imgs[1] + b[:, 1:, None] * imgs[2]
    ps = ParticleSet.from_arrays(images.astype(np.float32), R, shifts, ctf=ctf, apix=apix, name="ensemble")
    return ps, mean, comps, b


@pytest.fixture(scope="module")
def ensemble_fit():
    ps, mean, comps, b = _ensemble(20, 4000)
    res = cv.estimate_covariance(ps, mean, latent_dim=3, resolution_A=10.0, noise_var=1e-8)
    return ps, mean, comps, b, res


def test_subspace_and_eigenvalues_recovered(ensemble_fit):
    ps, mean, comps, b, res = ensemble_fit
    angles = np.degrees(subspace_angles(comps.reshape(2, -1).T, res.components[:2].reshape(2, -1).T))
    assert angles.max() < 5.0, angles
    true_var = np.linalg.eigvalsh(np.cov(b.T))[::-1]
    np.testing.assert_allclose(res.eigenvalues[:2], true_var, rtol=0.1)
    assert res.eigenvalues[2] < 0.1 * res.eigenvalues[1]
    flat = res.components.reshape(3, -1)
    np.testing.assert_allclose(flat @ flat.T, np.eye(3), atol=1e-5)
    assert res.radius_px == pytest.approx(20 * 3.0 / 10.0)


def test_projected_latents_follow_the_truth(ensemble_fit):
    ps, mean, comps, b, res = ensemble_fit
    sub = ps[np.arange(400)]
    lat, cov = cv.project_latents(sub, mean, res.components[:2], res.eigenvalues[:2], 1e-4, resolution_A=10.0,
                                  representation=LinearHyperMolecule.empty(20, 2))
    X = np.column_stack([lat, np.ones(400)])
    coef, *_ = np.linalg.lstsq(X, b[:400], rcond=None)
    for k in range(2):
        assert np.corrcoef(X @ coef[:, k], b[:400, k])[0, 1] > 0.98
    assert cov.shape == (400, 2, 2)


def test_low_rank_route_reproduces_the_dense_estimate():
    ps, mean, comps, b = _ensemble(12, 600, apix=4.0, seed=3)
    dense = cv.estimate_covariance(ps, mean, latent_dim=2, resolution_A=12.0, noise_var=1e-8, regularization=0)
    low = cv.low_rank_covariance(ps, mean, latent_dim=2, resolution_A=12.0, column_radius=4.0, noise_var=1e-8,
                                 regularization=0)
    angles = np.degrees(subspace_angles(dense.components.reshape(2, -1).T, low.components.reshape(2, -1).T))
    # equal up to the negative part of the noisy Σ, which the Nyström factor drops
    assert angles.max() < 1.0, angles
    np.testing.assert_allclose(low.eigenvalues, dense.eigenvalues, rtol=0.01)


def test_noise_variance_from_pure_noise():
    D, n, sigma = 16, 300, 2.0
    rng = np.random.default_rng(8)
    R = Rotation.random(n, random_state=8).as_matrix().astype(np.float32)
    ps = ParticleSet.from_arrays((sigma * rng.standard_normal((n, D, D))).astype(np.float32), R, apix=3.0)
    res = cv.estimate_covariance(ps, np.zeros((D, D, D), np.float32), latent_dim=2, resolution_A=12.0)
    assert res.noise_var == pytest.approx(sigma ** 2, rel=0.03)
    np.testing.assert_allclose(res.residual_power, sigma ** 2 * D * D, rtol=0.15)


def test_bad_inputs_are_one_line_errors():
    ps = _random_set(8, 10, seed=1)
    mean = np.zeros((8, 8, 8), np.float32)
    with pytest.raises(InputError, match="finer than Nyquist"):
        cv.estimate_covariance(ps, mean, resolution_A=7.0)
    with pytest.raises(InputError, match="interpolation"):
        cv.estimate_covariance(ps, mean, resolution_A=16.0, interpolation="cubic")
    with pytest.raises(InputError, match="box 8"):
        cv.estimate_covariance(ps, np.zeros((6, 6, 6)), resolution_A=16.0)
    with pytest.raises(InputError, match="solver"):
        cv.estimate_covariance(ps, mean, resolution_A=16.0, solver="lbfgs")
    with pytest.raises(InputError, match="column_radius"):
        cv.low_rank_covariance(ps, mean, resolution_A=16.0, column_radius=5.0)
