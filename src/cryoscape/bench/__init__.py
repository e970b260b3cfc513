"""Benchmark datasets with ground truth (and, later, the benchmark runner).

* :data:`DATASETS` — registry of dataset specs (``adk-1d``, ``adk-1d-snr0.01``, ``adk-2d``, ``adk-junk``)
* :func:`build_dataset` — build or reuse a cached dataset folder
* :func:`true_volume` — a conformation's ground-truth volume from a dataset folder
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
