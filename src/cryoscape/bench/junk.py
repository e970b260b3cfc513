"""Junk particles mixed into a benchmark dataset, flagged in the ground truth.

Real particle stacks hold images that are not the molecule of interest. The
``adk-junk`` benchmark adds two kinds, with the same optics, CTF and noise
level as the good particles:

* ``noise``: pure white Gaussian noise with the good particles' noise standard
  deviation (no signal at all);
* ``decoy``: images of a different molecule — a compact random "blob" model
  made of AdK's own atoms (same elements, so the same total scattering mass)
  placed in a few random Gaussian clusters and rescaled to AdK's radius of
  gyration (Å), imaged with its own random poses and CTFs and the same noise.

Junk images sit at random positions in the stack. ``truth.npz`` flags them:
``is_junk`` (N,) bool and ``junk_kind`` (N,) int8 (0 particle, 1 noise,
2 decoy; names in ``junk_kind_names``). For junk, ``conformation`` is −1 and
``coordinate`` is NaN; the decoy's atoms are kept as ``decoy_frames_A``,
``decoy_amplitudes`` and ``decoy_sigma_A`` so its volume can be rebuilt
(:func:`decoy_volume`).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Mapping

import mrcfile
import numpy as np
import pandas as pd

from cryoscape.errors import InputError
from cryoscape.io.atomic import atomic_path
from cryoscape.io.star import read_star, write_star
from cryoscape.simulate import AtomicStructure, SimulationResult, load_truth

PARTICLE, NOISE, DECOY = 0, 1, 2
JUNK_KIND_NAMES: tuple[str, ...] = ("particle", "noise", "decoy")

#: ``truth.npz`` arrays with one entry per particle (merged in stack order).
PER_PARTICLE_KEYS: tuple[str, ...] = (
    "conformation", "coordinate", "rotations", "euler_deg", "shifts_A", "defocus_u_A", "defocus_v_A",
    "defocus_angle_deg", "voltage_kV", "cs_mm", "amplitude_contrast", "phase_shift_deg", "bfactor_A2",
    "half_set",
)
STACK_NAME = "particles.mrcs"
STAR_NAME = "particles.star"
TRUTH_NAME = "truth.npz"
_CHUNK = 1024  # images per write when merging stacks


def radius_of_gyration_A(coords_A: np.ndarray, weights: np.ndarray) -> float:
    """Weighted radius of gyration (Å) of (A, 3) coordinates in Å."""
    w = np.asarray(weights, dtype=np.float64) / float(np.sum(weights))
    x = np.asarray(coords_A, dtype=np.float64)
    centred = x - w @ x
    return float(np.sqrt(w @ (centred ** 2).sum(axis=1)))


def blob_structure(template: AtomicStructure, seed: int, n_blobs: int = 6,
                   blob_sigma_A: float = 5.0) -> AtomicStructure:
    """A compact random model with the template's atoms in ``n_blobs`` Gaussian clusters.

    Atoms keep their elements (so the total mass is the template's); each is
    put in a random cluster with an isotropic spread ``blob_sigma_A`` (Å)
    around a random centre; the model is then centred and scaled so that its
    radius of gyration equals the template's first frame's (Å).

    Returns:
        A one-frame :class:`AtomicStructure` named ``"blob"``.
    """
    if n_blobs < 1 or blob_sigma_A <= 0:
        raise InputError("a blob model needs at least one cluster and a positive cluster width")
    rng = np.random.default_rng([int(seed), 2])
    n = template.n_atoms
    centres = rng.normal(0.0, 1.0, size=(n_blobs, 3)) * 3.0 * blob_sigma_A
    label = rng.integers(0, n_blobs, size=n)
    xyz = centres[label] + rng.normal(0.0, blob_sigma_A, size=(n, 3))
    weights = template.amplitudes()
    xyz -= (weights / weights.sum()) @ xyz
    xyz *= radius_of_gyration_A(template.frames_A[0], weights) / radius_of_gyration_A(xyz, weights)
    return AtomicStructure(xyz[None].astype(np.float32), np.asarray(template.elements),
                           np.full(n, -1, dtype=np.int64), np.full(n, "", dtype="<U4"),
                           name="blob", source=f"random blob model of {template.name} (seed {seed})")


def junk_layout(n_particles: int, fraction: float, noise_share: float, seed: int) -> np.ndarray:
    """Kind of every stack position, (N,) int8: 0 particle, 1 noise, 2 decoy.

    ``round(fraction·N)`` junk images at random positions; ``round(noise_share·junk)``
    of them (chosen at random) are pure noise, the rest decoys.
    """
    if not (0.0 <= fraction < 1.0) or not (0.0 <= noise_share <= 1.0):
        raise InputError("junk fraction must be in [0, 1) and the noise share in [0, 1]")
    rng = np.random.default_rng([int(seed), 3])
    n_junk = int(round(fraction * n_particles))
    kinds = np.zeros(n_particles, dtype=np.int8)
    positions = rng.choice(n_particles, size=n_junk, replace=False)
    n_noise = int(round(noise_share * n_junk))
    kinds[positions] = DECOY
    kinds[positions[rng.permutation(n_junk)[:n_noise]]] = NOISE
    return kinds


def source_indices(kinds: np.ndarray) -> np.ndarray:
    """(N,) index of each position in its source stack (good or junk), in order."""
    idx = np.empty(len(kinds), dtype=np.int64)
    good = kinds == PARTICLE
    idx[good] = np.arange(int(good.sum()))
    idx[~good] = np.arange(int((~good).sum()))
    return idx


def merge_junk(good: SimulationResult, junk: SimulationResult, kinds: np.ndarray, seed: int,
               out_dir: str | os.PathLike, force: bool = False) -> tuple[Path, Path, Path]:
    """Write the mixed stack, STAR and truth into ``out_dir``.

    Args:
        good: simulated particles (noisy), one per position with kind 0.
        junk: clean decoy images (simulated at infinite SNR), one per junk position.
        kinds: (N,) int8 from :func:`junk_layout`.
        seed: seed of the junk images' noise.
        out_dir: output folder.
        force: overwrite existing files.

    Returns:
        Paths of the stack, the STAR file and ``truth.npz``.
    """
    out = Path(out_dir)
    noise_std = float(good.truth["noise_std"])
    stack = _write_stack(out / STACK_NAME, good.stack_path, junk.stack_path, kinds, noise_std, seed, force)
    star = _write_star(out / STAR_NAME, good.star_path, junk.star_path, kinds, force)
    truth = _merged_truth(good.truth, junk.truth, kinds)
    with atomic_path(out / TRUTH_NAME, force) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **truth)
    return stack, star, out / TRUTH_NAME


def _junk_images(clean: np.ndarray, kinds: np.ndarray, noise_std: float, rng: np.random.Generator) -> np.ndarray:
    """Noisy junk images [b, D, D] float32: decoy signal (or none) + white noise (std in stack units)."""
    signal = np.where((kinds == DECOY)[:, None, None], clean, np.float32(0.0))
    noise = rng.standard_normal(clean.shape, dtype=np.float32) * np.float32(noise_std)
    return (signal + noise).astype(np.float32)


class _Stats:
    """Running min, max, mean and rms of the values written (for the MRC header)."""

    def __init__(self) -> None:
        self.lo, self.hi, self.s1, self.s2, self.count = math.inf, -math.inf, 0.0, 0.0, 0

    def add(self, x: np.ndarray) -> None:
        """Accumulate one block of values."""
        x = x.astype(np.float64)
        self.lo, self.hi = min(self.lo, float(x.min())), max(self.hi, float(x.max()))
        self.s1, self.s2, self.count = self.s1 + float(x.sum()), self.s2 + float((x * x).sum()), self.count + x.size

    def store(self, header: Any) -> None:
        """Write dmin, dmax, dmean and rms into an MRC header."""
        mean = self.s1 / max(self.count, 1)
        header.dmin, header.dmax, header.dmean = self.lo, self.hi, mean
        header.rms = math.sqrt(max(self.s2 / max(self.count, 1) - mean * mean, 0.0))


def _write_stack(path: Path, good_stack: Path, junk_stack: Path, kinds: np.ndarray, noise_std: float,
                 seed: int, force: bool) -> Path:
    """Merge the two stacks position by position, adding noise to the junk (streamed in chunks)."""
    rng = np.random.default_rng([int(seed), 4])
    src = source_indices(kinds)
    stats = _Stats()
    with mrcfile.mmap(str(good_stack), mode="r") as g, mrcfile.mmap(str(junk_stack), mode="r") as j, \
            atomic_path(path, force) as tmp:
        n, D = len(kinds), int(g.data.shape[-1])
        with mrcfile.new_mmap(str(tmp), shape=(n, D, D), mrc_mode=2, overwrite=True) as mrc:
            _set_header(mrc, float(g.voxel_size.x))
            for start in range(0, n, _CHUNK):
                sl = slice(start, min(n, start + _CHUNK))
                block = _merged_block(g.data, j.data, kinds[sl], src[sl], noise_std, rng)
                mrc.data[sl] = block
                stats.add(block)
            stats.store(mrc.header)
    return path


def _merged_block(good: np.ndarray, junk: np.ndarray, kinds: np.ndarray, src: np.ndarray, noise_std: float,
                  rng: np.random.Generator) -> np.ndarray:
    """Images [b, D, D] float32 for one chunk of consecutive stack positions."""
    block = np.empty((len(kinds),) + good.shape[1:], dtype=np.float32)
    is_good = kinds == PARTICLE
    block[is_good] = good[src[is_good]]
    if (~is_good).any():
        block[~is_good] = _junk_images(np.asarray(junk[src[~is_good]]), kinds[~is_good], noise_std, rng)
    return block


def _set_header(mrc: Any, apix: float) -> None:
    """Image-stack header with voxel size ``apix`` (Å) and a fixed label (byte-identical files)."""
    mrc.set_image_stack()
    mrc.voxel_size = apix
    mrc.header.origin = (0.0, 0.0, 0.0)
    mrc.header.label[0] = b"cryoscape bench"
    mrc.header.nlabl = 1


def _write_star(path: Path, good_star: Path, junk_star: Path, kinds: np.ndarray, force: bool) -> Path:
    """STAR of the mixed stack: rows in stack order, image names renumbered."""
    g, j = read_star(good_star), read_star(junk_star)
    rows = pd.concat([g.particles, j.particles], ignore_index=True)
    order = source_indices(kinds) + np.where(kinds == PARTICLE, 0, len(g.particles))
    rows = rows.iloc[order].reset_index(drop=True)
    rows["rlnImageName"] = [f"{i + 1:06d}@{STACK_NAME}" for i in range(len(rows))]
    return write_star(path, g.optics, rows, force)


def _merged_truth(good: Mapping[str, np.ndarray], junk: Mapping[str, np.ndarray],
                  kinds: np.ndarray) -> dict[str, np.ndarray]:
    """Good particles' truth with per-particle arrays merged in stack order and junk flags added."""
    truth = {k: np.asarray(v) for k, v in good.items()}
    is_junk = kinds != PARTICLE
    for key in PER_PARTICLE_KEYS:
        a, b = np.asarray(good[key]), np.asarray(junk[key])
        merged = np.empty((len(kinds),) + a.shape[1:], dtype=np.result_type(a, b))
        merged[~is_junk], merged[is_junk] = a, b
        truth[key] = merged
    truth["conformation"][is_junk] = -1
    truth["coordinate"] = truth["coordinate"].astype(np.float64)
    truth["coordinate"][is_junk] = np.nan
    truth.update(is_junk=is_junk, junk_kind=kinds.astype(np.int8), junk_kind_names=np.array(JUNK_KIND_NAMES),
                 decoy_frames_A=np.asarray(junk["frames_A"]), decoy_amplitudes=np.asarray(junk["amplitudes"]),
                 decoy_sigma_A=np.asarray(junk["sigma_A"]), decoy_name=np.str_(str(junk.get("name", "decoy"))))
    return truth


def decoy_volume(truth: str | os.PathLike | Mapping[str, Any], box: int | None = None,
                 apix: float | None = None) -> tuple[np.ndarray, float]:
    """Volume ``[D, D, D]`` float32 ([z, y, x]) of the decoy model and its voxel size (Å).

    ``box`` (px) and ``apix`` (Å/px) default to the dataset's own grid.
    """
    import torch

    from cryoscape.imaging import rasterize_atoms

    t = load_truth(truth)
    if "decoy_frames_A" not in t:
        raise InputError("this dataset has no decoy model; decoy volumes exist only for junk datasets")
    D = int(t["box"]) if box is None else int(box)
    a = float(t["apix"]) if apix is None else float(apix)
    vol = rasterize_atoms(torch.as_tensor(t["decoy_frames_A"][0]), torch.as_tensor(t["decoy_amplitudes"]),
                          torch.as_tensor(t["decoy_sigma_A"]), D, a)
    return np.asarray(vol.detach().cpu().numpy() if hasattr(vol, "detach") else vol, dtype=np.float32), a
