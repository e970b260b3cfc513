"""Agreement between two partitions of the particles (e.g. 3D classes against the true states).

:func:`adjusted_rand_index` is Hubert and Arabie's adjusted Rand index (1985): the
Rand index corrected for chance, ``(Σ_ij C(n_ij, 2) − E) / (½ (Σ_i C(a_i, 2) + Σ_j C(b_j, 2)) − E)``
with ``E = Σ_i C(a_i, 2) Σ_j C(b_j, 2) / C(n, 2)``, ``n_ij`` the contingency table and
``a``, ``b`` its margins. 1 for identical partitions (whatever the label names), about 0
for independent ones, negative below chance.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["contingency_table", "adjusted_rand_index"]


def contingency_table(labels_a: Any, labels_b: Any) -> np.ndarray:
    """Counts ``[A, B]`` int64 of particles with label ``a`` in the first partition and ``b`` in the second
    (labels are any hashable integers; rows and columns in sorted label order)."""
    a = np.asarray(labels_a).reshape(-1)
    b = np.asarray(labels_b).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"the partitions label {a.size} and {b.size} particles; they must label the same ones")
    _, ia = np.unique(a, return_inverse=True)
    _, ib = np.unique(b, return_inverse=True)
    table = np.zeros((int(ia.max(initial=-1)) + 1, int(ib.max(initial=-1)) + 1), dtype=np.int64)
    np.add.at(table, (ia, ib), 1)
    return table


def _pairs(x: np.ndarray) -> float:
    x = x.astype(np.float64)
    return float(np.sum(x * (x - 1.0) / 2.0))


def adjusted_rand_index(labels_a: Any, labels_b: Any) -> float:
    """Adjusted Rand index of two labellings of the same particles (see the module docstring).

    Two trivial partitions (everything in one group, or every particle alone) agree perfectly: 1.
    """
    table = contingency_table(labels_a, labels_b)
    n = int(table.sum())
    if n < 2:
        return 1.0
    both = _pairs(table)
    rows, cols = _pairs(table.sum(1)), _pairs(table.sum(0))
    expected = rows * cols / (n * (n - 1) / 2.0)
    top = 0.5 * (rows + cols)
    if top == expected:
        return 1.0
    return (both - expected) / (top - expected)
