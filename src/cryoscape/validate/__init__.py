"""Validation: Fourier shell correlation, ground-truth metrics and agreement between methods.

``cryoscape.validate.fsc`` is the FSC module (its curve function is
``cryoscape.validate.fsc.fsc``, also exported here as
``fourier_shell_correlation`` so the module name is not shadowed).
"""

from __future__ import annotations

from cryoscape.validate.fsc import (
    MaskedFSC,
    corrected_masked_fsc,
    fsc_auc,
    phase_randomise,
    resolution_at,
    save_fsc_plot,
    shell_frequencies,
    write_fsc_table,
)
from cryoscape.validate.fsc import fsc as fourier_shell_correlation
from cryoscape.validate.agreement import canonical_correlations, neighbourhood_overlap, volume_agreement
from cryoscape.validate.metrics import (
    FSCResult,
    NeighbourOverlap,
    SampledFSC,
    first_principal_component,
    ground_truth_volume_fn,
    knn_preservation,
    per_conformation_fsc,
    per_image_fsc_auc,
    spearman_abs,
)

__all__ = [
    "FSCResult",
    "MaskedFSC",
    "NeighbourOverlap",
    "SampledFSC",
    "canonical_correlations",
    "corrected_masked_fsc",
    "first_principal_component",
    "fourier_shell_correlation",
    "fsc_auc",
    "ground_truth_volume_fn",
    "knn_preservation",
    "neighbourhood_overlap",
    "per_conformation_fsc",
    "per_image_fsc_auc",
    "phase_randomise",
    "resolution_at",
    "save_fsc_plot",
    "shell_frequencies",
    "spearman_abs",
    "volume_agreement",
    "write_fsc_table",
]
