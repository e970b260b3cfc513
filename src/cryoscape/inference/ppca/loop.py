"""The PPCA EM iterations: :func:`fit_ppca` and one pass (E-step with the M-step sums, then the update).

The model and every update: :mod:`cryoscape.inference.ppca_em`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np
import torch

from cryoscape.inference.ppca.checkpoint import EMState, copy_model, new_state, restore, snapshot
from cryoscape.inference.ppca.estep import (contrast_estimate, expected_residual, frequency_weights, image_terms,
                                            log_likelihood, posterior)
from cryoscape.inference.ppca.halves import insert_by_half, m_step, passes
from cryoscape.inference.ppca.mstep import MStepAccumulator
from cryoscape.inference.ppca.result import PPCAResult, constrained, finish
from cryoscape.inference.ppca.start import batch_inputs, check_inputs, check_representation, initial_model
from cryoscape.models.representation import LinearInLatent

__all__ = ["SIGMA2_FLOOR", "MIN_CONTRAST_STD", "fit_ppca"]

#: Floor of the learnt contrast prior standard deviation.
MIN_CONTRAST_STD = 1e-3
#: Floor of the noise variance relative to the mean data power per coefficient.
SIGMA2_FLOOR = 1e-8


@dataclass
class _Pass:
    """What every iteration of one fit shares: the data, the E-step weights and the M-step settings."""

    particles: object
    apix: float
    use_ctf: bool
    batch_size: int
    h: torch.Tensor  # E-step frequency weights [P]
    halves: np.ndarray | None  # half-set labels (N,), with the FSC filter
    mask: torch.Tensor
    ridge: float
    resolution_limit_A: float | None
    orthogonal: bool  # keep the components orthogonal to the masked mean (free contrast)

    @property
    def n_coeff(self) -> float:
        return float(self.h.sum())


@dataclass
class _Sums:
    """One pass's M-step accumulators and its sums of expected residual, log-likelihood and data power."""

    accs: list[MStepAccumulator]
    residual: float = 0.0
    loglik: float = 0.0
    power: float = 0.0


def fit_ppca(particles, representation: LinearInLatent, n_iterations: int = 20, mask=None,
             resolution_limit_A: float | None = None, seed: int = 0, progress: bool = True, *,
             ridge: float = 1e-2, estimate_contrast: bool = True, contrast_warmup: int = 3,
             contrast_prior_std: float | None = None, use_ctf: bool = True,
             batch_size: int = 256, device: str | torch.device = "cpu",
             dtype: torch.dtype = torch.float32, initial_components=None,
             start_state: Mapping | None = None, fsc_filter: bool = True, cross_halves: bool = True,
             latent_resolution_A: float | None = None,
             on_iteration: Callable[[int, dict], None] | None = None) -> PPCAResult:
    """Fit ``V_i = X0 + Σ_k b_ik X_k`` to a posed particle set by EM (see :mod:`cryoscape.inference.ppca_em`).

    Args:
        particles: :class:`~cryoscape.particles.ParticleSet` with poses (and CTF, used
            when present and ``use_ctf``).
        representation: the representation to fit, a template offering
            :class:`~cryoscape.models.representation.LinearInLatent` (e.g.
            ``LinearHyperMolecule.empty(box, latent_dim)``): its ``box`` (the particles'),
            ``latent_dim`` (``K``, the number of principal volumes, ``< len(particles)``)
            and ``oversampling`` are used; its volumes are not. Every model of the fit
            is ``representation.with_volumes(mean, components)``.
        n_iterations: EM iterations (each one pass over the images).
        mask: real-space soft mask ``[D, D, D]`` in ``[0, 1]`` (array, tensor or MRC
            path) confining the components; default
            :func:`cryoscape.reconstruct.backprojection.default_mask`.
        resolution_limit_A: frequencies finer than this (Å) are ignored by the
            E-step and zeroed in every volume; None uses all up to Nyquist.
        seed: seeds the random initial components.
        progress: show a progress bar over iterations.
        ridge: the M-step ridge relative to the shell-mean weight of the mean volume.
        estimate_contrast: estimate ``a_i`` (else 1); contrast_warmup: iterations with
            ``a_i = 1`` first, while the components start to explain the heterogeneity.
        contrast_prior_std: standard deviation of the contrast prior around 1; None
            (default) learns it: it starts at ``CONTRAST_PRIOR_STD`` and after every
            iteration with a free contrast becomes ``sqrt(mean_i E[(a_i − 1)²])``
            (the EM update of a prior variance, from each image's MAP contrast and its
            posterior variance), floored at ``MIN_CONTRAST_STD``; data without contrast
            variation thus drive it down instead of fitting noise with it.
        batch_size: images per batch; device, dtype: where and in which precision to compute.
        initial_components: ``[K, D, D, D]`` starting principal volumes (e.g. the
            top eigenvectors of :mod:`cryoscape.inference.covariance`, scaled by
            the square roots of their eigenvalues); default: seeded smooth random
            volumes.
        start_state: a state passed to ``on_iteration`` by an earlier fit with the
            same data and settings; the fit continues after its iteration, and the
            result equals an uninterrupted fit (EM draws no random numbers after
            the start).
        fsc_filter: keep the M-step sums per half set and filter the mean and each
            component by its half-set FSC; the half sets are ``particles.half_set``,
            split at random (``seed``) where unknown. The last iteration's curves are
            in :attr:`PPCAResult.half_set_fsc`.
        cross_halves: with the filter, keep one model per half set and take each
            image's posterior from the other half's model.
        latent_resolution_A: infer the latents (E-step: posteriors, contrasts, noise
            variance, objective) from frequencies up to this resolution (Å) only; the
            M-step still uses every frequency up to ``resolution_limit_A``, so the
            principal volumes at finer resolution are what moves with the latents
            read at coarser resolution. None: the same frequencies as the M-step.
        on_iteration: called after every iteration with ``(iterations done, state)``;
            ``state`` holds tensors and floats only (volumes, noise variance,
            contrasts, posteriors, objective), so it can be saved with
            :meth:`~cryoscape.io.run_dir.RunDirectory.save_checkpoint`.
    Returns:
        :class:`PPCAResult` with orthonormal principal volumes.
    Raises:
        InputError: ``representation`` is not linear in its latent, or does not fit the particles.
    """
    from cryoscape.reconstruct.backprojection import load_mask

    template = check_representation(representation, particles)
    latent_dim = int(template.latent_dim)
    check_inputs(particles, latent_dim, n_iterations)
    D, apix, n = int(particles.box), float(particles.apix), len(particles)
    use_ctf = use_ctf and bool(particles.has_ctf)
    mask_t = torch.as_tensor(load_mask(mask, D, apix), dtype=dtype, device=device)
    saved_halves = None
    if start_state is not None:
        model, state, saved_halves, objective, first = restore(start_state, template, n, device, dtype)
    else:
        model = initial_model(template, particles, mask_t, ridge, use_ctf, batch_size, device, dtype, seed,
                              initial_components)
        state, objective, first = new_state(n, latent_dim, device, dtype, contrast_prior_std), [], 0
    h = frequency_weights(D, apix, _coarser_limit(resolution_limit_A, latent_resolution_A), device, dtype)
    halves = _half_labels(particles, n, seed) if fsc_filter else None
    cross = (saved_halves or [copy_model(model) for _ in range(2)]) if fsc_filter and cross_halves else None
    ctx = _Pass(particles, apix, use_ctf, batch_size, h, halves, mask_t, ridge, resolution_limit_A,
                estimate_contrast)
    curves = None
    for it in _steps(first, n_iterations, progress):
        free = estimate_contrast and it >= contrast_warmup
        curves = _iteration(ctx, model, state, cross, objective, free, learn_contrast_std=contrast_prior_std is None)
        if on_iteration is not None:
            on_iteration(it + 1, snapshot(model, state, objective, it + 1, cross))
    result = finish(model, state.mean, state.cov, state.contrast, state.s2, objective, apix)
    result.half_set_fsc = curves
    result.contrast_prior_std = float(state.contrast_std) if estimate_contrast else 0.0
    return result


def _coarser_limit(a: float | None, b: float | None) -> float | None:
    """The coarser of two resolution limits in Å (None: no limit)."""
    limits = [x for x in (a, b) if x is not None]
    return max(limits) if limits else None


def _half_labels(particles, n: int, seed: int) -> np.ndarray:
    """Gold-standard half-set labels ``(n,)``: the particles' own, random (``seed``) where unknown."""
    from cryoscape.reconstruct.backprojection import assign_half_sets

    return assign_half_sets(getattr(particles, "half_set", None), n, seed)


def _steps(first: int, n_iterations: int, progress: bool):
    """The iteration numbers still to run, with a progress bar when asked."""
    steps = range(first, n_iterations)
    if not progress:
        return steps
    from tqdm import tqdm

    return tqdm(steps, desc="PPCA EM", unit="iter", leave=False)


def _iteration(ctx: _Pass, model: LinearInLatent, state: EMState, cross: list[LinearInLatent] | None,
               objective: list[float], free: bool, learn_contrast_std: bool) -> np.ndarray | None:
    """One EM iteration in place: E-step pass, M-step, contrast normalisation, noise and prior updates.

    Appends the objective; returns the half-set FSC of the M-step (None without the filter).
    """
    n = len(ctx.particles)
    state.contrast_ss = 0.0
    sums = _e_pass(ctx, model, state, cross, free)
    objective.append(sums.loglik / n)
    mean, comps, curves, half_models = m_step(sums.accs, ctx.ridge, ctx.apix, ctx.resolution_limit_A, ctx.mask,
                                              cross is not None)
    del sums.accs
    scale = float(state.contrast.mean()) if free else 1.0
    state.contrast /= scale
    model.set_volumes(mean * scale, constrained(mean, comps, ctx.mask, ctx.orthogonal) * scale)
    for half, (m_h, c_h) in zip(cross or [], half_models or []):
        half.set_volumes(m_h * scale, constrained(m_h, c_h, ctx.mask, ctx.orthogonal) * scale)
    n_coeff = ctx.n_coeff
    state.s2 = max(sums.residual / (n * n_coeff), sums.power / (n * n_coeff) * SIGMA2_FLOOR)
    if free and learn_contrast_std:
        state.contrast_std = max(math.sqrt(state.contrast_ss / n), MIN_CONTRAST_STD)
    return curves


def _e_pass(ctx: _Pass, model: LinearInLatent, state: EMState, cross: list[LinearInLatent] | None,
            free: bool) -> _Sums:
    """One E-step pass over the particles with the M-step sums.

    One accumulator, or one per half set with the FSC filter; ``cross``: the two half sets'
    models, each image's posterior then comes from the other half's. ``free``: estimate the
    contrasts (else 1). Updates the posteriors and contrasts in ``state`` (and ``s2`` on the
    first batch of a fit).
    """
    device, dtype = model.mean.device, model.mean.dtype
    sums = _Sums([MStepAccumulator(model.box, model.latent_dim, model.oversampling, device, dtype)
                  for _ in range(1 if ctx.halves is None else 2)])
    for idx, images, e_model in passes(ctx.particles, model, ctx.halves, cross, ctx.batch_size):
        R, sh, ctf = batch_inputs(ctx.particles, idx, ctx.use_ctf, device, dtype)
        terms = image_terms(e_model, torch.as_tensor(images), R, sh, ctf, ctx.apix, ctx.h)
        if state.s2 is None:
            state.s2 = _first_noise_variance(terms, ctx.n_coeff)
        a = _contrasts(terms, state) if free else torch.ones_like(terms["yy"])
        post = posterior(terms["C"], terms["d"], a, state.s2)
        insert_by_half(sums.accs, None if ctx.halves is None else torch.as_tensor(ctx.halves[idx]),
                       torch.as_tensor(images), R, sh, ctf, ctx.apix, a, post)
        ti = torch.as_tensor(idx, device=device)
        state.mean[ti], state.cov[ti], state.contrast[ti] = post.mean, post.cov, a
        sums.residual += float(expected_residual(terms, a, post).sum())
        sums.loglik += float(log_likelihood(terms, a, post, state.s2, ctx.n_coeff).sum())
        sums.power += float(terms["yy"].sum())
    return sums


def _first_noise_variance(terms: Mapping[str, torch.Tensor], n_coeff: float) -> float:
    """``s²`` before the first M-step: the mean residual of the first batch after the mean's image, floored."""
    q0 = terms["yy"] - 2 * terms["d"][:, 0] + terms["C"][:, 0, 0]
    return max(float(q0.mean()) / n_coeff, float(terms["yy"].mean()) / n_coeff * SIGMA2_FLOOR)


def _contrasts(terms: Mapping[str, torch.Tensor], state: EMState) -> torch.Tensor:
    """The batch's MAP contrasts; adds their ``Σ E[(a − 1)²]`` to ``state.contrast_ss``."""
    a, var_a = contrast_estimate(terms["C"], terms["d"], state.s2, state.contrast_std, return_variance=True)
    state.contrast_ss += float(((a - 1.0) ** 2 + var_a).sum())
    return a
