"""The benchmark: datasets with ground truth (re-exported here), the runner and its reports.

* :data:`DATASETS` — registry of dataset specs (``adk-1d``, ``adk-1d-snr0.01``, ``adk-2d``, ``adk-junk``)
* :func:`build_dataset` — build or reuse a cached dataset folder
* :func:`true_volume` — a conformation's ground-truth volume from a dataset folder

The runner (:func:`cryoscape.bench.runner.run_benchmark`) reads its methods
from :mod:`cryoscape.bench.method_table` (the method registry plus the peer
programs of :mod:`cryoscape.bench.peers`) and is imported on demand.
"""

from __future__ import annotations

from cryoscape.bench.datasets import (
    DATASETS,
    BenchmarkDataset,
    DatasetSpec,
    build_dataset,
    get_spec,
    grid_structure,
    true_volume,
    truth_volume,
)

__all__ = [
    "DATASETS",
    "BenchmarkDataset",
    "DatasetSpec",
    "build_dataset",
    "get_spec",
    "grid_structure",
    "true_volume",
    "truth_volume",
]
