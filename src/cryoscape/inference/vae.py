"""Fitting a neural hyper-molecule to posed particles: amortised (VAE) or explicit latents.

Two inference schemes share one decoder (:class:`cryoscape.models.neural.NeuralHyperMolecule`):

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

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import nn

from cryoscape.errors import InputError

__all__ = [
    "LATENT_SCHEMES",
    "TrainSettings",
    "FitPoints",
    "fit_points",
    "estimate_norm_scale",
    "ParticleBatches",
    "Batch",
    "DrgnModel",
    "batch_loss",
    "TrainResult",
    "train",
    "infer_latents",
    "rotation_correction",
    "refine_latents",
    "polished_latents",
]

LATENT_SCHEMES = ("amortised", "explicit")


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


# ---------------------------------------------------------------------------- frequencies and data
@dataclass(frozen=True)
class FitPoints:
    """Half-set points the loss and the encoder use.

    ``fit``: indices into ``slice_points(D, half=True)`` with ``|k| < max_freq·D/2``;
    ``weights``: Hermitian weights ``[P_fit]`` (1 at DC, 2 elsewhere);
    ``encoder``: indices of the encoder's input points (``|k| < encoder_max_freq·D/2``).
    """

    D: int
    fit: torch.Tensor
    weights: torch.Tensor
    encoder: torch.Tensor

    @property
    def n_disc(self) -> float:
        """Number of disc pixels the fitted points stand for (``Σ weights``)."""
        return float(self.weights.sum())


def _disc_indices(D: int, frac: float) -> torch.Tensor:
    from cryoscape.imaging._grid import slice_points

    pts = slice_points(D, True)
    r2 = pts.kx ** 2 + pts.ky ** 2
    return torch.nonzero(r2 < (frac * D / 2) ** 2).reshape(-1)


def fit_points(D: int, max_freq: float = 1.0, encoder_max_freq: float = 1.0) -> FitPoints:
    """:class:`FitPoints` for box ``D``; frequencies as fractions of Nyquist (``(0, 1]``)."""
    from cryoscape.imaging._grid import slice_points

    for name, v in (("max_freq", max_freq), ("encoder_max_freq", encoder_max_freq)):
        if not 0 < v <= 1:
            raise InputError(f"{name} must be a fraction of Nyquist in (0, 1]; got {v}")
    fit = _disc_indices(D, max_freq)
    w = 2.0 * slice_points(D, True).insert_weight[fit]
    return FitPoints(D, fit, w, _disc_indices(D, encoder_max_freq))


@dataclass
class Batch:
    """One batch on the compute device.

    idx ``(B,)`` int64 particle indices; y complex ``[B, P_fit]`` normalised image
    FT; y_enc complex ``[B, P_enc]`` the same on the encoder's points with the shift
    removed; R ``[B, 3, 3]``; shifts_A ``[B, 2]``; ctf ``[B, P_fit]`` and ctf_enc
    ``[B, P_enc]`` or None.
    """

    idx: torch.Tensor
    y: torch.Tensor
    y_enc: torch.Tensor
    R: torch.Tensor
    shifts_A: torch.Tensor
    ctf: torch.Tensor | None
    ctf_enc: torch.Tensor | None = None


def _freqs_A(D: int, apix: float, idx: torch.Tensor, device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(kx, ky)`` in cycles/Å of half-set points ``idx``."""
    from cryoscape.imaging._grid import slice_points

    pts = slice_points(D, True)
    return (pts.kx[idx] / (D * apix)).to(device), (pts.ky[idx] / (D * apix)).to(device)


def estimate_norm_scale(particles: Any, n_images: int = 1000, invert: bool = False, batch_size: int = 256) -> float:
    """Root-mean-square of the images' half-set Fourier values (Hermitian-weighted, whole disc).

    Read from ``n_images`` evenly spaced particles (deterministic).
    """
    from cryoscape.imaging._grid import slice_points
    from cryoscape.imaging.projector import image_to_half

    N = len(particles)
    idx = np.unique(np.linspace(0, N - 1, min(N, n_images)).round().astype(np.int64))
    w = 2.0 * slice_points(particles.box, True).insert_weight.double()
    total, count = 0.0, 0.0
    for a in range(0, idx.size, batch_size):
        img = torch.as_tensor(particles.read_images(idx[a:a + batch_size]), dtype=torch.float64)
        y = image_to_half(-img if invert else img)
        total += float(((y.abs() ** 2) * w).sum())
        count += float(w.sum()) * y.shape[0]
    scale = math.sqrt(total / count)
    if not math.isfinite(scale) or scale <= 0:
        raise InputError("the particle images are constant or not finite; check the image stack")
    return scale


class ParticleBatches:
    """Per-particle poses and CTF plus batch reading, on the compute device.

    Args:
        particles: a posed :class:`~cryoscape.particles.ParticleSet`.
        points: :class:`FitPoints` for the particles' box.
        norm_scale: the images are divided by it (see :func:`estimate_norm_scale`).
        use_ctf: apply the particles' CTF (they must have one).
        invert: negate the images (stacks stored dark on white).
        encoder_phase_flip: multiply the encoder input by the sign of the CTF.
        device: compute device.
        encoder_residual: give the encoder the image minus the decoder's reference
            volume ``V₀`` rendered at the particle's consensus pose (when it has one).
    """

    def __init__(self, particles: Any, points: FitPoints, norm_scale: float, use_ctf: bool = True,
                 invert: bool = False, encoder_phase_flip: bool = False, device: str | torch.device = "cpu",
                 encoder_residual: bool = False) -> None:
        self.particles = particles
        self.points = points
        self.D, self.apix = int(particles.box), float(particles.apix)
        self.norm_scale, self.invert = float(norm_scale), bool(invert)
        self.device = torch.device(device)
        self.use_ctf = bool(use_ctf)
        self.encoder_phase_flip = bool(encoder_phase_flip) and self.use_ctf
        self.encoder_residual = bool(encoder_residual)
        self.rotations = torch.as_tensor(particles.rotations, dtype=torch.float32)
        sh = particles.shifts_A if particles.shifts_A is not None else np.zeros((len(particles), 2))
        self.shifts_A = torch.as_tensor(sh, dtype=torch.float32)
        self.ctf = None
        if self.use_ctf:
            from cryoscape.imaging.ctf import CTF_FIELDS

            table = particles.ctf_table()
            self.ctf = {k: torch.tensor(np.asarray(table[k], dtype=np.float64)) for k in CTF_FIELDS}
        self._kfit = _freqs_A(self.D, self.apix, points.fit, self.device)
        self._kenc = _freqs_A(self.D, self.apix, points.encoder, self.device)
        self.fit_idx = points.fit.to(self.device)
        self.enc_idx = points.encoder.to(self.device)
        self.weights = points.weights.to(self.device)

    def __len__(self) -> int:
        return len(self.particles)

    def ctf_at(self, idx: torch.Tensor, kx: torch.Tensor, ky: torch.Tensor) -> torch.Tensor | None:
        """CTF ``[B, P]`` of particles ``idx`` at frequencies ``kx, ky`` (cycles/Å), or None."""
        if self.ctf is None:
            return None
        from cryoscape.imaging.ctf import ctf_from_freqs

        params = {k: v[idx.cpu()].to(self.device, torch.float32) for k, v in self.ctf.items()}
        return ctf_from_freqs(kx, ky, **params)

    def phase(self, shifts_A: torch.Tensor, encoder: bool = False) -> torch.Tensor:
        """Forward shift phase ``exp(−2πi k·(−origin))`` ``[B, P]`` on the fit (or encoder) points."""
        from cryoscape.imaging.shift import phase_shift_at

        kx, ky = self._kenc if encoder else self._kfit
        return phase_shift_at(kx, ky, -shifts_A)

    def batch(self, idx: np.ndarray) -> Batch:
        """Read and prepare particles ``idx`` (read in increasing order, returned in that order)."""
        from cryoscape.imaging.projector import image_to_half

        idx = np.asarray(idx, dtype=np.int64)
        img = torch.as_tensor(self.particles.read_images(idx), dtype=torch.float32).to(self.device)
        if self.invert:
            img = -img
        y_all = image_to_half(img) / self.norm_scale
        t = torch.as_tensor(idx)
        shifts = self.shifts_A[t].to(self.device)
        y_enc = y_all[:, self.enc_idx] * self.phase(shifts, encoder=True).conj()
        return Batch(t.to(self.device), y_all[:, self.fit_idx], y_enc, self.rotations[t].to(self.device), shifts,
                     self.ctf_at(t, *self._kfit), self.ctf_at(t, *self._kenc))

    def encoder_input(self, decoder: Any, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """The encoder's inputs: half-set values ``[B, P_enc]`` and the pose ``[B, 6]`` (first two rows of ``R``).

        The values are the re-centred image, minus ``CTF · V̂₀(Rᵀ k)`` with
        ``encoder_residual``, times ``sign(CTF)`` with ``encoder_phase_flip``.
        """
        y = batch.y_enc
        if self.encoder_residual and getattr(decoder, "base_volume", None) is not None:
            ref = decoder.base_slice_half(batch.R, self.enc_idx).detach()
            y = y - (ref if batch.ctf_enc is None else ref * batch.ctf_enc)
        if self.encoder_phase_flip and batch.ctf_enc is not None:
            y = y * torch.sign(batch.ctf_enc)
        return y, batch.R[:, :2, :].reshape(-1, 6)


# ---------------------------------------------------------------------------- the model
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


class DrgnModel(nn.Module):
    """Decoder plus the inference scheme's parameters.

    Args:
        decoder: the neural hyper-molecule.
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
            self.latents = nn.Embedding(n_particles, decoder.zdim, sparse=True)
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

    def dense_parameters(self) -> list[nn.Parameter]:
        """Decoder and encoder parameters (Adam)."""
        params = list(self.decoder.parameters())
        if self.encoder is not None:
            params += list(self.encoder.parameters())
        return params

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


def _autocast(device: torch.device, amp: bool):
    """bfloat16 autocast on CUDA when ``amp``; a no-op context otherwise."""
    import contextlib

    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _latent_sample(model: DrgnModel, data: ParticleBatches, batch: Batch, gen: torch.Generator | None,
                   sample: bool, use_encoder: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(z [B, d], KL or prior term [B])`` for the batch (``use_encoder`` None: the encoder when there is no table)."""
    if use_encoder is None:
        use_encoder = model.latents is None
    if not use_encoder:
        z = model.latents(batch.idx)
        return z, 0.5 * (z * z).sum(-1)
    mu, logvar = model.encoder(*data.encoder_input(model.decoder, batch))
    kl = 0.5 * (mu * mu + logvar.exp() - logvar - 1).sum(-1)
    if not sample:
        return mu, kl
    eps = torch.randn(mu.shape, generator=gen, device=mu.device, dtype=mu.dtype)
    return mu + eps * torch.exp(0.5 * logvar), kl


def batch_loss(model: DrgnModel, data: ParticleBatches, batch: Batch, beta: float,
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


# ---------------------------------------------------------------------------- training
@dataclass
class TrainResult:
    """What :func:`train` did: epochs run now, the per-epoch history and the time taken (s)."""

    model: DrgnModel
    epochs_run: int
    history: dict[str, list[float]] = field(default_factory=dict)
    elapsed_s: float = 0.0


def _optimisers(model: DrgnModel, s: TrainSettings) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer | None]:
    dense = torch.optim.Adam(model.dense_parameters(), lr=s.lr)
    groups = model.sparse_groups(s)
    return dense, (torch.optim.SparseAdam(groups) if groups else None)


def _epoch_order(seed: int, epoch: int, n: int, batch_size: int) -> list[np.ndarray]:
    """The batches of epoch ``epoch`` (a permutation drawn from ``(seed, epoch)``), each sorted."""
    perm = np.random.default_rng([int(seed), int(epoch)]).permutation(n)
    return [np.sort(perm[a:a + batch_size]) for a in range(0, n, batch_size)]


def _progress_bar(enabled: bool, total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="img", disable=not enabled, leave=False, dynamic_ncols=True)


def _checkpoint_state(model: DrgnModel, dense: torch.optim.Optimizer, sparse: torch.optim.Optimizer | None,
                      gen: torch.Generator, history: Mapping[str, list[float]]) -> dict[str, Any]:
    return {"model": model.state_dict(), "optim_dense": dense.state_dict(),
            "optim_sparse": None if sparse is None else sparse.state_dict(),
            "rng": {"noise": gen.get_state()}, "history": {k: list(v) for k, v in history.items()}}


def _restore(model: DrgnModel, dense: torch.optim.Optimizer, sparse: torch.optim.Optimizer | None,
             gen: torch.Generator, state: Mapping[str, Any]) -> dict[str, list[float]]:
    """Load a checkpoint into the objects; one-line error when it does not fit the model."""
    try:
        model.load_state_dict(state["model"])
        dense.load_state_dict(state["optim_dense"])
        if sparse is not None:
            sparse.load_state_dict(state["optim_sparse"])
        gen.set_state(state["rng"]["noise"].cpu())
    except (KeyError, RuntimeError, ValueError, TypeError) as exc:
        raise InputError(f"the checkpoint does not match this model ({' '.join(str(exc).split())[:200]}); "
                         "resume with the run's own checkpoints or start over with --force") from exc
    return {k: list(v) for k, v in state.get("history", {}).items()}


def train(model: DrgnModel, data: ParticleBatches, s: TrainSettings, run: Any = None,
          checkpoint: Mapping[str, Any] | None = None, progress: bool = True,
          on_batch: Callable[[int, int], None] | None = None) -> TrainResult:
    """Train ``model`` on ``data`` for epochs ``checkpoint["epoch"] .. s.epochs - 1``.

    Args:
        model: built on ``s.device``.
        data: batches of the particles.
        s: settings.
        run: :class:`~cryoscape.io.run_dir.RunDirectory` for checkpoints and the log (None: neither).
        checkpoint: a state from :meth:`RunDirectory.load_checkpoint` to continue from.
        progress: a progress bar per epoch with the loss and images/s.
        on_batch: called as ``on_batch(epoch, batch_number)`` before each step (tests use it
            to interrupt a run).
    """
    dev = torch.device(s.device)
    dense, sparse = _optimisers(model, s)
    gen = torch.Generator(device=dev).manual_seed(int(s.seed))
    history: dict[str, list[float]] = {"loss": [], "recon": [], "kl": [], "images_per_s": []}
    start = 0
    if checkpoint is not None:
        history.update(_restore(model, dense, sparse, gen, checkpoint))
        start = int(checkpoint["epoch"])
    t_all = time.perf_counter()
    n = len(data)
    for epoch in range(start, s.epochs):
        model.train()
        refine = s.refine_poses and epoch >= s.refine_start_epoch
        use_encoder = model.uses_encoder(epoch, s.warmup_epochs)
        if model.latents is not None and model.encoder is not None and 0 < s.warmup_epochs == epoch:
            _latents_from_encoder(model, data, s, progress)
            if run is not None:
                run.log(f"epoch {epoch + 1}: explicit latents start at the encoder's means after "
                        f"{s.warmup_epochs} amortised warm-up epochs")
        sums = {"loss": 0.0, "recon": 0.0, "kl": 0.0}
        t0 = time.perf_counter()
        with _progress_bar(progress, n, f"epoch {epoch + 1}/{s.epochs}") as bar:
            for b, idx in enumerate(_epoch_order(s.seed, epoch, n, s.batch_size)):
                if on_batch is not None:
                    on_batch(epoch, b)
                batch = data.batch(idx)
                with _autocast(dev, s.amp):
                    loss, parts = batch_loss(model, data, batch, s.beta, gen, sample=True, refine=refine,
                                             use_encoder=use_encoder)
                dense.zero_grad(set_to_none=True)
                if sparse is not None:
                    sparse.zero_grad(set_to_none=True)
                loss.backward()
                dense.step()
                if sparse is not None:
                    sparse.step()
                for k in sums:
                    sums[k] += parts[k] * len(idx)
                bar.update(len(idx))
                bar.set_postfix(loss=f"{parts['loss']:.5f}", img_s=f"{bar.n / max(time.perf_counter() - t0, 1e-9):.0f}")
        elapsed = time.perf_counter() - t0
        for k in sums:
            history[k].append(sums[k] / n)
        history["images_per_s"].append(n / max(elapsed, 1e-9))
        if run is not None:
            run.save_checkpoint(epoch + 1, _checkpoint_state(model, dense, sparse, gen, history), keep_last=s.keep_last)
            run.log(f"epoch {epoch + 1}/{s.epochs}: loss {history['loss'][-1]:.6g} (recon {history['recon'][-1]:.6g}, "
                    f"kl {history['kl'][-1]:.4g}) in {elapsed:.1f} s, {history['images_per_s'][-1]:.0f} images/s")
    return TrainResult(model, s.epochs - start, history, time.perf_counter() - t_all)


@torch.no_grad()
def _latents_from_encoder(model: DrgnModel, data: ParticleBatches, s: TrainSettings, progress: bool) -> None:
    """Set the explicit latent table to the encoder's means (the end of the warm-up)."""
    mu, _ = _encoder_latents(model, data, s, progress)
    model.latents.weight.copy_(torch.as_tensor(mu, dtype=model.latents.weight.dtype,
                                               device=model.latents.weight.device))


# ---------------------------------------------------------------------------- latents after training
@torch.no_grad()
def _encoder_latents(model: DrgnModel, data: ParticleBatches, s: TrainSettings, progress: bool
                     ) -> tuple[np.ndarray, np.ndarray]:
    mus, vars_ = [], []
    dev = torch.device(s.device)
    with _progress_bar(progress, len(data), "latents") as bar:
        for a in range(0, len(data), s.batch_size):
            batch = data.batch(np.arange(a, min(a + s.batch_size, len(data))))
            with _autocast(dev, s.amp):
                mu, logvar = model.encoder(*data.encoder_input(model.decoder, batch))
            mus.append(mu.float().cpu())
            vars_.append(logvar.float().exp().cpu())
            bar.update(len(batch.idx))
    return torch.cat(mus).numpy(), torch.cat(vars_).numpy()


def _gauss_newton_hessian(model: DrgnModel, data: ParticleBatches, batch: Batch, z: torch.Tensor, beta: float,
                          refine: bool) -> torch.Tensor:
    """``Re(Jᴴ W J) + β I`` ``[B, d, d]`` at latents ``z`` ``[B, d]`` (see :func:`_explicit_variances`)."""
    R, shifts = model.poses(batch, refine)
    J = _latent_jacobian(model.decoder, R, z.detach(), data.fit_idx)  # [B, P, d] complex
    J = J * data.phase(shifts)[..., None]
    if batch.ctf is not None:
        J = J * batch.ctf[..., None]
    Jr = torch.view_as_real(J)  # [B, P, d, 2]
    eye = torch.eye(z.shape[-1], device=z.device)
    return torch.einsum("bpir,bpjr,p->bij", Jr, Jr, data.weights) + beta * eye


def _image_objective(model: DrgnModel, data: ParticleBatches, batch: Batch, z: torch.Tensor, beta: float,
                     refine: bool) -> torch.Tensor:
    """``½ Σ_k w_k |y_k − ŷ_k(z)|² + β ½ |z|²`` per image ``[B]`` (not divided by ``n_disc``)."""
    R, shifts = model.poses(batch, refine)
    pred = model.decoder.slice_half(R, z, points=data.fit_idx) * data.phase(shifts)
    if batch.ctf is not None:
        pred = pred * batch.ctf
    return 0.5 * ((batch.y - pred).abs() ** 2 * data.weights).sum(-1) + beta * 0.5 * (z * z).sum(-1)


_STEP_FRACTIONS = (1.0, 0.5, 0.25)
"""Fractions of the Gauss–Newton step tried in turn by :func:`refine_latents`."""


def refine_latents(model: DrgnModel, data: ParticleBatches, s: TrainSettings, steps: int,
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
    with _progress_bar(progress, len(data), "latent refinement") as bar:
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


def _explicit_variances(model: DrgnModel, data: ParticleBatches, s: TrainSettings, progress: bool) -> np.ndarray:
    """Laplace (Gauss–Newton) marginal variances of the explicit latents, ``[N, d]``.

    The Hessian of ``½ Σ_k w_k |y_k − ŷ_k(z)|² + β ½ |z|²`` at the fitted ``z_i`` is
    approximated by ``Re(Jᴴ W J) + β I`` with ``J = ∂ŷ/∂z``; the variances are the
    diagonal of its inverse. ``J`` is exact and cheap because the latent enters the
    decoder's first layer linearly: ``∂ŷ/∂z = (∂ŷ/∂h₀) W_z`` with ``h₀`` the first
    pre-activation, whose per-point gradients come from two backward passes.
    """
    out = []
    with _progress_bar(progress, len(data), "latent variances") as bar:
        for a in range(0, len(data), s.batch_size):
            batch = data.batch(np.arange(a, min(a + s.batch_size, len(data))))
            H = _gauss_newton_hessian(model, data, batch, model.latents(batch.idx), s.beta, s.refine_poses)
            out.append(torch.linalg.inv(H).diagonal(dim1=-2, dim2=-1).detach().cpu())
            bar.update(len(batch.idx))
    return torch.cat(out).numpy()


def _latent_jacobian(dec: Any, R: torch.Tensor, z: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """``∂V̂(z_b, R_bᵀ k)/∂z_b`` complex ``[B, P, d]`` on the half-set ``points`` (float32)."""
    from cryoscape.imaging._grid import slice_points
    from cryoscape.models.neural import canonical_sign, slice_coordinates

    pts = slice_points(dec.D, True, R.device)
    q = slice_coordinates(R.float(), pts.kx[points].float(), pts.ky[points].float())
    sgn = canonical_sign(q)
    u = q * (sgn / dec.D)[..., None]
    with torch.enable_grad():
        pre = (dec.input_pe(dec.encoding(u)) + dec.input_z(z)[:, None, :]).detach().requires_grad_(True)
        h = torch.relu(pre)
        for layer in dec.hidden:
            h = h + torch.relu(layer(h))
        o = dec.output(h)
        ga, = torch.autograd.grad(o[..., 0].sum(), pre, retain_graph=True)
        gb, = torch.autograd.grad(o[..., 1].sum(), pre)
    Wz = dec.input_z.weight  # [H, d]
    not_dc = (q != 0).any(-1).float()
    return torch.complex(ga @ Wz, (gb @ Wz) * (sgn * not_dc)[..., None]).detach()


def infer_latents(model: DrgnModel, data: ParticleBatches, s: TrainSettings, progress: bool = True
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


def polished_latents(model: DrgnModel, data: ParticleBatches, s: TrainSettings, steps: int,
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
            target = DrgnModel(model.decoder, None, len(data))
        target.rot_corr, target.shift_corr = model.rot_corr, model.shift_corr
        target = target.to(model.decoder.output.weight.device)
        with torch.no_grad():
            target.latents.weight.copy_(torch.as_tensor(mu, device=target.latents.weight.device))
        target.eval()
    accepted = refine_latents(target, data, s, steps, progress)
    mean, var = infer_latents(target, data, s, progress)
    return mean, var, accepted
