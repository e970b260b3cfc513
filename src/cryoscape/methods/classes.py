"""The ``classes`` recipe: 3D classification of posed particles into K maps (survey §2.2).

Representation: K discrete volumes (:class:`cryoscape.models.discrete.DiscreteVolumes`, kind
``discrete``). Inference: EM over the class posteriors at the given poses
(:func:`cryoscape.inference.classes_em.fit_classes`). This module adds the input checks, the
defaults and the run directory.

Run directory (see :mod:`cryoscape.io.run_dir`)::

    run/
      config.yaml            method "classes", the particle file, every setting
      latents.npy            [N, K] float32 class posteriors (particle order): what analyze,
                             select --cluster, compare and bench read
      class_posteriors.npy   the same posteriors, under their own name
      classes.npy            [N] int64 the most likely class (0-based)
      class_01.mrc ...       each class's Wiener-filtered map, with the voxel size of the particles,
      class_01_half1.mrc, class_01_half2.mrc, class_01_fsc.txt   its half maps and their FSC
      weights.pt             DiscreteVolumes.state_dict() (load with weights_only=True)
      metrics.json           class sizes and fractions, resolution per class, every iteration
      log.txt

Volumes at a latent ``z`` (class probabilities) are ``Σ_k z_k V_k``: ``cryoscape volume RUN --z
0,1,0`` writes class 2's map.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cryoscape.errors import InputError
from cryoscape.io.mrc import write_mrc
from cryoscape.io.npy import save_npy
from cryoscape.io.run_dir import RunDirectory
from cryoscape.methods.latent_point import latent_point

__all__ = ["METHOD", "ClassesRun", "run_classes", "classes_volume", "class_map_name"]

METHOD = "classes"


@dataclass
class ClassesRun:
    """The outcome of :func:`run_classes`: the run folder, labels, posteriors, per-class resolution, time."""

    run: RunDirectory
    labels: np.ndarray
    posteriors: np.ndarray
    resolution_A: list[float]
    iterations_run: int
    elapsed_s: float


def class_map_name(k: int, suffix: str = "") -> str:
    """File name of class ``k``'s map (0-based ``k``; files count from 1): ``class_01.mrc``, ``class_01_half1.mrc``."""
    return f"class_{k + 1:02d}{suffix}.mrc" if not suffix.endswith(".txt") else f"class_{k + 1:02d}{suffix}"


def run_classes(particles_path: str | os.PathLike, out_dir: str | os.PathLike, *, latent_dim: int = 3,
                iterations: int = 20, batch_size: int = 512, seed: int = 0, tolerance: float = 0.002,
                pose_search: str = "none", datadir: str | os.PathLike | None = None, device: str = "cpu",
                force: bool = False, resume: bool = False, progress: bool = True) -> ClassesRun:
    """Classify the particles into ``latent_dim`` classes and write the run (module docstring).

    ``pose_search``: only ``"none"`` (the given poses are kept); ``resume`` is refused (a fit has
    no checkpoints: it takes minutes, run it again with ``force``).
    """
    from cryoscape.inference.classes_em import fit_classes
    from cryoscape.particles import ParticleSet

    K = int(latent_dim)
    if pose_search != "none":
        raise InputError(f"--pose-search {pose_search}: classification searches no poses yet; use --pose-search none "
                         "(the given poses), after a refinement if they are not good enough")
    if resume:
        raise InputError("fit classes keeps no checkpoints to resume from; run it again with --force")
    if K < 2:
        raise InputError(f"--classes {K}: classification needs at least 2 classes")
    ps = ParticleSet.from_file(particles_path, datadir=datadir)
    ps.require_poses("cryoscape fit classes")
    if len(ps) < 2 * K:
        raise InputError(f"{particles_path} has {len(ps)} particles for {K} classes; use fewer --classes "
                         f"(at most {len(ps) // 2})")
    if hasattr(ps, "check_images"):
        ps.check_images()
    box, apix = int(ps.box), float(ps.apix)
    config = {"particles": str(Path(particles_path).expanduser().resolve()), "datadir": datadir,
              "n_particles": len(ps), "box": box, "apix": apix, "latent_dim": K, "iterations": int(iterations),
              "batch_size": int(batch_size), "seed": int(seed), "tolerance": float(tolerance),
              "pose_search": pose_search, "representation": "discrete", "inference": "em"}
    run = RunDirectory.create(out_dir, METHOD, config, force=force, resume=False)
    start = time.perf_counter()
    from cryoscape.models.discrete import DiscreteVolumes

    model = DiscreteVolumes(torch.zeros(K, box, box, box, device=device), apix)
    with run.log(f"3D classification of {len(ps)} particles into {K} classes (EM at the given poses)"):
        result = fit_classes(model, ps, iterations=iterations, batch_size=batch_size, seed=seed,
                             tolerance=tolerance, device=device, progress=progress, log=run.log)
    resolution = _write_outputs(run, model, result, box, apix)
    elapsed = time.perf_counter() - start
    run.log(f"done in {elapsed:.1f} s: class sizes {np.bincount(result.labels, minlength=K).tolist()}")
    return ClassesRun(run, result.labels, result.posteriors, resolution, len(result.history) - 1, elapsed)


def _write_outputs(run: RunDirectory, model: Any, result: Any, box: int, apix: float) -> list[float]:
    """Latents, labels, maps, FSC files, weights and metrics of a finished fit; the 0.143 resolutions."""
    from cryoscape.validate.fsc import resolution_at, write_fsc_table

    K = result.posteriors.shape[1]
    run.write_latents(result.posteriors)
    save_npy(run.path / "class_posteriors.npy", result.posteriors.astype(np.float32))
    save_npy(run.path / "classes.npy", result.labels.astype(np.int64))
    resolution = []
    for k in range(K):
        write_mrc(run.path / class_map_name(k), result.volumes[k], apix, force=True)
        for half in (0, 1):
            write_mrc(run.path / class_map_name(k, f"_half{half + 1}"), result.half_maps[k, half], apix, force=True)
        write_fsc_table(run.path / class_map_name(k, "_fsc.txt"), {"fsc_halves": result.fsc[k]}, box, apix, force=True)
        resolution.append(float(resolution_at(result.fsc[k], box, apix, 0.143)))
    run.save_weights(model.state_dict())
    sizes = np.bincount(result.labels, minlength=K)
    run.write_metrics({"n_classes": K, "class_sizes": sizes.tolist(),
                       "class_fractions": (sizes / max(1, sizes.sum())).round(4).tolist(),
                       "class_weights": [round(float(p), 4) for p in result.pi],
                       "resolution_A": [round(r, 3) for r in resolution],
                       "iterations": result.history})
    return resolution


def classes_volume(run: Any, z: Any) -> np.ndarray:
    """``Σ_k z_k V_k`` ``[D, D, D]`` float32 at class probabilities ``z (K,)`` (one-hot: a class map)."""
    from cryoscape.models.discrete import DiscreteVolumes

    K = int(run.params["latent_dim"])
    model = DiscreteVolumes.from_config({"box": run.box, "apix": run.apix, "n_classes": K})
    model.load_state_dict(run.load_weights())
    point = latent_point(z, K, run.path)
    return model.volumes(torch.as_tensor(point, dtype=torch.float32)[None])[0].numpy().astype(np.float32)
