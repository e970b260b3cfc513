"""Centred FFTs, frequency grids, radial shells and masks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cryoscape.geometry import fourier as F
from cryoscape.geometry.masks import circle_mask, radius_grid, soft_sphere_mask


@pytest.mark.parametrize("ndim", [2, 3])
def test_fft_of_centred_delta_is_constant(ndim: int) -> None:
    D = 16
    x = torch.zeros([D] * ndim)
    x[(D // 2,) * ndim] = 1.0
    X = F.fftn_c(x, ndim)
    torch.testing.assert_close(X, torch.ones_like(X))
    back = F.ifftn_c(X, ndim)
    torch.testing.assert_close(back.real, x)


def test_constant_image_has_only_dc() -> None:
    D = 12
    X = F.fftn_c(torch.ones(3, D, D, dtype=torch.float64), 2)  # leading batch dim
    assert X.shape == (3, D, D)
    assert X[:, D // 2, D // 2].real.allclose(torch.full((3,), float(D * D), dtype=torch.float64))
    X[:, D // 2, D // 2] = 0
    assert X.abs().max() < 1e-9


def test_shift_theorem_sign() -> None:
    # A delta at centre + t has FT exp(-2πi k·t) on the centred grid.
    D, apix = 16, 2.0
    x = torch.zeros(D, D, dtype=torch.float64)
    x[D // 2 + 1, D // 2 + 3] = 1.0  # y = +1 px, x = +3 px
    ky, kx = F.freq_grid_2d(D, apix, dtype=torch.float64)
    expected = torch.exp(-2j * math.pi * (kx * 3 * apix + ky * 1 * apix))
    torch.testing.assert_close(F.fftn_c(x, 2), expected)


def test_freqs() -> None:
    f = F.fft_freqs(8, apix=2.0)
    np.testing.assert_allclose(f.numpy(), (np.arange(8) - 4) / 16.0)
    assert f[4] == 0 and f[0] == pytest.approx(-1 / (2 * 2.0))
    ky, kx = F.freq_grid_2d(8, 2.0, rfft=True)
    assert ky.shape == kx.shape == (8, 5)
    np.testing.assert_allclose(kx[0].numpy(), np.arange(5) / 16.0)
    kz, ky, kx = F.freq_grid_3d(6)
    assert kz.shape == (6, 6, 6) and kz[0, 3, 3] == pytest.approx(-0.5) and kx[3, 3, 0] == pytest.approx(-0.5)


@pytest.mark.parametrize("ndim", [2, 3])
def test_rfft_matches_full_fft(ndim: int) -> None:
    D = 10
    x = torch.randn([2] + [D] * ndim, dtype=torch.float64)
    full = F.fftn_c(x, ndim)
    half = F.rfftn_c(x, ndim)
    assert half.shape[-1] == D // 2 + 1
    torch.testing.assert_close(half[..., :-1], full[..., D // 2:])
    torch.testing.assert_close(half[..., -1], full[..., 0])  # +Nyquist aliases -Nyquist
    torch.testing.assert_close(F.irfftn_c(half, ndim, D), x)


def test_radial_shell_index() -> None:
    D = 16
    s = F.radial_shell_index(D, 2)
    assert s.dtype == torch.int64 and s.shape == (D, D)
    assert s[D // 2, D // 2] == 0
    assert s[D // 2, 0] == D // 2 and s[0, D // 2] == D // 2
    assert s[D // 2 + 3, D // 2 + 4] == 5
    assert torch.equal(F.radial_shell_index((4, D, D, D), 3), F.radial_shell_index(D, 3))
    assert F.radial_shell_index(D, 3, rfft=True).shape == (D, D, D // 2 + 1)
    with pytest.raises(ValueError):
        F.radial_shell_index((8, 10), 2)


def test_shell_average_of_radial_function() -> None:
    D = 32
    shells = F.radial_shell_index(D, 3)
    kz, ky, kx = F.freq_grid_3d(D, dtype=torch.float64)
    r_px = torch.sqrt(kz**2 + ky**2 + kx**2) * D
    values = torch.stack([r_px, 2 * r_px**2])  # batch of two radial functions
    n = D // 2 + 1
    avg = F.shell_average(values, shells, n)
    assert avg.shape == (2, n)
    # Within a shell r ∈ [s - 1/2, s + 1/2): the mean of r is close to s.
    np.testing.assert_allclose(avg[0, 1:].numpy(), np.arange(1, n), atol=0.3)
    np.testing.assert_allclose(avg[0, 7:].numpy(), np.arange(7, n), atol=0.1)
    np.testing.assert_allclose(avg[1, 4:].numpy(), 2 * np.arange(4, n) ** 2, rtol=0.05)
    # A function of the shell index is reproduced exactly.
    exact = F.shell_average(torch.cos(shells.double()), shells, n)
    np.testing.assert_allclose(exact.numpy(), np.cos(np.arange(n)), atol=1e-12)


def test_shell_sum_counts_and_complex() -> None:
    D = 16
    shells = F.radial_shell_index(D, 2)
    counts = F.shell_sum(torch.ones(D, D), shells, D // 2 + 1)
    assert counts[0] == 1 and counts[1] == 8 and counts.sum() == (shells <= D // 2).sum()
    z = F.shell_average(torch.full((D, D), 1 + 2j), shells, D // 2 + 1)
    torch.testing.assert_close(z, torch.full((D // 2 + 1,), 1 + 2j))


def test_soft_sphere_mask() -> None:
    D = 32
    m = soft_sphere_mask(D, radius_px=8, edge_px=4)
    assert m.dtype == torch.float32 and m.shape == (D, D, D)
    c = D // 2
    assert m[c, c, c] == 1 and m[c, c, c + 8] == 1
    assert m[c, c, c + 10] == pytest.approx(0.5, abs=1e-6)
    assert m[c, c, c + 12] == 0 and m[0, 0, 0] == 0
    assert torch.all((m >= 0) & (m <= 1))
    m2 = soft_sphere_mask(D, 8, edge_px=0, ndim=2)
    assert m2.shape == (D, D) and set(m2.unique().tolist()) == {0.0, 1.0}
    # Radially monotone.
    r = radius_grid(D, 3)
    order = torch.argsort(r.flatten())
    assert torch.all(torch.diff(m.flatten()[order]) <= 1e-7)


def test_circle_mask() -> None:
    D = 16
    m = circle_mask(D)
    assert m.dtype == torch.bool and m.shape == (D, D)
    assert m[D // 2, 0] and m[0, D // 2] and not m[0, 0]
    assert circle_mask(D, 2).sum() == 13
