"""Traversal of a run's latent space: the density-weighted graph path between two particles, with volumes along it.

:func:`traverse` follows the shortest path on the k-NN graph of the latents
(:func:`cryoscape.analysis.trajectory.graph_path`) and generates volumes at
points equally spaced along it (:mod:`cryoscape.analysis.volumes`);
:func:`save_traversal` writes ``path.json``, ``path_points.npy`` and
``volumes/path_XX.mrc``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cryoscape.analysis.analysis_files import VOLUMES_DIR, run_embedding
from cryoscape.analysis.latent import as_latents
from cryoscape.analysis.progress import Progress, say
from cryoscape.analysis.run_particles import run_particles
from cryoscape.analysis.trajectory import GraphPath, graph_path
from cryoscape.analysis.volumes import GeneratedVolume, VolumeFn, default_neighbours, generate_volumes
from cryoscape.errors import InputError
from cryoscape.io.atomic import check_output_path
from cryoscape.io.mrc import write_mrc
from cryoscape.io.npy import save_npy
from cryoscape.io.plain import write_json
from cryoscape.io.run_dir import RunDirectory

__all__ = ["Traversal", "traverse", "check_traversal_inputs", "traversal_outputs", "check_traversal_outputs",
           "save_traversal"]


@dataclass
class Traversal:
    """A density-weighted graph path between two particles of a run, with volumes along it."""

    start: int
    end: int
    path: GraphPath
    k: int
    embedding: np.ndarray  # [N, 2] for figures
    embedding_method: str
    volumes: list[GeneratedVolume] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain-type content of ``path.json``."""
        return {
            "start_particle": self.start, "end_particle": self.end, "k": self.k,
            "indices": self.path.indices.tolist(), "latent_points": self.path.points.tolist(),
            "resampled_points": self.path.resampled.tolist(), "cost": self.path.cost, "length": self.path.length,
            "embedding_method": self.embedding_method,
            "volumes": [{"name": v.name, "source": v.source, "n_effective": v.n_effective} for v in self.volumes],
            "notes": list(self.notes),
        }


def check_traversal_inputs(
    run: RunDirectory, start: int, end: int, local_volumes: bool = False, volume_fn: VolumeFn | None = None,
    particles: Any | None = None,
) -> tuple[np.ndarray, Any | None]:
    """The run's latents ``[N, d]`` and particle set (when needed), after checking both ends of the path.

    The particle set is opened here when local reconstructions are asked for
    and the run has no model, so a missing particle file fails before any work.
    """
    Z = as_latents(run.read_latents()[0])
    n = Z.shape[0]
    for name, i in (("--from-particle", start), ("--to-particle", end)):
        if not 0 <= i < n:
            raise InputError(f"{name} {i} is out of range; the run has particles 0 to {n - 1}")
    if particles is None and local_volumes and volume_fn is None:
        particles = run_particles(run)
    return Z, particles


def traverse(
    run: RunDirectory,
    start: int,
    end: int,
    k: int = 10,
    n_points: int = 10,
    density_power: float = 1.0,
    local_volumes: bool = False,
    n_neighbours: int | None = None,
    device: str = "cpu",
    seed: int = 0,
    progress: Progress | None = None,
    volume_fn: VolumeFn | None = None,
    particles: Any | None = None,
) -> Traversal:
    """Shortest density-weighted k-NN graph path from particle ``start`` to ``end``, and volumes along it.

    Volumes sit at ``n_points`` points equally spaced in arc length, from the
    run's model ``volume_fn(run, z)`` (None: the run has none) or, with
    ``local_volumes``, local reconstructions from ``n_neighbours`` particles
    (default ``max(100, N / n_points)``) of ``particles`` (default the run's own).
    """
    Z, particles = check_traversal_inputs(run, start, end, local_volumes, volume_fn, particles)
    n = Z.shape[0]
    say(progress, f"shortest path on the {k}-nearest-neighbour graph of {n} particles")
    path = graph_path(Z, start, end, k=min(k, n - 1), density_power=density_power, n_points=n_points)
    emb, method, _ = run_embedding(run, Z, seed)
    result = Traversal(start, end, path, k, emb, method)
    points = [(f"path_{j:02d}", p) for j, p in enumerate(path.resampled)]
    nb = n_neighbours or default_neighbours(n, n_points)
    result.volumes = generate_volumes(run, Z, points, local_volumes, nb, device, particles, progress, volume_fn)
    if not result.volumes:
        result.notes.append("no volumes: the run has no model; pass --local-volumes to reconstruct them from the particles")
    return result


def traversal_outputs(out_dir: str | Path) -> list[Path]:
    """The fixed files :func:`save_traversal` writes into ``out_dir``."""
    out = Path(out_dir)
    return [out / "path.json", out / "path_points.npy", out / "path.png"]


def check_traversal_outputs(out_dir: str | Path, force: bool = False) -> None:
    """Refuse an existing traversal in ``out_dir`` unless ``force`` (call before any work)."""
    for p in traversal_outputs(out_dir):
        check_output_path(p, force)


def save_traversal(result: Traversal, out_dir: str | Path, force: bool = False) -> list[Path]:
    """Write ``path.json``, ``path_points.npy`` (resampled ``[n, d]``) and ``volumes/path_XX.mrc``."""
    json_path, npy_path, _ = traversal_outputs(out_dir)
    paths = [write_json(json_path, result.to_dict(), force), save_npy(npy_path, result.path.resampled, force)]
    for v in result.volumes:
        paths.append(write_mrc(Path(out_dir) / VOLUMES_DIR / f"{v.name}.mrc", v.volume, v.apix, force=force))
    return paths
