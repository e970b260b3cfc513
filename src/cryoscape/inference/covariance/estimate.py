"""The dense low-resolution estimator: statistics, normal equations, principal volumes.

:func:`estimate_covariance` runs one pass of :func:`.statistics.accumulate_statistics`,
solves for the full ``Σ`` on the ball (pairwise, optionally refined by conjugate
gradients over the images) and returns its principal volumes as a
:class:`CovarianceResult`; the input checks shared with the other drivers live
here too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from cryoscape.errors import InputError

from .grid import BallGrid, _grid_on, ball_grid
from .operators import slice_operator
from .solvers import CGInfo, _regulariser, cg_solve, normal_operator, pairwise_solve
from .statistics import NOISE_BAND, CovarianceStatistics, _noise, accumulate_statistics, hermitian_fill
from .volumes import principal_volumes

__all__ = ["CovarianceResult", "estimate_covariance"]

SOLVERS = ("pairwise", "cg")


@dataclass
class CovarianceResult:
    """Principal volumes of a particle set's covariance.

    components ``[K, D, D, D]`` float32: orthonormal (voxel L2) principal volumes,
    zero outside the mask; eigenvalues ``[K]``: variance of each coordinate
    (descending); mean ``[D, D, D]`` float32 the ``μ`` used; noise_var: real-space
    noise variance per pixel ``σ² = s²/D²``; resolution_A and radius_px: the
    resolution limit and the pixel radius ``r``; interpolation, solver;
    residual_power ``[D//2]`` per shell (per Fourier coefficient); covariance: the
    Fourier covariance ``[n, n]`` complex on ``grid.voxels`` (None for the low-rank
    route); cg_residuals: relative CG residual per iteration (empty otherwise);
    n_particles; apix.
    """

    components: np.ndarray
    eigenvalues: np.ndarray
    mean: np.ndarray
    noise_var: float
    resolution_A: float
    radius_px: float
    interpolation: str
    solver: str
    residual_power: np.ndarray
    covariance: torch.Tensor | None
    grid: BallGrid | None
    cg_residuals: list[float]
    n_particles: int
    apix: float


def _check_particles(particles, what: str) -> None:
    particles.require_poses(what)
    if len(particles) < 2:
        raise InputError(f"{getattr(particles, 'name', 'the particle set')} has {len(particles)} particle(s); "
                         f"{what} needs many")


def _radius(D: int, apix: float, resolution_A: float | None) -> float:
    """Pixel radius ``D · apix / resolution_A`` (``D/2 − 1`` for None), checked to lie in ``[1, D/2)``."""
    if resolution_A is None:
        return D / 2 - 1
    if not resolution_A > 0:
        raise InputError(f"resolution_A must be a positive length in Å; got {resolution_A}")
    r = D * apix / resolution_A
    if r >= D / 2:
        raise InputError(f"{resolution_A:g} Å is finer than Nyquist ({2 * apix:g} Å) for these particles; "
                         "choose a coarser resolution")
    if r < 1:
        raise InputError(f"{resolution_A:g} Å is coarser than the box ({D * apix:g} Å); choose a finer resolution")
    return r


def _mean_array(mean_volume, D: int) -> np.ndarray:
    """The mean volume as a float32 ``[D, D, D]`` array (checked against the box)."""
    m = np.asarray(mean_volume.detach().cpu() if isinstance(mean_volume, torch.Tensor) else mean_volume,
                   dtype=np.float32)
    if m.shape != (D, D, D):
        raise InputError(f"the mean volume is {m.shape} but the particles have box {D}; give a [{D}, {D}, {D}] map")
    return m


def _check_choices(solver: str, latent_dim: int) -> None:
    if solver not in SOLVERS:
        raise InputError(f"solver {solver!r} is not 'pairwise' or 'cg'")
    if latent_dim < 1:
        raise InputError(f"latent_dim is {latent_dim}; ask for at least one principal volume")


def estimate_covariance(particles, mean_volume, *, latent_dim: int = 8, resolution_A: float = 15.0,
                        mask=None, noise_var: float | None = None, interpolation: str = "nearest",
                        solver: str = "pairwise", regularization: float = 1.0, cg_iterations: int = 10,
                        noise_band: float = NOISE_BAND, use_ctf: bool = True, oversampling: float = 2.0,
                        batch_size: int = 512, progress: bool = False, device="cpu",
                        dtype: torch.dtype = torch.float32) -> CovarianceResult:
    """Low-resolution covariance of the volumes of a posed particle set and its top principal volumes.

    Args:
        particles: :class:`~cryoscape.particles.ParticleSet` with poses (CTF used when present).
        mean_volume: ``μ`` ``[D, D, D]`` (e.g. a consensus reconstruction of the same particles).
        latent_dim: number of principal volumes ``K``.
        resolution_A: frequencies finer than this (Å) are ignored (pixel radius ``D·apix/resolution_A``).
        mask: soft real-space mask ``[D, D, D]`` (array or MRC path) in which the volumes are
            orthonormal; default :func:`cryoscape.reconstruct.backprojection.default_mask`.
        noise_var: real-space noise variance per pixel ``σ²``; None estimates it from the
            residual power beyond ``noise_band · Nyquist``.
        interpolation: ``"nearest"`` or ``"trilinear"`` slicing (see :mod:`cryoscape.inference.covariance`).
        solver: ``"pairwise"`` (closed form per voxel pair; exact least squares for nearest)
            or ``"cg"`` (conjugate gradients on the exact operator, ``cg_iterations`` passes
            over the images, preconditioned and started by the pairwise solution).
        regularization: weight of the shell prior (0: plain least squares).
        use_ctf, oversampling (of the mean's slices), batch_size, progress, device, dtype.
    Returns:
        :class:`CovarianceResult`.
    """
    from cryoscape.reconstruct.backprojection import load_mask

    _check_particles(particles, "covariance estimation")
    _check_choices(solver, latent_dim)
    D, apix = int(particles.box), float(particles.apix)
    mean = _mean_array(mean_volume, D)
    mask_arr = load_mask(mask, D, apix)
    grid = ball_grid(D, _radius(D, apix, resolution_A), interpolation)
    stats = accumulate_statistics(particles, mean, grid, use_ctf=use_ctf, oversampling=oversampling,
                                  batch_size=batch_size, progress=progress, device=device, dtype=dtype)
    s2 = _noise(stats, noise_var, D, noise_band)
    Sigma = pairwise_solve(stats, s2, regularization)
    residuals: list[float] = []
    correction = "divide"
    if solver == "cg":
        Sigma, info = _cg_over_particles(particles, stats, Sigma, s2, regularization, cg_iterations,
                                         use_ctf, batch_size, device)
        residuals = info.residuals
        correction = "multiply" if interpolation == "trilinear" else "divide"
    comps, evals = principal_volumes(Sigma, grid, min(latent_dim, int(grid.keep.sum())), mask_arr, correction)
    return CovarianceResult(comps, evals, mean, s2 / (D * D), float(resolution_A), grid.radius, interpolation,
                            solver, stats.residual_power, Sigma, grid, residuals, len(particles), apix)


def _cg_over_particles(particles, stats: CovarianceStatistics, Sigma0: torch.Tensor, s2: float,
                       regularization: float, n_iterations: int, use_ctf: bool, batch_size: int,
                       device) -> tuple[torch.Tensor, CGInfo]:
    """CG on the exact operator, streaming the images' poses and CTFs once per iteration."""
    from cryoscape.inference.ppca_em import batch_inputs

    g = _grid_on(stats.grid, device)
    apix = float(particles.apix)
    use_ctf = use_ctf and bool(particles.has_ctf)

    def ops():
        for start in range(0, len(particles), batch_size):
            idx = np.arange(start, min(len(particles), start + batch_size))
            R, sh, ctf = batch_inputs(particles, idx, use_ctf, device, torch.float64)
            yield slice_operator(g, R, sh, ctf, apix, torch.float64, device)

    rhs = hermitian_fill(stats.num, g) - s2 * hermitian_fill(stats.gram, g)
    lam = _regulariser(stats, s2, regularization, None)
    den = hermitian_fill(stats.pair_weight, g) + lam
    precond = den.clamp(min=float(den.max()) * 1e-12)
    return cg_solve(lambda X: normal_operator(X, ops()), rhs, lam, precond, n_iterations, x0=Sigma0)
