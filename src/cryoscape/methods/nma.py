"""The ``nma`` recipe: an atomic model moved along its normal modes, fitted per particle (survey §6, HEMNMA-style).

Representation: :class:`cryoscape.models.normal_modes.NormalModeModel` (the
model's heavy atoms as Gaussian atoms, deformed by the ``K`` softest modes of
the anisotropic network of its C-alpha atoms; each atom follows its residue's
C-alpha). Inference: the gradient driver of :mod:`cryoscape.methods.drgn` with
explicit per-particle latents (the mode amplitudes, in units of their elastic
prior spread), local pose refinement by gradient, and the Gauss–Newton polish
of every particle's amplitudes against the final model; the one trained
parameter of the representation is the image contrast, started by least
squares against the consensus map.

The model's coordinates are read in the frame of the particles' map: Å with
the map's origin at voxel 0 (as a model fitted into the consensus map in
ChimeraX or Coot with origin 0 has them), i.e. the box centre is at
``(D // 2) · apix`` on every axis. Atoms outside the box are refused.

Run directory: that of ``fit drgn`` (``latents.npy`` ``[N, K]`` amplitudes,
``weights.pt`` holding the model, modes and contrast, ``mean.mrc``), plus
``modes.npz`` (eigenvalues, the spread of each mode, node indices).
``cryoscape volume RUN --z ...`` gives maps of the deformed model and
:func:`deformed_model` its coordinates (``cryoscape volume RUN --pdb OUT.pdb``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from cryoscape.errors import InputError
from cryoscape.methods.nma_model import MODES_FILE, load_atom_model, save_modes

__all__ = ["run_nma", "deformed_model", "check_deformed_models", "write_deformed_models", "METHOD"]

METHOD = "nma"


def run_nma(particles_path: str | os.PathLike, out_dir: str | os.PathLike, model: str | os.PathLike | None = None,
            latent_dim: int = 10, epochs: int = 8, *, cutoff_A: float = 10.0, mode_rms_A: float = 2.0,
            force: bool = False, resume: bool | str | os.PathLike = False, progress: bool = True,
            datadir: str | os.PathLike | None = None, **options: Any) -> Any:
    """Fit the mode amplitudes of ``model`` to every particle; the run directory of ``fit drgn`` plus ``modes.npz``.

    ``latent_dim``: number of modes; ``cutoff_A``: spring cutoff of the C-alpha network;
    ``mode_rms_A``: RMS displacement per node of the softest mode at one prior standard deviation;
    other options as :func:`cryoscape.methods.drgn.run_drgn` (``refine_poses`` defaults to True).
    """
    from cryoscape.methods.drgn import run_drgn
    from cryoscape.particles import ParticleSet

    if resume:
        from cryoscape.io.run_dir import RunDirectory

        params = RunDirectory.open(Path(out_dir).expanduser()).params
        model = params.get("model", model)
        cutoff_A, mode_rms_A = float(params.get("cutoff_A", cutoff_A)), float(params.get("mode_rms_A", mode_rms_A))
    if model is None:
        raise InputError("fit nma needs the atomic model: pass --model MODEL.pdb (or .cif)")
    if not cutoff_A > 0 or not mode_rms_A > 0:
        raise InputError(f"--cutoff and --mode-rms must be positive (Å); got {cutoff_A:g} and {mode_rms_A:g}")
    ps = ParticleSet.from_file(particles_path, datadir=datadir)
    atom_model = load_atom_model(model, int(ps.box), float(ps.apix), int(latent_dim), cutoff_A, mode_rms_A)
    # beta 1: the prior term is the elastic prior N(0, 1) of the amplitudes as scaled by the modes' spreads
    opts = {"refine_poses": True, "latent_lr": 0.3, "beta": 1.0, **options}
    opts.update(representation="normal-modes", model=str(Path(model).expanduser().resolve()),
                n_atoms=int(atom_model.atoms_A.shape[0]), n_nodes=int(atom_model.nodes.size),
                cutoff_A=float(cutoff_A), mode_rms_A=float(mode_rms_A))
    out = run_drgn(particles_path, out_dir, latent_dim, epochs, "explicit", datadir=datadir, force=force,
                   resume=resume, progress=progress, method=METHOD, **opts)
    save_modes(out.run.path / MODES_FILE, atom_model)
    out.files.append(out.run.path / MODES_FILE)
    return out


def deformed_model(run: Any, z: np.ndarray) -> np.ndarray:
    """Atom coordinates ``[A, 3]`` (Å, the map frame of the model file) of a finished run at latent ``z``."""
    import torch

    from cryoscape.methods.drgn_model import load_decoder
    from cryoscape.methods.latent_point import latent_point

    rep = load_decoder(run)
    z = latent_point(z, rep.latent_dim, run.path)
    with torch.no_grad():
        xyz = rep.coordinates(torch.as_tensor(np.asarray(z, dtype=np.float32))[None])[0].cpu().numpy()
    return xyz + (int(run.box) // 2) * float(run.apix)


def check_deformed_models(run: Any, paths: list[Path], force: bool = False) -> Path:
    """Before anything is written: the run is an ``nma`` run, its model file is there, and ``paths`` may be
    written (one-line errors). Returns the model file."""
    from cryoscape.io.atomic import check_output_path

    if run.method != METHOD:
        raise InputError(f"{run.path} holds a {run.method!r} run; --pdb needs a run of fit nma (an atomic model)")
    model = Path(str(run.params.get("model", "")))
    if not model.is_file():
        raise InputError(f"{run.path}: the atomic model {model} of this run is gone; restore it to write --pdb")
    for p in paths:
        check_output_path(p, force)
    return model


def write_deformed_models(run: Any, points: np.ndarray, paths: list[Path], force: bool = False) -> list[Path]:
    """One PDB per latent point ``points [n, K]`` of a finished ``nma`` run: the deformed model (map frame)."""
    from cryoscape.io.pdb import write_pdb
    from cryoscape.simulate.structures import load_atomic_model

    st = load_atomic_model(check_deformed_models(run, paths, force))
    return [write_pdb(p, deformed_model(run, z), st.elements, st.resid, st.atom_names, force=force)
            for p, z in zip(paths, np.asarray(points))]
