"""The whole analysis of a run directory: its latents, ground truth, fit scores, learning curves and volumes.

:func:`analyse_run` reads a run's latents, the true coordinate (``--truth`` or
the ``truth`` recorded in the run config), computes the fit of every image to
the consensus map where the run's particles can be read
(:func:`cryoscape.analysis.outliers.consensus_fit_correlations`,
method-independent), runs :func:`cryoscape.analysis.latent_analysis.analyse_latents`,
reads the learning curves from ``metrics.json`` and generates volumes at the
cluster centres and the PC points: from the run's model through ``volume_fn``
when one is given, otherwise by a local reconstruction from the particles
nearest the point when asked for. :func:`check_run_inputs` does every check
on the inputs first, so a command can call it before any long work starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cryoscape.analysis.latent_analysis import (
    MIN_PARTICLES, AnalysisSettings, LatentAnalysis, analyse_latents, check_truth,
)
from cryoscape.analysis.learning_curves import learning_curves
from cryoscape.analysis.outliers import consensus_fit_correlations, fit_errors
from cryoscape.analysis.progress import Progress, say
from cryoscape.analysis.run_particles import run_particles
from cryoscape.analysis.volumes import VolumeFn, default_neighbours, generate_volumes
from cryoscape.errors import InputError
from cryoscape.io.run_dir import RunDirectory

__all__ = ["analyse_run", "check_run_inputs", "RunInputs", "truth_path", "read_truth_coordinate"]


def truth_path(run: RunDirectory, given: str | Path | None = None) -> Path | None:
    """The ground-truth file: ``given``, else ``truth`` recorded in the run config (relative to the run), else None."""
    if given is not None:
        return Path(given)
    cfg = run.config
    recorded = cfg.get("params", {}).get("truth") or cfg.get("data", {}).get("truth")
    if not recorded:
        return None
    p = Path(recorded)
    return p if p.is_absolute() else run.path / p


def read_truth_coordinate(path: str | Path, n: int) -> np.ndarray:
    """The per-particle true coordinate from ``truth.npz``, checked against N."""
    from cryoscape.simulate.ground_truth import load_truth

    truth = load_truth(path)
    if "coordinate" not in truth:
        raise InputError(f"{path} has no 'coordinate' array; give a truth.npz written by cryoscape simulate")
    return check_truth(truth["coordinate"], n)


def _volume_points(analysis: LatentAnalysis) -> list[tuple[str, np.ndarray]]:
    """Named latent points for volumes: each cluster's nearest particle, then the PC points."""
    X = analysis.latents
    pts = [(f"cluster_{j:03d}", X[i]) for j, i in enumerate(analysis.centre_particles)]
    for key, traj in analysis.trajectories.items():
        pts += [(f"{key}_{j:02d}", p) for j, p in enumerate(traj.points)]
    return pts


@dataclass
class RunInputs:
    """The checked inputs of :func:`analyse_run`."""

    latents: np.ndarray  # [N, d] float32, as the run holds them
    truth_file: Path | None
    truth: np.ndarray | None  # (N,) true coordinate
    particles: Any | None  # the particle set, when given or needed for local reconstructions


def check_run_inputs(
    run: RunDirectory,
    settings: AnalysisSettings | None = None,
    truth: str | Path | None = None,
    particles: Any | None = None,
    volume_fn: VolumeFn | None = None,
) -> RunInputs:
    """Read and check everything :func:`analyse_run` needs, before any long work; one-line InputError otherwise.

    Checks the latents (at least :data:`MIN_PARTICLES` rows), the ground truth
    against N and, when local reconstructions are asked for and the run has no
    model (``volume_fn`` None), that the run's particle file can be opened.
    """
    s = settings or AnalysisSettings()
    Z, _, _ = run.read_latents()
    if Z.shape[0] < MIN_PARTICLES:
        raise InputError(f"the run has {Z.shape[0]} particles; latent analysis needs at least {MIN_PARTICLES}")
    tpath = truth_path(run, truth)
    coord = None if tpath is None else read_truth_coordinate(tpath, Z.shape[0])
    if particles is None and s.local_volumes and volume_fn is None:
        particles = run_particles(run)
    return RunInputs(Z, tpath, coord, particles)


def analyse_run(
    run: RunDirectory,
    settings: AnalysisSettings | None = None,
    truth: str | Path | None = None,
    particles: Any | None = None,
    progress: Progress | None = None,
    volume_fn: VolumeFn | None = None,
) -> LatentAnalysis:
    """The whole analysis of a run: :func:`analyse_latents` plus truth, fit scores, learning curves and volumes.

    ``truth`` defaults to the ``truth`` entry of the run config; ``particles``
    (a ParticleSet) to the run's own, read for the fit scores and local
    reconstructions. ``volume_fn(run, z)`` is the run's model (None: the run
    has none; volumes then come from local reconstructions when
    ``settings.local_volumes``). Inputs are checked first
    (:func:`check_run_inputs`).
    """
    s = settings or AnalysisSettings()
    inputs = check_run_inputs(run, s, truth, particles, volume_fn)
    particles = inputs.particles
    notes: list[str] = []
    fit, particles = _fit_correlation(run, s, particles, notes, progress) if s.fit_scores else (None, particles)
    result = analyse_latents(inputs.latents, s, inputs.truth, progress, errors=None if fit is None else fit_errors(fit))
    result.notes += notes
    result.fit_correlation = fit
    result.learning_curves, result.learning_axis = learning_curves(run.read_metrics())
    result.run_info = {"run": str(run.path), "method": run.method,
                       "truth_file": None if inputs.truth_file is None else str(inputs.truth_file)}
    n_nb = s.n_neighbours or default_neighbours(result.n_particles, result.centres.shape[0])
    result.volumes = generate_volumes(run, result.latents, _volume_points(result), s.local_volumes, n_nb,
                                      s.device, particles, progress, volume_fn)
    if not result.volumes:
        result.notes.append("no volumes: the run has no model; pass --local-volumes to reconstruct them from the particles")
    return result


def _fit_correlation(run: RunDirectory, s: AnalysisSettings, particles: Any | None, notes: list[str],
                     progress: Progress | None) -> tuple[np.ndarray | None, Any | None]:
    """The image-to-consensus fit of the run's particles and the particle set read, or (None, given) with a note.

    A run whose particle file cannot be read (moved stacks, no poses) still
    gets its analysis, with a note saying the outlier score uses the latent
    density alone; ``--particles``/``--datadir`` point to moved files.
    """
    try:
        ps = particles if particles is not None else run_particles(run)
        ps.require_poses("the fit of each image to the consensus map")
    except InputError as exc:
        notes.append(f"no fit scores (the outlier score uses the latent density alone): {exc}")
        return None, particles
    say(progress, f"consensus map of {len(ps)} particles and the fit of every image to it")
    return consensus_fit_correlations(ps, seed=s.seed, device=s.device), ps
