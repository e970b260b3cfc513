"""CTF against closed forms: zeros, sign at DC, astigmatism direction, phase plate, envelope."""

from __future__ import annotations

import math

import numpy as np
import torch

from cryoscape.imaging import compute_ctf, ctf_from_freqs, electron_wavelength_A


def test_wavelength() -> None:
    assert abs(electron_wavelength_A(300.0) - 0.019687) < 1e-5
    assert abs(electron_wavelength_A(200.0) - 0.025079) < 1e-5
    t = electron_wavelength_A(torch.tensor([300.0, 200.0], dtype=torch.float64))
    assert torch.allclose(t, torch.tensor([0.019687, 0.025079], dtype=torch.float64), atol=1e-5)


def _kx(k: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    kx = torch.tensor(k, dtype=torch.float64)
    return kx, torch.zeros_like(kx)


def test_zeros_and_sign_without_cs() -> None:
    df, kv = 20000.0, 300.0
    lam = electron_wavelength_A(kv)
    n = np.arange(1, 6)
    kx, ky = _kx(np.sqrt(n / (lam * df)))
    c = ctf_from_freqs(kx, ky, df, df, 0.0, kv, 0.0, 0.0)
    assert c.shape == (1, 5)
    assert c.abs().max() < 1e-9
    # first lobe positive (RELION sign): maximum +1 at k² = 1/(2 λ Δf), then alternating
    kx, ky = _kx(np.sqrt((n - 0.5) / (lam * df)))
    c = ctf_from_freqs(kx, ky, df, df, 0.0, kv, 0.0, 0.0)[0]
    assert torch.allclose(c, torch.tensor([1.0, -1, 1, -1, 1], dtype=torch.float64), atol=1e-9)


def test_dc_equals_amplitude_contrast() -> None:
    c = compute_ctf(32, 1.5, torch.tensor([15000.0, 30000.0]), torch.tensor([14000.0, 25000.0]),
                    torch.tensor([10.0, 70.0]), 300.0, 2.7, 0.07)
    assert c.shape == (2, 32, 32) and c.dtype == torch.float32
    assert torch.allclose(c[:, 16, 16], torch.tensor([0.07, 0.07]), atol=1e-6)
    # first lobe at low frequency is above Q (same sign as amplitude contrast)
    assert (c[:, 16, 17] > 0.07).all()


def test_astigmatism_direction() -> None:
    dfu, dfv, kv = 25000.0, 15000.0, 300.0
    lam = electron_wavelength_A(kv)
    k_u = math.sqrt(1 / (lam * dfu))  # first zero for defocus dfU
    k_v = math.sqrt(1 / (lam * dfv))
    for ang in (0.0, 30.0, 90.0, 135.0):
        a = math.radians(ang)
        along_u = ctf_from_freqs(torch.tensor([k_u * math.cos(a)], dtype=torch.float64),
                                 torch.tensor([k_u * math.sin(a)], dtype=torch.float64),
                                 dfu, dfv, ang, kv, 0.0, 0.0)
        along_v = ctf_from_freqs(torch.tensor([-k_v * math.sin(a)], dtype=torch.float64),
                                 torch.tensor([k_v * math.cos(a)], dtype=torch.float64),
                                 dfu, dfv, ang, kv, 0.0, 0.0)
        assert abs(float(along_u)) < 1e-9 and abs(float(along_v)) < 1e-9
    # on the centred grid, +ky is a row below the centre: angle 90° puts dfU along the rows
    D, apix = 64, 2.0
    grid = compute_ctf(D, apix, dfu, dfv, 90.0, kv, 0.0, 0.0, dtype=torch.float64)[0]
    m = 5
    k = m / (D * apix)
    expect_u = math.sin(math.pi * lam * dfu * k * k)
    expect_v = math.sin(math.pi * lam * dfv * k * k)
    assert abs(float(grid[D // 2 + m, D // 2]) - expect_u) < 1e-9
    assert abs(float(grid[D // 2, D // 2 + m]) - expect_v) < 1e-9


def test_phase_shift_and_bfactor() -> None:
    df, kv = 20000.0, 300.0
    lam = electron_wavelength_A(kv)
    k = torch.linspace(0, 0.2, 50, dtype=torch.float64)
    zero = torch.zeros_like(k)
    c = ctf_from_freqs(k, zero, df, df, 0.0, kv, 0.0, 0.0, phase_shift_deg=90.0)[0]
    assert torch.allclose(c, torch.cos(math.pi * lam * df * k * k), atol=1e-9)
    assert abs(float(c[0]) - 1.0) < 1e-12
    b = ctf_from_freqs(k, zero, df, df, 0.0, kv, 2.7, 0.1, bfactor_A2=100.0)[0]
    nb = ctf_from_freqs(k, zero, df, df, 0.0, kv, 2.7, 0.1)[0]
    assert torch.allclose(b, nb * torch.exp(-25.0 * k * k), atol=1e-12)
    # spherical aberration enters with the opposite sign of defocus
    cs = ctf_from_freqs(k, zero, 0.0, 0.0, 0.0, kv, 2.7, 0.0)[0]
    assert torch.allclose(cs, -torch.sin(0.5 * math.pi * 2.7e7 * lam**3 * k**4), atol=1e-9)
