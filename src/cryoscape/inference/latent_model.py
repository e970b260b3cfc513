"""The model a gradient scheme trains: a representation plus an encoder or a per-particle latent table.

:func:`batch_loss` is the objective of :mod:`cryoscape.inference.vae` (the
negative ELBO per disc pixel, the KL weighted by ``β``; for explicit latents the
prior term ``½|z|²``). The representation is used only through the
:class:`~cryoscape.models.representation.Representation` protocol.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from cryoscape.inference.batches import Batch, ParticleBatches
from cryoscape.inference.settings import TrainSettings

__all__ = ['LatentModel', 'rotation_correction', 'batch_loss', 'kl_divergence', 'autocast', 'progress_bar']


def rotation_correction(omega: torch.Tensor) -> torch.Tensor:
    """``exp([ω]×)`` ``[B, 3, 3]`` for axis-angle vectors ``ω`` ``[B, 3]`` (radians), by Rodrigues' formula.

    Differentiable at ``ω = 0`` (series coefficients below 1e-4 rad).
    """
    theta2 = (omega * omega).sum(-1)
    theta = torch.sqrt(theta2.clamp_min(1e-12))
    small = theta2 < 1e-8
    a = torch.where(small, 1 - theta2 / 6, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24, (1 - torch.cos(theta)) / theta2.clamp_min(1e-12))
    x, y, z = omega.unbind(-1)
    zero = torch.zeros_like(x)
    K = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=-1).reshape(-1, 3, 3)
    eye = torch.eye(3, dtype=omega.dtype, device=omega.device).expand_as(K)
    return eye + a[:, None, None] * K + b[:, None, None] * (K @ K)


class LatentModel(nn.Module):
    """A representation (the decoder) plus the gradient inference scheme's parameters.

    Args:
        decoder: any :class:`~cryoscape.models.representation.Representation` (the generative model).
        encoder: an encoder (amortised, or explicit with a warm-up) or None (explicit).
        n_particles: rows of the explicit latent table and of the pose corrections.
        explicit: keep a per-particle latent table (forced when ``encoder`` is None).
        refine_poses: add per-particle rotation (rad) and shift (Å) corrections.
        init_std: standard deviation of the initial explicit latents.
    """

    def __init__(self, decoder: nn.Module, encoder: nn.Module | None, n_particles: int,
                 refine_poses: bool = False, init_std: float = 0.1, explicit: bool = False) -> None:
        super().__init__()
        self.decoder = decoder
        self.encoder = encoder
        self.latents = None
        if encoder is None or explicit:
            self.latents = nn.Embedding(n_particles, decoder.latent_dim, sparse=True)
            nn.init.normal_(self.latents.weight, std=init_std)
        self.rot_corr = self.shift_corr = None
        if refine_poses:
            self.rot_corr = nn.Embedding(n_particles, 3, sparse=True)
            self.shift_corr = nn.Embedding(n_particles, 2, sparse=True)
            nn.init.zeros_(self.rot_corr.weight)
            nn.init.zeros_(self.shift_corr.weight)

    @property
    def scheme(self) -> str:
        return "amortised" if self.latents is None else "explicit"

    def uses_encoder(self, epoch: int, warmup_epochs: int) -> bool:
        """Whether the latents of epoch ``epoch`` (0-based) come from the encoder."""
        return self.encoder is not None and (self.latents is None or epoch < warmup_epochs)

    def dense_groups(self, lr: float) -> list[dict[str, Any]]:
        """Adam parameter groups: the representation at ``lr`` times its :meth:`step_scale`, the encoder at ``lr``.

        The scale is read now (a fresh fit, after the representation's start); a
        resumed fit restores the groups' rates from its optimiser checkpoint.
        """
        groups = [{"params": [p for p in self.decoder.parameters() if p.requires_grad],
                   "lr": lr * float(self.decoder.step_scale())}]
        if self.encoder is not None:
            groups.append({"params": list(self.encoder.parameters()), "lr": lr})
        return [g for g in groups if g["params"]]

    def sparse_groups(self, s: TrainSettings) -> list[dict[str, Any]]:
        """Parameter groups of the per-particle tables (sparse Adam)."""
        groups = []
        if self.latents is not None:
            groups.append({"params": [self.latents.weight], "lr": s.latent_lr})
        if self.rot_corr is not None:
            groups.append({"params": [self.rot_corr.weight], "lr": s.pose_lr})
            groups.append({"params": [self.shift_corr.weight], "lr": s.shift_lr_A})
        return groups

    def poses(self, batch: Batch, refine: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Rotations ``[B, 3, 3]`` and origins ``[B, 2]`` Å, corrected when ``refine``."""
        if not refine or self.rot_corr is None:
            return batch.R, batch.shifts_A
        return rotation_correction(self.rot_corr(batch.idx)) @ batch.R, batch.shifts_A + self.shift_corr(batch.idx)


def autocast(device: torch.device, amp: bool):
    """bfloat16 autocast on CUDA when ``amp``; a no-op context otherwise."""
    import contextlib

    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """``KL(N(μ, diag σ²) ‖ N(0, I)) = ½ Σ_j (μ_j² + σ_j² − log σ_j² − 1)`` per row ``[B]`` (nats)."""
    return 0.5 * (mu * mu + logvar.exp() - logvar - 1).sum(-1)


def _latent_sample(model: LatentModel, data: ParticleBatches, batch: Batch, gen: torch.Generator | None,
                   sample: bool, use_encoder: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(z [B, d], KL or prior term [B])`` for the batch (``use_encoder`` None: the encoder when there is no table)."""
    if use_encoder is None:
        use_encoder = model.latents is None
    if not use_encoder:
        z = model.latents(batch.idx)
        return z, 0.5 * (z * z).sum(-1)
    mu, logvar = model.encoder(*data.encoder_input(model.decoder, batch))
    kl = kl_divergence(mu, logvar)
    if not sample:
        return mu, kl
    eps = torch.randn(mu.shape, generator=gen, device=mu.device, dtype=mu.dtype)
    return mu + eps * torch.exp(0.5 * logvar), kl


def batch_loss(model: LatentModel, data: ParticleBatches, batch: Batch, beta: float,
               gen: torch.Generator | None = None, sample: bool = True, refine: bool = False,
               use_encoder: bool | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """The mean objective of the module docstring over the batch, and its parts (per disc pixel).

    ``use_encoder``: take the latents from the encoder (True) or the table (False);
    None: the encoder exactly when the model has no table.
    """
    z, kl = _latent_sample(model, data, batch, gen, sample, use_encoder)
    R, shifts = model.poses(batch, refine)
    pred = model.decoder.slice_half(R, z, points=data.fit_idx)
    pred = pred * data.phase(shifts)
    if batch.ctf is not None:
        pred = pred * batch.ctf
    err = 0.5 * ((batch.y - pred).abs() ** 2 * data.weights).sum(-1)
    n = data.points.n_disc
    loss = (err + beta * kl).mean() / n
    return loss, {"loss": float(loss.detach()), "recon": float(err.detach().mean()) / n,
                  "kl": float(kl.detach().mean()) / n}


def progress_bar(enabled: bool, total: int, desc: str):
    """A tqdm bar over images (disabled when not ``enabled``)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="img", disable=not enabled, leave=False, dynamic_ncols=True)
