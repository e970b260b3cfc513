"""Agreement between two methods with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from cryoscape.validate import agreement as A

D = 16


def test_neighbourhood_overlap_self_is_one():
    a = np.random.default_rng(0).standard_normal((300, 4))
    res = A.neighbourhood_overlap(a, a, k=8)
    assert res.value == pytest.approx(1.0) and res.chance == pytest.approx(8 / 299)


def test_neighbourhood_overlap_invariant_to_rotation_and_unrelated_is_chance():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((400, 3))
    q, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    assert A.neighbourhood_overlap(a, 2.0 * a @ q + 1.0).value == pytest.approx(1.0)
    # independent spaces: mean ≈ k/(N−1) = 0.025, std of the mean ≈ 0.003 (see the knn test)
    res = A.neighbourhood_overlap(a, rng.standard_normal((400, 3)), k=10)
    assert abs(res.value - res.chance) < 0.015


def test_cca_of_linear_map_is_one():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((500, 4))
    m = rng.standard_normal((4, 4)) + 4 * np.eye(4)  # well-conditioned, invertible
    rho = A.canonical_correlations(x, x @ m + 3.0)
    assert rho.shape == (4,)
    np.testing.assert_allclose(rho, 1.0, atol=1e-6)
    assert np.all(np.diff(rho) <= 1e-12)


def test_cca_of_independent_blocks_is_small():
    # Null canonical correlations are of order sqrt(d/N) (largest ≈ (√d_a + √d_b)/√N ≈ 0.08 here);
    # 4·sqrt(d/N) ≈ 0.15 leaves a wide margin.
    rng = np.random.default_rng(3)
    n, d = 2000, 3
    rho = A.canonical_correlations(rng.standard_normal((n, d)), rng.standard_normal((n, d)))
    assert rho.shape == (d,) and np.all(rho < 4 * np.sqrt(d / n))


def test_cca_partial_relation_and_rank_deficiency():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((1000, 3))
    y = np.column_stack([x[:, 0], rng.standard_normal(1000), np.zeros(1000)])  # one shared direction, one dead column
    rho = A.canonical_correlations(x, y)
    assert rho.shape == (2,)
    assert rho[0] == pytest.approx(1.0, abs=1e-6) and rho[1] < 0.15


def test_volume_agreement():
    vols = {i: np.random.default_rng(i).standard_normal((D, D, D)) for i in range(4)}
    same = A.volume_agreement(vols.__getitem__, vols.__getitem__, [0, 2, 3], apix=1.0)
    np.testing.assert_allclose(same.auc, 1.0, atol=1e-12)
    assert same.curves.shape == (3, D // 2 + 1) and same.conformations is None
    other = A.volume_agreement(vols.__getitem__, lambda i: vols[(i + 1) % 4], [0, 1, 2, 3], mask=False)
    assert abs(other.mean) < 0.15
