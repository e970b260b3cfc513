"""Superposing and centring the frames of a conformational trajectory.

Frames straight out of a simulation drift and tumble. Before images are made,
every frame is superposed (Kabsch, least squares) onto frame 0 using a set of
alignment atoms — for AdK the C-alpha atoms of the rigid CORE domain — and
then all frames are moved by ONE common translation so that the density sits
at the box centre. The motion of the other domains is then visible in a fixed
frame, and the frame index is a ground-truth coordinate of that motion.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np

from cryoscape.errors import InputError
from cryoscape.simulate.structures import AtomicStructure, parse_residue_ranges, residue_mask

CentreMode = Literal["mean", "first"]


def kabsch_rotation(mobile: np.ndarray, target: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Proper rotation R (3, 3) minimising Σ w |R (m − m̄) − (t − t̄)|².

    Args:
        mobile: (n, 3) coordinates to move.
        target: (n, 3) reference coordinates.
        weights: (n,) non-negative weights (default equal).

    Returns:
        R (3, 3) float64 with det R = +1; apply as ``(m − m̄) @ R.T + t̄``.
    """
    m = np.asarray(mobile, dtype=np.float64)
    t = np.asarray(target, dtype=np.float64)
    w = np.ones(len(m)) if weights is None else np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    mc = m - w @ m
    tc = t - w @ t
    h = (mc * w[:, None]).T @ tc  # (3, 3) covariance
    u, _, vt = np.linalg.svd(h)
    d = np.sign(np.linalg.det(vt.T @ u.T)) or 1.0
    return vt.T @ np.diag([1.0, 1.0, d]) @ u.T


def superpose_frames(frames_A: np.ndarray, align_mask: np.ndarray | None = None,
                     reference: int = 0) -> np.ndarray:
    """Superpose every frame onto frame ``reference`` using the atoms in ``align_mask``.

    Args:
        frames_A: (F, A, 3) coordinates in Å.
        align_mask: (A,) bool atoms used for the fit (default all atoms).
        reference: index of the frame that stays put.

    Returns:
        (F, A, 3) float32 superposed coordinates (in the reference's frame).
    """
    frames = np.asarray(frames_A, dtype=np.float64)
    mask = np.ones(frames.shape[1], dtype=bool) if align_mask is None else np.asarray(align_mask, dtype=bool)
    if mask.sum() < 3:
        raise InputError(f"only {int(mask.sum())} alignment atoms; superposition needs at least 3 "
                         "(check --align-residues against the residue numbers of the model)")
    target = frames[reference][mask]
    t_bar = target.mean(axis=0)
    out = np.empty_like(frames)
    for f, frame in enumerate(frames):
        sel = frame[mask]
        rot = kabsch_rotation(sel, target)
        out[f] = (frame - sel.mean(axis=0)) @ rot.T + t_bar
    return out.astype(np.float32)


def centre_frames(frames_A: np.ndarray, weights: np.ndarray | None = None,
                  mode: CentreMode = "mean") -> tuple[np.ndarray, np.ndarray]:
    """Move all frames by one common translation so the density centre is at 0.

    Args:
        frames_A: (F, A, 3) superposed coordinates in Å.
        weights: (A,) atom weights (amplitudes) for the centroid; default equal.
        mode: "mean": the weighted centroid averaged over all frames goes to 0;
            "first": the weighted centroid of frame 0 goes to 0.

    Returns:
        (centred frames (F, A, 3) float32, the subtracted translation (3,) Å).
    """
    frames = np.asarray(frames_A, dtype=np.float64)
    w = np.ones(frames.shape[1]) if weights is None else np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    centroids = np.einsum("a,fak->fk", w, frames)
    if mode == "mean":
        c = centroids.mean(axis=0)
    elif mode == "first":
        c = centroids[0]
    else:
        raise InputError(f"unknown centring mode {mode!r}; use 'mean' or 'first'")
    return (frames - c).astype(np.float32), c


def rmsd(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Root-mean-square deviation (Å) between (…, A, 3) coordinate sets, without fitting."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if mask is not None:
        a, b = a[..., mask, :], b[..., mask, :]
    return np.sqrt(((a - b) ** 2).sum(-1).mean(-1))


@dataclass
class PreparedTrajectory:
    """Superposed, centred frames ready for imaging.

    Attributes:
        frames_A: (F, A, 3) float32 coordinates in Å, centred on the box centre.
        align_mask: (A,) bool atoms the frames were superposed on.
        align_description: human-readable description of those atoms.
        translation_A: (3,) common translation that was subtracted (Å).
    """

    frames_A: np.ndarray
    align_mask: np.ndarray
    align_description: str
    translation_A: np.ndarray


def alignment_mask(structure: AtomicStructure,
                   align_residues: str | Sequence[tuple[int, int]] | None = None,
                   use_ca: bool = True) -> tuple[np.ndarray, str]:
    """Atoms to superpose on: C-alpha atoms (or all atoms) of the given residues.

    ``align_residues`` None means the structure's default (the AdK CORE for the
    built-in trajectory) or, failing that, every atom; "all" means every atom.
    """
    explicit_all = isinstance(align_residues, str) and align_residues.strip().lower() == "all"
    ranges = parse_residue_ranges(align_residues)
    if ranges is None and not explicit_all:
        ranges = structure.default_align_residues
    n = structure.n_atoms
    ca = np.zeros(n, dtype=bool)
    ca[structure.ca_indices()] = True
    base = ca if (use_ca and ca.sum() >= 3) else np.ones(n, dtype=bool)
    what = "C-alpha atoms" if base is ca else "atoms"
    if ranges is None:
        return base, f"all {what}"
    if np.all(structure.resid < 0):
        raise InputError(f"{structure.source}: no residue numbers, so --align-residues cannot be used; "
                         "align on all atoms instead")
    mask = base & residue_mask(structure.resid, ranges)
    text = ",".join(f"{lo}-{hi}" if lo != hi else f"{lo}" for lo, hi in ranges)
    if mask.sum() < 3:
        raise InputError(f"{structure.source}: residues {text} hold only {int(mask.sum())} {what}; "
                         "give residue ranges present in the model")
    return mask, f"{what} of residues {text}"


def prepare_trajectory(structure: AtomicStructure,
                       align_residues: str | Sequence[tuple[int, int]] | None = None,
                       centre: CentreMode = "mean", use_ca: bool = True) -> PreparedTrajectory:
    """Superpose all frames on frame 0 (alignment atoms) and centre them with one translation.

    The centroid is weighted by the atoms' amplitudes (atomic numbers), i.e. it
    is the centre of the simulated density.
    """
    mask, text = alignment_mask(structure, align_residues, use_ca)
    frames = structure.frames_A
    if structure.n_frames > 1:
        frames = superpose_frames(frames, mask, reference=0)
    centred, c = centre_frames(frames, structure.amplitudes(), mode=centre)
    return PreparedTrajectory(centred, mask, text, c)
