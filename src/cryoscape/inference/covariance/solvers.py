"""Solving the covariance normal equations ``L(Σ) + Λ ∘ Σ = RHS`` on the ball.

:func:`pairwise_solve` divides voxel pair by voxel pair (exact for nearest
slicing, the diagonal approximation for trilinear); :func:`cg_solve` runs
preconditioned conjugate gradients with :func:`normal_operator`, the exact
``L`` applied batch by batch. ``Λ`` is the shell-prior shrinkage of
:func:`_regulariser`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from collections.abc import Callable, Iterable

import torch

from .grid import BallGrid
from .operators import SliceOperator
from .statistics import CovarianceStatistics, hermitian_fill

__all__ = ["PRIOR_FLOOR", "pairwise_solve", "normal_operator", "CGInfo", "cg_solve"]

#: Floor of the shell prior variance relative to its largest shell value.
PRIOR_FLOOR = 1e-3


def _shell_prior(diag: torch.Tensor, grid: BallGrid) -> torch.Tensor:
    """``σ²(shell)`` per voxel ``[n]``: shell means of ``Re diag`` floored at ``PRIOR_FLOOR`` of the largest."""
    r = torch.sqrt((grid.voxels.double() ** 2).sum(-1)).to(diag.device)
    shell = torch.round(r).long()
    ns = int(shell.max()) + 1
    sums = torch.zeros(ns, dtype=torch.float64, device=diag.device).index_add_(0, shell, diag.real.double())
    cnt = torch.bincount(shell, minlength=ns).double().clamp(min=1)
    mean = sums / cnt
    top = float(mean.max()) if bool((mean > 0).any()) else 1.0
    return mean.clamp(min=PRIOR_FLOOR * top)[shell]


def _regulariser(stats: CovarianceStatistics, s2: float, regularization: float,
                 prior: torch.Tensor | None) -> torch.Tensor:
    """``Λ = regularization · s⁴ / (σ²(v) σ²(v'))`` ``[n, n]`` (zero when ``regularization == 0``)."""
    n = stats.grid.n
    if regularization == 0:
        return torch.zeros(n, n, dtype=torch.float64, device=stats.num.device)
    if prior is None:
        raw = hermitian_fill(stats.num, stats.grid) - s2 * hermitian_fill(stats.gram, stats.grid)
        den = hermitian_fill(stats.pair_weight, stats.grid)
        diag = torch.diagonal(raw).real / torch.diagonal(den).clamp(min=1e-30)
        prior = _shell_prior(diag, stats.grid)
    return regularization * s2 * s2 / (prior[:, None] * prior[None, :])


def pairwise_solve(stats: CovarianceStatistics, s2: float, regularization: float = 1.0,
                   prior: torch.Tensor | None = None) -> torch.Tensor:
    """``Σ = (Σ b bᴴ − s² Σ AᴴA) / (W + Λ)`` per voxel pair -> ``[n, n]`` complex128 Hermitian.

    Exact least squares (``regularization = 0``) for nearest-neighbour slicing;
    the diagonal approximation of ``L`` for trilinear. ``prior``: ``σ²(v)`` ``[n]``
    or None (from the data, see :mod:`cryoscape.inference.covariance`).
    """
    g = stats.grid
    rhs = hermitian_fill(stats.num, g) - s2 * hermitian_fill(stats.gram, g)
    den = hermitian_fill(stats.pair_weight, g)
    lam = _regulariser(stats, s2, regularization, prior)
    sig = rhs / (den + lam).clamp(min=1e-300)
    sig = torch.where(den + lam > 0, sig, torch.zeros_like(sig))
    return 0.5 * (sig + sig.conj().T)


def _operator_chunk(Sigma: torch.Tensor, A: torch.Tensor, idx: torch.Tensor, out: torch.Tensor) -> None:
    """Add ``Σ_i A_iᴴA_i Σ A_iᴴA_i`` of a few images (weights ``A``, indices ``idx`` ``[b, P, c]``) to ``out``."""
    n, c = Sigma.shape[0], idx.shape[-1]
    b, P = idx.shape[0], idx.shape[1]
    X = sum(A[..., j, None] * Sigma[idx[..., j]] for j in range(c))  # A Σ  [b, P, n]
    M = sum(torch.gather(X, 2, idx[:, None, :, j].expand(b, P, P)) * A[:, None, :, j].conj()
            for j in range(c))  # A Σ Aᴴ [b, P, P]
    Y = torch.zeros(b, P, n, dtype=Sigma.dtype, device=Sigma.device)
    for j in range(c):  # (A Σ Aᴴ) A  [b, P, n]
        Y.scatter_add_(2, idx[:, None, :, j].expand(b, P, P), M * A[:, None, :, j])
    for j in range(c):  # Aᴴ (...)
        rows = idx[..., j].reshape(-1)
        vals = (A[..., j].conj()[..., None] * Y).reshape(-1, n)
        out.index_add_(0, rows, vals)


def _operator_batch(Sigma: torch.Tensor, op: SliceOperator, chunk: int = 8) -> torch.Tensor:
    """``Σ_i A_iᴴA_i Σ A_iᴴA_i`` over one batch (``Sigma [n, n]`` complex) -> ``[n, n]``."""
    out = torch.zeros_like(Sigma)
    A, idx = op.weight.to(Sigma.dtype), op.idx
    for a in range(0, idx.shape[0], chunk):
        _operator_chunk(Sigma, A[a:a + chunk], idx[a:a + chunk], out)
    return out


def normal_operator(Sigma: torch.Tensor, ops: Iterable[SliceOperator]) -> torch.Tensor:
    """``L(Σ) = Σ_i A_iᴴA_i Σ A_iᴴA_i`` for ``Sigma [n, n]`` over an iterable of :class:`SliceOperator`."""
    out = torch.zeros_like(Sigma)
    for op in ops:
        out += _operator_batch(Sigma, op)
    return out


@dataclass
class CGInfo:
    """Relative residual ``‖RHS − (L + Λ)Σ‖ / ‖RHS‖`` after each iteration."""

    residuals: list[float] = field(default_factory=list)


def cg_solve(apply_L: Callable[[torch.Tensor], torch.Tensor], rhs: torch.Tensor, lam: torch.Tensor,
             precond: torch.Tensor, n_iterations: int = 20, tol: float = 1e-6,
             x0: torch.Tensor | None = None) -> tuple[torch.Tensor, CGInfo]:
    """Preconditioned conjugate gradients for ``L(Σ) + Λ ∘ Σ = RHS`` over Hermitian ``[n, n]`` matrices.

    ``apply_L``: ``Σ -> L(Σ)`` (self-adjoint, positive semi-definite for ``⟨X, Y⟩ = Re tr(XᴴY)``);
    ``precond``: pairwise ``[n, n]`` positive weights ``M`` with ``M⁻¹ ∘ R`` the
    preconditioned residual (the pairwise solve's denominator ``W + Λ``).
    """
    dot = lambda a, b: float((a.conj() * b).real.sum())
    x = torch.zeros_like(rhs) if x0 is None else x0.clone()
    r = rhs - (apply_L(x) + lam * x) if x0 is not None else rhs.clone()
    z = r / precond
    p = z.clone()
    rz = dot(r, z)
    norm_b = math.sqrt(max(dot(rhs, rhs), 1e-300))
    info = CGInfo()
    for _ in range(n_iterations):
        Ap = apply_L(p) + lam * p
        alpha = rz / max(dot(p, Ap), 1e-300)
        x = x + alpha * p
        r = r - alpha * Ap
        res = math.sqrt(dot(r, r)) / norm_b
        info.residuals.append(res)
        if res < tol:
            break
        z = r / precond
        rz_new = dot(r, z)
        p = z + (rz_new / rz) * p
        rz = rz_new
    return 0.5 * (x + x.conj().T), info
