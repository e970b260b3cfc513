"""Outlier scores rank planted junk high; roc_auc matches a brute-force pair count."""

from __future__ import annotations

import numpy as np
import pytest

from cryoscape.analysis.outliers import outlier_scores, robust_zscore, roc_auc
from cryoscape.errors import InputError


def planted(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    inliers = np.vstack([rng.standard_normal((250, 4)), np.array([4.0, 0, 0, 0]) + rng.standard_normal((250, 4))])
    directions = rng.standard_normal((20, 4))
    far = 2.0 + directions / np.linalg.norm(directions, axis=1, keepdims=True) * rng.uniform(8, 10, (20, 1))
    Z = np.vstack([inliers, far])
    return Z, np.r_[np.zeros(500, bool), np.ones(20, bool)]


def brute_force_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    pos, neg = scores[labels], scores[~labels]
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (pos.size * neg.size)


def test_far_points_score_high():
    Z, junk = planted()
    result = outlier_scores(Z, k=10)
    assert roc_auc(result.score, junk) > 0.95
    assert result.error_z is None and result.flagged(3.0)[junk].mean() > 0.8


def test_errors_find_junk_hidden_in_dense_regions():
    rng = np.random.default_rng(3)
    Z = rng.standard_normal((400, 3))
    junk = np.zeros(400, bool)
    junk[rng.choice(400, 20, replace=False)] = True
    errors = rng.normal(1.0, 0.1, 400) + 1.0 * junk
    assert roc_auc(outlier_scores(Z).score, junk) < 0.75
    assert roc_auc(outlier_scores(Z, errors=errors).score, junk) > 0.95
    with pytest.raises(InputError, match="one per particle"):
        outlier_scores(Z, errors=errors[:10])


def test_random_scores_have_auc_one_half():
    rng = np.random.default_rng(0)
    labels = rng.random(4000) < 0.3
    assert abs(roc_auc(rng.random(4000), labels) - 0.5) < 0.03


def test_auc_equals_pair_count_with_ties():
    scores = np.array([0.1, 0.4, 0.4, 0.35, 0.8, 0.1, 0.9, 0.4])
    labels = np.array([0, 1, 0, 1, 1, 0, 0, 1], bool)
    assert np.isclose(roc_auc(scores, labels), brute_force_auc(scores, labels))
    assert roc_auc([1, 2, 3], [0, 0, 1]) == 1.0 and roc_auc([3, 2, 1], [0, 0, 1]) == 0.0
    with pytest.raises(InputError, match="positive and one negative"):
        roc_auc([1, 2], [1, 1])


def test_robust_zscore():
    z = robust_zscore([1.0, 2.0, 3.0, 4.0, 100.0])
    assert z[2] == 0.0 and z[-1] > 50
    assert np.all(robust_zscore([2.0, 2.0, 2.0]) == 0)
