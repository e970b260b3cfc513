"""Choosing particles of a run by one criterion: clusters, a region of the 2-D embedding, outlier scores or an index file.

The clusters, embedding and scores come from the run's saved analysis when it
matches the current latents, else they are recomputed
(:mod:`cryoscape.analysis.analysis_files`); the selection rules themselves
are in :mod:`cryoscape.analysis.select`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from cryoscape.analysis.analysis_files import cluster_labels, run_embedding, run_outlier_scores
from cryoscape.analysis.latent import as_latents
from cryoscape.analysis.progress import Progress, say
from cryoscape.analysis.select import invert_selection, read_index_file, select_by_cluster, select_by_region, select_by_score
from cryoscape.errors import InputError
from cryoscape.io.run_dir import RunDirectory

__all__ = ["SelectionCriterion", "selection_indices"]


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
    kind = criterion.kind()
    Z = as_latents(run.read_latents()[0])
    n = Z.shape[0]
    if kind == "cluster":
        labels, k, origin = cluster_labels(run, Z, criterion.n_clusters, criterion.seed)
        say(progress, f"k-means labels with k = {k} ({origin})")
        bad = [c for c in criterion.clusters or [] if not 0 <= int(c) < k]
        if bad:
            raise InputError(f"cluster {bad[0]} does not exist; clusters are numbered 0 to {k - 1}")
        idx = select_by_cluster(labels, list(criterion.clusters or []))
    elif kind == "region":
        emb, method, origin = run_embedding(run, Z, criterion.seed)
        say(progress, f"{method.upper()} embedding ({origin})")
        idx = select_by_region(emb, list(criterion.region or []))
    elif kind == "outliers":
        scores, origin = run_outlier_scores(run, Z)
        say(progress, f"outlier scores ({origin})")
        idx = select_by_score(scores, threshold=criterion.outliers_above, keep="above")
    else:
        idx = np.unique(read_index_file(criterion.indices_file, n))  # type: ignore[arg-type]
    return invert_selection(idx, n) if invert else np.asarray(idx, dtype=np.int64)
