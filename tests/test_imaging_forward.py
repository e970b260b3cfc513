"""Shifts, the assembled forward model, and its consistency with the full-grid pieces."""

from __future__ import annotations

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from cryoscape.imaging import (
    FourierProjector,
    compute_ctf,
    phase_shift,
    render,
    translate_images,
)
from cryoscape.geometry.fourier import fftn_c, ifftn_c


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
