"""Before the PPCA EM: input checks, the batch inputs (poses, shifts, CTF) and the initial model.

The representation to fit arrives as a template offering
:class:`~cryoscape.models.representation.LinearInLatent`; every model the EM
holds is built from it with ``with_volumes``.
"""

from __future__ import annotations

import numpy as np
import torch

from cryoscape.errors import InputError
from cryoscape.models.representation import LinearInLatent, is_linear_in_latent

__all__ = ["check_inputs", "check_representation", "batch_inputs", "initial_model"]


def check_representation(representation, particles) -> LinearInLatent:
    """``representation`` if EM over posteriors can fit it to ``particles``; one-line :class:`InputError` otherwise."""
    if not is_linear_in_latent(representation):
        raise InputError("EM over posteriors needs a representation linear in its latent")
    if int(representation.box) != int(particles.box):
        raise InputError(f"the representation has box {representation.box} px but the particles "
                         f"{particles.box} px; build it at the particles' box")
    return representation


def check_inputs(particles, latent_dim: int, n_iterations: int) -> None:
    """One-line :class:`InputError` for particles without poses, too few particles or no iteration."""
    particles.require_poses("PPCA")
    n = len(particles)
    if latent_dim < 1:
        raise InputError(f"the representation has {latent_dim} latent coordinates; PPCA needs at least one component")
    if n <= latent_dim:
        raise InputError(f"{getattr(particles, 'name', 'the particle set')} has {n} particles for "
                         f"{latent_dim} components; PPCA needs more particles than components")
    if n_iterations < 1:
        raise InputError(f"n_iterations is {n_iterations}; run at least one iteration")


def batch_inputs(particles, idx: np.ndarray, use_ctf: bool, device, dtype):
    """Rotations, shifts and CTF fields of the particles ``idx`` as tensors."""
    t = lambda x: torch.as_tensor(np.asarray(x), dtype=dtype, device=device)
    R = t(particles.rotations[idx])
    sh = None if particles.shifts_A is None else t(particles.shifts_A[idx])
    ctf = None
    if use_ctf:
        table = particles.ctf_table()
        ctf = {k: t(np.broadcast_to(np.asarray(v, dtype=np.float64), (len(particles),))[idx])
               for k, v in table.items() if v is not None}
    return R, sh, ctf


def initial_model(template: LinearInLatent, particles, mask: torch.Tensor, ridge: float, use_ctf: bool,
                  batch_size: int, device, dtype, seed: int, initial_components=None) -> LinearInLatent:
    """``X0`` from a CTF-weighted backprojection; components given or seeded smooth random volumes in ``mask``.

    The backprojection uses the template's oversampling; the result is ``template.with_volumes(X0, components)``.
    """
    from cryoscape.reconstruct.backprojection import backproject

    sums = backproject(particles, half_sets=False, use_ctf=use_ctf, batch_size=batch_size,
                       oversampling=template.oversampling, device=device, progress=False)
    mean = torch.as_tensor(np.asarray(sums.volume(0, regulariser=ridge)), dtype=dtype, device=device)
    latent_dim, D = int(template.latent_dim), mean.shape[-1]
    if initial_components is not None:
        comps = torch.as_tensor(np.asarray(initial_components), dtype=dtype, device=device)
        if tuple(comps.shape) != (latent_dim, D, D, D):
            raise InputError(f"initial components have shape {tuple(comps.shape)}; expected {(latent_dim, D, D, D)}")
        return template.with_volumes(mean, comps * mask)
    return template.with_volumes(mean, random_components(mean, mask, latent_dim, seed))


def random_components(mean: torch.Tensor, mask: torch.Tensor, latent_dim: int, seed: int) -> torch.Tensor:
    """``latent_dim`` seeded smooth random volumes in ``mask``, each with 10 % of the masked mean's norm."""
    D = mean.shape[-1]
    g = torch.Generator().manual_seed(int(seed))
    noise = torch.randn(latent_dim, D, D, D, generator=g, dtype=torch.float64)
    k = torch.fft.fftfreq(D, dtype=torch.float64)
    k2 = k[:, None, None] ** 2 + k[None, :, None] ** 2 + k[None, None, :] ** 2
    smooth = torch.fft.ifftn(torch.fft.fftn(noise, dim=(1, 2, 3)) * torch.exp(-k2 / (2 * 0.1 ** 2)), dim=(1, 2, 3)).real
    comps = smooth.to(device=mean.device, dtype=mean.dtype) * mask
    scale = (mean * mask).norm() / comps.reshape(latent_dim, -1).norm(dim=1).clamp(min=1e-30)
    return 0.1 * comps * scale[:, None, None, None]
