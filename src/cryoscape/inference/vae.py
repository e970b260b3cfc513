"""Fitting a neural hyper-molecule to posed particles: amortised (VAE) or explicit latents.

Two inference schemes fit any representation (:class:`cryoscape.models.representation.Representation`,
e.g. the neural hyper-molecule or the linear principal volumes), called the decoder here:

``amortised``
    an encoder (:mod:`cryoscape.models.encoder`) maps each image to
    ``q(z | image) = N(μ, diag σ²)``; decoder and encoder are trained on the
    negative evidence lower bound (ELBO) with the KL term weighted by ``β``.
``explicit``
    every particle has its own latent ``z_i`` (an auto-decoder), optimised
    jointly with the decoder under the prior ``N(0, I)`` (the same ``β``
    weights the prior term ``½|z_i|²``). With ``warmup_epochs = W > 0`` the
    first ``W`` epochs are amortised (an encoder trained on the ELBO, exactly
    as above); at the start of epoch ``W`` every ``z_i`` is set to the
    encoder's mean ``μ(image_i)`` and from then on only the table and the
    decoder are trained (the encoder is no longer used). With ``W = 0`` the
    table starts at ``N(0, 0.1² I)``.

    At random starts, explicit latents need a large ``latent_lr`` (about 1;
    see :mod:`cryoscape.methods.drgn` for measurements): the decoder's output
    layer starts at zero, so at first the loss does not depend on ``z`` at
    all; afterwards each ``z_i`` moves only once per epoch, by about
    ``latent_lr`` per coordinate (Adam's early steps), while the decoder,
    updated every batch, learns to fit noise with whatever codes it is given.
    With ``latent_lr = 0.05`` on a 2 000-particle adk-1d subset (box 64,
    SNR 0.05, 16 epochs) the latents did not find the conformational
    coordinate (|Spearman| 0.11); at 1.5 they did (0.81). After training,
    :func:`refine_latents` re-fits every ``z_i`` to the final decoder by a few
    Gauss–Newton steps (0.88 on that subset); :func:`polished_latents` does
    the same for amortised fits, starting at the encoder's means.

Optionally each particle's pose is refined by gradient: a rotation
correction ``R_i = exp([ω_i]×) R_i⁰`` (axis-angle ``ω_i``, radians) and a shift
correction added to the origin (Å), both starting at zero, i.e. at the
consensus poses.

Objective (per image, per disc pixel)
-------------------------------------
Images enter through their centred DFT on the half set of in-circle
frequencies (:func:`cryoscape.imaging.projector.image_to_half`), divided by the
global scale ``norm_scale`` (root-mean-square of those Fourier values over a
sample of images; stored in the run's config), so that the noise variance per
Fourier coefficient is at most about 1. The model image is
``CTF · phase(−origin) · V̂(z, Rᵀ k)`` (:func:`cryoscape.imaging.forward.transfer_half`'s
conventions). With Hermitian weights ``w_k`` (1 at DC, 2 elsewhere: the sum
over the half set then equals the sum over the whole disc)::

    loss_i = ( ½ Σ_k w_k |y_k − ŷ_k|² + β · KL_i ) / n_disc

where ``n_disc = Σ_k w_k`` and ``KL_i`` is the KL divergence of ``q(z | image_i)``
from ``N(0, I)`` (amortised) or ``½ |z_i|²`` (explicit). With ``β = 1`` this is
the negative ELBO per pixel for white noise of unit variance in normalised
units. Only frequencies with ``|k| < max_freq · D/2`` are fitted.

Training
--------
Batches are read from the (memory-mapped) stacks in a per-epoch permutation
drawn from ``(seed, epoch)``; the reparameterisation noise comes from a
private generator seeded with ``seed``. Decoder and encoder use Adam; latent
tables and pose corrections use sparse Adam (only the rows of the batch move).
After every epoch a checkpoint (model, optimisers, generator state, history)
is written atomically into the run directory; :func:`train` started from a
checkpoint continues exactly as an uninterrupted run would (same device and
thread count). On CUDA the networks run under ``torch.autocast`` (bfloat16).
"""

from __future__ import annotations

from cryoscape.inference.batches import Batch, FitPoints, ParticleBatches, estimate_norm_scale, fit_points
from cryoscape.inference.latent_model import LatentModel, batch_loss, kl_divergence, rotation_correction
from cryoscape.inference.latents import (_encoder_latents, _explicit_variances,  # noqa: F401  (tests use them)
                                         _gauss_newton_hessian, _image_objective, infer_latents, polished_latents,
                                         refine_latents)
from cryoscape.inference.settings import LATENT_SCHEMES, TrainSettings
from cryoscape.inference.training import TrainResult, train

__all__ = [
    "LATENT_SCHEMES",
    "TrainSettings",
    "FitPoints",
    "fit_points",
    "estimate_norm_scale",
    "ParticleBatches",
    "Batch",
    "LatentModel",
    "batch_loss",
    "kl_divergence",
    "TrainResult",
    "train",
    "infer_latents",
    "rotation_correction",
    "refine_latents",
    "polished_latents",
]
