"""Scores of one fitted method against the dataset's truth.

* per-image FSC AUC (:func:`_fsc_scores`): the method's volume at each
  sampled particle's latent — from the volume function passed in, never
  looked up here — against the true volume of its conformation
  (:func:`cryoscape.validate.metrics.fsc_result`);
* latent scores (:func:`_latent_scores`): ``|Spearman|`` per truth axis,
  k-NN preservation (k = :data:`~cryoscape.bench.results.KNN_K`) and, on
  junk datasets, the outlier ROC AUC;
* the latent-curve score (:func:`_curve_score`) where the run writes one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from cryoscape.bench.results import KNN_K, MethodResult, ScoreSummary

__all__ = ["VolumeFn"]

VolumeFn = Callable[[Any, np.ndarray], "np.ndarray | None"]
"""``volume(run, z (d,)) -> [D, D, D]``: the volume a run's model gives at a latent point."""


def _fsc_scores(volume_fn: Callable[[int], np.ndarray | None], true_fn: Callable[[int], np.ndarray],
                indices: np.ndarray, conformation: np.ndarray) -> ScoreSummary:
    """Per-image FSC AUC of ``volume_fn(i)`` against the true volume of ``conformation[i]``.

    ``volume_fn`` may return None (no volume for that sample: NaN).
    """
    from cryoscape.validate.metrics import fsc_result

    aucs, curves = [], []
    for i in indices:
        vol = volume_fn(int(i))
        if vol is None:
            aucs.append(np.nan)
            continue
        r = fsc_result(vol, true_fn(int(conformation[i])))
        aucs.append(r.auc)
        curves.append(r.curve)
    mean_curve = np.mean(curves, axis=0) if curves else np.zeros(0)
    return ScoreSummary(np.asarray(aucs, dtype=np.float64), mean_curve)


def _latent_scores(latents: np.ndarray, truth: Mapping[str, np.ndarray], result: MethodResult,
                   fit_errors: np.ndarray | None = None) -> None:
    """Fill ``result``'s Spearman, kNN and (junk) outlier scores from the latents (and the fit errors)."""
    from cryoscape.validate.metrics import knn_preservation, spearman_abs

    real, coord = _true_axes(truth)
    z = np.asarray(latents, dtype=np.float64)[real]
    names = _axis_names(truth, coord.shape[1])
    axes = {n: spearman_abs(z, coord[:, a]) for a, n in enumerate(names)}
    result.spearman_abs = max(axes.values())
    result.spearman_abs_axes = axes if len(axes) > 1 else None
    knn = knn_preservation(z, coord, k=KNN_K)
    result.knn_preservation, result.knn_chance = knn.value, knn.chance
    if "is_junk" in truth:
        from cryoscape.analysis.outliers import outlier_scores, roc_auc

        result.outlier_roc_auc = roc_auc(outlier_scores(latents, errors=fit_errors).score, truth["is_junk"])


def _axis_names(truth: Mapping[str, np.ndarray], n_axes: int) -> list[str]:
    """Names of the truth's coordinate axes (``coordinate_names`` where stored)."""
    if "coordinate_names" in truth and len(truth["coordinate_names"]) == n_axes:
        return [str(n) for n in truth["coordinate_names"]]
    return ["coordinate"] if n_axes == 1 else [f"axis_{a + 1}" for a in range(n_axes)]


def _score_method(name: str, run_path: Path, wall_s: float, dataset: Any, indices: np.ndarray,
                  true_fn: Callable[[int], np.ndarray], volume_fn: VolumeFn,
                  fit_errors: np.ndarray | None = None) -> MethodResult:
    """All scores of one fitted method; ``volume_fn``: its runs' volume function (``fit_errors``: the
    consensus-fit errors for the outlier score)."""
    from cryoscape.io.run_dir import RunDirectory

    run = RunDirectory.open(run_path)
    latents = np.asarray(run.read_latents()[0], dtype=np.float64)
    conf = np.asarray(dataset.truth["conformation"])
    per_image = _fsc_scores(_model_volumes(run, latents, volume_fn), true_fn, indices, conf)
    result = MethodResult(name, per_image, run_dir=run_path, wall_s=wall_s)
    _latent_scores(latents, dataset.truth, result, fit_errors)
    result.curve_spearman_abs = _curve_score(run, dataset.truth)
    return result


def _model_volumes(run: Any, latents: np.ndarray, volume_fn: VolumeFn) -> Callable[[int], np.ndarray | None]:
    """``particle i -> volume_fn(run, latents[i])`` as float32 (None where the model gives none)."""

    def at(i: int) -> np.ndarray | None:
        vol = volume_fn(run, np.asarray(latents[i], dtype=np.float64).reshape(-1))
        return None if vol is None else np.asarray(vol, dtype=np.float32)

    return at


def _true_axes(truth: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """``(real particles (N,) bool, their true coordinates [n_real, axes])`` (junk excluded)."""
    real = np.asarray(truth["conformation"]) >= 0
    coord = np.asarray(truth["coordinate"], dtype=np.float64)[real]
    return real, coord[:, None] if coord.ndim == 1 else coord


def _curve_score(run: Any, truth: Mapping[str, np.ndarray]) -> float | None:
    """|Spearman| of the run's latent-curve coordinate against the truth (the largest over its axes),
    or None where the run has no curve."""
    from cryoscape.validate.metrics import spearman_abs

    if not run.has_curve():
        return None
    real, coord = _true_axes(truth)
    s = np.asarray(run.read_curve()[1], dtype=np.float64)[real]
    return max(spearman_abs(s, coord[:, a]) for a in range(coord.shape[1]))
