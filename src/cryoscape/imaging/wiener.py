"""Wiener division of backprojection accumulators and the inverse FFT to a volume.

The accumulators live on the centred symmetric padded grid of
:mod:`.projector` (``M = N + 1`` points per axis, index ``j ↔ j - N/2`` padded
frequency units, ``N = padded_size(D, oversampling)``). Completed accumulators
are Friedel-symmetric, so only the ``kx >= 0`` half (last-axis indices
``N/2 .. N``, ``N/2 + 1`` planes) is divided and transformed with an inverse
real FFT: the same volume as the complex division and inverse FFT on the whole
grid, at about half the cost.

Shells are those of the unpadded ``D`` grid: ``round(|q|)`` with ``q`` in cycles
per box ``D`` (padded index offset times ``D / N``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ._grid import padded_size
from .projector import grid_correction

__all__ = ["HalfShells", "half_shells", "wiener_volume", "shell_gain"]


@dataclass(frozen=True)
class HalfShells:
    """Shell geometry of the ``kx >= 0`` half of the ``N³`` padded grid, layout ``[N, N, N/2 + 1]`` (z, y, kx).

    shell: int64 ``round(|q|)`` per voxel (``q`` in cycles per box ``D``; not clamped);
    inside: bool, ``|q| <= D/2``; outside: its negation;
    plane_weight: float64 ``[N/2 + 1]``, ½ on the ``kx = 0`` and ``kx = N/2`` planes and 1
    elsewhere (half-grid sums weighted by it equal full-grid sums of Friedel-symmetric data);
    counts: float64 ``[D//2 + 1]``, the weighted number of voxels inside per shell;
    n_shells: ``shell.max() + 1`` (over the whole half grid);
    shell_bin: flat int64 shell per voxel with the voxels outside in bin ``D//2 + 1``;
    inside_weight: float64 plane weight per voxel, 0 outside.
    """

    shell: torch.Tensor
    inside: torch.Tensor
    outside: torch.Tensor
    plane_weight: torch.Tensor
    counts: torch.Tensor
    n_shells: int
    shell_bin: torch.Tensor
    inside_weight: torch.Tensor


_HALF_SHELLS: dict[tuple[int, int, str], HalfShells] = {}


def _build_half_shells(D: int, N: int) -> HalfShells:
    """:class:`HalfShells` on the CPU for box ``D`` and padded box ``N`` (both even)."""
    h = N // 2
    q = (torch.arange(N, dtype=torch.float64) - h) * (D / N)
    qx = torch.arange(h + 1, dtype=torch.float64) * (D / N)
    r = torch.sqrt(q[:, None, None] ** 2 + q[None, :, None] ** 2 + qx[None, None, :] ** 2)
    shell = torch.round(r).to(torch.int64)
    inside = r <= D / 2
    plane_weight = torch.ones(h + 1, dtype=torch.float64)
    plane_weight[0] = plane_weight[h] = 0.5
    counts = torch.zeros(D // 2 + 1, dtype=torch.float64).index_add_(
        0, shell[inside], plane_weight.expand(N, N, h + 1)[inside]
    )
    shell_bin = torch.where(inside, shell, torch.full_like(shell, D // 2 + 1)).reshape(-1)
    inside_weight = plane_weight.expand(N, N, h + 1) * inside
    return HalfShells(shell, inside, ~inside, plane_weight, counts, int(shell.max()) + 1, shell_bin, inside_weight)


def half_shells(D: int, oversampling: float = 2.0, device: torch.device | str | None = None) -> HalfShells:
    """Cached :class:`HalfShells` for box ``D`` and ``oversampling`` on ``device`` (CPU default)."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    N = padded_size(D, oversampling)
    key = (int(D), N, str(device))
    hit = _HALF_SHELLS.get(key)
    if hit is None:
        cpu = _build_half_shells(int(D), N)
        hit = HalfShells(cpu.shell.to(device), cpu.inside.to(device), cpu.outside.to(device),
                         cpu.plane_weight.to(device), cpu.counts.to(device), cpu.n_shells,
                         cpu.shell_bin.to(device), cpu.inside_weight.to(device))
        _HALF_SHELLS[key] = hit
    return hit


def _half_slab(x: torch.Tensor, N: int) -> torch.Tensor:
    """The ``kx = 0 .. N/2`` planes ``[N, N, N/2 + 1]`` of a centred ``[M, M, M]`` or ``[N, N, N]`` grid.

    For ``[N, N, N]`` input the ``kx = +N/2`` plane is the periodic copy of index 0.
    """
    h = N // 2
    x = x[:N, :N]
    if x.shape[-1] > N:
        return x[..., h:N + 1]
    return torch.cat([x[..., h:], x[..., :1]], dim=-1)


def _regulariser_per_voxel(regulariser, g: HalfShells, dtype: torch.dtype,
                           device: torch.device) -> torch.Tensor:
    """Regulariser on the half grid ``[N, N, N/2 + 1]`` (a new tensor) from a scalar or per-shell table."""
    if isinstance(regulariser, torch.Tensor):
        tab = regulariser.detach().to(device=device, dtype=dtype).reshape(-1)
    else:
        tab = torch.as_tensor(np.asarray(regulariser, dtype=np.float64), device=device).to(dtype).reshape(-1)
    if tab.numel() == 1:
        return torch.full(g.shell.shape, float(tab[0]), dtype=dtype, device=device)
    # shells beyond the table use its last value
    idx = torch.arange(g.n_shells, device=device).clamp_(max=tab.shape[0] - 1)
    return tab[idx][g.shell]


def shell_gain(den: torch.Tensor, regulariser, D: int, oversampling: float = 2.0) -> torch.Tensor:
    """Mean Wiener gain ``⟨W / (W + λ)⟩`` of each shell ``0 .. D//2`` over the padded-grid voxels inside
    the Nyquist sphere, ``(D//2 + 1,)`` float64 (1 where a shell has no weight at all).

    ``den`` (``W``) and ``regulariser`` (``λ``) as in :func:`wiener_volume`. It is the factor by which the
    regularised division shrinks a shell on average: ``SSNR / (1 + SSNR)`` for weights uniform in the shell.
    """
    N = padded_size(D, oversampling)
    g = half_shells(D, oversampling, den.device)
    w = _half_slab(den, N)
    dtype = torch.promote_types(w.dtype, torch.float32)
    w = w.to(dtype)
    total = _regulariser_per_voxel(regulariser, g, dtype, den.device).add_(w)
    tiny = torch.finfo(dtype).tiny
    ratio = torch.where(total > 0, w / total.clamp(min=tiny), torch.zeros_like(w))
    # one pass: voxels outside the Nyquist sphere fall in an extra bin that is dropped
    sums = torch.bincount(g.shell_bin, weights=(ratio.double() * g.inside_weight).reshape(-1),
                          minlength=D // 2 + 2)[: D // 2 + 1]
    gain = sums / g.counts.clamp(min=1e-300)
    return torch.where(gain > 0, gain, torch.ones_like(gain))


def wiener_volume(num: torch.Tensor, den: torch.Tensor, regulariser, D: int,
                  oversampling: float = 2.0, shell_factor=None) -> torch.Tensor:
    """Real-space volume from completed backprojection accumulators.

    ``V̂ = num / (den + regulariser)`` on the padded grid (zero where the
    denominator vanishes and outside the Nyquist sphere ``|q| > D/2``), inverse
    FFT (real, over the ``kx >= 0`` half), crop to the central ``D³`` voxels,
    divide by :func:`~.projector.grid_correction`.

    ``shell_factor`` ``(D//2 + 1,)`` multiplies each shell after the division (e.g.
    ``1 / shell_gain`` leaves only the weighting of a shell's voxels against each
    other, well measured ones counting more, and not the shell's overall level).
    The crop to the ``D³`` box mixes neighbouring shells, so a shell level that
    changes steeply with radius leaks into the weak shells; a steep filter belongs
    after the crop (:func:`cryoscape.geometry.fourier.scale_shells`).

    Accumulators from :func:`~cryoscape.imaging.forward.backproject_images` (after
    :func:`~.projector.complete_channels`) give the least biased result; see
    the :mod:`.projector` notes.

    Args:
        num: complex ``[M, M, M]`` (or ``[N, N, N]``), Hermitian-completed Σ CTF·image FT.
        den: real, same shape, Hermitian-completed Σ CTF² (trilinear weights included).
        regulariser: scalar, or per-shell values ``[S]`` indexed by shell
            ``round(|q|)`` (``q`` in cycles per box ``D``, i.e. the shells of the
            unpadded ``D`` grid, ``S = D//2 + 1`` typical); shells ``>= S`` use the
            last. In the units of ``den``.
        D: output box; oversampling: as used for the accumulators.
        shell_factor: per-shell multipliers on the padded grid (see above), or None.
    Returns:
        real ``[D, D, D]`` (z, y, x) in the real dtype of ``num / den``, on ``den``'s device.
    """
    N = padded_size(D, oversampling)
    g = half_shells(D, oversampling, den.device)
    total = _regulariser_per_voxel(regulariser, g, den.dtype, den.device)
    total.add_(_half_slab(den, N))
    half = _half_slab(num, N) / total
    half.masked_fill_(g.outside | (total == 0), 0)
    if shell_factor is not None:
        f = torch.as_tensor(shell_factor).to(device=den.device, dtype=total.dtype).reshape(-1)
        half = half * f[g.shell.clamp(max=f.numel() - 1)]
    vol = torch.fft.irfftn(torch.fft.ifftshift(half, dim=(0, 1)), s=(N, N, N))  # origin at index 0
    crop = torch.remainder(torch.arange(D, device=vol.device) - D // 2, N)
    vol = vol.index_select(0, crop).index_select(1, crop).index_select(2, crop)
    return vol / grid_correction(D, oversampling, vol.device, vol.dtype)
