"""Junk and outlier scores for particles from their latents (survey §9.3).

Junk particles (ice, aggregates, false picks) tend to land in sparse corners
of a latent space and to be poorly explained by the model. The score combines
both signs, each as a robust z-score. By default a particle counts as junk when
it is an outlier in *either* respect:

    score_i = max(z(−ln ρ_i), z(e_i))                      (combine="max")

or, as a weighted mean with weight ``w``,

    score_i = (z(−ln ρ_i) + w · z(e_i)) / (1 + w)          (combine="mean")

with ``ρ`` the k-nearest-neighbour density of
:func:`cryoscape.analysis.latent.knn_log_density` and ``e`` an optional
per-particle error (larger = worse fit); without errors the score is
``z(−ln ρ_i)``. ``z(v) = (v − median v) / (1.4826 · MAD v)`` so that the
outliers themselves barely move the scale (the standard deviation is used when
the MAD is 0). **Higher scores mean more likely junk.** The maximum is the
default because the two signs are not equally informative everywhere: where
the latents do not separate junk (e.g. a linear model on many particles), the
mean shrinks the error's contrast by mixing in an unrelated score, while the
maximum adds only that score's upper tail; where the latents do isolate junk
the maximum keeps it. (Measured once on ``adk-junk``, 4000 particles, box 32,
``pca`` latents: ROC AUC 0.60 for the density alone, 0.88 for the fit error
alone, 0.85 for their mean, 0.93 for their maximum.)

A method-independent error is the fit of each image to the consensus map
(:func:`consensus_fit_correlations`, :func:`fit_errors`): the normalised
cross-correlation of the image with the map's projection at the particle's
pose, shifted and multiplied by its CTF (the forward model of
:mod:`cryoscape.imaging`). Under white noise this is the matched-filter
statistic for "the image holds this molecule in this pose". Two choices keep
it honest:

* cross-validated: each image is compared with the map of the *other* half
  set, so its own noise, backprojected into the map, does not correlate with
  itself (with the full map even pure noise scores above 0 at high
  frequencies);
* pose-specific: the map's spherical average about the box centre is removed
  first (:func:`pose_dependent_part`). That part projects to the same disc at
  every pose, so any compact object of similar size (a decoy, an aggregate)
  matches it; what is left correlates only with images of this molecule in
  this pose.

A real particle scores above 0 (about 0.1 at the benchmarks' SNR of 0.05),
pure noise and other molecules about 0. The error is ``e = 1 − r``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import rankdata

from cryoscape.analysis.latent import as_latents, knn_log_density
from cryoscape.errors import InputError

#: Images per batch when correlating with projections.
FIT_BATCH = 256


@dataclass
class OutlierScores:
    """Per-particle junk score and its parts (all ``(N,)``)."""

    score: np.ndarray  # combined score, higher = more likely junk
    density_z: np.ndarray  # robust z-score of −ln ρ (sparse → high)
    error_z: np.ndarray | None  # robust z-score of the error, if given

    def flagged(self, threshold: float = 3.0) -> np.ndarray:
        """Boolean mask (N,) of particles whose score exceeds ``threshold``."""
        return self.score > threshold


def robust_zscore(values: Any) -> np.ndarray:
    """``(v − median) / (1.4826 · MAD)``; the standard deviation when the MAD is 0; zeros if constant."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    centre = np.median(v)
    scale = 1.4826 * np.median(np.abs(v - centre))
    if not scale > 0:
        scale = float(v.std())
    return (v - centre) / scale if scale > 0 else np.zeros_like(v)


def outlier_scores(Z: Any, k: int = 10, errors: Any | None = None, error_weight: float = 1.0,
                   combine: str = "max") -> OutlierScores:
    """Junk score per particle from low latent density and (optionally) high error.

    ``errors`` is ``(N,)`` in particle order, larger = worse fit; ``combine``
    is ``"max"`` or ``"mean"`` (the latter weighted by ``error_weight``). See
    the module docstring for the formulas.
    """
    X = as_latents(Z)
    density_z = robust_zscore(-knn_log_density(X, k))
    if errors is None:
        return OutlierScores(density_z, density_z, None)
    e = np.asarray(errors, dtype=np.float64).reshape(-1)
    if e.size != X.shape[0] or not np.all(np.isfinite(e)):
        raise InputError(f"errors must be {X.shape[0]} finite values, one per particle (got {e.size})")
    if error_weight < 0:
        raise InputError(f"error_weight must be non-negative (got {error_weight})")
    error_z = robust_zscore(e)
    if combine == "max":
        score = np.maximum(density_z, error_z)
    elif combine == "mean":
        score = (density_z + error_weight * error_z) / (1.0 + error_weight)
    else:
        raise InputError(f"unknown way to combine outlier scores {combine!r}; use 'max' or 'mean'")
    return OutlierScores(score, density_z, error_z)


def roc_auc(scores: Any, labels: Any) -> float:
    """Area under the ROC curve of ``scores`` for the positives in ``labels``.

    ``labels`` is boolean (or 0/1), True for the class that should score high
    (e.g. junk). Computed in the Mann–Whitney form
    ``AUC = (R₊ − n₊(n₊+1)/2) / (n₊ n₋)`` with ``R₊`` the sum of the positives'
    ranks (ties get their average rank, i.e. count one half): the probability
    that a random positive outscores a random negative.
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(labels).reshape(-1).astype(bool)
    if s.size != y.size:
        raise InputError(f"scores and labels must have the same length (got {s.size} and {y.size})")
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise InputError("roc_auc needs at least one positive and one negative label")
    ranks = rankdata(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


# ----------------------------------------------------------------------------
# fit of each image to a map (method-independent error)
# ----------------------------------------------------------------------------


def pose_dependent_part(volume: Any) -> np.ndarray:
    """``volume − its spherical average`` about the centre voxel ``D//2``, ``[D, D, D]`` float32.

    The average is taken in radial bins half a voxel wide (``round(2r)``, ``r``
    in voxels from ``(D//2, D//2, D//2)``).
    """
    v = np.asarray(volume, dtype=np.float64)
    if v.ndim != 3 or len(set(v.shape)) != 1:
        raise InputError(f"a map must be a cube [D, D, D]; got shape {v.shape}")
    c = np.arange(v.shape[0]) - v.shape[0] // 2
    r2 = c[:, None, None] ** 2 + c[None, :, None] ** 2 + c[None, None, :] ** 2
    bins = np.round(2.0 * np.sqrt(r2)).astype(np.int64).ravel()
    profile = np.bincount(bins, weights=v.ravel()) / np.maximum(np.bincount(bins), 1)
    return (v - profile[bins].reshape(v.shape)).astype(np.float32)


def _ncc(images: Any, predicted: Any, mask: Any) -> Any:
    """Pearson correlation ``(b,)`` of ``images`` and ``predicted`` ``[b, D, D]`` over the pixels in ``mask``; 0 if either is constant."""
    import torch

    x = images[:, mask].to(torch.float64)
    p = predicted[:, mask].to(torch.float64)
    x = x - x.mean(dim=1, keepdim=True)
    p = p - p.mean(dim=1, keepdim=True)
    den = torch.sqrt((x * x).sum(dim=1) * (p * p).sum(dim=1))
    return torch.where(den > 0, (x * p).sum(dim=1) / den.clamp(min=1e-300), torch.zeros_like(den))


def _maps(volumes: Any, which: Any, n: int, D: int) -> tuple[np.ndarray, np.ndarray]:
    """Maps ``[K, D, D, D]`` and the map index ``(N,)`` of every particle, checked."""
    maps = np.asarray(volumes, dtype=np.float32)
    maps = maps[None] if maps.ndim == 3 else maps
    if maps.ndim != 4 or maps.shape[1:] != (D, D, D):
        raise InputError(f"the maps are {tuple(maps.shape[-3:])} but the particles are {D} px; "
                         "give maps on the particles' grid")
    idx = np.zeros(n, dtype=np.int64) if which is None else np.asarray(which, dtype=np.int64).reshape(-1)
    if idx.shape != (n,) or idx.min(initial=0) < 0 or idx.max(initial=0) >= maps.shape[0]:
        raise InputError(f"give one map index in 0..{maps.shape[0] - 1} per particle ({n})")
    return maps, idx


def projection_correlations(
    particles: Any,
    volumes: Any,
    which: Any | None = None,
    *,
    radius_px: float | None = None,
    batch_size: int = FIT_BATCH,
    oversampling: float = 2.0,
    device: str = "cpu",
    progress: bool = False,
) -> np.ndarray:
    """Normalised cross-correlation ``(N,)`` of every image with its predicted image.

    ``volumes`` is one map ``[D, D, D]`` or several ``[K, D, D, D]`` (the
    particles' box and pixel size), ``which (N,)`` the map of each particle
    (default map 0). The predicted image of particle ``i`` is
    :func:`cryoscape.imaging.render` of its map at the particle's rotation,
    RELION origin (Å) and CTF (when the set has one), and

        r_i = Σ_m (x_im − x̄_i)(p_im − p̄_i) / √(Σ_m (x_im − x̄_i)² · Σ_m (p_im − p̄_i)²)

    over the pixels ``m`` within ``radius_px`` (default ``D/2``) of the
    centre ``(D//2, D//2)``, means over the same pixels; ``r_i = 0`` where
    either image is constant there. Images are streamed in batches (memory
    does not grow with N); NaN/Inf pixels raise :class:`InputError`.
    """
    import torch

    from cryoscape.imaging import FourierProjector, render
    from cryoscape.imaging.noise import circle_mask_2d

    particles.require_poses("the projection fit score")
    D, apix, n = int(particles.box), float(particles.apix), len(particles)
    maps, map_of = _maps(volumes, which, n, D)
    projectors = [FourierProjector(torch.as_tensor(m, device=device), oversampling) for m in maps]
    mask = circle_mask_2d(D, radius_px, device=device)
    ctf = particles.ctf_table() if particles.has_ctf else None
    shifts = getattr(particles, "shifts_A", None)
    as_t = lambda a: torch.as_tensor(np.asarray(a), device=device, dtype=torch.float32)
    out = np.zeros(n, dtype=np.float64)
    bar = _bar(n, "fit to the map") if progress else None
    for idx, images in particles.iter_batches(batch_size):
        bad = ~np.isfinite(images).all(axis=(1, 2))
        if bad.any():
            raise InputError(f"{getattr(particles, 'name', 'the particle set')}: particle {int(idx[bad][0])} "
                             "has NaN or Inf pixels; remove it")
        for k, projector in enumerate(projectors):
            rows = np.flatnonzero(map_of[idx] == k)
            if rows.size == 0:
                continue
            sel = idx[rows]
            with torch.no_grad():
                pred = render(projector, as_t(particles.rotations[sel]), None if shifts is None else as_t(shifts[sel]),
                              None if ctf is None else {f: as_t(v[sel]) for f, v in ctf.items()}, apix)
                out[sel] = _ncc(as_t(images[rows]), pred, mask).cpu().numpy()
        if bar is not None:
            bar.update(len(idx))
    if bar is not None:
        bar.close()
    return out


def _bar(total: int, desc: str) -> Any:
    """A tqdm progress bar."""
    from tqdm import tqdm

    return tqdm(total=total, unit="img", desc=desc, leave=False)


def consensus_fit_correlations(
    particles: Any,
    reconstruction: Any | None = None,
    *,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = False,
) -> np.ndarray:
    """Cross-validated, pose-specific fit ``(N,)`` of every image to the consensus map (module docstring).

    ``reconstruction``: a :class:`cryoscape.reconstruct.Reconstruction` of
    these particles (half maps from ``particles.half_set``, random halves
    from ``seed`` where unknown), computed here when None (one extra pass
    over the images). A particle of half set 0 is compared with
    :func:`pose_dependent_part` of half map 1, and the reverse.
    """
    from cryoscape.reconstruct import assign_half_sets, reconstruct

    rec = reconstruction if reconstruction is not None else reconstruct(
        particles, device=device, seed=seed, progress=progress)
    halves = assign_half_sets(getattr(particles, "half_set", None), len(particles), seed)
    maps = np.stack([pose_dependent_part(rec.half_b), pose_dependent_part(rec.half_a)])  # index = own half
    return projection_correlations(particles, maps, halves, device=device, progress=progress)


def fit_errors(correlations: Any) -> np.ndarray:
    """Per-particle fit error ``1 − r`` (``(N,)``, in [0, 2]; larger = worse) from a correlation ``r``."""
    return 1.0 - np.asarray(correlations, dtype=np.float64).reshape(-1)
