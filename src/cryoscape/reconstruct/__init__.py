"""Reconstruction from particles with known poses.

:func:`reconstruct` gives a gold-standard homogeneous reconstruction (half
maps, Wiener-filtered full map, FSC); :func:`backproject` and
:class:`Backprojector` are the streaming CTF-weighted backprojection beneath
it, with optional per-particle weights for local or weighted reconstructions.
"""

from cryoscape.reconstruct.backprojection import (
    CTF_FIELDS,
    FSC_THRESHOLD,
    BackprojectionSums,
    Backprojector,
    Reconstruction,
    assign_half_sets,
    backproject,
    check_outputs,
    check_reconstruction_inputs,
    default_mask,
    load_mask,
    output_paths,
    reconstruct,
)
from cryoscape.reconstruct.wiener import GoldStandard, gold_standard, ssnr_from_fsc, wiener_volume

__all__ = [
    "CTF_FIELDS",
    "FSC_THRESHOLD",
    "BackprojectionSums",
    "Backprojector",
    "GoldStandard",
    "Reconstruction",
    "assign_half_sets",
    "backproject",
    "check_outputs",
    "check_reconstruction_inputs",
    "default_mask",
    "gold_standard",
    "load_mask",
    "output_paths",
    "reconstruct",
    "ssnr_from_fsc",
    "wiener_volume",
]
