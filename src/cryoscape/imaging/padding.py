"""The padded, grid-corrected volume FT that slices are sampled from.

The volume is divided by :func:`grid_correction` (the real-space apodisation
``Π_axes sinc²(π x / N)`` of trilinear interpolation), zero-padded to
``N = oversampling * D`` and transformed once; :func:`padded_volume_ft` stores
the FT on the symmetric ``M = N + 1`` grid described in :mod:`.projector`.
:func:`padded_volume_ft_band` gives the same values on the central cube of
half-width ``L`` only, by separable DFT matrices: the cheap, differentiable
form for fitting that reads low frequencies alone.
"""

from __future__ import annotations

import torch

from cryoscape.geometry.fourier import fftn_c

from ._grid import padded_size

__all__ = ["grid_correction", "padded_volume_ft", "padded_volume_ft_band"]


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


def padded_volume_ft_band(volumes: torch.Tensor, oversampling: float, half_width: int,
                          correct: bool = True) -> torch.Tensor:
    """The values of :func:`padded_volume_ft` at padded frequencies ``-L..L`` on every axis, for a stack.

    Args:
        volumes: real ``[V, D, D, D]`` (z, y, x); differentiable.
        oversampling: padding factor (``N = padded_size(D, oversampling)``).
        half_width: ``L`` in padded frequency units, ``1 <= L < N/2``.
        correct: divide by :func:`grid_correction` first (default True).

    Returns:
        complex ``[V, C, C, C]``, ``C = 2L + 1``; index ``j ↔ (j - L)`` padded units,
        i.e. ``padded_volume_ft(v)[N/2 - L + j]`` on each axis. Costs three
        ``[C, D]`` matrix products per volume instead of an ``N³`` FFT.
    """
    if volumes.ndim != 4 or len(set(volumes.shape[1:])) != 1:
        raise ValueError(f"volumes must be a stack of cubes [V, D, D, D], got {tuple(volumes.shape)}")
    D = volumes.shape[-1]
    N = padded_size(D, oversampling)
    L = int(half_width)
    if not 1 <= L < N // 2:
        raise ValueError(f"half_width must be in [1, {N // 2 - 1}] for D={D}, N={N}; got {half_width}")
    if correct:
        volumes = volumes / grid_correction(D, oversampling, volumes.device, volumes.dtype)
    cdtype = torch.complex128 if volumes.dtype == torch.float64 else torch.complex64
    f = torch.arange(-L, L + 1, device=volumes.device, dtype=torch.float64)
    x = torch.arange(D, device=volumes.device, dtype=torch.float64) - D // 2
    F = torch.exp(-2j * torch.pi * f[:, None] * x[None, :] / N).to(cdtype)  # [C, D]
    v = volumes.to(cdtype)
    v = torch.einsum("az,vzyx->vayx", F, v)
    v = torch.einsum("by,vayx->vabx", F, v)
    return torch.einsum("cx,vabx->vabc", F, v)
