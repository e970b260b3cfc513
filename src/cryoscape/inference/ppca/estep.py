"""PPCA E-step: per-image sufficient statistics, Gaussian posteriors of the latents, contrasts.

Formulas and conventions: :mod:`cryoscape.inference.ppca_em` (E-step, Contrast,
Noise and Objective sections). Everything here works on one batch of images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import torch

from cryoscape.imaging import image_to_half
from cryoscape.imaging._grid import slice_points
from cryoscape.imaging.forward import transfer_half
from cryoscape.models.representation import LinearInLatent

__all__ = ["MIN_CONTRAST", "CONTRAST_PRIOR_STD", "frequency_weights", "image_terms", "Posterior",
           "augmented_moments", "posterior", "contrast_estimate", "expected_residual", "log_likelihood"]

#: Smallest contrast ``a_i`` (after normalisation the mean contrast is 1).
MIN_CONTRAST = 1e-2
#: Prior standard deviation of the contrast around 1 (keeps early iterations, whose
#: components do not yet explain the heterogeneity, from assigning absurd contrasts).
CONTRAST_PRIOR_STD = 0.3


def frequency_weights(D: int, apix: float, resolution_limit_A: float | None = None,
                      device=None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Hermitian weights ``[P]`` on the half set: 1 at DC, 2 elsewhere, 0 beyond ``resolution_limit_A``.

    ``Σ_H h f`` equals the sum over the whole in-circle disc of a Friedel-symmetric ``f``.
    """
    pts = slice_points(D, True, device)
    h = 2.0 * pts.insert_weight.to(dtype)
    if resolution_limit_A is not None:
        kx, ky = pts.freqs_A(apix, dtype)
        k = torch.sqrt(kx ** 2 + ky ** 2)
        h = torch.where(k <= 1.0 / resolution_limit_A, h, torch.zeros_like(h))
    return h


def image_terms(model: LinearInLatent, images: torch.Tensor, rotations, shifts_A=None,
                ctf_params: Mapping | None = None, apix: float = 1.0,
                weights: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """The sufficient statistics of a batch of images under a representation linear in its latent.

    Args:
        model: the current representation (its volumes' device and dtype are used).
        images: real ``[B, D, D]``. rotations ``[B, 3, 3]``; shifts_A ``[B, 2]`` Å (RELION
            origins) or None; ctf_params: CTF fields ``(B,)`` or None; apix Å/px.
        weights: ``[P]`` from :func:`frequency_weights` (default: no resolution limit).
    Returns:
        dict with ``C [B, K+1, K+1]`` = ``Re(Fᴴ diag(h) F)``, ``d [B, K+1]`` = ``Re(Fᴴ diag(h) y)``,
        and ``yy [B]`` = ``‖y‖²_h``, where ``F = T · slices`` and ``T = CTF · shift phase``
        (``K`` the representation's ``latent_dim``).
    """
    D, device, dtype = model.box, model.mean.device, model.mean.dtype
    x = images.to(device=device, dtype=dtype).reshape(-1, D, D)
    h = frequency_weights(D, apix, None, device, dtype) if weights is None else weights
    ctf, ph = transfer_half(D, apix, shifts_A, ctf_params, device, dtype)
    y = image_to_half(x)
    S = model.component_slices(rotations)  # [B, K+1, P]
    T = torch.ones_like(y)
    if ph is not None:
        T = T * ph
    if ctf is not None:
        T = T * ctf
    F = S * T[:, None, :]
    Fh = F.conj() * h
    C = torch.einsum("bkp,blp->bkl", Fh, F).real
    d = torch.einsum("bkp,bp->bk", Fh, y).real
    yy = (h * (y.real ** 2 + y.imag ** 2)).sum(-1)
    return {"C": C, "d": d, "yy": yy}


@dataclass
class Posterior:
    """Gaussian posterior of a batch's latents and its by-products.

    mean ``[B, K]``, cov ``[B, K, K]`` (``Λ⁻¹``), precision ``[B, K, K]`` (``Λ``),
    rhs ``[B, K]``, logdet ``[B]`` (``log det Λ``).
    """

    mean: torch.Tensor
    cov: torch.Tensor
    precision: torch.Tensor
    rhs: torch.Tensor
    logdet: torch.Tensor

    def moments(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``E[b̃] [B, K+1]`` and ``E[b̃ b̃ᵀ] [B, K+1, K+1]`` for ``b̃ = (1, b)``."""
        return augmented_moments(self.mean, self.cov)

    def rows(self, sel: torch.Tensor) -> "Posterior":
        """The posterior of the images ``sel`` (indices into the batch)."""
        sel = sel.to(self.mean.device)
        return Posterior(self.mean[sel], self.cov[sel], self.precision[sel], self.rhs[sel], self.logdet[sel])


def augmented_moments(mean: torch.Tensor, cov: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``E[b̃]`` and ``E[b̃ b̃ᵀ]`` for ``b̃ = (1, b)``, ``b`` with mean ``[B, K]`` and covariance ``[B, K, K]``."""
    Eb = torch.cat([torch.ones_like(mean[:, :1]), mean], dim=1)
    Ebb = Eb[:, :, None] * Eb[:, None, :]
    Ebb[:, 1:, 1:] += cov
    return Eb, Ebb


def posterior(C: torch.Tensor, d: torch.Tensor, contrast: torch.Tensor, s2: float) -> Posterior:
    """Posterior of ``b_i`` given the statistics of :func:`image_terms`.

    ``Λ = I + a² C[1:, 1:] / s²``, ``rhs = a (d[1:] − a C[1:, 0]) / s²``, ``μ = Λ⁻¹ rhs``;
    ``contrast`` ``[B]``, ``s2`` the noise variance per Fourier coefficient.
    """
    latent_dim = C.shape[-1] - 1
    a = contrast.to(C.dtype)
    eye = torch.eye(latent_dim, dtype=C.dtype, device=C.device)
    lam = eye + (a * a / s2)[:, None, None] * C[:, 1:, 1:]
    rhs = (a / s2)[:, None] * (d[:, 1:] - a[:, None] * C[:, 1:, 0])
    L = torch.linalg.cholesky(lam)
    mean = torch.cholesky_solve(rhs[..., None], L)[..., 0]
    cov = torch.cholesky_inverse(L)
    logdet = 2.0 * torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)
    return Posterior(mean, cov, lam, rhs, logdet)


def contrast_estimate(C: torch.Tensor, d: torch.Tensor, s2: float, prior_std: float = CONTRAST_PRIOR_STD,
                      return_variance: bool = False):
    """Per-image contrast ``[B]`` from the linearised model ``y = a F0 + G c + ε``, ``c = a b ~ N(0, I)``.

    ``(a, c)`` is the MAP estimate under ``a ~ N(1, prior_std²)``:
    ``(C / s² + diag(1/prior_std², 1, .., 1)) (a, c) = d / s² + (1/prior_std², 0, .., 0)``
    (linear in ``(a, c)``); ``a`` is clipped to ``>= MIN_CONTRAST``. With
    ``return_variance`` also the posterior variance of ``a`` (``[H⁻¹]₀₀`` of that
    system matrix ``H``), as ``(a, var)``.
    """
    K1 = C.shape[-1]
    reg = torch.ones(K1, dtype=C.dtype, device=C.device)
    reg[0] = 1.0 / prior_std ** 2
    rhs = d / s2
    rhs[:, 0] += reg[0]
    H = C / s2 + torch.diag(reg)
    if not return_variance:
        sol = torch.linalg.solve(H, rhs[..., None])[..., 0]
        return sol[:, 0].clamp(min=MIN_CONTRAST)
    e0 = torch.zeros_like(rhs)
    e0[:, 0] = 1.0
    sol = torch.linalg.solve(H, torch.stack([rhs, e0], dim=-1))
    return sol[:, 0, 0].clamp(min=MIN_CONTRAST), sol[:, 0, 1]


def expected_residual(terms: Mapping[str, torch.Tensor], contrast: torch.Tensor, post: Posterior) -> torch.Tensor:
    """``E‖y − a F b̃‖²_h`` ``[B]`` under the posterior."""
    Eb, Ebb = post.moments()
    a = contrast.to(Eb.dtype)
    return terms["yy"] - 2 * a * (terms["d"] * Eb).sum(-1) + a * a * (terms["C"] * Ebb).sum((-2, -1))


def log_likelihood(terms: Mapping[str, torch.Tensor], contrast: torch.Tensor, post: Posterior,
                   s2: float, n_coeff: float) -> torch.Tensor:
    """Marginal ``log p(y_i | a_i)`` up to a constant ``[B]`` (see :mod:`cryoscape.inference.ppca_em`)."""
    a = contrast.to(post.mean.dtype)
    C, d = terms["C"], terms["d"]
    q0 = terms["yy"] - 2 * a * d[:, 0] + a * a * C[:, 0, 0]
    quad = q0 / s2 - (post.rhs * post.mean).sum(-1)
    return -0.5 * (quad + post.logdet + n_coeff * math.log(s2))
