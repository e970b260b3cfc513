"""Fourier shell correlation with known answers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cryoscape.errors import OutputExistsError
from cryoscape.geometry.fourier import fftn_c, ifftn_c, radial_shell_index
from cryoscape.geometry.masks import soft_sphere_mask
from cryoscape.validate import fsc as F

D = 48


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(7)


def _shells() -> np.ndarray:
    return radial_shell_index(D, 3).numpy()


def _filtered_noise(rng: np.random.Generator, gain_per_shell: np.ndarray) -> np.ndarray:
    """Real Gaussian field whose FT is white noise times ``gain_per_shell[shell]`` (0 beyond)."""
    sh = _shells()
    W = fftn_c(torch.as_tensor(rng.standard_normal((D, D, D))), 3)
    gain = np.zeros(sh.max() + 1)
    gain[: len(gain_per_shell)] = gain_per_shell
    return ifftn_c(W * torch.as_tensor(gain[sh]), 3).real.numpy()


def _shell_counts() -> np.ndarray:
    return np.bincount(_shells().ravel())[: D // 2 + 1]


def test_identical_volumes_give_one(rng: np.random.Generator) -> None:
    v = rng.standard_normal((D, D, D))
    curve = F.fsc(v, v)
    assert curve.shape == (D // 2 + 1,) and curve.dtype == np.float64
    np.testing.assert_allclose(curve, 1.0, atol=1e-12)
    np.testing.assert_allclose(F.fsc(torch.as_tensor(v, dtype=torch.float32), v), 1.0, atol=1e-6)
    np.testing.assert_allclose(F.fsc(v, -2 * v), -1.0, atol=1e-12)


def test_independent_noise_is_small(rng: np.random.Generator) -> None:
    curve = F.fsc(rng.standard_normal((D, D, D)), rng.standard_normal((D, D, D)))
    sigma = 1.0 / np.sqrt(_shell_counts())
    # Shells 3.. have enough voxels for a Gaussian approximation.
    z = curve[3:] / sigma[3:]
    assert np.abs(z).max() < 4.5
    assert 0.5 < np.std(z) < 1.6


def test_fsc_matches_snr(rng: np.random.Generator) -> None:
    n = D // 2 + 1
    s = np.arange(n)
    snr = 4.0 * np.exp(-((s / 9.0) ** 2))  # per-shell SNR from 4 down to ~0.003
    signal = _filtered_noise(rng, np.sqrt(snr))
    half_a = signal + rng.standard_normal((D, D, D))
    half_b = signal + rng.standard_normal((D, D, D))
    curve = F.fsc(half_a, half_b)
    expected = snr / (1 + snr)
    tol = 4.0 / np.sqrt(_shell_counts())
    assert np.all(np.abs(curve[2:] - expected[2:]) < tol[2:] + 0.02)


def test_fsc_2d_and_mask_and_shape_errors(rng: np.random.Generator) -> None:
    img = rng.standard_normal((32, 32))
    np.testing.assert_allclose(F.fsc(img, img), 1.0)
    assert F.fsc(img, img).shape == (17,)
    v = rng.standard_normal((16, 16, 16))
    m = soft_sphere_mask(16, 5)
    np.testing.assert_allclose(F.fsc(v, v, m), 1.0)
    with pytest.raises(ValueError):
        F.fsc(v, v[:-1])
    with pytest.raises(ValueError):
        F.fsc(v, v, m[:-1])


def test_shell_frequencies() -> None:
    f = F.shell_frequencies(64, 1.5)
    assert f.shape == (33,)
    assert f[0] == 0 and f[-1] == pytest.approx(1 / 3.0)


def test_resolution_at_known_crossing() -> None:
    Dr, apix = 64, 1.5
    curve = np.ones(Dr // 2 + 1)
    curve[10:] = [0.2, 0.1] + [0.0] * (len(curve) - 12)
    f = F.shell_frequencies(Dr, apix)
    f_cross = f[10] + (0.2 - 0.143) / (0.2 - 0.1) * (f[11] - f[10])
    assert F.resolution_at(curve, Dr, apix) == pytest.approx(1 / f_cross)
    f_half = f[9] + (1 - 0.5) / (1 - 0.2) * (f[10] - f[9])
    assert F.resolution_at(curve, Dr, apix, threshold=0.5) == pytest.approx(1 / f_half)
    # Never crosses: Nyquist.
    assert F.resolution_at(np.ones(33), Dr, apix) == pytest.approx(3.0)
    # A dip at shell 0 is ignored; later recoveries are ignored after the first crossing.
    c2 = np.ones(33)
    c2[0] = 0.0
    c2[5] = 0.0
    assert F.resolution_at(c2, Dr, apix) == pytest.approx(1 / (f[4] + (1 - 0.143) * (f[5] - f[4])))


def test_resolution_on_noisy_half_maps(rng: np.random.Generator) -> None:
    # Signal only up to shell 10, lots of it: resolution ≈ shell 10.5 ± 1.
    gain = np.zeros(D // 2 + 1)
    gain[:11] = 5.0
    signal = _filtered_noise(rng, gain)
    a = signal + rng.standard_normal((D, D, D))
    b = signal + rng.standard_normal((D, D, D))
    res = F.resolution_at(F.fsc(a, b), D, 2.0)
    assert D * 2.0 / 12 < res < D * 2.0 / 9.5


def test_fsc_auc() -> None:
    assert F.fsc_auc(np.ones(33)) == pytest.approx(1.0)
    assert F.fsc_auc(np.zeros(33)) == pytest.approx(0.0)
    assert F.fsc_auc(np.linspace(1, 0, 25)) == pytest.approx(0.5)
    step = np.r_[np.ones(17), np.zeros(16)]  # drops between x = 0.5 and 0.53125
    assert F.fsc_auc(step) == pytest.approx(0.5 + 0.5 / 32)


def test_phase_randomise_keeps_amplitudes(rng: np.random.Generator) -> None:
    v = rng.standard_normal((D, D, D))
    r = F.phase_randomise(v, 6, rng)
    A, B = fftn_c(torch.as_tensor(v), 3), fftn_c(r, 3)
    torch.testing.assert_close(A.abs(), B.abs())
    low = torch.as_tensor(_shells() < 6)
    torch.testing.assert_close(A[low], B[low])
    curve = F.fsc(v, r)
    np.testing.assert_allclose(curve[:6], 1.0, atol=1e-10)
    assert np.abs(curve[8:]).max() < 0.3


def test_corrected_fsc_removes_mask_correlation(rng: np.random.Generator) -> None:
    # Strong low-pass signal everywhere, a tight hard mask that cuts through it:
    # the mask edge leaks correlated signal into high shells.
    gain = np.zeros(D // 2 + 1)
    gain[:9] = 1.0
    signal = _filtered_noise(rng, gain)
    signal /= signal.std()
    a = signal + 0.5 * rng.standard_normal((D, D, D))
    b = signal + 0.5 * rng.standard_normal((D, D, D))
    mask = soft_sphere_mask(D, 12, edge_px=0)
    res = F.corrected_masked_fsc(a, b, mask, rng=np.random.default_rng(1))
    s0 = res.randomise_from_shell
    assert s0 == 9 and res.correct_from_shell == 11
    np.testing.assert_allclose(res.corrected[:11], res.masked[:11])
    hi = slice(res.correct_from_shell, None)
    assert res.masked[hi].mean() > 0.3  # inflated by the mask
    assert abs(res.corrected[hi].mean()) < 0.05
    assert np.abs(res.corrected[hi]).max() < 0.25
    assert np.abs(res.unmasked[hi]).max() < 0.15


def test_corrected_fsc_with_loose_mask_matches_unmasked(rng: np.random.Generator) -> None:
    n = D // 2 + 1
    snr = 3.0 * np.exp(-((np.arange(n) / 8.0) ** 2))
    envelope = soft_sphere_mask(D, 14, 3).double().numpy()
    signal = _filtered_noise(rng, np.sqrt(snr)) * envelope
    a = signal + rng.standard_normal((D, D, D)) * envelope
    b = signal + rng.standard_normal((D, D, D)) * envelope
    loose = soft_sphere_mask(D, 18, 4)
    res = F.corrected_masked_fsc(a, b, loose, rng=np.random.default_rng(2))
    assert 0 < res.randomise_from_shell < n
    tol = 4.0 / np.sqrt(_shell_counts()) + 0.03
    assert np.all(np.abs(res.corrected - res.unmasked)[1:] < tol[1:])


def test_corrected_fsc_never_below_threshold(rng: np.random.Generator) -> None:
    v = rng.standard_normal((16, 16, 16))
    res = F.corrected_masked_fsc(v, v, soft_sphere_mask(16, 5))
    assert res.randomise_from_shell == 9
    np.testing.assert_allclose(res.corrected, res.masked)


def test_write_table_and_plot(tmp_path, rng: np.random.Generator) -> None:
    curves = {"a": np.linspace(1, 0, 17), "b": np.ones(17)}
    csv = F.write_fsc_table(tmp_path / "fsc.csv", curves, 32, 2.0)
    lines = csv.read_text().splitlines()
    assert lines[0] == "shell,frequency_invA,resolution_A,a,b" and len(lines) == 18
    assert lines[-1].startswith("16,0.25,4.0000,0.000000,1.000000")
    js = json.loads(F.write_fsc_table(tmp_path / "fsc.json", curves, 32, 2.0).read_text())
    assert js["resolution_A"]["b"]["0.143"] == pytest.approx(4.0)
    assert len(js["curves"]["a"]) == 17
    with pytest.raises(OutputExistsError):
        F.write_fsc_table(tmp_path / "fsc.csv", curves, 32, 2.0)
    with pytest.raises(ValueError):
        F.write_fsc_table(tmp_path / "bad.csv", {"x": np.ones(5)}, 32, 2.0)
    png = F.save_fsc_plot(tmp_path / "fsc.png", curves, 32, 2.0)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    F.save_fsc_plot(tmp_path / "fsc.png", curves, 32, 2.0, title="t", force=True)
