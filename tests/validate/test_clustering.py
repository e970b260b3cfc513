"""The adjusted Rand index against published values and a brute-force pair count."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from cryoscape.validate.clustering import adjusted_rand_index, contingency_table


@pytest.mark.parametrize("a, b, expected", [
    ([0, 0, 1, 1], [0, 0, 1, 1], 1.0),
    ([0, 0, 1, 1], [1, 1, 0, 0], 1.0),  # label names do not matter
    ([0, 0, 1, 2], [0, 0, 1, 1], 4.0 / 7.0),
    ([0, 0, 1, 1], [0, 0, 1, 2], 4.0 / 7.0),
    ([0, 0, 0, 0], [0, 1, 2, 3], 0.0),
    ([0, 0, 1, 1], [0, 1, 0, 1], -0.5),
])
def test_known_values(a, b, expected) -> None:
    """The values Hubert and Arabie's formula gives on small partitions (as listed by scikit-learn)."""
    assert adjusted_rand_index(a, b) == pytest.approx(expected, abs=1e-12)


def test_against_counting_every_pair() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.integers(0, 3, 40), rng.integers(0, 4, 40)
    same_a = np.array([a[i] == a[j] for i, j in itertools.combinations(range(40), 2)])
    same_b = np.array([b[i] == b[j] for i, j in itertools.combinations(range(40), 2)])
    n_pairs = same_a.size
    index = float(np.sum(same_a & same_b))
    expected = same_a.sum() * same_b.sum() / n_pairs
    top = 0.5 * (same_a.sum() + same_b.sum())
    assert adjusted_rand_index(a, b) == pytest.approx((index - expected) / (top - expected), abs=1e-12)
    assert contingency_table(a, b).sum() == 40


def test_mismatched_lengths_are_refused() -> None:
    with pytest.raises(ValueError, match="same ones"):
        adjusted_rand_index([0, 1], [0, 1, 1])
