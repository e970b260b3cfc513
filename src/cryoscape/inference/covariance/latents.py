"""Coordinates of each particle along given principal volumes (the PPCA E-step with unit contrast).

:func:`project_latents` builds a linear-in-latent model from a caller's
template (any :class:`cryoscape.models.representation.LinearInLatent`) with the
mean and the eigenvalue-scaled components, and returns the posterior means and
covariances of each image's coordinates.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from .estimate import _mean_array

if TYPE_CHECKING:
    from cryoscape.models.representation import LinearInLatent

__all__ = ["project_latents"]


def project_latents(particles, mean_volume, components, eigenvalues, noise_var: float, *,
                    representation: LinearInLatent, resolution_A: float | None = None, use_ctf: bool = True,
                    batch_size: int = 512, device="cpu",
                    dtype: torch.dtype = torch.float32) -> tuple[np.ndarray, np.ndarray]:
    """Posterior coordinates of each image along the principal volumes.

    ``b_i = (FᵢᴴFᵢ + s² Λ⁻¹)⁻¹ Fᵢᴴ (y_i − A_i μ)`` with ``F_i = A_i X`` (``X`` the
    components), ``Λ = diag(eigenvalues)`` and ``s² = D² noise_var``, over
    frequencies up to ``resolution_A`` (the PPCA E-step with a unit contrast,
    :func:`cryoscape.inference.ppca_em.posterior`). ``representation``: a
    linear-in-latent template whose ``with_volumes(mean, components)`` builds the
    model (e.g. ``LinearHyperMolecule.empty(box, K)``; its volumes are not used,
    its settings such as the oversampling are). Returns ``(means [N, K],
    covariances [N, K, K])`` float32 in particle order.
    """
    from cryoscape.inference.ppca_em import batch_inputs, frequency_weights, image_terms, posterior

    D, apix, n = int(particles.box), float(particles.apix), len(particles)
    comps = torch.as_tensor(np.asarray(components), dtype=dtype, device=device)
    lam = torch.as_tensor(np.asarray(eigenvalues), dtype=torch.float64).clamp(min=1e-30)
    scale = torch.sqrt(lam).to(device=device, dtype=dtype)
    mean_t = torch.as_tensor(_mean_array(mean_volume, D), device=device)
    model = representation.with_volumes(mean_t, comps * scale[:, None, None, None])
    h = frequency_weights(D, apix, resolution_A, device, dtype)
    use_ctf = use_ctf and bool(particles.has_ctf)
    s2 = float(noise_var) * D * D
    K = comps.shape[0]
    means, covs = np.zeros((n, K), np.float32), np.zeros((n, K, K), np.float32)
    for idx, images in particles.iter_batches(batch_size):
        idx = np.asarray(idx)
        R, sh, ctf = batch_inputs(particles, idx, use_ctf, device, dtype)
        terms = image_terms(model, torch.as_tensor(np.asarray(images)), R, sh, ctf, apix, h)
        post = posterior(terms["C"], terms["d"], torch.ones(len(idx), dtype=dtype, device=device), s2)
        sc = scale.to(post.mean.dtype)
        means[idx] = (post.mean * sc).cpu().numpy()
        covs[idx] = (post.cov * sc[:, None] * sc[None, :]).cpu().numpy()
    return means, covs
