"""Streaming a particle set through the backprojector: half-set labels, weights, the image loop.

:func:`backproject` reads a :class:`~cryoscape.particles.ParticleSet` batch by
batch and inserts each image into the accumulator of its subset
(:func:`assign_half_sets` for gold-standard halves). Every input is checked
(poses, particle weights, the image stacks) before the first image is read
and before any progress bar is shown.
"""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np
import torch

from cryoscape.errors import InputError
from cryoscape.imaging.ctf import CTF_FIELDS
from cryoscape.reconstruct.accumulate import BackprojectionSums, Backprojector

__all__ = ["assign_half_sets", "backproject", "check_particle_weights", "subset_labels"]


def assign_half_sets(half_set: np.ndarray | None, n: int, seed: int = 0) -> np.ndarray:
    """Half-set labels ``(n,)`` int64 in {0, 1}.

    Labels 0/1 given in ``half_set`` (e.g. from ``_rlnRandomSubset``) are kept;
    particles marked −1 (or all, when ``half_set`` is ``None``) are split at
    random into two halves of equal size (±1) with ``np.random.default_rng(seed)``.
    """
    out = np.full(n, -1, dtype=np.int64) if half_set is None else np.asarray(half_set, dtype=np.int64).copy()
    if out.shape != (n,):
        raise ValueError(f"half_set has shape {out.shape}; expected ({n},)")
    unknown = np.flatnonzero((out != 0) & (out != 1))
    if unknown.size:
        rng = np.random.default_rng(seed)
        perm = rng.permutation(unknown)
        # balance the halves, counting the labels already given
        n0 = int(np.sum(out == 0))
        n1 = int(np.sum(out == 1))
        n_to_0 = int(np.clip((n1 - n0 + unknown.size + rng.integers(0, 2)) // 2, 0, unknown.size))
        out[perm[:n_to_0]] = 0
        out[perm[n_to_0:]] = 1
    return out


def check_particle_weights(particle_weights: np.ndarray | None, n: int) -> np.ndarray | None:
    """The weights as ``(n,)`` float64 (None stays None); InputError if mis-sized, negative or not finite."""
    if particle_weights is None:
        return None
    weights = np.asarray(particle_weights, dtype=np.float64).reshape(-1)
    if weights.shape != (n,):
        raise InputError(f"particle_weights has {weights.size} entries but there are {n} particles")
    if not np.all(np.isfinite(weights)) or np.any(weights < 0):
        raise InputError("particle_weights must be finite and non-negative")
    return weights


def subset_labels(particles: Any, half_sets: bool | np.ndarray, seed: int) -> tuple[np.ndarray, int]:
    """Per-particle subset labels ``(N,)`` int64 and the number of subsets (see :func:`backproject`)."""
    n = len(particles)
    if isinstance(half_sets, np.ndarray):
        labels = np.asarray(half_sets, dtype=np.int64)
        return labels, int(labels.max()) + 1 if labels.size else 1
    if half_sets:
        return assign_half_sets(getattr(particles, "half_set", None), n, seed), 2
    return np.zeros(n, dtype=np.int64), 1


def ctf_columns(particles: Any) -> dict[str, np.ndarray]:
    """The :data:`CTF_FIELDS` of every particle as ``(N,)`` float64 arrays (absent fields 0)."""
    table = particles.ctf_table()
    n = len(particles)
    out = {}
    for name in CTF_FIELDS:
        col = table.get(name)
        out[name] = np.zeros(n) if col is None else np.broadcast_to(np.asarray(col, dtype=np.float64), (n,))
    return out


def _progress_bar(total: int, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="img", desc="backprojecting", leave=False)


def _good_batches(batches: Iterator, keep: np.ndarray, tally: dict[str, int], skip_bad: bool,
                  bar: Any) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(indices, images)`` without images holding NaN/Inf, counting them in ``tally``.

    Once a bad image is seen and ``skip_bad`` is false nothing more is yielded;
    the remaining batches are only counted (the caller then refuses the set).
    """
    for idx, images in batches:
        idx = np.asarray(idx)
        good = np.isfinite(images).all(axis=(1, 2))
        if not good.all():
            if tally["first_bad"] < 0:
                tally["first_bad"] = int(keep[idx[~good][0]])
            tally["skipped"] += int((~good).sum())
            idx, images = idx[good], images[good]
        if tally["skipped"] and not skip_bad:
            if bar is not None:
                bar.update(int(good.size))
            continue  # only count the remaining bad images, then refuse below
        yield idx, images
        if bar is not None:
            bar.update(len(idx))


def backproject(
    particles: Any,
    *,
    particle_weights: np.ndarray | None = None,
    half_sets: bool | np.ndarray = True,
    use_ctf: bool = True,
    batch_size: int = 1024,
    oversampling: int = 2,
    device: str | torch.device = "cpu",
    seed: int = 0,
    progress: bool = False,
    skip_bad: bool = False,
) -> BackprojectionSums:
    """Stream a :class:`~cryoscape.particles.ParticleSet` through a :class:`Backprojector`.

    Images are read batch by batch with ``particles.iter_batches(batch_size)``
    (memory-mapped; memory does not grow with the number of particles).

    particle_weights:
        Optional ``(N,)`` non-negative weights (e.g. kernel weights of a local
        reconstruction in a latent space); particles with weight 0 are skipped
        without reading their images.
    half_sets:
        ``True``: two accumulators from ``particles.half_set`` (random halves
        with ``seed`` where unknown); ``False``: one accumulator; or an explicit
        ``(N,)`` array of subset labels ``0 .. S-1``.
    use_ctf:
        Multiply by the CTF when the particles have CTF parameters.
    skip_bad:
        Images with NaN/Inf pixels raise InputError; with ``skip_bad`` they are
        left out (counted in ``n_skipped``) instead.

    Returns the Friedel-symmetrised :class:`BackprojectionSums`.
    """
    particles.require_poses("backprojection")
    n = len(particles)
    weights = check_particle_weights(particle_weights, n)
    keep = np.arange(n) if weights is None else np.flatnonzero(weights > 0)
    labels, n_sets = subset_labels(particles, half_sets, seed)
    sub = particles if keep.size == n else particles[keep]
    bp = Backprojector(int(particles.box), float(particles.apix), oversampling, n_sets, device)
    if hasattr(sub, "check_images"):
        sub.check_images()  # missing stacks or frames fail here, before the progress bar
    ctf_cols = ctf_columns(sub) if use_ctf and bool(particles.has_ctf) else None
    rotations = np.asarray(sub.rotations)
    shifts = None if getattr(sub, "shifts_A", None) is None else np.asarray(sub.shifts_A)
    tally = {"skipped": 0, "first_bad": -1}
    bar = _progress_bar(len(sub), progress)
    try:
        for idx, images in _good_batches(sub.iter_batches(batch_size), keep, tally, skip_bad, bar):
            orig = keep[idx]
            bp.insert(
                images,
                rotations[idx],
                None if shifts is None else shifts[idx],
                None if ctf_cols is None else {k: v[idx] for k, v in ctf_cols.items()},
                labels[orig],
                None if weights is None else weights[orig],
            )
    finally:
        if bar is not None:
            bar.close()
    if tally["skipped"] and not skip_bad:
        raise InputError(
            f"{getattr(particles, 'name', 'the particle set')}: {tally['skipped']} image(s) have NaN or Inf pixels"
            f" (the first is particle {tally['first_bad']}); remove them or pass --skip-bad to leave them out"
        )
    sums = bp.sums()
    sums.n_skipped = tally["skipped"]
    return sums
