"""Latent-space analysis of an array of latents ``[N, d]``, for any method (survey §9.1, §9.3–9.4).

:func:`analyse_latents` computes, all from one ``seed``: a 2-D embedding
(PCA, or UMAP when asked for and ``umap-learn`` is installed; the PCA is
always kept for the PC1 statistics), k-means clusters in the full latent
space with the particle nearest each centre, the k-NN log density, the
free-energy landscape on the embedding, points along PC1 (and PC2) at the
5th–95th percentiles, the junk/outlier score of every particle and, with a
true coordinate, ``|Spearman|`` between PC1 and it and the k-NN preservation
of the true neighbourhoods. The result is a :class:`LatentAnalysis`; its
settings an :class:`AnalysisSettings`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cryoscape.analysis.landscape import FreeEnergyLandscape, free_energy_landscape
from cryoscape.analysis.latent import (
    PCAEmbedding,
    as_latents,
    kmeans,
    knn_log_density,
    nearest_particle_to_centres,
    pca_embedding,
    umap_embedding,
)
from cryoscape.analysis.outliers import OutlierScores, outlier_scores
from cryoscape.analysis.progress import Progress, say
from cryoscape.analysis.trajectory import PCTrajectory, pc_trajectory
from cryoscape.analysis.volumes import GeneratedVolume
from cryoscape.errors import InputError
from cryoscape.io.plain import to_plain

__all__ = ["AnalysisSettings", "LatentAnalysis", "analyse_latents", "embed_2d", "latents_fingerprint", "check_truth",
           "MIN_PARTICLES"]

MIN_PARTICLES = 4
"""The latent analysis needs at least this many particles."""


@dataclass
class AnalysisSettings:
    """Everything that changes the result of :func:`~cryoscape.analysis.run_analysis.analyse_run`."""

    n_clusters: int = 20
    umap: bool = False
    seed: int = 0
    knn_k: int = 10
    n_points: int = 10
    local_volumes: bool = False
    n_neighbours: int | None = None  # local reconstruction; default max(100, N/k), at most N
    outlier_threshold: float = 3.0
    device: str = "cpu"
    fit_scores: bool = True  # fit of each image to the consensus map, where the particles can be read


@dataclass
class LatentAnalysis:
    """The result of :func:`analyse_latents` (plus volumes and run facts from
    :func:`~cryoscape.analysis.run_analysis.analyse_run`)."""

    latents: np.ndarray  # [N, d] float64
    settings: AnalysisSettings
    pca: PCAEmbedding
    embedding: np.ndarray  # [N, 2]
    embedding_method: str  # "pca" or "umap"
    labels: np.ndarray  # (N,) int64
    centres: np.ndarray  # [k, d]
    centre_particles: np.ndarray  # (k,) particle nearest each centre
    log_density: np.ndarray  # (N,)
    landscape: FreeEnergyLandscape | None
    trajectories: dict[str, PCTrajectory]
    outliers: OutlierScores
    truth: np.ndarray | None = None  # (N,) true coordinate
    spearman_pc1: float | None = None
    knn_preservation: tuple[float, float] | None = None  # (value, chance)
    volumes: list[GeneratedVolume] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    run_info: dict[str, Any] = field(default_factory=dict)
    fit_correlation: np.ndarray | None = None  # (N,) image-to-consensus correlation, when computed
    learning_curves: dict[str, np.ndarray] = field(default_factory=dict)  # name -> per-step values
    learning_axis: str = "iteration"  # "iteration" or "epoch"

    @property
    def n_particles(self) -> int:
        """N."""
        return int(self.latents.shape[0])

    @property
    def cluster_counts(self) -> np.ndarray:
        """Particles per cluster, ``(k,)``."""
        return np.bincount(self.labels, minlength=self.centres.shape[0])

    @property
    def axis_labels(self) -> tuple[str, str]:
        """Axis names of the 2-D embedding."""
        return ("UMAP 1", "UMAP 2") if self.embedding_method == "umap" else ("PC1", "PC2")

    def on_embedding(self, points: np.ndarray) -> np.ndarray:
        """Latent points ``[n, d]`` placed on the embedding ``[n, 2]``.

        PCA: the exact projection; UMAP: the embedding of the nearest particle.
        """
        pts = as_latents(points, "points")
        if self.embedding_method == "pca":
            proj = (pts - self.latents.mean(axis=0)) @ self.pca.components.T
            return _two_columns(proj)
        return self.embedding[nearest_particle_to_centres(self.latents, pts)]

    def summary(self) -> dict[str, Any]:
        """Plain-type summary for ``analysis.json`` and the report."""
        counts = self.cluster_counts
        out: dict[str, Any] = {
            **self.run_info,
            "n_particles": self.n_particles,
            "latent_dim": int(self.latents.shape[1]),
            "latents_sha1": latents_fingerprint(self.latents),
            "settings": to_plain(vars(self.settings)),
            "embedding_method": self.embedding_method,
            "pca_explained_variance_ratio": self.pca.explained_variance_ratio.tolist(),
            "n_clusters": int(self.centres.shape[0]),
            "clusters": [
                {"cluster": j, "n_particles": int(c), "fraction": float(c) / self.n_particles,
                 "centre_particle": int(self.centre_particles[j])}
                for j, c in enumerate(counts)
            ],
            "free_energy_minimum": None if self.landscape is None else list(self.landscape.minimum),
            "n_outliers": int(self.outliers.flagged(self.settings.outlier_threshold).sum()),
            "volumes": [{"name": v.name, "source": v.source, "n_effective": v.n_effective} for v in self.volumes],
            "notes": list(self.notes),
            "outlier_score_parts": ["latent density"] + ([] if self.outliers.error_z is None else
                                                          ["fit to the consensus map"]),
            "learning_curves": {k: {"axis": self.learning_axis, "n": int(v.size), "first": float(v[0]),
                                    "last": float(v[-1])} for k, v in self.learning_curves.items()},
        }
        if self.fit_correlation is not None:
            r = self.fit_correlation
            out["fit_correlation"] = {"median": float(np.median(r)), "p05": float(np.percentile(r, 5)),
                                      "p95": float(np.percentile(r, 95))}
        if self.truth is not None:
            out["truth"] = {"spearman_pc1_abs": self.spearman_pc1,
                            "knn_preservation": None if self.knn_preservation is None else self.knn_preservation[0],
                            "knn_preservation_chance": None if self.knn_preservation is None else self.knn_preservation[1]}
        return out


def _two_columns(x: np.ndarray) -> np.ndarray:
    """``[N, 1]`` padded with a zero column to ``[N, 2]``; ``[N, 2]`` unchanged."""
    return np.concatenate([x, np.zeros_like(x)], axis=1) if x.shape[1] == 1 else x[:, :2]


def latents_fingerprint(latents: Any) -> str:
    """SHA-1 of the latents as float32 bytes: ties saved analyses to the latents they came from."""
    arr = np.ascontiguousarray(np.asarray(latents, dtype=np.float32))
    return hashlib.sha1(arr.tobytes() + str(arr.shape).encode()).hexdigest()


def embed_2d(Z: Any, use_umap: bool = False, seed: int = 0) -> tuple[np.ndarray, str, list[str]]:
    """A 2-D embedding ``[N, 2]``, its method (``"pca"``/``"umap"``) and notes.

    PCA by default; UMAP when asked for (an InputError naming the package to
    install when ``umap-learn`` is missing). 1-D latents get a zero second column.
    """
    X = as_latents(Z)
    if use_umap:
        return umap_embedding(X, seed=seed), "umap", []
    return _two_columns(pca_embedding(X, 2).embedding), "pca", []


def _landscape(embedding: np.ndarray, seed: int, notes: list[str]) -> FreeEnergyLandscape | None:
    """The free-energy landscape, or None (with a note) when the embedding is degenerate."""
    try:
        return free_energy_landscape(embedding, seed=seed)
    except InputError as exc:
        notes.append(f"no free-energy landscape: {exc}")
        return None


def _truth_statistics(analysis: LatentAnalysis) -> None:
    """Fill ``spearman_pc1`` and ``knn_preservation`` from ``analysis.truth``."""
    from cryoscape.validate.metrics import knn_preservation, spearman_abs

    t = analysis.truth
    assert t is not None
    analysis.spearman_pc1 = spearman_abs(analysis.pca.embedding[:, :1], t)
    k = min(analysis.settings.knn_k, analysis.n_particles - 1)
    kp = knn_preservation(analysis.latents, t, k=k, n_query=min(2000, analysis.n_particles), seed=analysis.settings.seed)
    analysis.knn_preservation = (kp.value, kp.chance)


def analyse_latents(
    Z: Any, settings: AnalysisSettings | None = None, truth: Any | None = None, progress: Progress | None = None,
    errors: Any | None = None,
) -> LatentAnalysis:
    """Embedding, clusters, density, landscape, PC trajectories and outlier scores of ``Z [N, d]``.

    ``truth`` (N,) is a true 1-D coordinate (e.g. ``truth.npz['coordinate']``);
    with it the PC1 ``|Spearman|`` and k-NN preservation are computed.
    ``errors`` (N,), larger = worse fit, enter the outlier score
    (:func:`cryoscape.analysis.outliers.outlier_scores`).
    Deterministic for a given ``settings.seed``.
    """
    s = settings or AnalysisSettings()
    X = as_latents(Z)
    n, d = X.shape
    if n < MIN_PARTICLES:
        raise InputError(f"the run has {n} particles; latent analysis needs at least {MIN_PARTICLES}")
    k_nn = min(s.knn_k, n - 1)
    say(progress, f"PCA of {n} latents ({d}-D)")
    pca = pca_embedding(X, min(d, 10))
    embedding, method, notes = embed_2d(X, s.umap, s.seed)
    say(progress, f"k-means with k = {min(s.n_clusters, n)}")
    labels, centres = kmeans(X, min(s.n_clusters, n), seed=s.seed)
    say(progress, "densities, free-energy landscape and outlier scores")
    trajectories = {"pc1": pc_trajectory(X, 0, n_points=s.n_points)}
    if d >= 2:
        trajectories["pc2"] = pc_trajectory(X, 1, n_points=s.n_points)
    result = LatentAnalysis(
        latents=X, settings=s, pca=pca, embedding=embedding, embedding_method=method,
        labels=labels, centres=centres, centre_particles=nearest_particle_to_centres(X, centres),
        log_density=knn_log_density(X, k_nn), landscape=_landscape(embedding, s.seed, notes),
        trajectories=trajectories, outliers=outlier_scores(X, k_nn, errors=errors), notes=notes,
    )
    if truth is not None:
        result.truth = check_truth(truth, n)
        _truth_statistics(result)
    return result


def check_truth(truth: Any, n: int) -> np.ndarray:
    """The true coordinate as ``(N,)`` float64, checked against N."""
    t = np.asarray(truth, dtype=np.float64).reshape(-1)
    if t.size != n:
        raise InputError(f"the ground truth has {t.size} particles but the run has {n}; give the truth.npz of the run's particles")
    return t
