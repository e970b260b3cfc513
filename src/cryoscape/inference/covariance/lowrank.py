"""Principal volumes at full resolution from sampled covariance columns, without forming ``Σ``.

:func:`low_rank_covariance` estimates the columns ``Σ[:, J]`` of a small
low-frequency ball ``J`` (regularised pairwise rule), takes the Nyström factor
``Σ ≈ Z Zᴴ`` and finds the top eigenpairs of the masked real-space operator
``Φ Z Zᴴ Φᴴ`` with :func:`.volumes.randomized_eigh`.
"""

from __future__ import annotations

import numpy as np
import torch

from cryoscape.errors import InputError

from .estimate import CovarianceResult, _check_particles, _mean_array, _radius
from .grid import BallGrid, ball_grid
from .solvers import PRIOR_FLOOR
from .statistics import NOISE_BAND, CovarianceStatistics, _noise, accumulate_statistics
from .volumes import _finish_signs, _real_orthonormal, _to_volumes, _weight_volume, randomized_eigh

__all__ = ["low_rank_covariance"]


def _column_voxels(grid: BallGrid, column_radius: float, radius: float) -> torch.Tensor:
    """Indices ``J`` of the voxels with ``|v| <= column_radius`` (checked to lie in ``(0, radius]``)."""
    if not 0 < column_radius <= radius:
        raise InputError(f"column_radius {column_radius:g} px must lie in (0, {radius:g}]")
    r = torch.sqrt((grid.voxels.double() ** 2).sum(-1))
    return torch.nonzero(r <= column_radius + 1e-9).reshape(-1)


def low_rank_covariance(particles, mean_volume, *, latent_dim: int = 8, resolution_A: float | None = None,
                        column_radius: float = 3.0, mask=None, noise_var: float | None = None,
                        regularization: float = 1.0, noise_band: float = NOISE_BAND,
                        use_ctf: bool = True, oversampling: float = 2.0, batch_size: int = 512,
                        oversample: int = 10, n_power: int = 2, seed: int = 0, progress: bool = False,
                        device="cpu", dtype: torch.dtype = torch.float32) -> CovarianceResult:
    """Top principal volumes from sampled covariance columns, without forming ``Σ``.

    The columns ``J`` are the voxels with ``|v| <= column_radius`` (cycles per box);
    every row up to ``resolution_A`` (None: Nyquist) is estimated for them by the
    regularised pairwise rule (prior ``σ²`` from the columns' own diagonal), then
    ``Σ ≈ Z Zᴴ`` (Nyström) and :func:`randomized_eigh` of the masked real-space
    operator ``Φ Z Zᴴ Φᴴ`` (see :mod:`cryoscape.inference.covariance`). Nearest-neighbour
    slicing. Memory: ``O(n m)`` for ``n`` voxels and ``m = |J|`` columns.
    """
    from cryoscape.reconstruct.backprojection import load_mask

    _check_particles(particles, "covariance estimation")
    D, apix = int(particles.box), float(particles.apix)
    mean = _mean_array(mean_volume, D)
    mask_arr = load_mask(mask, D, apix)
    radius = _radius(D, apix, resolution_A)
    grid = ball_grid(D, radius, "nearest")
    J = _column_voxels(grid, column_radius, radius)
    batch_size = min(batch_size, max(8, int(2e7 // grid.n)))  # bounds the [B, n] backprojections
    stats = accumulate_statistics(particles, mean, grid, use_ctf=use_ctf, oversampling=oversampling,
                                  batch_size=batch_size, progress=progress, device=device, dtype=dtype,
                                  columns=J)
    s2 = _noise(stats, noise_var, D, noise_band)
    cols = _column_solve(stats, J, s2, regularization)
    comps, evals = _low_rank_eigen(cols, J, grid, latent_dim, mask_arr, oversample, n_power, seed)
    return CovarianceResult(comps, evals, mean, s2 / (D * D), float(resolution_A or 2 * apix), radius,
                            "nearest", "low-rank", stats.residual_power, None, grid, [], len(particles), apix)


def _column_solve(stats: CovarianceStatistics, J: torch.Tensor, s2: float, regularization: float) -> torch.Tensor:
    """Regularised pairwise estimate of the columns ``Σ[:, J]`` ``[n, m]``."""
    rhs = stats.num - s2 * stats.gram
    den = stats.pair_weight
    if regularization:
        diag_all = torch.zeros(stats.grid.n, dtype=torch.float64, device=rhs.device)
        dj = rhs[J, torch.arange(J.shape[0])].real / den[J, torch.arange(J.shape[0])].clamp(min=1e-30)
        diag_all[J] = dj
        # shells beyond the columns' radius take the outermost column shell's value, scaled down by
        # the ratio of the mean residual power (a proxy for the signal spectrum)
        prior = _shell_prior_extrapolated(diag_all, J, stats)
        lam = regularization * s2 * s2 / (prior[:, None] * prior[J][None, :])
    else:
        lam = torch.zeros_like(den)
    cols = rhs / (den + lam).clamp(min=1e-300)
    return torch.where(den + lam > 0, cols, torch.zeros_like(cols))


def _column_shell_means(diag_all: torch.Tensor, J: torch.Tensor, shell: torch.Tensor, ns: int
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Shell means ``[ns]`` of ``diag_all`` over the column voxels ``J``, and which shells hold any."""
    inJ = torch.zeros(shell.shape[0], dtype=torch.bool, device=diag_all.device)
    inJ[J] = True
    sums = torch.zeros(ns, dtype=torch.float64, device=diag_all.device).index_add_(0, shell[inJ], diag_all[inJ])
    cnt = torch.bincount(shell[inJ], minlength=ns).double()
    known = cnt > 0
    return torch.where(known, sums / cnt.clamp(min=1), torch.zeros_like(sums)), known


def _excess_power_ratio(residual_power, ns: int, last: int, device) -> torch.Tensor:
    """``(P(s) − floor) / (P(last) − floor)`` per shell ``[ns]`` (excess clamped at 0, floor the outer fifth)."""
    p = torch.as_tensor(residual_power, dtype=torch.float64, device=device)
    p = torch.cat([p, p[-1:].expand(max(0, ns - p.shape[0]))])[:ns]
    floor_p = float(p[-max(1, p.shape[0] // 5):].mean())
    excess = (p - floor_p).clamp(min=0)
    return excess / max(float(excess[last]), 1e-300)


def _shell_prior_extrapolated(diag_all: torch.Tensor, J: torch.Tensor, stats: CovarianceStatistics) -> torch.Tensor:
    """Prior ``σ²(v)`` ``[n]``: column shell means inside the column ball; outside, the last such shell's
    value times the ratio ``(P(|v|) − s²) / (P(r_J) − s²)`` of the excess residual power (clamped)."""
    g = stats.grid
    r = torch.sqrt((g.voxels.double() ** 2).sum(-1)).to(diag_all.device)
    shell = torch.round(r).long()
    ns = int(shell.max()) + 1
    mean, known = _column_shell_means(diag_all, J, shell, ns)
    last = int(torch.nonzero(known).max())
    ext = mean[last] * _excess_power_ratio(stats.residual_power, ns, last, diag_all.device)
    vals = torch.where(known, mean, ext)
    top = float(vals.max()) if bool((vals > 0).any()) else 1.0
    return vals.clamp(min=PRIOR_FLOOR * top)[shell]


def _low_rank_eigen(cols: torch.Tensor, J: torch.Tensor, grid: BallGrid, k: int, mask, oversample: int,
                    n_power: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Nyström factor of the columns and the randomised eigen-decomposition in masked real space."""
    W = cols[J].to(torch.complex128)
    W = 0.5 * (W + W.conj().T)
    ew, Vw = torch.linalg.eigh(W)
    keep = ew > ew.max() * 1e-10
    sel = torch.nonzero(grid.keep).reshape(-1)  # rows |v| <= radius, as in principal_volumes
    Z = cols[sel].to(torch.complex128) @ (Vw[:, keep] / torch.sqrt(ew[keep]))  # Σ ≈ Z Zᴴ   [n', r]
    h = _weight_volume(grid.D, mask, "nearest", "divide").to(torch.complex128)
    D = grid.D
    # Φ Z: real-space columns (masked, corrected) [D³, r]
    PZ = _to_volumes(grid, Z.T, sel, h).reshape(Z.shape[1], -1).T
    matvec = lambda X: PZ @ (PZ.conj().T @ X.to(PZ.dtype))
    _, vecs = randomized_eigh(matvec, PZ.shape[0], min(k, PZ.shape[1]), oversample, n_power, seed,
                              dtype=torch.complex128)
    vols = vecs.T.reshape(-1, D, D, D)
    comps = torch.where(h.real != 0, _real_orthonormal(vols), 0.0)
    flat = comps.reshape(comps.shape[0], -1).to(torch.complex128)
    ev = ((flat @ PZ).abs() ** 2).sum(-1)
    return _finish_signs(comps, ev)
