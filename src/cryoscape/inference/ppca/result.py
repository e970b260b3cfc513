"""The outcome of a PPCA fit: :class:`PPCAResult`, the constraints kept on the components after
every M-step, and the final orthonormal frame of the components and latents."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from cryoscape.inference.ppca.estep import CONTRAST_PRIOR_STD
from cryoscape.models.representation import LinearInLatent

__all__ = ["PPCAResult", "constrained", "orthogonal_to", "finish"]


@dataclass
class PPCAResult:
    """The fitted PPCA of a particle set.

    model: the fitted representation (of the kind of the one passed to
    :func:`~cryoscape.inference.ppca_em.fit_ppca`) with orthonormal components (unit L2 norm
    over voxels inside the mask) sorted by ``eigenvalues``; latents ``[N, K]``
    posterior means in that frame (particle order); latent_covariances ``[N, K, K]``;
    contrast ``[N]`` (mean 1); sigma2: real-space noise variance per pixel;
    eigenvalues ``[K]``: variance of each latent coordinate (``E[b_k²]`` over the
    particles, posterior spread included); objective: mean marginal
    log-likelihood per image (up to a constant) for each iteration; apix Å/px;
    half_set_fsc ``[K + 1, D//2 + 1]``: the last M-step's masked FSC between the
    half-set solves of the mean and of each component *in the EM's frame, before
    orthonormalisation* (None without ``fsc_filter``, and after a resume that ran
    no iteration); contrast_prior_std: the contrast prior's standard deviation
    at the end (learnt unless given; 0 when the contrast is fixed at 1);
    latent_prior_covariance ``[K, K]``: the prior ``N(0, I)`` of the EM's latents
    expressed in the output frame (``T Tᵀ`` for ``b' = T b``), the prior the
    posteriors include. ``K`` is the representation's ``latent_dim``.
    """

    model: LinearInLatent
    latents: np.ndarray
    latent_covariances: np.ndarray
    contrast: np.ndarray
    sigma2: float
    eigenvalues: np.ndarray
    objective: list[float] = field(default_factory=list)
    apix: float = 1.0
    half_set_fsc: np.ndarray | None = None
    contrast_prior_std: float = CONTRAST_PRIOR_STD
    latent_prior_covariance: np.ndarray | None = None


def orthogonal_to(comps: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Remove from each of ``comps [K, D, D, D]`` its projection on ``ref [D, D, D]`` (voxel L2)."""
    r = ref.reshape(-1)
    coef = comps.reshape(comps.shape[0], -1) @ r / (r @ r).clamp(min=torch.finfo(r.dtype).tiny)
    return comps - coef[:, None, None, None] * ref


def constrained(mean: torch.Tensor, comps: torch.Tensor, mask: torch.Tensor, orthogonal: bool) -> torch.Tensor:
    """Components confined to the mask and, with a free contrast, orthogonal to the masked mean."""
    comps = comps * mask
    return orthogonal_to(comps, mean * mask) if orthogonal else comps


def finish(model: LinearInLatent, mean: torch.Tensor, cov: torch.Tensor, contrast: torch.Tensor, s2: float,
           objective: list[float], apix: float) -> PPCAResult:
    """Orthonormalise the components and express the latents ``mean [N, K]``, ``cov [N, K, K]`` in the new frame.

    ``s2`` is the noise variance per Fourier coefficient (reported per pixel, ``s2 / D²``).
    """
    second = (cov + mean[:, :, None] * mean[:, None, :]).double().mean(0)
    T, evals = model.orthonormalise_components(None, second)  # components are already masked
    D = model.box
    return PPCAResult(
        model=model,
        latents=(mean @ T.T).cpu().numpy(),
        latent_covariances=(T @ cov @ T.T).cpu().numpy(),
        contrast=contrast.cpu().numpy(),
        sigma2=float(s2) / (D * D),
        eigenvalues=evals.cpu().numpy(),
        objective=objective,
        apix=apix,
        latent_prior_covariance=(T @ T.T).double().cpu().numpy(),
    )
