"""Centred Fourier transforms, frequency grids and radial shells (torch).

Layouts
-------
* Full centred grid (``fftn_c``): on each transformed axis of length ``D``
  (even) index ``i`` holds frequency ``(i - D//2) / (D · apix)`` cycles/Å,
  so the DC term sits at index ``D//2``; index 0 is the Nyquist frequency
  ``-1 / (2 · apix)``. Real-space arrays are centred too: the origin is the
  pixel/voxel ``D//2``.
* rfft grid (``rfftn_c``, ``rfft=True``): all axes but the last are centred as
  above; the last axis has ``D//2 + 1`` entries, index ``j`` holding
  frequency ``j / (D · apix)`` (0 .. Nyquist).
* Transforms use torch's default normalisation: the forward transform is an
  unnormalised sum, the inverse divides by the number of samples.

Volumes are ``[z, y, x]`` and images ``[y, x]``; leading batch dimensions are
allowed wherever the transform acts on the last ``ndim`` axes. Frequency grids
are returned in the same order, ``(kz, ky, kx)`` / ``(ky, kx)``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

__all__ = [
    "fft_freqs",
    "rfft_freqs",
    "freq_grid_2d",
    "freq_grid_3d",
    "radial_shell_index",
    "shell_average",
    "shell_sum",
    "fftn_c",
    "ifftn_c",
    "rfftn_c",
    "irfftn_c",
    "scale_shells",
]


def _as_tensor(x: torch.Tensor | np.ndarray) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.as_tensor(np.ascontiguousarray(x))


def _dims(ndim: int) -> tuple[int, ...]:
    if ndim not in (1, 2, 3):
        raise ValueError(f"ndim must be 1, 2 or 3; got {ndim}")
    return tuple(range(-ndim, 0))


def fft_freqs(D: int, apix: float = 1.0, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None) -> torch.Tensor:
    """Centred 1D frequencies ``(D,)`` in cycles/Å: index ``i`` ↔ ``(i - D//2) / (D · apix)``."""
    return (torch.arange(D, dtype=dtype, device=device) - D // 2) / (D * apix)


def rfft_freqs(D: int, apix: float = 1.0, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None) -> torch.Tensor:
    """Non-negative frequencies ``(D//2 + 1,)`` of the rfft axis in cycles/Å: ``j / (D · apix)``."""
    return torch.arange(D // 2 + 1, dtype=dtype, device=device) / (D * apix)


def freq_grid_2d(
    D: int,
    apix: float = 1.0,
    rfft: bool = False,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """2D frequency grid ``(ky, kx)`` in cycles/Å, each ``[D, D]`` (or ``[D, D//2+1]`` if ``rfft``)."""
    ky = fft_freqs(D, apix, dtype, device)
    kx = rfft_freqs(D, apix, dtype, device) if rfft else ky
    gy, gx = torch.meshgrid(ky, kx, indexing="ij")
    return gy, gx


def freq_grid_3d(
    D: int,
    apix: float = 1.0,
    rfft: bool = False,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """3D frequency grid ``(kz, ky, kx)`` in cycles/Å, each ``[D, D, D]`` (or ``[D, D, D//2+1]`` if ``rfft``)."""
    k = fft_freqs(D, apix, dtype, device)
    kx = rfft_freqs(D, apix, dtype, device) if rfft else k
    gz, gy, gx = torch.meshgrid(k, k, kx, indexing="ij")
    return gz, gy, gx


def radial_shell_index(
    shape_or_D: int | Sequence[int],
    ndim: int | None = None,
    rfft: bool = False,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Shell index ``round(|k| · D)`` (``|k|`` in cycles/pixel) on the centred grid, int64.

    ``shape_or_D`` is the box ``D`` (then ``ndim`` is required) or a shape
    whose last ``ndim`` axes are the (equal, even) grid axes. Shell ``s``
    holds frequencies near ``s / (D · apix)``; shells ``0 .. D//2`` reach
    Nyquist along the axes, the corners of the grid have larger indices.
    Returns ``[D]*ndim`` (last axis ``D//2 + 1`` if ``rfft``).
    """
    if isinstance(shape_or_D, (int, np.integer)):
        if ndim is None:
            raise ValueError("ndim is required when a box size is given")
        D = int(shape_or_D)
    else:
        shape = tuple(int(s) for s in shape_or_D)
        ndim = len(shape) if ndim is None else ndim
        axes = shape[len(shape) - ndim:]
        if len(set(axes)) != 1:
            raise ValueError(f"radial shells need equal grid axes; got {axes}")
        D = axes[0]
    _dims(ndim)
    k = torch.arange(D, dtype=torch.float64, device=device) - D // 2
    axes_k = [k] * (ndim - 1) + [torch.arange(D // 2 + 1, dtype=torch.float64, device=device) if rfft else k]
    grids = torch.meshgrid(*axes_k, indexing="ij")
    r = torch.sqrt(sum(g * g for g in grids))
    return torch.round(r).to(torch.int64)


def shell_sum(values: torch.Tensor, shell_index: torch.Tensor, n_shells: int) -> torch.Tensor:
    """Sum of ``values [..., *grid]`` over each shell ``0 .. n_shells-1`` -> ``[..., n_shells]``.

    ``shell_index`` has the grid's shape; entries ``>= n_shells`` are ignored.
    Works for real and complex values.
    """
    values = _as_tensor(values)
    shell_index = _as_tensor(shell_index).to(values.device)
    grid_nd = shell_index.ndim
    lead = values.shape[: values.ndim - grid_nd]
    flat = values.reshape(*lead, -1)
    idx = shell_index.reshape(-1)
    keep = idx < n_shells
    out = torch.zeros(*lead, n_shells, dtype=values.dtype, device=values.device)
    return out.index_add_(-1, idx[keep], flat[..., keep])


def shell_average(values: torch.Tensor, shell_index: torch.Tensor, n_shells: int) -> torch.Tensor:
    """Mean of ``values [..., *grid]`` over each shell ``0 .. n_shells-1`` -> ``[..., n_shells]``.

    For a box ``D`` use ``n_shells = D//2 + 1`` (up to Nyquist). Empty shells
    give 0.
    """
    values = _as_tensor(values)
    shell_index = _as_tensor(shell_index).to(values.device)
    sums = shell_sum(values, shell_index, n_shells)
    counts = torch.bincount(shell_index.reshape(-1)[shell_index.reshape(-1) < n_shells], minlength=n_shells)
    counts = counts.to(sums.real.dtype if sums.is_complex() else sums.dtype)
    return sums / counts.clamp(min=1)


def fftn_c(x: torch.Tensor, ndim: int, norm: str | None = None) -> torch.Tensor:
    """Centred FFT over the last ``ndim`` axes: ``fftshift(fftn(ifftshift(x)))``.

    Real-space origin at index ``D//2``, DC at index ``D//2``. ``x [..., *grid]``
    real or complex -> complex of the same shape.
    """
    dims = _dims(ndim)
    x = _as_tensor(x)
    return torch.fft.fftshift(torch.fft.fftn(torch.fft.ifftshift(x, dim=dims), dim=dims, norm=norm), dim=dims)


def ifftn_c(X: torch.Tensor, ndim: int, norm: str | None = None) -> torch.Tensor:
    """Inverse of :func:`fftn_c` over the last ``ndim`` axes (complex output; take ``.real`` for real data)."""
    dims = _dims(ndim)
    X = _as_tensor(X)
    return torch.fft.fftshift(torch.fft.ifftn(torch.fft.ifftshift(X, dim=dims), dim=dims, norm=norm), dim=dims)


def rfftn_c(x: torch.Tensor, ndim: int, norm: str | None = None) -> torch.Tensor:
    """Centred real FFT over the last ``ndim`` axes: ``[..., *grid]`` real -> ``[..., D, .., D//2+1]``.

    All transformed axes but the last are centred (DC at ``D//2``); the last
    axis holds frequencies ``0 .. D//2`` (see the module docstring).
    """
    dims = _dims(ndim)
    x = _as_tensor(x)
    X = torch.fft.rfftn(torch.fft.ifftshift(x, dim=dims), dim=dims, norm=norm)
    return torch.fft.fftshift(X, dim=dims[:-1]) if ndim > 1 else X


def irfftn_c(X: torch.Tensor, ndim: int, D: int, norm: str | None = None) -> torch.Tensor:
    """Inverse of :func:`rfftn_c`: ``[..., D, .., D//2+1]`` -> real ``[..., *[D]*ndim]``."""
    dims = _dims(ndim)
    X = _as_tensor(X)
    if ndim > 1:
        X = torch.fft.ifftshift(X, dim=dims[:-1])
    x = torch.fft.irfftn(X, s=[D] * ndim, dim=dims, norm=norm)
    return torch.fft.fftshift(x, dim=dims)


def scale_shells(vol: torch.Tensor | np.ndarray, weights: Sequence[float] | np.ndarray | torch.Tensor) -> torch.Tensor:
    """``vol [..., D, D, D]`` (real) with the Fourier coefficients of shell ``s`` multiplied by ``weights[s]``.

    Shells as in :func:`radial_shell_index`; the grid's corners beyond the last
    entry (``|k| > D/2`` for ``D//2 + 1`` weights) take the last weight, so nothing
    is cut by radius. Computed with real FFTs in the input's precision; returns a
    real tensor of the input's shape and dtype.
    """
    x = _as_tensor(vol)
    D = int(x.shape[-1])
    w = torch.as_tensor(weights).to(device=x.device, dtype=x.dtype).reshape(-1)
    shells = radial_shell_index(D, 3, rfft=True, device=x.device).clamp(max=w.numel() - 1)
    X = torch.fft.rfftn(x, dim=(-3, -2, -1))
    # rfftn of the uncentred volume: the same |k| per coefficient as the centred layout after ifftshift
    X = X * torch.fft.ifftshift(w[shells], dim=(0, 1))
    return torch.fft.irfftn(X, s=(D, D, D), dim=(-3, -2, -1))
