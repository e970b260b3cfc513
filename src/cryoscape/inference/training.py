"""Gradient training of a latent model: the epoch loop and its checkpoints.

:func:`train` fits a :class:`~cryoscape.inference.latent_model.LatentModel`
(any representation plus an encoder or a per-particle latent table) to
:class:`~cryoscape.inference.batches.ParticleBatches`. Batches come in a
per-epoch permutation drawn from ``(seed, epoch)``; the reparameterisation
noise from a private generator seeded with ``seed``. After every epoch a
checkpoint (model, optimisers, generator state, history) is written atomically
into the run directory, and :func:`train` started from it continues exactly as
an uninterrupted run would (same device and thread count).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np
import torch

from cryoscape.errors import InputError
from cryoscape.inference.batches import ParticleBatches
from cryoscape.inference.latent_model import LatentModel, autocast, batch_loss, progress_bar
from cryoscape.inference.latents import _latents_from_encoder
from cryoscape.inference.settings import TrainSettings

__all__ = ['TrainResult', 'train']


@dataclass
class TrainResult:
    """What :func:`train` did: epochs run now, the per-epoch history and the time taken (s)."""

    model: LatentModel
    epochs_run: int
    history: dict[str, list[float]] = field(default_factory=dict)
    elapsed_s: float = 0.0


def _optimisers(model: LatentModel, s: TrainSettings) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer | None]:
    dense = torch.optim.Adam(model.dense_groups(s.lr), lr=s.lr)
    groups = model.sparse_groups(s)
    return dense, (torch.optim.SparseAdam(groups) if groups else None)


def _epoch_order(seed: int, epoch: int, n: int, batch_size: int) -> list[np.ndarray]:
    """The batches of epoch ``epoch`` (a permutation drawn from ``(seed, epoch)``), each sorted."""
    perm = np.random.default_rng([int(seed), int(epoch)]).permutation(n)
    return [np.sort(perm[a:a + batch_size]) for a in range(0, n, batch_size)]


def _checkpoint_state(model: LatentModel, dense: torch.optim.Optimizer, sparse: torch.optim.Optimizer | None,
                      gen: torch.Generator, history: Mapping[str, list[float]]) -> dict[str, Any]:
    return {"model": model.state_dict(), "optim_dense": dense.state_dict(),
            "optim_sparse": None if sparse is None else sparse.state_dict(),
            "rng": {"noise": gen.get_state()}, "history": {k: list(v) for k, v in history.items()}}


def _restore(model: LatentModel, dense: torch.optim.Optimizer, sparse: torch.optim.Optimizer | None,
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


def train(model: LatentModel, data: ParticleBatches, s: TrainSettings, run: Any = None,
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
        with progress_bar(progress, n, f"epoch {epoch + 1}/{s.epochs}") as bar:
            for b, idx in enumerate(_epoch_order(s.seed, epoch, n, s.batch_size)):
                if on_batch is not None:
                    on_batch(epoch, b)
                batch = data.batch(idx)
                with autocast(dev, s.amp):
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
