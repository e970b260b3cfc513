"""A smooth curve through per-particle latent posteriors, and each particle's position along it.

A linear method (PPCA) gives every particle a Gaussian posterior over its
latent ``b_i``; a one-dimensional motion is a *curve* in that space, which no
single linear coordinate follows once it bends. This module fits the curve to
the posteriors themselves, so the position of each particle along it is
weighted by how well its own image pins each latent direction down (views in
which a motion is invisible count little along it).

Model
-----
- Curve: ``c(s) = Σ_j B_j(s) θ_j`` for ``s ∈ [0, 1]``: a clamped cubic
  B-spline with ``n_basis`` coefficients ``θ_j ∈ R^K`` (uniform interior
  knots), evaluated on ``n_nodes`` equally spaced positions ``s_m``.
- Position: ``s_i`` takes the values ``s_m`` with equal prior weight.
- Evidence of particle ``i`` about its latent: a Gaussian with mean ``μ_i`` and
  precision ``Λ_i``, the likelihood part of its posterior. From the posterior
  mean ``z_i``, covariance ``Σ_i`` and the Gaussian prior ``N(0, P)`` that
  posterior was formed with: ``Λ_i = Σ_i⁻¹ − P⁻¹`` (eigenvalues floored at
  ``EIG_FLOOR`` times the largest) and ``Λ_i μ_i = Σ_i⁻¹ z_i``. Without ``P``
  the posterior is used as the likelihood; without ``Σ_i`` (latents of any
  method) ``Λ_i = I``.
- Scale: the evidence is taken with precision ``Λ_i / κ``, ``κ`` learnt
  (``learn_scale``): posteriors of an imperfect model are over-confident (the
  PPCA posteriors of adk-1d scatter about the curve 1.4–1.65 times as widely,
  in variance, as they claim), which would make the positions too sharp; without
  covariances ``κ`` is the isotropic noise variance.

EM (penalised maximum likelihood)
---------------------------------
- E-step: ``r_im ∝ exp(−q_im / 2κ)``, ``q_im = (c(s_m) − μ_i)ᵀ Λ_i (c(s_m) − μ_i)``.
- M-step: ``θ = argmin Σ_im r_im q_im + ρ λ̄ ‖Δ²θ‖²`` (``Δ²``: second
  differences of the coefficients, ``λ̄ = tr(Σ_im r_im Λ_i)/K``, ``ρ = penalty``),
  one ``(n_basis K)``-square linear solve (``κ`` scales both terms alike); then
  ``κ = Σ_im r_im q_im / (N K)``.
- Start: responsibilities from the ranks of an ordering of the particles
  (``init``; default the first principal component of the latents), e.g. a
  diffusion-map coordinate (:mod:`cryoscape.analysis.spectral`).
- Stop: when the mean log-likelihood per particle changes by less than ``tol``.

Result: ``coordinate`` (the posterior mean of ``s_i``, in ``[0, 1]``, increasing
with ``init``), ``coordinate_sd`` (its posterior standard deviation) and the
curve's ``points`` ``c(s_m)`` (latent points: volumes along the motion come
from any method's decoder at them).

A few coefficients keep the curve stiff. PPCA posteriors of adk-1d (20 000
particles, box 64, K = 4, ``cryoscape fit pca`` with the latents inferred from
every frequency, ``--latent-resolution 0``), curve started from
the first diffusion coordinate of the prior-whitened latents: at SNR 0.05
(start 0.949) the |Spearman| of the position against the true frame is 0.949,
0.951, 0.951, 0.950 and 0.949 with 4, 5, 6, 8 and 10 coefficients (``κ`` 1.4–1.5;
0.951 with ``κ = 1``), against 0.961 for the posterior over the true frames
with the true volumes (``benchmarks/frame_posterior_ceiling.py``); at SNR 0.01
(start 0.785) 0.792, 0.791, 0.790, 0.788, 0.786 (``κ`` 1.6; 0.764 with
``κ = 1``) against 0.819. On an earlier fit whose diffusion coordinate scored
0.942, 8 and 10 coefficients fell to 0.948 and 0.944. The held-out likelihood
keeps rising with more coefficients (the curve starts to wind through the
noise), so it cannot choose their number; the default of 5 is a stiff curve for
one motion.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cryoscape.errors import InputError

__all__ = ["LatentCurve", "fit_latent_curve", "spline_basis"]

#: Smallest eigenvalue of a likelihood precision, relative to its largest.
EIG_FLOOR = 1e-3
#: Spline degree (cubic).
DEGREE = 3


@dataclass
class LatentCurve:
    """A fitted curve (see the module docstring).

    coordinate ``[N]``: posterior mean position ``s_i`` in ``[0, 1]``; coordinate_sd ``[N]``;
    points ``[M, K]``: ``c(s_m)``; positions ``[M]``: the ``s_m``; coefficients
    ``[n_basis, K]``; log_likelihood: mean per particle after each iteration
    (nats, up to a constant); scale: the evidence scale ``κ`` (the noise variance ``σ²``
    without covariances).
    """

    coordinate: np.ndarray
    coordinate_sd: np.ndarray
    points: np.ndarray
    positions: np.ndarray
    coefficients: np.ndarray
    log_likelihood: list[float] = field(default_factory=list)
    scale: float = 1.0

    def point(self, s) -> np.ndarray:
        """Latent point(s) ``c(s)`` for positions ``s`` in ``[0, 1]`` -> ``[..., K]``."""
        s = np.asarray(s, dtype=np.float64)
        if np.any((s < 0) | (s > 1)):
            raise InputError("curve positions lie in [0, 1]; give values in that range")
        B = spline_basis(s.reshape(-1), self.coefficients.shape[0])
        return (B @ self.coefficients).reshape(*s.shape, self.coefficients.shape[1])


def spline_basis(s: np.ndarray, n_basis: int) -> np.ndarray:
    """Clamped cubic B-spline basis ``[len(s), n_basis]`` on ``[0, 1]`` with uniform interior knots."""
    from scipy.interpolate import BSpline

    inner = np.linspace(0.0, 1.0, n_basis - DEGREE + 1)
    knots = np.r_[[0.0] * DEGREE, inner, [1.0] * DEGREE]
    return BSpline.design_matrix(np.clip(s, 0.0, 1.0), knots, DEGREE).toarray()


def _evidence(z: np.ndarray, cov: np.ndarray | None, prior_cov: np.ndarray | None) -> tuple[np.ndarray, np.ndarray] | None:
    """``(Λ [N, K, K], h = Λ μ [N, K])`` from the posteriors; None without covariances."""
    if cov is None:
        return None
    prec = np.linalg.inv(cov)
    h = np.einsum("nij,nj->ni", prec, z)
    lam = prec - (np.linalg.inv(prior_cov) if prior_cov is not None else 0.0)
    w, V = np.linalg.eigh(0.5 * (lam + np.swapaxes(lam, 1, 2)))
    w = np.maximum(w, EIG_FLOOR * np.maximum(w.max(axis=1, keepdims=True), np.finfo(float).tiny))
    return np.einsum("nik,nk,njk->nij", V, w, V), h


def _check(z: np.ndarray, cov, prior_cov, init, n_basis: int, n_nodes: int):
    """Validated float64 inputs, bad ones as one-line :class:`InputError`s."""
    from cryoscape.validate.metrics import as_point_array

    try:
        z = as_point_array(z, "latents")
    except ValueError as exc:
        raise InputError(str(exc)) from None
    N, K = z.shape
    if N < 3:
        raise InputError(f"a latent curve needs at least 3 particles; got {N}")
    if n_basis < DEGREE + 1:
        raise InputError(f"n_basis is {n_basis}; a cubic curve needs at least {DEGREE + 1}")
    if n_nodes < 2:
        raise InputError(f"n_nodes is {n_nodes}; use at least 2")
    if cov is not None:
        cov = np.asarray(cov, dtype=np.float64)
        if cov.shape != (N, K, K) or not np.all(np.isfinite(cov)):
            raise InputError(f"covariances must be finite with shape ({N}, {K}, {K}); got {cov.shape}")
    if prior_cov is not None:
        prior_cov = np.asarray(prior_cov, dtype=np.float64)
        if prior_cov.shape != (K, K) or not np.all(np.isfinite(prior_cov)):
            raise InputError(f"the prior covariance must be finite with shape ({K}, {K}); got {prior_cov.shape}")
    if init is not None:
        init = np.asarray(init, dtype=np.float64).reshape(-1)
        if init.size != N or not np.all(np.isfinite(init)):
            raise InputError(f"init must give one finite value per particle ({N}); got {init.size}")
    return z, cov, prior_cov, init


def _start(init: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Responsibilities ``[N, M]`` centred on each particle's rank (width one node)."""
    N, M = init.size, positions.size
    rank = np.argsort(np.argsort(init, kind="stable"), kind="stable") / max(N - 1, 1)
    r = np.exp(-0.5 * ((rank[:, None] - positions[None, :]) * (M - 1)) ** 2)
    return r / r.sum(axis=1, keepdims=True)


def _m_step(r: np.ndarray, lam_flat: np.ndarray, h: np.ndarray, B: np.ndarray, K: int, penalty: float) -> np.ndarray:
    """Spline coefficients ``[J, K]`` minimising the weighted misfit plus the curvature penalty."""
    J = B.shape[1]
    A = (r.T @ lam_flat).reshape(-1, K, K)  # Σ_i r_im Λ_i, [M, K, K]
    b = r.T @ h  # Σ_i r_im Λ_i μ_i, [M, K]
    H = np.einsum("mj,ml,mab->jalb", B, B, A).reshape(J * K, J * K)
    g = (B.T @ b).reshape(-1)
    D2 = np.diff(np.eye(J), 2, axis=0)
    scale = float(np.trace(A.sum(axis=0))) / K
    H = H + penalty * scale * np.kron(D2.T @ D2, np.eye(K))
    return np.linalg.solve(H, g).reshape(J, K)


def _quadratic_forms(points: np.ndarray, lam_flat: np.ndarray, h: np.ndarray, const: np.ndarray) -> np.ndarray:
    """``q_im = (c_m − μ_i)ᵀ Λ_i (c_m − μ_i)`` ``[N, M]`` from ``Λ`` flattened, ``h = Λ μ`` and ``μᵀΛμ``."""
    M, K = points.shape
    outer = (points[:, :, None] * points[:, None, :]).reshape(M, K * K)
    return lam_flat @ outer.T - 2.0 * h @ points.T + const[:, None]


def _e_step(q: np.ndarray, kappa: float) -> tuple[np.ndarray, float]:
    """Responsibilities ``[N, M]`` under the precisions ``Λ_i / κ`` and the mean log-likelihood per
    particle (uniform prior over the nodes; up to the constant ``½ log|Λ_i/2π|``)."""
    M = q.shape[1]
    lp = -0.5 * q / kappa - np.log(M)
    top = lp.max(axis=1, keepdims=True)
    w = np.exp(lp - top)
    tot = w.sum(axis=1, keepdims=True)
    return w / tot, float(np.mean(top[:, 0] + np.log(tot[:, 0])))


def fit_latent_curve(latents, covariances=None, prior_covariance=None, init=None, *, n_basis: int = 5,
                     n_nodes: int = 100, iterations: int = 40, penalty: float = 1e-3,
                     learn_scale: bool = True, tol: float = 1e-5) -> LatentCurve:
    """Fit a smooth curve to per-particle latent posteriors (see the module docstring).

    Args:
        latents: ``[N, K]`` posterior means (or any method's latents).
        covariances: ``[N, K, K]`` posterior covariances, or None (isotropic, learnt).
        prior_covariance: ``[K, K]`` covariance of the Gaussian prior (mean 0) the
            posteriors include, divided out; None uses the posteriors as they are.
        init: ``[N]`` an ordering of the particles to start from (e.g. a
            diffusion-map coordinate); None: the first principal component.
        n_basis: spline coefficients (≥ 4; few keep the curve stiff). n_nodes: positions.
        iterations: most EM passes. penalty: curvature penalty ``ρ``. learn_scale: learn the
            evidence scale ``κ`` (else 1: the posteriors taken as calibrated; always learnt
            without covariances, where it is the noise variance). tol: stop when the
            mean log-likelihood per particle changes by less (nats).
    Returns:
        :class:`LatentCurve`, its ``coordinate`` increasing with ``init``.
    """
    z, cov, prior_cov, init = _check(latents, covariances, prior_covariance, init, n_basis, n_nodes)
    N, K = z.shape
    if init is None:
        from cryoscape.validate.metrics import first_principal_component

        init = first_principal_component(z)
    positions = np.linspace(0.0, 1.0, n_nodes)
    B = spline_basis(positions, n_basis)
    evidence = _evidence(z, cov, prior_cov)
    if evidence is None:  # Λ_i = I: κ is the noise variance
        lam_flat, h = np.broadcast_to(np.eye(K).reshape(1, -1), (N, K * K)), z
        const = np.sum(z * z, axis=1)
    else:
        lam, h = evidence
        lam_flat = lam.reshape(N, K * K)
        const = np.einsum("ni,ni->n", h, np.linalg.solve(lam, h[..., None])[..., 0])  # μᵀΛμ
    learn = learn_scale or evidence is None
    r, history, theta, kappa = _start(init, positions), [], np.zeros((n_basis, K)), 1.0
    for _ in range(max(1, iterations)):
        theta = _m_step(r, lam_flat, h, B, K, penalty)  # κ scales every term alike: θ does not depend on it
        q = _quadratic_forms(B @ theta, lam_flat, h, const)
        if learn:
            kappa = max(float(np.sum(r * q)) / (N * K), np.finfo(float).tiny)
        r, ll = _e_step(q, kappa)
        history.append(ll - 0.5 * K * np.log(kappa))
        if len(history) > 1 and abs(history[-1] - history[-2]) < tol:
            break
    s = r @ positions
    sd = np.sqrt(np.maximum(r @ positions ** 2 - s ** 2, 0.0))
    if np.corrcoef(s, init)[0, 1] < 0:  # orient along the start
        s, theta = 1.0 - s, theta[::-1].copy()
    return LatentCurve(s, sd, spline_basis(positions, n_basis) @ theta, positions, theta, history, kappa)
