"""What every peer run shares on disk: its own folder, the volume hints, the particles and the recorded files.

A peer's own files (poses, weights, logs) stay in ``<run>/peer/``
(:data:`PEER_DIR`); ``peer/volume_hints.npy`` (:data:`VOLUME_HINTS`) holds the
latent points whose volumes are evaluated together with the first one asked
for (the benchmark's sampled particles), so that the program starts once for
all of them instead of once per volume.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cryoscape.bench.sampling import sample_particles
from cryoscape.errors import InputError

__all__ = ["PEER_DIR", "VOLUME_HINTS"]

PEER_DIR = "peer"
"""Folder inside a run directory holding the peer program's own files."""
VOLUME_HINTS = "volume_hints.npy"
"""``[M, d]`` float32 latent points evaluated with the first volume asked for (in :data:`PEER_DIR`)."""


def _dataset_particles(dataset: Any) -> Any:
    """The dataset's :class:`ParticleSet` (poses and CTF required)."""
    from cryoscape.particles import ParticleSet

    ps = ParticleSet.from_file(dataset.star_path)
    ps.require_poses("the cryodrgn peer")
    ps.require_ctf("the cryodrgn peer")
    return ps


def _volume_hints(dataset: Any, latents: np.ndarray) -> np.ndarray:
    """Latents of the particles the benchmark runner samples for the per-image FSC (none without a truth)."""
    truth = getattr(dataset, "truth", None)
    if truth is None or "conformation" not in truth:
        return latents[:0]
    return latents[sample_particles(truth)]


def _fresh_peer_folder(peer: Path, ps: Any) -> None:
    """Empty ``peer`` (the run's :data:`PEER_DIR`) and write the particles' poses and CTF there as cryoDRGN pickles."""
    import shutil

    if peer.exists():
        shutil.rmtree(peer)
    peer.mkdir(parents=True)
    ps.write_cryodrgn(peer / "pose.pkl", peer / "ctf.pkl", force=True)


def _save_npy(path: Path, array: np.ndarray) -> Path:
    """``np.save`` atomically, without pickles."""
    from cryoscape.io.atomic import atomic_path

    with atomic_path(path, force=True) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, np.ascontiguousarray(array), allow_pickle=False)
    return path


def _run_file(run: Any, param: str, default: str) -> Path:
    """A file of the peer recorded in the run's params (relative to the run), which must exist."""
    f = Path(run.path) / str(run.params.get(param, default))
    if not f.exists():
        raise InputError(f"{f} not found: the {run.method} run {run.path} has no trained model; run it again")
    return f


def _threads(run: Any) -> int | None:
    """The CPU threads recorded in the run's params (None: the program's own default)."""
    t = run.params.get("threads")
    return None if t is None else int(t)
