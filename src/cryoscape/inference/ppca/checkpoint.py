"""The PPCA EM state between iterations, and its snapshot as tensors and numbers (to resume a fit).

A snapshot (:func:`snapshot`) holds everything the EM needs to continue: the
volumes (and, with cross halves, each half's), the noise variance, the contrasts
and their prior width, the posteriors and the objective so far. It contains
tensors and plain numbers only, so it can be written with
:meth:`~cryoscape.io.run_dir.RunDirectory.save_checkpoint` and read back with
``weights_only=True``. :func:`restore` rebuilds the models from the
representation template with ``with_volumes``. The keys are those of earlier
runs' checkpoints, which therefore still resume.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch

from cryoscape.errors import InputError
from cryoscape.inference.ppca.estep import CONTRAST_PRIOR_STD
from cryoscape.models.representation import LinearInLatent

__all__ = ["EMState", "new_state", "copy_model", "snapshot", "restore"]


@dataclass
class EMState:
    """Per-particle posteriors ``mean [N, K]``, ``cov [N, K, K]``, contrasts ``[N]``; the noise variance
    ``s2`` per Fourier coefficient (None before the first batch); the contrast prior's width; and
    ``contrast_ss``, the running ``Σ_i E[(a_i − 1)²]`` of the current iteration."""

    mean: torch.Tensor
    cov: torch.Tensor
    contrast: torch.Tensor
    s2: float | None
    contrast_std: float
    contrast_ss: float = 0.0


def new_state(n: int, latent_dim: int, device, dtype, contrast_prior_std: float | None) -> EMState:
    """The state before the first iteration: zero posteriors, unit contrasts, no noise variance yet."""
    return EMState(torch.zeros(n, latent_dim, dtype=dtype, device=device),
                   torch.zeros(n, latent_dim, latent_dim, dtype=dtype, device=device),
                   torch.ones(n, dtype=dtype, device=device), None,
                   CONTRAST_PRIOR_STD if contrast_prior_std is None else float(contrast_prior_std))


def copy_model(model: LinearInLatent) -> LinearInLatent:
    """An independent copy of the volumes (same kind and settings)."""
    return model.with_volumes(model.mean.clone(), model.components.clone())


def _cpu(x: torch.Tensor) -> torch.Tensor:
    return x.detach().cpu().clone()


def snapshot(model: LinearInLatent, state: EMState, objective: list[float], done: int,
             cross: list[LinearInLatent] | None = None) -> dict:
    """Everything needed to continue the EM after ``done`` iterations (tensors and numbers only)."""
    halves = {} if cross is None else {
        f"half{g}_{k}": _cpu(v) for g, m in enumerate(cross) for k, v in (("mean", m.mean), ("components", m.components))}
    return {**halves, "iteration": int(done), "volume_mean": _cpu(model.mean),
            "volume_components": _cpu(model.components), "s2": float(state.s2),
            "latent_mean": _cpu(state.mean), "latent_cov": _cpu(state.cov), "contrast": _cpu(state.contrast),
            "contrast_std": float(state.contrast_std), "objective": torch.tensor(objective, dtype=torch.float64)}


def restore(saved: Mapping, template: LinearInLatent, n: int, device, dtype
            ) -> tuple[LinearInLatent, EMState, list[LinearInLatent] | None, list[float], int]:
    """``(model, state, half models or None, objective, iterations done)`` from a :func:`snapshot`.

    The models are ``template.with_volumes(...)``; one-line :class:`InputError` if the snapshot is
    incomplete or does not fit ``n`` particles and the template's box and latent dimension.
    """
    try:
        mean, comps = saved["volume_mean"], saved["volume_components"]
        lat, cov, contrast = saved["latent_mean"], saved["latent_cov"], saved["contrast"]
        s2, done, objective = float(saved["s2"]), int(saved["iteration"]), saved["objective"]
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"the saved PPCA state is incomplete ({exc}); start the fit again with --force") from None
    K, D = int(template.latent_dim), int(template.box)
    if tuple(comps.shape) != (K, D, D, D) or tuple(lat.shape) != (n, K):
        raise InputError(f"the saved PPCA state has components {tuple(comps.shape)} and latents {tuple(lat.shape)}, "
                         f"but this fit has latent dimension {K}, box {D} and {n} particles; start again with --force")
    t = lambda x: torch.as_tensor(x).to(device=device, dtype=dtype)
    state = EMState(t(lat), t(cov), t(contrast), s2, float(saved.get("contrast_std", CONTRAST_PRIOR_STD)))
    halves = None
    if "half0_mean" in saved and "half1_components" in saved:
        halves = [template.with_volumes(t(saved[f"half{g}_mean"]), t(saved[f"half{g}_components"])) for g in (0, 1)]
    model = template.with_volumes(t(mean), t(comps))
    objective = [float(v) for v in torch.as_tensor(objective).reshape(-1)]
    return model, state, halves, objective, done
