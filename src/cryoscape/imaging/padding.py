"""The padded, grid-corrected volume FT that slices are sampled from.

The volume is divided by :func:`grid_correction` (the real-space apodisation
``Π_axes sinc²(π x / N)`` of trilinear interpolation), zero-padded to
``N = oversampling * D`` and transformed once; :func:`padded_volume_ft` stores
the FT on the symmetric ``M = N + 1`` grid described in :mod:`.projector`.
"""

from __future__ import annotations

import torch

from cryoscape.geometry.fourier import fftn_c

from ._grid import padded_size

__all__ = ["grid_correction", "padded_volume_ft"]


def grid_correction(D: int, oversampling: float = 2.0, device=None,
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Real-space apodisation of trilinear interpolation on the padded grid.

    Returns ``[D, D, D]`` (z, y, x): ``Π_axes sinc²(π x / N)`` with ``x = i - D//2``
    voxels and ``N = padded_size(D, oversampling)``; ``sinc(t) = sin(t)/t``.
    """
    N = padded_size(D, oversampling)
    x = (torch.arange(D, device=device, dtype=torch.float64) - D // 2) / N
    s = torch.sinc(x) ** 2  # torch.sinc(t) = sin(pi t)/(pi t)
    g = s[:, None, None] * s[None, :, None] * s[None, None, :]
    return g.to(dtype)


def padded_volume_ft(volume: torch.Tensor, oversampling: float = 2.0,
                     correct: bool = True) -> torch.Tensor:
    """Grid-corrected, zero-padded centred 3D FT on the symmetric ``M = N + 1`` grid.

    Args:
        volume: real ``[D, D, D]`` (z, y, x), any float dtype; differentiable.
        oversampling: padding factor (``N = padded_size(D, oversampling)``).
        correct: divide by :func:`grid_correction` first (default True).

    Returns:
        complex ``[M, M, M]`` (kz, ky, kx), index ``j ↔ (j - N/2)`` padded frequency
        units (``q_padded = q * N / D`` for ``q`` in cycles per box); plane ``j = N``
        is a periodic copy of plane 0.
    """
    if volume.ndim != 3 or len(set(volume.shape)) != 1:
        raise ValueError(f"volume must be a cube [D, D, D], got {tuple(volume.shape)}")
    D = volume.shape[-1]
    N = padded_size(D, oversampling)
    if correct:
        volume = volume / grid_correction(D, oversampling, volume.device, volume.dtype)
    p = (N - D) // 2
    vol = torch.nn.functional.pad(volume, (p, p, p, p, p, p))
    ft = fftn_c(vol, 3)
    ft = torch.cat([ft, ft[:1]], dim=0)
    ft = torch.cat([ft, ft[:, :1]], dim=1)
    ft = torch.cat([ft, ft[:, :, :1]], dim=2)
    return ft
