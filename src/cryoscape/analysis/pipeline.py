"""Latent-space analysis of a run directory, for any method (survey §9.1, §9.3–9.4).

:func:`analyse_run` reads a run's latents ``[N, d]`` and computes, all from
one ``seed``:

- a 2-D embedding: PCA (always kept, for the PC1 statistics) or UMAP when
  asked for and ``umap-learn`` is installed;
- k-means clusters in the full latent space, the particle nearest each centre,
  and the number of particles per cluster;
- the k-NN log density, the free-energy landscape on the embedding and the
  junk/outlier score of every particle, from the latent density and, where
  the run's particles can be read, the fit of every image to the consensus
  map (:func:`cryoscape.analysis.outliers.consensus_fit_correlations`,
  method-independent);
- learning curves: every list-valued entry of the run's ``metrics.json``
  named like an objective, loss or ELBO (:func:`learning_curves`);
- points along PC1 (and PC2) at the 5th–95th percentiles;
- with a ground truth (``truth.npz``): ``|Spearman|`` between PC1 and the true
  coordinate, and the k-NN preservation of the true neighbourhoods;
- volumes at the cluster centres and the PC points: from the method's own
  model through :func:`volume_at` where one is registered, otherwise by a
  local reconstruction from the particles nearest the point when asked for.

:func:`save_analysis` writes the arrays and ``analysis.json`` into
``run/analysis/``; figures and ``report.html`` come from
:mod:`cryoscape.report.run_report`. The same module recomputes (or reads back,
when ``analysis.json`` matches the current latents) the clusters, embedding
and scores for particle selection (:func:`selection_indices`), and follows a
density-weighted graph path between two particles (:func:`traverse`).

Files in ``run/analysis/``::

    analysis.json        settings, summary statistics, latents fingerprint, file list
    embedding.npy        [N, 2] float64 2-D embedding (PCA or UMAP, see analysis.json)
    labels.npy           [N] int64 k-means labels 0..k-1
    centres.npy          [k, d] float64 cluster centres in the latent space
    log_density.npy      [N] float64 natural log of the k-NN density
    outlier_scores.npy   [N] float64 junk score (higher = more likely junk)
    fit_correlation.npy  [N] float64 fit of each image to the consensus map, when computed
    pc1_points.npy       [n, d] latent points along PC1 (pc2_points.npy for d ≥ 2)
    volumes/*.mrc        volumes at the centres / PC points, when generated
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

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
from cryoscape.analysis.outliers import OutlierScores, consensus_fit_correlations, fit_errors, outlier_scores
from cryoscape.analysis.select import read_index_file, select_by_cluster, select_by_region, select_by_score
from cryoscape.analysis.trajectory import GraphPath, PCTrajectory, graph_path, pc_trajectory
from cryoscape.errors import InputError, OutputExistsError
from cryoscape.io.atomic import check_output_path, write_text_atomic
from cryoscape.io.run_dir import RunDirectory, to_plain

Progress = Callable[[str], None]
"""Receives one human-readable line per step."""

VolumeHook = Callable[[RunDirectory, np.ndarray], "np.ndarray | None"]
"""``hook(run, z) -> [D, D, D]`` volume at latent point ``z (d,)``, or None when the run has no model."""

ANALYSIS_JSON = "analysis.json"
VOLUMES_DIR = "volumes"
ARRAY_FILES: dict[str, str] = {
    "embedding": "embedding.npy",
    "labels": "labels.npy",
    "centres": "centres.npy",
    "log_density": "log_density.npy",
    "outlier_scores": "outlier_scores.npy",
}
"""The per-run arrays :func:`save_analysis` writes (name → file in ``analysis/``)."""
FIT_CORRELATION_FILE = "fit_correlation.npy"
"""Written when the fit of every image to the consensus map was computed."""

_VOLUME_HOOKS: dict[str, VolumeHook] = {}


# ----------------------------------------------------------------------------
# the model hook
# ----------------------------------------------------------------------------


def register_volume_hook(method: str, hook: VolumeHook | None) -> None:
    """Let runs of ``method`` generate volumes from their own model (None unregisters)."""
    if hook is None:
        _VOLUME_HOOKS.pop(method, None)
    else:
        _VOLUME_HOOKS[method] = hook


def volume_at(run: RunDirectory, z: np.ndarray) -> np.ndarray | None:
    """The volume ``[D, D, D]`` the run's model gives at latent point ``z``, or None.

    None means the run has no explicit model (no hook is registered for its
    method, or the hook declined); callers then fall back to a local
    reconstruction or skip the volume. Methods register their hooks when
    :mod:`cryoscape.methods` is imported (the command line always does).
    """
    hook = _VOLUME_HOOKS.get(run.method)
    if hook is None:
        return None
    vol = hook(run, np.asarray(z, dtype=np.float64).reshape(-1))
    return None if vol is None else np.asarray(vol, dtype=np.float32)


# ----------------------------------------------------------------------------
# settings and results
# ----------------------------------------------------------------------------


@dataclass
class AnalysisSettings:
    """Everything that changes the result of :func:`analyse_run`."""

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
class GeneratedVolume:
    """A volume at one latent point, and where it came from."""

    name: str  # file stem, e.g. "cluster_003" or "pc1_05"
    latent: np.ndarray  # (d,) the latent point
    volume: np.ndarray  # [D, D, D] float32
    apix: float  # Å/voxel
    source: str  # "model" or "local reconstruction"
    n_effective: float | None = None  # Kish effective particle count of a local reconstruction


@dataclass
class LatentAnalysis:
    """The result of :func:`analyse_latents` (plus volumes and run facts from :func:`analyse_run`)."""

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


# ----------------------------------------------------------------------------
# the computation
# ----------------------------------------------------------------------------


def _say(progress: Progress | None, message: str) -> None:
    """Pass one progress line on, if anyone listens."""
    if progress is not None:
        progress(message)


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
    if n < 4:
        raise InputError(f"the run has {n} particles; latent analysis needs at least 4")
    k_nn = min(s.knn_k, n - 1)
    _say(progress, f"PCA of {n} latents ({d}-D)")
    pca = pca_embedding(X, min(d, 10))
    embedding, method, notes = embed_2d(X, s.umap, s.seed)
    _say(progress, f"k-means with k = {min(s.n_clusters, n)}")
    labels, centres = kmeans(X, min(s.n_clusters, n), seed=s.seed)
    _say(progress, "densities, free-energy landscape and outlier scores")
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
        result.truth = _check_truth(truth, n)
        _truth_statistics(result)
    return result


def _check_truth(truth: Any, n: int) -> np.ndarray:
    """The true coordinate as ``(N,)`` float64, checked against N."""
    t = np.asarray(truth, dtype=np.float64).reshape(-1)
    if t.size != n:
        raise InputError(f"the ground truth has {t.size} particles but the run has {n}; give the truth.npz of the run's particles")
    return t


# ----------------------------------------------------------------------------
# runs: truth, volumes, the whole analysis
# ----------------------------------------------------------------------------


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
    return _check_truth(truth["coordinate"], n)


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
) -> list[GeneratedVolume]:
    """Volumes at named latent points: the model's (:func:`volume_at`), else local reconstructions when ``local``.

    ``particles`` defaults to the run's particle set (read only when needed).
    Returns an empty list when the run has no model and ``local`` is false.
    """
    out: list[GeneratedVolume] = []
    for name, z in points:
        vol = volume_at(run, z)
        if vol is not None:
            out.append(GeneratedVolume(name, np.asarray(z), vol, float(run.apix or 1.0), "model"))
        elif local:
            particles = particles if particles is not None else run.particles()
            _say(progress, f"local reconstruction at {name} from {n_neighbours} nearest particles")
            out.append(_local_volume(name, particles, latents, z, n_neighbours, device))
    return out


def _local_volume(name: str, particles: Any, latents: np.ndarray, z: np.ndarray, n_neighbours: int, device: str) -> GeneratedVolume:
    """One local reconstruction at ``z`` as a :class:`GeneratedVolume`."""
    from cryoscape.analysis.local_reconstruction import neighbourhood, reconstruct_near

    rec = reconstruct_near(particles, latents, z, n_neighbours=n_neighbours, progress=False, device=device)
    n_eff = neighbourhood(latents, z, n_neighbours).n_effective
    return GeneratedVolume(name, np.asarray(z), np.asarray(rec.volume, dtype=np.float32), float(rec.apix),
                           "local reconstruction", n_eff)


def _volume_points(analysis: LatentAnalysis) -> list[tuple[str, np.ndarray]]:
    """Named latent points for volumes: each cluster's nearest particle, then the PC points."""
    X = analysis.latents
    pts = [(f"cluster_{j:03d}", X[i]) for j, i in enumerate(analysis.centre_particles)]
    for key, traj in analysis.trajectories.items():
        pts += [(f"{key}_{j:02d}", p) for j, p in enumerate(traj.points)]
    return pts


def analyse_run(
    run: RunDirectory,
    settings: AnalysisSettings | None = None,
    truth: str | Path | None = None,
    particles: Any | None = None,
    progress: Progress | None = None,
) -> LatentAnalysis:
    """The whole analysis of a run: :func:`analyse_latents` plus truth and volumes.

    ``truth`` defaults to the ``truth`` entry of the run config; ``particles``
    (a ParticleSet) to the run's own, read only for local reconstructions.
    """
    s = settings or AnalysisSettings()
    Z, _, _ = run.read_latents()
    tpath = truth_path(run, truth)
    coord = None if tpath is None else read_truth_coordinate(tpath, Z.shape[0])
    notes: list[str] = []
    fit, particles = _fit_correlation(run, s, particles, notes, progress) if s.fit_scores else (None, particles)
    result = analyse_latents(Z, s, coord, progress, errors=None if fit is None else fit_errors(fit))
    result.notes += notes
    result.fit_correlation = fit
    result.learning_curves, result.learning_axis = learning_curves(run.read_metrics())
    result.run_info = {"run": str(run.path), "method": run.method, "truth_file": None if tpath is None else str(tpath)}
    n_nb = s.n_neighbours or default_neighbours(result.n_particles, result.centres.shape[0])
    result.volumes = generate_volumes(run, result.latents, _volume_points(result), s.local_volumes, n_nb,
                                      s.device, particles, progress)
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
        ps = particles if particles is not None else run.particles()
        ps.require_poses("the fit of each image to the consensus map")
    except InputError as exc:
        notes.append(f"no fit scores (the outlier score uses the latent density alone): {exc}")
        return None, particles
    _say(progress, f"consensus map of {len(ps)} particles and the fit of every image to it")
    return consensus_fit_correlations(ps, seed=s.seed, device=s.device), ps


#: Words that make a ``metrics.json`` entry a learning curve (matched against the name's words, any case).
LEARNING_CURVE_WORDS: frozenset[str] = frozenset(
    {"objective", "loss", "losses", "elbo", "nll", "likelihood", "recon", "reconstruction", "kl", "kld"})


def _is_curve_name(name: str) -> bool:
    """True when one of the words of ``name`` (split at non-alphanumerics) is in :data:`LEARNING_CURVE_WORDS`."""
    import re

    return any(w in LEARNING_CURVE_WORDS for w in re.split(r"[^a-z0-9]+", str(name).lower()))


def _numbers(value: Any) -> np.ndarray | None:
    """``value`` as a float64 vector of 2 or more finite numbers, else None."""
    if not isinstance(value, (list, tuple)) or len(value) < 2:
        return None
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        return None
    arr = np.asarray(value, dtype=np.float64)
    return arr if np.all(np.isfinite(arr)) else None


def learning_curves(metrics: dict[str, Any]) -> tuple[dict[str, np.ndarray], str]:
    """Per-iteration or per-epoch curves in a run's ``metrics.json``, and their axis.

    Every top-level entry whose name has a word of
    :data:`LEARNING_CURVE_WORDS` (e.g. ``objective``, ``loss``, ``val_loss``,
    ``elbo``, ``recon``, ``kl``) and whose value is a list of two or more
    finite numbers is a curve; a dict under such a name contributes its list-valued members as
    ``name.member`` (e.g. ``loss.kld``). The axis is ``"epoch"`` when any
    entry of ``metrics`` has "epoch" in its name (e.g. ``n_epochs``), else
    ``"iteration"``; step ``j`` of a curve is iteration/epoch ``j + 1``.
    """
    curves: dict[str, np.ndarray] = {}
    for name, value in metrics.items():
        if not _is_curve_name(name):
            continue
        members = value.items() if isinstance(value, dict) else [(None, value)]
        for member, v in members:
            arr = _numbers(v)
            if arr is not None:
                curves[str(name) if member is None else f"{name}.{member}"] = arr
    axis = "epoch" if any("epoch" in str(k).lower() for k in metrics) else "iteration"
    return curves, axis


# ----------------------------------------------------------------------------
# saving and reading back
# ----------------------------------------------------------------------------


def analysis_output_names(analysis: LatentAnalysis | None = None) -> list[str]:
    """Files (relative to ``analysis/``) an analysis writes; without ``analysis`` the fixed ones."""
    names = [ANALYSIS_JSON, *ARRAY_FILES.values(), FIT_CORRELATION_FILE, "pc1_points.npy", "pc2_points.npy",
             "report.html"]
    if analysis is not None:
        names += [f"{VOLUMES_DIR}/{v.name}.mrc" for v in analysis.volumes]
    return names


def check_analysis_outputs(run: RunDirectory, force: bool = False) -> None:
    """Refuse to overwrite an earlier analysis of ``run`` unless ``force`` (call before any work)."""
    if force:
        return
    existing = [n for n in analysis_output_names() if (run.path / "analysis" / n).exists()]
    if existing:
        raise OutputExistsError(
            f"{run.path / 'analysis'} already holds an analysis ({existing[0]}); pass --force to overwrite it"
        )


def _save_array(path: Path, array: np.ndarray, force: bool) -> Path:
    """``np.save`` atomically without pickles."""
    from cryoscape.io.atomic import atomic_path

    with atomic_path(path, force) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, array, allow_pickle=False)
    return path


def write_json(path: str | Path, content: dict[str, Any], force: bool = False) -> Path:
    """Write plain-type ``content`` as strict JSON (NaN → null) atomically."""
    text = json.dumps(_finite_or_null(to_plain(content, "json")), indent=2, allow_nan=False) + "\n"
    return write_text_atomic(path, text, force)


def _finite_or_null(value: Any) -> Any:
    """Plain types with NaN and ±inf replaced by None (strict JSON has neither)."""
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_null(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite_or_null(v) for v in value]
    return value


def save_analysis(analysis: LatentAnalysis, out_dir: str | Path, force: bool = False) -> list[Path]:
    """Write the arrays, volumes (MRC with voxel size) and ``analysis.json`` into ``out_dir``."""
    from cryoscape.io.mrc import write_mrc

    out = Path(out_dir)
    arrays = {"embedding": analysis.embedding, "labels": analysis.labels, "centres": analysis.centres,
              "log_density": analysis.log_density, "outlier_scores": analysis.outliers.score}
    paths = [_save_array(out / ARRAY_FILES[k], np.asarray(v), force) for k, v in arrays.items()]
    if analysis.fit_correlation is not None:
        paths.append(_save_array(out / FIT_CORRELATION_FILE, np.asarray(analysis.fit_correlation), force))
    elif force:
        (out / FIT_CORRELATION_FILE).unlink(missing_ok=True)  # not from these settings: do not leave it behind
    for key, traj in analysis.trajectories.items():
        paths.append(_save_array(out / f"{key}_points.npy", traj.points, force))
    for v in analysis.volumes:
        paths.append(write_mrc(out / VOLUMES_DIR / f"{v.name}.mrc", v.volume, v.apix, force=force))
    summary = analysis.summary()
    summary["files"] = [p.relative_to(out).as_posix() for p in paths] + [ANALYSIS_JSON]
    paths.append(write_json(out / ANALYSIS_JSON, summary, force))
    return paths


def read_saved_summary(run: RunDirectory, latents: np.ndarray) -> dict[str, Any] | None:
    """``analysis.json`` of ``run`` when it was computed from exactly these latents, else None."""
    path = run.path / "analysis" / ANALYSIS_JSON
    if not path.is_file():
        return None
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return summary if summary.get("latents_sha1") == latents_fingerprint(latents) else None


def _saved_array(run: RunDirectory, name: str, n: int) -> np.ndarray | None:
    """A saved analysis array with N rows, or None."""
    path = run.path / "analysis" / ARRAY_FILES[name]
    if not path.is_file():
        return None
    try:
        arr = np.load(path, allow_pickle=False)
    except ValueError:
        return None
    return arr if arr.shape[:1] == (n,) else None


def cluster_labels(
    run: RunDirectory, latents: np.ndarray, n_clusters: int | None = None, seed: int = 0
) -> tuple[np.ndarray, int, str]:
    """k-means labels ``(N,)``, k and where they came from (``"saved"`` or ``"computed"``).

    The saved labels are used when ``analysis.json`` matches the latents and
    its k and seed agree (``n_clusters=None`` accepts the saved k); otherwise
    they are recomputed exactly as :func:`analyse_latents` does (default k 20).
    """
    n = latents.shape[0]
    saved = read_saved_summary(run, latents)
    if saved is not None and int(saved["settings"]["seed"]) == seed and n_clusters in (None, saved["n_clusters"]):
        labels = _saved_array(run, "labels", n)
        if labels is not None:
            return labels.astype(np.int64), int(saved["n_clusters"]), "saved"
    k = min(n_clusters or AnalysisSettings.n_clusters, n)
    return kmeans(latents, k, seed=seed)[0], k, "computed"


def run_embedding(run: RunDirectory, latents: np.ndarray, seed: int = 0) -> tuple[np.ndarray, str, str]:
    """The 2-D embedding ``[N, 2]``, its method and origin: saved (when fresh) or PCA."""
    saved = read_saved_summary(run, latents)
    if saved is not None:
        emb = _saved_array(run, "embedding", latents.shape[0])
        if emb is not None and emb.ndim == 2 and emb.shape[1] == 2:
            return emb, str(saved["embedding_method"]), "saved"
    return embed_2d(latents, False, seed)[0], "pca", "computed"


def run_outlier_scores(run: RunDirectory, latents: np.ndarray, k: int = 10) -> tuple[np.ndarray, str]:
    """Outlier scores ``(N,)`` and their origin: saved (when fresh) or computed."""
    if read_saved_summary(run, latents) is not None:
        scores = _saved_array(run, "outlier_scores", latents.shape[0])
        if scores is not None:
            return scores, "saved"
    return outlier_scores(latents, min(k, latents.shape[0] - 1)).score, "computed"


# ----------------------------------------------------------------------------
# selection
# ----------------------------------------------------------------------------


@dataclass
class SelectionCriterion:
    """Exactly one way to choose particles (see :func:`selection_indices`)."""

    clusters: Sequence[int] | None = None
    n_clusters: int | None = None
    region: Sequence[float] | None = None  # (xmin, xmax, ymin, ymax) on the 2-D embedding
    outliers_above: float | None = None
    indices_file: str | Path | None = None
    seed: int = 0

    def kind(self) -> str:
        """Which criterion is set; InputError unless exactly one is."""
        given = [name for name, value in (("cluster", self.clusters), ("region", self.region),
                                          ("outliers", self.outliers_above), ("indices", self.indices_file))
                 if value is not None]
        if len(given) != 1:
            raise InputError("choose the particles with exactly one of --cluster, --region, --outliers-above or --indices")
        return given[0]


def selection_indices(
    run: RunDirectory, criterion: SelectionCriterion, invert: bool = False, progress: Progress | None = None
) -> np.ndarray:
    """Sorted 0-based indices of the particles the criterion selects (the rest with ``invert``)."""
    from cryoscape.analysis.select import invert_selection

    kind = criterion.kind()
    Z = as_latents(run.read_latents()[0])
    n = Z.shape[0]
    if kind == "cluster":
        labels, k, origin = cluster_labels(run, Z, criterion.n_clusters, criterion.seed)
        _say(progress, f"k-means labels with k = {k} ({origin})")
        bad = [c for c in criterion.clusters or [] if not 0 <= int(c) < k]
        if bad:
            raise InputError(f"cluster {bad[0]} does not exist; clusters are numbered 0 to {k - 1}")
        idx = select_by_cluster(labels, list(criterion.clusters or []))
    elif kind == "region":
        emb, method, origin = run_embedding(run, Z, criterion.seed)
        _say(progress, f"{method.upper()} embedding ({origin})")
        idx = select_by_region(emb, list(criterion.region or []))
    elif kind == "outliers":
        scores, origin = run_outlier_scores(run, Z)
        _say(progress, f"outlier scores ({origin})")
        idx = select_by_score(scores, threshold=criterion.outliers_above, keep="above")
    else:
        idx = np.unique(read_index_file(criterion.indices_file, n))  # type: ignore[arg-type]
    return invert_selection(idx, n) if invert else np.asarray(idx, dtype=np.int64)


# ----------------------------------------------------------------------------
# traversal
# ----------------------------------------------------------------------------


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
) -> Traversal:
    """Shortest density-weighted k-NN graph path from particle ``start`` to ``end``, and volumes along it.

    Volumes sit at ``n_points`` points equally spaced in arc length, from the
    model (:func:`volume_at`) or, with ``local_volumes``, local reconstructions
    from ``n_neighbours`` particles (default ``max(100, N / n_points)``).
    """
    Z = as_latents(run.read_latents()[0])
    n = Z.shape[0]
    for name, i in (("--from-particle", start), ("--to-particle", end)):
        if not 0 <= i < n:
            raise InputError(f"{name} {i} is out of range; the run has particles 0 to {n - 1}")
    _say(progress, f"shortest path on the {k}-nearest-neighbour graph of {n} particles")
    path = graph_path(Z, start, end, k=min(k, n - 1), density_power=density_power, n_points=n_points)
    emb, method, _ = run_embedding(run, Z, seed)
    result = Traversal(start, end, path, k, emb, method)
    points = [(f"path_{j:02d}", p) for j, p in enumerate(path.resampled)]
    nb = n_neighbours or default_neighbours(n, n_points)
    result.volumes = generate_volumes(run, Z, points, local_volumes, nb, device, None, progress)
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
    from cryoscape.io.mrc import write_mrc

    json_path, npy_path, _ = traversal_outputs(out_dir)
    paths = [write_json(json_path, result.to_dict(), force), _save_array(npy_path, result.path.resampled, force)]
    for v in result.volumes:
        paths.append(write_mrc(Path(out_dir) / VOLUMES_DIR / f"{v.name}.mrc", v.volume, v.apix, force=force))
    return paths
