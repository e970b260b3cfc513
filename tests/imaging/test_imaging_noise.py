"""Noise at a requested SNR (variance ratio inside the particle circle)."""

from __future__ import annotations

import torch

from cryoscape.imaging import add_noise, noise_std_for_snr
from cryoscape.imaging.noise import circle_mask_2d, masked_variance


def _clean(B: int, D: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    c = torch.arange(D, dtype=torch.float32) - D // 2
    y, x = torch.meshgrid(c, c, indexing="ij")
    off = (torch.rand(B, 2, generator=g) - 0.5) * 10
    r2 = (x - off[:, 0, None, None]) ** 2 + (y - off[:, 1, None, None]) ** 2
    return torch.exp(-r2 / 50.0)


def _snr(clean: torch.Tensor, noisy: torch.Tensor, radius=None) -> float:
    m = circle_mask_2d(clean.shape[-1], radius)
    return float(masked_variance(clean, m).mean() / masked_variance(noisy - clean, m).mean())


def test_white_noise_snr() -> None:
    clean = _clean(256, 64)
    g = torch.Generator().manual_seed(1)
    for snr in (0.05, 1.0):
        noisy = add_noise(clean, snr, generator=g)
        assert abs(_snr(clean, noisy) / snr - 1) < 0.03
    noisy = add_noise(clean, 0.1, radius_px=20, generator=g)
    assert abs(_snr(clean, noisy, 20) / 0.1 - 1) < 0.03
    # explicit noise level and per-image scaling
    sd = noise_std_for_snr(clean, 0.1)
    noisy = add_noise(clean, None, noise_std=sd, generator=g)
    assert abs(_snr(clean, noisy) / 0.1 - 1) < 0.03
    noisy = add_noise(clean, 0.1, generator=g, per_image=True)
    m = circle_mask_2d(64)
    ratio = masked_variance(clean, m) / masked_variance(noisy - clean, m)
    assert abs(float(ratio.mean()) / 0.1 - 1) < 0.05


def test_coloured_noise_snr_and_spectrum() -> None:
    clean = _clean(256, 64)
    D = 64
    c = torch.arange(D, dtype=torch.float32) - D // 2
    k2 = (c[:, None] ** 2 + c[None, :] ** 2) / D**2
    psd = 1.0 / (1.0 + k2 / 0.01)
    g = torch.Generator().manual_seed(2)
    noisy = add_noise(clean, 0.1, generator=g, psd=psd)
    noise = noisy - clean
    assert abs(_snr(clean, noisy) / 0.1 - 1) < 0.05
    assert noise.dtype == torch.float32
    spec = torch.fft.fftshift(torch.fft.fft2(noise).abs().pow(2).mean(0))
    # low frequencies carry more power than high ones, as the PSD asks
    assert spec[D // 2, D // 2 + 2] > 5 * spec[D // 2, D // 2 + 30]
