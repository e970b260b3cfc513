"""The benchmark's results as objects: per-image FSC summaries, one method's scores, a whole run.

:class:`BenchmarkResult.to_dict` is the document written to ``results.json``
(:data:`RESULTS_JSON`); :mod:`cryoscape.bench.report` writes the table and
page from the same objects. NaN and infinities are written as ``null``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["RESULTS_JSON", "RESULTS_MD", "RESULTS_HTML", "KNN_K", "ScoreSummary", "MethodResult", "SkippedPair",
           "BenchmarkResult"]

RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"
RESULTS_HTML = "results.html"
KNN_K = 10
"""Neighbours of the k-NN preservation score (recorded with every method's result)."""


@dataclass
class ScoreSummary:
    """Per-image FSC AUCs at the sampled particles: ``values`` ``(n,)`` (NaN where missing) and the mean FSC curve."""

    values: np.ndarray
    mean_curve: np.ndarray

    @property
    def mean(self) -> float:
        """Mean AUC over the samples that have a value."""
        v = self.values[np.isfinite(self.values)]
        return float(v.mean()) if v.size else float("nan")

    @property
    def std(self) -> float:
        """Standard deviation (``ddof=0``) over the samples that have a value."""
        v = self.values[np.isfinite(self.values)]
        return float(v.std()) if v.size else float("nan")

    @property
    def n_missing(self) -> int:
        """Samples without a value."""
        return int(np.sum(~np.isfinite(self.values)))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {"mean": _num(self.mean), "std": _num(self.std), "n_missing": self.n_missing,
                "values": [_num(v) for v in self.values], "mean_fsc": [_num(v) for v in self.mean_curve]}


@dataclass
class MethodResult:
    """Scores of one method (or reference) on a dataset; latent scores are None for references."""

    name: str
    per_image: ScoreSummary
    run_dir: Path | None = None
    wall_s: float | None = None
    spearman_abs: float | None = None
    spearman_abs_axes: dict[str, float] | None = None
    knn_preservation: float | None = None
    knn_chance: float | None = None
    outlier_roc_auc: float | None = None
    curve_spearman_abs: float | None = None  # of the run's curve_coordinate.npy, where it writes one
    details: dict[str, Any] | None = None  # reference-specific facts, e.g. the oracle's window

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready scores."""
        extra = {} if self.details is None else {self.name: self.details}
        return {**extra, "name": self.name, "run_dir": None if self.run_dir is None else str(self.run_dir),
                "wall_s": _num(self.wall_s), "per_image_fsc_auc": self.per_image.to_dict(),
                "spearman_abs": _num(self.spearman_abs),
                "spearman_abs_axes": None if self.spearman_abs_axes is None else
                {k: _num(v) for k, v in self.spearman_abs_axes.items()},
                "knn_preservation": _num(self.knn_preservation), "knn_chance": _num(self.knn_chance),
                "knn_k": KNN_K, "outlier_roc_auc": _num(self.outlier_roc_auc),
                "curve_spearman_abs": _num(self.curve_spearman_abs)}


@dataclass(frozen=True)
class SkippedPair:
    """A (representation, inference) pair of the method grid that cannot run, and why (one line)."""

    representation: str
    inference: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        """JSON-ready entry."""
        return {"representation": self.representation, "inference": self.inference, "reason": self.reason}


@dataclass
class BenchmarkResult:
    """Everything one benchmark run measured (see :mod:`cryoscape.bench.runner`).

    ``skipped``: the pairs of the method grid that cannot run (empty unless the grid was asked for).
    """

    dataset: str
    out_dir: Path
    n_particles: int
    box: int
    apix: float
    sample_indices: np.ndarray
    sample_conformations: np.ndarray
    methods: list[MethodResult]
    references: list[MethodResult]
    dataset_build_s: float = 0.0
    files: dict[str, Path] = field(default_factory=dict)
    skipped: list[SkippedPair] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready document written to ``results.json``."""
        from cryoscape import __version__

        return {"dataset": self.dataset, "n_particles": self.n_particles, "box": self.box, "apix": self.apix,
                "cryoscape_version": __version__, "dataset_build_s": _num(self.dataset_build_s),
                "n_samples": int(self.sample_indices.size),
                "sample_indices": self.sample_indices.tolist(),
                "sample_conformations": self.sample_conformations.tolist(),
                "methods": [m.to_dict() for m in self.methods],
                "references": [r.to_dict() for r in self.references],
                "skipped_pairs": [p.to_dict() for p in self.skipped]}


def _num(x: float | None) -> float | None:
    """A float for JSON: None stays None, NaN and infinities become None."""
    if x is None:
        return None
    x = float(x)
    return x if np.isfinite(x) else None
