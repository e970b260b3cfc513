"""Validation: Fourier shell correlation and related metrics.

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

__all__ = [
    "MaskedFSC",
    "corrected_masked_fsc",
    "fourier_shell_correlation",
    "fsc_auc",
    "phase_randomise",
    "resolution_at",
    "save_fsc_plot",
    "shell_frequencies",
    "write_fsc_table",
]
