"""Writing atomic models as PDB files (gemmi), atomically.

:func:`write_pdb` writes one model: coordinates (Å, x y z) with each atom's
element, residue number and name, one residue per residue number in chain A
(residue names ``UNK`` unless given), so that ChimeraX, Coot and PyMOL open it
beside the maps of the same run.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from cryoscape.io.atomic import atomic_path

__all__ = ["write_pdb"]


def write_pdb(path: str | os.PathLike, coords_A: np.ndarray, elements: Sequence[str], resid: Sequence[int],
              atom_names: Sequence[str], residue_names: Sequence[str] | None = None, force: bool = False) -> Path:
    """Write ``coords_A [A, 3]`` as a one-model, one-chain PDB file; refuses an existing file unless ``force``."""
    import gemmi

    xyz = np.asarray(coords_A, dtype=np.float64).reshape(-1, 3)
    n = xyz.shape[0]
    if not (len(elements) == len(resid) == len(atom_names) == n):
        raise ValueError(f"{n} coordinates but {len(elements)} elements, {len(resid)} residue numbers and "
                         f"{len(atom_names)} names")
    chain = gemmi.Chain("A")
    current, residue = None, None
    for a in range(n):
        r = int(resid[a])
        if r != current:
            if residue is not None:
                chain.add_residue(residue)
            residue = gemmi.Residue()
            residue.name = "UNK" if residue_names is None else str(residue_names[a])
            residue.seqid = gemmi.SeqId(r, " ")
            current = r
        atom = gemmi.Atom()
        atom.name = str(atom_names[a]).strip() or str(elements[a])
        atom.element = gemmi.Element(str(elements[a]))
        atom.pos = gemmi.Position(*xyz[a])
        atom.occ = 1.0
        residue.add_atom(atom)
    if residue is not None:
        chain.add_residue(residue)
    model = gemmi.Model("1")
    model.add_chain(chain)
    st = gemmi.Structure()
    st.add_model(model)
    st.setup_entities()
    p = Path(path)
    with atomic_path(p, force) as tmp:
        st.write_pdb(str(tmp))
    return p
