"""Latents after (or between) training: encoder means, Gauss–Newton polish, Laplace variances."""

from __future__ import annotations

import numpy as np
import torch

from cryoscape.inference.batches import Batch, ParticleBatches
from cryoscape.inference.latent_model import LatentModel, autocast, progress_bar
from cryoscape.inference.settings import TrainSettings

__all__ = ['infer_latents', 'refine_latents', 'polished_latents', '_latents_from_encoder']


@torch.no_grad()
def _encoder_latents(model: LatentModel, data: ParticleBatches, s: TrainSettings, progress: bool
                     ) -> tuple[np.ndarray, np.ndarray]:
    mus, vars_ = [], []
    dev = torch.device(s.device)
    with progress_bar(progress, len(data), "latents") as bar:
        for a in range(0, len(data), s.batch_size):
            batch = data.batch(np.arange(a, min(a + s.batch_size, len(data))))
            with autocast(dev, s.amp):
                mu, logvar = model.encoder(*data.encoder_input(model.decoder, batch))
            mus.append(mu.float().cpu())
            vars_.append(logvar.float().exp().cpu())
            bar.update(len(batch.idx))
    return torch.cat(mus).numpy(), torch.cat(vars_).numpy()


def _gauss_newton_hessian(model: LatentModel, data: ParticleBatches, batch: Batch, z: torch.Tensor, beta: float,
                          refine: bool) -> torch.Tensor:
    """``Re(Jᴴ W J) + β I`` ``[B, d, d]`` at latents ``z`` ``[B, d]`` (see :func:`_explicit_variances`)."""
    R, shifts = model.poses(batch, refine)
    J = model.decoder.latent_jacobian(R, z.detach(), data.fit_idx)  # [B, P, d] complex
    J = J * data.phase(shifts)[..., None]
    if batch.ctf is not None:
        J = J * batch.ctf[..., None]
    Jr = torch.view_as_real(J)  # [B, P, d, 2]
    eye = torch.eye(z.shape[-1], device=z.device)
    return torch.einsum("bpir,bpjr,p->bij", Jr, Jr, data.weights) + beta * eye


def _image_objective(model: LatentModel, data: ParticleBatches, batch: Batch, z: torch.Tensor, beta: float,
                     refine: bool) -> torch.Tensor:
    """``½ Σ_k w_k |y_k − ŷ_k(z)|² + β ½ |z|²`` per image ``[B]`` (not divided by ``n_disc``)."""
    R, shifts = model.poses(batch, refine)
    pred = model.decoder.slice_half(R, z, points=data.fit_idx) * data.phase(shifts)
    if batch.ctf is not None:
        pred = pred * batch.ctf
    return 0.5 * ((batch.y - pred).abs() ** 2 * data.weights).sum(-1) + beta * 0.5 * (z * z).sum(-1)


_STEP_FRACTIONS = (1.0, 0.5, 0.25)
"""Fractions of the Gauss–Newton step tried in turn by :func:`refine_latents`."""


def refine_latents(model: LatentModel, data: ParticleBatches, s: TrainSettings, steps: int,
                   progress: bool = True) -> np.ndarray:
    """Polish the explicit latents with the decoder fixed: ``steps`` Gauss–Newton steps per particle.

    During training each ``z_i`` moves once per epoch, against the decoder of
    that moment; this re-fits every ``z_i`` to the final decoder, minimising
    :func:`_image_objective` (the training objective of that image). Step:
    ``z ← z − t H⁻¹ g`` with ``g`` its gradient, ``H`` the Gauss–Newton matrix of
    :func:`_gauss_newton_hessian` and ``t`` the first of 1, ½, ¼ that lowers
    that particle's objective (if none does, the particle stays put for this
    step). Writes the table in place.
    Returns the fraction of accepted steps per step number ``[steps]``.
    """
    accepted = np.zeros(max(int(steps), 0))
    if steps <= 0:
        return accepted
    table = model.latents.weight
    with progress_bar(progress, len(data), "latent refinement") as bar:
        for a in range(0, len(data), s.batch_size):
            batch = data.batch(np.arange(a, min(a + s.batch_size, len(data))))
            z = table[batch.idx].detach().float()
            with torch.no_grad():
                f = _image_objective(model, data, batch, z, s.beta, s.refine_poses)
            for k in range(steps):
                with torch.enable_grad():
                    zr = z.clone().requires_grad_(True)
                    g, = torch.autograd.grad(_image_objective(model, data, batch, zr, s.beta, s.refine_poses).sum(), zr)
                with torch.no_grad():
                    H = _gauss_newton_hessian(model, data, batch, z, s.beta, s.refine_poses)
                    step = torch.linalg.solve(H, g[..., None])[..., 0]
                    done = torch.zeros_like(f, dtype=torch.bool)
                    for t in _STEP_FRACTIONS:
                        z_new = z - t * step
                        f_new = _image_objective(model, data, batch, z_new, s.beta, s.refine_poses)
                        ok = ~done & torch.isfinite(f_new) & (f_new < f)
                        z = torch.where(ok[:, None], z_new, z)
                        f = torch.where(ok, f_new, f)
                        done |= ok
                        if bool(done.all()):
                            break
                    accepted[k] += float(done.sum())
            with torch.no_grad():
                table[batch.idx] = z.to(table.dtype)
            bar.update(len(batch.idx))
    return accepted / len(data)


def _explicit_variances(model: LatentModel, data: ParticleBatches, s: TrainSettings, progress: bool) -> np.ndarray:
    """Laplace (Gauss–Newton) marginal variances of the explicit latents, ``[N, d]``.

    The Hessian of ``½ Σ_k w_k |y_k − ŷ_k(z)|² + β ½ |z|²`` at the fitted ``z_i`` is
    approximated by ``Re(Jᴴ W J) + β I`` with ``J = ∂ŷ/∂z`` (the representation's
    ``latent_jacobian`` times the CTF and shift phase); the variances are the
    diagonal of its inverse.
    """
    out = []
    with progress_bar(progress, len(data), "latent variances") as bar:
        for a in range(0, len(data), s.batch_size):
            batch = data.batch(np.arange(a, min(a + s.batch_size, len(data))))
            H = _gauss_newton_hessian(model, data, batch, model.latents(batch.idx), s.beta, s.refine_poses)
            out.append(torch.linalg.inv(H).diagonal(dim1=-2, dim2=-1).detach().cpu())
            bar.update(len(batch.idx))
    return torch.cat(out).numpy()


@torch.no_grad()
def _latents_from_encoder(model: LatentModel, data: ParticleBatches, s: TrainSettings, progress: bool) -> None:
    """Set the explicit latent table to the encoder's means (the end of the warm-up)."""
    mu, _ = _encoder_latents(model, data, s, progress)
    model.latents.weight.copy_(torch.as_tensor(mu, dtype=model.latents.weight.dtype,
                                               device=model.latents.weight.device))


def infer_latents(model: LatentModel, data: ParticleBatches, s: TrainSettings, progress: bool = True
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Per-particle latent means and variances ``[N, d]`` each, in particle order.

    Amortised: the encoder's ``μ`` and ``σ²``. Explicit (with or without a
    warm-up): the table and the Laplace variances (:func:`_explicit_variances`).
    """
    model.eval()
    if model.latents is None:
        return _encoder_latents(model, data, s, progress)
    mean = model.latents.weight.detach().cpu().numpy().copy()
    return mean, _explicit_variances(model, data, s, progress)


def polished_latents(model: LatentModel, data: ParticleBatches, s: TrainSettings, steps: int,
                     progress: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Latent means and variances ``[N, d]`` after ``steps`` Gauss–Newton steps per particle (:func:`refine_latents`).

    Explicit: the model's own table is polished in place. Amortised: the
    polish starts at the encoder's means, in a separate table (the model, and
    hence what the encoder says for an image, is unchanged); the result is a
    per-image MAP estimate under the final decoder, started from the encoder
    (semi-amortised inference). Variances: Laplace at the polished latents
    (:func:`_explicit_variances`) in both schemes. Also returns the fraction
    of accepted steps per step number.
    """
    model.eval()
    target = model
    if model.latents is None:
        mu, _ = _encoder_latents(model, data, s, progress)
        with torch.random.fork_rng(devices=[]):
            target = LatentModel(model.decoder, None, len(data))
        target.rot_corr, target.shift_corr = model.rot_corr, model.shift_corr
        target = target.to(next(model.decoder.parameters()).device)
        with torch.no_grad():
            target.latents.weight.copy_(torch.as_tensor(mu, device=target.latents.weight.device))
        target.eval()
    accepted = refine_latents(target, data, s, steps, progress)
    mean, var = infer_latents(target, data, s, progress)
    return mean, var, accepted
