"""One pass over the images: the sums the covariance normal equations need, and the noise level.

:func:`accumulate_statistics` subtracts the rendered mean (the shared forward
model, :func:`cryoscape.imaging.forward.render_half`) from each image, backprojects
the residual onto the ball (``b_i = A_iᴴ r_i``) and sums ``b_i b_iᴴ``,
``w_i w_iᵀ`` and ``A_iᴴA_i`` over the rows of the half ball (or over chosen
columns), with the residual power per shell; :func:`hermitian_fill` completes
the half-ball rows and :func:`noise_from_residual_power` reads ``s²`` off the
outer shells.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from collections.abc import Callable, Iterator

import numpy as np
import torch

from cryoscape.errors import InputError
from cryoscape.geometry.fourier import fftn_c
from cryoscape.imaging.forward import render_half
from cryoscape.imaging.projector import FourierProjector, half_to_full

from .grid import BallGrid, _grid_on
from .operators import SliceOperator, slice_operator

__all__ = ["NOISE_BAND", "CovarianceStatistics", "hermitian_fill", "accumulate_statistics",
           "noise_from_residual_power"]

#: Default inner edge of the noise band, as a fraction of the Nyquist radius ``D/2``.
NOISE_BAND = 0.8


@dataclass
class CovarianceStatistics:
    """Sums over the images (rows of the half ball; full matrices via :func:`hermitian_fill`).

    num ``[nH, n]`` complex128 ``Σ_i b_i b_iᴴ``; pair_weight ``[nH, n]`` float64
    ``Σ_i w_i w_iᵀ``; gram ``[nH, n]`` float64 ``Σ_i A_iᴴA_i``; residual_power
    ``[D//2]`` mean ``|r_i(k)|²`` per shell ``round(|k|)`` of the whole disc;
    n_images.
    """

    grid: BallGrid
    num: torch.Tensor
    pair_weight: torch.Tensor
    gram: torch.Tensor
    residual_power: np.ndarray
    n_images: int = 0


def hermitian_fill(rows: torch.Tensor, grid: BallGrid, conjugate: bool = True) -> torch.Tensor:
    """Full ``[n, n]`` matrix from its half-ball rows ``[nH, n]`` using ``X(−v, −v') = conj(X(v, v'))``."""
    n, half, neg = grid.n, grid.half.to(rows.device), grid.neg.to(rows.device)
    out = rows.new_zeros(n, n)
    out[half] = rows
    other = torch.ones(n, dtype=torch.bool, device=rows.device)
    other[half] = False
    u = torch.nonzero(other).reshape(-1)
    pos = torch.full((n,), -1, dtype=torch.int64, device=rows.device)
    pos[half] = torch.arange(half.shape[0], device=rows.device)
    src = rows[pos[neg[u]]][:, neg]
    out[u] = src.conj() if (conjugate and src.is_complex()) else src
    return out


def _corner_pairs(op: SliceOperator) -> tuple[torch.Tensor, torch.Tensor]:
    """``|T_ip|² tent_ipa tent_ipb`` flattened over ``(i, p, a, b)``, and the corner indices ``[B, P, c]``."""
    t2 = (op.transfer.real ** 2 + op.transfer.imag ** 2)[..., None, None]
    return (t2 * op.tent[..., :, None] * op.tent[..., None, :]).reshape(-1), op.idx


def _gram_rows(op: SliceOperator, grid: BallGrid, out: torch.Tensor) -> None:
    """Add ``Σ_i A_iᴴA_i`` (rows of the half ball) into ``out [nH, n]``: pairs of corners of each pixel."""
    n = grid.n
    pos = torch.full((n,), -1, dtype=torch.int64, device=out.device)
    pos[grid.half.to(out.device)] = torch.arange(grid.half.shape[0], device=out.device)
    vals, idx = _corner_pairs(op)
    rows = pos[idx][..., :, None].expand(*idx.shape, idx.shape[-1])
    cols = idx[..., None, :].expand_as(rows)
    ok = (rows >= 0).reshape(-1)
    flat = (rows * n + cols).reshape(-1)[ok]
    out.view(-1).index_add_(0, flat, vals[ok].to(out.dtype))


def _gram_columns(op: SliceOperator, grid: BallGrid, cols_idx: torch.Tensor, out: torch.Tensor) -> None:
    """Add the columns ``cols_idx`` of ``Σ_i A_iᴴA_i`` into ``out [n, m]``."""
    n, m = grid.n, cols_idx.shape[0]
    pos = torch.full((n,), -1, dtype=torch.int64, device=out.device)
    pos[cols_idx] = torch.arange(m, device=out.device)
    vals, idx = _corner_pairs(op)
    rows = idx[..., :, None].expand(*idx.shape, idx.shape[-1])
    cols = pos[idx][..., None, :].expand_as(rows)
    ok = (cols >= 0).reshape(-1)
    flat = (rows * m + cols).reshape(-1)[ok]
    out.view(-1).index_add_(0, flat, vals[ok].to(out.dtype))


def _mean_renderer(mean: torch.Tensor | None, oversampling: float, apix: float) -> Callable:
    """``(R, shifts, ctf) -> centred FTs [B, D²]`` of the mean's rendered images (None if no mean)."""
    if mean is None:
        return lambda R, sh, ctf: None
    proj = FourierProjector(mean, oversampling)
    D = proj.D

    def render(R: torch.Tensor, sh, ctf) -> torch.Tensor:
        vals = render_half(proj, R.to(proj.dtype), sh, ctf, apix)
        return half_to_full(vals, D).reshape(vals.shape[0], D * D)

    return render


def _batches(particles, batch_size: int, use_ctf: bool, device, dtype) -> Iterator[tuple]:
    """Yield ``(images [B, D, D], R, shifts, ctf)`` tensors batch by batch."""
    from cryoscape.inference.ppca_em import batch_inputs

    for idx, images in particles.iter_batches(batch_size):
        idx = np.asarray(idx)
        R, sh, ctf = batch_inputs(particles, idx, use_ctf, device, dtype)
        yield torch.as_tensor(np.asarray(images), dtype=dtype, device=device), R, sh, ctf


def _disc_shells(D: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Shell ``round(|k|)`` of each centred pixel (−1 outside ``|k| < D/2``) ``[D²]`` and counts ``[D//2]``."""
    k = torch.arange(D, device=device, dtype=torch.float64) - D // 2
    r = torch.sqrt(k[:, None] ** 2 + k[None, :] ** 2).reshape(-1)
    s = torch.round(r).long()
    s = torch.where((r < D / 2) & (s < D // 2), s, torch.full_like(s, -1))
    counts = torch.bincount(s[s >= 0], minlength=D // 2).double().clamp(min=1)
    return s, counts


class _Sums:
    """Running sums of :class:`CovarianceStatistics` (half-ball rows, or the columns ``columns``)."""

    def __init__(self, grid: BallGrid, columns: torch.Tensor | None, device) -> None:
        self.grid, self.columns = grid, columns
        self.rows = grid.half if columns is None else torch.as_tensor(columns, device=device)
        m = self.rows.shape[0]
        shape = (m, grid.n) if columns is None else (grid.n, m)
        self.num = torch.zeros(shape, dtype=torch.complex128, device=device)
        self.pw = torch.zeros(shape, dtype=torch.float64, device=device)
        self.gram = torch.zeros(shape, dtype=torch.float64, device=device)
        self.shell, self.counts = _disc_shells(grid.D, device)
        self.power = torch.zeros(grid.D // 2, dtype=torch.float64, device=device)
        self.n_images = 0

    def add(self, op: SliceOperator, residual_ft: torch.Tensor, cdt: torch.dtype) -> None:
        """Add one batch: its operator and the centred residual FTs ``[B, D²]``."""
        g, n, rows = self.grid, self.grid.n, self.rows
        inside = self.shell >= 0
        self.power += torch.zeros_like(self.power).index_add_(
            0, self.shell[inside], (residual_ft[:, inside].abs() ** 2).sum(0).double())
        b = op.adjoint(residual_ft[:, g.pix_index].to(cdt), n)
        w = op.gram_diagonal(n)
        if self.columns is None:
            self.num += (b[:, rows].T @ b.conj()).to(self.num.dtype)
            self.pw += (w[:, rows].T @ w).double()
            _gram_rows(op, g, self.gram)
        else:
            self.num += (b.T @ b[:, rows].conj()).to(self.num.dtype)
            self.pw += (w.T @ w[:, rows]).double()
            _gram_columns(op, g, rows, self.gram)
        self.n_images += residual_ft.shape[0]

    def result(self, grid: BallGrid) -> CovarianceStatistics:
        res_power = (self.power / (self.counts * max(self.n_images, 1))).cpu().numpy()
        return CovarianceStatistics(grid, self.num, self.pw, self.gram, res_power, self.n_images)


def accumulate_statistics(particles, mean_volume, grid: BallGrid, *, use_ctf: bool = True,
                          oversampling: float = 2.0, batch_size: int = 512, progress: bool = False,
                          device="cpu", dtype: torch.dtype = torch.float32,
                          columns: torch.Tensor | None = None) -> CovarianceStatistics:
    """One pass over ``particles``: the sums of :class:`CovarianceStatistics`.

    ``mean_volume`` ``[D, D, D]`` real (``μ``; its images come from the shared
    forward model with ``oversampling``). With ``columns`` (voxel indices ``[m]``) only
    the columns ``J`` are accumulated: num/pair_weight/gram are ``[n, m]``
    (all rows, those columns) instead of half-ball rows.
    """
    D, apix = grid.D, float(particles.apix)
    use_ctf = use_ctf and bool(particles.has_ctf)
    g = _grid_on(grid, device)
    mean_t = None if mean_volume is None else torch.as_tensor(np.asarray(mean_volume), dtype=dtype, device=device)
    rendered = _mean_renderer(mean_t, oversampling, apix)
    sums = _Sums(g, columns, device)
    cdt = torch.complex64 if dtype == torch.float32 else torch.complex128
    bar = _progress_bar(len(particles)) if progress else None
    for images, R, sh, ctf in _batches(particles, batch_size, use_ctf, device, dtype):
        B = images.shape[0]
        op = slice_operator(g, R, sh, ctf, apix, dtype, device)
        ft = fftn_c(images, 2).reshape(B, D * D)
        ms = rendered(R, sh, ctf)
        sums.add(op, ft if ms is None else ft - ms, cdt)
        if bar is not None:
            bar.update(B)
    if bar is not None:
        bar.close()
    return sums.result(grid)


def _progress_bar(total: int):
    from tqdm import tqdm

    return tqdm(total=total, unit="img", desc="covariance statistics", leave=False)


def noise_from_residual_power(residual_power: np.ndarray, band: float = NOISE_BAND) -> float:
    """``s²`` per Fourier coefficient: the mean residual power of shells ``>= band · D/2``."""
    p = np.asarray(residual_power, dtype=np.float64)
    start = math.ceil(band * p.size)
    if start >= p.size:
        raise InputError(f"noise band {band} leaves no Fourier shell; use a value below 1")
    return float(p[start:].mean())


def _noise(stats: CovarianceStatistics, noise_var: float | None, D: int, band: float) -> float:
    """``s²`` per Fourier coefficient from a given pixel variance or the residual spectrum."""
    if noise_var is not None:
        if not noise_var > 0:
            raise InputError(f"noise_var must be positive; got {noise_var}")
        return float(noise_var) * D * D
    return noise_from_residual_power(stats.residual_power, band)
