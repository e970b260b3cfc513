"""Diffusion maps and spectral volumes: a curve's parameter, volumes regressed on known coordinates, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation
from scipy.stats import spearmanr

from cryoscape.analysis.spectral import diffusion_map, spectral_volumes
from cryoscape.errors import InputError
from cryoscape.imaging import FourierProjector, render
from cryoscape.particles.particle_set import ParticleSet
from cryoscape.reconstruct.backprojection import default_mask


def _arc(n: int, noise: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Points on a helical arc in 3D (parameter ``t`` in [0, 1], sampled non-uniformly) plus noise."""
    rng = np.random.default_rng(seed)
    t = np.sort(rng.beta(1.5, 1.0, n))
    pts = np.column_stack([np.cos(2.5 * t), np.sin(2.5 * t), 0.6 * t])
    return pts + noise * rng.standard_normal(pts.shape), t


def test_diffusion_map_orders_a_noisy_arc():
    pts, t = _arc(800, 0.01)
    dm = diffusion_map(pts, 3, n_neighbors=12, alpha=1.0)
    assert abs(spearmanr(dm.coordinates[:, 0], t).statistic) > 0.99
    assert dm.coordinates.shape == (800, 3) and np.all(np.diff(dm.eigenvalues) <= 1e-12)
    assert 0 < dm.eigenvalues[0] < 1 and dm.epsilon > 0
    np.testing.assert_allclose(np.mean(dm.eigenvectors ** 2, axis=0), 1.0, rtol=1e-8)
    # the first coordinate is the slowest mode: the second (cos 2πs-like) is not monotone in t
    assert abs(spearmanr(dm.coordinates[:, 1], t).statistic) < 0.5


def test_diffusion_map_eigenpairs_match_a_dense_markov_matrix():
    pts, _ = _arc(120, 0.02, seed=3)
    k, eps, alpha = 119, 0.05, 0.5  # full graph: the dense kernel is the reference
    dm = diffusion_map(pts, 4, n_neighbors=k, alpha=alpha, epsilon=eps)
    d2 = ((pts[:, None, :] - pts[None, :, :]) ** 2).sum(-1)
    K = np.exp(-d2 / eps)
    q = K.sum(1)
    Ka = K / np.outer(q, q) ** alpha
    P = Ka / Ka.sum(1, keepdims=True)
    vals = np.sort(np.linalg.eigvals(P).real)[::-1]
    np.testing.assert_allclose(dm.eigenvalues, vals[1:5], rtol=1e-8)
    for j in range(4):  # P ψ = λ ψ
        np.testing.assert_allclose(P @ dm.eigenvectors[:, j], dm.eigenvalues[j] * dm.eigenvectors[:, j], atol=1e-8)


def test_landmark_extension_reproduces_the_eigen_equation():
    """A point that duplicates a landmark has that landmark's kernel row, so its Nyström value
    ``λ⁻¹ Σ_l P(x, l) ψ(l)`` must equal ``ψ`` at the landmark (``P ψ = λ ψ``) on a full graph."""
    pts, _ = _arc(150, 0.02, seed=5)
    z = np.vstack([pts, pts])
    dm = diffusion_map(z, 3, n_neighbors=199, alpha=0.5, epsilon=0.05, max_points=200)
    assert dm.landmarks is not None and dm.landmarks.size == 200
    is_land = np.zeros(300, bool)
    is_land[dm.landmarks] = True
    twin = (np.arange(300) + 150) % 300
    probe = np.flatnonzero(~is_land & is_land[twin])
    assert probe.size > 20
    np.testing.assert_allclose(dm.eigenvectors[probe], dm.eigenvectors[twin[probe]], atol=1e-8)
    np.testing.assert_allclose(np.mean(dm.eigenvectors ** 2, axis=0), 1.0, rtol=1e-8)


def test_landmark_map_agrees_with_the_direct_one():
    pts, t = _arc(3000, 0.01, seed=2)
    direct = diffusion_map(pts, 2, n_neighbors=12)
    assert direct.landmarks is None
    lm = diffusion_map(pts, 2, n_neighbors=12, max_points=800)
    assert lm.coordinates.shape == (3000, 2)
    assert abs(np.corrcoef(lm.coordinates[:, 0], direct.coordinates[:, 0])[0, 1]) > 0.99
    assert abs(spearmanr(lm.coordinates[:, 0], t).statistic) > 0.99
    np.testing.assert_allclose(lm.eigenvalues[0], direct.eigenvalues[0], atol=0.02)


def test_diffusion_map_errors():
    with pytest.raises(InputError, match="n_neighbors"):
        diffusion_map(np.random.default_rng(0).standard_normal((10, 2)), 2, n_neighbors=10)
    with pytest.raises(InputError, match="NaN"):
        diffusion_map(np.array([[0.0], [np.nan], [1.0], [2.0]]), 1, n_neighbors=2)
    with pytest.raises(InputError, match="bandwidth"):
        diffusion_map(np.zeros((20, 2)), 2, n_neighbors=3)
    with pytest.raises(InputError, match="max_points"):
        diffusion_map(np.random.default_rng(0).standard_normal((50, 2)), 2, n_neighbors=15, max_points=15)


def _blob(D: int, centre, sigma: float) -> np.ndarray:
    c = np.arange(D) - D // 2
    z, y, x = np.meshgrid(c, c, c, indexing="ij")
    return np.exp(-((x - centre[0]) ** 2 + (y - centre[1]) ** 2 + (z - centre[2]) ** 2) / (2 * sigma ** 2))


def test_spectral_volumes_recover_linear_ensemble():
    D, n, apix = 16, 600, 3.0
    rng = np.random.default_rng(2)
    m = default_mask(D)
    w0 = (_blob(D, (0, 0, 0), 3.0) + 0.5 * _blob(D, (3, 0, 0), 2.0)) * m
    w = np.stack([_blob(D, (0, 3, 0), 2.0) - _blob(D, (0, -3, 0), 2.0), _blob(D, (-3, 0, 2), 2.0)]) * m
    psi = rng.uniform(-1, 1, (n, 2))
    R = Rotation.random(n, random_state=4).as_matrix().astype(np.float32)
    shifts = rng.uniform(-1, 1, (n, 2)) * apix
    df = rng.uniform(4000, 8000, n)
    ctf = {"defocus_u_A": df, "defocus_v_A": df, "defocus_angle_deg": np.zeros(n), "voltage_kV": np.full(n, 300.0),
           "cs_mm": np.full(n, 2.7), "amplitude_contrast": np.full(n, 0.1)}
    Ct = {k: torch.as_tensor(v, dtype=torch.float32) for k, v in ctf.items()}
    imgs = [render(FourierProjector(torch.as_tensor(v, dtype=torch.float32)), torch.as_tensor(R),
                   torch.as_tensor(shifts, dtype=torch.float32), Ct, apix).numpy() for v in (w0, *w)]
    images = imgs[0] + psi[:, :1, None] * imgs[1] + psi[:, 1:, None] * imgs[2]
    ps = ParticleSet.from_arrays(images.astype(np.float32), R, shifts, ctf=ctf, apix=apix)
    sv = spectral_volumes(ps, psi, ridge=1e-4)
    inner = default_mask(D) > 0.99
    for est, ref in [(sv.mean, w0), (sv.volumes[0], w[0]), (sv.volumes[1], w[1])]:
        err = np.linalg.norm((est - ref)[inner]) / np.linalg.norm(ref[inner])
        assert err < 0.08, err
    v = sv.volume([0.5, -0.2])
    np.testing.assert_allclose(v, sv.mean + 0.5 * sv.volumes[0] - 0.2 * sv.volumes[1], atol=1e-5)
    with pytest.raises(InputError, match="one row per particle"):
        spectral_volumes(ps, psi[:10])
