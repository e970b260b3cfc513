"""The one check of a latent point given to a run's model (``volume --z``, the analysis, the volume functions)."""

from __future__ import annotations

from typing import Any

import numpy as np

from cryoscape.errors import InputError

__all__ = ["latent_point"]


def latent_point(z: Any, latent_dim: int, run_path: Any) -> np.ndarray:
    """``z`` as a float64 vector ``(latent_dim,)``; one-line :class:`InputError` naming the run otherwise."""
    point = np.asarray(z, dtype=np.float64).reshape(-1)
    if point.size != int(latent_dim):
        raise InputError(f"the latent point has {point.size} coordinates but the run {run_path} has "
                         f"{int(latent_dim)}-D latents; give one value per dimension")
    return point
