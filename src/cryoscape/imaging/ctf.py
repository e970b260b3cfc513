"""Contrast transfer function (RELION's convention).

With frequency ``k`` in cycles/Å at angle ``α`` from +x (``α = atan2(ky, kx)``),
underfocus positive defocus ``Δf(α) = (dfU + dfV)/2 + (dfU - dfV)/2 · cos(2 (α - θ))``
(``θ`` the astigmatism angle, so ``Δf = dfU`` along direction ``θ``), wavelength
``λ`` (Å), ``Cs`` in Å (``cs_mm · 1e7``), amplitude-contrast phase
``w = atan(Q / sqrt(1 - Q²))`` and phase shift ``φ``:

    γ(k)  = π λ Δf(α) k² − (π/2) Cs λ³ k⁴
    CTF   = sin(γ + φ + w) · exp(−B k² / 4)

This is RELION's ``CTF::getCTF``: RELION stores ``deltaf = −Δf`` and returns
``−sin(K1·deltaf·k² + K2·k⁴ − K5 − K3)`` with ``K1 = πλ``, ``K2 = (π/2) Cs λ³``,
``K3 = w``, ``K5 = φ``, which is the expression above. Hence ``CTF(0) = +Q``
(for ``φ = 0``) and the first lobe has the same sign as ``Q``; this is the CTF
for images stored white-on-dark (protein positive). cryoDRGN's CTF is the
negative of this one.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from cryoscape.geometry.fourier import fft_freqs

__all__ = ["electron_wavelength_A", "compute_ctf", "ctf_from_freqs", "CTF_FIELDS"]

#: canonical per-particle CTF fields accepted by :func:`compute_ctf` / :func:`ctf_from_freqs`
CTF_FIELDS = ("defocus_u_A", "defocus_v_A", "defocus_angle_deg", "voltage_kV", "cs_mm",
              "amplitude_contrast", "phase_shift_deg", "bfactor_A2")


def electron_wavelength_A(voltage_kV):
    """Relativistic electron wavelength in Å for an accelerating voltage in kV.

    ``λ = 12.2643247 / sqrt(V (1 + 0.978466e-6 V))`` with ``V`` in volts
    (0.019687 Å at 300 kV). Works on floats, numpy arrays and tensors.
    """
    if isinstance(voltage_kV, torch.Tensor):
        V = voltage_kV * 1e3
        return 12.2643247 / torch.sqrt(V * (1.0 + 0.978466e-6 * V))
    V = np.asarray(voltage_kV, dtype=np.float64) * 1e3
    out = 12.2643247 / np.sqrt(V * (1.0 + 0.978466e-6 * V))
    return float(out) if out.ndim == 0 else out


def _param(x, ref: torch.Tensor, ndim_extra: int) -> torch.Tensor:
    """Per-particle parameter ``(B,)`` (or scalar) as a tensor broadcastable over frequencies."""
    if isinstance(x, torch.Tensor):
        t = x.to(device=ref.device, dtype=ref.dtype)
    else:
        t = torch.as_tensor(np.asarray(x, dtype=np.float64), dtype=ref.dtype, device=ref.device)
    t = t.reshape(-1)
    return t.reshape(t.shape[0], *([1] * ndim_extra))


def ctf_from_freqs(kx_A: torch.Tensor, ky_A: torch.Tensor, defocus_u_A, defocus_v_A,
                   defocus_angle_deg, voltage_kV, cs_mm, amplitude_contrast,
                   phase_shift_deg=0.0, bfactor_A2=0.0) -> torch.Tensor:
    """CTF at arbitrary frequencies for a batch of parameter sets.

    Args:
        kx_A, ky_A: frequencies in cycles/Å, any equal shape ``S`` (e.g. ``[P]`` or ``[D, D]``).
        remaining: per-particle ``(B,)`` tensors/arrays or scalars (units in the names).
    Returns:
        ``[B, *S]`` real tensor in ``kx_A``'s dtype and device (``B = 1`` if all scalars).
    """
    e = kx_A.ndim
    k2 = kx_A * kx_A + ky_A * ky_A
    ang2 = 2.0 * torch.atan2(ky_A, kx_A)
    dfu = _param(defocus_u_A, kx_A, e)
    dfv = _param(defocus_v_A, kx_A, e)
    theta2 = 2.0 * torch.deg2rad(_param(defocus_angle_deg, kx_A, e))
    lam = electron_wavelength_A(_param(voltage_kV, kx_A, e))
    cs = _param(cs_mm, kx_A, e) * 1e7
    q = _param(amplitude_contrast, kx_A, e)
    phi = torch.deg2rad(_param(phase_shift_deg, kx_A, e))
    # cos(2(α - θ)) = cos 2α cos 2θ + sin 2α sin 2θ: the transcendentals per point and per particle only
    half_diff = 0.5 * (dfu - dfv)
    df = 0.5 * (dfu + dfv) + (half_diff * torch.cos(theta2)) * torch.cos(ang2) + (
        half_diff * torch.sin(theta2)) * torch.sin(ang2)
    gamma = k2 * ((math.pi * lam) * df - (0.5 * math.pi * cs * lam ** 3) * k2)
    w = torch.atan2(q, torch.sqrt(torch.clamp(1.0 - q * q, min=0.0)))
    ctf = torch.sin(gamma + (phi + w))
    if not isinstance(bfactor_A2, torch.Tensor) and not np.any(np.asarray(bfactor_A2, dtype=np.float64)):
        return ctf  # no envelope (the common case): skip the exponential
    return ctf * torch.exp(-0.25 * _param(bfactor_A2, kx_A, e) * k2)


def compute_ctf(D: int, apix: float, defocus_u_A, defocus_v_A, defocus_angle_deg, voltage_kV,
                cs_mm, amplitude_contrast, phase_shift_deg=0.0, bfactor_A2=0.0,
                device=None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """CTF on the centred ``D x D`` grid (DC at ``[D//2, D//2]``), ``[B, D, D]`` (y, x).

    Pixel ``[i, j]`` holds frequency ``kx = (j - D//2)/(D apix)``, ``ky = (i - D//2)/(D apix)``
    cycles/Å. Parameters as in :func:`ctf_from_freqs`; the device follows a tensor
    ``defocus_u_A`` unless ``device`` is given.
    """
    if device is None and isinstance(defocus_u_A, torch.Tensor):
        device = defocus_u_A.device
    f = fft_freqs(D, apix, dtype=dtype, device=device)
    ky, kx = torch.meshgrid(f, f, indexing="ij")
    return ctf_from_freqs(kx, ky, defocus_u_A, defocus_v_A, defocus_angle_deg, voltage_kV, cs_mm,
                          amplitude_contrast, phase_shift_deg, bfactor_A2)
