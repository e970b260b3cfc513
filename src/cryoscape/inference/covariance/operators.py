"""The sparse image-formation operator ``A_i = CTF_i · shift_i · slice(R_i)`` on the covariance ball.

:func:`slice_operator` builds a :class:`SliceOperator` for a batch of poses:
each image pixel reads one voxel (nearest) or the eight tent-weighted corners
(trilinear) of ``q = Rᵀ (kx, ky, 0)``, times the transfer ``CTF · shift phase``
of the shared forward model (:func:`cryoscape.imaging.forward.transfer_half`).
"""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Mapping

import torch

from cryoscape.imaging.forward import transfer_half
from cryoscape.imaging.projector import half_to_full

from .grid import BallGrid, _grid_on

__all__ = ["SliceOperator", "slice_operator"]


@dataclass
class SliceOperator:
    """The sparse ``A_i`` of a batch: ``A_i[p, idx[i, p, c]] += weight[i, p, c]``.

    idx ``[B, P, c]`` int64 voxel indices (``c = 1`` nearest, ``8`` trilinear),
    tent ``[B, P, c]`` real interpolation weights, transfer ``[B, P]`` complex
    ``CTF · shift phase`` (so ``weight = transfer[..., None] · tent``).
    """

    idx: torch.Tensor
    tent: torch.Tensor
    transfer: torch.Tensor

    @property
    def weight(self) -> torch.Tensor:
        return self.transfer[..., None] * self.tent.to(self.transfer.dtype)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """``A_i x`` for ball vectors ``x [n]`` or ``[B, n]`` -> ``[B, P]``."""
        B = self.idx.shape[0]
        xb = x.expand(B, -1) if x.ndim == 1 else x
        g = torch.gather(xb, 1, self.idx.reshape(B, -1)).reshape(self.idx.shape)
        return (g * self.weight).sum(-1)

    def adjoint(self, y: torch.Tensor, n: int) -> torch.Tensor:
        """``A_iᴴ y_i`` for pixel values ``y [B, P]`` -> ``[B, n]`` complex."""
        vals = self.weight.conj() * y[..., None]
        return _scatter_rows(self.idx, vals, n)

    def gram_diagonal(self, n: int) -> torch.Tensor:
        """``w_i(v) = Σ_p |T_ip|² tent_ipv`` ``[B, n]`` real: the row sums of ``A_iᴴA_i``
        (its diagonal for nearest-neighbour slicing)."""
        t2 = self.transfer.real ** 2 + self.transfer.imag ** 2
        return _scatter_rows(self.idx, t2[..., None] * self.tent, n)


def _scatter_rows(idx: torch.Tensor, vals: torch.Tensor, n: int) -> torch.Tensor:
    """``out[b, idx[b, ...]] += vals[b, ...]`` -> ``[B, n]`` (real or complex)."""
    B = idx.shape[0]
    flat = (idx + n * torch.arange(B, device=idx.device).reshape(B, *([1] * (idx.ndim - 1)))).reshape(-1)
    if vals.is_complex():
        out = torch.zeros(B * n, 2, dtype=vals.real.dtype, device=vals.device)
        out.index_add_(0, flat, torch.view_as_real(vals.contiguous()).reshape(-1, 2))
        return torch.view_as_complex(out).reshape(B, n)
    out = torch.zeros(B * n, dtype=vals.dtype, device=vals.device)
    out.index_add_(0, flat, vals.reshape(-1))
    return out.reshape(B, n)


def _transfer(grid: BallGrid, apix: float, shifts_A, ctf_params: Mapping | None, B: int,
              dtype: torch.dtype, device) -> torch.Tensor:
    """``CTF · exp(+2πi k·o)`` at the grid's pixels ``[B, P]`` complex (the forward model's transfer).

    Evaluated on the forward model's half set and mirrored (``T(−k) = conj T(k)``:
    the CTF is even, the phase odd) onto the grid's whole disc.
    """
    ctf, ph = transfer_half(grid.D, apix, shifts_A, ctf_params, device, dtype)
    cdt = torch.complex128 if dtype == torch.float64 else torch.complex64
    if ctf is None and ph is None:
        return torch.ones(B, grid.P, dtype=cdt, device=device)
    T = torch.ones(B, 1, dtype=cdt, device=device)
    if ph is not None:
        T = T * ph
    if ctf is not None:
        T = T * ctf
    full = half_to_full(T, grid.D).reshape(B, grid.D * grid.D)
    return full[:, grid.pix_index.to(full.device)]


def _tent(q: torch.Tensor, grid: BallGrid, dtype: torch.dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Voxel indices and interpolation weights ``[B, P, c]`` of the sample points ``q [B, P, 3]``."""
    if grid.interpolation == "nearest":
        idx = grid.index_of(torch.round(q).long())[..., None]
        return idx, torch.ones(idx.shape, dtype=dtype, device=device)
    f0 = torch.floor(q)
    f = q - f0
    corners = torch.tensor([[(c >> 0) & 1, (c >> 1) & 1, (c >> 2) & 1] for c in range(8)], device=device)
    v = f0.long()[:, :, None, :] + corners  # [B, P, 8, 3]
    wts = torch.where(corners.bool(), f[:, :, None, :], 1 - f[:, :, None, :])
    return grid.index_of(v), wts.prod(-1)


def slice_operator(grid: BallGrid, rotations, shifts_A=None, ctf_params: Mapping | None = None,
                   apix: float = 1.0, dtype: torch.dtype = torch.float64, device=None) -> SliceOperator:
    """The :class:`SliceOperator` of a batch.

    rotations ``[B, 3, 3]`` (volume -> particle frame; pixel ``k`` reads ``q = Rᵀ (kx, ky, 0)``);
    shifts_A ``[B, 2]`` RELION origins (Å) or None; ctf_params CTF fields ``(B,)`` or None; apix Å/px.
    """
    R = torch.as_tensor(rotations).to(device=device, dtype=dtype).reshape(-1, 3, 3)
    B = R.shape[0]
    kx, ky = grid.kx.to(device=device, dtype=dtype), grid.ky.to(device=device, dtype=dtype)
    q = R[:, 0, None, :] * kx[None, :, None] + R[:, 1, None, :] * ky[None, :, None]  # [B, P, 3] (x, y, z)
    idx, tent = _tent(q, _grid_on(grid, device), dtype, device)
    if bool((idx < 0).any()):
        raise RuntimeError("a slice sample fell outside the covariance ball")  # cannot happen by construction
    return SliceOperator(idx, tent, _transfer(grid, apix, shifts_A, ctf_params, B, dtype, device))
