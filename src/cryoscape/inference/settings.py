"""Settings of the gradient inference schemes (amortised encoder, explicit latents): one source."""

from __future__ import annotations

from dataclasses import dataclass

from cryoscape.errors import InputError

__all__ = ['LATENT_SCHEMES', 'TrainSettings']


LATENT_SCHEMES = ("amortised", "explicit")
"""The gradient inference schemes: an amortised encoder, or one free latent per particle."""


@dataclass
class TrainSettings:
    """Optimisation settings (all plain types; stored in the run's config).

    epochs: passes over the particles. batch_size: images per step.
    lr: Adam learning rate of decoder and encoder. latent_lr: sparse-Adam rate of
    the explicit latents. warmup_epochs: explicit scheme only, amortised epochs
    before the switch to per-particle latents started at the encoder's means
    (0: none; the model must then have an encoder). beta: weight of the KL (prior) term. pose_lr,
    shift_lr_A: sparse-Adam rates of the rotation (rad) and shift (Å) corrections;
    refine_poses: refine poses from epoch ``refine_start_epoch`` (0-based) on.
    seed: seeds the initial weights, the batch order and the noise.
    device: "cpu" or "cuda". amp: autocast (bfloat16) on CUDA. keep_last:
    checkpoints kept.
    """

    epochs: int = 20
    batch_size: int = 32
    lr: float = 3e-3
    latent_lr: float = 1.5
    beta: float = 0.1
    warmup_epochs: int = 0
    refine_poses: bool = False
    refine_start_epoch: int = 2
    pose_lr: float = 1e-3
    shift_lr_A: float = 0.01
    seed: int = 0
    device: str = "cpu"
    amp: bool = True
    keep_last: int = 2

    def check(self) -> None:
        """One-line :class:`InputError` for impossible values."""
        if self.epochs < 1:
            raise InputError(f"--epochs is {self.epochs}; train for at least 1 epoch")
        if self.batch_size < 1:
            raise InputError(f"--batch-size must be at least 1; got {self.batch_size}")
        for name in ("lr", "latent_lr", "pose_lr", "shift_lr_A"):
            if not getattr(self, name) > 0:
                raise InputError(f"the learning rate {name} must be positive; got {getattr(self, name)}")
        if self.warmup_epochs < 0:
            raise InputError(f"--warmup-epochs must be >= 0; got {self.warmup_epochs}")
        if not self.beta >= 0:
            raise InputError(f"--beta must be >= 0; got {self.beta}")
        if self.device not in ("cpu", "cuda"):
            raise InputError(f"--device must be cpu or cuda; got {self.device!r}")
