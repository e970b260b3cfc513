"""Named methods users run: a representation and an inference scheme with their defaults.

:mod:`cryoscape.methods.registry` lists every method (the presets ``pca`` and
``drgn`` and every other runnable (representation, inference) pair); the CLI,
the analysis callers and the benchmark read it. This package also holds the
helpers any method with a model shares: :func:`model_volume`,
:func:`component_sweep` and :func:`curve_sweep`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cryoscape.errors import InputError
from cryoscape.methods import drgn, pca
from cryoscape.methods.drgn import run_drgn
from cryoscape.methods.pca import run_pca
from cryoscape.methods.latent_point import latent_point
from cryoscape.methods.registry import METHODS, get_method, method_for_pair, volume_function

__all__ = ["pca", "run_pca", "drgn", "run_drgn", "model_volume", "component_sweep", "curve_sweep", "RECIPES",
           "METHODS", "get_method", "method_for_pair", "volume_function"]

RECIPES: tuple[str, ...] = tuple(METHODS)
"""Every method name in the registry (presets first)."""


def model_volume(run: Any, z: Any) -> np.ndarray:
    """The volume ``[D, D, D]`` float32 the run's model gives at latent ``z (d,)``.

    One-line :class:`InputError` when ``z`` does not have the latents' dimension
    or the run's method has no model (use a local reconstruction instead).
    """
    point = latent_point(z, _latent_dim(run), run.path)
    fn = volume_function(run.method)
    if fn is None:
        raise InputError(f"{run.method!r} runs have no model to generate volumes from; "
                         "use --near-particle for a local reconstruction instead")
    return np.asarray(fn(run, point), dtype=np.float32)


def _latent_dim(run: Any) -> int:
    """Dimension ``d`` of the run's latents."""
    return int(run.read_latents()[0].shape[1])


def component_sweep(latents: Any, component: int, steps: int, low: float = 5.0, high: float = 95.0
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Latent points along one coordinate: ``(points [steps, d], percentiles [steps])``.

    Coordinate ``component`` (1-based) runs through the ``low``–``high``
    percentiles of its values over the particles, evenly spaced in percentile;
    every other coordinate sits at its mean.
    """
    Z = np.asarray(latents, dtype=np.float64)
    Z = Z[:, None] if Z.ndim == 1 else Z
    d = Z.shape[1]
    if not 1 <= component <= d:
        raise InputError(f"--component {component} does not exist; the latents have components 1 to {d}")
    if steps < 2:
        raise InputError(f"--steps must be at least 2; got {steps}")
    pct = np.linspace(low, high, steps)
    points = np.repeat(Z.mean(axis=0)[None, :], steps, axis=0)
    points[:, component - 1] = np.percentile(Z[:, component - 1], pct)
    return points, pct


def curve_sweep(points: Any, coordinate: Any, steps: int, low: float = 5.0, high: float = 95.0
                ) -> tuple[np.ndarray, np.ndarray]:
    """Latent points along a latent curve: ``(points [steps, d], positions [steps])``.

    ``points [M, d]`` are the curve at ``M`` equally spaced positions in ``[0, 1]``
    (a run's ``curve_points.npy``); the positions are the ``low``–``high``
    percentiles of the particles' ``coordinate`` on it, evenly spaced in
    percentile, and the points between nodes are linearly interpolated.
    """
    nodes = np.asarray(points, dtype=np.float64)
    if steps < 2:
        raise InputError(f"--steps must be at least 2; got {steps}")
    s = np.percentile(np.asarray(coordinate, dtype=np.float64), np.linspace(low, high, steps))
    grid = np.linspace(0.0, 1.0, nodes.shape[0])
    return np.stack([np.interp(s, grid, nodes[:, k]) for k in range(nodes.shape[1])], axis=1), s
