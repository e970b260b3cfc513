"""The ``adk-2d`` structures: AdK models on a LID x NMP grid of path frames, and the grid's ground truth.

After superposition on the CORE C-alphas, cell ``(a, b)`` of a ``G × G`` grid
takes the LID domain from path frame ``grid[a]`` and the NMP domain from
``grid[b]`` (every other atom from a reference frame), with
``grid = round(linspace(0, F − 1, G))`` (:func:`grid_frames`). The truth of a
grid dataset has a 2-D coordinate ``(i, j) / (F − 1)`` (LID, NMP) and the
grid's layout (:func:`_grid_truth`).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from cryoscape.errors import InputError
from cryoscape.simulate import (
    ADK_CORE_RESIDUES,
    ADK_LID_RESIDUES,
    ADK_NMP_RESIDUES,
    AtomicStructure,
    adk_trajectory,
    prepare_trajectory,
)
from cryoscape.simulate.structures import residue_mask

__all__ = ["grid_frames", "grid_structure"]


def grid_frames(n_frames: int, grid_size: int) -> np.ndarray:
    """(G,) int64 path frames ``round(linspace(0, F − 1, G))`` spanning the trajectory."""
    if not 2 <= grid_size <= n_frames:
        raise InputError(f"grid size {grid_size} must be between 2 and the {n_frames} frames of the path")
    return np.round(np.linspace(0, n_frames - 1, grid_size)).astype(np.int64)


def grid_structure(grid_size: int = 10, reference_frame: int = 0) -> tuple[AtomicStructure, np.ndarray]:
    """AdK models with LID from frame i and NMP from frame j, for (i, j) on a G × G grid.

    Frames are superposed on the CORE C-alphas first; CORE (and every atom
    outside LID and NMP) comes from ``reference_frame``. Cell ``c = a·G + b``
    takes LID from ``grid[a]`` and NMP from ``grid[b]``.

    Returns:
        (structure with G² frames in Å, cell_frames (G², 2) int64 path frames (LID, NMP)).
    """
    adk = adk_trajectory()
    frames = prepare_trajectory(adk).frames_A
    grid = grid_frames(adk.n_frames, grid_size)
    cells = np.stack(np.meshgrid(grid, grid, indexing="ij"), axis=-1).reshape(-1, 2)
    lid, nmp = residue_mask(adk.resid, ADK_LID_RESIDUES), residue_mask(adk.resid, ADK_NMP_RESIDUES)
    out = np.repeat(frames[reference_frame][None], len(cells), axis=0)
    out[:, lid] = frames[cells[:, 0]][:, lid]
    out[:, nmp] = frames[cells[:, 1]][:, nmp]
    st = AtomicStructure(out, adk.elements, adk.resid, adk.atom_names, name="adk-lid-nmp-grid",
                         source=f"adk LID x NMP grid {grid_size}x{grid_size}",
                         default_align_residues=ADK_CORE_RESIDUES)
    return st, cells


def _grid_truth(truth: Mapping[str, np.ndarray], cells: np.ndarray, n_path_frames: int,
                grid_size: int) -> dict[str, np.ndarray]:
    """Truth with a 2D coordinate ``(i, j) / (F − 1)`` and the grid layout."""
    t = {k: np.asarray(v) for k, v in truth.items()}
    conf = t["conformation"]
    t.update(coordinate=cells[conf] / float(n_path_frames - 1), grid_size=np.int64(grid_size),
             grid_frames=grid_frames(n_path_frames, grid_size), cell_frames=cells,
             cell_grid=np.stack(np.divmod(np.arange(len(cells)), grid_size), axis=-1),
             coordinate_names=np.array(["lid", "nmp"]))
    return t
