"""Image translations as Fourier phase factors.

Translating an image by ``t = (tx, ty)`` Å (content moves by ``+t``) multiplies its
centred FT by ``exp(−2πi k·t)`` with ``k`` in cycles/Å. RELION's origin ``o``
(``_rlnOriginX/YAngst``) describes an observed image that is the centred
projection translated by ``−o``; translating the observed image by ``+o``
re-centres it. Translations are circular (periodic in the box).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from cryoscape.geometry.fourier import fft_freqs

__all__ = ["phase_shift", "phase_shift_at", "translate_images"]


def _shifts(shifts_A, like_device=None, dtype=torch.float32) -> torch.Tensor:
    if isinstance(shifts_A, torch.Tensor):
        t = shifts_A.to(device=like_device if like_device is not None else shifts_A.device, dtype=dtype)
    else:
        t = torch.as_tensor(np.asarray(shifts_A, dtype=np.float64), dtype=dtype, device=like_device)
    if t.shape[-1] != 2:
        raise ValueError(f"shifts_A must be [..., 2] (x, y), got {tuple(t.shape)}")
    return t.reshape(-1, 2)


def phase_shift_at(kx_A: torch.Tensor, ky_A: torch.Tensor, shifts_A) -> torch.Tensor:
    """``exp(−2πi (kx tx + ky ty))`` for shifts ``[B, 2]`` (Å) at frequencies of shape ``S``.

    Returns complex ``[B, *S]`` in the complex dtype matching ``kx_A``.
    """
    t = _shifts(shifts_A, kx_A.device, kx_A.dtype)
    view = (t.shape[0],) + (1,) * kx_A.ndim
    arg = -2.0 * math.pi * (kx_A * t[:, 0].reshape(view) + ky_A * t[:, 1].reshape(view))
    return torch.polar(torch.ones_like(arg), arg)


def phase_shift(D: int, shifts_A, apix: float, device=None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Complex ``[B, D, D]`` factor on the centred grid that translates images by ``shifts_A``.

    Args:
        D: box (even). shifts_A: ``[B, 2]`` (x, y) in Å. apix: Å/px.
    """
    if device is None and isinstance(shifts_A, torch.Tensor):
        device = shifts_A.device
    f = fft_freqs(D, apix, dtype=dtype, device=device)
    ky, kx = torch.meshgrid(f, f, indexing="ij")
    return phase_shift_at(kx, ky, shifts_A)


def translate_images(images: torch.Tensor, shifts_A, apix: float) -> torch.Tensor:
    """Translate real images ``[B, D, D]`` by ``shifts_A`` ``[B, 2]`` (x, y) Å (content moves by +t).

    Sub-pixel, circular, via ``rfft2``. The Nyquist row/column keep the real part
    of their shifted value (they are unpaired for even ``D``).
    """
    D = images.shape[-1]
    lead = images.shape[:-2]
    x = images.reshape(-1, D, D)
    t = _shifts(shifts_A, x.device, x.dtype)
    if t.shape[0] not in (1, x.shape[0]):
        raise ValueError(f"{t.shape[0]} shifts for {x.shape[0]} images")
    ky = torch.fft.fftfreq(D, d=apix, device=x.device, dtype=x.dtype)
    kx = torch.fft.rfftfreq(D, d=apix, device=x.device, dtype=x.dtype)
    ph = phase_shift_at(kx[None, :].expand(D, -1), ky[:, None].expand(-1, kx.shape[0]), t)
    out = torch.fft.irfft2(torch.fft.rfft2(x) * ph, s=(D, D))
    return out.reshape(*lead, D, D)
