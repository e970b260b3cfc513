"""Atomic models of a benchmark dataset's ground truth, for the methods that start from one (``nma``).

:func:`reference_model` writes frame ``frame`` of the simulated structure
(``truth.npz``: ``frames_A`` in Å from the box centre, with elements, residue
numbers and atom names) as a PDB in the frame of the particles' maps (origin
at voxel 0, box centre at ``(D // 2) · apix``), once per dataset folder. For the
AdK path, frame 0 is the closed state: the one end state such a method may
know.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cryoscape.errors import InputError

__all__ = ["reference_model"]


def reference_model(dataset: Any, frame: int = 0) -> Path:
    """``<dataset folder>/model_frame{frame:03d}.pdb`` (written if absent) from the dataset's truth."""
    from cryoscape.io.pdb import write_pdb

    truth = dataset.truth
    if "frames_A" not in truth:
        raise InputError(f"{dataset.out_dir}: its truth holds no atomic frames; an atomic model cannot be made")
    path = Path(dataset.out_dir) / f"model_frame{int(frame):03d}.pdb"
    if not path.is_file():
        box, apix = int(truth["box"]), float(truth["apix"])
        xyz = np.asarray(truth["frames_A"][int(frame)], dtype=np.float64) + (box // 2) * apix
        write_pdb(path, xyz, [str(e) for e in truth["elements"]], np.asarray(truth["resid"]),
                  [str(n) for n in truth["atom_names"]], force=True)
    return path
