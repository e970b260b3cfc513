"""The model hook of ``pca`` runs: the fitted linear hyper-molecule read from ``weights.pt``
and its volume at a latent point (used by ``analyze``, ``traverse``, ``compare`` and ``volume``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from cryoscape.methods.latent_point import latent_point

__all__ = ["load_model", "pca_volume"]

_MODELS: dict[tuple[str, int], Any] = {}


def load_model(run: Any) -> Any:
    """The fitted :class:`~cryoscape.models.linear.LinearHyperMolecule` of a ``pca`` run.

    ``weights.pt`` is read with ``weights_only=True``; the last model read is
    kept until the file changes, so many volumes from one run read it once.
    """
    import torch

    from cryoscape.io.run_dir import WEIGHTS
    from cryoscape.models.linear import LinearHyperMolecule

    path = run.path / WEIGHTS
    key = (str(path.resolve()), path.stat().st_mtime_ns if path.is_file() else -1)
    if key not in _MODELS:
        state = run.load_weights()  # one-line error when the fit has not finished
        _MODELS.clear()
        _MODELS[key] = LinearHyperMolecule.from_state_dict(state).to(dtype=torch.float32)
    return _MODELS[key]


def pca_volume(run: Any, z: np.ndarray) -> np.ndarray:
    """``X0 + Σ_k z_k X_k`` ``[D, D, D]`` float32 at the run's box and voxel size, for latent ``z (K,)``."""
    model = load_model(run)
    return model.volume(latent_point(z, model.latent_dim, run.path)).cpu().numpy().astype(np.float32)

