"""The files of a saved analysis in ``run/analysis/``: writing them, and reading them back when fresh.

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

Figures and ``report.html`` come from :mod:`cryoscape.report.run_report`.
A saved analysis is reused (:func:`cluster_labels`, :func:`run_embedding`,
:func:`run_outlier_scores`) only while ``analysis.json`` records the SHA-1
of the run's current latents; otherwise the quantity is recomputed exactly as
:func:`cryoscape.analysis.latent_analysis.analyse_latents` does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from cryoscape.analysis.latent import kmeans
from cryoscape.analysis.latent_analysis import AnalysisSettings, LatentAnalysis, embed_2d, latents_fingerprint
from cryoscape.analysis.outliers import outlier_scores
from cryoscape.errors import OutputExistsError
from cryoscape.io.mrc import write_mrc
from cryoscape.io.npy import save_npy
from cryoscape.io.plain import write_json
from cryoscape.io.run_dir import RunDirectory

__all__ = ["ANALYSIS_JSON", "VOLUMES_DIR", "ARRAY_FILES", "FIT_CORRELATION_FILE", "analysis_output_names",
           "check_analysis_outputs", "save_analysis", "read_saved_summary", "cluster_labels", "run_embedding",
           "run_outlier_scores"]

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


def save_analysis(analysis: LatentAnalysis, out_dir: str | Path, force: bool = False) -> list[Path]:
    """Write the arrays, volumes (MRC with voxel size) and ``analysis.json`` into ``out_dir``."""
    out = Path(out_dir)
    arrays = {"embedding": analysis.embedding, "labels": analysis.labels, "centres": analysis.centres,
              "log_density": analysis.log_density, "outlier_scores": analysis.outliers.score}
    paths = [save_npy(out / ARRAY_FILES[k], np.asarray(v), force) for k, v in arrays.items()]
    if analysis.fit_correlation is not None:
        paths.append(save_npy(out / FIT_CORRELATION_FILE, np.asarray(analysis.fit_correlation), force))
    elif force:
        (out / FIT_CORRELATION_FILE).unlink(missing_ok=True)  # not from these settings: do not leave it behind
    for key, traj in analysis.trajectories.items():
        paths.append(save_npy(out / f"{key}_points.npy", traj.points, force))
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
