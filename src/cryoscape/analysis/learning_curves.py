"""Learning curves of a run: the per-iteration or per-epoch lists in its ``metrics.json``.

Any method's objective, loss or ELBO history is found by name
(:data:`LEARNING_CURVE_WORDS`), so the analysis and report draw it without
knowing the method.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

__all__ = ["LEARNING_CURVE_WORDS", "learning_curves"]


#: Words that make a ``metrics.json`` entry a learning curve (matched against the name's words, any case).
LEARNING_CURVE_WORDS: frozenset[str] = frozenset(
    {"objective", "loss", "losses", "elbo", "nll", "likelihood", "recon", "reconstruction", "kl", "kld"})


def _is_curve_name(name: str) -> bool:
    """True when one of the words of ``name`` (split at non-alphanumerics) is in :data:`LEARNING_CURVE_WORDS`."""
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
