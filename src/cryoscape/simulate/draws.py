"""The random draws of a simulation: conformations, rotations, origins, defocus and half sets.

Every quantity has its own stream spawned from one seed (:func:`_streams`),
so e.g. giving poses does not change the defocus values. Also the readers of
user choices for the draws: frame subsets, frame weights and poses.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from cryoscape.errors import InputError
from cryoscape.geometry.rotations import euler_relion_to_matrix, random_rotations

__all__ = ["parse_conformations", "read_poses", "read_weights"]

_STREAMS = ("conformations", "rotations", "shifts", "ctf", "halves", "noise")


def _streams(seed: int) -> dict[str, np.random.Generator]:
    children = np.random.SeedSequence(int(seed)).spawn(len(_STREAMS))
    return {name: np.random.default_rng(child) for name, child in zip(_STREAMS, children)}


def parse_conformations(text: str | Sequence[int] | None, n_frames: int) -> np.ndarray | None:
    """Frame subset from "0,97" or "0-10,50" (inclusive ranges) or a sequence of ints."""
    if text is None:
        return None
    if isinstance(text, str):
        frames: list[int] = []
        for part in text.split(","):
            part = part.strip()
            try:
                if "-" in part[1:]:
                    lo, hi = (int(v) for v in part.split("-", 1))
                    frames.extend(range(lo, hi + 1))
                else:
                    frames.append(int(part))
            except ValueError:
                raise InputError(f"cannot read conformations {text!r}; write frame indices like 0,97 or 0-10") from None
    else:
        frames = [int(v) for v in text]
    arr = np.unique(np.asarray(frames, dtype=np.int64))
    if arr.size == 0 or arr.min() < 0 or arr.max() >= n_frames:
        raise InputError(f"conformations {text!r} must be frame indices in 0..{n_frames - 1}")
    return arr


def read_weights(path: str | Path, n_frames: int) -> np.ndarray:
    """Conformation weights from a .npy or text file (one non-negative number per frame)."""
    p = Path(path)
    try:
        w = np.load(p, allow_pickle=False) if p.suffix == ".npy" else np.loadtxt(p, ndmin=1)
    except (OSError, ValueError) as exc:
        raise InputError(f"{p}: cannot read conformation weights ({exc}); give one number per frame") from None
    return _check_weights(np.asarray(w, dtype=np.float64).ravel(), n_frames, str(p))


def _check_weights(w: np.ndarray, n_frames: int, what: str) -> np.ndarray:
    if w.shape != (n_frames,) or not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise InputError(f"{what}: conformation weights need {n_frames} non-negative numbers with a positive sum")
    return w / w.sum()


def _frame_probabilities(n_frames: int, conformations: Any, weights: Any) -> np.ndarray:
    if conformations is not None and weights is not None:
        raise InputError("give either conformations or conformation weights, not both")
    if weights is not None:
        if isinstance(weights, (str, Path)):
            return read_weights(weights, n_frames)
        return _check_weights(np.asarray(weights, dtype=np.float64).ravel(), n_frames, "conformation weights")
    p = np.zeros(n_frames)
    subset = parse_conformations(conformations, n_frames)
    p[np.arange(n_frames) if subset is None else subset] = 1.0
    return p / p.sum()


def read_poses(poses: str | Path | np.ndarray) -> np.ndarray:
    """Rotations (N, 3, 3) from a STAR file (RELION angles), a .npy of matrices or of RELION Euler angles (N, 3)."""
    if isinstance(poses, (str, Path)):
        p = Path(poses)
        if p.suffix.lower() == ".star":
            from cryoscape.io.star import read_star

            df = read_star(p).particles
            cols = ["rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"]
            if not all(c in df.columns for c in cols):
                raise InputError(f"{p}: no _rlnAngleRot/Tilt/Psi columns; give a STAR file with angles")
            arr = euler_relion_to_matrix(df[cols].to_numpy(dtype=np.float64))
        elif p.suffix.lower() == ".npy":
            try:
                arr = np.load(p, allow_pickle=False)
            except (OSError, ValueError) as exc:
                raise InputError(f"{p}: cannot read poses ({exc}); give a .npy of rotation matrices") from None
        else:
            raise InputError(f"{p}: poses must be a .star or .npy file")
        what = str(p)
    else:
        arr, what = np.asarray(poses), "poses"
    arr = np.asarray(arr, dtype=np.float64)
    if arr.ndim == 2 and arr.shape[1] == 3:
        arr = euler_relion_to_matrix(arr)
    if arr.ndim != 3 or arr.shape[1:] != (3, 3):
        raise InputError(f"{what}: poses must be (N, 3, 3) rotation matrices or (N, 3) RELION angles, got {arr.shape}")
    err = np.abs(arr @ arr.transpose(0, 2, 1) - np.eye(3)).max() if len(arr) else 0.0
    if err > 1e-4 or np.any(np.linalg.det(arr) < 0):
        raise InputError(f"{what}: matrices are not proper rotations; check the pose file")
    return arr


@dataclass
class _Draws:
    conformation: np.ndarray  # (N,) int64
    rotations: np.ndarray  # (N, 3, 3)
    shifts_A: np.ndarray  # (N, 2) origins, RELION sign
    defocus_u_A: np.ndarray
    defocus_v_A: np.ndarray
    defocus_angle_deg: np.ndarray
    half_set: np.ndarray  # (N,) int8 0/1


def _draw(n: int, rng: dict[str, np.random.Generator], probs: np.ndarray, rotations: np.ndarray | None,
          shift_max_px: float, apix: float, defocus_min_um: float, defocus_max_um: float,
          astigmatism_max_um: float) -> _Draws:
    conf = rng["conformations"].choice(len(probs), size=n, p=probs).astype(np.int64)
    rots = random_rotations(n, rng["rotations"]) if rotations is None else rotations[:n]
    r = shift_max_px * np.sqrt(rng["shifts"].uniform(size=n))
    phi = rng["shifts"].uniform(0.0, 2 * np.pi, size=n)
    shifts_A = np.stack([r * np.cos(phi), r * np.sin(phi)], axis=-1) * apix
    ctf = rng["ctf"]
    mean_df = ctf.uniform(defocus_min_um, defocus_max_um, size=n) * 1e4
    astig = ctf.uniform(0.0, astigmatism_max_um, size=n) * 1e4
    angle = ctf.uniform(0.0, 180.0, size=n)
    half = np.zeros(n, dtype=np.int8)
    half[rng["halves"].permutation(n)[n // 2:]] = 1
    return _Draws(conf, np.asarray(rots, dtype=np.float64), shifts_A, mean_df + astig / 2, mean_df - astig / 2,
                  angle, half)


def _resolve_n(n_particles: int | None, rotations: np.ndarray | None) -> int:
    if n_particles is None:
        if rotations is None:
            raise InputError("give the number of particles (--n-particles) or poses (--poses)")
        return len(rotations)
    n = int(n_particles)
    if n < 1:
        raise InputError(f"--n-particles {n_particles} must be at least 1")
    if rotations is not None and len(rotations) < n:
        raise InputError(f"only {len(rotations)} poses for {n} particles; lower --n-particles or give more poses")
    return n
