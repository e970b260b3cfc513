"""Agreement between two runs on the same particles (survey §10), for any pair of methods.

:func:`compare_runs` reads both runs' latents (same particles, same order)
and reports

- the k-nearest-neighbour overlap (:func:`cryoscape.validate.agreement.neighbourhood_overlap`)
  with its chance level ``k / (N − 1)``: 1 = the same neighbourhoods;
- the canonical correlations of the two latent blocks: 1 = linearly related
  in that direction;
- the FSC between the two runs' volumes at sampled particles, when both runs
  have a model (``volume_fn_a`` and ``volume_fn_b``, see
  :func:`cryoscape.analysis.volumes.volume_at`); otherwise this part is
  reported as unavailable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cryoscape.analysis.latent import as_latents
from cryoscape.analysis.volumes import VolumeFn, volume_at
from cryoscape.errors import InputError
from cryoscape.io.run_dir import RunDirectory


@dataclass
class RunComparison:
    """The agreement between two runs (see the module docstring)."""

    run_a: str
    run_b: str
    method_a: str
    method_b: str
    n_particles: int
    dims: tuple[int, int]
    k: int
    overlap: float
    chance: float
    canonical_correlations: np.ndarray
    volume_auc: tuple[float, float] | None = None  # (mean, std) FSC AUC at sampled particles
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain-type content for ``compare.json``."""
        return {
            "run_a": self.run_a, "run_b": self.run_b, "method_a": self.method_a, "method_b": self.method_b,
            "n_particles": self.n_particles, "latent_dims": list(self.dims), "k": self.k,
            "neighbourhood_overlap": self.overlap, "neighbourhood_overlap_chance": self.chance,
            "canonical_correlations": [float(c) for c in self.canonical_correlations],
            "volume_fsc_auc_mean": None if self.volume_auc is None else self.volume_auc[0],
            "volume_fsc_auc_std": None if self.volume_auc is None else self.volume_auc[1],
            "notes": list(self.notes),
        }

    def table(self) -> list[str]:
        """Human-readable lines: one quantity per line."""
        cc = ", ".join(f"{c:.3f}" for c in self.canonical_correlations) or "-"
        vol = "n/a (a run has no model)" if self.volume_auc is None else f"{self.volume_auc[0]:.3f} ± {self.volume_auc[1]:.3f}"
        rows = [
            ("run A", f"{self.run_a} ({self.method_a}, {self.dims[0]}-D)"),
            ("run B", f"{self.run_b} ({self.method_b}, {self.dims[1]}-D)"),
            ("particles", str(self.n_particles)),
            (f"{self.k}-NN overlap", f"{self.overlap:.3f} (chance {self.chance:.3f})"),
            ("canonical correlations", cc),
            ("volume FSC AUC", vol),
        ]
        width = max(len(r[0]) for r in rows)
        return [f"{name:<{width}}  {value}" for name, value in rows]


def _volume_agreement(run_a: RunDirectory, run_b: RunDirectory, za: np.ndarray, zb: np.ndarray,
                      n_volumes: int, seed: int, fn_a: VolumeFn | None, fn_b: VolumeFn | None
                      ) -> tuple[float, float] | None:
    """Mean and std FSC AUC of both runs' model volumes at sampled particles, or None without models."""
    from cryoscape.validate.agreement import volume_agreement
    from cryoscape.validate.metrics import evenly_spaced_indices

    if n_volumes < 1 or fn_a is None or fn_b is None:
        return None
    idx = evenly_spaced_indices(za.shape[0], n_volumes, seed=seed)
    if volume_at(run_a, za[idx[0]], fn_a) is None or volume_at(run_b, zb[idx[0]], fn_b) is None:
        return None
    res = volume_agreement(lambda i: volume_at(run_a, za[i], fn_a), lambda i: volume_at(run_b, zb[i], fn_b), idx,
                           apix=run_a.apix)
    return res.mean, res.std


def compare_latents(za: Any, zb: Any, k: int = 10, n_query: int | None = None, seed: int = 0) -> tuple[float, float, np.ndarray]:
    """``(overlap, chance, canonical correlations)`` of two latent arrays for the same particles."""
    from cryoscape.validate.agreement import canonical_correlations, neighbourhood_overlap

    a, b = as_latents(za, "latents of run A"), as_latents(zb, "latents of run B")
    if a.shape[0] != b.shape[0]:
        raise InputError(f"the runs have {a.shape[0]} and {b.shape[0]} particles; compare runs fitted on the same particles")
    if not 1 <= k < a.shape[0]:
        raise InputError(f"k must be between 1 and N − 1 = {a.shape[0] - 1} (got {k})")
    ov = neighbourhood_overlap(a, b, k=k, n_query=n_query, seed=seed)
    try:
        cc = canonical_correlations(a, b)
    except ValueError as exc:
        raise InputError(f"canonical correlations are undefined: {exc}") from None
    return ov.value, ov.chance, cc


def compare_runs(
    run_a: RunDirectory, run_b: RunDirectory, k: int = 10, n_query: int | None = None,
    n_volumes: int = 5, seed: int = 0, volume_fn_a: VolumeFn | None = None, volume_fn_b: VolumeFn | None = None,
) -> RunComparison:
    """Agreement of two runs on the same particles; InputError when their particle counts differ.

    ``volume_fn_a`` / ``volume_fn_b`` are the runs' models (``volume_fn(run, z)``;
    None: the run has none); the volume FSC needs both.
    """
    za, _, _ = run_a.read_latents()
    zb, _, _ = run_b.read_latents()
    if za.shape[0] != zb.shape[0]:
        raise InputError(
            f"{run_a.path} has {za.shape[0]} particles and {run_b.path} has {zb.shape[0]}; "
            "compare runs fitted on the same particles"
        )
    overlap, chance, cc = compare_latents(za, zb, k, n_query, seed)
    result = RunComparison(str(run_a.path), str(run_b.path), run_a.method, run_b.method, int(za.shape[0]),
                           (int(za.shape[1]), int(zb.shape[1])), int(k), overlap, chance, cc)
    result.volume_auc = _volume_agreement(run_a, run_b, za, zb, n_volumes, seed, volume_fn_a, volume_fn_b)
    if result.volume_auc is None:
        result.notes.append("volume agreement needs a model in both runs; at least one has none")
    return result
