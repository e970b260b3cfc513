"""Shifts, the assembled forward model, its consistency with the full-grid pieces, and the fine-DFT branch of backprojection."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from cryoscape.imaging import (
    FourierProjector,
    backproject_images,
    compute_ctf,
    insert_half,
    phase_shift,
    render,
    translate_images,
)
from cryoscape.geometry.fourier import fftn_c, ifftn_c
from cryoscape.imaging._grid import padded_size, recon_points
from cryoscape.imaging.forward import _fine_dft, _fine_ok


def _spot(D: int, x: float, y: float, sigma: float = 1.5) -> torch.Tensor:
    c = torch.arange(D, dtype=torch.float64) - D // 2
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    return torch.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2))


def test_translate_and_phase_shift_move_content_by_plus_t() -> None:
    D, apix = 32, 2.0
    img = _spot(D, 0.0, 0.0)[None]
    t = torch.tensor([[6.0, -4.0]], dtype=torch.float64)  # Å -> (3, -2) px
    expect = _spot(D, 3.0, -2.0)
    assert torch.allclose(translate_images(img, t, apix)[0], expect, atol=1e-8)
    moved = ifftn_c(fftn_c(img, 2) * phase_shift(D, t, apix, dtype=torch.float64), 2)
    assert torch.allclose(moved.real[0], expect, atol=1e-8)
    # sub-pixel translations compose (up to the unpaired Nyquist terms, ~1e-5 here)
    half = torch.tensor([[3.0, -2.0]], dtype=torch.float64)
    twice = translate_images(translate_images(img, half, apix), half, apix)
    assert torch.allclose(twice[0], expect, atol=1e-4)


def test_render_equals_full_grid_composition() -> None:
    D, apix = 32, 2.5
    g = torch.Generator().manual_seed(0)
    vol = torch.randn(D, D, D, generator=g, dtype=torch.float64)
    fp = FourierProjector(vol)
    R = torch.tensor(Rotation.random(4, random_state=3).as_matrix())
    shifts = torch.tensor(np.random.default_rng(1).uniform(-5, 5, (4, 2)))
    ctf = dict(defocus_u_A=torch.tensor([12000.0, 15000, 18000, 21000], dtype=torch.float64),
               defocus_v_A=torch.tensor([11000.0, 14000, 17500, 20000], dtype=torch.float64),
               defocus_angle_deg=torch.tensor([0.0, 20, 45, 80], dtype=torch.float64),
               voltage_kV=300.0, cs_mm=2.7, amplitude_contrast=0.1,
               phase_shift_deg=torch.tensor([0.0, 0, 30, 90], dtype=torch.float64), bfactor_A2=50.0)
    out = render(fp, R, shifts, ctf, apix)
    C = compute_ctf(D, apix, dtype=torch.float64, **ctf)
    T = phase_shift(D, -shifts, apix, dtype=torch.float64)
    ref = ifftn_c(C * T * fp.slice(R), 2)
    assert out.shape == (4, D, D) and out.dtype == torch.float64
    assert torch.allclose(out, ref.real, atol=1e-10 * float(ref.abs().max()))
    # no CTF, no shift: plain projection
    assert torch.allclose(render(fp, R, None, None, apix), fp.project(R))


# --------------------------------------------------------------------------------------------
# the finely sampled low-frequency branch of backproject_images, against explicit sums
# --------------------------------------------------------------------------------------------
def _direct_dft(img: np.ndarray, kx: np.ndarray, ky: np.ndarray) -> np.ndarray:
    """``X(k) = Σ_{y,x} img[b, y, x] exp(-2πi (kx x + ky y) / D)``, x, y from pixel D//2, one term at a time."""
    B, D, _ = img.shape
    out = np.zeros((B, kx.size), dtype=np.complex128)
    for j in range(kx.size):
        for y in range(D):
            for x in range(D):
                out[:, j] += img[:, y, x] * np.exp(-2j * np.pi * (kx[j] * (x - D // 2) + ky[j] * (y - D // 2)) / D)
    return out


def _wavelength_A(voltage_kV: float) -> float:
    """Relativistic electron wavelength λ = h / sqrt(2 m e V (1 + e V / (2 m c²))), from CODATA constants."""
    h, m, e, c = 6.62607015e-34, 9.1093837015e-31, 1.602176634e-19, 2.99792458e8
    V = voltage_kV * 1e3
    return h / np.sqrt(2 * m * e * V * (1 + e * V / (2 * m * c * c))) * 1e10


@pytest.mark.parametrize("D", [8, 10, 16])
def test_fine_dft_equals_the_direct_sum(D: int) -> None:
    rng = np.random.default_rng(D)
    img = rng.standard_normal((3, D, D))
    kx = rng.uniform(-D / 2, D / 2, 25)
    ky = rng.uniform(-D / 2, D / 2, 25)
    kx[:4], ky[:4] = [0.0, 1.0, kx[5], -2.5], [0.0, 0.0, -ky[6], ky[5]]  # DC, an integer, shared values
    ref = _direct_dft(img, kx, ky)
    got64 = _fine_dft(torch.tensor(img), torch.tensor(kx), torch.tensor(ky)).numpy()
    np.testing.assert_allclose(got64, ref, rtol=0, atol=1e-11 * D * D)
    got32 = _fine_dft(torch.tensor(img, dtype=torch.float32), torch.tensor(kx), torch.tensor(ky)).numpy()
    assert got32.dtype == np.complex64
    np.testing.assert_allclose(got32, ref, rtol=0, atol=2e-5 * D * D)


@pytest.mark.parametrize("D, oversampling, radius", [(8, 2.0, 4), (12, 2.0, 6), (16, 1.5, 5)])
def test_fine_points_sample_the_zero_padded_image(D: int, oversampling: float, radius: int) -> None:
    """On the branch's own points the DFT is the centred FFT of the image zero-padded to N (spacing D/N)."""
    N = padded_size(D, oversampling)
    fine = recon_points(D, N, radius)[4]
    img = np.random.default_rng(1).standard_normal((2, D, D))
    padded = np.zeros((2, N, N))
    lo = N // 2 - D // 2
    padded[:, lo:lo + D, lo:lo + D] = img
    ft = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(padded, axes=(1, 2))), axes=(1, 2))
    kx_pad = np.rint(fine.kx.numpy() * N / D).astype(int)
    ky_pad = np.rint(fine.ky.numpy() * N / D).astype(int)
    assert np.allclose(kx_pad * D / N, fine.kx.numpy(), atol=1e-6) and kx_pad.size > 1  # stored as float32
    got = _fine_dft(torch.tensor(img), torch.tensor(kx_pad * D / N), torch.tensor(ky_pad * D / N)).numpy()
    np.testing.assert_allclose(got, ft[:, ky_pad + N // 2, kx_pad + N // 2], rtol=0, atol=1e-10 * D * D)


def test_fine_ok_is_the_ctf_phase_step_at_the_disc_edge() -> None:
    """dχ/dk = 2π λ Δf k for χ = π λ Δf k²: the step per D-spacing 1/(D apix) at k = radius / (N apix)."""
    D, N, apix, radius = 16, 32, 2.0, 8
    dfu = np.array([5000.0, 20000.0, 40000.0, -40000.0])
    dfv = np.array([4000.0, 22000.0, 1000.0, 1000.0])
    ctf = dict(defocus_u_A=torch.tensor(dfu), defocus_v_A=torch.tensor(dfv), defocus_angle_deg=0.0,
               voltage_kV=300.0, cs_mm=2.7, amplitude_contrast=0.1)
    step = 2 * np.pi * _wavelength_A(300.0) * np.maximum(abs(dfu), abs(dfv)) * (radius / (N * apix)) / (D * apix)
    like = torch.zeros(1, dtype=torch.float64)
    for limit in (0.5, 1.0, 2.0):
        got = _fine_ok(4, D, N, apix, radius, ctf, limit, like).numpy()
        np.testing.assert_array_equal(got, (step < limit).astype(float))
    assert _fine_ok(4, D, N, apix, radius, None, 1.0, like).tolist() == [1.0] * 4


def test_backprojection_fine_branch_against_explicit_sums() -> None:
    """No CTF, no shift: coarse D-spaced samples beyond the disc plus fine samples inside, all from direct sums."""
    D, oversampling, radius = 12, 2.0, 6
    N = padded_size(D, oversampling)
    rng = np.random.default_rng(4)
    img = rng.standard_normal((3, D, D))
    weights = np.array([1.0, 0.5, -2.0])
    R = torch.tensor(Rotation.random(3, random_state=5).as_matrix())
    got = backproject_images(torch.tensor(img), R, oversampling=oversampling, fine_radius=radius,
                             weights=torch.tensor(weights))
    _, coarse, _, _, fine = recon_points(D, N, radius)
    ref = None
    for pts in (coarse, fine):
        y = _direct_dft(img, pts.kx.numpy().astype(np.float64), pts.ky.numpy().astype(np.float64))
        vals = np.stack([y.real, y.imag, np.ones(y.shape)], axis=-1) * weights[:, None, None]
        ref = insert_half(torch.tensor(vals), R, D, oversampling, out=ref, points=pts)
    assert torch.allclose(got, ref, rtol=0, atol=1e-9 * float(ref.abs().max()))


def test_badly_sampled_ctf_falls_back_to_the_plain_adjoint() -> None:
    """Where _fine_ok refuses every image, the fine branch gives the fine_radius=0 accumulator."""
    D, apix = 12, 1.0
    rng = np.random.default_rng(6)
    img = torch.tensor(rng.standard_normal((2, D, D)))
    R = torch.tensor(Rotation.random(2, random_state=7).as_matrix())
    shifts = torch.tensor(rng.uniform(-2, 2, (2, 2)))
    ctf = dict(defocus_u_A=torch.tensor([9e5, 1e6]), defocus_v_A=torch.tensor([9e5, 1e6]), defocus_angle_deg=0.0,
               voltage_kV=300.0, cs_mm=2.7, amplitude_contrast=0.1)
    assert _fine_ok(2, D, padded_size(D, 2.0), apix, 6, ctf, 1.0, img).sum() == 0
    fine = backproject_images(img, R, shifts, ctf, apix, fine_radius=6)
    plain = backproject_images(img, R, shifts, ctf, apix, fine_radius=0)
    assert torch.allclose(fine, plain, rtol=0, atol=1e-10 * float(plain.abs().max()))
