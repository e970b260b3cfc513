"""Junk and outlier scores for particles from their latents (survey §9.3).

Junk particles (ice, aggregates, false picks) tend to land in sparse corners
of a latent space and to be poorly explained by the model. The score combines
both signs, each as a robust z-score:

    score_i = (z(−ln ρ_i) + w · z(e_i)) / (1 + w)

with ``ρ`` the k-nearest-neighbour density of
:func:`cryoscape.analysis.latent.knn_log_density`, ``e`` an optional
per-particle reconstruction error (e.g. the residual norm of each image
against the model's prediction) and ``w`` its weight (``w = 0`` without
errors). ``z(v) = (v − median v) / (1.4826 · MAD v)`` so that the outliers
themselves barely move the scale (the standard deviation is used when the MAD
is 0). **Higher scores mean more likely junk.**
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import rankdata

from cryoscape.analysis.latent import as_latents, knn_log_density
from cryoscape.errors import InputError


@dataclass
class OutlierScores:
    """Per-particle junk score and its parts (all ``(N,)``)."""

    score: np.ndarray  # combined score, higher = more likely junk
    density_z: np.ndarray  # robust z-score of −ln ρ (sparse → high)
    error_z: np.ndarray | None  # robust z-score of the reconstruction error, if given

    def flagged(self, threshold: float = 3.0) -> np.ndarray:
        """Boolean mask (N,) of particles whose score exceeds ``threshold``."""
        return self.score > threshold


def robust_zscore(values: Any) -> np.ndarray:
    """``(v − median) / (1.4826 · MAD)``; the standard deviation when the MAD is 0; zeros if constant."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    centre = np.median(v)
    scale = 1.4826 * np.median(np.abs(v - centre))
    if not scale > 0:
        scale = float(v.std())
    return (v - centre) / scale if scale > 0 else np.zeros_like(v)


def outlier_scores(Z: Any, k: int = 10, errors: Any | None = None, error_weight: float = 1.0) -> OutlierScores:
    """Junk score per particle from low latent density and (optionally) high error.

    ``errors`` is ``(N,)`` in particle order, larger = worse fit. See the module
    docstring for the formula.
    """
    X = as_latents(Z)
    density_z = robust_zscore(-knn_log_density(X, k))
    if errors is None:
        return OutlierScores(density_z, density_z, None)
    e = np.asarray(errors, dtype=np.float64).reshape(-1)
    if e.size != X.shape[0] or not np.all(np.isfinite(e)):
        raise InputError(f"errors must be {X.shape[0]} finite values, one per particle (got {e.size})")
    if error_weight < 0:
        raise InputError(f"error_weight must be non-negative (got {error_weight})")
    error_z = robust_zscore(e)
    score = (density_z + error_weight * error_z) / (1.0 + error_weight)
    return OutlierScores(score, density_z, error_z)


def roc_auc(scores: Any, labels: Any) -> float:
    """Area under the ROC curve of ``scores`` for the positives in ``labels``.

    ``labels`` is boolean (or 0/1), True for the class that should score high
    (e.g. junk). Computed in the Mann–Whitney form
    ``AUC = (R₊ − n₊(n₊+1)/2) / (n₊ n₋)`` with ``R₊`` the sum of the positives'
    ranks (ties get their average rank, i.e. count one half): the probability
    that a random positive outscores a random negative.
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(labels).reshape(-1).astype(bool)
    if s.size != y.size:
        raise InputError(f"scores and labels must have the same length (got {s.size} and {y.size})")
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise InputError("roc_auc needs at least one positive and one negative label")
    ranks = rankdata(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))
