"""Volumes at latent points of a run: from the method's model, else local reconstructions.

The model is injected: ``volume_fn(run, z)`` returns the run's ``[D, D, D]``
volume at latent ``z (d,)``. The command line and the demo look it up in the
method registry (:func:`cryoscape.methods.registry.volume_function`); None
means the run has no model (a method without one, or a peer program's run
whose volume function the caller does not pass).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from cryoscape.analysis.progress import Progress, say
from cryoscape.analysis.run_particles import run_particles
from cryoscape.io.run_dir import RunDirectory

VolumeFn = Callable[[RunDirectory, np.ndarray], "np.ndarray | None"]
"""``volume_fn(run, z) -> [D, D, D]`` volume of the run's model at latent point ``z (d,)`` (None: declined)."""


@dataclass
class GeneratedVolume:
    """A volume at one latent point, and where it came from."""

    name: str  # file stem, e.g. "cluster_003" or "pc1_05"
    latent: np.ndarray  # (d,) the latent point
    volume: np.ndarray  # [D, D, D] float32
    apix: float  # Å/voxel
    source: str  # "model" or "local reconstruction"
    n_effective: float | None = None  # Kish effective particle count of a local reconstruction


def volume_at(run: RunDirectory, z: np.ndarray, volume_fn: VolumeFn | None) -> np.ndarray | None:
    """The volume ``[D, D, D]`` float32 that ``volume_fn`` gives for the run at latent point ``z``, or None.

    None means the run has no model (``volume_fn`` is None, or it declined);
    callers then fall back to a local reconstruction or skip the volume.
    """
    if volume_fn is None:
        return None
    vol = volume_fn(run, np.asarray(z, dtype=np.float64).reshape(-1))
    return None if vol is None else np.asarray(vol, dtype=np.float32)


def default_neighbours(n: int, n_clusters: int) -> int:
    """Particles per local reconstruction: ``max(100, N / k)``, at most N."""
    return int(min(n, max(100, n // max(n_clusters, 1))))


def generate_volumes(
    run: RunDirectory,
    latents: np.ndarray,
    points: Sequence[tuple[str, np.ndarray]],
    local: bool = False,
    n_neighbours: int = 100,
    device: str = "cpu",
    particles: Any | None = None,
    progress: Progress | None = None,
    volume_fn: VolumeFn | None = None,
) -> list[GeneratedVolume]:
    """Volumes at named latent points: the model's (:func:`volume_at`), else local reconstructions when ``local``.

    ``particles`` defaults to the run's particle set (read only when needed).
    Returns an empty list when the run has no model and ``local`` is false.
    """
    out: list[GeneratedVolume] = []
    for name, z in points:
        vol = volume_at(run, z, volume_fn)
        if vol is not None:
            out.append(GeneratedVolume(name, np.asarray(z), vol, float(run.apix or 1.0), "model"))
        elif local:
            particles = particles if particles is not None else run_particles(run)
            say(progress, f"local reconstruction at {name} from {n_neighbours} nearest particles")
            out.append(_local_volume(name, particles, latents, z, n_neighbours, device))
    return out


def _local_volume(name: str, particles: Any, latents: np.ndarray, z: np.ndarray, n_neighbours: int, device: str) -> GeneratedVolume:
    """One local reconstruction at ``z`` as a :class:`GeneratedVolume`."""
    from cryoscape.analysis.local_reconstruction import neighbourhood, reconstruct_near

    rec = reconstruct_near(particles, latents, z, n_neighbours=n_neighbours, progress=False, device=device)
    n_eff = neighbourhood(latents, z, n_neighbours).n_effective
    return GeneratedVolume(name, np.asarray(z), np.asarray(rec.volume, dtype=np.float32), float(rec.apix),
                           "local reconstruction", n_eff)
