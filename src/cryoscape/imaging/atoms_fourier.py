"""Fourier coefficients of Gaussian-atom projections, analytically, at chosen image frequencies.

For atoms ``a`` of mass ``w_a`` and width ``σ_a`` (Å) at particle-frame positions
``(x_a, y_a)`` (Å from the centre pixel ``D // 2``), the centred DFT of the
pixel-integrated projection image (:func:`.gaussian_atoms.project_atoms`) at
integer frequency ``k = (kx, ky)`` (cycles per box) is, for atoms well inside
the box and up to aliasing (below),

    ``F(k) = sinc(kx / D) sinc(ky / D) Σ_a w_a exp(−2π² σ_a² |q|²) exp(−2πi q · (x_a, y_a))``

with ``q = k / (D · apix)`` (cycles/Å) and ``sinc(t) = sin(πt) / (πt)`` the
pixel integration. The drawn image also holds aliases, the density at
``q ± 1/apix``: relative to the coefficient about
``exp(−2π²σ² ((1/apix − |q|)² − |q|²))``, below 1e-4 up to half the Nyquist
frequency for ``σ = 1`` px but of the order of the coefficient itself at Nyquist;
here there are none (the band-limited projection). Every factor is separable in ``kx`` and ``ky``, so the
coefficients on a grid of distinct ``kx`` and ``ky`` values are one batched
matrix product ``[Ky, A] @ [A, Kx]`` per image; the points are gathered from
it. At a low frequency cutoff (a few distinct values per axis) this is far
cheaper than drawing the image and taking its FFT.
"""

from __future__ import annotations

import math

import torch

__all__ = ["atom_coefficients", "atom_coefficient_derivatives"]


def _phasors(pos_A: torch.Tensor, sigma_A: torch.Tensor, freqs: torch.Tensor, box_A: float,
             scale: torch.Tensor | None) -> torch.Tensor:
    """``[B, A, F]`` complex ``scale · exp(−2π²σ²q²) exp(−2πi q pos)`` for 1D frequencies ``freqs`` (cycles/box)."""
    q = freqs / box_A  # cycles/Å
    damp = torch.exp(-2.0 * math.pi**2 * (sigma_A[:, None] * q[None, :]) ** 2)  # [A, F]
    if scale is not None:
        damp = damp * scale[..., None]
    angle = (-2.0 * math.pi) * pos_A[..., None] * q  # [B, A, F]
    return torch.polar(torch.ones_like(angle), angle) * damp


def atom_coefficients(coords_A: torch.Tensor, amplitudes: torch.Tensor, sigma_A: torch.Tensor,
                      rotations: torch.Tensor, D: int, apix: float, kx: torch.Tensor, ky: torch.Tensor
                      ) -> torch.Tensor:
    """Centred DFT coefficients ``[B, P]`` (complex) of the projections at the points ``(kx, ky)`` (cycles per box).

    Args:
        coords_A: ``[A, 3]`` or per-image ``[B, A, 3]`` (x, y, z) Å from the box centre.
        amplitudes: ``[A]`` masses; sigma_A: ``[A]`` widths (Å).
        rotations: ``[B, 3, 3]``; atom ``c`` lands at particle-frame ``R c`` (as :func:`project_atoms`).
        kx, ky: ``[P]`` integer frequencies (any real values work; the grid is over their distinct values).
    Differentiable in the coordinates, amplitudes, widths and rotations.
    """
    ex, ey, (ux, ix, uy, iy), _ = _factors(coords_A, amplitudes, sigma_A, rotations, D, apix, kx, ky)
    grid = torch.matmul(ey.transpose(-1, -2), ex)  # [B, Uy, Ux]
    return grid[:, iy, ix] * _pixel_factor(ux, ix, uy, iy, D)


def atom_coefficient_derivatives(coords_A: torch.Tensor, amplitudes: torch.Tensor, sigma_A: torch.Tensor,
                                 rotations: torch.Tensor, D: int, apix: float, kx: torch.Tensor, ky: torch.Tensor,
                                 directions_A: torch.Tensor) -> torch.Tensor:
    """Directional derivatives ``[B, P, K]`` of :func:`atom_coefficients` when the atoms move along
    ``directions_A`` ``[K, A, 3]`` or per image ``[B, K, A, 3]`` (Å per unit): ``∂F/∂t_k`` at
    ``coords_A + Σ_k t_k directions_A[k]``, ``t = 0``.

    Analytic: ``∂F/∂t_k = −2πi Σ_a F_a(k) (q_x dx_ak + q_y dy_ak)`` with ``(dx, dy)_ak`` the particle-frame
    motion of atom ``a``; separable like the coefficients themselves.
    """
    ex, ey, (ux, ix, uy, iy), (R, box_A) = _factors(coords_A, amplitudes, sigma_A, rotations, D, apix, kx, ky)
    dirs = directions_A.to(coords_A.dtype)
    dirs = dirs[None] if dirs.ndim == 3 else dirs
    d = torch.matmul(dirs, R[:, None, :2, :].transpose(-1, -2))  # [B, K, A, 2] particle-frame motion
    each = torch.view_as_real(ey[:, :, iy] * ex[:, :, ix])  # [B, A, P, 2]: every atom's term at every point
    flat = each.reshape(each.shape[0], each.shape[1], -1)  # [B, A, 2P] (real matrix products are fastest)
    P = ix.shape[0]
    gx = torch.view_as_complex(torch.matmul(d[..., 0].contiguous(), flat).reshape(-1, d.shape[1], P, 2).contiguous())
    gy = torch.view_as_complex(torch.matmul(d[..., 1].contiguous(), flat).reshape(-1, d.shape[1], P, 2).contiguous())
    qx, qy = (ux / box_A)[ix], (uy / box_A)[iy]  # [P]
    out = (gx * qx + gy * qy) * (-2j * math.pi) * _pixel_factor(ux, ix, uy, iy, D)  # [B, K, P]
    return out.transpose(1, 2)


def _factors(coords_A, amplitudes, sigma_A, rotations, D: int, apix: float, kx, ky):
    """The separable factors ``ex [B, A, Ux]`` (with the masses), ``ey [B, A, Uy]``, the frequency grids and
    ``(R, box_A)``."""
    R = rotations.reshape(-1, 3, 3).to(coords_A.dtype)
    xy = torch.matmul(coords_A, R[:, :2, :].transpose(-1, -2))  # [B, A, 2]
    box_A = D * float(apix)
    ux, ix = torch.unique(kx.to(coords_A.dtype), return_inverse=True)
    uy, iy = torch.unique(ky.to(coords_A.dtype), return_inverse=True)
    sig = sigma_A.to(coords_A.dtype)
    ex = _phasors(xy[..., 0], sig, ux, box_A, amplitudes.to(coords_A.dtype))
    ey = _phasors(xy[..., 1], sig, uy, box_A, None)
    return ex, ey, (ux, ix, uy, iy), (R, box_A)


def _pixel_factor(ux, ix, uy, iy, D: int) -> torch.Tensor:
    """``sinc(kx / D) sinc(ky / D)`` at the points: the pixel integration."""
    return torch.sinc(ux / D)[ix] * torch.sinc(uy / D)[iy]
