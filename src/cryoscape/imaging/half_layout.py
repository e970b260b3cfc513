"""Conversions between the Hermitian half set ``H`` and full centred 2D grids and images.

Slice values are kept on the half set ``H`` (``kx > 0`` or ``kx == 0, ky >= 0``
inside the Nyquist circle, see :mod:`._grid`); ``-H`` holds their complex
conjugates. These functions move values between that layout, the centred
``D × D`` complex grid and real images (one ``rfft2`` / ``irfft2``).
"""

from __future__ import annotations

import torch

from ._grid import slice_points

__all__ = ["half_to_full", "full_to_half", "half_to_image", "image_to_half"]


def half_to_full(values: torch.Tensor, D: int) -> torch.Tensor:
    """Half-set values ``[..., P]`` -> centred ``[..., D, D]`` complex, ``-H`` conjugated."""
    pts = slice_points(D, True, values.device)
    lead = values.shape[:-1]
    v = values.reshape(-1, pts.n)
    out = v.new_zeros(v.shape[0], D * D)
    out[:, pts.full_index] = v
    out[:, pts.neg_index] = v[:, 1:].conj()
    return out.reshape(*lead, D, D)


def full_to_half(slices: torch.Tensor) -> torch.Tensor:
    """Centred ``[..., D, D]`` -> values ``[..., P]`` on the half set."""
    D = slices.shape[-1]
    pts = slice_points(D, True, slices.device)
    return slices.reshape(*slices.shape[:-2], D * D)[..., pts.full_index]


def half_to_image(values: torch.Tensor, D: int) -> torch.Tensor:
    """Real images ``[..., D, D]`` whose centred FT is ``half_to_full(values)``.

    Uses a single ``irfft2``: the values are placed on the uncentred rfft layout,
    multiplied by ``(-1)^(kx+ky)`` (centre at ``D // 2``) and inverted.
    """
    pts = slice_points(D, True, values.device)
    lead = values.shape[:-1]
    v = values.reshape(-1, pts.n) * pts.checker.to(values.real.dtype)
    h = D // 2 + 1
    out = v.new_zeros(v.shape[0], D * h)
    out[:, pts.rfft_index] = v
    out[:, pts.rfft_mirror_dst] = v[:, pts.rfft_mirror_src].conj()
    img = torch.fft.irfft2(out.reshape(-1, D, h), s=(D, D))
    return img.reshape(*lead, D, D)


def image_to_half(images: torch.Tensor) -> torch.Tensor:
    """Values of ``fftn_c(images)`` on the half set, ``[..., P]`` complex (via ``rfft2``)."""
    D = images.shape[-1]
    pts = slice_points(D, True, images.device)
    lead = images.shape[:-2]
    x = torch.fft.ifftshift(images.reshape(-1, D, D), dim=(-2, -1))
    ft = torch.fft.rfft2(x).reshape(-1, D * (D // 2 + 1))
    return ft[:, pts.rfft_index].reshape(*lead, pts.n)
