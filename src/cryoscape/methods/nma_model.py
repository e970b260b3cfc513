"""The atomic model of the ``nma`` recipe: read, placed in the box, its elastic-network modes per atom.

:func:`load_atom_model` reads a PDB / mmCIF model (gemmi), takes its
coordinates in the frame of the particles' map (Å, origin at voxel 0, so the
box centre is at ``(D // 2) · apix``), refuses atoms outside the box, and
computes the ``K`` softest ANM modes of its C-alpha network
(:mod:`cryoscape.models.elastic_network`), each scaled to its elastic prior
spread, and the rigid-block twists that carry them to every heavy atom (each
moves with its residue's C-alpha block).
:func:`start_from_model` fills a :class:`~cryoscape.models.normal_modes.NormalModeModel`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from cryoscape.errors import InputError

__all__ = ["AtomModel", "load_atom_model", "start_from_model", "save_modes", "MODES_FILE"]

MODES_FILE = "modes.npz"


@dataclass
class AtomModel:
    """An atomic model ready for the representation: atoms (Å from the box centre), their density parameters
    and the elastic-network modes (Å per unit latent)."""

    atoms_A: np.ndarray  # [A, 3]
    amplitudes: np.ndarray  # [A]
    sigmas_A: np.ndarray  # [A]
    owner: np.ndarray  # [A] the node (index into nodes) each atom moves with
    modes_A: np.ndarray  # [K, n, 3] per node, Å per unit amplitude
    omega: np.ndarray  # [K, n, 3] the blocks' angular velocities (rad per unit amplitude)
    velocity_A: np.ndarray  # [K, n, 3] the nodes' velocities (Å per unit amplitude)
    eigenvalues: np.ndarray  # [K]
    spreads_A: np.ndarray  # [K]
    nodes: np.ndarray  # [n] atom indices of the network nodes

    @property
    def centres_A(self) -> np.ndarray:
        """The nodes' positions ``[n, 3]`` (Å from the box centre)."""
        return self.atoms_A[self.nodes]


def _node_of_atom(structure: Any, nodes: np.ndarray) -> np.ndarray:
    """For every atom the index (into ``nodes``) of the nearest node of its own residue (any node if none)."""
    from scipy.spatial import cKDTree

    xyz = structure.frames_A[0].astype(np.float64)
    resid = np.asarray(structure.resid)
    out = cKDTree(xyz[nodes]).query(xyz)[1]
    for r in np.unique(resid[nodes]):
        own = np.flatnonzero(resid[nodes] == r)
        atoms = np.flatnonzero(resid == r)
        d = np.linalg.norm(xyz[atoms][:, None, :] - xyz[nodes[own]][None], axis=-1)
        out[atoms] = own[d.argmin(axis=1)]
    return out


def load_atom_model(path: str | os.PathLike, box: int, apix: float, n_modes: int, cutoff_A: float,
                    rms_A: float) -> AtomModel:
    """Read ``path`` (PDB / mmCIF), place it in the box and compute its modes; one-line errors for bad input.

    The last few results are kept (keyed by the file's path and modification time and the arguments):
    a fit reads its model once to size the run and once to start the representation.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"--model {p}: no such file; give the atomic model as .pdb or .cif")
    p = p.resolve()
    return _load_atom_model(str(p), p.stat().st_mtime_ns, int(box), float(apix), int(n_modes), float(cutoff_A),
                            float(rms_A))


@lru_cache(maxsize=4)
def _load_atom_model(path: str, mtime_ns: int, box: int, apix: float, n_modes: int, cutoff_A: float,
                     rms_A: float) -> AtomModel:
    from cryoscape.models.elastic_network import block_twists, mode_spreads, normal_modes
    from cryoscape.simulate.structures import load_atomic_model

    p = Path(path)
    try:
        st = load_atomic_model(p)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - gemmi's own parse errors
        raise InputError(f"--model {p}: cannot read it as an atomic model ({' '.join(str(exc).split())[:160]})") from exc
    atoms = st.frames_A[0].astype(np.float64) - (box // 2) * apix
    half = (box // 2 - 1) * apix
    outside = int(np.sum(np.abs(atoms).max(axis=1) > half))
    if outside:
        raise InputError(f"--model {p}: {outside} of {len(atoms)} atoms lie outside the {box} px box at {apix:g} Å/px "
                         "(coordinates are read in the map's frame, origin at voxel 0); fit the model into the "
                         "consensus map first")
    nodes = st.ca_indices()
    if nodes.size < 3:
        raise InputError(f"--model {p}: {nodes.size} C-alpha atoms; the elastic network needs a protein model")
    evals, modes = normal_modes(atoms[nodes], n_modes, cutoff_A)
    spreads = mode_spreads(evals, rms_A)
    per_node = modes * (np.sqrt(nodes.size) * spreads)[:, None, None]  # RMS spread_k per node
    omega, velocity = block_twists(atoms[nodes], per_node)
    return AtomModel(atoms.astype(np.float32), st.amplitudes(), st.sigmas_A(apix), _node_of_atom(st, nodes),
                     per_node.astype(np.float32), omega, velocity, evals, spreads, nodes)


def save_modes(path: Path, m: AtomModel) -> None:
    """The modes as ``.npz`` (atomic write): eigenvalues, spreads (Å), the node indices into the model's atoms,
    and ``modes_A [K, n, 3]``, each mode's displacement of the nodes (Å per unit amplitude)."""
    from cryoscape.io.atomic import atomic_path

    with atomic_path(path, force=True) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, eigenvalues=m.eigenvalues, spreads_A=m.spreads_A, nodes=m.nodes, modes_A=m.modes_A)


def start_from_model(rep: Any, atom_model: AtomModel, consensus: np.ndarray | None) -> None:
    """Fill the representation from the model; its contrast by least squares against ``consensus``."""
    import torch

    m = atom_model
    rep.set_model(m.atoms_A, m.amplitudes, m.sigmas_A, m.owner, m.centres_A, m.omega, m.velocity_A)
    if consensus is None:
        return
    ref = rep.volumes(None)[0].double()
    cons = torch.as_tensor(consensus, dtype=torch.float64)
    scale = float((ref * cons).sum() / (ref * ref).sum().clamp_min(1e-30))
    if not scale > 0:
        raise InputError("the atomic model does not match the consensus map (negative overlap); check the model's "
                         "placement and the image contrast (--invert)")
    with torch.no_grad():
        rep.log_scale.fill_(float(np.log(scale)))
