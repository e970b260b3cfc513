"""Simulated datasets with ground truth from volumes, atomic models and trajectories.

Entry points:

* :func:`simulate_dataset` — images + STAR + ``truth.npz`` (returns a :class:`SimulationResult`)
* :func:`ground_truth_volume` — rebuild any conformation's volume from ``truth.npz``
* :func:`load_structure`, :func:`prepare_trajectory` — atomic models and superposed trajectories
"""

from __future__ import annotations

from cryoscape.simulate.dataset import SimulationResult, parse_conformations, read_poses, simulate_dataset
from cryoscape.simulate.ground_truth import conformation_coordinate, ground_truth_volume, load_truth
from cryoscape.simulate.structures import (
    ADK_CORE_RESIDUES,
    ADK_LID_RESIDUES,
    ADK_NMP_RESIDUES,
    AtomicStructure,
    adk_trajectory,
    atom_sigmas_A,
    element_amplitudes,
    load_structure,
)
from cryoscape.simulate.trajectory import (
    PreparedTrajectory,
    centre_frames,
    kabsch_rotation,
    prepare_trajectory,
    rmsd,
    superpose_frames,
)

__all__ = [
    "ADK_CORE_RESIDUES",
    "ADK_LID_RESIDUES",
    "ADK_NMP_RESIDUES",
    "AtomicStructure",
    "PreparedTrajectory",
    "SimulationResult",
    "adk_trajectory",
    "atom_sigmas_A",
    "centre_frames",
    "conformation_coordinate",
    "element_amplitudes",
    "ground_truth_volume",
    "kabsch_rotation",
    "load_structure",
    "load_truth",
    "parse_conformations",
    "prepare_trajectory",
    "read_poses",
    "rmsd",
    "simulate_dataset",
    "superpose_frames",
]
